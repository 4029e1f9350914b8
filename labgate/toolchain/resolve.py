"""Find or obtain a component binary: env var -> PATH -> cache -> package registries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from labgate.errors import ToolUnavailable
from labgate.toolchain.specs import TOOLS, Apt, GoInstall, GoWrapper, Npm, Tool

GO_ENV = {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def cache_root() -> Path:
    return Path(os.environ.get("LABGATE_CACHE") or Path.home() / ".cache" / "labgate")


@dataclass
class Resolved:
    name: str
    version: str  # pinned version
    available: bool
    source: str = ""  # env | PATH | cache | go | apt | npm
    path: str = ""
    reported_version: str = ""  # what the binary itself says, when it says
    reason: str = ""  # why not available
    detail: str = ""  # how it was obtained (recipe)

    def as_dict(self) -> dict:
        return asdict(self)

    def require(self) -> str:
        if not self.available:
            raise ToolUnavailable(f"{self.name}: {self.reason}")
        return self.path


def _tool_dir(t: Tool) -> Path:
    return cache_root() / "tools" / t.name / (t.version + (f"-linux-{t.goarch}" if t.goarch else ""))


def _meta(t: Tool) -> dict | None:
    f = _tool_dir(t) / "tool.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _probe_version(path: str, args: tuple[str, ...]) -> str:
    if not args:
        return ""
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    raw = (out.stdout or out.stderr).strip()
    if raw.startswith("{"):
        info: dict = {}
        for candidate in (raw, raw.splitlines()[0]):
            try:
                info = json.loads(candidate)
                break
            except ValueError:
                continue
        if info.get("gitVersion"):  # cosign version --json
            return str(info["gitVersion"])[:120]
        if "distribution-spec" in info:  # zot --version logs one JSON line
            rel = info.get("release") or info.get("commit") or "unknown"
            return f"{rel} (distribution-spec {info['distribution-spec']})"[:120]
    text = raw.splitlines()
    if not text:
        return ""
    first = text[0].split()
    if first and os.path.basename(first[0]) == os.path.basename(path):
        first = first[1:]  # "registry github.com/distribution/distribution/v3 v3.1.2" -> drop the program name
    return " ".join(first)[:120]


def _executable(p: str | Path) -> bool:
    return os.path.isfile(p) and os.access(p, os.X_OK)


def _from_cache(t: Tool) -> Resolved | None:
    meta = _meta(t)
    if not meta:
        return None
    path = meta.get("path", "")
    if meta.get("method") == "apt":
        if _executable(path) and _dpkg_version(meta.get("package", "")).startswith(meta.get("version_prefix", "~")):
            return Resolved(t.name, t.version, True, "apt", path, meta.get("reported_version", ""), detail=meta.get("detail", ""))
        return None
    if _executable(path):
        # what the binary said when it was installed (the cache is keyed by version): asking again
        # costs a process per resolve, a second for a Node program like allure
        reported = meta.get("reported_version") or _probe_version(path, t.version_args)
        return Resolved(t.name, t.version, True, "cache", path, reported, detail=meta.get("detail", ""))
    return None


def _env_override(t: Tool) -> Resolved | None:
    """The component's environment variable, when set: it is used, or it is one clear error. A
    variable naming a binary that does not work never falls back to another source."""
    env_val = os.environ.get(t.env)
    if not env_val:
        return None
    if not _executable(env_val):
        why = "does not exist" if not os.path.exists(env_val) else "is not an executable file"
        return Resolved(t.name, t.version, False, reason=f"{t.env}={env_val} {why} (fix: point {t.env} at a working {t.binary} binary, or unset it)")
    missing = [n for n in t.siblings if not _executable(Path(env_val).parent / n)]
    if missing:
        return Resolved(t.name, t.version, False, reason=(
            f"{t.env}={env_val}: {', '.join(missing)} not found next to it (fix: keep the whole build in one directory)"))
    if t.version_args:
        try:
            out = subprocess.run([env_val, *t.version_args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Resolved(t.name, t.version, False, reason=f"{t.env}={env_val} does not work: {exc} (fix: point {t.env} at a working {t.binary} binary, or unset it)")
        if out.returncode != 0 and not (out.stdout or out.stderr).strip():
            return Resolved(t.name, t.version, False, reason=(
                f"{t.env}={env_val} does not work: `{os.path.basename(env_val)} {' '.join(t.version_args)}` exited {out.returncode} "
                f"with no output (fix: point {t.env} at a working {t.binary} binary, or unset it)"))
    return Resolved(t.name, t.version, True, "env", env_val, _probe_version(env_val, t.version_args), detail=f"${t.env}")


def resolve(name: str, *, arch: str | None = None) -> Resolved:
    """Find a component (``name`` or ``name@version``) without building anything."""
    t = spec(name, arch)
    env = _env_override(t)
    if env is not None:
        return env
    for n in t.path_names if not t.goarch else ():
        found = shutil.which(n)
        if found:
            return Resolved(t.name, t.version, True, "PATH", found, _probe_version(found, t.version_args), detail="found on PATH")
    cached = _from_cache(t)
    if cached:
        return cached
    if t.prebuilt_only:
        return Resolved(t.name, t.version, False, reason=t.unavailable)
    # an apt package that is already installed counts as available without a build
    for m in t.methods:
        if isinstance(m, Apt) and _executable(m.path) and _dpkg_version(m.package).startswith(m.version_prefix):
            failed = _failure_record(t)
            if failed or not any(isinstance(x, (GoInstall, GoWrapper)) for x in t.methods):
                return Resolved(t.name, t.version, True, "apt", m.path, _probe_version(m.path, t.version_args), detail=m.describe() + (f"; {failed}" if failed else ""))
    failed = _failure_record(t)
    if failed:
        return Resolved(t.name, t.version, False, reason=failed)
    recipes = " or ".join(m.describe() for m in t.methods)
    return Resolved(t.name, t.version, False, reason=f"not installed yet: `labgate tools install {t.name}` obtains it ({recipes})")


def resolve_all() -> list[Resolved]:
    return [resolve(n) for n in TOOLS]


def cached_versions(name: str) -> list[str]:
    """Versions of ``name`` the cache holds (``labgate tools status``)."""
    d = cache_root() / "tools" / name
    return sorted(p.name for p in d.iterdir() if (p / "tool.json").exists()) if d.is_dir() else []


# ---------------------------------------------------------------------------------------------
# installing


def _failure_file(t: Tool) -> Path:
    return _tool_dir(t) / "refused.txt"


def _failure_record(t: Tool) -> str:
    try:
        return _failure_file(t).read_text().strip()
    except OSError:
        return ""


def _dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


class _Progress:
    """Prints '[toolchain] NAME: STEP ... Ns elapsed' every few seconds while a long step runs."""

    def __init__(self, name: str, step: str, every: float = 15.0):
        self.name, self.step, self.every = name, step, every
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print(f"[toolchain] {self.name}: {self.step} ... {time.monotonic() - self.start:.0f}s elapsed", file=sys.stderr, flush=True)

    def __enter__(self) -> "_Progress":
        print(f"[toolchain] {self.name}: {self.step}", file=sys.stderr, flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, name: str, step: str) -> tuple[int, str]:
    full_env = {**os.environ, **env}
    with _Progress(name, step), open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, stdout=fh, stderr=subprocess.STDOUT)
    tail = log.read_text(errors="replace")[-6000:]
    return proc.returncode, tail


_REFUSAL = re.compile(r"(reading https?://\S+: )?(4\d\d [A-Za-z ]+)(\n\s*server response: ([^\n]+))?")


def _refusal(output: str) -> str:
    """The registry's own words, when it refused: module proxy 403/404/410 lines, apt/npm errors."""
    lines = [ln.strip() for ln in output.splitlines()]
    for i, ln in enumerate(lines):
        if re.search(r"\b(403 Forbidden|404 Not Found|410 Gone)\b", ln):
            more = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("server response") else ""
            return (ln + (" " + more if more else ""))[:400]
    for ln in reversed(lines):
        if ln.startswith(("go: ", "E: ", "npm ERR!", "npm error")) or "error" in ln.lower():
            return ln[:400]
    return (lines[-1] if lines else "no output")[:400]


def _write_meta(t: Tool, **meta: object) -> None:
    d = _tool_dir(t)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "tool.json.tmp"
    tmp.write_text(json.dumps({"name": t.name, "version": t.version, **meta}, indent=2))
    tmp.replace(d / "tool.json")
    _failure_file(t).unlink(missing_ok=True)


def _go_install(t: Tool, m: GoInstall, log: Path) -> tuple[bool, str]:
    bindir = _tool_dir(t) / "bin"
    stage = Path(tempfile.mkdtemp(prefix=f"{t.name}-", dir=_tool_dir(t)))
    cmd = ["go", "install", "-trimpath"]
    if m.ldflags:
        cmd += ["-ldflags", m.ldflags]
    if m.tags:
        cmd += ["-tags", m.tags]
    cmd.append(f"{m.package}@{m.version}")
    env = {**GO_ENV, "GOBIN": str(stage)}
    if t.goarch:  # go install refuses GOBIN for a cross build: it lands in GOPATH/bin/linux_<arch>
        env = {**GO_ENV, "GOARCH": t.goarch, "GOPATH": str(stage / "gopath"),
               "GOMODCACHE": _go_env("GOMODCACHE"), "GOCACHE": _go_env("GOCACHE")}
    code, out = _run(cmd, cwd=stage, env=env, log=log, name=t.name, step=f"{m.describe()} (download and build{', ' + t.goarch if t.goarch else ''})")
    if code != 0:
        shutil.rmtree(stage, ignore_errors=True)
        return False, f"{m.describe()} failed: {_refusal(out)}"
    built = stage / "gopath" / "bin" / f"linux_{t.goarch}" / Path(m.package).name if t.goarch else stage / Path(m.package).name
    bindir.mkdir(parents=True, exist_ok=True)
    target = bindir / t.binary
    built.replace(target)
    shutil.rmtree(stage, ignore_errors=True)
    return True, str(target)


def _go_env(var: str) -> str:
    out = subprocess.run(["go", "env", var], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _go_wrapper(t: Tool, m: GoWrapper, log: Path) -> tuple[bool, str]:
    from labgate.toolchain.wrapper import build_wrapper

    return build_wrapper(t, m, _tool_dir(t), log, _run, _refusal)


def _apt(t: Tool, m: Apt, log: Path) -> tuple[bool, str]:
    if not (_executable(m.path) and _dpkg_version(m.package).startswith(m.version_prefix)):
        if os.geteuid() != 0:
            return False, f"apt-get install {m.package} needs root (fix: run `sudo apt-get install {m.package}`)"
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        code, out = _run(["apt-get", "install", "-y", "-q", m.package], cwd=Path("/"), env=env, log=log, name=t.name, step=m.describe())
        if code != 0:
            code, out = _run(["sh", "-c", f"apt-get update -q && apt-get install -y -q {m.package}"], cwd=Path("/"), env=env, log=log, name=t.name, step="apt-get update and install")
        if code != 0:
            return False, f"{m.describe()} failed: {_refusal(out)}"
    version = _dpkg_version(m.package)
    if not version.startswith(m.version_prefix):
        return False, f"apt offers {m.package} {version or '(none)'}, expected {m.version_prefix}"
    return True, m.path


def _npm(t: Tool, m: Npm, log: Path) -> tuple[bool, str]:
    if not shutil.which("npm"):
        return False, "npm is not installed (fix: apt-get install nodejs npm)"
    prefix = _tool_dir(t) / "npm"
    prefix.mkdir(parents=True, exist_ok=True)
    code, out = _run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{m.package}@{m.version}"],
        cwd=prefix, env={}, log=log, name=t.name, step=m.describe(),
    )
    target = prefix / m.bin
    if code != 0 or not _executable(target):
        return False, f"{m.describe()} failed: {_refusal(out)}"
    return True, str(target)


def spec(name: str, arch: str | None = None) -> Tool:
    """The recipe for ``name`` or ``name@version``, for ``arch`` (its variable, cache directory)."""
    from labgate.toolchain.specs import tool, variant

    t = tool(name)
    return variant(t.name, version=t.version, arch=arch) if arch else t


def install(name: str, *, force: bool = False, arch: str | None = None) -> Resolved:
    """Obtain a component (``name``, ``name@version``; ``arch`` for a cross build) if it is not
    already available (a second call builds nothing)."""
    t = spec(name, arch)
    env = _env_override(t)
    if env is not None:
        return env  # an explicit variable is used as it is, or reported; never rebuilt around
    if not force:
        found = resolve(name, arch=arch)
        if found.available or t.prebuilt_only:
            return found
        refused = _failure_record(t)
        if re.search(r"\b(403 Forbidden|410 Gone)\b|not available", refused):
            return found  # the registry said no; asking again gives the same answer (--force retries)
    d = _tool_dir(t)
    d.mkdir(parents=True, exist_ok=True)
    log = d / "install.log"
    log.write_text("")
    reasons: list[str] = []
    for m in t.methods:
        started = time.monotonic()
        handler = {GoInstall: _go_install, GoWrapper: _go_wrapper, Apt: _apt, Npm: _npm}[type(m)]
        ok, result = handler(t, m, log)
        if ok:
            method = {GoInstall: "go", GoWrapper: "go", Apt: "apt", Npm: "npm"}[type(m)]
            reported = _probe_version(result, t.version_args)
            detail = m.describe() + (f" (after: {'; '.join(reasons)})" if reasons else "")
            meta: dict[str, object] = {"path": result, "method": method, "detail": detail, "reported_version": reported, "seconds": round(time.monotonic() - started, 1)}
            if isinstance(m, Apt):
                meta.update(package=m.package, version_prefix=m.version_prefix)
            _write_meta(t, **meta)
            print(f"[toolchain] {t.name}: ready in {time.monotonic() - started:.0f}s ({m.describe()})", file=sys.stderr, flush=True)
            res = _from_cache(t)
            assert res is not None
            if isinstance(m, Apt):
                res.detail = detail
            return res
        reasons.append(result)
        print(f"[toolchain] {t.name}: {result}", file=sys.stderr, flush=True)
    reason = "; ".join(reasons) or t.unavailable
    _failure_file(t).write_text(reason + (f" ({t.unavailable})" if t.unavailable else "") + "\n")
    return Resolved(t.name, t.version, False, reason=_failure_record(t))
