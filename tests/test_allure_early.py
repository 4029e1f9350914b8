"""Unit tests: the Allure HTML starts building once every xdist worker has finished cleanly (fake
workers and recorder), not after xdist has waited for the workers to exit."""

from __future__ import annotations

import pytest

from fixtures import plugin


class FakeRecorder:
    def __init__(self):
        self.started = 0

    def start_allure_html(self):
        self.started += 1


class FakeConfig:
    def __init__(self, no_html: bool = False):
        self.stash = pytest.Stash()
        self.stash[plugin._RECORDER] = FakeRecorder()
        self.no_html = no_html

    def getoption(self, name):
        assert name == "--labgate-no-html"
        return self.no_html


class FakeNode:
    def __init__(self, config, exitstatus: int = 0):
        self.config = config
        self.workeroutput = {"exitstatus": exitstatus}


def _nodes(config, n: int) -> list[FakeNode]:
    nodes = [FakeNode(config) for _ in range(n)]
    for node in nodes:
        config.stash[plugin._NODES] = config.stash.get(plugin._NODES, 0) + 1  # what pytest_configure_node counts
    return nodes


def test_the_build_starts_when_the_last_worker_finishes():
    config = FakeConfig()
    a, b = _nodes(config, 2)
    plugin.pytest_testnodedown(a, None)
    assert config.stash[plugin._RECORDER].started == 0, "one worker may still be writing results"
    plugin.pytest_testnodedown(b, None)
    assert config.stash[plugin._RECORDER].started == 1


@pytest.mark.parametrize("how", ["crashed", "interrupted"])
def test_a_worker_that_did_not_finish_leaves_it_to_the_session_end(how):
    config = FakeConfig()
    a, b = _nodes(config, 2)
    plugin.pytest_testnodedown(a, None)
    if how == "crashed":  # xdist may start a replacement, which runs the crashed worker's tests
        plugin.pytest_testnodedown(b, "worker 'gw1' crashed")
    else:
        b.workeroutput["exitstatus"] = 2
        plugin.pytest_testnodedown(b, None)
    assert config.stash[plugin._RECORDER].started == 0


def test_no_html_asked_for_none_built():
    config = FakeConfig(no_html=True)
    (a,) = _nodes(config, 1)
    plugin.pytest_testnodedown(a, None)
    assert config.stash[plugin._RECORDER].started == 0
