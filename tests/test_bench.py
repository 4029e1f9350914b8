"""Unit tests of the benchmark figures and page (labgate.bench): the measuring itself is
`nox -s benchmarks` on real components."""

from __future__ import annotations

import pytest

from labgate import bench


def test_a_figure_is_the_median_with_min_and_max():
    assert bench.figure([3.0, 1.0, 2.0]) == {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "rounds": 3}


def test_the_page_shows_every_section_and_says_why_one_was_not_measured():
    f = bench.figure([1.0, 2.0, 4.0])
    result = {"measured": "2026-12-04 12:00:00 UTC", "cpu_count": 2, "scenario": "scenarios/local.yaml",
              "floor": {"floor": f}, "stack": {"stack-up": f, "teardown": f}, "stack_up_over_floor": f,
              "e2e": {"figures": {"pytest -n 2": f, "xdist speed-up": f}, "suites": {"oci": {"wall_s": 5.0, "test_seconds": 4.0}},
                      "slowest": [{"test": "suites/oci/test_pull.py::test_x", "seconds": 1.5, "verdict": "pass", "waiting_s": 1.25}]},
              "oci": {"labgate / official": f, "registry": "distribution"},
              "kind": {"skipped": "kind is not available: <fix>"}}
    page = bench.render(result)
    for text in ("stack-up", "teardown", "pytest -n 2", "xdist speed-up", "test_x", "1.25", "labgate / official", "stack-up / floor",
                 "skipped: kind is not available: &lt;fix&gt;"):
        assert text in page


def test_fewer_than_three_rounds_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "2"])
