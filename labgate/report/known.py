"""Known issues: expected failures kept in a versioned file, each with its reason and reference.

They are applied as strict xfail: a known issue that stops failing (fixed upstream) turns the test
red, so the entry is removed rather than silently kept. File: suites/known-issues.yaml.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from labgate.errors import ScenarioError

KNOWN_FILE = Path(__file__).resolve().parents[2] / "suites" / "known-issues.yaml"
MATCH_KEYS = {"registry", "provider", "version"}
ENTRY_KEYS = {"id", "match", "tests", "reason", "reference"}


@lru_cache(maxsize=4)
def load(path: str = str(KNOWN_FILE)) -> tuple[dict[str, Any], ...]:
    p = Path(path)
    if not p.exists():
        return ()
    data = yaml.safe_load(p.read_text()) or []
    if not isinstance(data, list):
        raise ScenarioError(f"{p}: expected a list of known issues")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ScenarioError(f"{p}: [{i}]: expected a mapping")
        extra = set(entry) - ENTRY_KEYS
        if extra:
            raise ScenarioError(f"{p}: [{i}].{sorted(extra)[0]}: unknown key")
        for key in ("id", "tests", "reason", "reference"):
            if key not in entry:
                raise ScenarioError(f"{p}: [{i}].{key}: required field is missing")
        bad = set(entry.get("match") or {}) - MATCH_KEYS
        if bad:
            raise ScenarioError(f"{p}: [{i}].match.{sorted(bad)[0]}: unknown key")
    return tuple(data)


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


def marks_for(nodeid: str, stack: Any) -> list[pytest.MarkDecorator]:
    facts = {"registry": stack.registry_kind, "provider": stack.provider}
    for c in stack.components:
        if c.name == "registry":
            facts["version"] = c.reported_version or c.version
    out = []
    for entry in load():
        if applies(entry, nodeid, facts):
            out.append(pytest.mark.xfail(strict=True, reason=f"known issue {entry['id']}: {entry['reason']} ({entry['reference']})"))
    return out
