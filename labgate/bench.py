"""Benchmarks: the speed figures, measured (never asserted in a timed test).

    python -m labgate.bench [--scenario F] [--rounds 3] [--e2e-rounds 3] [--kind scenarios/kind.yaml] [--skip e2e,oci,kind]

Every figure is the median of its rounds with the min and the max beside it:

- component floor: each component's own time to healthy, started alone (one at a time), and the
  floor of a stack: its slowest chain of components that wait for each other (Pocket ID then zot;
  etcd, kube-apiserver, Kyverno);
- stack-up (everything started as a run starts it) and teardown, and stack-up / floor;
- the e2e run as ``nox -s e2e`` runs it (Allure HTML included): pytest's own time with ``-n 2``
  and with ``-n 0``, the xdist speed-up, the teardown after the run and the Allure HTML beside it,
  per-suite times and the 15 slowest tests;
- the OCI suite against the official conformance program on the same registry in the same round;
- kind (when its tools are at hand): the whole stack against a bare ``kind create cluster`` with
  the same node image.

Writes reports/benchmarks.json and reports/benchmarks.html.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from html import escape
from pathlib import Path
from typing import Any, Callable

from labgate.errors import LabgateError
from labgate.providers import get_provider
from labgate.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def figure(values: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3), "max_s": round(max(values), 3),
            "rounds": len(values)}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rounds(n: int, what: str, fn: Callable[[int], dict[str, float]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for i in range(n):
        _say(f"[bench] {what}: round {i + 1} of {n}")
        for k, v in fn(i).items():
            samples.setdefault(k, []).append(v)
    return samples


FLOOR_CHAINS = (("identity", "registry"), ("etcd", "kube-apiserver", "kyverno"))


def floor_and_stack(scenario_path: str, rounds: int) -> dict[str, Any]:
    scenario = load_scenario(scenario_path)
    tmp = Path("/tmp/labgate-bench")

    def alone(i: int) -> dict[str, float]:
        from labgate.providers.local import LocalProvider

        p = LocalProvider(scenario, run_id=f"bench-floor-{os.getpid()}-{i}", report_dir=str(tmp / f"floor-{i}"), sequential=True)
        try:
            stack = p.up()
        finally:
            p.down()
        starts = {k.split(":", 1)[1]: v for k, v in stack.timings.items() if k.startswith("start:")}
        floor = max(sum(starts.get(c, 0.0) for c in chain) for chain in FLOOR_CHAINS)
        return {**{f"alone:{k}": v for k, v in starts.items()}, "floor": floor}

    def whole(i: int) -> dict[str, float]:
        p = get_provider(scenario, run_id=f"bench-up-{os.getpid()}-{i}", report_dir=str(tmp / f"up-{i}"))
        t0 = time.monotonic()
        try:
            stack = p.up()
            up = time.monotonic() - t0
        finally:
            t1 = time.monotonic()
            p.down()
        return {"stack-up": up, "teardown": time.monotonic() - t1,
                **{k: v for k, v in stack.timings.items() if k not in ("stack-up", "toolchain")}}

    floor = _rounds(rounds, "component floor (one component at a time)", alone)
    stack = _rounds(rounds, "stack-up and teardown", whole)
    out = {"floor": {k: figure(v) for k, v in floor.items()}, "stack": {k: figure(v) for k, v in stack.items()}}
    ratios = [u / f for u, f in zip(stack["stack-up"], floor["floor"])]
    out["stack_up_over_floor"] = figure(ratios)
    return out


_PYTEST_TIME = re.compile(r" in ([0-9.]+)s")


def _pytest_run(scenario_path: str, workers: int, reports: Path, run_id: str) -> tuple[float, dict[str, Any]]:
    # as `nox -s e2e` runs it: the Allure HTML is part of the run
    cmd = [sys.executable, "-m", "pytest", "suites/", "--scenario", scenario_path, "-q", "-p", "no:cacheprovider",
           "--labgate-reports", str(reports), "--labgate-run-id", run_id]
    cmd += ["-n", str(workers), "--dist", "loadgroup"] if workers else ["-p", "no:xdist"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    m = _PYTEST_TIME.findall(proc.stdout + proc.stderr)
    if not m:
        raise RuntimeError(f"pytest gave no time (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-500:]}")
    return float(m[-1]), json.loads((reports / run_id / "summary.json").read_text())


def e2e(scenario_path: str, rounds: int) -> dict[str, Any]:
    reports = Path("/tmp/labgate-bench/e2e")
    last: dict[str, Any] = {}

    def run(i: int) -> dict[str, float]:
        two, summary = _pytest_run(scenario_path, 2, reports, f"e2e-n2-{os.getpid()}-{i}")
        zero, _ = _pytest_run(scenario_path, 0, reports, f"e2e-n0-{os.getpid()}-{i}")
        last["summary"] = summary
        phases = summary.get("phases", {})
        # the stack's teardown after a whole run (logs to redact, a registry full of content), and
        # the Allure HTML built beside it
        return {"pytest -n 2": two, "pytest -n 0": zero, "xdist speed-up": zero / two,
                "teardown after the run": phases.get("teardown", 0.0), "allure html": phases.get("allure-html", 0.0)}

    samples = _rounds(rounds, "e2e with -n 2 and -n 0", run)
    summary = last["summary"]
    slowest = sorted(summary["tests"], key=lambda t: -t["duration"])[:15]
    return {"figures": {k: figure(v) for k, v in samples.items()},
            "suites": {k: {"wall_s": v["wall"], "test_seconds": v["seconds"]} for k, v in summary["suites"].items()},
            "slowest": [{"test": t["nodeid"], "seconds": round(t["duration"], 3), "verdict": t["verdict"],
                         "waiting_s": (t.get("extra") or {}).get("lock_wait_s", 0.0)} for t in slowest]}


def oci_against_official(scenario_path: str, rounds: int) -> dict[str, Any]:
    """labgate's OCI suite and the official conformance program on the same registry, each round on
    a fresh one (a registry slows as content piles up: distribution walks its storage for a
    catalog), the two taking turns at going first."""
    from labgate import toolchain
    from labgate.peer import run_official

    scenario = load_scenario(scenario_path).for_suites({"oci"})
    if not toolchain.install("oci-conformance").available:
        return {"skipped": "the official conformance program is not available (fix: labgate tools install oci-conformance)"}
    account = next((r.name for r in scenario.identities.robots if "robots" in r.groups), scenario.identities.robots[0].name)
    kinds: set[str] = set()

    def run(i: int) -> dict[str, float]:
        p = get_provider(scenario, run_id=f"bench-oci-{os.getpid()}-{i}", report_dir=f"/tmp/labgate-bench/oci-{i}")
        stack = p.up()
        kinds.add(stack.registry_kind)
        try:
            def ours() -> float:
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-m", "pytest", "suites/oci", "-q", "-p", "no:cacheprovider", "--labgate-no-html",
                                "--labgate-state", stack.state_file, "--labgate-reports", "/tmp/labgate-bench/oci-runs",
                                "--labgate-run-id", f"oci-{os.getpid()}-{i}", "-n", "2", "--dist", "loadgroup"],
                               cwd=ROOT, capture_output=True, text=True)
                return time.monotonic() - t0

            def official() -> float:
                return run_official(stack, Path(f"/tmp/labgate-bench/official-{i}"), account)

            if i % 2:
                theirs, mine = official(), ours()
            else:
                mine, theirs = ours(), official()
        finally:
            p.down()
        return {"labgate OCI suite": mine, "official program": theirs, "labgate / official": mine / theirs}

    samples = _rounds(rounds, "OCI suite against the official program", run)
    return {k: figure(v) for k, v in samples.items()} | {"registry": ", ".join(sorted(kinds))}


def kind_against_bare(kind_scenario: str, rounds: int) -> dict[str, Any]:
    """The kind stack (cluster, images, charts, Ready) against a bare `kind create cluster` with the
    same node image, in the same round."""
    from labgate import toolchain
    from labgate.kind import engine as engines
    from labgate.providers.kind import _run, bare_kind_config

    kind = toolchain.resolve("kind")
    if not kind.available:
        return {"skipped": f"kind is not available: {kind.reason}"}
    scenario = load_scenario(kind_scenario)

    def run(i: int) -> dict[str, float]:
        p = get_provider(scenario, run_id=f"bench-kind-{os.getpid()}-{i}", report_dir=f"/tmp/labgate-bench/kind-{i}")
        t0 = time.monotonic()
        try:
            stack = p.up()
            whole = time.monotonic() - t0
            node = stack.provider_data["node_image"]
            eng = engines.ensure(_say)
            name = f"bench-bare-{i}"
            cfg = Path(f"/tmp/labgate-bench/bare-{i}.yaml")
            cfg.write_text(json.dumps(bare_kind_config()))  # what this host needs of any cluster from that node image
            t1 = time.monotonic()
            _run([kind.path, "create", "cluster", "--name", name, "--image", node, "--config", str(cfg),
                  "--kubeconfig", f"/tmp/labgate-bench/bare-{i}.kubeconfig", "--wait", "5m"], "kind create cluster (bare)", env=eng.env(), timeout=900)
            bare = time.monotonic() - t1
            _run([kind.path, "delete", "cluster", "--name", name], "kind delete cluster", env=eng.env(), timeout=300)
        finally:
            p.down()
        return {"kind stack": whole, "bare kind create": bare, "stack / bare": whole / bare,
                **{k: v for k, v in stack.timings.items() if k in ("node-image-build", "node-image-reuse", "node-image-preload", "node-image-preload-reuse", "cluster-create", "image-load")}}

    samples = _rounds(rounds, "kind stack against bare kind create", run)
    return {k: figure(v) for k, v in samples.items()}


def render(result: dict[str, Any]) -> str:
    def rows(figs: dict[str, Any]) -> str:
        return "".join(f"<tr><td>{escape(k)}</td><td>{f['median_s']}</td><td>{f['min_s']}</td><td>{f['max_s']}</td><td>{f['rounds']}</td></tr>"
                       for k, f in figs.items() if isinstance(f, dict) and "median_s" in f)

    head = "<tr><th>figure</th><th>median</th><th>min</th><th>max</th><th>rounds</th></tr>"
    parts = [f"<h1>labgate benchmarks</h1><p>{escape(result['measured'])} · {result['cpu_count']} cores · scenario {escape(result['scenario'])}</p>"]
    for section in ("floor", "stack", "e2e", "oci", "kind"):
        data = result.get(section)
        if not data:
            continue
        if "skipped" in data:
            parts.append(f"<h2>{section}</h2><p>skipped: {escape(data['skipped'])}</p>")
            continue
        figs = data.get("figures", data)
        parts.append(f"<h2>{section}</h2><table>{head}{rows(figs)}</table>")
        if section == "e2e":
            parts.append("<h3>per suite</h3><table><tr><th>suite</th><th>wall (s)</th><th>test seconds</th></tr>"
                         + "".join(f"<tr><td>{escape(k)}</td><td>{v['wall_s']}</td><td>{v['test_seconds']}</td></tr>" for k, v in data["suites"].items())
                         + "</table><h3>slowest 15</h3><table><tr><th>test</th><th>s</th><th>of which waiting for another test's outage</th>"
                         "<th>verdict</th></tr>"
                         + "".join(f"<tr><td>{escape(t['test'])}</td><td>{t['seconds']}</td><td>{t.get('waiting_s', 0.0)}</td>"
                                   f"<td>{escape(t['verdict'])}</td></tr>" for t in data["slowest"])
                         + "</table>")
    if "stack_up_over_floor" in result:
        parts.append(f"<h2>ratios</h2><table>{head}{rows({'stack-up / floor': result['stack_up_over_floor']})}</table>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>labgate benchmarks</title><style>body{font:14px system-ui,sans-serif;margin:24px}"
            "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}</style></head><body>" + "".join(parts) + "</body></html>")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labgate-bench")
    p.add_argument("--scenario", default="scenarios/local.yaml")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--e2e-rounds", type=int, default=3)
    p.add_argument("--kind", default="scenarios/kind.yaml", help="the kind scenario for the kind ratio")
    p.add_argument("--skip", default="", help="comma-separated: e2e, oci, kind")
    p.add_argument("--out", default="reports/benchmarks.json")
    args = p.parse_args(argv)
    if args.rounds < 3 or args.e2e_rounds < 1:
        p.error("--rounds must be at least 3 (every figure is a median with its min and max); --e2e-rounds at least 1")
    skip = {s for s in args.skip.split(",") if s}
    result: dict[str, Any] = {"scenario": args.scenario, "measured": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "cpu_count": os.cpu_count()}
    fs = floor_and_stack(args.scenario, args.rounds)
    result["floor"], result["stack"], result["stack_up_over_floor"] = fs["floor"], fs["stack"], fs["stack_up_over_floor"]
    failed = []
    for section, measure in (("e2e", lambda: e2e(args.scenario, args.e2e_rounds)),
                             ("oci", lambda: oci_against_official(args.scenario, args.rounds)),
                             ("kind", lambda: kind_against_bare(args.kind, args.rounds))):
        if section in skip:
            continue
        try:
            result[section] = measure()
        except LabgateError as exc:  # the other figures are still written; the run exits 1
            result[section] = {"skipped": f"failed: {exc.render()[-600:]}"}
            failed.append(section)
    result["harness_max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".html").write_text(render(result))
    st, fl = result["stack"]["stack-up"], result["floor"]["floor"]
    print(f"stack-up median {st['median_s']}s (min {st['min_s']}, max {st['max_s']}); floor median {fl['median_s']}s; "
          f"stack-up / floor {result['stack_up_over_floor']['median_s']}; teardown median {result['stack']['teardown']['median_s']}s")
    for section in ("e2e", "oci", "kind"):
        data = result.get(section) or {}
        for k, f in (data.get("figures", data)).items():
            if isinstance(f, dict) and "median_s" in f:
                print(f"{section:<5} {k:<22} median {f['median_s']:>8}  min {f['min_s']:>8}  max {f['max_s']:>8}")
        if "skipped" in data:
            print(f"{section:<5} skipped: {data['skipped']}")
    print(f"written: {out} and {out.with_suffix('.html')}")
    if failed:
        print(f"labgate bench: {', '.join(failed)} could not be measured (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
