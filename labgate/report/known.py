"""Known issues: a quarantine of expected failures, each with its evidence, owner and expiry.

File: suites/known-issues.yaml. An entry excuses a failure only when the failure matches its
``evidence`` (a regular expression searched in ``<ExceptionType>: <message>``); any other failure
of the same test is a plain failure. A known issue that stops failing turns the test red (strict),
so the entry is removed rather than kept. An entry past its ``expires`` date fails the run, naming
it: someone (its ``owner``) re-checks the deviation and renews or removes it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from labgate.errors import ScenarioError

KNOWN_FILE = Path(os.environ.get("LABGATE_KNOWN_ISSUES") or Path(__file__).resolve().parents[2] / "suites" / "known-issues.yaml")
MATCH_KEYS = {"registry", "provider", "version", "policy_kind"}
REQUIRED = ("id", "tests", "reason", "reference", "evidence", "owner", "expires")
ENTRY_KEYS = set(REQUIRED) | {"match"}
SOON_DAYS = 14


@lru_cache(maxsize=4)
def load(path: str = str(KNOWN_FILE)) -> tuple[dict[str, Any], ...]:
    import yaml

    p = Path(path)
    if not p.exists():
        return ()
    data = yaml.safe_load(p.read_text()) or []
    if not isinstance(data, list):
        raise ScenarioError(f"{p}: expected a list of known issues")
    seen: set[str] = set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ScenarioError(f"{p}: [{i}]: expected a mapping")
        extra = set(entry) - ENTRY_KEYS
        if extra:
            raise ScenarioError(f"{p}: [{i}].{sorted(extra)[0]}: unknown key (known keys: {', '.join(sorted(ENTRY_KEYS))})")
        for key in REQUIRED:
            if key not in entry:
                raise ScenarioError(f"{p}: [{i}].{key}: required field is missing")
        if entry["id"] in seen:
            raise ScenarioError(f"{p}: [{i}].id: {entry['id']!r} is listed twice")
        seen.add(entry["id"])
        bad = set(entry.get("match") or {}) - MATCH_KEYS
        if bad:
            raise ScenarioError(f"{p}: [{i}].match.{sorted(bad)[0]}: unknown key")
        try:
            re.compile(str(entry["evidence"]))
        except re.error as exc:
            raise ScenarioError(f"{p}: [{i}].evidence: not a regular expression: {exc}") from None
        expires = entry["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                expires = None
        if not isinstance(expires, dt.date):
            raise ScenarioError(f"{p}: [{i}].expires: expected a date (YYYY-MM-DD)")
        entry["expires"] = expires
    return tuple(data)


def state(entry: dict[str, Any], today: dt.date | None = None) -> str:
    today = today or dt.date.today()
    if entry["expires"] < today:
        return "expired"
    if (entry["expires"] - today).days <= SOON_DAYS:
        return "expires soon"
    return "active"


def expired(today: dt.date | None = None, path: str = str(KNOWN_FILE)) -> list[dict[str, Any]]:
    return [e for e in load(path) if state(e, today) == "expired"]


def applies(entry: dict[str, Any], nodeid: str, facts: dict[str, str]) -> bool:
    """``match.version`` is a regular expression searched in the registry's reported version;
    the other keys compare equal."""
    for key, want in (entry.get("match") or {}).items():
        if key == "version":
            if not re.search(str(want), facts.get("version", "")):
                return False
        elif facts.get(key) != want:
            return False
    return any(fnmatch.fnmatchcase(nodeid, pat) for pat in entry["tests"])


def facts_of(stack: Any, policy_kind: str = "") -> dict[str, str]:
    facts = {"registry": stack.registry_kind, "provider": stack.provider, "policy_kind": policy_kind}
    for c in stack.components:
        if c.name == "registry":
            facts["version"] = c.reported_version or c.version
    return facts


def entries_for(nodeid: str, stack: Any, policy_kind: str = "") -> list[dict[str, Any]]:
    facts = facts_of(stack, policy_kind)
    return [e for e in load() if applies(e, nodeid, facts)]


def evidence_matches(entry: dict[str, Any], exc_type: str, message: str) -> bool:
    return re.search(str(entry["evidence"]), f"{exc_type}: {message}", re.S) is not None


def reason(entry: dict[str, Any]) -> str:
    return f"known issue {entry['id']}: {entry['reason']} ({entry['reference']})"


def listing(today: dt.date | None = None, path: str = str(KNOWN_FILE)) -> list[dict[str, str]]:
    """`labgate known list`: one row per entry."""
    return [{"id": e["id"], "state": state(e, today), "expires": e["expires"].isoformat(), "owner": str(e["owner"]),
             "tests": str(len(e["tests"])), "match": ", ".join(f"{k}={v}" for k, v in (e.get("match") or {}).items()) or "-",
             "reference": " ".join(str(e["reference"]).split())}
            for e in load(path)]
