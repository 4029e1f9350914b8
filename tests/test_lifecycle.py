"""Integration tests of the harness itself: real component processes, real signals.

They prove teardown (no process, no listening port, no run directory left) after `labgate stack
down`, and after Ctrl-C / SIGTERM delivered during stack start-up and during a suite, including
SIGINT to `nox -s e2e` itself; and that no secret a run generated reaches its artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from labgate import toolchain
from labgate.process import listening_ports, pid_alive, wait_until
from labgate.providers.local import RAM_DIR
from labgate.stack import Stack
from runs import checkpoint, interrupt_held, run_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def registry_binary():
    r = toolchain.resolve("distribution")
    if not r.available:
        pytest.skip(f"distribution registry not available: {r.reason} (fix: labgate tools install distribution)")


def _leftovers(run_id: str) -> list[str]:
    """Processes whose command line mentions this run's private directory."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"labgate-{run_id}-" in cmd and pid_alive(int(p.name)):
            out.append(f"{p.name}: {cmd[:200]}")
    return out


def _assert_clean(run_id: str, pids: list[int], ports: list[int]) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=20, what="stack processes to exit")
    assert not _leftovers(run_id), _leftovers(run_id)
    still = set(ports) & listening_ports()
    assert not still, f"ports still listening: {sorted(still)}"
    left = [str(d) for parent in {tempfile.gettempdir(), str(RAM_DIR)} for d in Path(parent).glob(f"labgate-{run_id}-*")]
    assert not left, f"the private run directory must be removed: {left}"


def _interrupt(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 180) -> None:
    """Deliver the signal to the whole foreground process group, as a terminal's Ctrl-C does."""
    os.killpg(proc.pid, sig)
    proc.wait(timeout=timeout)


# ----------------------------------------------------------------------------------------------


def test_stack_up_status_down_leaves_nothing(tmp_path):
    reports = tmp_path / "reports"
    cli = [sys.executable, "-m", "labgate.cli"]
    up = subprocess.run([*cli, "stack", "up", "--reports", str(reports)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    state = re.search(r"state file: (\S+)", up.stdout).group(1)
    assert os.stat(state).st_mode & 0o777 == 0o600
    stack = Stack.load(state)
    c = stack.component("registry")
    assert pid_alive(c.pid) and c.ports["http"] in listening_ports()
    st = subprocess.run([*cli, "stack", "status", "--state", state], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and "running" in st.stdout
    down = subprocess.run([*cli, "stack", "down", "--state", state], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    _assert_clean(stack.run_id, [c.pid], list(c.ports.values()))
    log = (reports / stack.run_id / "logs" / "registry.log").read_text()
    assert log, "the component's output is kept, redacted"
    for secret in stack.credentials.values():
        assert secret not in log


def test_missing_binary_gives_the_fix_and_starts_nothing(tmp_path):
    sc = tmp_path / "zot.yaml"
    sc.write_text("name: zot-only\ncomponents:\n  registry:\n    kind: zot\nsuites: [oci]\n")
    env = {k: v for k, v in os.environ.items() if k != "ZOT_BIN"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "zot").exists())
    run_id = "missing-" + uuid.uuid4().hex[:6]
    proc = subprocess.run([sys.executable, "-m", "labgate.cli", "stack", "up", "--scenario", str(sc), "--reports", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 4
    assert "zot binary not available: set ZOT_BIN" in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not _leftovers(run_id)


@pytest.mark.parametrize("hold", ["component-started-registry", "suite-started"])
def test_sigterm_to_pytest_tears_down(tmp_path, hold):
    run_id = "term-" + uuid.uuid4().hex[:6]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/oci", "--scenario", "scenarios/local.yaml", "-q",
                             "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"],
                            cwd=ROOT, env=run_env(tmp_path, run_id, hold), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info = checkpoint(tmp_path, hold, proc, timeout=300)
    stack = checkpoint(tmp_path, "component-started-registry", proc, timeout=5)
    os.kill(proc.pid, signal.SIGTERM)  # SIGTERM goes to pytest alone, not the group
    proc.wait(timeout=120)
    assert proc.returncode != 0
    _assert_clean(run_id, [stack["pid"]], stack["ports"])
    assert info["phase"] == hold


def _nox_e2e(tmp_path: Path, run_id: str, hold: str) -> tuple[subprocess.Popen, Path]:
    if not shutil.which("nox") and subprocess.run([sys.executable, "-m", "nox", "--version"], capture_output=True).returncode:
        pytest.skip("nox is not installed (fix: pip install nox)")
    out = tmp_path / "nox.out"
    env = run_env(tmp_path, run_id, hold)
    env["LABGATE_WORKERS"] = "2"
    proc = subprocess.Popen([sys.executable, "-m", "nox", "-s", "e2e", "--", "--labgate-no-html",
                             "--labgate-reports", str(tmp_path / "r")],
                            cwd=ROOT, env=env, start_new_session=True, stdout=open(out, "w"), stderr=subprocess.STDOUT)
    return proc, out


@pytest.mark.parametrize("hold", ["component-started-registry", "suite-started"])
def test_ctrl_c_to_nox_e2e_leaves_no_process_and_no_port(tmp_path, hold):
    """SIGINT to `nox -s e2e` (its whole process group, like a terminal's Ctrl-C) during stack
    start-up and during a suite: the stack is torn down completely."""
    run_id = "int-" + uuid.uuid4().hex[:6]
    proc, out = _nox_e2e(tmp_path, run_id, hold)
    try:
        checkpoint(tmp_path, hold, proc, timeout=900, output=out)  # a first nox run creates its virtualenv
        started = checkpoint(tmp_path, "component-started-registry", proc, timeout=5)
        _interrupt(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out.read_text()[-2000:]
    _assert_clean(run_id, [started["pid"]], started["ports"])
    assert "interrupted" in out.read_text().lower()


def test_no_secret_reaches_any_artifact(tmp_path):
    """A full attached run of every suite: no secret the run generated (passwords, client secrets,
    API keys, session keys, tokens) is in any artifact, in any of the usual encodings."""
    reports = tmp_path / "reports"
    cli = [sys.executable, "-m", "labgate.cli"]
    up = subprocess.run([*cli, "stack", "up", "--reports", str(reports)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    state = re.search(r"state file: (\S+)", up.stdout).group(1)
    stack = Stack.load(state)
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-q", "-n", "2", "--dist", "loadgroup", "--labgate-state", state,
                              "--labgate-run-id", stack.run_id, "--labgate-reports", str(reports)],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([*cli, "stack", "down", "--state", state], cwd=ROOT, capture_output=True, timeout=120)
    assert run.returncode in (0, 1) and "reports written" in run.stdout + run.stderr, (run.stdout + run.stderr)[-2000:]
    import base64

    secrets = {}
    for label, value in stack.credentials.items():
        secrets[label] = value
        secrets[label + " (base64)"] = base64.b64encode(value.encode()).decode().rstrip("=")
        secrets[label + " (basic)"] = base64.b64encode(f"{label}:{value}".encode()).decode().rstrip("=")
    files = [p for p in (reports / stack.run_id).rglob("*") if p.is_file()]
    assert any(p.name.endswith("-attachment.txt") for p in files), "the run attached HTTP exchange logs"
    redacted_markers = 0
    for p in files:
        data = p.read_bytes().decode("utf-8", errors="replace")
        redacted_markers += data.count("<redacted")
        for label, value in secrets.items():
            assert value not in data, f"{label} leaked into {p.relative_to(reports)}"
        # secrets made inside the suites (signing keys, zot API keys, ID tokens) by their shape
        assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*[A-Za-z0-9+/]", data), f"a private key in {p}"
        assert not re.search(r"\bzak_[0-9a-f]{32}\b", data), f"a zot API key in {p}"
        assert not re.search(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", data), f"a JWT in {p}"
    assert redacted_markers > 0, "the exchange logs carried credentials, redacted at the source"


def test_kyverno_webhooks_are_deleted_before_the_apiserver_stops(tmp_path):
    """Kyverno leaves its webhook configurations behind; teardown deletes them while the apiserver
    still answers, then stops it."""
    for name in ("etcd", "kube-apiserver", "kyverno"):
        if not toolchain.resolve(name).available:
            pytest.skip(f"{name} not available (fix: labgate tools install {name})")
    from labgate.clients.kube import Admission
    from labgate.providers import local
    from labgate.scenario import parse_scenario

    sc = parse_scenario({"name": "kyverno-teardown", "components": {"kubernetes": {}, "admission": {}},
                         "identities": {"robots": [{"name": "ci-robot"}]}, "suites": ["admission"]}, "inline")
    provider = local.LocalProvider(sc, run_id="wh-" + uuid.uuid4().hex[:6], report_dir=str(tmp_path / "r"))
    stack = provider.up()
    seen: dict[str, list[str]] = {}
    try:
        adm = Admission(stack.kubeconfig)
        wait_until(adm.webhook_configurations, timeout=60, what="Kyverno's webhook configurations")
        seen["before"] = adm.webhook_configurations()
        from labgate.providers.local import _delete_kyverno_webhooks

        def observed() -> None:
            _delete_kyverno_webhooks(stack.kubeconfig)
            seen["after"] = adm.webhook_configurations()  # the apiserver is still up here

        provider.teardown.replace("kyverno-webhooks", observed)
    finally:
        provider.down()
    assert seen["before"], "Kyverno registered webhook configurations"
    assert seen["after"] == [], f"left behind: {seen['after']}"
    _assert_clean(stack.run_id, [c.pid for c in stack.components], [p for c in stack.components for p in c.ports.values()])


def test_two_interrupts_during_teardown_leave_nothing(tmp_path):
    """SIGINT twice while teardown deletes Kyverno's webhook configurations: teardown finishes
    every step anyway (webhooks deleted while the apiserver still answered, every process stopped,
    the run directory with its credentials removed, the logs kept)."""
    for name in ("etcd", "kube-apiserver", "kyverno"):
        if not toolchain.resolve(name).available:
            pytest.skip(f"{name} not available (fix: labgate tools install {name})")
    run_id = "td-" + uuid.uuid4().hex[:6]
    hold = "teardown-kyverno-webhooks"
    reports = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/admission", "-k", "test_a3", "-p", "no:xdist",
                             "--scenario", "scenarios/local.yaml", "-q", "--labgate-reports", str(reports), "--labgate-no-html"],
                            cwd=ROOT, env=run_env(tmp_path, run_id, hold), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = checkpoint(tmp_path, "stack-ready", proc, timeout=600)
        checkpoint(tmp_path, hold, proc, timeout=600)
        interrupt_held(tmp_path, hold, proc, times=2, timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _assert_clean(run_id, ready["pids"], ready["ports"])
    done = json.loads((reports / run_id / "teardown.json").read_text())
    steps = {d["step"]: d for d in done}
    assert steps["kyverno-webhooks"]["error"] == "", steps["kyverno-webhooks"]
    assert [d["step"] for d in done].index("kyverno-webhooks") < [d["step"] for d in done].index("stop-kube-apiserver")
    assert "2 interrupt(s) arrived during teardown" in steps["interrupts"]["note"]
    assert (reports / run_id / "logs" / "kyverno.log").exists(), "the logs were copied"


def test_sigkill_of_the_controller_is_reaped_by_the_next_run(tmp_path):
    """A run killed with SIGKILL cannot tear itself down; the next run's reaper removes what it left
    (its processes die with it; its run directory, with every credential, and its registration stay)."""
    run_id = "kill-" + uuid.uuid4().hex[:6]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/oci", "-p", "no:xdist", "--scenario", "scenarios/local.yaml", "-q",
                             "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"],
                            cwd=ROOT, env=run_env(tmp_path, run_id, "suite-started"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = checkpoint(tmp_path, "stack-ready", proc, timeout=300)
    checkpoint(tmp_path, "suite-started", proc, timeout=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_dir = Path(ready["state"]).parent
    assert run_dir.exists(), "a SIGKILLed run leaves its run directory (the reaper's work)"
    second = "next-" + uuid.uuid4().hex[:6]
    nxt = subprocess.run([sys.executable, "-m", "pytest", "suites/oci/test_pull.py", "-k", "manifest", "-p", "no:xdist",
                          "--scenario", "scenarios/local.yaml", "-q", "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"],
                         cwd=ROOT, env=run_env(tmp_path, second), capture_output=True, text=True, timeout=600)
    said = nxt.stdout + nxt.stderr
    assert f"reaper: run {run_id}" in said, said[-3000:]
    _assert_clean(run_id, ready["pids"], ready["ports"])
    assert not run_dir.exists()
    assert not (toolchain.cache_root() / "runs" / f"{run_id}.json").exists()


def test_a_component_killed_mid_run_is_named_and_later_failures_are_errors(tmp_path):
    """SIGKILL of the real registry while the OCI suite runs: the summary names it, and every later
    failure is verdict error naming the dead component, not a plain failure."""
    run_id = "dead-" + uuid.uuid4().hex[:6]
    hold = "suite-started"
    reports = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/oci/test_pull.py", "-p", "no:xdist", "--scenario", "scenarios/local.yaml",
                             "-q", "--labgate-reports", str(reports)],
                            cwd=ROOT, env=run_env(tmp_path, run_id, hold), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = checkpoint(tmp_path, "stack-ready", proc, timeout=300)
        checkpoint(tmp_path, hold, proc, timeout=120)
        registry = Stack.load(ready["state"]).component("registry")
        os.kill(registry.pid, signal.SIGKILL)
        (tmp_path / "cp" / f"{hold}.release").write_text("")
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    summary = json.loads((reports / run_id / "summary.json").read_text())
    assert [e["component"] for e in summary["events"]] == ["registry"], summary["events"]
    bad = [t for t in summary["tests"] if t["verdict"] in ("fail", "error")]
    assert bad, "the tests after the kill cannot pass"
    for t in bad:
        assert t["verdict"] == "error" and t["message"].startswith("error: registry exited"), (t["nodeid"], t["verdict"], t["message"][:300])
    assert "signal 9" in bad[0]["message"] or "SIGKILL" in bad[0]["message"], bad[0]["message"][:300]
    assert "registry exited" in (reports / run_id / "index.html").read_text(), "the summary page names the dead component"
