"""Real gates on the local stack (labgate.gate): a Kyverno chart bump read from two refs of a git
repository holding Flux HelmRelease files, a registry bump with its data kept, and a deliberately
broken candidate that must fail naming the regressed tests. Each starts real components."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labgate import toolchain

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
HELMRELEASES = Path(__file__).resolve().parent / "data" / "helmreleases"


def _needs(*names: str) -> None:
    for n in names:
        r = toolchain.resolve(n)
        if not r.available:
            pytest.skip(f"{n}: {r.reason}")


def _gate(tmp_path: Path, *args: str, timeout: float = 1200) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LABGATE_STATE",)}
    out = subprocess.run([sys.executable, "-m", "labgate.cli", "gate", *args, "--reports", str(tmp_path / "reports")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    runs = sorted((tmp_path / "reports").glob("gate-2*/gate.json"))
    assert runs, f"no gate.json (exit {out.returncode}): {out.stderr[-2000:]}"
    record = json.loads(runs[-1].read_text())
    page = (runs[-1].parent / "index.html").read_text()
    for part in ("Availability probes", "Survival", "Verdicts: baseline"):
        assert part in page
    assert not list((toolchain.cache_root() / "runs").glob(f"{record['id']}.json")), "the gate's stack is still registered"
    return out.returncode, record, out.stderr


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_a_kyverno_chart_bump_from_two_git_refs_passes_the_gate(tmp_path):
    _needs("kube-apiserver", "etcd", "kyverno", "distribution")
    repo = tmp_path / "lab"
    (repo / "clusters").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "lab@example.org")
    _git(repo, "config", "user.name", "lab")
    for name in ("kyverno.yaml", "pocket-id.yaml"):  # no zot release: zot cannot be had here
        shutil.copy(HELMRELEASES / name, repo / "clusters" / name)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    f = repo / "clusters" / "kyverno.yaml"
    f.write_text(f.read_text().replace("version: 3.8.2", "version: 3.9.0"))
    _git(repo, "commit", "-q", "-am", "chore(deps): update helm release kyverno to v3.9.0")
    code, rec, err = _gate(tmp_path, "--helmreleases", str(repo), "--base", "HEAD~1", "--head", "HEAD", "--under", "clusters",
                           "--suites", "suites/admission")
    assert code == 0, err[-3000:]
    assert rec["from"]["kyverno_chart"] == {"chart": "3.8.2", "app": "v1.18.2"}
    assert rec["to"]["kyverno_chart"] == {"chart": "3.9.0", "app": "v1.19.0"}
    assert [(u["component"], u["from"], u["to"]) for u in rec["upgraded"]] == [("kyverno", "v1.18.2", "v1.19.0")]
    rates = rec["probes"]["rate_hz"]
    assert set(rates) >= {"pull", "admission-signed", "admission-unsigned"} and min(rates.values()) >= 2.0, rates
    assert not [g for g in rec["probes"]["gaps"] if g["probe"] == "pull"], "the registry is not touched by a Kyverno upgrade"
    assert not [r for r in rec["survival"] if r["result"] == "FAILED"], rec["survival"]
    assert {r["check"] for r in rec["survival"] if r["result"] == "ok"} >= {"cosign v3 bundle verifies with the seed key", "every policy Ready (ClusterPolicy, ImageValidatingPolicy)"}
    assert not [r for r in rec["diff"] if r["change"] == "regressed"]
    assert len(rec["diff"]) >= 20


def test_a_registry_bump_keeps_what_it_served(tmp_path):
    _needs("kube-apiserver", "etcd", "kyverno", "distribution")  # v3.0.0 the gate obtains itself, before anything starts
    code, rec, err = _gate(tmp_path, "--from", "scenarios/gate/distribution-v3.0.yaml", "--to", "scenarios/gate/distribution-v3.1.yaml",
                           "--suites", "suites/oci")
    assert code == 0, err[-3000:]
    assert [(u["component"], u["to"]) for u in rec["upgraded"]] == [("registry", "v3.1.2")]
    assert not [g for g in rec["probes"]["gaps"] if g["probe"] == "pull" and g.get("open")], "the registry serves again after its swap"
    pulls = [r for r in rec["probes"]["results"] if r["probe"] == "pull"]
    assert pulls[-1]["ok"] and rec["probes"]["rate_hz"]["pull"] >= 2.0
    ok = {r["check"] for r in rec["survival"] if r["result"] == "ok"}
    assert {"seeded image served by digest", "tags v1 and stable name the seeded digest", "legacy signature (.sig) verifies with the seed key",
            "referrers still listed"} <= ok


def test_a_broken_candidate_fails_the_gate_naming_the_regressed_tests(tmp_path):
    _needs("kube-apiserver", "etcd", "kyverno", "distribution")
    code, rec, err = _gate(tmp_path, "--from", "scenarios/gate/kyverno-v1.19.yaml", "--to", "scenarios/gate/broken-candidate.yaml",
                           "--suites", "suites/admission/test_admission.py")
    assert code == 17, f"exit {code}: {err[-2000:]}"
    regressed = {r["nodeid"].split("::")[-1] for r in rec["diff"] if r["change"] == "regressed"}
    want = {f"{t}[{k}]" for t in ("test_a3_unsigned_is_denied", "test_a4_signed_by_another_key_is_denied") for k in ("cpol", "ivpol")}
    assert want <= regressed, regressed
    assert "REGRESSED suites/admission/test_admission.py::test_a3_unsigned_is_denied[cpol]" in err
    assert rec["result"] == "regressions"


def test_an_unserved_version_fails_before_anything_starts(tmp_path):
    text = (ROOT / "scenarios" / "gate" / "kyverno-v1.19.yaml").read_text()
    (tmp_path / "to.yaml").write_text(text.replace("version: v1.19.0", "version: v1.17.99"))
    before = set((toolchain.cache_root() / "runs").glob("*.json"))
    out = subprocess.run([sys.executable, "-m", "labgate.cli", "gate", "--from", "scenarios/gate/kyverno-v1.19.yaml", "--to", str(tmp_path / "to.yaml"),
                          "--reports", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 4, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert "components.admission.version: kyverno@v1.17.99 cannot be obtained" in line and "KYVERNO_BIN_1_17_99" in line, line
    assert "not available" in line or "403" in line or "404" in line or "410" in line, "the registry's own answer is quoted"
    assert set((toolchain.cache_root() / "runs").glob("*.json")) <= before, "nothing was started"
