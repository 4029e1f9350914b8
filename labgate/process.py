"""Processes, ports and readiness: composable waits with deadlines, never fixed sleeps."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from labgate.errors import StackError
from labgate.redact import redact

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine (from /proc/net/tcp{,6})."""
    ports: set[int] = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            if len(parts) > 3 and parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def wait_until(check: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1,
               abort: Callable[[], str | None] | None = None,
               retry_on: tuple[type[BaseException], ...] = (OSError,)) -> object:
    """Poll ``check`` until it returns a truthy value or the deadline passes.

    Only the exceptions in ``retry_on`` mean "not yet" (the default, OSError, covers refused and
    reset connections and every requests error); any other exception is a bug in the check and is
    raised at once instead of reading as "not ready". ``abort`` may return a message to stop
    waiting early (e.g. the process exited).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except retry_on as exc:
            last_exc = exc
        if abort:
            why = abort()
            if why:
                raise StackError(f"{what}: {why}")
        if time.monotonic() > deadline:
            detail = f" (last error: {redact(str(last_exc))[:300]})" if last_exc else ""
            raise StackError(f"{what}: not ready after {timeout:.0f}s{detail}")
        time.sleep(interval)


def kube_retry() -> tuple[type[BaseException], ...]:
    """What a Kubernetes API call raises while the API is not there yet (or answers an error)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    return (OSError, ApiException, HTTPError)


def _pdeathsig() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Managed:
    """One component process with its output captured into the run directory."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    die_with_parent: bool = True
    proc: subprocess.Popen | None = None
    pid: int = 0

    def start(self) -> "Managed":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,  # we stop it ourselves, in reverse order
                preexec_fn=_pdeathsig if self.die_with_parent else None,
            )
        except OSError as exc:
            raise StackError(f"{self.name}: cannot start {self.cmd[0]}: {exc.strerror}") from None
        finally:
            fh.close()
        self.pid = self.proc.pid
        return self

    def exited(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"process exited with code {self.proc.returncode}; last output:\n{self.tail()}"
        return None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return redact("\n".join("    " + ln[:300] for ln in lines))

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout, proc=self.proc)


def stop_pid(pid: int, timeout: float = 10.0, proc: subprocess.Popen | None = None, graceful: bool = True) -> None:
    """SIGTERM the process (and its process group), then SIGKILL after ``timeout``; not
    ``graceful``: SIGKILL at once (a crash)."""
    if not pid:
        return
    for sig in (signal.SIGCONT,):  # a paused (SIGSTOP) process handles SIGTERM only once it runs
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not pid_alive(pid):
                return
            time.sleep(0.05)
