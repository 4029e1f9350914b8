"""Unit tests: how a component binary is found (fakes only: no build runs here)."""

from __future__ import annotations

import json
import stat

import pytest

from labgate import toolchain
import importlib

res = importlib.import_module("labgate.toolchain.resolve")
from labgate.toolchain.wrapper import staging_replaces


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABGATE_CACHE", str(tmp_path / "cache"))
    for t in toolchain.TOOLS.values():
        monkeypatch.delenv(t.env, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    return tmp_path / "cache"


def _exe(path, text="#!/bin/sh\necho fake 1.2.3\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_env_var_wins(cache, tmp_path, monkeypatch):
    fake = _exe(tmp_path / "bin" / "zot")
    monkeypatch.setenv("ZOT_BIN", str(fake))
    r = toolchain.resolve("zot")
    assert (r.available, r.source, r.path, r.reported_version) == (True, "env", str(fake), "fake 1.2.3")


def test_env_var_pointing_nowhere_says_how_to_fix(cache, monkeypatch):
    monkeypatch.setenv("ZOT_BIN", "/nonexistent/zot")
    r = toolchain.resolve("zot")
    assert not r.available
    assert "ZOT_BIN=/nonexistent/zot does not exist" in r.reason
    assert "point ZOT_BIN at a working zot binary, or unset it" in r.reason


def test_env_var_naming_a_broken_binary_is_an_error(cache, tmp_path, monkeypatch):
    broken = _exe(tmp_path / "bin" / "registry", "#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("DISTRIBUTION_BIN", str(broken))
    r = toolchain.resolve("distribution")
    assert not r.available and "does not work" in r.reason and "DISTRIBUTION_BIN=" in r.reason


def test_install_never_builds_around_a_bad_variable(cache, monkeypatch):
    """A variable that names no working binary is reported, not silently replaced by a build."""
    monkeypatch.setenv("DISTRIBUTION_BIN", "/nonexistent")
    ran = []
    monkeypatch.setattr(res, "_run", lambda *a, **k: ran.append(a) or (1, ""))
    r = toolchain.install("distribution")
    assert not r.available and r.reason.startswith("DISTRIBUTION_BIN=/nonexistent does not exist")
    assert ran == [], "nothing may be built when the variable is set"


def test_zot_without_binary_gives_the_exact_reason(cache):
    r = toolchain.resolve("zot")
    assert not r.available
    assert r.reason.startswith("zot binary not available: set ZOT_BIN")


def test_path_before_cache(cache, tmp_path, monkeypatch):
    _exe(tmp_path / "empty-path" / "registry")
    d = cache / "tools" / "distribution" / "v3.1.2"
    cached = _exe(d / "bin" / "registry")
    (d / "tool.json").write_text(json.dumps({"path": str(cached), "method": "go"}))
    r = toolchain.resolve("distribution")
    assert r.source == "PATH"


def test_cache_is_used_and_install_builds_nothing(cache, monkeypatch):
    d = cache / "tools" / "oci-conformance" / toolchain.TOOLS["oci-conformance"].version
    cached = _exe(d / "bin" / "conformance")
    (d / "tool.json").write_text(json.dumps({"path": str(cached), "method": "go", "detail": "go install"}))
    monkeypatch.setattr(res, "_go_install", lambda *a: pytest.fail("a cached component must not be rebuilt"))
    r = toolchain.install("oci-conformance")
    assert (r.available, r.source, r.path) == (True, "cache", str(cached))


def test_a_cached_binary_is_not_run_again_for_its_version(cache):
    """The version it reported at install stands (the cache is keyed by version); asking again would
    cost a process per resolve (a second for the Node-based allure)."""
    d = cache / "tools" / "distribution" / "v3.1.2"
    cached = _exe(d / "bin" / "registry", "#!/bin/sh\necho ran >> \"$0.ran\"\necho registry v9\n")
    (d / "tool.json").write_text(json.dumps({"path": str(cached), "method": "go", "reported_version": "registry v3.1.2"}))
    r = toolchain.resolve("distribution")
    assert (r.source, r.reported_version) == ("cache", "registry v3.1.2")
    assert not (d / "bin" / "registry.ran").exists()
    (d / "tool.json").write_text(json.dumps({"path": str(cached), "method": "go"}))  # recorded by an older labgate
    assert toolchain.resolve("distribution").reported_version == "v9"


def test_refused_module_is_reported_in_the_registrys_words(cache, monkeypatch):
    out = (
        "go: downloading x\n"
        "go: github.com/pocket-id/pocket-id/backend@v0.0.0-1: reading https://proxy.golang.org/github.com/pocket-id/pocket-id/backend/@v/v0.0.0-1.info: 403 Forbidden\n"
        "\tserver response: This module version is not available.\n"
    )
    assert "403 Forbidden server response: This module version is not available." in res._refusal(out)


def test_failed_install_records_reason_for_status(cache, monkeypatch):
    monkeypatch.setattr(res, "_go_install", lambda t, m, log: (False, "go install x@v1 failed: 403 Forbidden"))
    r = toolchain.install("oci-conformance")
    assert not r.available and "403 Forbidden" in r.reason
    assert "403 Forbidden" in toolchain.resolve("oci-conformance").reason


def test_every_component_listed_with_version(cache):
    rows = toolchain.resolve_all()
    assert [r.name for r in rows] == list(toolchain.TOOLS)
    for r in rows:
        assert r.version
        assert r.available or r.reason


def test_staging_replaces_maps_v0_requirements():
    gomod = ("module k8s.io/kubernetes\nrequire (\n\tk8s.io/api v0.0.0\n\tk8s.io/klog/v2 v2.130.1\n\tk8s.io/client-go v0.0.0\n"
             "\tk8s.io/kube-openapi v0.0.0-20250710124328-f3f2b991d03b\n)\n")
    assert staging_replaces(gomod, "v0.36.3") == ["k8s.io/api=k8s.io/api@v0.36.3", "k8s.io/client-go=k8s.io/client-go@v0.36.3"]


def test_a_version_as_data_gets_its_own_recipe_and_cache():
    from labgate.toolchain.specs import variant

    k = variant("kyverno", version="v1.18.2")
    assert k.version == "v1.18.2" and k.methods[0].version == "v1.18.2"
    assert "BuildVersion=v1.18.2" in k.methods[0].ldflags and "v1.19.0" not in k.methods[0].ldflags
    assert k.env == "KYVERNO_BIN_1_18_2"
    api = variant("kube-apiserver", version="v1.35.2")
    assert api.methods[0].staging_version == "v0.35.2" and "gitMinor=35" in api.methods[0].ldflags
    assert res._tool_dir(k).name == "v1.18.2"
    assert toolchain.tool("kyverno@v1.18.2").version == "v1.18.2"


def test_a_cross_build_has_its_own_variable_and_no_apt_fallback():
    from labgate.toolchain.specs import variant

    d = variant("distribution", arch="arm64")
    assert d.goarch == "arm64" and d.env == "DISTRIBUTION_BIN_ARM64" and d.path_names == ()
    assert all(type(m).__name__ in ("GoInstall", "GoWrapper") for m in d.methods)
    assert res._tool_dir(d).name == "v3.1.2-linux-arm64"


def test_unknown_component_is_one_clear_error():
    from labgate.errors import UsageError

    with pytest.raises(UsageError, match="unknown component 'kyvern'"):
        toolchain.tool("kyvern@v1")
