"""Unit tests of how verdicts are decided (fakes only: no component runs here).

A fake suite runs in a child pytest attached to a fake stack's state file, so the plugin's real
judging code decides each verdict: a known issue excuses only a failure matching its evidence; a
known issue that passes fails; an exception that is not an assertion is an error; after a component
died every failure is an error naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from labgate import redact, watch
from labgate.abilities import Handle, Health
from labgate.components import registry as reg
from labgate.providers.base import Teardown, interrupts_deferred
from labgate.scenario import parse_scenario
from labgate.stack import ComponentState, Stack

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import requests

def test_known_matching():
    raise AssertionError("mount MUST answer 201: POST /v2/x -> 202")

def test_known_other_failure():
    raise AssertionError("HEAD MUST answer 404")

def test_known_passes():
    pass

def test_refused_connection():
    raise requests.ConnectionError("connect: connection refused")

def test_plain_failure():
    assert 1 == 2, "one is not two"

def test_pass():
    pass
'''

KNOWN = '''
- id: fake-known
  match: {registry: distribution}
  tests: ["suites/oci/test_fake.py::test_known_*"]
  reason: a deviation seen in a fake
  reference: nowhere
  evidence: 'AssertionError: mount MUST answer 201'
  owner: test
  expires: 2099-12-31
'''


def _fake_stack(tmp_path: Path, components: list[ComponentState] | None = None) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stack = Stack(run_id="fake", scenario="inline", scenario_name="fake", provider="local", arch="amd64", run_dir=str(run_dir),
                  report_dir=str(tmp_path / "r"), registry_kind="distribution", registry_url="http://127.0.0.1:9",
                  components=components or [], capabilities=["registry", "registry.write"])
    return stack.save(run_dir / "state.json")


def _run_fake_suite(tmp_path: Path, state: Path, extra_env: dict[str, str] | None = None) -> dict[str, dict]:
    suite = tmp_path / "suites" / "oci"
    suite.mkdir(parents=True)
    (suite / "test_fake.py").write_text(SUITE)
    known = tmp_path / "known.yaml"
    known.write_text(KNOWN)
    sc = tmp_path / "scenario.yaml"
    sc.write_text("name: fake\nsuites: [oci]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABGATE_KNOWN_ISSUES": str(known), **(extra_env or {})}
    env.pop("LABGATE_STATE", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/oci/test_fake.py", "-p", "fixtures.plugin", "-p", "no:cacheprovider",
                           "--labgate-state", str(state), "--scenario", str(sc), "--labgate-reports", str(tmp_path / "reports"),
                           "--labgate-run-id", "fake", "--labgate-no-html", "--rootdir", str(tmp_path), "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    summary = json.loads((tmp_path / "reports" / "fake" / "summary.json").read_text())
    return {t["nodeid"].split("::")[-1]: t for t in summary["tests"]} | {"_proc": {"out": proc.stdout + proc.stderr, "code": proc.returncode}}


def test_verdicts_of_a_fake_suite(tmp_path):
    got = _run_fake_suite(tmp_path, _fake_stack(tmp_path))
    out = got["_proc"]["out"]
    assert got["test_known_matching"]["verdict"] == "known", out
    assert got["test_known_other_failure"]["verdict"] == "fail"
    assert "not the known issue fake-known" in got["test_known_other_failure"]["message"]
    assert got["test_known_passes"]["verdict"] == "fail" and "no longer fails" in got["test_known_passes"]["message"]
    assert got["test_refused_connection"]["verdict"] == "error"
    assert got["test_plain_failure"]["verdict"] == "fail"
    assert got["test_plain_failure"]["message"].startswith("AssertionError: one is not two"), got["test_plain_failure"]["message"]
    assert got["test_pass"]["verdict"] == "pass"
    junit = (tmp_path / "reports" / "fake" / "junit.xml").read_text()
    assert 'message="AssertionError: one is not two' in junit, "JUnit's failure message is the assertion, not a traceback line"


def test_after_a_component_died_every_failure_is_an_error(tmp_path):
    dead = subprocess.Popen(["sleep", "30"])
    dead.kill()
    dead.wait()
    log = tmp_path / "registry.log"
    log.write_text("listening on 127.0.0.1:9\nlast words of the registry\n")
    comp = ComponentState(name="registry", kind="distribution", version="v3.1.2", source="cache", path="/x", pid=dead.pid, log=str(log))
    got = _run_fake_suite(tmp_path, _fake_stack(tmp_path, [comp]))
    for name in ("test_known_matching", "test_known_other_failure", "test_refused_connection", "test_plain_failure"):
        assert got[name]["verdict"] == "error", (name, got[name])
        assert got[name]["message"].startswith("error: registry exited at "), got[name]["message"]
        assert "last words of the registry" in got[name]["message"]
    assert got["test_pass"]["verdict"] == "pass"
    summary = json.loads((tmp_path / "reports" / "fake" / "summary.json").read_text())
    assert [e["component"] for e in summary["events"]] == ["registry"], "the summary page names the dead component"


# ----------------------------------------------------------------------------------------------
# watch


class _FakeHandle(Handle):
    provider = "fake"

    def __init__(self, stack, health):
        super().__init__(stack)
        self._health = health

    def health(self):
        return self._health

    def logs(self, component):
        return "a\nb\nc\n"


def test_watch_records_each_death_once(tmp_path):
    st = Stack.load(_fake_stack(tmp_path))
    handle = _FakeHandle(st, {"registry": Health(False, "exited (signal 9)"), "etcd": Health(True)})
    first = watch.check(st, handle)
    assert [e.component for e in first] == ["registry"] and first[0].what == "exited (signal 9)"
    assert watch.check(st, handle) == [], "a death is recorded once"
    assert watch.events(st)[0].line().startswith("registry exited (signal 9) at ")


def test_watch_notices_a_restart(tmp_path):
    st = Stack.load(_fake_stack(tmp_path))
    seen = {"kyverno": 0}
    handle = _FakeHandle(st, {"kyverno": Health(True, restarts=1)})
    evs = watch.check(st, handle, seen=seen)
    assert [(e.component, e.what) for e in evs] == [("kyverno", "restarted")]


# ----------------------------------------------------------------------------------------------
# teardown


def test_teardown_runs_every_step_in_reverse_whatever_is_raised():
    order = []
    td = Teardown()
    td.add("first", lambda: order.append("first"))
    td.add("boom", lambda: (_ for _ in ()).throw(RuntimeError("inside")))
    td.add("interrupted", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    td.add("last", lambda: order.append("last"))
    done = td.run()
    assert order == ["last", "first"]
    assert [d["step"] for d in done] == ["last", "interrupted", "boom", "first"]
    assert done[2]["error"].startswith("RuntimeError: inside")
    assert td.run() == done, "a second run does nothing more (idempotent)"


def test_interrupts_wait_for_teardown():
    with interrupts_deferred() as pending:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # Python runs the handler at the next bytecode boundary
    assert pending == [signal.SIGINT, signal.SIGINT]


# ----------------------------------------------------------------------------------------------
# small judgements


def _resp(status: int, body: bytes, ctype: str = "application/json") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = ctype
    r.request = requests.Request("GET", "http://r/v2/x/referrers/sha256:00").prepare()
    return r


def test_referrers_404_for_an_existing_manifest_means_no_api():
    from suites.oci.helpers import referrers_api_absent

    oci_body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}'
    assert referrers_api_absent(_resp(404, oci_body)), "a 404 for an existing manifest means the API is absent, whatever the body"
    assert referrers_api_absent(_resp(404, oci_body), subject_exists=False) is None, "for a missing subject it is the endpoint answering"
    assert referrers_api_absent(_resp(200, b'{"schemaVersion":2,"manifests":[]}')) is None


def test_htpasswd_holds_robots_only():
    sc = parse_scenario({"name": "x", "identities": {"groups": ["g"], "robots": [{"name": "ci-robot"}], "humans": [{"name": "alice"}]}})
    text = reg.robots_htpasswd(sc, {"ci-robot": "pw-123456", "pocket-id:api-key": "k-123456", "oidc:zot": "s-123456", "alice": "a-123456"})
    assert [ln.split(":")[0] for ln in text.splitlines()] == ["ci-robot"]


def test_narrowed_scenario_starts_only_what_the_suites_need():
    sc = parse_scenario({"name": "x", "components": {"kubernetes": {}, "admission": {}, "signer": {}, "identity": {}},
                         "suites": ["oci", "oidc", "admission"]})
    oci = sc.for_suites({"oci"})
    assert oci.suites == ["oci"]
    assert (oci.components.kubernetes, oci.components.admission, oci.components.identity) == (None, None, None)
    adm = sc.for_suites({"admission"})
    assert adm.components.kubernetes is not None and adm.components.identity is None


def test_redaction_keeps_the_failure_structure(tmp_path):
    """JUnit's message is pytest's crash line: redaction must not flatten the failure into text."""
    (tmp_path / "test_s.py").write_text(
        "from labgate import redact\nS = 'sekrit-' + 'value-42'\nredact.register(S, 'pw')\n"
        "def test_x():\n    assert False, 'the answer named ' + S\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_s.py"), "-p", "fixtures.plugin", "-p", "no:cacheprovider",
                    f"--junitxml={tmp_path / 'j.xml'}", "--rootdir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    junit = (tmp_path / "j.xml").read_text()
    assert 'message="AssertionError: the answer named &lt;redacted:pw&gt;' in junit, junit[:800]
    assert "sekrit-value-42" not in junit
    redact.clear()
