"""Kyverno's admission controller, out of cluster, against the stack's kube-apiserver.

Its CRDs come from the downloaded kyverno module; it reaches the stack's registry with a read-only
robot's credentials through an image pull secret; its webhook configurations are deleted before the
apiserver stops. ClusterPolicies are rendered from the scenario's signing policy.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "kyverno"
PULL_SECRET = "labgate-registry"
MANAGED_BY = "webhook.kyverno.io/managed-by=kyverno"
BUNDLE_TYPE = "SigstoreBundle"


def command(binary: str, *, kubeconfig: str, webhook_port: int, metrics_port: int, cache_ttl: str = "60m",
            cache_enabled: bool = True) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--serverIP=127.0.0.1:{webhook_port}",
        "--webhookServerHost=127.0.0.1",
        f"--webhookServerPort={webhook_port}",
        "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca",
        "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair",
        "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
        "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller",
        "--allowInsecureRegistry",
        f"--imagePullSecrets={PULL_SECRET}",
        "--admissionReports=false",
        "--metricsHost=127.0.0.1",
        f"--metricsPort={metrics_port}",
        "--controllerRuntimeMetricsAddress=0",
        "--disableMetrics=true",
        f"--imageVerifyCacheEnabled={'true' if cache_enabled else 'false'}",
        f"--imageVerifyCacheTTLDuration={cache_ttl}",
        "--webhookTimeout=15",
        "--tlsKeyAlgorithm=ECDSA",
        "-v=2",
    ]


ENV = {
    "KYVERNO_NAMESPACE": NAMESPACE,
    "KYVERNO_SERVICEACCOUNT_NAME": "kyverno-admission-controller",
    "KYVERNO_DEPLOYMENT": "kyverno-admission-controller",
    "KYVERNO_POD_NAME": "labgate-local",
    "KYVERNO_SVC": "kyverno-svc",
    "INIT_CONFIG": "kyverno",
    "METRICS_CONFIG": "kyverno-metrics",
}


def crd_files(crds: Path) -> list[Path]:
    """Every CRD manifest of the kyverno module's config/crds (informers hang on a missing one)."""
    return sorted(crds.rglob("*.yaml"))


def docker_config(registry_host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry_host: {"username": user, "password": password, "auth": auth}}})


def render_cluster_policy(
    *,
    name: str,
    image_references: list[str],
    public_keys: list[str],
    count: int | None = 1,
    verify_type: str = "Cosign",
    failure_action: str | None = "Enforce",
    failure_policy: str = "Fail",
    mutate_digest: bool | None = True,
    verify_digest: bool = True,
    required: bool = True,
    use_cache: bool = False,
    kinds: tuple[str, ...] = ("Pod",),
    timeout_seconds: int = 15,
) -> dict[str, Any]:
    """A kyverno.io/v1 ClusterPolicy verifying cosign key signatures (no transparency log)."""
    entries = [
        {"keys": {"publicKeys": pem.strip(), "signatureAlgorithm": "sha256",
                  "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}
        for pem in public_keys
    ]
    attestor: dict[str, Any] = {"entries": entries}
    if count is not None:
        attestor["count"] = count
    verify: dict[str, Any] = {
        "imageReferences": list(image_references),
        "type": verify_type,
        "verifyDigest": verify_digest,
        "required": required,
        "useCache": use_cache,
        "attestors": [attestor],
    }
    if failure_action is not None:
        verify["failureAction"] = failure_action
    if mutate_digest is not None:
        verify["mutateDigest"] = mutate_digest
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "labgate"}},
        "spec": {
            "background": False,
            "webhookConfiguration": {"failurePolicy": failure_policy, "timeoutSeconds": timeout_seconds},
            "rules": [{
                "name": "verify-signature",
                "match": {"any": [{"resources": {"kinds": list(kinds)}}]},
                "verifyImages": [verify],
            }],
        },
    }


def dump(policy: dict[str, Any]) -> str:
    return yaml.safe_dump(policy, sort_keys=False)


def policy_ready(status: dict[str, Any] | None) -> bool:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def wait_policy_ready(custom_api, name: str, timeout: float = 120.0) -> float:
    """Poll a ClusterPolicy until it reports Ready; returns the seconds it took."""
    from labgate.process import wait_until

    t0 = time.monotonic()

    def ready() -> bool:
        obj = custom_api.get_cluster_custom_object("kyverno.io", "v1", "clusterpolicies", name)
        return policy_ready(obj.get("status"))

    wait_until(ready, timeout=timeout, what=f"ClusterPolicy {name} Ready", interval=0.25)
    return time.monotonic() - t0
