"""Providers: where the stack runs. One interface (labgate.providers.base.Provider): ``up() ->
Stack``, ``down()``, ``logs()``; optional abilities for attached processes (labgate.abilities)."""

from __future__ import annotations

from labgate.errors import ScenarioError
from labgate.providers.base import Provider
from labgate.scenario import Scenario


def get_provider(scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False) -> Provider:
    if scenario.provider == "local":
        from labgate.providers.local import LocalProvider

        return LocalProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached)
    if scenario.provider == "existing":
        from labgate.providers.existing import ExistingProvider

        return ExistingProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached)
    raise ScenarioError(
        f"{scenario.source}: provider: {scenario.provider!r} is not available in this version of labgate",
        fix="use provider: local",
    )


__all__ = ["Provider", "get_provider"]
