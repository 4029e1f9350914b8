"""The local provider: real component binaries as processes on 127.0.0.1.

Each component gets free ports, its config and data in a private run directory (mode 0700, removed
at teardown: it holds the run's credentials), and its output captured there. Readiness is polled
with a deadline. Teardown runs in reverse start order on success, failure, exception, SIGINT and
SIGTERM, and copies each component's log, redacted, into the report directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests

from labgate import checkpoint, redact, toolchain
from labgate.components import registry as reg
from labgate.errors import StackError
from labgate.process import Managed, free_port, wait_until
from labgate.scenario import Scenario
from labgate.stack import ComponentState, Stack, host_arch

HEALTH_TIMEOUT = float(os.environ.get("LABGATE_HEALTH_TIMEOUT", "60"))


def new_secret(label: str, nbytes: int = 18) -> str:
    value = secrets.token_urlsafe(nbytes)
    redact.register(value, label)
    return value


class LocalProvider:
    name = "local"

    def __init__(self, scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False):
        self.scenario = scenario
        self.run_id = run_id
        self.report_dir = Path(report_dir)
        self.detached = detached
        self.procs: list[tuple[str, Managed]] = []
        self.stack: Stack | None = None
        self._run_dir: Path | None = None

    # ------------------------------------------------------------------------------------------
    def up(self) -> Stack:
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> Stack:
        sc = self.scenario
        arch = host_arch() if sc.arch == "auto" else sc.arch
        if arch != host_arch():
            raise StackError(
                f"{sc.source}: arch: {arch} on a {host_arch()} host: the local provider runs native binaries only",
                fix=f"set arch: auto, or run on a {arch} machine ({arch} emulation needs qemu-user: apt-get install qemu-user-static binfmt-support)",
            )
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"labgate-{self.run_id}-"))
        os.chmod(self._run_dir, 0o700)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            run_id=self.run_id,
            scenario=sc.source,
            scenario_name=sc.name,
            provider=self.name,
            arch=arch,
            run_dir=str(self._run_dir),
            report_dir=str(self.report_dir),
            owner_pid=os.getpid(),
        )
        self.stack = stack
        for robot in sc.identities.robots:
            stack.credentials[robot.name] = new_secret(f"{robot.name}-password")
            redact.register_basic(robot.name, stack.credentials[robot.name], f"{robot.name}-password")

        t0 = time.monotonic()
        kind, tool = self._choose_registry(stack)
        stack.timings["toolchain"] = round(time.monotonic() - t0, 3)

        self._start_registry(stack, kind, tool)
        stack.save(self._run_dir / "state.json")
        checkpoint.reached("stack-ready", state=stack.state_file, pids=[m.pid for _, m in self.procs], ports=self.ports())
        return stack

    def _secret(self, label: str) -> str:
        """A random secret for this run, registered for redaction and kept in the state file only."""
        assert self.stack is not None
        self.stack.credentials[label] = new_secret(label)
        return self.stack.credentials[label]

    def ports(self) -> list[int]:
        return [p for c in (self.stack.components if self.stack else []) for p in c.ports.values()]

    # ------------------------------------------------------------------------------------------
    def _choose_registry(self, stack: Stack) -> tuple[str, toolchain.Resolved]:
        want = self.scenario.components.registry.kind
        zot = toolchain.resolve("zot")
        if not zot.available:
            stack.skipped_components["zot"] = zot.reason
        if want == "zot" or (want == "auto" and zot.available):
            return "zot", toolchain.install("zot") if zot.available else _unavailable(zot)
        dist = toolchain.install("distribution")
        if not dist.available:
            _unavailable(dist)
        return "distribution", dist

    def _start_registry(self, stack: Stack, kind: str, tool: toolchain.Resolved) -> None:
        assert self._run_dir is not None
        d = self._run_dir / "registry"
        (d / "data").mkdir(parents=True)
        port = free_port()
        htpasswd = d / "htpasswd"
        htpasswd.write_text(reg.htpasswd(stack.credentials))
        url = f"http://127.0.0.1:{port}"
        if kind == "zot":
            cfg = d / "config.json"
            cfg.write_text(reg.dumps(reg.render_zot_config(
                self.scenario, address="127.0.0.1", port=port, root_dir=str(d / "data"), htpasswd_path=str(htpasswd),
            )))
            cmd = [tool.path, "serve", str(cfg)]
            caps = ["registry", "registry.zot", "registry.auth", "registry.delete", "registry.api-keys"]
            if self.scenario.access.policies:
                caps.append("registry.access-control")
        else:
            cfg = d / "config.yml"
            cfg.write_text(reg.render_distribution_config(
                self.scenario, address="127.0.0.1", port=port, root_dir=str(d / "data"), htpasswd_path=str(htpasswd),
                http_secret=self._secret("registry:http-secret"),
            ))
            sub = [] if tool.path.endswith("docker-registry") else ["serve"]
            cmd = [tool.path, *(sub or ["serve"]), str(cfg)]
            caps = ["registry", "registry.distribution", "registry.auth", "registry.delete"]

        def healthy() -> bool:
            r = requests.get(url + "/v2/", timeout=2)
            return r.status_code in (200, 401)

        state = self._start("registry", kind, tool, cmd, d / "registry.log", healthy, ports={"http": port}, url=url)
        stack.registry_kind = kind
        stack.registry_url = url
        stack.capabilities = sorted(set(stack.capabilities) | set(caps))
        stack.components.append(state)

    def _start(self, name: str, kind: str, tool: toolchain.Resolved, cmd: list[str], log: Path,
               healthy: Callable[[], bool], *, ports: dict[str, int], url: str = "", env: dict[str, str] | None = None) -> ComponentState:
        t0 = time.monotonic()
        m = Managed(name, cmd, log, env=env or {}, die_with_parent=not self.detached).start()
        self.procs.append((name, m))
        checkpoint.reached(f"component-started-{name}", pid=m.pid, ports=list(ports.values()))
        wait_until(healthy, timeout=HEALTH_TIMEOUT, what=f"{name} ({kind}) at {url or ports}", abort=lambda: _port_clash(m) or m.exited())
        elapsed = round(time.monotonic() - t0, 3)
        assert self.stack is not None
        self.stack.timings[f"start:{name}"] = elapsed
        return ComponentState(
            name=name, kind=kind, version=tool.version, source=tool.source, path=tool.path,
            reported_version=tool.reported_version, pid=m.pid, ports=ports, url=url, log=str(log), start_seconds=elapsed,
        )

    # ------------------------------------------------------------------------------------------
    def logs(self) -> dict[str, str]:
        out = {}
        for name, m in self.procs:
            try:
                out[name] = redact.redact(m.log.read_text(errors="replace"))
            except OSError:
                out[name] = ""
        return out

    def down(self) -> None:
        """Stop everything in reverse order, keep redacted logs, remove the run directory. Idempotent."""
        logs = self.logs()
        for name, m in reversed(self.procs):
            m.stop()
        self.procs = []
        if logs:
            logdir = self.report_dir / "logs"
            logdir.mkdir(parents=True, exist_ok=True)
            for name, text in logs.items():
                (logdir / f"{name}.log").write_text(text)
        if self._run_dir and self._run_dir.exists():
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None


def _unavailable(res: toolchain.Resolved) -> toolchain.Resolved:
    raise StackError(f"{res.name}: {res.reason}")


def _port_clash(m: Managed) -> str | None:
    try:
        text = m.log.read_text(errors="replace")
    except OSError:
        return None
    if "address already in use" in text:
        return "its port is already in use by another process (fix: stop that process, or rerun to get new free ports)"
    return None


def stop_stack(stack: Stack) -> None:
    """Stop a stack started by another process (``labgate stack down``)."""
    from labgate.process import stop_pid

    for c in reversed(stack.components):
        stop_pid(c.pid)
    logdir = Path(stack.report_dir) / "logs"
    for c in stack.components:
        try:
            text = Path(c.log).read_text(errors="replace")
        except OSError:
            continue
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / f"{c.name}.log").write_text(redact.redact(text))
    shutil.rmtree(stack.run_dir, ignore_errors=True)
