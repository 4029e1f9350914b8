"""Order independence: the suites give the same verdict per test in reverse order (pytest
--labgate-reverse). No test may depend on another having run before it (for example the robot
revocation cases, which rewrite the registry's htpasswd file in two ways)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labgate import toolchain

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration
SELECTION = ["suites/access", "suites/oci/test_management.py", "suites/oci/test_push.py"]


def _verdicts(tmp_path: Path, run_id: str, *extra: str) -> tuple[dict[str, str], list[str]]:
    reports = tmp_path / "r"
    run = subprocess.run([sys.executable, "-m", "pytest", *SELECTION, "-p", "no:xdist", "-q", "--scenario", "scenarios/local.yaml",
                          "--labgate-reports", str(reports), "--labgate-run-id", run_id, "--labgate-no-html", *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    summary = json.loads((reports / run_id / "summary.json").read_text())
    assert summary["tests"], run.stdout[-2000:] + run.stderr[-2000:]
    ran = sorted(summary["tests"], key=lambda t: t["start"] or 0)
    return {t["nodeid"]: t["verdict"] for t in ran}, [t["nodeid"] for t in ran if t["start"]]


def test_reverse_order_gives_the_same_verdicts(tmp_path):
    if not (toolchain.resolve("distribution").available or toolchain.resolve("zot").available):
        pytest.skip("no registry binary (fix: labgate tools install distribution)")
    forward, order = _verdicts(tmp_path, "order-forward")
    backward, reverse_order = _verdicts(tmp_path, "order-reverse", "--labgate-reverse")
    assert len(order) > 20 and order[:5] == reverse_order[::-1][:5], "the second run really ran in reverse order"
    differ = {n: (forward.get(n), backward.get(n)) for n in set(forward) | set(backward) if forward.get(n) != backward.get(n)}
    assert not differ, f"verdicts depend on order (forward, reverse): {differ}"
