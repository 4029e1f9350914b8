"""The component watcher: every component is watched for the whole run.

A component that exits or restarts without a test asking for it (through an ability) is an event,
kept in ``<run dir>/events.jsonl`` so that every process of the run (xdist workers too) sees it.
Once there is one, every later failure is about a stack that is no longer the one under test: its
verdict is *error*, and its message starts with what happened, for example::

    error: registry exited (signal 9) at 06:12:03; its last log lines: ...

The controller polls the provider's health view a few times a second; a process that judges a
failure also looks at once (so a death a moment before the failure is never missed).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from labgate import redact
from labgate.stack import Stack

EVENTS = "events.jsonl"
INTERVAL = 0.25


@dataclass
class Event:
    component: str
    at: float  # unix time
    what: str  # "exited (signal 9)", "restarted (OOMKilled)", "stopped answering"
    log_tail: str = ""

    def line(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        tail = f"; its last log lines: {self.log_tail}" if self.log_tail else ""
        return f"{self.component} {self.what} at {when}{tail}"


def _file(stack: Stack) -> Path | None:
    return Path(stack.run_dir) / EVENTS if stack.run_dir and Path(stack.run_dir).is_dir() else None


def events(stack: Stack) -> list[Event]:
    f = _file(stack)
    if f is None:
        return []
    try:
        lines = f.read_text().splitlines()
    except OSError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(Event(**json.loads(ln)))
        except (ValueError, TypeError):
            continue
    return out


def record(stack: Stack, event: Event) -> None:
    """Append one event (one write of one line: appends from several processes do not interleave)."""
    f = _file(stack)
    if f is None:
        return
    line = (json.dumps(asdict(event)) + "\n").encode()
    fd = os.open(str(f), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _tail(handle, component: str, n: int = 5) -> str:
    try:
        text = handle.logs(component)
    except Exception:  # noqa: BLE001 - a log we cannot read must not hide the event
        return ""
    lines = [ln.strip()[:200] for ln in text.splitlines() if ln.strip()][-n:]
    return redact.redact(" | ".join(lines))


def check(stack: Stack, handle, describe: Callable[[str], str | None] | None = None,
          seen: dict[str, int] | None = None) -> list[Event]:
    """Look at every component once; record and return the new events."""
    known = {e.component for e in events(stack)}
    new: list[Event] = []
    try:
        health = handle.health()
    except Exception:  # noqa: BLE001 - the watcher never breaks a run
        return new
    for name, h in health.items():
        restarted = seen is not None and h.restarts > seen.get(name, h.restarts)
        if seen is not None:
            seen[name] = h.restarts
        if name in known and not restarted:
            continue
        if not h.alive or restarted:
            what = (describe(name) if describe else None) or h.detail or ("restarted" if restarted else "exited")
            ev = Event(name, time.time(), what, _tail(handle, name))
            record(stack, ev)
            new.append(ev)
    return new


class Watcher:
    """Polls in a thread of the controller from stack-up to teardown."""

    def __init__(self, stack: Stack, handle, describe: Callable[[str], str | None] | None = None, interval: float = INTERVAL):
        self.stack, self.handle, self.describe, self.interval = stack, handle, describe, interval
        self._stop = threading.Event()
        self._seen: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="labgate-watcher", daemon=True)

    def start(self) -> "Watcher":
        try:
            for name, h in self.handle.health().items():
                self._seen[name] = h.restarts
        except Exception:  # noqa: BLE001
            pass
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            check(self.stack, self.handle, self.describe, self._seen)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def explain_failure(stack: Stack) -> str | None:
    """When a component has died (or died just now), the line every later failure starts with."""
    evs = events(stack)
    if not evs:
        from labgate import abilities

        try:
            handle = abilities.of(stack)
        except Exception:  # noqa: BLE001
            return None
        if any(not h.alive for h in _safe_health(handle).values()):
            # the controller's watcher knows how the process ended; give it a moment to say so
            deadline = time.monotonic() + 2 * INTERVAL + 0.5
            while time.monotonic() < deadline and not events(stack):
                time.sleep(0.05)
            evs = events(stack) or check(stack, handle)
    if not evs:
        return None
    return "error: " + "; ".join(e.line() for e in evs)


def _safe_health(handle) -> dict:
    try:
        return handle.health()
    except Exception:  # noqa: BLE001
        return {}
