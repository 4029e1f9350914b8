"""The reaper: remove what dead runs left behind.

Every run registers itself in ``<cache>/runs/<run-id>.json`` (owner pid and its start time, the
state file, the run directory) as soon as its run directory exists, and unregisters at teardown. A
run whose owner is gone (SIGKILL, a crash, a power cut of the terminal) leaves its entry; the
reaper, run at the start of every run and by ``labgate stack down --all``, tears such a run down
through its provider (processes by pid and start time, Kyverno's webhook configurations, a kind
cluster and the dockerd labgate started for it) and removes its run directory, saying what it
removed. Stacks started with ``labgate stack up`` have no owner; only ``--all`` removes them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from labgate import toolchain
from labgate.process import pid_alive
from labgate.stack import Stack, proc_ticks


def _runs() -> list[tuple[Path, dict]]:
    d = toolchain.cache_root() / "runs"
    out = []
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append((f, json.loads(f.read_text())))
        except (OSError, ValueError):
            out.append((f, {}))
    return out


def owner_alive(entry: dict) -> bool:
    pid = int(entry.get("owner_pid") or 0)
    return bool(pid) and pid_alive(pid) and (not entry.get("owner_ticks") or proc_ticks(pid) == entry["owner_ticks"])


def reap(*, include_detached: bool = False, keep: str = "") -> list[str]:
    """Tear down every registered run whose owner is gone (and, with ``include_detached``, every
    stack `labgate stack up` started). Returns one line per run removed."""
    from labgate import abilities

    said: list[str] = []
    for f, entry in _runs():
        run_id = entry.get("run_id") or f.stem
        if run_id == keep:
            continue
        detached = bool(entry.get("detached"))
        if detached and not include_detached:
            continue
        if not detached and owner_alive(entry):
            continue
        why = "started by `labgate stack up`" if detached else f"its owner (pid {entry.get('owner_pid')}) is gone"
        removed: list[str] = []
        state = entry.get("state_file") or ""
        stack = None
        if state and Path(state).exists():
            with contextlib.suppress(Exception):
                stack = Stack.load(state)
        if stack is not None:
            try:
                done = abilities.of(stack).teardown()
                removed += [str(d["step"]) + (f" (failed: {d['error']})" if d.get("error") else "") for d in done]
            except Exception as exc:  # noqa: BLE001 - the reaper removes what it can and says what it could not
                removed.append(f"teardown failed: {exc}")
        run_dir = entry.get("run_dir") or ""
        if run_dir and Path(run_dir).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(f"run directory {run_dir}")
        with contextlib.suppress(OSError):
            f.unlink()
        said.append(f"run {run_id} ({entry.get('provider', '?')}; {why}): removed " + (", ".join(removed) or "its registration"))
    from labgate import binfmt

    alive = {entry.get("run_id") or f.stem for f, entry in _runs()}
    said += [f"{line}: removed" for line in binfmt.reap(alive | {keep})]
    return said
