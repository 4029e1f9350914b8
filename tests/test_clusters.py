"""Unit tests of the cluster providers' own logic: kind's and k3d's configs and command lines, the
registry's hosts directory, Kyverno's chart values, the runtime wrapper. Nothing starts here; the
k3d end-to-end case skips with the reason k3s cannot be had on this kind of machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from labgate.kind import charts, engine, nodeimage
from labgate.providers import k3d, kind


def test_kind_config_maps_ports_to_loopback_and_mounts_the_registry_hosts(tmp_path):
    cfg = kind.kind_config(registry_host_port=41000, issuer_host_port=41001, certs_d=tmp_path / "certs.d")
    node = cfg["nodes"][0]
    assert cfg["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "iptables"}
    assert {(p["containerPort"], p["hostPort"], p["listenAddress"]) for p in node["extraPortMappings"]} == {
        (kind.REGISTRY_NODE_PORT, 41000, "127.0.0.1"), (kind.ISSUER_NODE_PORT, 41001, "127.0.0.1")}
    assert node["extraMounts"] == [{"hostPath": str(tmp_path / "certs.d"), "containerPath": "/etc/containerd/certs.d", "readOnly": True}]
    assert "failCgroupV1: false" in cfg["kubeadmConfigPatches"][0]
    assert "issuer" not in json.dumps(kind.kind_config(registry_host_port=1, issuer_host_port=None, certs_d=tmp_path))


def test_registry_hosts_send_pulls_to_the_service_over_http(tmp_path):
    kind.registry_hosts(tmp_path)
    text = (tmp_path / "registry.labgate:5000" / "hosts.toml").read_text()
    assert f'server = "http://{kind.REGISTRY_CLUSTER_IP}:5000"' in text
    assert 'capabilities = ["pull", "resolve"]' in text


def test_cluster_name_is_a_dns_label():
    name = kind.cluster_name("20261202-071842-9134")
    assert name == "labgate-071842-9134" and len(name) <= 40


def test_kyverno_values_use_local_images_and_no_unbuildable_hook():
    images = {b: (f"labgate/{b}", "1.19.0-abc") for b in kind.KYVERNO_BINARIES}
    v = charts.kyverno_values(images=images, pull_secret="labgate-registry", cache_ttl="5s")
    assert v["admissionController"]["container"]["image"]["repository"] == "labgate/kyverno"
    assert v["admissionController"]["container"]["image"]["registry"] == "" == v["admissionController"]["container"]["image"]["defaultRegistry"]
    assert v["admissionController"]["initContainer"]["image"]["repository"] == "labgate/kyverno-init"
    assert v["admissionController"]["container"]["extraArgs"]["imageVerifyCacheTTLDuration"] == "5s"
    assert v["existingImagePullSecrets"] == ["labgate-registry"]
    assert v["webhooksCleanup"]["enabled"] is False and v["crds"] == {"install": False, "migration": {"enabled": False}}
    assert v["features"]["registryClient"]["allowInsecure"] is True


def test_kyverno_probes_run_every_second_with_the_charts_patience():
    images = {b: (f"labgate/{b}", "1.19.0-abc") for b in kind.KYVERNO_BINARIES}
    v = charts.kyverno_values(images=images, pull_secret="labgate-registry", cache_ttl="5s")
    for controller in ("admissionController", "cleanupController"):
        start, ready = v[controller]["startupProbe"], v[controller]["readinessProbe"]
        assert start["periodSeconds"] == ready["periodSeconds"] == 1 and start["initialDelaySeconds"] == ready["initialDelaySeconds"] == 0
        assert start["failureThreshold"] * start["periodSeconds"] >= 120, "as long to start as the chart's 20 x 6 s"
        assert ready["failureThreshold"] == 6 and ready["httpGet"] == {"path": "/health/readiness", "port": 9443, "scheme": "HTTPS"}


class FakeEngine:
    """Unit-test stand-in for labgate.kind.engine.Engine: images by reference, with IDs."""

    def __init__(self, images: dict[str, str]):
        self.images = dict(images)  # ref -> id
        self.labels: dict[str, str] = {}  # ref -> the node it preloads
        self.removed: list[str] = []

    def has_image(self, ref: str) -> bool:
        return ref in self.images

    def run(self, *args: str, check: bool = True):
        import subprocess

        out = ""
        if args[:2] == ("image", "inspect"):
            out = "\n".join(self.images[r] for r in args[4:])
        elif args[0] == "images":  # newest first, as docker lists them
            node = args[2].split("=", 2)[2]
            out = "\n".join(reversed([r for r, n in self.labels.items() if n == node and r in self.images]))
        elif args[0] == "rmi":
            self.removed.append(args[1])
            self.images.pop(args[1], None)
        return subprocess.CompletedProcess(args, 0, out.encode(), b"")


def test_a_node_image_with_the_stack_images_is_built_once_and_the_two_newest_are_kept(monkeypatch):
    eng = FakeEngine({"node:1": "sha256:n1", "labgate/kyverno:1.19.0-aa": "sha256:k1", "labgate/registry:3.1.2-bb": "sha256:r1"})
    built: list[str] = []

    def preload(engine, base, images, ref, work, label=""):
        built.append(ref)
        engine.images[ref], engine.labels[ref] = "sha256:" + ref[-8:], label

    monkeypatch.setattr(nodeimage, "_preload", preload)
    stack_images = ["labgate/kyverno:1.19.0-aa", "labgate/registry:3.1.2-bb"]
    first, was_built = nodeimage.with_images(eng, "node:1", stack_images, progress=lambda m: None)
    assert was_built and built == [first] and first.startswith("labgate/kind-node-preloaded:")
    assert nodeimage.with_images(eng, "node:1", list(reversed(stack_images)), progress=lambda m: None) == (first, False)
    eng.images["labgate/kyverno:1.19.0-aa"] = "sha256:k2"  # the same tag, rebuilt: another image
    second, was_built = nodeimage.with_images(eng, "node:1", stack_images, progress=lambda m: None)
    assert was_built and second != first and not eng.removed, "a gate's two sides both stay warm"
    eng.images["labgate/kyverno:1.19.0-aa"] = "sha256:k3"
    third, was_built = nodeimage.with_images(eng, "node:1", stack_images, progress=lambda m: None)
    assert was_built and eng.removed == [first], "beyond two, the oldest preload of the same node image goes"
    assert {second, third} <= set(eng.images)


def test_node_image_ref_changes_with_the_versions():
    a = nodeimage.node_ref("v1.36.3", "v0.33.0")
    assert a.startswith("labgate/kind-node:v1.36.3-kind0.33.0-")
    assert a != nodeimage.node_ref("v1.35.2", "v0.33.0") != nodeimage.node_ref("v1.36.3", "v0.32.0")


def test_runtime_wrapper_drops_only_cap_sys_resource(tmp_path):
    """The wrapper edits the bundle's config.json (create) and the --process file (exec)."""
    fake_runc = tmp_path / "runc"
    fake_runc.write_text("#!/bin/sh\necho ran \"$@\"\n")
    fake_runc.chmod(0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(engine.wrapper_text(str(fake_runc)))
    wrapper.chmod(0o755)
    caps = {"bounding": ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]}
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"capabilities": caps}}))
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": caps}))
    out = subprocess.run([str(wrapper), "create", "--bundle", str(bundle), "x"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ran create --bundle")
    subprocess.run([str(wrapper), "exec", "--process", str(process), "x"], check=True, capture_output=True)
    for got in (json.loads((bundle / "config.json").read_text())["process"]["capabilities"], json.loads(process.read_text())["capabilities"]):
        assert got == {"bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_NET_ADMIN"]}


def test_kyverno_chart_is_made_renderable(tmp_path, monkeypatch):
    """The chart's remote dependencies come from Go modules (faked here); reports-server goes."""
    kyverno_mod, api_mod, orep_mod = tmp_path / "kyverno", tmp_path / "api", tmp_path / "orep"
    (kyverno_mod / "charts" / "kyverno" / "charts" / "crds").mkdir(parents=True)
    (kyverno_mod / "go.mod").write_text("module github.com/kyverno/kyverno\nrequire (\n\tgithub.com/kyverno/api v0.0.1-x\n"
                                        "\tgithub.com/openreports/reports-api v0.2.1\n)\n")
    chart = {"name": "kyverno", "version": "3.9.0", "appVersion": "v1.19.0", "dependencies": [
        {"name": "crds", "version": "3.9.0", "condition": "crds.install"},
        {"name": "kyverno-api", "version": "0.0.1-alpha.4", "repository": "https://kyverno.github.io/api", "condition": "crds.install"},
        {"name": "openreports", "version": "0.1.0", "repository": "https://openreports.github.io/reports-api"},
        {"name": "reports-server", "version": "0.1.6", "repository": "https://kyverno.github.io/reports-server/"}]}
    (kyverno_mod / "charts" / "kyverno" / "Chart.yaml").write_text(yaml.safe_dump(chart))
    for mod, sub in ((api_mod, "kyverno-api"), (orep_mod, "openreports")):
        (mod / "charts" / sub).mkdir(parents=True)
        (mod / "charts" / sub / "Chart.yaml").write_text(yaml.safe_dump({"name": sub, "version": "0.0.0"}))
    dirs = {"github.com/kyverno/kyverno@v1.19.0": kyverno_mod, "github.com/kyverno/api@v0.0.1-x": api_mod,
            "github.com/openreports/reports-api@v0.2.1": orep_mod}
    monkeypatch.setattr(charts, "module_dir", lambda m: dirs[m])
    got = charts.kyverno_chart("v1.19.0", tmp_path / "out")
    assert got == {"chart": "3.9.0", "app": "v1.19.0"}
    out = yaml.safe_load((tmp_path / "out" / "Chart.yaml").read_text())
    assert [d["name"] for d in out["dependencies"]] == ["crds", "kyverno-api", "openreports"]
    assert not any("repository" in d for d in out["dependencies"])
    assert yaml.safe_load((tmp_path / "out" / "charts" / "kyverno-api" / "Chart.yaml").read_text())["version"] == "0.0.1-alpha.4"


def test_labgate_chart_renders_what_the_renderers_produce():
    helm = subprocess.run(["which", "helm"], capture_output=True, text=True).stdout.strip()
    from labgate import toolchain

    tool = toolchain.resolve("helm")
    helm = tool.path if tool.available else helm
    if not helm:
        pytest.skip("helm not available (fix: labgate tools install helm)")
    values = {"registry": {"kind": "distribution", "configFiles": {"config.yml": "version: 0.1\n"}, "secretFiles": {"htpasswd": "ci:$2y$x\n"},
                           "service": {"clusterIP": "10.96.0.50"}}}
    out = subprocess.run([helm, "template", "r", str(charts.LABGATE_CHART), "-f", "-"], input=yaml.safe_dump(values), capture_output=True,
                         text=True, check=True).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    assert docs[("ConfigMap", "r-registry-config")]["data"]["config.yml"] == "version: 0.1"
    pod = docs[("Deployment", "registry")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["serve", "/etc/distribution/config.yml"]
    assert "tcpSocket" in pod["containers"][0]["readinessProbe"]
    assert docs[("Service", "registry")]["spec"]["clusterIP"] == "10.96.0.50"
    assert ("Deployment", "pocket-id") not in docs


# ----------------------------------------------------------------------------------------------
# k3d


def test_k3d_create_command_leaves_the_users_kubeconfig_alone(tmp_path):
    cmd = k3d.create_command("k3d", "labgate-x", "rancher/k3s:v1", registry_host_port=41000, issuer_host_port=41001,
                             registries=tmp_path / "registries.yaml")
    assert cmd[:4] == ["k3d", "cluster", "create", "labgate-x"]
    assert "--kubeconfig-update-default=false" in cmd and "--kubeconfig-switch-context=false" in cmd
    ports = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--port"]
    assert ports == [f"127.0.0.1:41000:{kind.REGISTRY_NODE_PORT}@server:0", f"127.0.0.1:41001:{kind.ISSUER_NODE_PORT}@server:0"]
    assert cmd[cmd.index("--registry-config") + 1] == str(tmp_path / "registries.yaml")


def test_k3d_registries_yaml_mirrors_the_in_cluster_registry():
    doc = yaml.safe_load(k3d.registries_yaml())
    assert doc == {"mirrors": {"registry.labgate:5000": {"endpoint": [f"http://{k3d.K3S_SERVICE_IP}:5000"]}}}


def test_k3d_says_exactly_why_it_cannot_run(monkeypatch):
    monkeypatch.delenv("K3D_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    why = k3d.unavailable()
    assert why.startswith("k3s cannot be obtained here: the Go module proxy refuses github.com/k3s-io/k3s")
    assert "fix: run on a machine with k3d and a rancher/k3s image" in why


@pytest.mark.integration
def test_k3d_end_to_end(tmp_path):
    """The OCI and admission suites on a k3d cluster; needs k3d and a rancher/k3s image, so here
    it skips with the reason."""
    why = k3d.unavailable()
    if why is None:
        eng = engine.ensure()
        why = k3d.unavailable(eng)
    if why:
        pytest.skip(why)
    import sys

    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-m", "pytest", "suites/oci", "suites/admission", "--scenario", "scenarios/k3d.yaml", "-q",
                          "--labgate-reports", str(tmp_path / "r"), "--labgate-no-html"], cwd=root, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def test_scenario_k3d_loads():
    from labgate.scenario import load_scenario

    sc = load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / "k3d.yaml")
    assert sc.provider == "k3d"
