"""nox sessions: e2e (the main job), tests (what CI runs), peer-conformance, benchmarks, mutation, matrix."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

SCENARIO = os.environ.get("LABGATE_SCENARIO", "scenarios/local.yaml")
# Ctrl-C: give pytest time to tear the stack down before nox escalates to SIGTERM/SIGKILL
STOP = {"interrupt_timeout": 120.0, "terminate_timeout": 60.0}
# what the default local stack needs; the first run builds them, later runs reuse the cache
COMPONENTS = ("distribution", "cosign", "etcd", "kube-apiserver", "kyverno", "pocket-id", "allure", "actionlint")
# what a kind cluster built offline needs on top (shared/reference/kind-offline.md)
# the other versions the gate's tests bump from (tests/test_gate_run.py; the gate would build them itself)
GATE_TOOLS = ("kyverno@v1.18.2", "distribution@v3.0.0")
KIND_TOOLS = ("kind", "helm", "kube-node", "etcd-node", "coredns", "kyverno-images", "dockerd", "debootstrap", "busybox", "jq")
# the cells `nox -s tests` runs, in order: (scenario, suites, extra tools); LABGATE_CELLS selects
CELLS = {
    "local": ("scenarios/local.yaml", ["suites/"], ()),
    "arm64": ("scenarios/local-arm64.yaml", ["suites/oci"], ("qemu-user-static",)),
    "kind": ("scenarios/kind.yaml", ["suites/"], KIND_TOOLS),
}


def _install(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("labgate", "tools", "install", *COMPONENTS)


def _workers(options: list[str] = ()) -> list[str]:
    """Two xdist workers, unless the arguments after `--` choose (-n N, or -p no:xdist)."""
    if "no:xdist" in options or any(a.startswith(("-n", "--numprocesses")) for a in options):
        return []
    return ["-n", os.environ.get("LABGATE_WORKERS", "2"), "--dist", "loadgroup"]


def _targets(posargs: list[str]) -> tuple[list[str], list[str]]:
    """Paths among the arguments after `--` narrow the run, as with pytest; the rest are options."""
    paths = [a for a in posargs if not a.startswith("-") and (a.startswith("suites") or os.path.exists(a.split("::")[0]))]
    return (paths or ["suites/"]), [a for a in posargs if a not in paths]


@nox.session
def e2e(session: nox.Session) -> None:
    """Stand up the default local stack, run every suite it supports, write reports/<run-id>/."""
    _install(session)
    targets, options = _targets(session.posargs)
    session.run("pytest", *targets, "--scenario", SCENARIO, *_workers(options), *options, **STOP)


def _cells() -> list[str]:
    names = [c.strip() for c in os.environ.get("LABGATE_CELLS", ",".join(CELLS)).split(",") if c.strip()]
    unknown = [c for c in names if c not in CELLS]
    if unknown:
        raise SystemExit(f"LABGATE_CELLS: unknown cell(s) {', '.join(unknown)}; the cells are {', '.join(CELLS)}")
    return names


@nox.session
def tests(session: nox.Session) -> None:
    """The harness's own tests, then the cells: the local stack, the OCI suite on an arm64 registry
    under qemu-user, the stack on a kind cluster built offline (and kind's teardown proven)."""
    cells = _cells()
    _install(session)
    session.install("nox")
    session.run("labgate", "tools", "install", "--strict", *GATE_TOOLS)
    session.run("pytest", "tests/", "-m", "not kind", *session.posargs, **STOP)
    for cell in cells:
        scenario, suites, tools = CELLS[cell]
        session.log(f"cell {cell}: {' '.join(suites)} --scenario {scenario}")
        if tools:
            session.run("labgate", "tools", "install", "--strict", *tools)
        session.run("pytest", *suites, "--scenario", scenario, *_workers(), **STOP)
        if cell == "kind":
            # kind's teardown: no cluster, container or dockerd left, the user's kubeconfig unchanged
            session.run("pytest", "tests/", "-m", "kind", env={"LABGATE_REQUIRE_KIND": "1"}, **STOP)


@nox.session(name="peer-conformance")
def peer_conformance(session: nox.Session) -> None:
    """labgate's OCI suite and the official conformance program against the same registry."""
    _install(session)
    session.run("labgate", "tools", "install", "oci-conformance")
    session.run("labgate", "peer", "--scenario", SCENARIO, *session.posargs, **STOP)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """The speed figures (floor, stack-up, teardown, e2e, OCI vs the official program, kind vs bare kind), medians of 3+ rounds."""
    _install(session)
    session.run("labgate", "tools", "install", "oci-conformance")
    session.run("python", "-m", "labgate.bench", "--scenario", SCENARIO, *session.posargs, **STOP)


@nox.session
def mutation(session: nox.Session) -> None:
    """Deliberately wrong stacks (suites/mutations.yaml): the tests that must flip do, and no others."""
    _install(session)
    session.run("python", "-m", "labgate.mutate", "--scenario", SCENARIO, *session.posargs, **STOP)


@nox.session
def gate(session: nox.Session) -> None:
    """The chart-bump gate: `-- --from A.yaml --to B.yaml` (or `-- --helmreleases DIR --base REF --head REF`);
    exit 0 passes, 16 + (1 regressions, 2 survival failures, 4 availability gaps) fails."""
    _install(session)  # the versions each side names are obtained by the gate itself, before anything starts
    session.run("labgate", "gate", *session.posargs, **STOP)


@nox.session
def matrix(session: nox.Session) -> None:
    """The nightly matrix (scenarios/matrix.yaml) here, cell after cell (`-- --cell NAME` picks one),
    then the cross-cell page reports/matrix/index.html."""
    _install(session)
    session.run("labgate", "matrix", "run", *session.posargs, **STOP)
