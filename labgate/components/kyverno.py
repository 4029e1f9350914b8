"""Kyverno's admission controller, out of cluster, against the stack's kube-apiserver.

Its CRDs come from the downloaded kyverno module; it reaches the stack's registry with a read-only
robot's credentials through an image pull secret; its webhook configurations are deleted before the
apiserver stops. ClusterPolicies are rendered from the scenario's signing policy.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

NAMESPACE = "kyverno"
PULL_SECRET = "labgate-registry"
CA_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
TLS_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-pair"
MANAGED_BY = "webhook.kyverno.io/managed-by=kyverno"
BUNDLE_TYPE = "SigstoreBundle"
# Kyverno's --webhookTimeout on the local stack (seconds): see command()
WEBHOOK_TIMEOUT_FLOOR = 1


def command(binary: str, *, kubeconfig: str, webhook_port: int, metrics_port: int, cache_ttl: str = "60m",
            cache_enabled: bool = True) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--serverIP=127.0.0.1:{webhook_port}",
        "--webhookServerHost=127.0.0.1",
        f"--webhookServerPort={webhook_port}",
        f"--caSecretName={CA_SECRET}",
        f"--tlsSecretName={TLS_SECRET}",
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
        # the floor of every webhook's timeoutSeconds: a policy raises its webhook's (the scenario's
        # signing.policy.timeout_seconds), never lowers it, so a low floor lets a test's policy set a short one
        f"--webhookTimeout={WEBHOOK_TIMEOUT_FLOOR}",
        "--tlsKeyAlgorithm=ECDSA",
        # leases renewed every second (default 2 s; lease 6 s, renew deadline 5 s): after a control
        # plane disruption its leases show it has recovered within a second
        "--leaderElectionRetryPeriod=1s",
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


def install_crds(api, crds: Path, *, abort=None) -> None:
    """Kyverno's namespace and every CRD of the module, established (informers hang on a missing
    one). This is what the cached etcd seed holds (labgate.components.kube.seeded_data_dir)."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client as kclient
    from kubernetes import utils as kutils

    core = kclient.CoreV1Api(api)
    core.create_namespace(kclient.V1Namespace(metadata=kclient.V1ObjectMeta(name=NAMESPACE)))
    with ThreadPoolExecutor(max_workers=4) as pool:  # 22 large CRDs: the apiserver takes them in parallel
        list(pool.map(lambda f: kutils.create_from_yaml(api, str(f)), crd_files(crds)))
    wait_established(api, abort=abort)


def apply_crds(api, crds: Path, *, abort=None) -> None:
    """Kyverno's CRDs of another version over the ones a running apiserver serves: server-side
    apply, conflicts forced (too large for a client-side apply's annotation; what ``helm upgrade``
    needs done first, since helm never upgrades CRDs), then established."""
    import yaml
    from kubernetes import dynamic

    crd_api = dynamic.DynamicClient(api).resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    for f in crd_files(crds):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                crd_api.server_side_apply(body=doc, field_manager="labgate", force_conflicts=True)
    wait_established(api, abort=abort)


def wait_leases_renewed(api, since: float, timeout: float = 60.0) -> None:
    """Kyverno's leader leases renewed after ``since`` (epoch seconds): a control-plane disruption
    is over for its leader election too (a renewal failing longer than the renew deadline ends the
    process)."""
    import datetime as dt

    from kubernetes import client as kclient

    from labgate.process import kube_retry, wait_until

    coord = kclient.CoordinationV1Api(api)
    after = dt.datetime.fromtimestamp(since, dt.timezone.utc)

    def renewed() -> bool:
        leases = [lease for lease in coord.list_namespaced_lease(NAMESPACE).items if lease.spec.holder_identity]
        return bool(leases) and all(lease.spec.renew_time and lease.spec.renew_time > after for lease in leases)

    wait_until(renewed, timeout=timeout, what="Kyverno's leases renewed after the disruption", interval=0.2, retry_on=kube_retry())


def wait_established(api, *, abort=None, timeout: float = 60.0) -> None:
    from kubernetes import client as kclient

    from labgate.process import kube_retry, wait_until

    ext = kclient.ApiextensionsV1Api(api)

    def established() -> bool:
        for name in ("clusterpolicies.kyverno.io", "policies.kyverno.io"):
            crd = ext.read_custom_resource_definition(name)
            if not any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                return False
        return True

    wait_until(established, timeout=timeout, what="Kyverno CRDs established", abort=abort, retry_on=kube_retry())


def crds_digest(crds: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in crd_files(crds):
        h.update(f.relative_to(crds).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def install_secrets(api, *, registry_host: str, robot: str, password: str, webhook_hosts: list[str]) -> None:
    """Per run: the pull secret with a read-only robot's credentials for the registry, and the
    webhook server's TLS pair and CA under the names Kyverno reads (it uses certificates it finds
    valid there, as with user-provided certificates, instead of making them at start)."""
    from cryptography.hazmat.primitives import serialization
    from kubernetes import client as kclient

    from labgate.components.kube import issue_serving_cert, make_ca

    from concurrent.futures import ThreadPoolExecutor

    core = kclient.CoreV1Api(api)
    secrets = [kclient.V1Secret(
        metadata=kclient.V1ObjectMeta(name=PULL_SECRET), type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": docker_config(registry_host, robot, password)},
    )]
    days = 60  # Kyverno renews what expires within 15 days (--renewBefore), and renews only its own
    ca, ca_key = make_ca("*.kyverno.svc", days=days)
    svc = ["kyverno-svc", "kyverno-svc.kyverno", "kyverno-svc.kyverno.svc"]
    cert, key = issue_serving_cert(ca, ca_key, "kyverno-svc.kyverno.svc", [*webhook_hosts, *svc], days=days)

    def pem_key(k) -> str:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    def pem_cert(c) -> str:
        return c.public_bytes(serialization.Encoding.PEM).decode()

    for name, (c, k) in ((CA_SECRET, (ca, ca_key)), (TLS_SECRET, (cert, key))):
        secrets.append(kclient.V1Secret(metadata=kclient.V1ObjectMeta(name=name), type="kubernetes.io/tls",
                                        string_data={"tls.crt": pem_cert(c), "tls.key": pem_key(k)}))
    with ThreadPoolExecutor(max_workers=len(secrets) + 1) as pool:
        done = [pool.submit(core.create_namespaced_secret, NAMESPACE, sec) for sec in secrets]
        done.append(pool.submit(grant_reports_view, api))
        for f in done:
            f.result()


REPORTS_SA = "kyverno-reports-controller"


def grant_reports_view(api) -> None:
    """Read access for the reports controller's service account, as Kyverno's chart grants it in a
    cluster. Out of cluster nothing runs as that account, but Kyverno v1.18 checks its
    permissions before it calls an ImageValidatingPolicy Ready (RBACPermissionsGranted, even with
    background evaluation off): without them the policy is never Ready."""
    from kubernetes import client as kclient

    rbac = kclient.RbacAuthorizationV1Api(api)
    name = "labgate:kyverno-reports-view"
    rbac.create_cluster_role(kclient.V1ClusterRole(metadata=kclient.V1ObjectMeta(name=name), rules=[
        kclient.V1PolicyRule(api_groups=["*"], resources=["*"], verbs=["get", "list", "watch"])]))
    rbac.create_cluster_role_binding(kclient.V1ClusterRoleBinding(
        metadata=kclient.V1ObjectMeta(name=name), role_ref=kclient.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
        subjects=[kclient.RbacV1Subject(kind="ServiceAccount", name=REPORTS_SA, namespace=NAMESPACE)]))


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
    allow_insecure_registry: bool = True,
    repository: str | None = None,
    cosign_oci11: bool = False,
) -> dict[str, Any]:
    """A kyverno.io/v1 ClusterPolicy verifying cosign key signatures (no transparency log).

    ``allow_insecure_registry`` renders ``imageRegistryCredentials.allowInsecureRegistry``: Kyverno
    v1.19 verifies a pod that carries imagePullSecrets with a registry client of its own, made
    without the global --allowInsecureRegistry (pkg/engine/factories/registryclientfactory.go), so a
    plain-http registry needs it in the policy, with the pull secret (that client reads no
    --imagePullSecrets). ``repository``: where the signatures are stored
    when not next to the image (cosign's COSIGN_REPOSITORY); ``cosign_oci11``: look for them as
    OCI 1.1 referrers."""
    public_keys, use_cache = _mutated(name, list(public_keys), use_cache)
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
    if allow_insecure_registry:
        # that client reads no --imagePullSecrets either: name the read-only robot's secret here
        verify["imageRegistryCredentials"] = {"allowInsecureRegistry": True, "secrets": [PULL_SECRET]}
    if repository:
        verify["repository"] = repository
    if cosign_oci11:
        verify["cosignOCI11"] = True  # signatures stored as OCI 1.1 referrers (cosign --registry-referrers-mode=oci-1-1)
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


IVP_MESSAGE = "the image is not signed by a trusted key"


CLUSTER_POLICY_ONLY = frozenset({"verify_type", "use_cache", "kinds", "cosign_oci11"})


def render_image_validating_policy(
    *,
    name: str,
    image_references: list[str],
    public_keys: list[str],
    count: int | None = 1,
    failure_action: str | None = "Enforce",
    failure_policy: str = "Fail",
    mutate_digest: bool | None = True,
    verify_digest: bool = True,
    required: bool = True,
    timeout_seconds: int = 15,
    allow_insecure_registry: bool = True,
    repository: str | None = None,
    **cluster_policy_only: Any,
) -> dict[str, Any]:
    """The same verification as a policies.kyverno.io/v1 ImageValidatingPolicy (the CEL policy
    kind that replaces ClusterPolicy verifyImages), from the arguments of render_cluster_policy.

    One attestor per key; the validation counts the attestors whose key verifies every container's
    image: ``count`` n asks for at least n, None for all of them. What only a ClusterPolicy has
    (CLUSTER_POLICY_ONLY) is taken as this kind documents it: ``verify_type`` (a cosign v3 bundle
    is detected, not chosen), ``use_cache`` (verification results are always cached),
    ``cosign_oci11`` (no such switch) and ``kinds`` (Pod controllers are covered by autogen).
    Background evaluation is off: the harness judges admission, and a background scan needs list
    permissions the reports controller lacks out of cluster (the policy would never be Ready)."""
    unknown = set(cluster_policy_only) - CLUSTER_POLICY_ONLY
    if unknown:
        raise TypeError(f"render_image_validating_policy: unexpected arguments {sorted(unknown)}")
    public_keys, _ = _mutated(name, list(public_keys), False)
    attestors = []
    for i, pem in enumerate(public_keys):
        cosign: dict[str, Any] = {"key": {"data": pem.strip()}, "ctlog": {"insecureIgnoreTlog": True, "insecureIgnoreSCT": True}}
        if repository:
            cosign["source"] = {"repository": repository}
        attestors.append({"name": f"k{i}", "cosign": cosign})
    listed = ", ".join(f"attestors.{a['name']}" for a in attestors)
    need = f">= {count}" if count is not None else f"== {len(attestors)}"
    credentials: dict[str, Any] = {"secrets": [PULL_SECRET]}
    if allow_insecure_registry:
        credentials["allowInsecureRegistry"] = True
    config: dict[str, Any] = {"verifyDigest": verify_digest, "required": required}
    if mutate_digest is not None:
        config["mutateDigest"] = mutate_digest
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ImageValidatingPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "labgate"}},
        "spec": {
            "validationActions": ["Audit"] if failure_action == "Audit" else ["Deny"],
            "failurePolicy": failure_policy,
            "webhookConfiguration": {"timeoutSeconds": timeout_seconds},
            "evaluation": {"background": {"enabled": False}},
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                                     "resources": ["pods"]}]},
            "matchImageReferences": [{"glob": ref} for ref in image_references],
            "credentials": credentials,
            "validationConfigurations": config,
            "attestors": attestors,
            "validations": [{
                "expression": f"images.containers.map(image, verifyImageSignatures(image, [{listed}])).all(e, e {need})",
                "message": IVP_MESSAGE,
            }],
        },
    }


@dataclass(frozen=True)
class PolicyKind:
    """A Kyverno policy kind that verifies image signatures, as the harness renders and reads it."""

    kind: str
    short: str  # the test id: cpol, ivpol
    group: str
    version: str
    plural: str
    render: Callable[..., dict[str, Any]]

    def ready(self, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if self.kind == "ImageValidatingPolicy":
            return bool((status.get("conditionStatus") or {}).get("ready"))
        return policy_ready(status)

    def reflects(self, obj: dict[str, Any], spec: dict[str, Any]) -> bool | None:
        return ivp_status_reflects(obj, spec) if self.kind == "ImageValidatingPolicy" else status_reflects(obj, spec)


CLUSTER_POLICY = PolicyKind("ClusterPolicy", "cpol", "kyverno.io", "v1", "clusterpolicies", render_cluster_policy)
IMAGE_VALIDATING_POLICY = PolicyKind("ImageValidatingPolicy", "ivpol", "policies.kyverno.io", "v1", "imagevalidatingpolicies",
                                     render_image_validating_policy)
POLICY_KINDS = {k.kind: k for k in (CLUSTER_POLICY, IMAGE_VALIDATING_POLICY)}


def kind_of(body: dict[str, Any]) -> PolicyKind:
    return POLICY_KINDS[body.get("kind", "ClusterPolicy")]


_RENDERED_KEYS: dict[str, list[str]] = {}


def _mutated(name: str, public_keys: list[str], use_cache: bool) -> tuple[list[str], bool]:
    """labgate.mutations: what a deliberately wrong policy would hold instead."""
    from labgate import mutations

    if mutations.on("policy-trusts-other-key"):
        from labgate.signing import KeyPair

        public_keys = [KeyPair.generate().public_pem().decode()]
    elif mutations.on("old-key-never-retired"):
        kept = _RENDERED_KEYS.setdefault(name, [])
        kept += [k for k in public_keys if k not in kept]
        public_keys = list(kept)
    if mutations.on("cache-off"):
        use_cache = False
    return public_keys, use_cache


def dump(policy: dict[str, Any]) -> str:
    return yaml.safe_dump(policy, sort_keys=False)


def policy_ready(status: dict[str, Any] | None) -> bool:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _verify_view(verify: dict[str, Any]) -> tuple:
    """What of a verifyImages entry decides admission (Kyverno fills in defaults around it)."""
    attestors = tuple(
        (a.get("count"), tuple(" ".join(str((e.get("keys") or {}).get("publicKeys", "")).split()) for e in a.get("entries") or []))
        for a in verify.get("attestors") or []
    )
    return (verify.get("type", "Cosign"), tuple(verify.get("imageReferences") or ()), verify.get("required", True),
            verify.get("useCache", True), verify.get("verifyDigest", True), verify.get("mutateDigest", True),
            verify.get("repository", ""), bool(verify.get("cosignOCI11")), attestors)


def status_reflects(obj: dict[str, Any], spec: dict[str, Any]) -> bool | None:
    """Whether a ClusterPolicy's status was computed from ``spec``: its autogen rules (the same rules
    for Pod controllers) carry the spec's verifyImages. None when the policy has no autogen rules
    (it does not match Pods), so the status cannot tell."""
    rules = ((obj.get("status") or {}).get("autogen") or {}).get("rules") or []
    if not rules:
        return None
    want = [_verify_view(v) for r in spec["spec"]["rules"] for v in r.get("verifyImages") or []]
    got = [_verify_view(v) for r in rules for v in r.get("verifyImages") or []]
    return bool(want) and all(w in got for w in want)


def ivp_status_reflects(obj: dict[str, Any], spec: dict[str, Any]) -> bool | None:
    """Whether an ImageValidatingPolicy's status was computed from ``spec``: each autogen config
    (the policy for Pod controllers) carries the spec's attestors and validation settings. None
    without autogen configs."""
    configs = ((obj.get("status") or {}).get("autogen") or {}).get("configs") or {}
    if not configs:
        return None

    def view(s: dict[str, Any]) -> tuple:
        keys = tuple(" ".join(str(((a.get("cosign") or {}).get("key") or {}).get("data", "")).split()) for a in s.get("attestors") or [])
        cfg = s.get("validationConfigurations") or {}
        return (keys, tuple(m.get("glob") for m in s.get("matchImageReferences") or []), s.get("failurePolicy", "Fail"),
                (s.get("webhookConfiguration") or {}).get("timeoutSeconds"), cfg.get("required", True), cfg.get("verifyDigest", True),
                cfg.get("mutateDigest", True), tuple(s.get("validationActions") or ()))

    want = view(spec["spec"])
    return all(view(c.get("spec") or {}) == want for c in configs.values())


def wait_policy_ready(custom_api, name: str, timeout: float = 120.0, spec: dict[str, Any] | None = None,
                      kind: PolicyKind | None = None) -> float:
    """Poll a policy (a ClusterPolicy unless ``kind`` or ``spec`` says otherwise) until it reports
    Ready and, given the ``spec`` just written, until its status belongs to that spec; returns the
    seconds it took."""
    from labgate.process import kube_retry, wait_until

    pk = kind or (kind_of(spec) if spec else CLUSTER_POLICY)
    t0 = time.monotonic()

    def ready() -> bool:
        obj = custom_api.get_cluster_custom_object(pk.group, pk.version, pk.plural, name)
        if not pk.ready(obj):
            return False
        return spec is None or pk.reflects(obj, spec) is not False

    # Kyverno takes a policy in within tens of milliseconds: a coarser poll would add its interval to
    # every policy a test applies
    wait_until(ready, timeout=timeout, what=f"{pk.kind} {name} Ready for its new spec", interval=0.02, retry_on=kube_retry())
    return time.monotonic() - t0
