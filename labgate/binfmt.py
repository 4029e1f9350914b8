"""Running another architecture's binaries here: binfmt_misc and Debian's qemu-user-static.

With a ``qemu-aarch64`` handler registered (flag F: the interpreter is opened at registration, so
it works inside containers too), the kernel runs linux/arm64 executables through qemu. The harness
mounts binfmt_misc when it is not mounted, registers the handler from Debian's
/usr/lib/binfmt.d/qemu-aarch64.conf when it is missing, records what it did, and at teardown
removes exactly that: a handler (or mount) that was there before is left alone. The reaper removes
what a killed run registered.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

from labgate import toolchain
from labgate.errors import StackError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
HANDLERS = {"arm64": "qemu-aarch64"}


def _records() -> Path:
    return toolchain.cache_root() / "binfmt"


def handler_state(arch: str) -> str:
    """'enabled', 'disabled' or '' (not registered)."""
    f = BINFMT / HANDLERS[arch]
    try:
        return f.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def ensure(arch: str, run_id: str, progress: Callable[[str], None] = print) -> Callable[[], None] | None:
    """Make ``arch`` executables runnable here; returns the undo of what was done (None: nothing was)."""
    if arch not in HANDLERS:
        raise StackError(f"arch: {arch}: no emulation for it here (known: {', '.join(HANDLERS)})")
    mounted = False
    if not (BINFMT / "register").exists():
        if os.geteuid() != 0:
            raise StackError(f"arch: {arch}: binfmt_misc is not mounted and mounting it needs root",
                             fix="sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc")
        out = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True)
        if out.returncode != 0:
            raise StackError(f"arch: {arch}: cannot mount binfmt_misc: {out.stderr.strip()}")
        mounted = True
    registered = False
    if handler_state(arch) != "enabled":
        qemu = toolchain.install("qemu-user-static")
        if not qemu.available:
            raise StackError(f"arch: {arch}: {qemu.reason}")
        conf = Path("/usr/lib/binfmt.d") / f"{HANDLERS[arch]}.conf"
        if not conf.exists():
            raise StackError(f"arch: {arch}: {conf} is missing (fix: apt-get install --reinstall qemu-user-static)")
        progress(f"[arch] registering the {HANDLERS[arch]} binfmt handler (qemu-user-static)")
        try:
            (BINFMT / "register").write_text(conf.read_text().strip() + "\n")
        except OSError as exc:
            raise StackError(f"arch: {arch}: cannot register the binfmt handler: {exc.strerror}") from None
        registered = True
    if not (mounted or registered):
        return None
    record = _records() / f"{run_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": run_id, "arch": arch, "registered": registered, "mounted": mounted}))
    return lambda: undo(record)


def undo(record: Path) -> None:
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    if info.get("registered"):
        f = BINFMT / HANDLERS[info["arch"]]
        if f.exists():
            f.write_text("-1\n")
    if info.get("mounted"):
        subprocess.run(["umount", str(BINFMT)], capture_output=True)
    record.unlink(missing_ok=True)


def reap(alive_runs: set[str]) -> list[str]:
    """Undo what runs that are gone registered; returns what was removed."""
    said = []
    d = _records()
    for record in sorted(d.glob("*.json")) if d.is_dir() else []:
        if record.stem in alive_runs:
            continue
        undo(record)
        said.append(f"binfmt handler registered by run {record.stem}")
    return said
