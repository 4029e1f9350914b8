"""Integration test of the existing provider: pointed at a running `labgate stack up` stack (as at a
lab's live deployment), the suites run read-only and write nothing: no manifest, tag, blob or
Kubernetes object appears, and the checks that write nothing do run and pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labgate import images, signing, toolchain
from labgate.clients.oci import OciClient
from labgate.components import kyverno as kv
from labgate.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def _registry_files(stack: Stack) -> list[str]:
    data = Path(stack.run_dir) / "registry" / "data"
    return sorted(str(p.relative_to(data)) for p in data.rglob("*"))


def _kube_objects(stack: Stack) -> dict[str, list[str]]:
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(stack.kubeconfig)
    core, custom = kclient.CoreV1Api(api), kclient.CustomObjectsApi(api)
    return {
        "namespaces": sorted(n.metadata.name for n in core.list_namespace().items),
        "pods": sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in core.list_pod_for_all_namespaces().items),
        "secrets": sorted(f"{s.metadata.namespace}/{s.metadata.name}" for s in core.list_secret_for_all_namespaces().items),
        "configmaps": sorted(f"{c.metadata.namespace}/{c.metadata.name}" for c in core.list_config_map_for_all_namespaces().items),
        "clusterpolicies": sorted(p["metadata"]["name"] for p in custom.list_cluster_custom_object("kyverno.io", "v1", "clusterpolicies")["items"]),
    }


def test_existing_provider_runs_read_only_and_writes_nothing(tmp_path):
    for name in ("distribution", "etcd", "kube-apiserver", "kyverno"):
        if not toolchain.resolve(name).available and not (name == "distribution" and toolchain.resolve("zot").available):
            pytest.skip(f"{name} not available (fix: labgate tools install {name})")
    cli = [sys.executable, "-m", "labgate.cli"]
    up = subprocess.run([*cli, "stack", "up", "--reports", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr
    state = re.search(r"state file: (\S+)", up.stdout).group(1)
    stack = Stack.load(state)
    try:
        # the "lab": a signed and an unsigned image, and a policy trusting the lab's key
        ci = OciClient(stack.registry_url, ("ci-robot", stack.password("ci-robot")))
        key = signing.KeyPair.generate()
        signed = images.push_image(ci, "zeroclaw/lab-app", "v1", images.build_image("lab app"))
        signing.sign_legacy(ci, "zeroclaw/lab-app", signed, key)
        unsigned = images.push_image(ci, "zeroclaw/lab-unsigned", "v1", images.build_image("lab unsigned"))
        from kubernetes import config as kconfig

        from labgate.clients.kube import Admission

        adm = Admission(stack.kubeconfig)
        adm.apply_policy(kv.render_cluster_policy(name="lab-signed-images", image_references=[f"{stack.image_host}/zeroclaw/lab-*"],
                                                  public_keys=[key.public_pem().decode()]))
        kconfig.new_client_from_config(stack.kubeconfig)  # the kubeconfig works as the user's would
        before = (_registry_files(stack), _kube_objects(stack))
        # the documented example, pointed at this stack as a user would fill it in
        spec = yaml.safe_load((ROOT / "scenarios" / "existing.example.yaml").read_text())
        ex = spec["existing"]
        ex["registry"].update(url=stack.registry_url, image_host=stack.image_host, repository="zeroclaw/lab-app", tag="v1")
        assert ex["registry"]["password_env"] == "LAB_REGISTRY_PASSWORD" and ex["registry"]["username"] == "readonly-robot"
        ex["kubernetes"].update(kubeconfig=stack.kubeconfig, context=None, signed_image=f"{stack.image_host}/zeroclaw/lab-app@{signed}",
                                unsigned_image=f"{stack.image_host}/zeroclaw/lab-unsigned@{unsigned}")
        if stack.issuer_url and stack.oidc_redirects.get("zot"):
            ex["identity"].update(issuer=stack.issuer_url, client_id="zot", redirect_uri=stack.oidc_redirects["zot"])
        else:
            del ex["identity"]  # no Pocket ID in this stack
        spec["name"] = "existing-check"
        scenario = tmp_path / "existing.yaml"
        scenario.write_text(yaml.safe_dump(spec))
        env = {**os.environ, "LAB_REGISTRY_PASSWORD": stack.password("readonly-robot")}
        env.pop("LABGATE_STATE", None)
        run = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:xdist", "--scenario", str(scenario),
                              "--labgate-reports", str(tmp_path / "r2"), "--labgate-run-id", "existing-check", "--labgate-no-html"],
                             cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
        after = (_registry_files(stack), _kube_objects(stack))
    finally:
        subprocess.run([*cli, "stack", "down", "--state", state], cwd=ROOT, capture_output=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert after == before, "the read-only run changed the deployment"
    import json

    summary = json.loads((tmp_path / "r2" / "existing-check" / "summary.json").read_text())
    verdicts = {t["nodeid"]: t["verdict"] for t in summary["tests"]}
    passed = [n for n, v in verdicts.items() if v == "pass"]
    for must in ("suites/oci/test_read_only.py::test_manifest_by_tag_and_digest", "suites/oci/test_read_only.py::test_blobs_match_their_digests",
                 "suites/admission/test_dry_run.py::test_d1_signed_digest_admitted_in_a_dry_run",
                 "suites/admission/test_dry_run.py::test_d2_unsigned_denied_in_a_dry_run"):
        assert verdicts.get(must) == "pass", (must, verdicts.get(must))
    writers = [t for t in summary["tests"] if t["verdict"] == "skip" and "read-only" in t["message"]]
    assert writers, "the tests that write were skipped as read-only"
    assert not [n for n, v in verdicts.items() if v in ("fail", "error")], [(n, v) for n, v in verdicts.items() if v in ("fail", "error")]
    assert len(passed) >= 8
