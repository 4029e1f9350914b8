"""Generated wrapper modules for Go programs whose go.mod carries ``replace`` lines.

``go install pkg@version`` refuses such modules. A small module of our own that requires the served
version and repeats the (non-local) replace lines builds the same program: Go ignores the replace
lines of dependencies, and ours apply. For k8s.io/kubernetes, whose go.mod requires its staging
repositories at v0.0.0, the wrapper maps each of them to the published v0.X.Y.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from labgate.toolchain.specs import GoWrapper, Tool


def staging_replaces(gomod_text: str, version: str) -> list[str]:
    """``k8s.io/X v0.0.0`` requirements mapped to ``k8s.io/X => k8s.io/X <version>``."""
    found = sorted(set(re.findall(r"^\s*(?:require\s+)?(k8s\.io/[\w./-]+)\s+v0\.0\.0(?=\s|$)", gomod_text, re.M)))
    return [f"{mod}={mod}@{version}" for mod in found]


def _last_json(log_tail: str) -> dict:
    """The JSON object printed by the last command in an install log."""
    last = log_tail[log_tail.rfind("\n$ ") + 1:]
    return json.loads(last[last.find("{"):last.rfind("}") + 1])


def build_wrapper(t: Tool, m: GoWrapper, tool_dir: Path, log: Path, run: Callable, refusal: Callable) -> tuple[bool, str]:
    from labgate.toolchain.resolve import GO_ENV

    wrap = tool_dir / "wrapper"
    if wrap.exists():
        shutil.rmtree(wrap)
    wrap.mkdir(parents=True)
    env = dict(GO_ENV)
    if t.goarch:
        env["GOARCH"] = t.goarch

    def go(step: str, *args: str) -> tuple[int, str]:
        return run(["go", *args], cwd=wrap, env=env, log=log, name=t.name, step=step)

    code, out = go("wrapper: go mod init", "mod", "init", f"local/labgate-wrap-{t.name}")
    if code:
        return False, f"go mod init failed: {refusal(out)}"
    replaces = list(m.replaces)
    if m.staging_version:
        code, out = go(f"download {m.module}@{m.version} to read its go.mod", "mod", "download", "-json", f"{m.module}@{m.version}")
        if code:
            return False, f"go mod download {m.module}@{m.version} refused: {refusal(out)}"
        info = _last_json(out)
        replaces += staging_replaces(Path(info["GoMod"]).read_text(), m.staging_version)
    for rep in replaces:
        code, out = go("wrapper: add replace", "mod", "edit", f"-replace={rep}")
        if code:
            return False, f"go mod edit -replace={rep} failed: {refusal(out)}"
    code, out = go(f"require {m.module}@{m.version} (download)", "get", *(f"{p}@{m.version}" for p in m.packages), *m.extra_requires)
    if code:
        return False, f"go get {m.module}@{m.version} refused: {refusal(out)}"
    # a file that imports the main packages keeps `go mod tidy`-style resolution honest
    (wrap / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n" + "".join(f'\t_ "{p}"\n' for p in m.packages) + ")\n"
    )
    bindir = tool_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for pkg in m.packages:
        out_name = t.binary if len(m.packages) == 1 else Path(pkg).name
        cmd = ["build", "-trimpath", "-o", str(bindir / out_name)]
        if m.ldflags:
            cmd += ["-ldflags", m.ldflags]
        if m.tags:
            cmd += ["-tags", m.tags]
        code, out = go(f"go build {pkg}", *cmd, pkg)
        if code:
            return False, f"go build {pkg} failed: {refusal(out)}"
    if m.copy_dirs:
        code, out = go(f"locate {m.module}@{m.version}", "mod", "download", "-json", f"{m.module}@{m.version}")
        if code:
            return False, f"go mod download {m.module}@{m.version} failed: {refusal(out)}"
        src = Path(_last_json(out)["Dir"])
        for rel in m.copy_dirs:
            dest = tool_dir / rel
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src / rel, dest)
            for p in [dest, *dest.rglob("*")]:  # the module cache is read-only; our copy need not be
                p.chmod(p.stat().st_mode | 0o200)
    return True, str(bindir / t.binary)
