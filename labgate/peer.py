"""Peer cross-check: labgate's OCI suite and the official OCI conformance program, same registry.

Both run against one stack. The official program exits 0 when its own configuration is broken, so
its results.yaml must exist and parse. Verdicts are compared per area (push, pull, tag list,
referrers, management, error codes, sha512) and written to reports/<run-id>/peer-conformance.json;
the summary page shows them side by side with both wall times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from labgate import redact, toolchain
from labgate.errors import LabgateError, StackError
from labgate.stack import Stack

AREAS = ("push", "pull", "tag list", "referrers", "management", "error codes", "sha512")
SUBJECT_SETS = ("artifacts-with-subject", "index-with-subject", "missing-subject")
ROOT = Path(__file__).resolve().parent.parent


def official_area(name: str) -> str | None:
    """Map an official test path ('OCI Conformance Test/image/push/manifest-by-tag') to an area."""
    parts = name.split("/")[1:]
    if not parts or parts == ["ping"]:
        return None
    path = "/".join(parts)
    last = parts[-1]
    if "delete" in last or (len(parts) > 1 and parts[-2] == "delete"):
        return "management"  # deleting is management whatever the digest algorithm
    if "sha512" in path:
        return "sha512"
    if last == "referrers" or (parts[0] in SUBJECT_SETS and len(parts) > 2 and parts[1] == "push" and last.startswith("manifest")):
        return "referrers"
    if last in ("tag list", "tag-list"):
        return "tag list"
    if parts[0] in ("missing-manifest", "invalid-digest-format", "bad-digest-image") or last == "get-missing":
        return "error codes"
    if last.startswith(("blob-head", "blob-get", "range ")) or "head" in parts or "pull" in parts or "range requests" in parts:
        return "pull"
    return "push"


def _missing_content(detail: str) -> bool:
    """A failure that only says the content is not there (because its push failed)."""
    d = detail.lower()
    return any(k in d for k in ("received 404", "missing tag", "manifest_unknown", "blob_unknown", "not found"))


def _absent_referrers(detail: str) -> bool:
    d = detail.lower()
    return "received 404" in d or 'header value mismatch for "oci-subject"' in d or "404 page not found" in d


def parse_tree(text: str) -> list[tuple[str, str, str]]:
    """Leaf results from the official program's printed result tree: (name, status, message)."""
    rows: list[tuple[int, str, str, list[str]]] = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)(OCI Conformance Test(?:/[^:]*)?): (Pass|FAIL|Skip|Disabled|Error)\s*$", line)
        if m:
            rows.append((len(m.group(1)), m.group(2), m.group(3).lower(), []))
        elif rows and line.strip():
            rows[-1][3].append(line.strip().removeprefix("- "))
    leaves = []
    for i, (indent, name, status, msg) in enumerate(rows):
        if i + 1 < len(rows) and rows[i + 1][0] > indent:
            continue  # a group, not a test
        leaves.append((name, status, " ".join(msg)[:400]))
    return leaves


def parse_official(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-area verdicts of the official program (its results.yaml must exist and parse).

    A failure in a data set whose push already failed is a consequence, not a new finding: it is
    counted in the area of that push failure (push, or referrers when the push failed for lack of
    an OCI-Subject answer)."""
    res = results_dir / "results.yaml"
    if not res.exists():
        raise StackError(f"the official conformance program wrote no {res.name}: its configuration was not accepted (it exits 0 then)")
    try:
        data = yaml.safe_load(res.read_text())
        assert isinstance(data, dict) and "apis" in data
    except Exception as exc:  # noqa: BLE001
        raise StackError(f"the official conformance program's {res.name} does not parse: {exc}") from None
    areas: dict[str, dict[str, Any]] = {a: {"pass": 0, "fail": 0, "skip": 0, "details": []} for a in AREAS}
    root_cause: dict[str, str] = {}
    for name, status, msg in parse_tree((results_dir / "output.txt").read_text(errors="replace")):
        area = official_area(name)
        if area is None:
            continue
        parts = name.split("/")[1:]
        dataset = parts[0]
        if status == "fail" and dataset in root_cause and area != root_cause[dataset] and _missing_content(msg):
            area = root_cause[dataset]
            msg = f"consequence of the failed push of {dataset}: {msg}"
        elif status == "fail" and len(parts) > 1 and parts[1] == "push":
            root_cause.setdefault(dataset, area)
        if status == "pass":
            areas[area]["pass"] += 1
        elif status == "fail":
            areas[area]["fail"] += 1
            areas[area]["details"].append((name.split("/", 1)[-1], msg))
        else:
            areas[area]["skip"] += 1
    out = {}
    for area, a in areas.items():
        if a["fail"]:
            if area == "referrers" and all(_absent_referrers(d) for _, d in a["details"]):
                verdict, detail = "unsupported", f"no referrers API ({a['fail']} checks: 404 / no OCI-Subject)"
            else:
                verdict = "fail"
                detail = f"{a['fail']} failed, e.g. {a['details'][0][0]}: {a['details'][0][1][:160]}"
        elif a["pass"]:
            verdict, detail = "pass", f"{a['pass']} passed" + (f", {a['skip']} skipped" if a["skip"] else "")
        else:
            verdict, detail = "skip", "not run"
        out[area] = {"verdict": verdict, "detail": detail}
    return out


def labgate_areas(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """labgate's verdict per area over the checks the official program also makes; tests marked
    ``beyond_official`` (checks the official program does not make) are reported beside it."""
    out: dict[str, dict[str, Any]] = {}
    for area in AREAS:
        all_tests = [t for t in summary["tests"] if t.get("area") == area and t.get("suite") == "oci"]
        tests = [t for t in all_tests if not t.get("beyond_official")]
        extra = [t for t in all_tests if t.get("beyond_official") and t["verdict"] in ("fail", "known", "error")]
        counts: dict[str, int] = {}
        for t in tests:
            counts[t["verdict"]] = counts.get(t["verdict"], 0) + 1
        if counts.get("fail") or counts.get("error") or counts.get("known"):
            verdict = "fail"
        elif counts.get("unsupported") and (area == "referrers" or not (counts.get("pass") or counts.get("warn"))):
            verdict = "unsupported"  # the referrers API itself is absent
        elif counts.get("pass") or counts.get("warn"):
            verdict = "pass"
        else:
            verdict = "skip"
        detail = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        known = [t["message"].split(":")[0] for t in tests if t["verdict"] == "known"]
        if known:
            detail += " (" + "; ".join(sorted(set(known))) + ")"
        if verdict == "pass" and counts.get("unsupported"):
            detail += " (optional parts unsupported)"
        beyond = "; ".join(sorted({t["nodeid"].split("::")[1].split("[")[0] + ": " + t["message"].split(":")[0] for t in extra}))
        out[area] = {"verdict": verdict, "detail": detail or "no test", "beyond": beyond}
    return out


def compare(labgate: dict[str, dict[str, Any]], official: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for area in AREAS:
        lv, ov = labgate[area]["verdict"], official[area]["verdict"]
        rows.append({
            "area": area, "labgate": lv, "labgate_detail": labgate[area]["detail"],
            "labgate_beyond": labgate[area].get("beyond", ""),
            "official": ov, "official_detail": official[area]["detail"],
            "agree": lv == ov or "skip" in (lv, ov),
        })
    return rows


def run_official(stack: Stack, out_dir: Path, account: str) -> float:
    tool = toolchain.install("oci-conformance")
    path = tool.require()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OCI_REGISTRY": stack.registry_host,
        "OCI_TLS": "disabled",
        "OCI_REPO1": "conformance/official-1",
        "OCI_REPO2": "conformance/official-2",
        "OCI_VERSION": "1.1",
        "OCI_USERNAME": account,
        "OCI_PASSWORD": stack.password(account),
        "OCI_RESULTS_DIR": str(out_dir),
    }
    t0 = time.monotonic()
    proc = subprocess.run([path], env=env, capture_output=True, text=True, timeout=1800, cwd=out_dir)
    took = time.monotonic() - t0
    (out_dir / "output.txt").write_text(redact.redact(proc.stdout + proc.stderr))
    for name in ("results.yaml", "junit.xml", "report.html"):
        f = out_dir / name
        if f.exists():
            f.write_text(redact.redact(f.read_text(errors="replace")))
    return took


def run_peer(*, scenario_path: str, reports: Path, labgate_args: list[str]) -> int:
    from labgate.providers import get_provider
    from labgate.report import summary as summary_page
    from labgate.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()
    report_dir = (reports / run_id).resolve()
    provider = get_provider(scenario, run_id=run_id, report_dir=str(report_dir))
    try:
        stack = provider.up()
        account = next((r.name for r in scenario.identities.robots if "robots" in r.groups), None) or scenario.identities.robots[0].name
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "oci"), "-q", "-p", "no:cacheprovider",
               "--labgate-state", stack.state_file, "--labgate-run-id", run_id, "--labgate-reports", str(reports.resolve()),
               "--scenario", scenario_path, *labgate_args]
        lab = subprocess.run(cmd, cwd=ROOT)
        labgate_seconds = time.monotonic() - t0
        official_seconds = run_official(stack, report_dir / "peer", account)
        summary = json.loads((report_dir / "summary.json").read_text())
        official = parse_official(report_dir / "peer")
        rows = compare(labgate_areas(summary), official)
        peer = {
            "registry": f"{stack.registry_kind} {stack.components[0].reported_version or stack.components[0].version}",
            "official_version": toolchain.TOOLS["oci-conformance"].version,
            "labgate_seconds": round(labgate_seconds, 2), "official_seconds": round(official_seconds, 2),
            "areas": rows,
        }
        (report_dir / "peer-conformance.json").write_text(json.dumps(peer, indent=2))
        summary["peer"] = peer
        (report_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        (report_dir / "index.html").write_text(summary_page.render(summary))
    except LabgateError as exc:
        print(f"labgate: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    finally:
        provider.down()
    width = max(len(a) for a in AREAS)
    print(f"\npeer cross-check against {peer['registry']} (labgate {peer['labgate_seconds']}s, official {peer['official_seconds']}s)")
    for r in rows:
        mark = "agree" if r["agree"] else "DISAGREE"
        print(f"  {r['area']:<{width}}  labgate {r['labgate']:<12} official {r['official']:<12} {mark}")
    print(f"report: {report_dir / 'index.html'}")
    disagree = [r["area"] for r in rows if not r["agree"]]
    if disagree:
        print(f"labgate and the official program disagree on: {', '.join(disagree)}", file=sys.stderr)
        return 1
    return 0 if lab.returncode in (0, 1) else lab.returncode
