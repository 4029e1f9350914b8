"""Unit tests: verdict classification, the summary page, known issues, the peer table."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from labgate import peer, redact
from labgate.report import known
from labgate.report.collect import RunRecorder, strip_analytics, suite_of
from labgate.scenario import load_scenario
from labgate.stack import ComponentState, Stack

SC = load_scenario("scenarios/local.yaml")


def rep(nodeid, when, outcome, longrepr=None, props=(), duration=0.1, **kw):
    r = NS(nodeid=nodeid, when=when, outcome=outcome, passed=outcome == "passed", failed=outcome == "failed",
           skipped=outcome == "skipped", longrepr=longrepr, user_properties=list(props), duration=duration, start=1.0, stop=2.0)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def recorder(tmp_path):
    return RunRecorder(scenario=SC, report_dir=tmp_path, run_id="r1")


def test_suite_of():
    assert suite_of("suites/oci/test_pull.py::test_x") == "oci"
    assert suite_of("tests/test_report.py::t") is None


def test_verdicts(tmp_path):
    rec = recorder(tmp_path)
    n = "suites/oci/test_a.py::"
    for r in [rep(n + "p", "setup", "passed"), rep(n + "p", "call", "passed", props=[("area", "pull")]),
              rep(n + "f", "call", "failed", longrepr=NS(reprcrash=NS(message="AssertionError: 500 != 201"))),
              rep(n + "s", "setup", "skipped", longrepr=("f", 1, "Skipped: zot binary not available: set ZOT_BIN")),
              rep(n + "u", "call", "skipped", longrepr=("f", 1, "Skipped: unsupported (optional): no referrers API")),
              rep(n + "w", "call", "passed", props=[("should", "no Link header")]),
              rep(n + "k", "call", "skipped", wasxfail="known issue x: y (ref)"),
              rep(n + "e", "setup", "failed", longrepr=NS(reprcrash=NS(message="ConnectionError")))]:
        rec.add_report(r)
    got = {t.nodeid.split("::")[1]: t.verdict for t in rec.tests.values()}
    assert got == {"p": "pass", "f": "fail", "s": "skip", "u": "unsupported", "w": "warn", "k": "known", "e": "error"}
    assert rec.tests[n + "s"].message == "zot binary not available: set ZOT_BIN"
    assert rec.e2e_verdict() is None


def test_all_e2e_skipped_is_a_failure(tmp_path):
    rec = recorder(tmp_path)
    rec.add_report(rep("suites/oci/test_a.py::x", "setup", "skipped", longrepr=("f", 1, "Skipped: why (fix: how)")))
    assert "every end-to-end test skipped" in rec.e2e_verdict()


def test_no_e2e_test_is_a_failure(tmp_path):
    assert "no end-to-end test ran" in recorder(tmp_path).e2e_verdict()


def _stack():
    return Stack(run_id="r1", scenario="scenarios/local.yaml", scenario_name="local", provider="local", arch="amd64",
                 run_dir="/tmp/x", report_dir="/tmp/y", registry_kind="distribution", registry_url="http://127.0.0.1:1",
                 credentials={"ci-robot": "hunter2-hunter2"},
                 components=[ComponentState("registry", "distribution", "v3.1.2", "cache", "/c/registry", start_seconds=0.2)],
                 skipped_components={"zot": "zot binary not available: set ZOT_BIN"})


def test_summary_page_shows_skips_components_and_timings(tmp_path):
    rec = recorder(tmp_path)
    rec.stack = _stack()
    redact.register("hunter2-hunter2", "ci-robot-password")
    rec.phase("toolchain", 0.5)
    rec.add_report(rep("suites/oci/test_a.py::x", "setup", "skipped", longrepr=("f", 1, "Skipped: zot binary not available: set ZOT_BIN")))
    rec.add_report(rep("suites/oci/test_a.py::y", "call", "passed"))
    rec.exitstatus = 0
    rec.write(allure_html=False)
    html = (tmp_path / "index.html").read_text()
    for needle in ("zot binary not available: set ZOT_BIN", "distribution", "v3.1.2", "toolchain", "suite:oci", "Verdicts per suite"):
        assert needle in html
    assert "hunter2-hunter2" not in html + (tmp_path / "summary.json").read_text()
    assert "<script" not in html


def test_strip_analytics(tmp_path):
    f = tmp_path / "index.html"
    f.write_text('<html><script async src="https://www.googletagmanager.com/gtag/js?id=G-1"></script><script>window.dataLayer=[];function gtag(){}</script><script src="app.js"></script></html>')
    strip_analytics(f)
    assert "googletagmanager" not in f.read_text() and "app.js" in f.read_text()


ENTRY = ("- id: d1\n  match: {registry: distribution}\n  tests: ['suites/oci/test_c.py::test_sha512_*']\n  reason: r\n"
         "  reference: ref\n  evidence: 'AssertionError: mount MUST answer 201'\n  owner: registry-team\n  expires: 2030-01-31\n")


def test_known_issue_applies_by_registry_and_test(tmp_path):
    f = tmp_path / "k.yaml"
    f.write_text(ENTRY)
    entries = known.load(str(f))
    assert known.applies(entries[0], "suites/oci/test_c.py::test_sha512_blob", {"registry": "distribution"})
    assert not known.applies(entries[0], "suites/oci/test_c.py::test_sha512_blob", {"registry": "zot"})


def test_known_issue_excuses_only_its_evidence(tmp_path):
    f = tmp_path / "k.yaml"
    f.write_text(ENTRY)
    entry = known.load(str(f))[0]
    assert known.evidence_matches(entry, "AssertionError", "mount MUST answer 201: POST /v2/x -> 202")
    assert not known.evidence_matches(entry, "ConnectionError", "the mount MUST answer 201")
    assert not known.evidence_matches(entry, "AssertionError", "HEAD MUST answer 404")


@pytest.mark.parametrize("missing", ["reference", "evidence", "owner", "expires"])
def test_known_issues_file_is_validated(tmp_path, missing):
    from labgate.errors import ScenarioError

    f = tmp_path / "k.yaml"
    f.write_text("".join(ln + "\n" for ln in ENTRY.splitlines() if not ln.strip().startswith(missing + ":")))
    with pytest.raises(ScenarioError, match=rf"\[0\]\.{missing}: required field is missing"):
        known.load(str(f))


def test_quarantine_expires(tmp_path):
    import datetime as dt

    f = tmp_path / "k.yaml"
    f.write_text(ENTRY)
    entry = known.load(str(f))[0]
    assert known.state(entry, dt.date(2029, 12, 1)) == "active"
    assert known.state(entry, dt.date(2030, 1, 20)) == "expires soon"
    assert known.state(entry, dt.date(2030, 2, 1)) == "expired"
    assert [e["id"] for e in known.expired(dt.date(2030, 2, 1), str(f))] == ["d1"]
    assert known.expired(dt.date(2029, 1, 1), str(f)) == []


def test_shipped_known_issues_file_loads():
    known.load()


@pytest.mark.parametrize("name,area", [
    ("OCI Conformance Test/sha512 blobs/post+put/blob-post-put", "sha512"),
    ("OCI Conformance Test/empty/referrers", "referrers"),
    ("OCI Conformance Test/artifacts-with-subject/push/manifest-by-digest", "referrers"),
    ("OCI Conformance Test/artifacts-with-subject/pull/blob-get", "pull"),
    ("OCI Conformance Test/image/tag-list", "tag list"),
    ("OCI Conformance Test/image/delete/manifest-delete", "management"),
    ("OCI Conformance Test/sha256 blobs/post+put/blob-delete", "management"),
    ("OCI Conformance Test/missing-manifest/by-digest", "error codes"),
    ("OCI Conformance Test/sha256 blobs/get-missing", "error codes"),
    ("OCI Conformance Test/image/head/manifest-head-by-tag", "pull"),
    ("OCI Conformance Test/sha256 blobs/range requests/range 500-", "pull"),
    ("OCI Conformance Test/sha256 blobs/chunked single/blob-patch-chunked", "push"),
    ("OCI Conformance Test/ping", None),
])
def test_official_area_mapping(name, area):
    assert peer.official_area(name) == area


def test_compare_agrees_on_absent_referrers():
    lab = {a: {"verdict": "pass", "detail": ""} for a in peer.AREAS}
    off = {a: {"verdict": "pass", "detail": ""} for a in peer.AREAS}
    lab["referrers"] = {"verdict": "unsupported", "detail": "2 unsupported"}
    off["referrers"] = {"verdict": "unsupported", "detail": "no referrers API"}
    off["push"] = {"verdict": "fail", "detail": "1 failed"}
    rows = {r["area"]: r for r in peer.compare(lab, off)}
    assert rows["referrers"]["agree"] and not rows["push"]["agree"]


TREE = """Test results
OCI Conformance Test: FAIL
  OCI Conformance Test/ping: Pass
  OCI Conformance Test/empty: FAIL
    OCI Conformance Test/empty/referrers: FAIL
     - header value mismatch for "Content-Type", expected "application/vnd.oci.image.index.v1+json"
unexpected status code, expected one of [200], received 404
  OCI Conformance Test/nd: FAIL
    OCI Conformance Test/nd/push/manifest-by-tag: FAIL
     - manifest put failed: unexpected status code, expected one of [201], received 500
    OCI Conformance Test/nd/pull/manifest-by-tag: FAIL
     - unexpected status code, expected one of [200], received 404
    OCI Conformance Test/nd/tag-list: Pass
"""


def test_parse_tree_keeps_leaves_and_messages():
    leaves = peer.parse_tree(TREE)
    assert [n.split("/", 1)[1] for n, _, _ in leaves] == ["ping", "empty/referrers", "nd/push/manifest-by-tag", "nd/pull/manifest-by-tag", "nd/tag-list"]
    assert "received 404" in leaves[1][2]


def test_failures_after_a_failed_push_count_as_its_consequence(tmp_path):
    (tmp_path / "results.yaml").write_text("apis: {}\n")
    (tmp_path / "output.txt").write_text(TREE)
    areas = peer.parse_official(tmp_path)
    assert areas["referrers"]["verdict"] == "unsupported"
    assert areas["push"]["verdict"] == "fail" and "2 failed" in areas["push"]["detail"]
    assert areas["pull"]["verdict"] == "skip"


def test_missing_results_yaml_is_an_error(tmp_path):
    from labgate.errors import StackError

    with pytest.raises(StackError, match="wrote no results.yaml"):
        peer.parse_official(tmp_path)


def test_time_spent_waiting_for_another_tests_outage_is_kept_apart(tmp_path):
    rec = recorder(tmp_path)
    rec.add_report(rep("suites/admission/test_a.py::a11", "setup", "passed", props=[("lock_wait", 7.5)], duration=7.6))
    rec.add_report(rep("suites/admission/test_a.py::a11", "call", "passed", props=[("lock_wait", 7.5)], duration=0.5))
    t = rec.tests["suites/admission/test_a.py::a11"]
    assert (round(t.duration, 1), t.extra["lock_wait_s"]) == (8.1, 7.5)
