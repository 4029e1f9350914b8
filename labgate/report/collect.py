"""Collects verdicts and timings of a run and writes reports/<run-id>/.

Verdicts follow the OCI conformance program: pass; fail (a MUST broken); warn (a SHOULD broken);
unsupported (optional); known (a strict expected failure from suites/known-issues.yaml); skip (with
reason and fix); error (the harness or the infrastructure broke).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgate import redact
from labgate.scenario import Scenario

SUITE_PREFIX = "suites/"


def suite_of(nodeid: str) -> str | None:
    if not nodeid.startswith(SUITE_PREFIX):
        return None
    parts = nodeid[len(SUITE_PREFIX):].split("/")
    return parts[0] if len(parts) > 1 else None


@dataclass
class TestRecord:
    nodeid: str
    suite: str | None
    verdict: str = "pass"
    message: str = ""
    duration: float = 0.0
    start: float = 0.0
    stop: float = 0.0
    spec: str = ""
    area: str = ""
    should: list[str] = field(default_factory=list)
    beyond_official: bool = False
    case: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # admission rows, timeline events, lock_wait_s


def _short(longrepr: Any) -> str:
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    lines = str(longrepr).strip().splitlines()
    errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    if errors:
        return " ".join(errors[:3])[:1000]
    return lines[-1] if lines else ""


class RunRecorder:
    def __init__(self, *, scenario: Scenario, report_dir: Path, run_id: str):
        self.scenario = scenario
        self.report_dir = Path(report_dir)
        self.run_id = run_id
        self.tests: dict[str, TestRecord] = {}
        self.phases: dict[str, float] = {}
        self.notes: list[str] = []
        self.stack: Any = None
        self.stack_error = ""
        self.exitstatus: int | None = None
        self.started = time.time()
        self.problems: list[str] = []  # what fails the run although every test may pass (expired quarantine)
        self.events: list[dict[str, Any]] = []  # components that died or restarted (labgate.watch)
        self._allure: AllureBuild | None = None  # the HTML report being built beside the teardown
        self.interrupted = False

    def phase(self, name: str, seconds: float) -> None:
        self.phases[name] = round(seconds, 3)

    # ------------------------------------------------------------------------------------------
    def add_report(self, report: Any) -> None:
        rec = self.tests.setdefault(report.nodeid, TestRecord(report.nodeid, suite_of(report.nodeid)))
        rec.duration += getattr(report, "duration", 0.0) or 0.0
        if report.when == "call" or not rec.start:
            rec.start = rec.start or getattr(report, "start", 0.0)
        rec.stop = max(rec.stop, getattr(report, "stop", 0.0))
        forced = ""
        for key, value in getattr(report, "user_properties", []):
            if key == "spec":
                rec.spec = str(value)
            elif key == "area":
                rec.area = str(value)
            elif key == "should" and value not in rec.should:
                rec.should.append(str(value))
            elif key == "beyond_official":
                rec.beyond_official = True
            elif key == "case":
                rec.case = str(value)
            elif key == "verdict":
                forced = str(value)
            elif key == "lock_wait":
                rec.extra["lock_wait_s"] = float(value)
            elif key in ("admission", "timeline", "access", "oidc"):
                rows = rec.extra.setdefault(key, [])
                row = json.loads(value)
                if row not in rows:
                    rows.append(row)
        msg = redact.redact(_short(report.longrepr))
        if hasattr(report, "wasxfail"):
            if report.skipped:
                rec.verdict, rec.message = "known", redact.redact(str(report.wasxfail))
            elif report.passed:  # strict xfail that passed is reported as failed by pytest
                rec.verdict, rec.message = "fail", "known issue no longer fails: " + redact.redact(str(report.wasxfail))
            return
        if report.failed and forced == "error":
            rec.verdict, rec.message = "error", msg
        elif report.failed:
            if report.when == "call":
                rec.verdict, rec.message = "fail", msg
            elif rec.verdict not in ("fail",):
                rec.verdict, rec.message = "error", f"{report.when}: {msg}"
        elif report.skipped:
            if msg.startswith("unsupported (optional)"):
                rec.verdict, rec.message = "unsupported", msg
            else:
                rec.verdict, rec.message = "skip", msg
        elif report.when == "call" and forced == "not-enforced":
            rec.verdict, rec.message = "not-enforced", next((str(v) for k, v in report.user_properties if k == "not_enforced"), "")
        elif report.when == "call" and rec.verdict == "pass" and rec.should:
            rec.verdict, rec.message = "warn", "; ".join(rec.should)
        elif report.when == "teardown" and rec.verdict == "pass" and rec.should:
            rec.verdict, rec.message = "warn", "; ".join(rec.should)

    # ------------------------------------------------------------------------------------------
    def e2e_tests(self) -> list[TestRecord]:
        return [t for t in self.tests.values() if t.suite]

    def e2e_verdict(self) -> str | None:
        """A reason the run must fail although pytest may think it passed."""
        if self.stack_error:
            return self.stack_error
        if self.problems:
            for p in self.problems:
                if p not in self.notes:
                    self.notes.append(p)
            return self.problems[0]
        tests = self.e2e_tests()
        if not tests:
            self.notes.append("no end-to-end test ran: a run that proves nothing is a failure")
            return self.notes[-1]
        ran = [t for t in tests if t.verdict not in ("skip",)]
        if not ran:
            self.notes.append(f"every end-to-end test skipped ({len(tests)} of them): a run that proves nothing is a failure")
            return self.notes[-1]
        return None

    def suites(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in self.e2e_tests():
            s = out.setdefault(t.suite or "", {"counts": {}, "seconds": 0.0, "start": None, "stop": 0.0})
            s["counts"][t.verdict] = s["counts"].get(t.verdict, 0) + 1
            s["seconds"] += t.duration
            if t.start:
                s["start"] = t.start if s["start"] is None else min(s["start"], t.start)
            s["stop"] = max(s["stop"], t.stop)
        for s in out.values():
            s["wall"] = round(s["stop"] - s["start"], 3) if s["start"] else round(s["seconds"], 3)
            s["seconds"] = round(s["seconds"], 3)
        return out

    def result(self) -> str:
        if self.exitstatus is None or self.interrupted:
            return "interrupted"
        return "passed" if self.exitstatus == 0 else "failed"

    # ------------------------------------------------------------------------------------------
    def over_budget(self) -> list[str]:
        """Phases that took longer than the scenario's budget for them (a warning each)."""
        out = []
        for phase, budget in (self.scenario.budgets or {}).items():
            took = self.phases.get(phase)
            if took is not None and took > budget:
                out.append(f"warn: phase {phase} took {took:.1f}s, over its budget of {budget:g}s (scenario budgets)")
        return out

    def to_dict(self) -> dict[str, Any]:
        stack = self.stack.public_dict() if self.stack is not None else None
        for name, secs in self.suites().items():
            self.phases[f"suite:{name}"] = secs["wall"]
        for line in self.over_budget():
            if line not in self.notes:
                self.notes.append(line)
        return {
            "run_id": self.run_id,
            "scenario": {"name": self.scenario.name, "file": self.scenario.source, "suites": list(self.scenario.suites)},
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started)),
            "exitstatus": self.exitstatus,
            "result": self.result(),
            "stack_error": self.stack_error,
            "notes": self.notes,
            "problems": self.problems,
            "events": self.events,
            "stack": stack,
            "phases": self.phases,
            "budgets": dict(self.scenario.budgets or {}),
            "suites": self.suites(),
            "tests": [t.__dict__ for t in sorted(self.tests.values(), key=lambda t: t.nodeid)],
        }

    def write(self, *, allure_html: bool = True) -> Path:
        from labgate.report import summary

        self.report_dir.mkdir(parents=True, exist_ok=True)
        if allure_html:
            build = self._allure or self.start_allure_html()
            self._allure = None
            note = build.finish()
            self.phase("allure-html", build.seconds)
            if note:
                self.notes.append(note)
        else:
            self._write_allure_environment()
        data = self.to_dict()
        peer = self.report_dir / "peer-conformance.json"
        if peer.exists():
            data["peer"] = json.loads(peer.read_text())
        text = redact.redact(json.dumps(data, indent=2, default=str))
        (self.report_dir / "summary.json").write_text(text)
        (self.report_dir / "index.html").write_text(summary.render(json.loads(text)))
        return self.report_dir / "index.html"

    def start_allure_html(self) -> "AllureBuild":
        """Start building the Allure HTML report (once the tests have run; once): it runs beside
        the teardown, and write() waits for it."""
        if self._allure is None:
            self._write_allure_environment()
            self._allure = AllureBuild(self.report_dir)
        return self._allure

    def _write_allure_environment(self) -> None:
        results = self.report_dir / "allure-results"
        if self.stack is None or not results.exists():
            return
        lines = [f"{k}={v}" for k, v in self.stack.fingerprint().items()]
        (results / "environment.properties").write_text(redact.redact("\n".join(lines) + "\n"))


class AllureBuild:
    """The Allure HTML report built offline with the kept generator, in its own process."""

    def __init__(self, report_dir: Path):
        from labgate import toolchain

        self.t0 = time.monotonic()
        self.seconds = 0.0
        self.proc: subprocess.Popen | None = None
        self.note = ""
        self.out = report_dir / "allure-report"
        results = report_dir / "allure-results"
        if not results.exists():
            self.note = "Allure HTML not generated: no allure-results (is allure-pytest installed?)"
            return
        tool = toolchain.resolve("allure")
        if not tool.available:
            self.note = f"Allure HTML not generated: {tool.reason}"
            return
        shutil.rmtree(self.out, ignore_errors=True)
        env = {**os.environ, "ALLURE_NO_ANALYTICS": "1", "NO_COLOR": "1"}
        try:
            self.proc = subprocess.Popen([tool.path, "generate", str(results), "-o", str(self.out)], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env)
        except OSError as exc:
            self.note = f"Allure HTML not generated: {exc}"

    def finish(self, timeout: float = 300) -> str:
        """Wait for the generator; a note when there is no report."""
        if self.proc is not None:
            try:
                output, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                self.note = f"Allure HTML not generated: allure took more than {timeout:.0f}s"
            else:
                if self.proc.returncode != 0 or not (self.out / "index.html").exists():
                    self.note = f"Allure HTML not generated: allure exited {self.proc.returncode}: {redact.redact((output or '')[-300:])}"
                else:
                    strip_analytics(self.out / "index.html")
            self.proc = None
        self.seconds = time.monotonic() - self.t0
        return self.note


def strip_analytics(index: Path) -> None:
    """Allure 3's page references Google Tag Manager; a reviewer's browser must not call out."""
    import re

    text = index.read_text()
    text = re.sub(r"<script[^>]*googletagmanager[^>]*>\s*</script>", "", text)
    text = re.sub(r"<script>[^<]*(gtag|dataLayer)[^<]*</script>", "", text)
    index.write_text(text)
