"""Fair readers-writer locks per stack component, across pytest-xdist workers (fcntl locks in the
run directory).

Every end-to-end test holds *shared* the components it uses; a test that disrupts a component (stops
the registry to prove behaviour during an outage) holds that one *exclusive*, so no test that uses
it sees the outage, while tests that do not use it go on: the OCI suite runs beside a Kyverno
outage. A turnstile per component keeps a waiting writer from being starved by a stream of readers.
Components are always taken in one order, so two tests never wait for each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterable, Iterator

# what a test can lock; etcd and kube-apiserver are one: either one down is the API down
RESOURCES = ("identity", "kubernetes", "kyverno", "registry")
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


def footprint(suite: str | None, disrupts: Iterable[str] | None) -> tuple[set[str], set[str]]:
    """(shared, exclusive) for a test of ``suite`` that disrupts ``disrupts`` (None: nothing; an
    empty list: every component). Disrupting the API disrupts Kyverno too: it exits when it cannot
    renew its lease."""
    uses = set(SUITE_USES.get(suite or "", RESOURCES))
    if disrupts is None:
        return uses, set()
    exclusive = {resource_of(c) for c in disrupts} if disrupts else set(RESOURCES)
    if "kubernetes" in exclusive:
        exclusive.add("kyverno")
    return uses - exclusive, exclusive


def _open(d: str, name: str) -> int:
    return os.open(str(Path(d) / name), os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _hold_one(run_dir: str, resource: str, mode: int) -> Iterator[None]:
    """Pass the resource's turnstile, then take its lock in ``mode``. A reader lets the turnstile
    go at once; a writer keeps it, so readers that arrive after it wait behind it."""
    turn, main = _open(run_dir, f".turnstile-{resource}.lock"), _open(run_dir, f".lock-{resource}.lock")
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        fcntl.flock(main, mode)
        if mode == fcntl.LOCK_SH:
            fcntl.flock(turn, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(main, fcntl.LOCK_UN)
        fcntl.flock(turn, fcntl.LOCK_UN)
        os.close(turn)
        os.close(main)


@contextlib.contextmanager
def hold(run_dir: str, shared: Iterable[str] = (), exclusive: Iterable[str] = ()) -> Iterator[None]:
    """Hold ``shared`` and ``exclusive`` resources for the block, taken in RESOURCES order."""
    shared, exclusive = set(shared), set(exclusive)
    with contextlib.ExitStack() as held:
        for r in RESOURCES:
            if r in exclusive:
                held.enter_context(_hold_one(run_dir, r, fcntl.LOCK_EX))
            elif r in shared:
                held.enter_context(_hold_one(run_dir, r, fcntl.LOCK_SH))
        yield

