"""Providers: where the stack runs. One interface (labgate.providers.base.Provider): ``up() ->
Stack``, ``down()``, ``logs()``; optional abilities for attached processes (labgate.abilities)."""

from __future__ import annotations

from labgate.errors import ScenarioError
from labgate.providers.base import Provider
from labgate.scenario import Scenario


def get_provider(scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False, keep: bool = False) -> Provider:
    if scenario.provider == "local":
        from labgate.providers.local import LocalProvider

        return LocalProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached, keep=keep)
    if scenario.provider == "kind":
        from labgate.providers.kind import KindProvider

        return KindProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached, keep=keep)
    if scenario.provider == "k3d":
        from labgate.providers.k3d import K3dProvider

        return K3dProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached, keep=keep)
    if scenario.provider == "existing":
        from labgate.providers.existing import ExistingProvider

        return ExistingProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached, keep=keep)
    raise ScenarioError(f"{scenario.source}: provider: {scenario.provider!r} is unknown", fix="use local, kind, k3d or existing")


__all__ = ["Provider", "get_provider"]
