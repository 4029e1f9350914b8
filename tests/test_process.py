"""Unit tests of labgate.process: stopping a process gracefully and crashing it."""

from __future__ import annotations

import subprocess
import sys
import time

from labgate.process import pid_alive, stop_pid

# a child that notes SIGTERM in a file and then keeps running until it is killed
CHILD = """
import signal, sys, time
def note(*_):
    open(sys.argv[1], "w").write("term")
signal.signal(signal.SIGTERM, note)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _child(tmp_path):
    mark = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(mark)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, mark


def test_graceful_stop_sends_sigterm_then_kills_after_the_timeout(tmp_path):
    proc, mark = _child(tmp_path)
    t0 = time.monotonic()
    stop_pid(proc.pid, timeout=0.5, proc=proc)
    assert proc.wait(timeout=5) is not None and not pid_alive(proc.pid)
    assert mark.read_text() == "term", "a graceful stop lets the process see SIGTERM first"
    assert time.monotonic() - t0 >= 0.5, "a process that ignores SIGTERM is given its timeout before SIGKILL"


def test_crash_kills_at_once_without_sigterm(tmp_path):
    proc, mark = _child(tmp_path)
    t0 = time.monotonic()
    stop_pid(proc.pid, timeout=10, proc=proc, graceful=False)
    assert proc.wait(timeout=5) == -9
    assert not mark.exists(), "a crash gives the process no chance to shut down"
    assert time.monotonic() - t0 < 2
