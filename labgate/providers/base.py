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


def choose_registry(scenario: "Scenario", arch: str | None = None) -> tuple[str, "toolchain.Resolved"]:
    """Which registry the scenario gets, and its binary (for ``arch``): zot when asked for, or with
    ``kind: auto`` when a zot binary can be had; CNCF distribution otherwise. A ZOT_BIN that names
    no working binary is an error, never a silent fall-back to distribution."""
    from labgate import toolchain
    from labgate.errors import StackError
    from labgate.toolchain.specs import variant

    want = scenario.components.registry.kind
    zot = toolchain.resolve("zot", arch=arch)
    if os.environ.get(variant("zot", arch=arch).env) and not zot.available:
        raise StackError(f"registry: {zot.reason}")
    if want == "zot" or (want == "auto" and zot.available):
        if not zot.available:
            raise StackError(f"registry: {zot.reason}")
        return "zot", zot
    dist = toolchain.install("distribution", arch=arch)
    if not dist.available:
        raise StackError(f"registry: {dist.reason}")
    return "distribution", dist


def robot_credentials(stack: Stack, scenario: "Scenario") -> None:
    """A password per robot, made for this run and registered for redaction (also in basic-auth form)."""
    for robot in scenario.identities.robots:
        stack.credentials[robot.name] = redact.new_secret(f"{robot.name}-password")
        redact.register_basic(robot.name, stack.credentials[robot.name], f"{robot.name}-password")
