"""Checkpoints: where a run is, for tools and tests that observe it from outside.

When ``LABGATE_CHECKPOINT_DIR`` is set, the harness writes ``<dir>/<phase>.json`` as it reaches
each phase (``component-started-registry``, ``stack-ready``, ``suite-started-oci``, ...), with the
pids and ports involved. When ``LABGATE_CHECKPOINT_HOLD`` names a phase, the run waits there (up to
``LABGATE_CHECKPOINT_HOLD_SECONDS``, default 120) so that an interruption can be delivered at exactly
that point: this is how the Ctrl-C tests prove teardown during start-up, during a suite and during
teardown itself. Creating ``<dir>/<phase>.release`` ends the wait early.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def reached(phase: str, **info: object) -> None:
    d = os.environ.get("LABGATE_CHECKPOINT_DIR")
    if d:
        p = Path(d)
        p.mkdir(parents=True, exist_ok=True)
        tmp = p / f".{phase}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"phase": phase, "pid": os.getpid(), **info}))
        tmp.replace(p / f"{phase}.json")
    if os.environ.get("LABGATE_CHECKPOINT_HOLD") == phase:
        deadline = time.monotonic() + float(os.environ.get("LABGATE_CHECKPOINT_HOLD_SECONDS", "120"))
        release = Path(d) / f"{phase}.release" if d else None
        while time.monotonic() < deadline and not (release and release.exists()):
            time.sleep(0.05)
