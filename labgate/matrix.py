"""The nightly matrix: cells of provider × Kubernetes version × arch × component versions × upgrade path.

``scenarios/matrix.yaml`` lists the cells, each a scenario file with what the cell changes in it.

- ``labgate matrix run [--cell NAME ...]`` (``nox -s matrix``) runs the cells here one after
  another, each an ordinary run with its own report, then writes the cross-cell page;
- ``labgate matrix page`` builds the cross-cell page from the cells' reports (the nightly
  workflow's last job): rows are tests, columns are cells, a test whose verdict differs between
  cells is flagged; each column carries its cell's environment fingerprint;
- ``labgate matrix render`` writes ``.github/workflows/nightly.yml`` from the matrix (one job per
  cell, fail-fast off, reports uploaded as artifacts, a final job building the page); a test proves
  the committed workflow equals the rendered one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from labgate.errors import ScenarioError, UsageError
from labgate.scenario import NAME_RE, Scenario, _Strict, load_scenario, read_yaml, validate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "scenarios/matrix.yaml"
WORKFLOW = ".github/workflows/nightly.yml"
BUMP_WORKFLOW = ".github/workflows/chart-bump.yml"


class Cell(_Strict):
    name: str = Field(pattern=NAME_RE.pattern)
    scenario: str = Field(description="the scenario file the cell starts from")
    suites: list[str] = Field(default=["suites/"], description="pytest paths (default: every suite the scenario supports)")
    arch: Literal["amd64", "arm64"] | None = None
    versions: dict[Literal["registry", "kubernetes", "admission", "signer", "identity"], str] = Field(
        default={}, description="component -> version, over the scenario's")
    upgrade: Literal["none", "gate"] = Field(default="none", description="none, or gate: `labgate gate` from upgrade_from to the cell's versions")
    upgrade_from: dict[Literal["registry", "kubernetes", "admission", "signer", "identity"], str] = Field(
        default={}, description="with upgrade: gate, the versions the stack starts at (e.g. the previous minor)")
    runner: str = Field(default="ubuntu-24.04", description="the CI runner label of the cell's job")

    @model_validator(mode="after")
    def _upgrade_has_a_start(self) -> "Cell":
        if (self.upgrade == "gate") != bool(self.upgrade_from):
            raise ValueError("upgrade_from: set it (the versions to upgrade from) exactly when upgrade is gate")
        return self


class ChartBump(_Strict):
    """The pull-request gate: which HelmRelease files a lab keeps where."""

    paths: list[str] = Field(default=["clusters/**/*.yaml"], min_length=1, description="paths whose change runs the gate")
    under: str = Field(default="clusters", description="the folder the gate reads HelmReleases from")
    scenario: str = Field(default="scenarios/local.yaml", description="the stack the releases' versions apply to")


class Matrix(_Strict):
    schedule: str = Field(default="17 3 * * *", description="cron of the nightly workflow (UTC)")
    chart_bump: ChartBump = ChartBump()
    python: str = "3.12"
    cells: list[Cell] = Field(min_length=1)
    source: str = Field(default="<memory>", exclude=True)

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise UsageError(f"--cell {name}: no such cell in {self.source}", fix=f"choose one of: {', '.join(c.name for c in self.cells)}")


def load_matrix(path: str | Path = DEFAULT) -> Matrix:
    data = read_yaml(path, "matrix", example=DEFAULT)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping with 'cells'")
    m = validate(Matrix, {**data, "source": str(path)}, str(path))
    seen: set[str] = set()
    for i, c in enumerate(m.cells):
        if c.name in seen:
            raise ScenarioError(f"{path}: cells[{i}].name: {c.name!r} appears twice")
        seen.add(c.name)
        if not (ROOT / c.scenario).is_file():
            raise ScenarioError(f"{path}: cells[{i}].scenario: no such scenario file {c.scenario}", fix="name a file under scenarios/")
        try:
            cell_scenario(c)
        except ScenarioError as exc:
            raise ScenarioError(f"{path}: cells[{i}]: {exc.message}", fix=exc.fix) from None
    return m


def cell_scenario(cell: Cell, start: bool = False) -> Scenario:
    """The cell's scenario: its file (relative to the repository, or absolute) with the cell's arch
    and versions applied (``start``: the versions an upgrade cell starts from)."""
    sc = load_scenario(ROOT / cell.scenario)
    comps = sc.components
    updates: dict[str, Any] = {}
    versions = {**cell.versions, **(cell.upgrade_from if start else {})}
    for name, version in versions.items():
        comp = getattr(comps, name)
        if comp is None:
            raise ScenarioError(f"versions.{name}: the scenario {cell.scenario} has no components.{name}")
        updates[name] = comp.model_copy(update={"version": version})
    sc = sc.model_copy(update={"components": comps.model_copy(update=updates), "name": f"{sc.name}@{cell.name}"})
    if cell.arch:
        sc = sc.model_copy(update={"arch": cell.arch})
    return sc


def scenario_yaml(sc: Scenario) -> str:
    return yaml.safe_dump(sc.model_dump(mode="json", exclude_none=True), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# running cells


def run(m: Matrix, names: list[str], reports: Path, pytest_args: list[str] = ()) -> int:
    """Run the named cells (all when none) one after another; the worst exit code wins."""
    cells = [m.cell(n) for n in names] if names else list(m.cells)
    reports.mkdir(parents=True, exist_ok=True)
    worst = 0
    for c in cells:
        d = reports / c.name
        d.mkdir(parents=True, exist_ok=True)
        scenario = d / "scenario.yaml"
        scenario.write_text(scenario_yaml(cell_scenario(c)))
        run_id = f"{c.name}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"
        print(f"labgate matrix: cell {c.name}: {' '.join(c.suites)} --scenario {c.scenario}" + (f" {c.versions}" if c.versions else ""),
              file=sys.stderr, flush=True)
        extra: dict[str, Any] = {}
        if c.upgrade == "gate":
            start = d / "from.yaml"
            start.write_text(scenario_yaml(cell_scenario(c, start=True)))
            code = subprocess.call([sys.executable, "-m", "labgate.cli", "gate", "--from", str(start), "--to", str(scenario), "--reports", str(d),
                                    *[a for s in c.suites for a in ("--suites", s)], *pytest_args], cwd=ROOT)
            gates = sorted(d.glob("gate-2*/gate.json"), key=lambda p: p.stat().st_mtime)
            if gates:  # the column shows the candidate's verdicts; the gate's own page is linked
                run_id = f"{gates[-1].parent.name}/candidate"
                extra = {"gate": f"{gates[-1].parent.name}/index.html", "gate_result": json.loads(gates[-1].read_text())["result"]}
        else:
            code = subprocess.call([sys.executable, "-m", "pytest", *c.suites, "--scenario", str(scenario), "--labgate-reports", str(d),
                                    "--labgate-run-id", run_id, *pytest_args], cwd=ROOT)
        host = f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        (d / "cell.json").write_text(json.dumps({"cell": c.name, "run_id": run_id, "exit": code, "host": host, **extra}))
        worst = max(worst, code)
    page = write_page(reports)
    print(f"labgate matrix: cross-cell page {page}", file=sys.stderr)
    return worst


def fingerprint(summary: dict[str, Any], host: str = "") -> dict[str, str]:
    """What keeps cells apart: provider, arch, each component's kind and version, the host."""
    st = summary.get("stack") or {}
    fp = {"provider": str(st.get("provider", "?")), "arch": str(st.get("arch", "?"))}
    for c in st.get("components") or []:
        fp[c.get("name", "?")] = f"{c.get('kind', '')} {c.get('reported_version') or c.get('version', '')}".strip()
    fp["host"] = host or "?"
    fp["id"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    return fp


def collect(reports: Path) -> dict[str, dict[str, Any]]:
    """cell -> {summary, fingerprint} from ``<reports>/<cell>/cell.json`` and that run's summary.json."""
    out: dict[str, dict[str, Any]] = {}
    for rec in sorted(reports.glob("*/cell.json")):
        meta = json.loads(rec.read_text())
        summary_file = rec.parent / meta["run_id"] / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"tests": [], "result": f"no report (exit {meta['exit']})"}
        out[meta["cell"]] = {"summary": summary, "fingerprint": fingerprint(summary, meta.get("host", "")), "exit": meta["exit"], "run_id": meta["run_id"]}
    return out


def table(cells: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per test: its verdict in each cell; ``differs`` when two cells that ran it disagree."""
    rows: dict[str, dict[str, str]] = {}
    for name, c in cells.items():
        for t in c["summary"].get("tests", []):
            rows.setdefault(t["nodeid"], {})[name] = t["verdict"]
    out = []
    for nodeid in sorted(rows):
        verdicts = rows[nodeid]
        ran = {v for v in verdicts.values() if v not in ("skip",)}
        out.append({"nodeid": nodeid, "verdicts": verdicts, "differs": len(ran) > 1})
    out.sort(key=lambda r: (not r["differs"], r["nodeid"]))
    return out


_COLOUR = {"pass": "#d4f4d4", "fail": "#f8c8c8", "error": "#f4a0a0", "skip": "#eeeeee", "known-issue": "#fbe7b0"}


def write_page(reports: Path) -> Path:
    cells = collect(reports)
    rows = table(cells)
    names = list(cells)
    e = html.escape
    head = "".join(f"<th>{e(n)}<br><small>{e(cells[n]['summary'].get('result', ''))}</small></th>" for n in names)
    fp_keys = sorted({k for c in cells.values() for k in c["fingerprint"]})
    fps = "".join(f"<tr><td class=k>{e(k)}</td>" + "".join(f"<td>{e(cells[n]['fingerprint'].get(k, ''))}</td>" for n in names) + "</tr>"
                  for k in fp_keys)
    body = []
    for r in rows:
        tds = "".join(f"<td style='background:{_COLOUR.get(r['verdicts'].get(n, ''), '#fff')}'>{e(r['verdicts'].get(n, '—'))}</td>" for n in names)
        body.append(f"<tr class='{'differs' if r['differs'] else ''}'><td class=t>{'⚠ ' if r['differs'] else ''}{e(r['nodeid'])}</td>{tds}</tr>")
    differ = sum(r["differs"] for r in rows)
    page = reports / "index.html"
    page.write_text(f"""<!doctype html><meta charset=utf-8><title>labgate matrix</title>
<style>body{{font:13px sans-serif;margin:1.5em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px}}
tr.differs td.t{{font-weight:bold;color:#a00}} td.k{{color:#555}}</style>
<h1>labgate matrix: {len(names)} cell(s), {len(rows)} tests</h1>
<p>{differ} test(s) with a verdict that differs between cells (listed first).</p>
<h2>Environment fingerprints</h2><table><tr><th></th>{head}</tr>{fps}</table>
<h2>Verdicts</h2><table><tr><th>test</th>{head}</tr>{''.join(body)}</table>
""")
    (reports / "matrix.json").write_text(json.dumps({"cells": {n: {"fingerprint": c["fingerprint"], "exit": c["exit"], "run_id": c["run_id"]}
                                                               for n, c in cells.items()}, "rows": rows}, indent=1))
    return page


# ---------------------------------------------------------------------------------------------
# the workflow


class _WorkflowDumper(yaml.SafeDumper):
    """Block scalars for multi-line scripts, no anchors for repeated steps."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_WorkflowDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def render_nightly(m: Matrix) -> str:
    """.github/workflows/nightly.yml: one job per cell (fail-fast off), reports as artifacts, then the page."""
    setup = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": m.python}},
    ]
    workflow = {
        "name": "nightly",
        "on": {"schedule": [{"cron": m.schedule}], "workflow_dispatch": {}},
        "permissions": {"contents": "read"},
        "jobs": {
            "cell": {
                "name": "${{ matrix.cell }}",
                "runs-on": "${{ matrix.runner }}",
                "timeout-minutes": 120,
                "strategy": {"fail-fast": False, "matrix": {"include": [{"cell": c.name, "runner": c.runner} for c in m.cells]}},
                "steps": [*setup,
                          {"name": "labgate matrix run", "run": "pip install nox\nnox -s matrix -- --cell ${{ matrix.cell }}"},
                          {"name": "reports", "if": "always()", "uses": "actions/upload-artifact@v4",
                           "with": {"name": "reports-${{ matrix.cell }}", "path": "reports/matrix/", "if-no-files-found": "warn"}}],
            },
            "page": {
                "name": "cross-cell page",
                "needs": "cell",
                "if": "always()",
                "runs-on": "ubuntu-24.04",
                "steps": [*setup,
                          {"uses": "actions/download-artifact@v4", "with": {"pattern": "reports-*", "path": "reports/matrix", "merge-multiple": True}},
                          {"name": "labgate matrix page", "run": "pip install -e .\nlabgate matrix page --reports reports/matrix"},
                          {"uses": "actions/upload-artifact@v4", "with": {"name": "matrix-page", "path": "reports/matrix/index.html"}}],
            },
        },
    }
    text = yaml.dump(workflow, Dumper=_WorkflowDumper, sort_keys=False, width=200).replace("'on':", "on:")
    return f"# generated from {DEFAULT} by `labgate matrix render`; do not edit (a test compares the two)\n" + text


def render_chart_bump(m: Matrix) -> str:
    """.github/workflows/chart-bump.yml: on a pull request that touches HelmRelease files, the gate
    between the pull request's base and head, its report uploaded whatever the verdict."""
    cb = m.chart_bump
    gate = (f"pip install nox\nnox -s gate -- --helmreleases . --base \"$BASE\" --head \"$HEAD\" --under {cb.under} "
            f"--scenario {cb.scenario}")
    workflow = {
        "name": "chart-bump",
        "on": {"pull_request": {"paths": list(cb.paths)}},
        "permissions": {"contents": "read"},
        "jobs": {
            "gate": {
                "name": "labgate gate",
                "runs-on": "ubuntu-24.04",
                "timeout-minutes": 120,
                "steps": [
                    {"uses": "actions/checkout@v4", "with": {"fetch-depth": 0}},
                    {"uses": "actions/setup-python@v5", "with": {"python-version": m.python}},
                    {"name": "labgate gate", "env": {"BASE": "${{ github.event.pull_request.base.sha }}",
                                                     "HEAD": "${{ github.event.pull_request.head.sha }}"}, "run": gate},
                    {"name": "gate report", "if": "always()", "uses": "actions/upload-artifact@v4",
                     "with": {"name": "gate-report", "path": "reports/", "if-no-files-found": "warn"}},
                ],
            },
        },
    }
    text = yaml.dump(workflow, Dumper=_WorkflowDumper, sort_keys=False, width=200).replace("'on':", "on:")
    return f"# generated from {DEFAULT} by `labgate matrix render`; do not edit (a test compares the two)\n" + text


def render(m: Matrix, root: Path = ROOT, check: bool = False) -> list[str]:
    """Write (or with ``check`` compare) the workflows; returns the files that differ."""
    out = []
    for rel, text in ((WORKFLOW, render_nightly(m)), (BUMP_WORKFLOW, render_chart_bump(m))):
        p = root / rel
        if not p.exists() or p.read_text() != text:
            out.append(rel)
            if not check:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    return out
