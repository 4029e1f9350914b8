"""``nox -s mutation``: deploy deliberately wrong stacks and check that the suites notice.

    python -m labgate.mutate [--scenario F] [--only NAME ...]

1. A baseline run of every suite a mutation touches, on the scenario as it is.
2. For each mutation in suites/mutations.yaml (labgate.mutations): a run of its suites with
   ``LABGATE_MUTATION=<name>``: the stack and the harness's writes are wrong in that one way.
3. A test *flips* when its verdict differs from the baseline's. The flipped tests must be exactly
   the ones the mutation declares (glob patterns): a declared test that did not flip means the
   suites missed the fault; an undeclared flip means a test depends on something it does not name.
   A mutation that flips nothing fails the session and is named.

Mutations that need a component the stack lacks (zot, Pocket ID) skip with the reason. Writes
reports/mutation-<id>/mutation.json and index.html.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from html import escape
from pathlib import Path
from typing import Any

import yaml

from labgate import mutations
from labgate.errors import LabgateError, ScenarioError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "suites" / "mutations.yaml"


def load(path: Path = DATA) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text()) or []
    for i, m in enumerate(data):
        for key in ("name", "what", "suites", "flips"):
            if key not in m:
                raise ScenarioError(f"{path}: [{i}].{key}: required field is missing")
        if m["name"] not in mutations.NAMES:
            raise ScenarioError(f"{path}: [{i}].name: {m['name']!r} is not a mutation labgate.mutations knows")
        unknown = set(m) - {"name", "what", "suites", "flips", "needs", "also_on", "registry"}
        if unknown:
            raise ScenarioError(f"{path}: [{i}].{sorted(unknown)[0]}: unknown key")
    return data


def _run(scenario: str, suites: list[str], reports: Path, run_id: str, mutation: str = "") -> dict[str, dict[str, Any]]:
    env = {**os.environ, mutations.ENV: mutation} if mutation else {k: v for k, v in os.environ.items() if k != mutations.ENV}
    cmd = [sys.executable, "-m", "pytest", *[f"suites/{s}" for s in suites], "--scenario", scenario, "-q", "-n", os.environ.get("LABGATE_WORKERS", "2"),
           "--dist", "loadgroup", "--labgate-reports", str(reports), "--labgate-run-id", run_id, "--labgate-no-html"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = reports / run_id / "summary.json"
    if not summary.exists():
        raise LabgateError(f"run {run_id} wrote no summary (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-600:]}")
    data = json.loads(summary.read_text())
    if data.get("stack_error"):
        raise LabgateError(f"run {run_id}: the stack did not start: {data['stack_error']}")
    out = {t["nodeid"]: t for t in data["tests"]}
    out["__meta__"] = {"seconds": round(time.monotonic() - t0, 1), "stack": data.get("stack") or {}}
    return out


def _scenario_for(path: str, registry: str, reports: Path) -> str:
    """The scenario, or a copy of it with the registry kind a mutation is declared for."""
    if not registry:
        return path
    data = yaml.safe_load(Path(path).read_text())
    data.setdefault("components", {}).setdefault("registry", {})["kind"] = registry
    data["name"] = f"{data.get('name', 'scenario')}-{registry}"
    out = reports / f"scenario-{registry}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


def _needs_missing(m: dict[str, Any], stack: dict[str, Any]) -> str | None:
    caps = set(stack.get("capabilities") or [])
    for need in m.get("needs") or []:
        if need not in caps:
            skipped = stack.get("skipped_components") or {}
            detail = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            return f"needs {need}, which this stack lacks" + (f" ({detail})" if detail else "")
    return None


def _declares(pattern: Any, nodeid: str, test: dict[str, Any]) -> bool:
    """A flips entry: a glob of test ids, or {access_expect: allow|deny} for the access cells the
    scenario expects so (the cells' expectations come from the policies, not from a list)."""
    if isinstance(pattern, dict):
        want = pattern.get("access_expect")
        return any(row.get("expected") == want for row in (test.get("extra") or {}).get("access", []))
    return fnmatch.fnmatchcase(nodeid, pattern)


def judge(m: dict[str, Any], base: dict[str, dict], mutated: dict[str, dict]) -> dict[str, Any]:
    flipped = {n: (base[n]["verdict"], mutated[n]["verdict"]) for n in mutated
               if n != "__meta__" and n in base and base[n]["verdict"] != mutated[n]["verdict"]}
    kind = (base["__meta__"]["stack"] or {}).get("registry_kind", "")
    declared = list(m["flips"]) + list((m.get("also_on") or {}).get(kind, []))

    def named(n: str) -> bool:
        return any(_declares(p, n, base[n]) for p in declared)

    expected = {n for n in base if n != "__meta__" and base[n]["verdict"] not in ("skip",) and named(n)}
    missed = sorted(expected - set(flipped))
    unexpected = sorted(n for n in flipped if not named(n))
    ok = bool(flipped) and not missed and not unexpected
    return {"name": m["name"], "what": m["what"], "ok": ok, "flipped": {n: f"{a} -> {b}" for n, (a, b) in sorted(flipped.items())},
            "missed": missed, "unexpected": unexpected,
            "messages": {n: mutated[n]["message"][:300] for n in sorted(flipped)},
            "seconds": mutated["__meta__"]["seconds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labgate-mutate")
    p.add_argument("--scenario", default="scenarios/local.yaml")
    p.add_argument("--only", nargs="*", default=None, help="run only these mutations")
    p.add_argument("--reports", default="reports")
    args = p.parse_args(argv)
    try:
        plan = [m for m in load() if not args.only or m["name"] in args.only]
        if args.only and len(plan) != len(set(args.only)):
            raise ScenarioError(f"--only: unknown mutation in {args.only} (known: {', '.join(m['name'] for m in load())})")
        run = "mutation-" + time.strftime("%Y%m%d-%H%M%S")
        reports = Path(args.reports).resolve() / run
        bases: dict[str, dict[str, dict]] = {}

        def baseline(registry: str) -> tuple[str, dict[str, dict]]:
            scenario = _scenario_for(args.scenario, registry, reports)
            if registry not in bases:
                suites = sorted({s for m in plan if m.get("registry", "") == registry for s in m["suites"]})
                print(f"labgate mutate: baseline run of {', '.join(suites)}" + (f" on {registry}" if registry else ""), flush=True)
                bases[registry] = _run(scenario, suites, reports, f"baseline{'-' + registry if registry else ''}")
            return scenario, bases[registry]

        results = []
        for m in plan:
            scenario, base = baseline(m.get("registry", ""))
            why = _needs_missing(m, base["__meta__"]["stack"])
            if why:
                results.append({"name": m["name"], "what": m["what"], "ok": None, "skipped": why})
                print(f"  {m['name']:<26} skipped: {why}", flush=True)
                continue
            mutated = _run(scenario, m["suites"], reports, m["name"], mutation=m["name"])
            r = judge(m, base, mutated)
            results.append(r)
            state = "noticed" if r["ok"] else "FAILED"
            print(f"  {m['name']:<26} {state}: {len(r['flipped'])} test(s) flipped in {r['seconds']:.0f}s", flush=True)
            for n, f in r["flipped"].items():
                print(f"      {f:<18} {n}")
            for n in r["missed"]:
                print(f"      declared, did not flip: {n}")
            for n in r["unexpected"]:
                print(f"      flipped, not declared:  {n}")
            if not r["flipped"]:
                print("      no test noticed this mutation")
    except LabgateError as exc:
        print(f"labgate: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    failed = [r["name"] for r in results if r.get("ok") is False]
    ran = [r for r in results if r.get("ok") is not None]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "mutation.json").write_text(json.dumps({"scenario": args.scenario, "results": results,
                                                       "baseline_seconds": {k or "default": v["__meta__"]["seconds"] for k, v in bases.items()}},
                                                      indent=2))
    (reports / "index.html").write_text(render(results))
    print(f"labgate mutate: {len(ran) - len(failed)} of {len(ran)} mutations noticed as declared; "
          f"{len(results) - len(ran)} skipped; report {reports / 'index.html'}")
    if failed:
        print(f"labgate mutate: not as declared: {', '.join(failed)}", file=sys.stderr)
        return 1
    if not ran:
        print("labgate mutate: no mutation ran: a session that proves nothing is a failure", file=sys.stderr)
        return 1
    return 0


def render(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        state = "skipped" if r.get("ok") is None else ("noticed" if r["ok"] else "NOT AS DECLARED")
        color = {"skipped": "#57606a", "noticed": "#1a7f37"}.get(state, "#cf222e")
        detail = escape(r.get("skipped", "")) or "<br>".join(
            [f"<code>{escape(v)}</code> {escape(k)}" for k, v in r.get("flipped", {}).items()]
            + [f"<b>missed</b> {escape(n)}" for n in r.get("missed", [])] + [f"<b>undeclared</b> {escape(n)}" for n in r.get("unexpected", [])])
        rows.append(f"<tr><td><b>{escape(r['name'])}</b><br><span style='color:#57606a'>{escape(r['what'])}</span></td>"
                    f"<td><span style='color:#fff;background:{color};padding:1px 8px;border-radius:10px'>{state}</span></td><td>{detail}</td></tr>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>labgate mutations</title>"
            "<style>body{font:14px system-ui,sans-serif;margin:24px}td,th{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}"
            "code{font:12px monospace}</style></head><body><h1>Mutations: do the suites notice a wrong stack?</h1>"
            "<table><tr><th>mutation</th><th>result</th><th>tests that flipped (baseline -> mutated)</th></tr>" + "".join(rows) + "</table></body></html>")


if __name__ == "__main__":
    raise SystemExit(main())
