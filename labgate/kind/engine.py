"""The Docker engine kind runs on.

The user's Docker is used when ``docker info`` answers. Otherwise (a CI machine) Debian's dockerd
is started with its data in the cache (so built images survive runs, keyed by what they hold) and
with a wrapper OCI runtime: this kind of host lacks CAP_SYS_RESOURCE in its bounding set, and
privileged containers (kind nodes) ask for every capability, so runc fails with "unable to apply
caps". The wrapper drops that one capability from the bundle's config.json (create/run) and from
the ``--process`` file (exec: kind works through ``docker exec --privileged``), then runs runc.
The harness stops exactly the dockerd pid it started, at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labgate import toolchain
from labgate.errors import StackError
from labgate.process import Managed, stop_pid, wait_until
from labgate.stack import proc_ticks

# The runtime wrapper (shell and jq, so the same file works on the host and inside a node).
RUNC_WRAPPER = """#!/bin/sh
# labgate: runc without CAP_SYS_RESOURCE (this host's bounding set lacks it; privileged containers ask for it)
bundle=""; process=""; prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle="$arg";; --process|-p) process="$arg";; esac
  case "$arg" in --bundle=*) bundle="${arg#--bundle=}";; --process=*) process="${arg#--process=}";; esac
  prev="$arg"
done
strip() { # file jq-path
  [ -f "$1" ] || return 0
  jq -c "if $2 then $2 |= with_entries(.value |= map(select(. != \\"CAP_SYS_RESOURCE\\"))) else . end" "$1" > "$1.labgate" \\
    && mv "$1.labgate" "$1"
}
[ -n "$bundle" ] && strip "$bundle/config.json" .process.capabilities
[ -n "$process" ] && strip "$process" .capabilities
exec RUNC "$@"
"""


def wrapper_text(runc: str) -> str:
    return RUNC_WRAPPER.replace("RUNC", runc)


def cap_sys_resource_missing() -> bool:
    """Whether this host's capability bounding set lacks CAP_SYS_RESOURCE (bit 24)."""
    try:
        for ln in Path("/proc/self/status").read_text().splitlines():
            if ln.startswith("CapBnd:"):
                return not (int(ln.split()[1], 16) >> 24) & 1
    except (OSError, ValueError):
        pass
    return False


@dataclass
class Engine:
    docker: str  # the docker client
    owned: bool  # started by this run (stopped at teardown)
    pid: int = 0
    ticks: int = 0
    host: str = ""  # DOCKER_HOST for the clients, when not the default socket
    version: str = ""

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host} if self.host else {}

    def run(self, *args: str, input: bytes | None = None, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.docker, *args], input=input, capture_output=True, timeout=timeout, env={**os.environ, **self.env()})
        if check and proc.returncode != 0:
            raise StackError(f"docker {' '.join(args[:3])}: {proc.stderr.decode(errors='replace').strip()[-400:]}")
        return proc

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def stop(self) -> None:
        if self.owned and self.pid:
            stop_pid(self.pid, timeout=30)
            self.pid = 0


def _answers(docker: str, env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20,
                             env={**os.environ, **(env or {})})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def engine_dir() -> Path:
    return toolchain.cache_root() / "docker"


def ensure(progress=print) -> Engine:
    """The user's Docker when it answers; else a dockerd of our own (its socket in the cache)."""
    docker = shutil.which("docker")
    if docker:
        version = _answers(docker)
        if version:
            return Engine(docker, owned=False, version=version)
    tool = toolchain.install("dockerd")
    if not tool.available:
        raise StackError(f"kind: no Docker daemon answers and Debian's cannot be had: {tool.reason}")
    for need in ("jq",):
        t = toolchain.install(need)
        if not t.available:
            raise StackError(f"kind: {need} is needed by the runtime wrapper: {t.reason}")
    docker = docker or shutil.which("docker") or "/usr/bin/docker"
    d = engine_dir()
    (d / "bin").mkdir(parents=True, exist_ok=True)
    sock = d / "docker.sock"
    host = f"unix://{sock}"
    version = _answers(docker, {"DOCKER_HOST": host})
    pidfile = d / "dockerd.pid"
    if version:  # ours, left by another run of this machine (its owner record says so)
        owner = _owner(d)
        if owner:
            return Engine(docker, owned=False, pid=owner["pid"], ticks=owner["ticks"], host=host, version=version)
    runtime = d / "bin" / "runc-labgate"
    runtime.write_text(wrapper_text(shutil.which("runc") or "/usr/sbin/runc"))
    runtime.chmod(0o755)
    cfg = {
        "data-root": str(d / "data"), "exec-root": str(d / "exec"), "pidfile": str(pidfile),
        "hosts": [host], "storage-driver": "overlay2",
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 20000, "Soft": 20000},
                            "nproc": {"Name": "nproc", "Hard": 32768, "Soft": 32768}},
    }
    if cap_sys_resource_missing():
        cfg["default-runtime"] = "labgate"
        cfg["runtimes"] = {"labgate": {"path": str(runtime)}}
    (d / "daemon.json").write_text(json.dumps(cfg, indent=2))
    progress("[kind] starting Debian's dockerd (no Docker daemon answers)")
    m = Managed("dockerd", [tool.path, "--config-file", str(d / "daemon.json")], d / "dockerd.log", die_with_parent=False).start()
    eng = Engine(docker, owned=True, pid=m.pid, ticks=proc_ticks(m.pid), host=host)
    try:
        eng.version = str(wait_until(lambda: _answers(docker, {"DOCKER_HOST": host}), timeout=60, what="dockerd",
                                     abort=m.exited))
    except BaseException:
        eng.stop()
        raise
    (d / "owner.json").write_text(json.dumps({"pid": eng.pid, "ticks": eng.ticks, "started": time.time()}))
    return eng


def _owner(d: Path) -> dict | None:
    try:
        owner = json.loads((d / "owner.json").read_text())
    except (OSError, ValueError):
        return None
    return owner if proc_ticks(owner.get("pid", 0)) == owner.get("ticks") else None


def stop_owned(engine: Engine) -> None:
    """Teardown: stop the dockerd this run started (its pid and start time), nothing else."""
    if engine.owned and engine.pid and proc_ticks(engine.pid) == engine.ticks:
        engine.stop()
    if engine.owned:
        (engine_dir() / "owner.json").unlink(missing_ok=True)
