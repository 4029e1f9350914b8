"""Flux HelmRelease files in a git repository, read at two refs: the chart bump a gate judges.

A lab's Renovate opens a pull request that changes a HelmRelease's chart version (a one-line
bump) or its values. ``bump(repo, base, head, under)`` reads every YAML file under ``under`` at
both refs (``git show``, no checkout: the working tree is never touched), finds the HelmReleases
(``helm.toolkit.fluxcd.io/v2``) of the stack's charts — kyverno, zot, pocket-id — with their
sources (``HelmRepository`` or, through ``spec.chartRef``, ``OCIRepository``), and gives for each
side the chart version, the app version and the values; ``changes`` lists what differs.

App versions: Kyverno's chart series 3.x ships Kyverno 1.(x+10) (chart 3.8.2 is v1.18.2 and
3.9.0 is v1.19.0, as the Chart.yaml inside each module says); zot's and Pocket ID's come from the
release's ``values.image.tag`` (their charts' appVersion is not knowable offline).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labgate.errors import ScenarioError

HELMRELEASE = "helm.toolkit.fluxcd.io/v2"
# chart name -> the scenario's component
CHARTS = {"kyverno": "admission", "zot": "registry", "pocket-id": "identity"}


@dataclass
class Release:
    file: str
    name: str
    namespace: str
    chart: str
    chart_version: str
    source: str  # Kind/namespace/name of the chart's source
    url: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return CHARTS[self.chart]

    @property
    def app_version(self) -> str:
        tag = (self.values.get("image") or {}).get("tag") if isinstance(self.values.get("image"), dict) else None
        if tag:
            return str(tag) if str(tag).startswith("v") else f"v{tag}"
        if self.chart == "kyverno":
            return kyverno_app_version(self.chart_version, where=f"{self.file}: HelmRelease {self.name}")
        raise ScenarioError(f"{self.file}: HelmRelease {self.name}: spec.values.image.tag: needed to know which {self.chart} version chart "
                            f"{self.chart_version} deploys", fix="pin the image tag in the release's values")


def kyverno_app_version(chart_version: str, where: str = "") -> str:
    m = re.fullmatch(r"v?3\.(\d+)\.(\d+)", chart_version)
    if not m:
        raise ScenarioError(f"{where}: kyverno chart {chart_version}: not a chart of the 3.x series (Kyverno 1.10 and later)",
                            fix="pin a 3.x chart version, or set values.image.tag")
    return f"v1.{int(m.group(1)) + 10}.{m.group(2)}"


def kyverno_chart_version(app_version: str) -> str:
    m = re.fullmatch(r"v?1\.(\d+)\.(\d+)", app_version)
    if not m or int(m.group(1)) < 10:
        raise ScenarioError(f"kyverno {app_version}: no chart of the 3.x series ships it")
    return f"3.{int(m.group(1)) - 10}.{m.group(2)}"


def _git(repo: Path, *args: str, what: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ScenarioError(f"{what}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f'git exited {out.returncode}'}")
    return out.stdout


def read_ref(repo: Path, ref: str, under: str = ".", flag: str = "--base") -> dict[str, list[Any]]:
    """Every YAML document under ``under`` at ``ref``: file -> its documents."""
    _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", what=f"{flag} {ref}: not a commit in {repo}")
    names = _git(repo, "ls-tree", "-r", "--name-only", ref, "--", under, what=f"{flag} {ref}: {under}").split("\n")
    docs: dict[str, list[Any]] = {}
    for name in names:
        if not name.endswith((".yaml", ".yml")):
            continue
        text = _git(repo, "show", f"{ref}:{name}", what=f"{flag} {ref}: {name}")
        try:
            docs[name] = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{name} at {ref}: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    return docs


def releases(docs: dict[str, list[Any]], ref: str = "") -> dict[str, Release]:
    """The stack's HelmReleases by component ('admission', 'registry', 'identity')."""
    sources: dict[tuple[str, str, str], dict[str, Any]] = {}
    for file, items in docs.items():
        for d in items:
            if isinstance(d, dict) and d.get("kind") in ("HelmRepository", "OCIRepository") and str(d.get("apiVersion", "")).startswith("source.toolkit.fluxcd.io/"):
                md = d.get("metadata") or {}
                sources[(d["kind"], md.get("namespace", "flux-system"), md.get("name", ""))] = {"file": file, **d}
    found: dict[str, Release] = {}
    for file, items in docs.items():
        for d in items:
            if not (isinstance(d, dict) and d.get("kind") == "HelmRelease"):
                continue
            where = f"{file}{' at ' + ref if ref else ''}"
            md, spec = d.get("metadata") or {}, d.get("spec") or {}
            name, ns = md.get("name", "?"), md.get("namespace", "default")
            rel = _release(where, name, ns, spec, sources)
            if rel is None:
                continue  # another chart: not the gate's business
            if d.get("apiVersion") != HELMRELEASE:
                raise ScenarioError(f"{where}: HelmRelease {name}: apiVersion {d.get('apiVersion')}: expected {HELMRELEASE}",
                                    fix="migrate the release to helm.toolkit.fluxcd.io/v2 (Flux 2.3 and later)")
            if rel.component in found:
                raise ScenarioError(f"{where}: HelmRelease {name}: a second {rel.chart} release (the first: {found[rel.component].file})")
            found[rel.component] = rel
    return found


def _exact(version: str, field: str) -> None:
    if not version or any(c in version for c in "<>=~^*x| "):
        raise ScenarioError(f"{field}: {version or 'missing'}: the gate needs an exact version", fix="pin the chart version (Renovate bumps it)")


def _release(where: str, name: str, ns: str, spec: dict[str, Any], sources: dict) -> Release | None:
    values = spec.get("values") or {}
    if "chartRef" in spec:
        ref = spec["chartRef"] or {}
        key = (ref.get("kind", ""), ref.get("namespace", ns), ref.get("name", ""))
        src = sources.get(key)
        if src is None:
            raise ScenarioError(f"{where}: HelmRelease {name}: spec.chartRef: no {key[0]} {key[1]}/{key[2]} in the files read")
        url = (src.get("spec") or {}).get("url", "")
        chart = url.rstrip("/").rsplit("/", 1)[-1]
        if chart not in CHARTS:
            return None
        version = str(((src.get("spec") or {}).get("ref") or {}).get("tag") or "")
        _exact(version, f"{src['file']}: OCIRepository {key[2]}: spec.ref.tag")
        return Release(where, name, ns, chart, version, "/".join(key), url, values)
    chart_spec = ((spec.get("chart") or {}).get("spec") or {})
    chart = chart_spec.get("chart", "")
    if chart not in CHARTS:
        return None
    version = str(chart_spec.get("version") or "")
    _exact(version, f"{where}: HelmRelease {name}: spec.chart.spec.version")
    sref = chart_spec.get("sourceRef") or {}
    key = (sref.get("kind", ""), sref.get("namespace", ns), sref.get("name", ""))
    url = ((sources.get(key) or {}).get("spec") or {}).get("url", "")
    return Release(where, name, ns, chart, version, "/".join(key), url, values)


@dataclass
class Bump:
    base: dict[str, Release]
    head: dict[str, Release]

    def changes(self) -> list[dict[str, str]]:
        """Per component: chart and app version changes, values changed (by dotted path), releases added or removed."""
        out: list[dict[str, str]] = []
        for comp in sorted(set(self.base) | set(self.head)):
            b, h = self.base.get(comp), self.head.get(comp)
            if b is None or h is None:
                out.append({"component": comp, "what": "release", "from": b.chart_version if b else "absent", "to": h.chart_version if h else "absent"})
                continue
            if b.chart_version != h.chart_version:
                out.append({"component": comp, "what": "chart", "from": b.chart_version, "to": h.chart_version})
            if b.app_version != h.app_version:
                out.append({"component": comp, "what": "version", "from": b.app_version, "to": h.app_version})
            vb, vh = _flat(b.values), _flat(h.values)
            for path in sorted(set(vb) | set(vh)):
                fb, fh = vb.get(path), vh.get(path)
                if fb != fh:
                    out.append({"component": comp, "what": f"values.{path}", "from": _show(fb), "to": _show(fh)})
        return out

    def versions(self, side: str) -> dict[str, str]:
        rels = self.base if side == "base" else self.head
        return {comp: r.app_version for comp, r in rels.items()}


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for k, v in values.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: values}


def _show(v: Any) -> str:
    import json

    return "absent" if v is None else v if isinstance(v, str) else json.dumps(v)


def bump(repo: str | Path, base: str, head: str, under: str = ".") -> Bump:
    """The HelmReleases at ``base`` and ``head``, for the gate's FROM and TO."""
    repo = Path(repo)
    _git(repo, "rev-parse", "--git-dir", what=f"--helmreleases {repo}: not a git repository")
    b = releases(read_ref(repo, base, under, "--base"), base)
    h = releases(read_ref(repo, head, under, "--head"), head)
    if not b and not h:
        raise ScenarioError(f"--helmreleases {repo}: no HelmRelease of {', '.join(CHARTS)} under {under} at {base} or {head}")
    return Bump(b, h)
