"""Unit tests of the nightly matrix: loading and its errors, a cell's scenario, the cross-cell page,
and the committed workflow equal to the rendered one (actionlint checks it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from labgate import matrix, toolchain
from labgate.errors import ScenarioError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_matrix_loads_and_every_cell_has_a_scenario():
    m = matrix.load_matrix(ROOT / "scenarios" / "matrix.yaml")
    assert {c.name for c in m.cells} >= {"local", "local-arm64", "kind"}
    assert matrix.cell_scenario(m.cell("local-arm64")).arch == "arm64"
    assert matrix.cell_scenario(m.cell("kind")).provider == "kind"


def test_the_committed_workflow_equals_the_rendered_one():
    m = matrix.load_matrix(ROOT / "scenarios" / "matrix.yaml")
    assert matrix.render(m, root=ROOT, check=True) == [], "run `labgate matrix render` and commit .github/workflows/"
    wf = yaml.safe_load((ROOT / matrix.WORKFLOW).read_text())
    job = wf["jobs"]["cell"]
    assert job["strategy"]["fail-fast"] is False
    assert [c["cell"] for c in job["strategy"]["matrix"]["include"]] == [c.name for c in m.cells]
    assert wf[True if True in wf else "on"]["schedule"][0]["cron"] == m.schedule
    assert wf["jobs"]["page"]["needs"] == "cell"
    bump = yaml.safe_load((ROOT / matrix.BUMP_WORKFLOW).read_text())
    assert bump[True if True in bump else "on"]["pull_request"]["paths"] == m.chart_bump.paths
    run = next(s["run"] for s in bump["jobs"]["gate"]["steps"] if "run" in s)
    assert f"nox -s gate -- --helmreleases . --base \"$BASE\" --head \"$HEAD\" --under {m.chart_bump.under}" in run


def test_an_upgrade_cell_starts_from_its_previous_versions(tmp_path):
    m = matrix.load_matrix(ROOT / "scenarios" / "matrix.yaml")
    c = m.cell("local-kyverno-upgrade")
    assert matrix.cell_scenario(c, start=True).components.admission.version == "v1.18.2"
    assert matrix.cell_scenario(c).components.admission.version == "v1.19.0"
    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump({"cells": [{"name": "u", "scenario": "scenarios/local.yaml", "upgrade": "gate"}]}))
    with pytest.raises(ScenarioError) as exc:
        matrix.load_matrix(bad)
    assert "upgrade_from" in exc.value.render()


def test_actionlint_passes_on_the_workflows():
    tool = toolchain.resolve("actionlint")
    if not tool.available:
        pytest.skip(f"actionlint not available: {tool.reason} (fix: labgate tools install actionlint)")
    out = subprocess.run([tool.path, "-no-color", str(ROOT / matrix.WORKFLOW), str(ROOT / matrix.BUMP_WORKFLOW)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_cell_overrides_versions_and_arch(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"cells": [{"name": "k", "scenario": str(ROOT / "scenarios/local.yaml"), "arch": "arm64",
                                            "versions": {"admission": "v1.18.2", "kubernetes": "v1.35.4"}}]}))
    sc = matrix.cell_scenario(matrix.load_matrix(m).cells[0])
    assert (sc.arch, sc.components.admission.version, sc.components.kubernetes.version) == ("arm64", "v1.18.2", "v1.35.4")
    assert sc.name == "local@k"


@pytest.mark.parametrize("cells, error", [
    ([{"name": "a", "scenario": "scenarios/local.yaml", "suite": ["x"]}], "cells[0].suite: unknown key (did you mean 'suites'?)"),
    ([{"name": "a", "scenario": "scenarios/nope.yaml"}], "cells[0].scenario: no such scenario file scenarios/nope.yaml"),
    ([{"name": "a", "scenario": "scenarios/local.yaml"}, {"name": "a", "scenario": "scenarios/kind.yaml"}], "cells[1].name: 'a' appears twice"),
    ([{"name": "a", "scenario": "scenarios/local-arm64.yaml", "versions": {"admission": "v1.18.2"}}],
     "versions.admission: the scenario scenarios/local-arm64.yaml has no components.admission"),
    ([], "cells: "),
])
def test_matrix_errors_name_the_field(tmp_path, cells, error):
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"cells": cells}))
    with pytest.raises(ScenarioError) as exc:
        matrix.load_matrix(m)
    assert error in str(exc.value)
    assert str(exc.value).startswith(str(m))


def test_an_unknown_cell_names_the_cells():
    m = matrix.load_matrix(ROOT / "scenarios" / "matrix.yaml")
    with pytest.raises(UsageError) as exc:
        m.cell("nope")
    assert "local" in exc.value.render() and "kind" in exc.value.render()


def _cell(reports: Path, name: str, verdicts: dict[str, str], provider: str = "local", exit_code: int = 0) -> None:
    d = reports / name
    (d / f"{name}-run").mkdir(parents=True)
    (d / "cell.json").write_text(json.dumps({"cell": name, "run_id": f"{name}-run", "exit": exit_code, "host": "Linux x86_64"}))
    (d / f"{name}-run" / "summary.json").write_text(json.dumps({
        "result": "passed" if not exit_code else "failed",
        "stack": {"provider": provider, "arch": "amd64", "components": [{"name": "registry", "kind": "distribution", "version": "v3.1.2"}]},
        "tests": [{"nodeid": n, "verdict": v} for n, v in verdicts.items()]}))


def test_the_cross_cell_page_puts_a_regression_first(tmp_path):
    _cell(tmp_path, "local", {"suites/oci/test_pull.py::test_a": "pass", "suites/oci/test_pull.py::test_b": "pass"})
    _cell(tmp_path, "kind", {"suites/oci/test_pull.py::test_a": "pass", "suites/oci/test_pull.py::test_b": "fail"}, provider="kind", exit_code=1)
    page = matrix.write_page(tmp_path)
    data = json.loads((tmp_path / "matrix.json").read_text())
    assert data["rows"][0]["nodeid"].endswith("test_b") and data["rows"][0]["differs"]
    assert not data["rows"][1]["differs"]
    fps = {n: c["fingerprint"] for n, c in data["cells"].items()}
    assert fps["local"]["provider"] == "local" and fps["kind"]["provider"] == "kind" and fps["local"]["id"] != fps["kind"]["id"]
    text = page.read_text()
    assert "1 test(s) with a verdict that differs" in text and "⚠ suites/oci/test_pull.py::test_b" in text


def test_each_cells_written_scenario_loads_back(tmp_path):
    from labgate.scenario import load_scenario

    m = matrix.load_matrix(ROOT / "scenarios" / "matrix.yaml")
    for c in m.cells:
        sc = matrix.cell_scenario(c)
        f = tmp_path / f"{c.name}.yaml"
        f.write_text(matrix.scenario_yaml(sc))
        back = load_scenario(f)
        assert back.model_dump(exclude={"source"}) == sc.model_dump(exclude={"source"}), c.name
