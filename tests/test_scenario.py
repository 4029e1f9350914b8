"""Unit tests: scenario validation gives one clear line naming file and field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labgate.errors import ScenarioError
from labgate.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).parent / "data" / "scenarios" / "bad"

# file -> the exact field path and message expected after "<file>: "
EXPECTED = {
    "wrong-type-version.yaml": "components.registry.version: expected a string",
    "unknown-top-key.yaml": "provder: unknown key (did you mean 'provider'?)",
    "unknown-nested-key.yaml": "components.registry.verison: unknown key (did you mean 'version'?)",
    "missing-name.yaml": "name: required field is missing",
    "bad-provider.yaml": "provider: expected one of 'local', 'kind', 'k3d' or 'existing' (got 'minikube')",
    "bad-arch.yaml": "arch: expected one of 'auto', 'amd64' or 'arm64' (got 'riscv64')",
    "suites-not-list.yaml": "suites: expected a list",
    "unknown-suite.yaml": "suites[1]: expected one of 'oci', 'oidc', 'access', 'admission', 'rotation' or 'faults' (got 'fuzz')",
    "robot-not-mapping.yaml": "identities.robots[0]: expected a mapping",
    "undeclared-group.yaml": "identities.robots[0].groups: group 'admins' is not declared in identities.groups",
    "duplicate-robot.yaml": "identities.robots[1].name: 'ci-robot' is declared twice",
    "access-unknown-user.yaml": "access.policies[0].users: 'mallory' is not declared in identities",
    "bad-action.yaml": "access.policies[0].actions[1]: expected one of 'read', 'create', 'update' or 'delete' (got 'write')",
    "yaml-syntax.yaml": "line 3, column 1: YAML syntax error",
    "top-level-list.yaml": "expected a mapping at the top level, got list",
    "empty.yaml": "the file is empty",
    "large-index-range.yaml": "options.oci.large_index_manifests: input should be greater than or equal to 2",
    "duplicate-suite.yaml": "suites: suite 'oci' is listed twice",
    "signing-unknown-key.yaml": "signing.ci_key: 'K9' is not one of signing.keys",
    "policy-kind-unknown.yaml": "signing.policy.kinds[1]: expected one of 'ClusterPolicy' or 'ImageValidatingPolicy' (got 'ImageVerifyPolicy')",
    "policy-kinds-empty.yaml": "signing.policy.kinds: at least one policy kind (ClusterPolicy, ImageValidatingPolicy)",
}


def test_every_bad_file_has_an_expectation():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_scenario_names_file_and_field(name):
    path = BAD / name
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: "), msg
    assert EXPECTED[name] in msg, msg
    assert "\n" not in msg, "one line, not a traceback"
    assert exc.value.exit_code == 2


def test_default_scenario_is_valid():
    sc = load_scenario(ROOT / "scenarios" / "local.yaml")
    assert sc.provider == "local"
    assert "oci" in sc.suites
    assert {r.name for r in sc.identities.robots} >= {"ci-robot", "readonly-robot"}


def test_all_shipped_scenarios_are_valid():
    from labgate.matrix import load_matrix

    for p in (ROOT / "scenarios").glob("*.yaml"):
        load_matrix(p) if p.name == "matrix.yaml" else load_scenario(p)


def test_missing_file_gives_the_fix(tmp_path):
    with pytest.raises(ScenarioError) as exc:
        load_scenario(tmp_path / "nope.yaml")
    assert "no such scenario file" in str(exc.value)
    assert "--scenario" in str(exc.value)


def test_more_problems_are_counted_not_listed():
    with pytest.raises(ScenarioError) as exc:
        parse_scenario({"name": 1, "arch": 2, "provider": 3}, "s.yaml")
    assert "(and 2 more problems)" in str(exc.value)


def test_strict_types_do_not_coerce():
    with pytest.raises(ScenarioError, match="name: expected a string"):
        parse_scenario({"name": 5}, "s.yaml")


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


def test_cli_exits_2_with_one_line_and_starts_nothing(tmp_path):
    bad = BAD / "wrong-type-version.yaml"
    proc = _run(["-m", "labgate.cli", "stack", "up", "--scenario", str(bad), "--reports", str(tmp_path)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"labgate: {bad}: components.registry.version: expected a string"]
    assert not any(tmp_path.iterdir()), "nothing may be started or written"


def test_pytest_exits_2_on_a_malformed_scenario(tmp_path):
    bad = BAD / "unknown-top-key.yaml"
    proc = _run(["-m", "pytest", "suites/", "--scenario", str(bad), "-q", "--labgate-reports", str(tmp_path)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{bad}: provder: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_pytest_with_a_missing_binary_names_the_fix(tmp_path):
    sc = tmp_path / "zot.yaml"
    sc.write_text("name: zot-only\ncomponents:\n  registry:\n    kind: zot\nsuites: [oci]\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "ZOT_BIN"}
    proc = _run(["-m", "pytest", "suites/", "--scenario", str(sc), "-q", "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"], env=env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "zot binary not available: set ZOT_BIN" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    summary = next((tmp_path / "r").glob("*/index.html")).read_text()
    assert "zot binary not available: set ZOT_BIN" in summary, "the report says why the run did not start"
