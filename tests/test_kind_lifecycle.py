"""Integration tests of the kind provider's teardown: a real cluster on a real Docker engine.

After `labgate stack up|status|down`, after SIGINT during a suite and after two SIGINTs while the
cluster is being deleted: no kind cluster, no container (none in the engine's records, no process
left in a node container's cgroup), no dockerd the harness started, no run directory, and the
user's kubeconfig (``$KUBECONFIG`` and ``~/.kube/config``) byte for byte as it was.

They need the kind toolchain (`labgate tools install kind helm kube-node etcd-node coredns
dockerd debootstrap busybox jq`); without it they skip saying so, except under
``LABGATE_REQUIRE_KIND=1`` (the kind cell of `nox -s tests`), where a missing tool is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labgate import toolchain
from labgate.kind import engine as engines
from labgate.process import pid_alive, wait_until
from labgate.stack import Stack, proc_ticks
from runs import checkpoint, interrupt_held, run_env

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "tests/data/kind-registry.yaml"
TOOLS = ("kind", "helm", "kube-node", "kube-apiserver", "etcd-node", "coredns", "distribution", "busybox", "debootstrap", "jq")
DOCKER = shutil.which("docker") or "/usr/bin/docker"
pytestmark = [pytest.mark.integration, pytest.mark.kind]

USER_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: users-own, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: users-own, user: {token: not-a-real-token}}]
contexts: [{name: users-own, context: {cluster: users-own, user: users-own}}]
current-context: users-own
"""


@pytest.fixture(scope="module", autouse=True)
def kind_toolchain():
    missing = [f"{n}: {r.reason}" for n in TOOLS if not (r := toolchain.resolve(n)).available]
    if shutil.which("docker") is None and not toolchain.resolve("dockerd").available:
        missing.append(f"dockerd: {toolchain.resolve('dockerd').reason}")
    if missing:
        msg = "the kind toolchain is incomplete: " + "; ".join(missing) + f" (fix: labgate tools install {' '.join(TOOLS)} dockerd)"
        if os.environ.get("LABGATE_REQUIRE_KIND") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


class UserKube:
    """The user's kubeconfig files, recorded before the run and compared after it."""

    def __init__(self, tmp_path: Path):
        self.explicit = tmp_path / "users-kubeconfig"
        self.explicit.write_text(USER_KUBECONFIG)
        self.home = Path.home() / ".kube" / "config"
        self.before = (_digest(self.explicit), _digest(self.home))

    def unchanged(self) -> None:
        assert (_digest(self.explicit), _digest(self.home)) == self.before, "the user's kubeconfig was changed"


def _env(tmp_path: Path, run_id: str, kube: UserKube, hold: str | None = None) -> dict[str, str]:
    return run_env(tmp_path, run_id, hold, hold_seconds=600, KUBECONFIG=str(kube.explicit))


class Seen:
    """What a running kind stack consists of, noted while it is up: the cluster, its node containers
    (ids), the engine and whether the run started it."""

    def __init__(self, state_file: str):
        stack = Stack.load(state_file)
        self.run_id = stack.run_id
        self.cluster = stack.cluster
        self.engine = stack.provider_data["engine"]
        self.docker_env = {**os.environ, **({"DOCKER_HOST": self.engine["host"]} if self.engine["host"] else {})}
        out = subprocess.run([DOCKER, "ps", "-a", "-q", "--no-trunc", "--filter", f"label=io.x-k8s.kind.cluster={self.cluster}"],
                             capture_output=True, text=True, timeout=60, env=self.docker_env, check=True)
        self.containers = out.stdout.split()
        assert self.containers, f"kind cluster {self.cluster} has no node container while up"

    def _in_container_cgroup(self) -> list[str]:
        left = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cg = (p / "cgroup").read_text()
            except OSError:
                continue
            if any(c in cg for c in self.containers) and pid_alive(int(p.name)):
                left.append(p.name)
        return left

    def assert_gone(self) -> None:
        # no process of a node container
        wait_until(lambda: not self._in_container_cgroup(), timeout=60, what="the node containers' processes to exit")
        if self.engine["owned"]:
            # the dockerd the run started is stopped (that exact pid and start time)
            assert not (pid_alive(self.engine["pid"]) and proc_ticks(self.engine["pid"]) == self.engine["ticks"]), "dockerd was left running"
            assert not (engines.engine_dir() / "owner.json").exists(), "the engine's owner record was left"
            # and its records hold no container of the cluster (a container left behind stays here)
            records = engines.engine_dir() / "data" / "containers"
            left = [c for c in self.containers if (records / c).exists()]
            assert not left, f"containers of {self.cluster} left in the engine's records: {left}"
        else:
            out = subprocess.run([DOCKER, "ps", "-a", "-q", "--filter", f"label=io.x-k8s.kind.cluster={self.cluster}"],
                                 capture_output=True, text=True, timeout=60, env=self.docker_env, check=True)
            assert not out.stdout.split(), f"containers of {self.cluster} left: {out.stdout.split()}"
        assert not list(Path("/tmp").glob(f"labgate-{self.run_id}-*")), "the run directory (kubeconfig, credentials) must be removed"
        assert not (toolchain.cache_root() / "runs" / f"{self.run_id}.json").exists(), "the run's registration must be removed"


# ----------------------------------------------------------------------------------------------


def test_kind_stack_up_status_down_leaves_nothing(tmp_path):
    kube = UserKube(tmp_path)
    run_id = "kup-" + uuid.uuid4().hex[:6]
    cli = [sys.executable, "-m", "labgate.cli"]
    env = _env(tmp_path, run_id, kube)
    up = subprocess.run([*cli, "stack", "up", "--scenario", SCENARIO, "--reports", str(tmp_path / "r")], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1800)
    assert up.returncode == 0, up.stderr[-3000:]
    state = re.search(r"state file: (\S+)", up.stdout).group(1)
    seen = Seen(state)
    try:
        st = subprocess.run([*cli, "stack", "status", "--state", state], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "provider kind" in st.stdout and re.search(r"registry\s+distribution.*running", st.stdout), st.stdout
        stack = Stack.load(state)
        kubeconfig = Path(stack.kubeconfig)
        assert kubeconfig.parent == Path(stack.run_dir) and kubeconfig.stat().st_mode & 0o777 == 0o600
        kube.unchanged()
    finally:
        down = subprocess.run([*cli, "stack", "down", "--state", state], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert down.returncode == 0, down.stderr[-3000:]
    seen.assert_gone()
    kube.unchanged()


def test_sigint_during_a_suite_on_kind_leaves_nothing(tmp_path):
    kube = UserKube(tmp_path)
    run_id = "kint-" + uuid.uuid4().hex[:6]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/oci/test_pull.py", "-p", "no:xdist", "--scenario", SCENARIO, "-q",
                             "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"],
                            cwd=ROOT, env=_env(tmp_path, run_id, kube, "suite-started"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = checkpoint(tmp_path, "stack-ready", proc, timeout=1800)
        seen = Seen(ready["state"])
        checkpoint(tmp_path, "suite-started", proc, timeout=300)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, "an interrupted run is not a pass"
    seen.assert_gone()
    kube.unchanged()


def test_two_sigints_while_the_cluster_is_deleted_leave_nothing(tmp_path):
    """A run that passed reaches teardown; two SIGINTs land while the cluster step waits: the
    cluster is still deleted, the dockerd stopped and every log copied."""
    kube = UserKube(tmp_path)
    run_id = "ktd-" + uuid.uuid4().hex[:6]
    hold = "teardown-cluster"
    reports = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/oci/test_pull.py", "-k", "manifest", "-p", "no:xdist",
                             "--scenario", SCENARIO, "-q", "--labgate-reports", str(reports), "--labgate-no-html"],
                            cwd=ROOT, env=_env(tmp_path, run_id, kube, hold), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = checkpoint(tmp_path, "stack-ready", proc, timeout=1800)
        seen = Seen(ready["state"])
        checkpoint(tmp_path, hold, proc, timeout=900)
        interrupt_held(tmp_path, hold, proc, times=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    seen.assert_gone()
    kube.unchanged()
    done = {d["step"]: d for d in json.loads((reports / run_id / "teardown.json").read_text())}
    assert done["cluster"]["error"] == "", done["cluster"]
    assert "2 interrupt(s) arrived during teardown" in done["interrupts"]["note"]
    assert (reports / run_id / "logs" / "registry.log").exists(), "the component logs were copied before the cluster went"
