"""Planned disruptions for suites that prove behaviour during an outage (e.g. "registry down").

A component is stopped and later started again with the same command, ports and data; the state
file records the new pid so that teardown stops it whatever happens to the test.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import requests

from labgate.errors import StackError
from labgate.process import Managed, stop_pid, wait_until
from labgate.stack import Stack


def _current(stack: Stack, name: str):
    """The component as the state file has it now: another worker may have restarted it."""
    fresh = Stack.load(stack.state_file).component(name)
    c = stack.component(name)
    c.pid = fresh.pid
    return c


def stop(stack: Stack, name: str) -> None:
    c = _current(stack, name)
    stop_pid(c.pid)
    if requests_up(c.url):
        raise StackError(f"{name} still answers at {c.url} after it was stopped")
    c.pid = 0
    stack.save(stack.state_file)


def requests_up(url: str) -> bool:
    try:
        requests.get(url + "/v2/", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def start(stack: Stack, name: str, health_path: str = "/v2/", timeout: float = 60.0) -> None:
    c = _current(stack, name)
    if not c.cmd:
        raise StackError(f"{name}: its start command is not recorded; it cannot be restarted by this provider")
    m = Managed(name, c.cmd, Path(c.log)).start()
    c.pid = m.pid
    stack.save(stack.state_file)

    def up() -> bool:
        return requests.get(c.url + health_path, timeout=2).status_code in (200, 401)

    wait_until(up, timeout=timeout, what=f"{name} restart", abort=m.exited)


@contextlib.contextmanager
def down(stack: Stack, name: str) -> Iterator[None]:
    """``with disrupt.down(stack, "registry"): ...`` — the component is back afterwards, even on failure."""
    stop(stack, name)
    try:
        yield
    finally:
        start(stack, name)


__all__ = ["stop", "start", "down"]


@contextlib.contextmanager
def revoked(stack: Stack, account: str, *, how: str = "in-place") -> Iterator[None]:
    """Remove ``account`` from the registry's htpasswd file for the duration, then restore it.

    ``how``: "in-place" rewrites the file (what an editor or `htpasswd -D` does); "replace" writes a
    new file and renames it over the old one (what Kubernetes does when a mounted Secret changes)."""
    path = Path(stack.registry_htpasswd)
    if not stack.registry_htpasswd or not path.exists():
        raise StackError("this stack records no htpasswd file for its registry")
    original = path.read_text()
    kept = "".join(ln for ln in original.splitlines(keepends=True) if not ln.startswith(f"{account}:"))

    def write(text: str) -> None:
        if how == "replace":
            tmp = path.with_name(path.name + ".new")
            tmp.write_text(text)
            tmp.chmod(0o600)
            tmp.replace(path)
        else:
            with open(path, "r+") as fh:
                fh.seek(0)
                fh.write(text)
                fh.truncate()

    write(kept)
    try:
        yield
    finally:
        write(original)
