"""A fair readers-writer lock across pytest-xdist workers (fcntl locks in the run directory).

Every end-to-end test holds the stack *shared*; a test that disrupts the stack (stops the registry
to prove behaviour during an outage) holds it *exclusive*, so no other test sees the outage. A
turnstile lock keeps a waiting writer from being starved by a stream of readers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


def _open(d: str, name: str) -> int:
    return os.open(str(Path(d) / name), os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _hold(run_dir: str, mode: int) -> Iterator[None]:
    """Pass the turnstile, then take the stack lock in ``mode``. A reader lets the turnstile go at
    once; a writer keeps it, so readers that arrive after it wait behind it."""
    turn, main = _open(run_dir, ".turnstile.lock"), _open(run_dir, ".stack.lock")
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        fcntl.flock(main, mode)
        if mode == fcntl.LOCK_SH:
            fcntl.flock(turn, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(main, fcntl.LOCK_UN)
        fcntl.flock(turn, fcntl.LOCK_UN)
        os.close(turn)
        os.close(main)


def shared(run_dir: str) -> contextlib.AbstractContextManager[None]:
    return _hold(run_dir, fcntl.LOCK_SH)


def exclusive(run_dir: str) -> contextlib.AbstractContextManager[None]:
    return _hold(run_dir, fcntl.LOCK_EX)
