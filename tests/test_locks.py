"""Unit tests of the component locks (labgate.locks) and the lock-aware xdist scheduler
(fixtures.scheduler), with fake worker nodes."""

from __future__ import annotations

import threading
import time

import pytest

from fixtures.scheduler import LockAwareScheduling, load_footprints, write_footprints
from labgate import locks


def test_footprint_of_a_plain_test_is_what_its_suite_uses():
    assert locks.footprint("oci", None) == ({"registry"}, set())
    assert locks.footprint("admission", None) == ({"registry", "kubernetes", "kyverno"}, set())


def test_a_disruptive_test_has_its_components_to_itself():
    shared, exclusive = locks.footprint("faults", ["kyverno"])
    assert exclusive == {"kyverno", locks.DISRUPTION} and "kyverno" not in shared and "registry" in shared


def test_disrupting_the_api_disrupts_kyverno():
    assert locks.footprint("faults", ["etcd"])[1] == {"kubernetes", "kyverno", locks.DISRUPTION}


def test_disruptive_without_names_is_the_whole_stack():
    assert locks.footprint("access", []) == (set(), {*locks.RESOURCES, locks.DISRUPTION})


def test_an_outage_scoped_test_shares_what_it_disrupts_and_holds_the_disruption_lock():
    assert locks.footprint("admission", ["registry"], scope="outage") == ({"registry", "kubernetes", "kyverno"}, {locks.DISRUPTION})
    with pytest.raises(ValueError, match="scope 'window'"):
        locks.footprint("admission", ["registry"], scope="window")


def test_outside_its_outage_window_a_disruptive_test_runs_beside_the_users(tmp_path):
    with locks.hold(str(tmp_path), *locks.footprint("faults", ["registry"], scope="outage")):
        assert _taken_within(tmp_path, 2, shared={"registry"}), "before the outage the OCI suite runs beside it"
        with locks.outage("registry"):
            assert not _taken_within(tmp_path, 0.3, shared={"registry"}), "during the outage the registry's users wait"
            assert _taken_within(tmp_path, 2, shared={"identity"}), "what it does not disrupt is not blocked"
        assert _taken_within(tmp_path, 2, shared={"registry"}), "after the outage they go on"


def test_the_outage_window_waits_for_the_test_already_using_the_component(tmp_path):
    user = locks.hold(str(tmp_path), shared={"registry"})
    user.__enter__()
    entered = threading.Event()

    def disruptor():
        with locks.hold(str(tmp_path), *locks.footprint("faults", ["registry"], scope="outage")):
            with locks.outage("registry"):
                entered.set()

    t = threading.Thread(target=disruptor, daemon=True)
    t.start()
    assert not entered.wait(0.3), "the outage waits for the running user of the registry"
    user.__exit__(None, None, None)
    assert entered.wait(2)
    t.join(2)


def test_an_outage_in_a_whole_test_disruption_or_without_locks_changes_nothing(tmp_path):
    with locks.outage("registry"):  # no locks held: an attached run without a stack lock
        pass
    with locks.hold(str(tmp_path), *locks.footprint("faults", ["registry"])):
        with locks.outage("registry"):
            assert not _taken_within(tmp_path, 0.3, shared={"registry"})
        assert not _taken_within(tmp_path, 0.3, shared={"registry"}), "held for the whole test"


def test_two_disruptive_tests_never_run_at_once(tmp_path):
    with locks.hold(str(tmp_path), *locks.footprint("faults", ["registry"], scope="outage")):
        assert not _taken_within(tmp_path, 0.3, *locks.footprint("faults", ["identity"]))


def test_an_unknown_component_is_named():
    with pytest.raises(ValueError, match="registy"):
        locks.footprint("faults", ["registy"])


def _taken_within(run_dir, seconds: float, *footprint, **held) -> bool:
    done = threading.Event()

    def take():
        with locks.hold(str(run_dir), *footprint, **held):
            done.set()

    threading.Thread(target=take, daemon=True).start()
    return done.wait(seconds)


def test_an_outage_blocks_its_users_only(tmp_path):
    with locks.hold(str(tmp_path), shared={"registry"}, exclusive={"kyverno"}):
        assert _taken_within(tmp_path, 2, shared={"registry"}), "the OCI suite runs beside a Kyverno outage"
        assert not _taken_within(tmp_path, 0.3, shared={"registry", "kyverno"}), "admission waits for Kyverno"


def test_a_waiting_writer_is_not_starved_by_new_readers(tmp_path):
    order = []
    reader = locks.hold(str(tmp_path), shared={"registry"})
    reader.__enter__()

    def writer():
        with locks.hold(str(tmp_path), exclusive={"registry"}):
            order.append("writer")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.2)  # the writer now waits at the turnstile

    def late_reader():
        with locks.hold(str(tmp_path), shared={"registry"}):
            order.append("late reader")

    r = threading.Thread(target=late_reader, daemon=True)
    r.start()
    time.sleep(0.2)
    assert order == []
    reader.__exit__(None, None, None)
    t.join(5)
    r.join(5)
    assert order == ["writer", "late reader"]


# ----------------------------------------------------------------------------------------------
# the scheduler


class FakeNode:
    def __init__(self, name):
        self.name = name
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True


class FakeConfig:
    def getoption(self, name):
        return {"maxschedchunk": None, "tx": [], "numprocesses": 2, "dist": "load"}.get(name)

    def getvalue(self, name):
        return self.getoption(name)


def _scheduler(tmp_path, tests: dict[str, tuple[set[str], set[str]]]):
    path = tmp_path / "fp.json"
    write_footprints(path, tests)
    sched = LockAwareScheduling.__new__(LockAwareScheduling)
    sched.node2collection, sched.node2pending, sched.pending = {}, {}, []
    sched.collection = list(tests)
    sched.maxschedchunk = 1
    sched._footprints_file, sched._footprints = path, None
    sched.config, sched.log = FakeConfig(), lambda *a: None
    return sched


def test_a_worker_is_handed_the_first_test_that_does_not_clash(tmp_path):
    tests = {
        "faults::kyverno_down": ({"registry", "kubernetes"}, {"kyverno"}),
        "faults::control_plane": ({"registry"}, {"kubernetes", "kyverno"}),
        "admission::a1": ({"registry", "kubernetes", "kyverno"}, set()),
        "oci::pull": ({"registry"}, set()),
        "oci::push": ({"registry"}, set()),
    }
    sched = _scheduler(tmp_path, tests)
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched.node2pending = {a: [], b: []}
    sched.pending[:] = range(len(tests))
    sched._send_tests(a, 2)
    assert [sched.collection[i] for i in a.sent] == ["faults::kyverno_down", "faults::control_plane"]
    sched._send_tests(b, 2)
    assert [sched.collection[i] for i in b.sent] == ["oci::pull", "oci::push"], "admission would wait on the outage"


def test_when_everything_clashes_the_first_pending_test_is_taken(tmp_path):
    tests = {"faults::kyverno_down": ({"registry"}, {"kyverno"}), "admission::a1": ({"registry", "kyverno"}, set())}
    sched = _scheduler(tmp_path, tests)
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched.node2pending = {a: [], b: []}
    sched.pending[:] = range(len(tests))
    sched._send_tests(a, 1)
    sched._send_tests(b, 1)
    assert b.sent == [1]


def test_an_outage_is_not_paired_with_a_long_running_test_that_needs_the_component(tmp_path):
    """A registry outage waits for every test that holds the registry: beside R8 (seconds of TTL) it
    would wait that long, and hold the other worker out meanwhile."""
    tests = {
        "admission::r8": ({"registry", "kubernetes"}, set(), set(), True),
        "faults::registry_slow": ({"registry", "kubernetes"}, {locks.DISRUPTION}, {"registry"}, False),
        "admission::a1": ({"registry", "kubernetes"}, set(), set(), False),
    }
    sched = _scheduler(tmp_path, tests)
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched.node2pending = {a: [], b: []}
    sched.pending[:] = range(len(tests))
    sched._send_tests(a, 1)
    assert [sched.collection[i] for i in a.sent] == ["admission::r8"]
    sched._send_tests(b, 1)
    assert [sched.collection[i] for i in b.sent] == ["admission::a1"], "the outage would wait for R8"


def test_without_footprints_the_order_is_kept(tmp_path):
    assert load_footprints(tmp_path / "absent.json") == {}
