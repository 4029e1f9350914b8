"""What every provider shares: the interface, guaranteed teardown, and the abilities contract.

A provider has one small interface: ``up() -> Stack``, ``down()`` and ``logs()``. ``down()`` is
idempotent and finishes every step whatever is raised inside it; a Ctrl-C (or SIGTERM) that lands
while it runs is noted and ignored until it has finished, so a second interrupt cannot leak the
stack either.

Suites never touch a provider's pids, files or command lines. What a suite may ask of the place the
stack runs is a set of optional **abilities** (as in kubernetes-sigs/e2e-framework), reached from
any process through :func:`labgate.abilities.of`: stop and start a component, pause it, revoke a
credential, read a component's logs, the run's kubeconfig. A provider that lacks one makes the test
skip with the ability's name and the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from labgate import checkpoint, redact
from labgate.stack import Stack

if TYPE_CHECKING:
    from labgate import toolchain
    from labgate.scenario import Scenario


class Provider(Protocol):
    name: str

    def up(self) -> Stack: ...

    def down(self) -> None: ...

    def logs(self) -> dict[str, str]: ...


# ----------------------------------------------------------------------------------------------
# interrupts during teardown


@contextlib.contextmanager
def interrupts_deferred(what: str = "teardown") -> Iterator[list[int]]:
    """SIGINT and SIGTERM are noted, not raised, while the block runs (main thread only: Python
    runs signal handlers there). Yields the list of signals that arrived."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def note(signum: int, frame: object) -> None:
        if not pending:
            print(f"\nlabgate: {what} in progress; it finishes first (interrupt noted)", file=sys.stderr, flush=True)
        pending.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, note)
    try:
        yield pending
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Teardown:
    """Undo steps, run in reverse order of registration. Each step runs once; an exception (also
    KeyboardInterrupt) inside one is recorded and the next step runs. Safe to call twice."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    done: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, fn: Callable[[], None]) -> None:
        with self._lock:
            self.steps.append((name, fn))

    def replace(self, name: str, fn: Callable[[], None]) -> None:
        """Swap the function of a registered step (tests observe teardown this way)."""
        with self._lock:
            self.steps = [(n, fn if n == name else f) for n, f in self.steps]

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.steps)

    def run(self) -> list[dict[str, object]]:
        with interrupts_deferred() as pending:
            while True:
                with self._lock:
                    if not self.steps:
                        break
                    name, fn = self.steps.pop()
                checkpoint.reached(f"teardown-{name}")
                t0 = time.monotonic()
                error = ""
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - every later step must still run
                    error = f"{exc.__class__.__name__}: {redact.redact(str(exc))}"
                    print(f"labgate: teardown step {name}: {error}", file=sys.stderr, flush=True)
                self.done.append({"step": name, "seconds": round(time.monotonic() - t0, 3), "error": error})
            if pending:
                self.done.append({"step": "interrupts", "seconds": 0.0, "error": "",
                                  "note": f"{len(pending)} interrupt(s) arrived during teardown and waited for it"})
        return self.done


# the scenario field (under components) that names the version of what each tool provides
VERSION_FIELDS = {
    "zot": "registry", "distribution": "registry", "kube-apiserver": "kubernetes", "kube-node": "kubernetes",
    "kyverno": "admission", "kyverno-images": "admission", "cosign": "signer", "oci-conformance": "conformance",
    "pocket-id": "identity",
}


def tool_ref(scenario: "Scenario", tool: str) -> str:
    """``tool@version`` when the scenario names another version than the toolchain's pin for what
    ``tool`` provides, else ``tool``: versions are data, obtained on demand and cached by version."""
    from labgate.toolchain.specs import TOOLS

    field_name = VERSION_FIELDS.get(tool)
    comp = getattr(scenario.components, field_name) if field_name else None
    version = getattr(comp, "version", None) if comp is not None else None
    if field_name == "registry" and comp.kind not in ("auto", tool):
        version = None
    if not version:
        return tool
    pin = TOOLS[tool].version
    if pin.startswith("v") and not version.startswith("v"):
        version = "v" + version
    return tool if version == pin else f"{tool}@{version}"


SUITE_TOOLS = ("cosign", "oci-conformance")


def suite_tools(scenario: "Scenario") -> dict[str, str]:
    """What the stack records of the scenario's versions of the programs the suites run."""
    return {t: tool_ref(scenario, t) for t in SUITE_TOOLS}


def obtain(scenario: "Scenario", tool: str, *, arch: str | None = None, build: bool = True) -> "toolchain.Resolved":
    """The scenario's version of ``tool`` (built on demand when ``build``); an unobtainable one is
    one error naming the scenario field and the registry's own answer."""
    from labgate import toolchain
    from labgate.errors import StackError

    ref = tool_ref(scenario, tool)
    found = toolchain.install(ref, arch=arch) if build else toolchain.resolve(ref, arch=arch)
    if not found.available and "@" in ref:
        raise StackError(f"{scenario.source}: components.{VERSION_FIELDS[tool]}.version: {ref} cannot be obtained: {found.reason}")
    return found


def choose_registry(scenario: "Scenario", arch: str | None = None) -> tuple[str, "toolchain.Resolved"]:
    """Which registry the scenario gets, and its binary (for ``arch``): zot when asked for, or with
    ``kind: auto`` when a zot binary can be had; CNCF distribution otherwise. A ZOT_BIN that names
    no working binary is an error, never a silent fall-back to distribution."""
    from labgate import toolchain
    from labgate.errors import StackError

    want = scenario.components.registry.kind
    zref = tool_ref(scenario, "zot")
    zot = toolchain.resolve(zref, arch=arch)
    if os.environ.get(toolchain.spec(zref, arch).env) and not zot.available:
        raise StackError(f"registry: {zot.reason}")
    if want == "zot" or (want == "auto" and zot.available):
        if not zot.available:
            raise StackError(f"registry: {zot.reason}")
        return "zot", zot
    dist = obtain(scenario, "distribution", arch=arch)
    if not dist.available:
        raise StackError(f"registry: {dist.reason}")
    return "distribution", dist


def reading_robot(scenario: "Scenario") -> str | None:
    """The robot Kyverno (and a pod's pull secret) reads the registry as: the scenario's
    pull_robot, else a robot in the readers group, else the first robot."""
    adm = scenario.components.admission
    robots = scenario.identities.robots
    return (adm.pull_robot if adm else None) or next((r.name for r in robots if "readers" in r.groups), None) \
        or (robots[0].name if robots else None)


def robot_credentials(stack: Stack, scenario: "Scenario") -> None:
    """A password per robot, made for this run and registered for redaction (also in basic-auth form)."""
    for robot in scenario.identities.robots:
        stack.credentials[robot.name] = redact.new_secret(f"{robot.name}-password")
        redact.register_basic(robot.name, stack.credentials[robot.name], f"{robot.name}-password")
