"""The access suite expands the scenario's truth table into one test per cell."""

from __future__ import annotations

import pytest

from fixtures.plugin import scenario_of
from labgate.access import expand


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        scenario = scenario_of(metafunc.config)
        cells = expand(scenario) if scenario is not None else []
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])
