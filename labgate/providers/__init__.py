"""Providers: where the stack runs. One interface: ``up(scenario) -> Stack``, ``down()``, ``logs()``."""

from __future__ import annotations

from typing import Protocol

from labgate.errors import ScenarioError
from labgate.scenario import Scenario
from labgate.stack import Stack


class Provider(Protocol):
    name: str

    def up(self) -> Stack: ...

    def down(self) -> None: ...

    def logs(self) -> dict[str, str]: ...


def get_provider(scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False) -> Provider:
    if scenario.provider == "local":
        from labgate.providers.local import LocalProvider

        return LocalProvider(scenario, run_id=run_id, report_dir=report_dir, detached=detached)
    raise ScenarioError(
        f"{scenario.source}: provider: {scenario.provider!r} is not available in this version of labgate",
        fix="use provider: local",
    )
