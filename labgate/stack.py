"""The stack: a plain, serialisable description of what the suites talk to.

Suites see endpoints, identities with their credentials and capabilities; never provider internals.
The state file holding it is written with mode 0600 (it carries the run's credentials) and is how
pytest-xdist workers and ``labgate stack status|down`` attach to a running stack.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from labgate import redact
from labgate.errors import StackError


@dataclass
class ComponentState:
    name: str  # role in the stack: registry, ...
    kind: str  # zot | distribution | ...
    version: str  # pinned version
    source: str  # env | PATH | cache | apt | ...
    path: str
    reported_version: str = ""
    pid: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    url: str = ""
    log: str = ""
    start_seconds: float = 0.0
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # extra environment of cmd (restarts)
    cwd: str = ""
    started_ticks: int = 0  # the process's start time (/proc/<pid>/stat field 22): a pid's identity
    planned: str = ""  # "stopped" | "paused" while a test disrupts it on purpose (abilities), else ""


@dataclass
class Stack:
    run_id: str
    scenario: str
    scenario_name: str
    provider: str
    arch: str
    run_dir: str
    report_dir: str
    registry_kind: str = ""
    registry_url: str = ""  # as the harness reaches it (pushes, pulls, probes)
    registry_ref_host: str = ""  # host[:port] a pod's image reference names (default: registry_url's host)
    registry_htpasswd: str = ""  # the robots' htpasswd file, where the provider keeps one
    credentials: dict[str, str] = field(default_factory=dict, repr=False)  # account or label -> secret
    issuer_url: str = ""  # as the harness's browser reaches it; also the issuer every token names
    issuer_internal_url: str = ""  # as the registry reaches it (default: issuer_url)
    host_aliases: dict[str, str] = field(default_factory=dict)  # host:port -> 127.0.0.1:port the harness connects to
    oidc_redirects: dict[str, str] = field(default_factory=dict)  # client id -> its registered redirect URI
    humans: dict[str, str] = field(default_factory=dict)  # username -> Pocket ID user id
    kubeconfig: str = ""
    kube_context: str = ""  # a context in kubeconfig ("" = its current context)
    kube_url: str = ""
    capabilities: list[str] = field(default_factory=list)
    components: list[ComponentState] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped_components: dict[str, str] = field(default_factory=dict)  # name -> reason and fix
    owner_pid: int = 0
    owner_ticks: int = 0  # the owner's start time: a reused pid is not the owner
    detached: bool = False  # `labgate stack up`: nobody owns it until `labgate stack down`
    read_only: bool = False  # the harness refuses every write (provider existing)
    repository: str = ""  # read-only stacks: the repository the scenario names for pulls
    cluster: str = ""  # kind: the cluster's name
    provider_data: dict[str, Any] = field(default_factory=dict)  # what a provider needs to tear down (engine, releases)
    tools: dict[str, str] = field(default_factory=dict)  # programs the suites drive -> the scenario's name@version
    state_file: str = ""

    # ----------------------------------------------------------------------------------------
    @property
    def registry_host(self) -> str:
        """host:port as the harness reaches the registry."""
        return self.registry_url.split("://", 1)[-1].rstrip("/")

    @property
    def image_host(self) -> str:
        """host:port as a pod's image reference names the registry (what Kyverno and the node pull
        from; also the docker-reference a signature names)."""
        return self.registry_ref_host or self.registry_host

    def component(self, name: str) -> ComponentState:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def tool(self, name: str) -> str:
        """The toolchain reference (``name`` or ``name@version``) of a program the suites run."""
        return self.tools.get(name, name)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def password(self, account: str) -> str:
        try:
            return self.credentials[account]
        except KeyError:
            raise StackError(f"no credentials for {account!r} in this stack; declare it under identities in the scenario") from None

    def fingerprint(self) -> dict[str, str]:
        """Environment fingerprint carried by every report result, so matrix cells never merge."""
        fp = {"provider": self.provider, "arch": self.arch, "scenario": self.scenario_name}
        for c in self.components:
            fp[c.name] = f"{c.kind} {c.reported_version or c.version} ({c.source})"
        return fp

    # ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The stack without secrets, for reports."""
        d = self.to_dict()
        d["credentials"] = {k: "<redacted>" for k in self.credentials}
        for c in d["components"]:
            c["env"] = {k: "<redacted>" for k in c.get("env", {})}
        return json.loads(redact.redact(json.dumps(d)))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.state_file = str(p)
        tmp = p.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2)
        os.chmod(tmp, 0o600)
        tmp.replace(p)
        return p

    @classmethod
    def update(cls, path: str | Path, change: "Callable[[Stack], None]") -> "Stack":
        """Read, change and write the state file under a lock: several processes (the controller,
        xdist workers) record pids and planned disruptions in it."""
        import fcntl

        p = Path(path)
        fd = os.open(str(p.with_name(".state.lock")), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stack = cls.load(p)
            change(stack)
            stack.save(p)
            return stack
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @classmethod
    def load(cls, path: str | Path) -> "Stack":
        p = Path(path)
        try:
            st = p.stat()
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise StackError(f"no stack state file at {p}", fix="start one with `labgate stack up` or run without --labgate-state") from None
        except ValueError as exc:
            raise StackError(f"stack state file {p} is not valid JSON: {exc}") from None
        if st.st_mode & 0o077:
            raise StackError(f"stack state file {p} is readable by others (mode {oct(st.st_mode & 0o777)})", fix=f"chmod 600 {p}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StackError(f"stack state file {p} has fields this labgate does not know: {', '.join(unknown)}",
                             fix="attach with the labgate version that started the stack")
        comps = [ComponentState(**c) for c in data.pop("components", [])]
        stack = cls(**data, components=comps)
        for account, secret in stack.credentials.items():
            redact.register(secret, f"{account}-credential")
        return stack


def proc_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (0 when it does not exist)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def host_arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)
