"""Charts: Kyverno's real chart from its Go module, and labgate's own chart (charts/labgate).

The kyverno module zip carries ``charts/kyverno``; its Chart.yaml names three dependencies on helm
repositories that cannot be reached here. Two are in other Go modules at the versions kyverno's
go.mod pins (``github.com/kyverno/api`` ships charts/kyverno-api, the policies.kyverno.io CRDs;
``github.com/openreports/reports-api`` ships charts/openreports); the third, reports-server, is
off by default and not served, so its dependency is dropped. helm wants every dependency present
whatever its condition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from labgate.errors import StackError

ROOT = Path(__file__).resolve().parents[2]
LABGATE_CHART = ROOT / "charts" / "labgate"


def module_dir(module: str) -> Path:
    out = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "GOFLAGS": "-mod=mod"})
    try:
        info = json.loads(out.stdout)
    except ValueError:
        info = {}
    if out.returncode != 0 or "Dir" not in info:
        raise StackError(f"go mod download {module}: {(info.get('Error') or out.stderr or out.stdout).strip()[-400:]}")
    return Path(info["Dir"])


def _writable_copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("tmpcharts-*"))
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)  # the module cache is read-only


def kyverno_chart(version: str, dest: Path) -> dict[str, str]:
    """A renderable copy of Kyverno's chart at ``dest``; returns its chart and app versions."""
    src = module_dir(f"github.com/kyverno/kyverno@{version}")
    chart_src = src / "charts" / "kyverno"
    if not (chart_src / "Chart.yaml").exists():
        raise StackError(f"kyverno {version}: the module has no charts/kyverno")
    gomod = (src / "go.mod").read_text()
    if dest.exists():
        shutil.rmtree(dest)
    _writable_copy(chart_src, dest)
    chart = yaml.safe_load((dest / "Chart.yaml").read_text())
    sources = {"kyverno-api": ("github.com/kyverno/api", "charts/kyverno-api"),
               "openreports": ("github.com/openreports/reports-api", "charts/openreports")}
    deps = []
    for dep in chart.get("dependencies") or []:
        name = dep["name"]
        if name == "reports-server":
            continue  # not served; reportsServer.enabled is false by default
        if name in sources:
            mod, sub = sources[name]
            m = re.search(rf"^\s*{re.escape(mod)}\s+(\S+)", gomod, re.M)
            if not m:
                raise StackError(f"kyverno {version}: its go.mod pins no {mod} (for the {name} sub-chart)")
            sub_src = module_dir(f"{mod}@{m.group(1)}") / sub
            if not (sub_src / "Chart.yaml").exists():
                raise StackError(f"kyverno {version}: {mod}@{m.group(1)} has no {sub}")
            target = dest / "charts" / name
            if target.exists():
                shutil.rmtree(target)
            _writable_copy(sub_src, target)
            sub_chart = yaml.safe_load((target / "Chart.yaml").read_text())
            sub_chart["version"] = dep["version"]  # what the parent asks for
            (target / "Chart.yaml").write_text(yaml.safe_dump(sub_chart, sort_keys=False))
        dep.pop("repository", None)
        deps.append(dep)
    chart["dependencies"] = deps
    (dest / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    (dest / "Chart.lock").unlink(missing_ok=True)
    return {"chart": str(chart["version"]), "app": str(chart.get("appVersion", ""))}


def kyverno_values(*, images: dict[str, tuple[str, str]], pull_secret: str, cache_ttl: str) -> dict:
    """Values for Kyverno's chart on kind: images built here (never pulled), the registry read with
    a read-only robot's pull secret, the scenario's cache TTL, plain-http registries allowed, no
    hook that needs an image not built here (webhooks clean-up, the CRD migration job), and
    probes every second."""
    def image(name: str) -> dict:
        repo, tag = images[name]
        return {"registry": "", "defaultRegistry": "", "repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"}

    def probes() -> dict:
        """The chart's probes, run every second from the start: by default the startup probe runs
        every 6 s after 2 s and the readiness probe every 10 s after 5 s, so a Kyverno that
        answers within a second of starting was seen Ready up to 15 s later. The thresholds keep
        the chart's patience (2 minutes to start; 6 failed readiness checks in a row)."""
        def check(path: str) -> dict:
            return {"httpGet": {"path": path, "port": 9443, "scheme": "HTTPS"}, "initialDelaySeconds": 0, "periodSeconds": 1}

        return {"startupProbe": {**check("/health/liveness"), "failureThreshold": 120},
                "readinessProbe": {**check("/health/readiness"), "timeoutSeconds": 5, "failureThreshold": 6, "successThreshold": 1}}

    return {
        # CRDs are applied server-side first (too large for client-side apply); no migration job
        "crds": {"install": False, "migration": {"enabled": False}},
        "admissionController": {
            "replicas": 1,
            "initContainer": {"image": image("kyverno-init")},
            "container": {"image": image("kyverno"), "extraArgs": {"imageVerifyCacheTTLDuration": cache_ttl}},
            **probes(),
        },
        "backgroundController": {"image": image("background-controller")},
        "cleanupController": {"image": image("cleanup-controller"), **probes()},
        "reportsController": {"image": image("reports-controller")},
        "existingImagePullSecrets": [pull_secret],
        "features": {"registryClient": {"allowInsecure": True}},
        "webhooksCleanup": {"enabled": False},
    }
