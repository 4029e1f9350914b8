"""Helpers for the integration tests that start runs as subprocesses and watch their checkpoints
(labgate.checkpoint): the environment of such a run, and waiting for one of its phases."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from labgate.process import wait_until


def run_env(tmp_path: Path, run_id: str, hold: str | None = None, hold_seconds: int = 300, **extra: str) -> dict[str, str]:
    """The run's id, its checkpoint directory under ``tmp_path``, optionally a phase to hold at."""
    env = {**os.environ, "LABGATE_RUN_ID": run_id, "LABGATE_CHECKPOINT_DIR": str(tmp_path / "cp"), **extra}
    if hold:
        env["LABGATE_CHECKPOINT_HOLD"] = hold
        env["LABGATE_CHECKPOINT_HOLD_SECONDS"] = str(hold_seconds)
    env.pop("LABGATE_STATE", None)
    return env


def checkpoint(tmp_path: Path, phase: str, proc: subprocess.Popen, timeout: float, output: Path | None = None) -> dict:
    """Wait for the run to reach ``phase``; its record. Fails at once when the run ends first (with
    the end of the run's ``output``, when it went to a file)."""
    f = tmp_path / "cp" / f"{phase}.json"

    def ended() -> str | None:
        if proc.poll() is not None and not f.exists():
            tail = output.read_text(errors="replace")[-3000:] if output is not None and output.exists() else ""
            return f"the run ended (code {proc.returncode}) before reaching it" + (f"; its output ended:\n{tail}" if tail else "")
        return None

    wait_until(f.exists, timeout=timeout, what=f"checkpoint {phase}", interval=0.2, abort=ended)
    return json.loads(f.read_text())


def interrupt_held(tmp_path: Path, phase: str, proc: subprocess.Popen, times: int = 2, timeout: float = 600) -> None:
    """While the run holds at ``phase``: SIGINT ``times`` times, then release it and wait for its end."""
    import signal
    import time

    for _ in range(times):
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.3)
    (tmp_path / "cp" / f"{phase}.release").write_text("")
    proc.wait(timeout=timeout)
