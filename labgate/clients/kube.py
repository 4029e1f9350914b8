"""Admission client: create Pods and Deployments through the real kube-apiserver and read what
Kyverno decided (admitted, the stored image after mutation, or the denial message)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from labgate.components import kyverno as kv
from labgate.redact import redact


def preload() -> None:
    """Load the Kubernetes client and the API classes the harness calls. The client loads each API
    class on first use, CoreV1Api alone in half a second of CPU: a process that will talk to the
    API starts this in a thread while it waits for something else (labgate.clients.kube.preloading)."""
    import kubernetes.client as k
    import kubernetes.config  # noqa: F401
    import kubernetes.utils  # noqa: F401

    for name in ("CoreV1Api", "CustomObjectsApi", "AdmissionregistrationV1Api", "RbacAuthorizationV1Api", "ApiextensionsV1Api",
                 "AppsV1Api", "CoordinationV1Api"):
        getattr(k, name)


def preloading() -> None:
    """preload() in a daemon thread. Only where nothing else imports what the Kubernetes client
    does (requests, oauthlib, ...) meanwhile: two threads importing one package with an import
    cycle can hand one of them a partially initialised module (the stack start imports its own,
    disjoint set; a worker collecting the suites does not)."""
    import threading

    threading.Thread(target=preload, name="labgate-kubernetes-preload", daemon=True).start()


@dataclass
class Outcome:
    kind: str
    name: str
    image: str
    admitted: bool
    message: str = ""
    stored_image: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    phase: str = ""  # on a cluster with nodes: Running (an admitted pod started), absent (a denied one), or why not

    def record(self, expected: str) -> dict[str, Any]:
        return {"object": f"{self.kind}/{self.name}", "image": self.image, "expected": expected,
                "observed": "admitted" if self.admitted else "denied", "message": self.message,
                "stored_image": self.stored_image, "seconds": round(self.seconds, 3), "phase": self.phase}


def normalize(message: str) -> str:
    """Kyverno's denial is YAML-folded: collapse whitespace so substrings can be asserted."""
    return redact(re.sub(r"\s+", " ", message or "").strip())


def _api_message(exc: Any) -> str:
    import json

    try:
        return json.loads(exc.body).get("message", "")
    except (ValueError, TypeError, AttributeError):
        return str(exc)


class Admission:
    """``dry_run``: every write is a server-side dry run (read-only stacks: the apiserver and
    Kyverno's webhooks judge the object, nothing is stored)."""

    def __init__(self, kubeconfig: str, context: str = "", dry_run: bool = False,
                 pull_secret: tuple[str, str, str] | None = None, run_pods: bool = False):
        """``run_pods`` (a cluster with nodes): an admitted pod must reach Running, pulled with
        ``pull_secret`` (registry host, robot, password) made in each test namespace; a denied pod
        must not exist."""
        from kubernetes import client as kclient
        from kubernetes import config as kconfig

        self.kc = kclient
        self.dry_run = dry_run
        self.pull_secret = pull_secret
        self.run_pods = run_pods
        self.api = kconfig.new_client_from_config(kubeconfig, context=context or None)
        self.core = kclient.CoreV1Api(self.api)
        self.apps = kclient.AppsV1Api(self.api)
        self.custom = kclient.CustomObjectsApi(self.api)

    # ------------------------------------------------------------------------------------------
    PULL_SECRET = "labgate-pull"

    def namespace(self, prefix: str = "adm") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(self.kc.V1Namespace(metadata=self.kc.V1ObjectMeta(name=name)))
        if self.pull_secret is not None:
            host, user, password = self.pull_secret
            self.core.create_namespaced_secret(name, self.kc.V1Secret(
                metadata=self.kc.V1ObjectMeta(name=self.PULL_SECRET), type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": kv.docker_config(host, user, password)}))
        return name

    def _pod_spec(self, image: str):
        return self.kc.V1PodSpec(
            containers=[self.kc.V1Container(name="app", image=image)], termination_grace_period_seconds=0,
            image_pull_secrets=[self.kc.V1LocalObjectReference(name=self.PULL_SECRET)] if self.pull_secret else None)

    def wait_running(self, ns: str, name: str, timeout: float = 120.0) -> str:
        """Running, or what kept the pod from it (the waiting reason and message) at the deadline."""
        deadline = time.monotonic() + timeout
        last = "Pending"
        while time.monotonic() < deadline:
            pod = self.core.read_namespaced_pod(name, ns)
            if pod.status.phase == "Running":
                return "Running"
            if pod.status.phase in ("Failed", "Succeeded"):
                return pod.status.phase
            for cs in pod.status.container_statuses or []:
                w = cs.state.waiting if cs.state else None
                if w is not None and w.reason:
                    last = f"{w.reason}: {normalize(w.message or '')}"[:300]
            time.sleep(0.3)
        return last

    def exists(self, ns: str, name: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self.core.read_namespaced_pod(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply_policy(self, policy: dict[str, Any], timeout: float = 120.0, wait: bool = True) -> float:
        """Server-side apply a policy (a ClusterPolicy or an ImageValidatingPolicy; no
        read-then-replace, so no 409 between writers) and (``wait``) wait until Kyverno reports
        Ready *for this spec*. Returns the seconds from the write to that.

        Kyverno sets no observedGeneration, and Ready stays True across an update; what does move is
        the status's autogen part, which Kyverno recomputes from the spec it just took in
        (labgate.components.kyverno.status_reflects, ivp_status_reflects)."""
        pk = kv.kind_of(policy)
        name = policy["metadata"]["name"]
        t0 = time.monotonic()
        self.custom.patch_cluster_custom_object(
            pk.group, pk.version, pk.plural, name, policy, field_manager="labgate", force=True,
            _content_type="application/apply-patch+yaml",
        )
        if not wait:
            return 0.0
        kv.wait_policy_ready(self.custom, name, timeout=timeout, spec=policy)
        if pk is kv.IMAGE_VALIDATING_POLICY:
            # Kyverno calls an ImageValidatingPolicy Ready ("Webhook configured") a moment before its
            # own webhook is in the configuration the apiserver calls (measured: up to 110 ms later)
            self.wait_webhook(f"-finegrained-{name}", timeout=timeout, suffix=True)
        else:
            # a ClusterPolicy verifies images in the mutating webhook; the validating one only checks
            # that it did (verifyImages.required). Ready can come before Kyverno has given the
            # mutating webhook its rules again (no policy of this failurePolicy left: none), and a pod
            # created meanwhile is refused as an "unverified image" (seen: R5 right after Ready)
            fp = ((policy.get("spec", {}).get("webhookConfiguration") or {}).get("failurePolicy") or "Fail").lower()
            for webhook in (f"mutate.kyverno.svc-{fp}", f"validate.kyverno.svc-{fp}"):
                self.wait_webhook(webhook, timeout=timeout, prefix=True)
        return time.monotonic() - t0

    def create_policy_raw(self, policy: dict[str, Any]) -> tuple[bool, str]:
        """Create a policy and report whether the apiserver (Kyverno's policy webhook) accepted it."""
        from kubernetes.client.rest import ApiException

        pk = kv.kind_of(policy)
        try:
            self.custom.create_cluster_custom_object(pk.group, pk.version, pk.plural, policy)
        except ApiException as exc:
            return False, normalize(_api_message(exc))
        return True, ""

    def delete_policy(self, name: str, kind: str = "ClusterPolicy") -> None:
        from kubernetes.client.rest import ApiException

        pk = kv.POLICY_KINDS[kind]
        try:
            self.custom.delete_cluster_custom_object(pk.group, pk.version, pk.plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def wait_policy_settled(self, name: str, kind: str = "ClusterPolicy", quiet: float = 1.0, timeout: float = 30.0) -> str:
        """Wait until a policy's resourceVersion has not moved for ``quiet`` seconds (Kyverno's
        status writes after a change have landed); returns it. Kyverno's verification cache keys
        its entries by the policy's resourceVersion, so a write, status included, starts it afresh."""
        deadline = time.monotonic() + timeout
        last, since = "", time.monotonic()
        while time.monotonic() < deadline:
            rv = self.policy_version(name, kind)
            if rv != last:
                last, since = rv, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return rv
            time.sleep(0.2)
        raise AssertionError(f"{kind} {name} was still being written {timeout:.0f}s after its change (resourceVersion {last})")

    def policy_version(self, name: str, kind: str = "ClusterPolicy") -> str:
        """The policy's resourceVersion: any write to it, Kyverno's status included, moves it."""
        pk = kv.POLICY_KINDS[kind]
        return self.custom.get_cluster_custom_object(pk.group, pk.version, pk.plural, name)["metadata"]["resourceVersion"]

    def policies(self, kind: str = "ClusterPolicy") -> list[dict[str, Any]]:
        """Every policy of ``kind`` in the cluster (an empty list where its CRD is not served)."""
        from kubernetes.client.rest import ApiException

        pk = kv.POLICY_KINDS[kind]
        try:
            return self.custom.list_cluster_custom_object(pk.group, pk.version, pk.plural, _request_timeout=10)["items"]
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise

    # ------------------------------------------------------------------------------------------
    def try_pod(self, ns: str, image: str, name: str | None = None, run: bool | None = None) -> Outcome:
        """Create a pod; on a cluster with nodes (``run``, default ``run_pods``) follow it: an
        admitted pod to Running (then it goes: a node holds a limited number of pods), a denied
        one to its absence. ``run=False`` asks for the decision only: a server-side dry run, which
        admission judges as it would the pod and which stores nothing."""
        from kubernetes.client.rest import ApiException

        name = name or f"pod-{uuid.uuid4().hex[:8]}"
        follow = self.run_pods if run is None else run
        dry = self.dry_run or (self.run_pods and run is False)
        body = self.kc.V1Pod(metadata=self.kc.V1ObjectMeta(name=name), spec=self._pod_spec(image))
        t0 = time.monotonic()
        try:
            pod = self.core.create_namespaced_pod(ns, body, **({"dry_run": "All"} if dry else {}))
        except ApiException as exc:
            out = Outcome("Pod", name, image, False, normalize(_api_message(exc)), seconds=time.monotonic() - t0)
            if follow and not dry:
                out.phase = "absent" if not self.exists(ns, name) else "exists after its denial"
            return out
        out = Outcome("Pod", name, image, True, stored_image=pod.spec.containers[0].image,
                      annotations=dict(pod.metadata.annotations or {}), seconds=time.monotonic() - t0)
        if follow and not dry:
            out.phase = self.wait_running(ns, name)
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        return out

    def drop_namespace(self, ns: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespace(ns)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def try_deployment(self, ns: str, image: str, name: str | None = None) -> Outcome:
        from kubernetes.client.rest import ApiException

        name = name or f"deploy-{uuid.uuid4().hex[:8]}"
        labels = {"app": name}
        body = self.kc.V1Deployment(
            metadata=self.kc.V1ObjectMeta(name=name),
            spec=self.kc.V1DeploymentSpec(
                replicas=1,
                selector=self.kc.V1LabelSelector(match_labels=labels),
                template=self.kc.V1PodTemplateSpec(metadata=self.kc.V1ObjectMeta(labels=labels), spec=self._pod_spec(image)),
            ),
        )
        t0 = time.monotonic()
        try:
            dep = self.apps.create_namespaced_deployment(ns, body, **({"dry_run": "All"} if self.dry_run else {}))
        except ApiException as exc:
            return Outcome("Deployment", name, image, False, normalize(_api_message(exc)), seconds=time.monotonic() - t0)
        return Outcome("Deployment", name, image, True, stored_image=dep.spec.template.spec.containers[0].image,
                       seconds=time.monotonic() - t0)

    def wait_webhook(self, webhook: str, timeout: float = 60.0, prefix: bool = False, suffix: bool = False) -> float:
        """Wait until Kyverno has registered ``webhook`` (e.g. validate.kyverno.svc-ignore; with
        ``prefix`` or ``suffix``, a webhook whose name starts or ends so) with rules: a policy's Ready
        condition does not say that every webhook configuration has caught up."""
        from labgate.process import kube_retry, wait_until

        t0 = time.monotonic()

        def named(name: str) -> bool:
            return name.startswith(webhook) if prefix else name.endswith(webhook) if suffix else name == webhook

        def registered() -> bool:
            return any(named(w.name) and w.rules for w in self._webhooks())

        wait_until(registered, timeout=timeout, what=f"Kyverno webhook {webhook}", interval=0.02, retry_on=kube_retry())
        return time.monotonic() - t0

    def webhook_timeouts(self, webhook: str) -> list[int]:
        """The timeoutSeconds of Kyverno's webhooks whose name starts with ``webhook`` and that have
        rules. Kyverno registers the largest of its own ``--webhookTimeout`` and the timeouts of the
        policies the webhook serves, so a policy can raise a webhook's timeout but never lower it."""
        return [w.timeout_seconds for w in self._webhooks() if w.name.startswith(webhook) and w.rules]

    def _webhooks(self) -> list:
        """Every webhook of Kyverno's validating and mutating webhook configurations."""
        adm = self.kc.AdmissionregistrationV1Api(self.api)
        cfgs = adm.list_validating_webhook_configuration(label_selector=kv.MANAGED_BY).items
        cfgs += adm.list_mutating_webhook_configuration(label_selector=kv.MANAGED_BY).items
        return [w for c in cfgs for w in (c.webhooks or [])]

    def webhook_configurations(self) -> list[str]:
        adm = self.kc.AdmissionregistrationV1Api(self.api)
        names = [c.metadata.name for c in adm.list_mutating_webhook_configuration(label_selector=kv.MANAGED_BY).items]
        names += [c.metadata.name for c in adm.list_validating_webhook_configuration(label_selector=kv.MANAGED_BY).items]
        return names
