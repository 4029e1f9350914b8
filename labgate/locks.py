"""Fair readers-writer locks per stack component, across pytest-xdist workers (fcntl locks in the
run directory).

Every end-to-end test holds *shared* the components it uses; a test that disrupts a component (stops
the registry to prove behaviour during an outage) holds that one *exclusive*, so no test that uses
it sees the outage, while tests that do not use it go on: the OCI suite runs beside a Kyverno
outage. A turnstile per component keeps a waiting writer from being starved by a stream of readers.
Components are always taken in one order, so two tests never wait for each other.

A disruptive test holds the component for the whole test (``scope="test"``), or only for the
outage itself (``scope="outage"``): then it shares the component like any other test and takes it
exclusive only inside the provider ability's ``down()`` / ``paused()`` / ``restart()`` block
(``outage()``), so its set-up and its checks afterwards run beside other tests. That suits a
component that is whole again when the block ends (the registry answers again; nothing else keeps
state about its outage). Every disruptive test also holds the ``disruption`` lock exclusive: one
fault at a time, and no two tests ever trade a shared lock for an exclusive one at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

# what a test can lock; etcd and kube-apiserver are one: either one down is the API down
RESOURCES = ("identity", "kubernetes", "kyverno", "registry")
# held exclusive by every disruptive test (taken before the components): one fault at a time
DISRUPTION = "disruption"
SCOPES = ("test", "outage")
_RESOURCE_OF = {"registry": "registry", "identity": "identity", "etcd": "kubernetes", "kube-apiserver": "kubernetes",
                "kubernetes": "kubernetes", "kyverno": "kyverno"}
# what each suite uses: the admission suites read signatures through the registry
SUITE_USES = {
    "oci": {"registry"},
    "access": {"registry", "identity"},
    "oidc": {"identity", "registry"},
    "admission": {"registry", "kubernetes", "kyverno"},
    "rotation": {"registry", "kubernetes", "kyverno"},
}


def resource_of(component: str) -> str:
    try:
        return _RESOURCE_OF[component]
    except KeyError:
        raise ValueError(f"unknown component {component!r} (one of {', '.join(sorted(_RESOURCE_OF))})") from None


def footprint(suite: str | None, disrupts: Iterable[str] | None, scope: str = "test") -> tuple[set[str], set[str]]:
    """(shared, exclusive) for a test of ``suite`` that disrupts ``disrupts`` (None: nothing; an
    empty list: every component) for the whole test or only during the outage (``scope``). The
    disrupted components of an outage-scoped test are shared outside the outage (``outage()``)."""
    uses = set(SUITE_USES.get(suite or "", RESOURCES))
    if disrupts is None:
        return uses, set()
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    exclusive = disrupted(disrupts)
    if scope == "outage":
        return uses | exclusive, {DISRUPTION}
    return uses - exclusive, exclusive | {DISRUPTION}


def disrupted(components: Iterable[str]) -> set[str]:
    """The resources an outage of ``components`` takes away (none named: all). Disrupting the API
    disrupts Kyverno too: it exits when it cannot renew its lease."""
    components = list(components)
    out = {resource_of(c) for c in components} if components else set(RESOURCES)
    if "kubernetes" in out:
        out.add("kyverno")
    return out


def _open(d: str, name: str) -> int:
    return os.open(str(Path(d) / name), os.O_RDWR | os.O_CREAT, 0o600)


class Held:
    """The locks one test holds, by resource: (turnstile fd, lock fd, mode)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._fds: dict[str, tuple[int, int, int]] = {}

    def mode(self, resource: str) -> int | None:
        held = self._fds.get(resource)
        return held[2] if held else None

    def take(self, resource: str, mode: int) -> None:
        """Pass the resource's turnstile, then take its lock in ``mode``. A reader lets the turnstile
        go at once; a writer keeps it, so readers that arrive after it wait behind it."""
        turn, main = _open(self.run_dir, f".turnstile-{resource}.lock"), _open(self.run_dir, f".lock-{resource}.lock")
        try:
            fcntl.flock(turn, fcntl.LOCK_EX)
            fcntl.flock(main, mode)
            if mode == fcntl.LOCK_SH:
                fcntl.flock(turn, fcntl.LOCK_UN)
        except BaseException:  # Ctrl-C while waiting
            os.close(turn)
            os.close(main)
            raise
        self._fds[resource] = (turn, main, mode)

    def release(self, resource: str) -> None:
        turn, main, _ = self._fds.pop(resource)
        fcntl.flock(main, fcntl.LOCK_UN)
        fcntl.flock(turn, fcntl.LOCK_UN)
        os.close(turn)
        os.close(main)

    def release_all(self) -> None:
        for r in reversed(list(self._fds)):
            self.release(r)


_local = threading.local()


def _current() -> Held | None:
    stack = getattr(_local, "held", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def hold(run_dir: str, shared: Iterable[str] = (), exclusive: Iterable[str] = ()) -> Iterator[Held]:
    """Hold ``shared`` and ``exclusive`` resources for the block, taken in one order (the
    disruption lock, then RESOURCES). Inside, ``outage()`` finds them (same thread)."""
    shared, exclusive = set(shared), set(exclusive)
    held = Held(run_dir)
    _local.held = getattr(_local, "held", [])
    _local.held.append(held)
    try:
        for r in (DISRUPTION, *RESOURCES):
            if r in exclusive:
                held.take(r, fcntl.LOCK_EX)
            elif r in shared:
                held.take(r, fcntl.LOCK_SH)
        yield held
    finally:
        held.release_all()
        _local.held.remove(held)


@contextlib.contextmanager
def outage(*components: str) -> Iterator[None]:
    """The block in which a test takes ``components`` away (provider abilities wrap their stop and
    start, pause and resume in it): the test's shared locks on them become exclusive for the block.
    Nothing changes for a test that holds them exclusive already (a whole-test disruption) or holds
    no locks (an attached run without a stack lock). Safe from deadlock because only a holder of
    the disruption lock (one test at a time) trades a shared lock for an exclusive one."""
    held = _current()
    trade: list[str] = []
    if held is not None and held.mode(DISRUPTION) == fcntl.LOCK_EX:
        trade = [r for r in RESOURCES if r in disrupted(components) and held.mode(r) == fcntl.LOCK_SH]
    for r in trade:
        held.release(r)
    try:
        for r in trade:
            held.take(r, fcntl.LOCK_EX)
        yield
    finally:
        for r in reversed(trade):
            if held.mode(r) is not None:
                held.release(r)
        for r in trade:
            held.take(r, fcntl.LOCK_SH)
