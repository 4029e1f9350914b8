"""Unit tests of the gate's own logic (labgate.gate): the verdict diff, the probes' gaps, the exit
codes, the two sides' checks, versions as data (labgate.providers.base.tool_ref, toolchain
variants), HelmRelease refs mapped onto scenarios, and the CLI's bad input. No stack starts here;
tests/test_gate_run.py runs real gates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labgate import gate
from labgate.errors import ScenarioError
from labgate.providers.base import tool_ref
from labgate.scenario import load_scenario
from labgate.toolchain.specs import TOOLS, variant

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "scenarios" / "gate"


def _t(verdict: str, message: str = "") -> dict:
    return {"verdict": verdict, "message": message}


def test_the_diff_names_every_kind_of_change_regressions_first():
    before = {"a": _t("pass"), "b": _t("fail", "was broken"), "c": _t("pass"), "d": _t("pass"), "e": _t("known"), "gone": _t("pass"),
              "s": _t("skip")}
    after = {"a": _t("pass"), "b": _t("pass"), "c": _t("fail", "denied"), "d": _t("skip", "no zot"), "e": _t("error", "boom"),
             "new": _t("pass"), "s": _t("fail", "x")}
    rows = gate.diff(before, after)
    got = {r["nodeid"]: r["change"] for r in rows}
    assert got == {"a": "same", "b": "fixed", "c": "regressed", "d": "newly-skipped", "e": "regressed", "gone": "removed", "new": "new",
                   "s": "regressed"}
    assert [r["change"] for r in rows][:3] == ["regressed"] * 3
    assert next(r for r in rows if r["nodeid"] == "b")["message"] == "was broken", "a fixed test keeps the failure it had"


def test_gaps_run_from_the_first_failure_to_the_next_pass():
    P = gate.ProbeResult
    results = [P("pull", 0.0, True), P("pull", 0.5, False, "503"), P("pull", 1.0, False, "503"), P("pull", 1.5, True),
               P("oidc", 0.0, True), P("oidc", 2.0, False, "refused")]
    gaps = gate.gaps(results, end=3.0)
    assert gaps == [{"probe": "oidc", "start": 2.0, "end": 3.0, "seconds": 1.0, "detail": "refused", "open": True},
                    {"probe": "pull", "start": 0.5, "end": 1.5, "seconds": 1.0, "detail": "503"}]
    assert gate.rate(results, 2.0) == {"oidc": 1.0, "pull": 2.0}


def test_exit_codes_say_what_failed():
    assert gate.exit_code(0) == 0
    assert gate.exit_code(gate.REGRESSED) == 17 and gate.explain_exit(17) == "regressions"
    code = gate.exit_code(gate.SURVIVAL | gate.AVAILABILITY)
    assert code == 22 and gate.explain_exit(code) == "survival failures, availability gaps over budget"


def test_probes_run_at_least_twice_a_second_and_record_failures():
    calls = []

    def flaky():
        calls.append(1)
        return "down" if len(calls) % 2 else None

    p = gate.Probes({"flaky": flaky})
    p.start()
    import time

    time.sleep(1.6)
    seconds = p.stop()
    assert gate.rate(p.results, seconds)["flaky"] >= 2.0
    assert any(not r.ok and r.detail == "down" for r in p.results) and any(r.ok for r in p.results)


def test_the_gate_scenarios_load_and_pair():
    for a, b in (("kyverno-v1.18", "kyverno-v1.19"), ("kyverno-v1.19", "broken-candidate"), ("distribution-v3.0", "distribution-v3.1"),
                 ("kubernetes-v1.35", "kyverno-v1.19")):
        gate.check_pair(load_scenario(str(GATE / f"{a}.yaml")), load_scenario(str(GATE / f"{b}.yaml")))
    assert gate.versions_of(load_scenario(str(GATE / "kyverno-v1.18.yaml")))["admission"] == "v1.18.2"
    assert gate.versions_of(load_scenario(str(GATE / "kubernetes-v1.35.yaml")))["kubernetes"] == "v1.35.4"


def test_sides_that_are_not_one_stack_are_refused(tmp_path):
    data = yaml.safe_load((GATE / "kyverno-v1.19.yaml").read_text())
    data["identities"]["robots"][1]["groups"].append("robots")  # the read-only robot may now write
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as exc:
        gate.check_pair(load_scenario(str(GATE / "kyverno-v1.19.yaml")), load_scenario(str(tmp_path / "fewer.yaml")))
    assert "identities: differ" in exc.value.render()


def test_versions_are_data():
    sc = load_scenario(str(GATE / "kyverno-v1.18.yaml"))
    assert tool_ref(sc, "kyverno") == "kyverno@v1.18.2" and tool_ref(sc, "kyverno-images") == "kyverno-images@v1.18.2"
    assert tool_ref(sc, "kube-apiserver") == "kube-apiserver", "the pinned version is the plain name (its cache, its variable)"
    assert tool_ref(sc, "etcd") == "etcd"
    assert tool_ref(load_scenario(str(GATE / "distribution-v3.0.yaml")), "distribution") == "distribution@v3.0.0"
    assert tool_ref(load_scenario(str(GATE / "distribution-v3.0.yaml")), "zot") == "zot", "the version belongs to the kind named"
    k = variant("kyverno", version="v1.18.2")
    assert k.env == "KYVERNO_BIN_1_18_2" and k.methods[0].version == "v1.18.2"
    assert "BuildVersion=v1.18.2" in k.methods[0].ldflags
    p = variant("pocket-id", version="v2.13.0")
    assert p.methods == () and "POCKET_ID_BIN_2_13_0" in p.unavailable, "a pseudo-version names one release: nothing is built for another"
    assert TOOLS["pocket-id"].methods, "the pinned one keeps its recipe"


def test_a_registry_version_needs_a_kind(tmp_path):
    data = yaml.safe_load((ROOT / "scenarios" / "local.yaml").read_text())
    data["components"]["registry"] = {"kind": "auto", "version": "v3.0.0"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(tmp_path / "s.yaml"))
    assert "components.registry" in exc.value.render() and "needs an explicit kind" in exc.value.render()


def test_helmrelease_versions_become_scenarios(tmp_path):
    out = gate.scenario_for_release(ROOT / "scenarios" / "local.yaml", {"admission": "v1.18.2", "identity": "v2.14.0"}, tmp_path, "base-main")
    sc = load_scenario(out)
    assert sc.components.admission.version == "v1.18.2" and sc.name == "local-base-main"
    out = gate.scenario_for_release(ROOT / "scenarios" / "local.yaml", {"registry": "v2.1.20"}, tmp_path, "z")
    reg = load_scenario(out).components.registry
    assert (reg.kind, reg.version) == ("zot", "v2.1.20")


@pytest.mark.parametrize("args, said", [
    ([], "labgate gate needs --from SCENARIO and --to SCENARIO"),
    (["--helmreleases", "x"], "--helmreleases needs --base REF and --head REF"),
    (["--helmreleases", "x", "--from", "a.yaml", "--base", "a", "--head", "b"], "give --base and --head, not --from/--to"),
    (["--from", "scenarios/gate/nope.yaml", "--to", "scenarios/gate/kyverno-v1.19.yaml"], "scenarios/gate/nope.yaml"),
])
def test_bad_gate_input_is_one_clear_error(args, said):
    out = subprocess.run([sys.executable, "-m", "labgate.cli", "gate", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert said in out.stderr and "Traceback" not in out.stderr


def test_kind_refuses_a_kubernetes_bump_in_place_before_anything_starts(tmp_path):
    """Unit test: a kind node runs the Kubernetes of its node image; the gate says so and names
    the field and the provider that can (nothing is started: prepare_upgrade runs first)."""
    from labgate.errors import StackError
    from labgate.providers.kind import KindProvider

    out = tmp_path / "scenarios"
    a = gate.with_provider(load_scenario(str(ROOT / "scenarios" / "local.yaml")), "kind", out)
    b = gate.with_provider(load_scenario(str(GATE / "kubernetes-v1.35.yaml")), "kind", out)
    prov = KindProvider(a, run_id="unit", report_dir=str(tmp_path / "r"))
    with pytest.raises(StackError) as exc:
        prov.prepare_upgrade(b)
    msg = exc.value.render()
    assert "components.kubernetes.version" in msg and "--provider local" in msg, msg
    assert prov.stack is None and not (tmp_path / "r").exists()
