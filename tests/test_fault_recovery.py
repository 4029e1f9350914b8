"""Unit test of the faults suite's recovery guard, with a fake lifecycle ability."""

from __future__ import annotations

import pytest

from labgate.errors import StackError


class FakeLife:
    def __init__(self):
        self.restarted: list[str] = []

    def restart(self, component: str) -> None:
        self.restarted.append(component)


def test_a_kyverno_stuck_after_a_control_plane_restart_fails_the_test_and_is_restarted():
    from suites.faults.test_faults import _kyverno_restored_if_stuck

    life = FakeLife()
    with pytest.raises(AssertionError, match="Kyverno had not recovered .* after the kube-apiserver came back .*not ready after"):
        with _kyverno_restored_if_stuck(life, "kube-apiserver"):
            raise StackError("admission restored after the fault: not ready after 45s")
    assert life.restarted == ["kyverno"]


def test_a_recovered_kyverno_is_left_alone():
    from suites.faults.test_faults import _kyverno_restored_if_stuck

    life = FakeLife()
    with _kyverno_restored_if_stuck(life, "etcd"):
        pass
    assert life.restarted == []
