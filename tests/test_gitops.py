"""Unit tests of reading Flux HelmRelease files at two git refs (labgate.gitops): a Renovate-style
one-line chart bump, a values change without a version change, sources through HelmRepository and
OCIRepository, and the errors a lab's repository can give."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labgate import gitops
from labgate.errors import ScenarioError

DATA = Path(__file__).resolve().parent / "data" / "helmreleases"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def lab(tmp_path) -> Path:
    """A lab's GitOps repository: the releases under clusters/lab/, committed as 'base'."""
    repo = tmp_path / "lab"
    (repo / "clusters" / "lab").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "lab@example.org")
    _git(repo, "config", "user.name", "lab")
    for f in DATA.glob("*.yaml"):
        shutil.copy(f, repo / "clusters" / "lab" / f.name)
    (repo / "README.md").write_text("lab\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    _git(repo, "tag", "base")
    return repo


def _commit(repo: Path, rel: str, old: str, new: str, msg: str) -> str:
    p = repo / rel
    text = p.read_text()
    assert text.count(old) == 1, (rel, old)
    p.write_text(text.replace(old, new))
    _git(repo, "commit", "-q", "-am", msg)
    return _git(repo, "rev-parse", "HEAD")


def test_releases_and_their_sources_are_found(lab):
    rels = gitops.releases(gitops.read_ref(lab, "base", "clusters"))
    assert set(rels) == {"admission", "registry", "identity"}
    k = rels["admission"]
    assert (k.chart, k.chart_version, k.app_version, k.url) == ("kyverno", "3.8.2", "v1.18.2", "https://kyverno.github.io/kyverno/")
    z = rels["registry"]
    assert (z.chart, z.chart_version, z.app_version, z.source) == ("zot", "0.1.79", "v2.1.20", "OCIRepository/registry/zot-chart")
    assert rels["identity"].app_version == "v2.14.0"


def test_a_renovate_one_line_bump(lab):
    head = _commit(lab, "clusters/lab/kyverno.yaml", "version: 3.8.2", "version: 3.9.0", "chore(deps): update helm release kyverno to v3.9.0")
    diff = _git(lab, "diff", "--numstat", "base", head)
    assert diff.split()[:2] == ["1", "1"], "the fixture is a one-line bump"
    b = gitops.bump(lab, "base", head, "clusters")
    assert b.versions("base")["admission"] == "v1.18.2" and b.versions("head")["admission"] == "v1.19.0"
    assert b.changes() == [{"component": "admission", "what": "chart", "from": "3.8.2", "to": "3.9.0"},
                           {"component": "admission", "what": "version", "from": "v1.18.2", "to": "v1.19.0"}]


def test_a_values_change_without_a_version_change(lab):
    head = _commit(lab, "clusters/lab/kyverno.yaml", "replicas: 1", "replicas: 3", "kyverno: three admission replicas")
    b = gitops.bump(lab, "base", head, "clusters")
    assert b.versions("base") == b.versions("head")
    assert b.changes() == [{"component": "admission", "what": "values.admissionController.replicas", "from": "1", "to": "3"}]


def test_an_oci_chart_bump_through_the_source(lab):
    head = _commit(lab, "clusters/lab/zot.yaml", "tag: 0.1.79", "tag: 0.1.80", "zot chart 0.1.80")
    head = _commit(lab, "clusters/lab/zot.yaml", "tag: v2.1.20", "tag: v2.1.21", "zot v2.1.21")
    changes = gitops.bump(lab, "base", head, "clusters").changes()
    assert {"component": "registry", "what": "chart", "from": "0.1.79", "to": "0.1.80"} in changes
    assert {"component": "registry", "what": "version", "from": "v2.1.20", "to": "v2.1.21"} in changes


def test_the_working_tree_is_not_read(lab):
    (lab / "clusters" / "lab" / "kyverno.yaml").write_text("not: [valid")  # uncommitted garbage
    assert gitops.bump(lab, "base", "HEAD", "clusters").changes() == []


@pytest.mark.parametrize("old, new, error", [
    ("version: 3.8.2", "version: '>=3.8.0'", "spec.chart.spec.version: >=3.8.0: the gate needs an exact version"),
    ("helm.toolkit.fluxcd.io/v2", "helm.toolkit.fluxcd.io/v2beta1", "apiVersion helm.toolkit.fluxcd.io/v2beta1: expected helm.toolkit.fluxcd.io/v2"),
    ("version: 3.8.2", "version: 2.7.0", "kyverno chart 2.7.0: not a chart of the 3.x series"),
])
def test_bad_releases_name_the_file_and_field(lab, old, new, error):
    head = _commit(lab, "clusters/lab/kyverno.yaml", old, new, "bad")
    with pytest.raises(ScenarioError) as exc:
        b = gitops.bump(lab, "base", head, "clusters")
        b.versions("head")
    assert error in exc.value.render() and "clusters/lab/kyverno.yaml" in exc.value.render()


def test_zot_without_an_image_tag_says_what_to_pin(lab):
    head = _commit(lab, "clusters/lab/zot.yaml", "    image:\n      tag: v2.1.20\n", "", "no tag")
    with pytest.raises(ScenarioError) as exc:
        gitops.bump(lab, "base", head, "clusters").versions("head")
    assert "spec.values.image.tag" in exc.value.render() and "pin the image tag" in exc.value.render()


def test_an_unknown_ref_and_a_non_repository(lab, tmp_path):
    with pytest.raises(ScenarioError) as exc:
        gitops.bump(lab, "base", "no-such-ref", "clusters")
    assert "--head no-such-ref: not a commit" in exc.value.render()
    with pytest.raises(ScenarioError) as exc:
        gitops.bump(tmp_path / "nowhere", "a", "b")
    assert "not a git repository" in exc.value.render()


def test_kyverno_chart_and_app_versions_map_both_ways():
    for chart, app in (("3.8.2", "v1.18.2"), ("3.9.0", "v1.19.0")):
        assert gitops.kyverno_app_version(chart) == app and gitops.kyverno_chart_version(app) == chart
