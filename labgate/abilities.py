"""Provider abilities: what a suite may ask of the place the stack runs, from any process.

Suites never reach a provider's pids, files or command lines; they ask the stack's provider for an
ability (kubernetes-sigs/e2e-framework style) and skip, naming it, when the provider lacks it::

    life = abilities.need(stack, abilities.LIFECYCLE)
    with life.down("registry"):
        ...                      # the registry is stopped here and back afterwards, even on failure

Abilities:

- ``lifecycle``: stop and start a component (local: the process; kind: scale its Deployment), or
  crash it (local: SIGKILL; kind: its pods deleted with no grace period)
- ``pause``: freeze and thaw a component, so it accepts connections and answers nothing (slow)
- ``credentials``: revoke a robot's password for a while (htpasswd; kind: the mounted Secret)
- ``logs``: a component's output so far
- ``kubeconfig``: the run's kubeconfig file (never the user's)

Every ability keeps the record the component watcher reads (labgate.watch): a component a test
stopped on purpose is not a component that died.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from labgate import locks
from labgate.errors import LabgateError
from labgate.stack import Stack

LIFECYCLE = "lifecycle"
PAUSE = "pause"
CREDENTIALS = "credentials"
LOGS = "logs"
KUBECONFIG = "kubeconfig"
ALL = (LIFECYCLE, PAUSE, CREDENTIALS, LOGS, KUBECONFIG)


class AbilityMissing(LabgateError):
    """The stack's provider cannot do what the test asks; the test skips with this message."""


class Health:
    """What the watcher learns about one component at one moment."""

    __slots__ = ("alive", "detail", "restarts")

    def __init__(self, alive: bool, detail: str = "", restarts: int = 0):
        self.alive, self.detail, self.restarts = alive, detail, restarts

    def __repr__(self) -> str:
        return f"Health(alive={self.alive}, detail={self.detail!r}, restarts={self.restarts})"


class Handle:
    """A provider's abilities for an attached stack. Subclasses set ``abilities`` and implement the
    methods of the abilities they have; ``missing`` says why an absent one is absent and the fix."""

    provider = "?"
    abilities: frozenset[str] = frozenset()
    missing: dict[str, str] = {}

    def __init__(self, stack: Stack):
        self.stack = stack

    # ------------------------------------------------------------------------------------------
    def has(self, ability: str) -> bool:
        return ability in self.abilities

    def need(self, ability: str, component: str | None = None) -> "Handle":
        if ability not in ALL:
            raise ValueError(f"unknown ability {ability!r}")
        if ability not in self.abilities:
            why = self.missing.get(ability, "")
            raise AbilityMissing(f"the {self.provider} provider has no '{ability}' ability" + (f": {why}" if why else ""))
        if component is not None:
            why = self.cannot(ability, component)
            if why:
                raise AbilityMissing(f"the {self.provider} provider's '{ability}' ability does not reach {component}: {why}")
        return self

    def cannot(self, ability: str, component: str) -> str | None:
        """Why ``ability`` does not apply to ``component`` on this provider (None: it does)."""
        return None

    # ------------------------------------------------------------------------------------------
    # lifecycle
    def stop(self, component: str, crash: bool = False) -> None:
        """``crash``: no graceful shutdown (SIGKILL, a pod deleted with no grace period): what an
        OOM kill or a lost node does, where a stop lets the component finish its shutdown."""
        raise NotImplementedError

    def start(self, component: str, timeout: float = 90.0) -> None:
        raise NotImplementedError

    def restart(self, component: str, timeout: float = 90.0) -> None:
        with locks.outage(component):
            self.stop(component)
            self.start(component, timeout)

    @contextlib.contextmanager
    def down(self, component: str, crash: bool = False) -> Iterator[None]:
        """``with handle.down("registry"):`` the component is stopped (or crashed) inside, started
        afterwards; the block is the test's outage window (labgate.locks.outage)."""
        with locks.outage(component):
            self.stop(component, crash=crash)
            try:
                yield
            finally:
                self.start(component)

    @contextlib.contextmanager
    def supervised(self, component: str, why: str) -> Iterator[list[float]]:
        """While the block runs ``component`` may exit (``why``: its documented behaviour) and is
        restarted as its platform would; yields the restart times. Providers whose platform restarts
        containers themselves (kind: the kubelet) only watch."""
        raise NotImplementedError
        yield []  # pragma: no cover

    # pause
    def pause(self, component: str) -> None:
        raise NotImplementedError

    def resume(self, component: str) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def paused(self, component: str) -> Iterator[None]:
        with locks.outage(component):
            self.pause(component)
            try:
                yield
            finally:
                self.resume(component)

    # credentials
    def revoke_modes(self) -> set[str]:
        """How this provider can change a credential file: "in-place" (rewritten), "replace" (a new
        file renamed over it, as a Kubernetes Secret volume changes)."""
        return {"in-place", "replace"} if CREDENTIALS in self.abilities else set()

    @contextlib.contextmanager
    def revoked(self, account: str, *, how: str = "replace") -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover

    # logs, kubeconfig
    def logs(self, component: str) -> str:
        raise NotImplementedError

    def kubeconfig(self) -> str:
        if not self.stack.kubeconfig:
            raise AbilityMissing(f"the {self.provider} stack has no Kubernetes API")
        return self.stack.kubeconfig

    # ------------------------------------------------------------------------------------------
    # watching (labgate.watch): every provider says what it can about its components
    def health(self) -> dict[str, Health]:
        return {}

    # teardown of a stack another process started (`labgate stack down`, the reaper)
    def teardown(self) -> list[dict[str, object]]:
        return []


def of(stack: Stack) -> Handle:
    """The abilities of the provider that runs ``stack``."""
    if stack.provider == "local":
        from labgate.providers.local import LocalHandle

        return LocalHandle(stack)
    if stack.provider == "kind":
        from labgate.providers.kind import KindHandle

        return KindHandle(stack)
    if stack.provider == "k3d":
        from labgate.providers.k3d import K3dHandle

        return K3dHandle(stack)
    if stack.provider == "existing":
        from labgate.providers.existing import ExistingHandle

        return ExistingHandle(stack)
    raise LabgateError(f"stack {stack.run_id}: unknown provider {stack.provider!r}")


def need(stack: Stack, ability: str, component: str | None = None) -> Handle:
    """The provider's handle when it has ``ability`` (for ``component``); in a test, a skip naming
    what is missing otherwise."""
    handle = of(stack)
    try:
        return handle.need(ability, component)
    except AbilityMissing as exc:
        import pytest

        pytest.skip(exc.render())
        raise  # pragma: no cover - pytest.skip raises
