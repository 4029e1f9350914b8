"""Faults with documented verdicts: a component down or slow, and what its documentation promises.

Each fault goes through the provider's abilities (stop/start, pause/resume), so this suite runs on
every provider that has them; each test restores the stack before it ends (the ability's context
manager starts the component again whatever happens) and proves it is restored. Each test has the
components it disrupts to itself (``disruptive(...)``); suites that do not use them run beside it.
The registry is whole again when it answers again, so its faults have it to themselves only during
the outage (``scope="outage"``): their set-up and their checks afterwards run beside other tests.

Where the promises come from:

- Kubernetes, "Dynamic Admission Control" (failurePolicy): with ``Fail`` an error calling the
  webhook (unreachable, or past timeoutSeconds) rejects the request; with ``Ignore`` it is allowed.
- The apiserver's ``/readyz`` includes an etcd check, and the apiserver recovers when etcd returns;
  clients (Kyverno's informers) reconnect after an apiserver restart; objects live in etcd.
- Registries keep their content in their storage directory across restarts.
- zot's htpasswd accounts do not depend on the identity provider; Pocket ID keeps its signing key.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import requests

from labgate import abilities, locks
from labgate.components import kyverno as kv
from labgate.clients.oci import OciClient
from labgate.errors import StackError
from labgate.process import kube_retry, wait_until
from suites.admission.conftest import admitted, denied_with

pytestmark = [pytest.mark.area("faults"), pytest.mark.disruptive]
K8S = "Kubernetes docs, Dynamic Admission Control: failurePolicy"


def _admits_again(adm, ns, img, timeout: float = 90.0, unsigned=None) -> None:
    """After a fault: the stack is restored when a signed image is admitted again (and, given
    ``unsigned``, an unsigned one denied again: Kyverno's webhooks are back)."""
    def restored() -> bool:
        if not adm.try_pod(ns, img.by_digest, run=False).admitted:
            return False
        return unsigned is None or not adm.try_pod(ns, unsigned.by_digest, run=False).admitted

    wait_until(restored, timeout=timeout, what="admission restored after the fault", interval=0.1, retry_on=kube_retry())


def _leases_renewed(adm, since: float, timeout: float = 60.0) -> None:
    kv.wait_leases_renewed(adm.api, since, timeout)


# ----------------------------------------------------------------------------------------------
# registry


@pytest.mark.disruptive("registry", scope="outage")
@pytest.mark.requires("registry")
@pytest.mark.spec("distribution and zot storage: content is kept on disk across a restart")
def test_registry_restart_keeps_content(stack, ci):
    life = abilities.need(stack, abilities.LIFECYCLE, "registry")
    img = ci.push_image("zeroclaw/faults/kept", "v1", seed="kept across a registry restart")
    with life.down("registry"):
        # refused locally; through a cluster's port mapping the connection is taken and nothing answers
        with pytest.raises((requests.ConnectionError, requests.Timeout)):
            requests.get(stack.registry_url + "/v2/", timeout=3)
    got = ci.get_manifest("zeroclaw/faults/kept", "v1")
    assert got.status_code == 200 and got.headers.get("Docker-Content-Digest") == img.digest, (
        f"after the restart the registry MUST serve what it held: {got.status_code} {got.headers.get('Docker-Content-Digest')}")


# the webhook's timeoutSeconds while the registry answers nothing: the smallest Kubernetes accepts
SLOW_TIMEOUT = 1


def _settle_timeouts(adm, webhook: str, settle: float = 10.0) -> None:
    """Let Kyverno reconcile the webhook's timeoutSeconds down to this test's policy (a policy deleted
    just before may still hold it up). Kyverno's own --webhookTimeout is the floor: where that is
    larger (a chart's default), the verdict is the same, only reached later."""
    try:
        wait_until(lambda: max(adm.webhook_timeouts(webhook), default=0) <= SLOW_TIMEOUT, timeout=settle,
                   what=f"{webhook} at timeoutSeconds {SLOW_TIMEOUT}", interval=0.2, retry_on=kube_retry())
    except StackError:
        pass


@pytest.mark.disruptive("registry", scope="outage")
@pytest.mark.requires("kubernetes", "admission.kyverno")
@pytest.mark.spec(f"{K8S}: a webhook past timeoutSeconds under Fail rejects; under Ignore admits")
@pytest.mark.parametrize("failure_policy", ["Fail", "Ignore"])
def test_registry_slow(stack, adm, ns, keys, publish, policy, policy_kind, record, failure_policy):
    """The registry accepts connections and answers nothing (paused) for longer than the webhook's
    timeoutSeconds: the apiserver gives up on Kyverno and applies the failure policy."""
    pause = abilities.need(stack, abilities.PAUSE, "registry")
    img = publish("app", sign_with=[keys["K1"]])
    suffix = failure_policy.lower()
    # the policy lives only inside the outage window, where no other test runs (every suite uses the
    # registry): its short timeout becomes the webhook's, which a test beside it must not meet, and a
    # policy of a test beside it (R9's 14 s) would raise the timeout again
    with locks.outage("registry"):
        policy([keys["K1"]], failure_policy=failure_policy, timeout_seconds=SLOW_TIMEOUT, required=failure_policy == "Fail")
        for webhook in (f"mutate.kyverno.svc-{suffix}", f"validate.kyverno.svc-{suffix}"):
            adm.wait_webhook(webhook, prefix=True)
        _settle_timeouts(adm, f"mutate.kyverno.svc-{suffix}")
        with pause.paused("registry"):
            out = record("F-slow", adm.try_pod(ns, img.by_digest), "admitted" if failure_policy == "Ignore" else "denied")
            if failure_policy == "Fail":
                denied_with(out, "failed calling webhook")
                assert any(s in out.message for s in ("context deadline exceeded", "Timeout", "timeout")), (
                    f"the rejection MUST be the webhook's timeout: {out.message}")
            else:
                admitted(out)
        _admits_again(adm, ns, img)
        adm.delete_policy(policy.name, policy_kind.kind)


# ----------------------------------------------------------------------------------------------
# Kyverno


@pytest.mark.disruptive("kyverno")
@pytest.mark.requires("kubernetes", "admission.kyverno")
@pytest.mark.spec(f"{K8S}: Kyverno unreachable under Fail rejects every matching request; under Ignore admits")
@pytest.mark.parametrize("failure_policy", ["Fail", "Ignore"])
def test_kyverno_down(stack, adm, ns, keys, publish, policy, record, failure_policy):
    life = abilities.need(stack, abilities.LIFECYCLE, "kyverno")
    signed = publish("app", sign_with=[keys["K1"]])
    unsigned = publish("other")
    policy([keys["K1"]], failure_policy=failure_policy, required=failure_policy == "Fail")
    if failure_policy == "Ignore":
        for webhook in ("mutate.kyverno.svc-ignore", "validate.kyverno.svc-ignore"):
            adm.wait_webhook(webhook)
    # stopping Kyverno on a cluster is scaling its Deployment to zero, and Kyverno then deletes its
    # webhook configurations itself (it is "going down"); a stopped process (local) leaves them
    removes = stack.provider in ("kind", "k3d")
    with life.down("kyverno"):
        # the admission controller's own (the cleanup controller keeps its ttl and cleanup webhooks)
        left = [w for w in adm.webhook_configurations() if w.startswith("kyverno-resource-")]
        if removes:
            assert not left, f"Kyverno scaled to zero MUST remove its webhook configurations: {left}"
        else:
            assert left, "a stopped Kyverno process leaves its webhook configurations behind"
        rejects = failure_policy == "Fail" and not removes
        for img in (signed, unsigned):
            out = record("F-kyverno", adm.try_pod(ns, img.by_digest), "denied" if rejects else "admitted")
            if rejects:
                denied_with(out, "failed calling webhook", "kyverno.svc-fail")
            else:
                admitted(out)
    _admits_again(adm, ns, signed, unsigned=unsigned)
    denied_with(record("F-kyverno", adm.try_pod(ns, unsigned.by_digest), "denied"), "no signatures found")


# ----------------------------------------------------------------------------------------------
# the control plane


def _readyz(stack, check: str = "") -> requests.Response:
    """GET /readyz?verbose (given ``check``, only that check: /readyz/<check>) with the run's
    kubeconfig credentials (a token or a client certificate)."""
    from kubernetes import config as kconfig

    cfg = kconfig.new_client_from_config(abilities.need(stack, abilities.KUBECONFIG).kubeconfig()).configuration
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file else None
    return requests.get(cfg.host + (f"/readyz/{check}" if check else "/readyz?verbose"), headers={"Authorization": token} if token else {}, cert=cert,
                        verify=cfg.ssl_ca_cert or False, timeout=5)


# client-go leader election (which Kyverno uses) ends the process when it cannot renew its lease
# within the renew deadline; its platform (the kubelet, restartPolicy Always) starts it again
LEADER_ELECTION = "a leader-elected controller exits when it cannot renew its lease (client-go leaderelection), and is restarted"


def _etcd_is_down(stack, adm) -> None:
    # the etcd check alone: /readyz runs its etcd and etcd-readiness checks one after the other,
    # each waiting out its timeout on an etcd that is gone
    def etcd_not_ready() -> bool:
        return _readyz(stack, "etcd").status_code != 200

    wait_until(etcd_not_ready, timeout=30, what="the apiserver to report etcd unready", interval=0.1)


def _apiserver_is_down(stack, adm) -> None:
    with pytest.raises(Exception) as info:
        adm.core.list_namespace(_request_timeout=3)
    assert isinstance(info.value, kube_retry()), f"the API MUST be unreachable while stopped: {info.value!r}"


@pytest.mark.disruptive("etcd", "kube-apiserver")
@pytest.mark.requires("kubernetes", "admission.kyverno")
@pytest.mark.spec("kube-apiserver /readyz (etcd check) and restarts: objects live in etcd, the control plane recovers, "
                  "Kyverno's informers reconnect")
@pytest.mark.parametrize("component,is_down,crash", [("etcd", _etcd_is_down, True), ("kube-apiserver", _apiserver_is_down, False)],
                         ids=["etcd", "kube-apiserver"])
def test_control_plane_restart(stack, adm, ns, keys, publish, policy, policy_kind, record, request, scenario, component,
                               is_down, crash):
    """The apiserver is stopped (its graceful shutdown); etcd crashes (killed, no shutdown: what an
    OOM kill or a lost node does to it)."""
    life = abilities.need(stack, abilities.LIFECYCLE, component)
    img = publish("app", sign_with=[keys["K1"]])
    unsigned = publish("other")
    first = policy.name
    policy([keys["K1"]], references=[f"{img.ref}*", f"{unsigned.ref}*"])  # not the images of the policies made after
    with life.supervised("kyverno", LEADER_ELECTION) as restarts:
        with life.down(component, crash=crash):
            is_down(stack, adm)
        wait_until(lambda: _readyz(stack).status_code == 200, timeout=90, what="the apiserver ready again", interval=0.1)
        back, back_wall = time.monotonic(), time.time()
        with _kyverno_restored_if_stuck(life, component):
            _admits_again(adm, ns, img, unsigned=unsigned, timeout=RECOVERY)
            denied_with(record(f"F-{component}", adm.try_pod(ns, unsigned.by_digest), "denied"), "no signatures found")
            adm.delete_policy(first, policy_kind.kind)
            _new_policies_enforced(adm, ns, keys, publish, policy, scenario, first, timeout=RECOVERY)
            _leases_renewed(adm, back_wall)  # renewed since the API's return (every second: by now, as a rule)
    request.node.user_properties.append(("measured", f"Kyverno restarted {len(restarts)} time(s) (leader election); a policy "
                                                     f"created after the restart enforced {time.monotonic() - back:.1f}s after the API's return"))


# how long Kyverno may take to answer as before and to see new policies once the API is back.
# client-go retries a broken list/watch after a backoff that doubles up to 30 s, with up to 100 %
# jitter, and Kyverno's webhook controller writes its webhook configurations from an informer's
# cache: until that informer's next attempt its updates conflict ("the object has been modified",
# seen for 35 s after an etcd crash) and a new ImageValidatingPolicy gets no webhook. Up to a
# minute is client-go as designed; beyond that Kyverno is stuck.
RECOVERY = 90.0


@contextlib.contextmanager
def _kyverno_restored_if_stuck(life, component: str):
    """A Kyverno that has not recovered within RECOVERY fails the test, and is restarted so that the
    tests after it find a working stack (one failure, not every admission test after it). Seen
    after an apiserver restart: Kyverno's webhook controller looping on 'the object has been
    modified' for its MutatingWebhookConfiguration, every signed image denied as unverified."""
    try:
        yield
    except (StackError, AssertionError) as exc:
        life.restart("kyverno")
        raise AssertionError(f"Kyverno had not recovered {RECOVERY:.0f}s after the {component} came back (restarted it for the "
                             f"tests after this one): {exc}") from None


def _new_policies_enforced(adm, ns, keys, publish, policy, scenario, first: str, timeout: float = 60.0) -> None:
    """Kyverno's informers are back: a policy created after the restart, of each kind the run uses,
    is enforced (its informer may still be waiting out a reconnect backoff while the policy that
    was there before answers; the next test's policy would not be seen). Enforced is what counts,
    so the policies are not waited on to report Ready: Kyverno's status writer reconnects on its
    own schedule, and the next test's policy waits for it if it must."""
    kinds = [kv.POLICY_KINDS[kind] for kind in scenario.signing.policy.kinds]
    unsigned = {pk.short: publish(f"after-{pk.short}") for pk in kinds}
    for pk in kinds:  # each for its own image only: neither may pass for the other
        policy([keys["K1"]], name=f"{first}-{pk.short}", kind=pk, references=[f"{unsigned[pk.short].ref}*"], wait=False)
    for pk in kinds:
        img = unsigned[pk.short]
        wait_until(lambda: not adm.try_pod(ns, img.by_digest, run=False).admitted, timeout=timeout, interval=0.1,
                   what=f"a {pk.kind} created after the restart enforced", retry_on=kube_retry())
    for pk in kinds:
        adm.delete_policy(f"{first}-{pk.short}", pk.kind)


# ----------------------------------------------------------------------------------------------
# the identity provider


@pytest.mark.disruptive("identity")
@pytest.mark.requires("identity.pocket-id", "registry.auth")
@pytest.mark.spec("zot htpasswd accounts do not depend on the identity provider; Pocket ID keeps its signing key")
def test_identity_provider_down(stack, scenario):
    life = abilities.need(stack, abilities.LIFECYCLE, "identity")
    robot = scenario.identities.robots[0].name
    client = OciClient(stack.registry_url, (robot, stack.password(robot)))
    jwks = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=5).json()
    with life.down("identity"):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{stack.issuer_url}/.well-known/openid-configuration", timeout=3)
        assert client.catalog().status_code == 200, "a robot MUST keep working while the identity provider is down"
    after = requests.get(f"{stack.issuer_url}/.well-known/jwks.json", timeout=5).json()
    assert {k["kid"] for k in after["keys"]} == {k["kid"] for k in jwks["keys"]}, "the signing keys MUST survive a restart"
