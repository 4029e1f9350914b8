"""Key rotation, the runbook a lab follows (shared/reference/admission-signing.md §7, R1-R10):
widen trust to [K1, K2] with count 1, switch CI to K2, re-sign kept digests, narrow to [K2].
Each step is timed; the summary page draws the rotation as a timeline with the measured time from a
policy update to its enforcement. Each case that applies a policy runs under every policy kind the
scenario names, [cpol] and [ivpol], as the admission suite's do."""

from __future__ import annotations

import json
import time

import pytest

from labgate import signing
from labgate.errors import StackError
from labgate.process import wait_until
from suites.admission.conftest import IVP_DENIED, IVPOL, admitted, by_kind, cosign, denied_with

pytestmark = [pytest.mark.requires("kubernetes", "admission.kyverno"), pytest.mark.area("rotation")]
KV = "Kyverno v1.19 verifyImages / ImageValidatingPolicy"
NO_MATCH = ("no matching signatures",)


@pytest.fixture
def timeline(request: pytest.FixtureRequest):
    """Events with wall-clock times for the summary page's rotation timeline."""

    def _event(case: str, event: str, **extra) -> None:
        row = {"t": time.time(), "case": case, "event": event, **extra}
        request.node.user_properties.append(("timeline", json.dumps(row)))

    return _event


def enforce_time(adm, ns, image: str, want_admitted: bool, started: float, timeout: float = 60.0,
                 *, because: tuple[str, ...] = ()) -> float:
    """Poll with pods until the decision for ``image`` is the wanted one; seconds since ``started``.

    A denial counts only when its message carries every one of ``because``: a pod denied for another
    reason (the registry unreachable, say) is not the policy taking effect."""
    last: dict[str, object] = {}

    def decided() -> bool:
        out = adm.try_pod(ns, image, run=False)  # the decision only: the probes need not start
        last["out"] = out
        if want_admitted:
            return out.admitted
        return not out.admitted and all(n in out.message for n in because)

    try:
        wait_until(decided, timeout=timeout, what=f"policy enforcement for {image}", interval=0.2)
    except StackError:
        out = last.get("out")
        seen = "nothing" if out is None else ("admitted" if out.admitted else f"denied: {out.message}")
        want = "admitted" if want_admitted else "denied" + (f" with {' and '.join(repr(b) for b in because)}" if because else "")
        raise AssertionError(f"{image} was not {want} within {timeout:.0f}s of the policy change; the last answer: {seen}") from None
    return time.monotonic() - started


def _pub(tmp_path, key: signing.KeyPair, name: str):
    p = tmp_path / f"{name}.pub"
    p.write_bytes(key.public_pem())
    return p


def _delete_signatures(ci, repo: str, digest: str) -> None:
    tag = signing.sig_tag(digest)
    head = ci.head_manifest(repo, tag, accept=(signing.MT_MANIFEST,))
    assert head.status_code == 200, f"{repo}:{tag} should exist before it is deleted"
    r = ci.delete_manifest(repo, head.headers["Docker-Content-Digest"])
    assert r.status_code == 202, f"deleting the signature manifest: {r.status_code}"


# ----------------------------------------------------------------------------------------------
# the runbook


@pytest.mark.case("R1")
@pytest.mark.spec(f"{KV}: an image signed with K2 before the policy knows K2 is denied")
def test_r1_new_key_before_policy_is_denied(adm, ns, keys, publish, policy, record, timeline, policy_kind):
    policy([keys["K1"]])
    timeline("R1", "policy [K1]")
    img = publish("app", sign_with=[keys["K2"]])
    denied_with(record("R1", adm.try_pod(ns, img.by_digest), "denied"), *by_kind(policy_kind, NO_MATCH, IVP_DENIED))
    timeline("R1", "K2-only image denied")


@pytest.mark.case("R2")
@pytest.mark.spec(f"{KV}: attestor [K1, K2] with count 1 admits either key")
def test_r2_widened_trust_admits_either_key(adm, ns, keys, publish, policy, record, timeline):
    k1 = publish("k1", sign_with=[keys["K1"]])
    k2 = publish("k2", sign_with=[keys["K2"]])
    both = publish("both", sign_with=[keys["K1"], keys["K2"]])
    policy([keys["K1"]])
    t0 = time.monotonic()
    ready = policy([keys["K1"], keys["K2"]], count=1)
    timeline("R2", "policy [K1, K2] count 1 Ready", seconds=round(ready, 3))
    took = enforce_time(adm, ns, k2.by_digest, True, t0)
    timeline("R2", "K2-only image admitted (propagation)", propagation=round(took, 3))
    for img in (k1, k2, both):
        admitted(record("R2", adm.try_pod(ns, img.by_digest), "admitted"))


@pytest.mark.case("R3")
@pytest.mark.spec(f"{KV}: attestor [K1, K2] without count requires both signatures")
def test_r3_without_count_both_keys_are_required(adm, ns, keys, publish, policy, record, timeline, policy_kind):
    policy([keys["K1"], keys["K2"]], count=None)
    timeline("R3", "policy [K1, K2] without count")
    for name, key in (("k1", keys["K1"]), ("k2", keys["K2"])):
        img = publish(name, sign_with=[key])
        denied_with(record("R3", adm.try_pod(ns, img.by_digest), "denied"), *by_kind(policy_kind, ("failed to verify image",), IVP_DENIED))
    both = publish("both", sign_with=[keys["K1"], keys["K2"]])
    admitted(record("R3", adm.try_pod(ns, both.by_digest), "admitted"))


@pytest.mark.case("R4")
@pytest.mark.spec("cosign v3.1.2 verify --key: kept digests re-signed with K2 verify with K2")
def test_r4_resigned_digests_verify_with_new_key(ci, keys, publish, stack, tmp_path, timeline):
    kept = [publish(f"kept{i}", sign_with=[keys["K1"]]) for i in range(2)]
    for img in kept:
        signing.sign_legacy(ci, img.repo, img.digest, keys["K2"])
    timeline("R4", "kept digests re-signed with K2")
    pub2 = _pub(tmp_path, keys["K2"], "k2")
    for img in kept:
        sig = signing.inspect_legacy(ci, img.repo, img.digest, keys["K2"].public_pem())
        assert len([s for s in sig if s.get("ok")]) == 1, f"exactly one layer verifies with K2: {sig}"
        out = cosign(stack, "verify", "--key", str(pub2), "--insecure-ignore-tlog=true", "--new-bundle-format=false", img.for_cosign)
        assert out.returncode == 0, f"cosign verify --key K2 refused {img.by_digest}: {out.stderr[-500:]}"
        payloads = json.loads(out.stdout)
        assert any(p["critical"]["image"]["docker-manifest-digest"] == img.digest for p in payloads)
        manifest = ci.get_manifest(img.repo, signing.sig_tag(img.digest), accept=(signing.MT_MANIFEST,)).json()
        assert len(manifest["layers"]) == 2, "the legacy .sig manifest holds the K1 and the K2 signature"
    timeline("R4", "cosign verify --key K2 passes for every kept digest")


@pytest.mark.case("R5")
@pytest.mark.spec(f"{KV}: narrowed trust [K2] denies K1-only and unsigned, admits K2")
def test_r5_narrowed_trust(adm, ns, keys, publish, policy, record, timeline, policy_kind):
    k1 = publish("k1", sign_with=[keys["K1"]])
    k2 = publish("k2", sign_with=[keys["K2"]])
    unsigned = publish("unsigned")
    policy([keys["K1"], keys["K2"]], count=1)
    admitted(adm.try_pod(ns, k1.by_digest))
    t0 = time.monotonic()
    ready = policy([keys["K2"]], count=1)
    timeline("R5", "policy [K2] Ready", seconds=round(ready, 3))
    took = enforce_time(adm, ns, k1.by_digest, False, t0, because=by_kind(policy_kind, NO_MATCH, IVP_DENIED))
    timeline("R5", "K1-only image denied (propagation)", propagation=round(took, 3))
    denied_with(record("R5", adm.try_pod(ns, k1.by_digest), "denied"), *by_kind(policy_kind, NO_MATCH, IVP_DENIED))
    admitted(record("R5", adm.try_pod(ns, k2.by_digest), "admitted"))
    denied_with(record("R5", adm.try_pod(ns, unsigned.by_digest), "denied"), *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))


@pytest.mark.case("R6")
@pytest.mark.spec(f"{KV}: a new K1 signature after retirement is denied")
def test_r6_retired_key_signs_again(adm, ns, keys, publish, policy, record, timeline, policy_kind):
    policy([keys["K2"]], count=1)
    img = publish("late", sign_with=[keys["K1"]])
    denied_with(record("R6", adm.try_pod(ns, img.by_digest), "denied"), *by_kind(policy_kind, NO_MATCH, IVP_DENIED))
    timeline("R6", "new K1 signature denied after retirement")


@pytest.mark.case("R7")
@pytest.mark.spec(f"{KV} and cosign verify: K1 legacy + K2 bundle on one digest")
def test_r7_mixed_formats(adm, ns, keys, publish, policy, record, ci, stack, area, tmp_path, timeline, policy_kind):
    """A ClusterPolicy rule reads the format its type names. An ImageValidatingPolicy has no type:
    with a bundle present it reads bundles only (as ``cosign verify`` does by default), so the K1
    legacy signature no longer counts once a K2 bundle sits beside it."""
    img = publish("mixed", sign_with=[keys["K1"]])
    signing.sign_bundle(ci, img.repo, img.digest, keys["K2"])
    ref = [f"{stack.image_host}/{area}/*"]
    expectations = by_kind(policy_kind, [
        ("Cosign", "K1", True), ("Cosign", "K2", False), ("SigstoreBundle", "K2", True), ("SigstoreBundle", "K1", False),
    ], [("detected", "K1", False), ("detected", "K2", True)])
    for vtype, key, want in expectations:
        policy([keys[key]], verify_type=vtype, references=ref)
        out = record("R7", adm.try_pod(ns, img.by_digest), "admitted" if want else "denied")
        assert out.admitted == want, f"type {vtype} with {key}: expected {'admitted' if want else 'denied'}: {out.message}"
        if not want and policy_kind is IVPOL:
            denied_with(out, *IVP_DENIED)
        timeline("R7", f"type {vtype} [{key}]: {'admitted' if want else 'denied'}")
    pub1 = _pub(tmp_path, keys["K1"], "k1")
    auto = cosign(stack, "verify", "--key", str(pub1), "--insecure-ignore-tlog=true", img.for_cosign)
    assert auto.returncode != 0, "cosign verify --key K1 sees only the K2 bundle and must fail"
    legacy = cosign(stack, "verify", "--key", str(pub1), "--insecure-ignore-tlog=true", "--new-bundle-format=false", img.for_cosign)
    assert legacy.returncode == 0, f"with --new-bundle-format=false the K1 legacy signature verifies: {legacy.stderr[-400:]}"


# ----------------------------------------------------------------------------------------------
# the verification cache (useCache: true, TTL from the scenario: components.admission.cache_ttl)


def _ttl_seconds(scenario) -> float:
    ttl = scenario.components.admission.cache_ttl
    return float(ttl[:-1]) * {"s": 1, "m": 60, "h": 3600}[ttl[-1]]


@pytest.mark.case("R8")
@pytest.mark.long_running("waits out the verification cache's TTL")
@pytest.mark.spec("Kyverno docs, verify-images cache: signature changes are not seen until the entry expires "
                  "(an ImageValidatingPolicy always caches)")
def test_r8_cache_hides_deleted_signatures_until_ttl(adm, ns, keys, publish, policy, record, ci, scenario, timeline, policy_kind):
    ttl = _ttl_seconds(scenario)
    name = policy.name
    policy([keys["K1"]], use_cache=True)
    # cache entries are keyed by the policy's resourceVersion: a write to it (Kyverno's own status
    # writes come late under load, an ImageValidatingPolicy's conditions latest) starts the cache
    # afresh, so the TTL is measured only while the policy stays as it was; else measured again
    for attempt in range(1, 4):
        img = publish(f"cached-{attempt}", sign_with=[keys["K1"]])
        settled = adm.wait_policy_settled(name, policy_kind.kind)
        # admission decisions only (run=False): on a cluster, waiting for a pod to run would spend the TTL
        warmed = time.monotonic()
        admitted(record("R8", adm.try_pod(ns, img.by_digest, run=False), "admitted"))
        _delete_signatures(ci, img.repo, img.digest)
        timeline("R8", "signatures deleted, cache warm")
        admitted(record("R8", adm.try_pod(ns, img.by_digest, run=False), "admitted"))  # documented: the cache still answers
        assert time.monotonic() - warmed < ttl, "the second pod must be checked within the TTL"
        took = enforce_time(adm, ns, img.by_digest, False, warmed, timeout=ttl + 60,
                            because=by_kind(policy_kind, ("no signatures found",), IVP_DENIED))
        now = adm.policy_version(name, policy_kind.kind)
        if took >= ttl * 0.9 or now == settled:
            break
        timeline("R8", f"the policy was written during the measurement (resourceVersion {settled} -> {now}): measured again")
    timeline("R8", "denied after the cache entry expired", propagation=round(took, 3))
    assert took >= ttl * 0.9, f"denied after {took:.1f}s, before the {ttl:.0f}s TTL (the policy unchanged: resourceVersion {now})"


@pytest.mark.case("R9")
@pytest.mark.spec("Kyverno verify-images cache key includes the policy resourceVersion: a policy edit re-verifies")
def test_r9_policy_edit_invalidates_cache(adm, ns, keys, publish, policy, record, ci, timeline, policy_kind, scenario):
    ttl = _ttl_seconds(scenario)
    policy([keys["K1"]], use_cache=True)
    img = publish("cached", sign_with=[keys["K1"]])
    warmed = time.monotonic()
    admitted(adm.try_pod(ns, img.by_digest, run=False))  # the decision only: a pod run to Running would spend the TTL
    _delete_signatures(ci, img.repo, img.digest)
    t0 = time.monotonic()
    policy([keys["K1"]], use_cache=True, timeout_seconds=14)  # any edit bumps resourceVersion
    why = by_kind(policy_kind, ("no signatures found",), IVP_DENIED)
    took = enforce_time(adm, ns, img.by_digest, False, t0, because=why)
    timeline("R9", "policy edited: re-verified and denied", propagation=round(took, 3))
    assert time.monotonic() - warmed < ttl, f"denied {time.monotonic() - warmed:.1f}s after the cache was warmed: the {ttl:.0f}s TTL " \
                                            "may have expired on its own, which proves nothing about the edit"
    denied_with(record("R9", adm.try_pod(ns, img.by_digest), "denied"), *why)


@pytest.mark.case("R10")
@pytest.mark.spec("GHSA-2r43-6962-xcw5: a tag moved to an unsigned digest within the cache TTL must be denied")
def test_r10_tag_moved_within_ttl_is_denied(adm, ns, keys, publish, policy, record, timeline, policy_kind, scenario):
    ttl = _ttl_seconds(scenario)
    policy([keys["K1"]], use_cache=True)
    signed = publish("app", tag="stable", sign_with=[keys["K1"]])
    warmed = time.monotonic()
    admitted(adm.try_pod(ns, signed.by_tag, run=False))  # decisions only: a pod run to Running would spend the TTL
    moved = publish("app", tag="stable")
    timeline("R10", "tag moved to an unsigned digest, cache warm")
    out = record("R10", adm.try_pod(ns, moved.by_tag, run=False), "denied")
    assert time.monotonic() - warmed < ttl, "the moved tag must be judged within the TTL, while the cache holds the signed digest"
    denied_with(out, *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))
