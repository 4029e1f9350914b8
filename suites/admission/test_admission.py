"""Admission: Kyverno admits a pod only when its image digest carries a cosign signature by the
trusted key (shared/reference/admission-signing.md §8, cases A1-A18). Each case runs under every
policy kind the scenario names (signing.policy.kinds): a ClusterPolicy's verifyImages rule [cpol]
and an ImageValidatingPolicy [ivpol], the kind that replaces it. Every denial asserts Kyverno's
message for the kind, and every decision is recorded for the summary page."""

from __future__ import annotations

import pytest

from labgate import abilities, redact, signing
from labgate.components import kyverno as kv
from suites.admission.conftest import CPOL, IVP_DENIED, IVPOL, admitted, by_kind, cosign_sign, denied_with, expect

pytestmark = [pytest.mark.requires("kubernetes", "admission.kyverno"), pytest.mark.area("admission")]
KV = "Kyverno v1.19 verifyImages / ImageValidatingPolicy"


@pytest.mark.case("A1")
@pytest.mark.spec(f"{KV}: type Cosign, a digest signed by the trusted key")
def test_a1_signed_digest_is_admitted(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]])
    img = publish("app", sign_with=[keys["K1"]])
    out = record("A1", adm.try_pod(ns, img.by_digest), "admitted")
    admitted(out)
    if policy_kind is IVPOL:  # an ImageValidatingPolicy records no verdict on the pod
        assert "kyverno.io/verify-images" not in out.annotations, out.annotations
        return
    import json

    raw = out.annotations.get("kyverno.io/verify-images")
    assert raw, f"Kyverno MUST record its verification on the admitted pod: annotations {out.annotations}"
    verdicts = json.loads(raw)
    mine = {ref: v for ref, v in verdicts.items() if img.digest in ref}
    assert mine and set(mine.values()) == {"pass"}, f"the verify-images annotation MUST say pass for {img.by_digest}: {verdicts}"


@pytest.mark.case("A1")
@pytest.mark.spec(f"{KV}: a digest signed by the real cosign CLI with the trusted key")
def test_a1_cosign_signed_digest_is_admitted(adm, ns, keys, publish, policy, record, stack, tmp_path, reader):
    """The lab's CI runs the cosign CLI: its signature, made with a key the harness wrote in cosign's
    encrypted format, is admitted; the harness verifies it too."""
    policy([keys["K1"]])
    img = publish("app")
    proc = cosign_sign(stack, keys["K1"], img.for_cosign, tmp_path, "--new-bundle-format=false")
    assert proc.returncode == 0, f"cosign sign failed: {redact.redact(proc.stderr[-400:])}"
    assert signing.verify_legacy(reader, img.repo, img.digest, keys["K1"].public_pem()), "the harness verifies cosign's signature"
    admitted(record("A1", adm.try_pod(ns, img.by_digest), "admitted"))


@pytest.mark.case("A2")
@pytest.mark.spec(f"{KV}: mutateDigest rewrites a tag to the verified digest")
def test_a2_signed_tag_is_admitted_and_pinned(adm, ns, keys, publish, policy, record):
    policy([keys["K1"]])
    img = publish("app", tag="v2", sign_with=[keys["K1"]])
    out = record("A2", adm.try_pod(ns, img.by_tag), "admitted")
    admitted(out)
    assert out.stored_image == f"{img.by_tag}@{img.digest}", f"the pod's image MUST be pinned to the digest, got {out.stored_image}"


@pytest.mark.case("A3")
@pytest.mark.spec(f"{KV}: an unsigned image is denied")
def test_a3_unsigned_is_denied(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]])
    img = publish("app")
    out = record("A3", adm.try_pod(ns, img.by_digest), "denied")
    denied_with(out, *by_kind(policy_kind, ("no signatures found", img.ref), IVP_DENIED))


@pytest.mark.case("A4")
@pytest.mark.spec(f"{KV}: a signature by another key is denied")
def test_a4_signed_by_another_key_is_denied(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]])
    img = publish("app", sign_with=[keys["other"]])
    out = record("A4", adm.try_pod(ns, img.by_digest), "denied")
    denied_with(out, *by_kind(policy_kind, ("no matching signatures", "invalid signature"), IVP_DENIED))


@pytest.mark.case("A5")
@pytest.mark.spec(f"{KV}: a valid signature copied onto another digest is denied (claim digest)")
def test_a5_copied_signature_is_denied(adm, ns, keys, publish, policy, record, ci, policy_kind):
    policy([keys["K1"]])
    signed = publish("app", tag="signed", sign_with=[keys["K1"]])
    other = publish("app", tag="other")
    signing.copy_signature(ci, signed.repo, signed.digest, other.digest)
    out = record("A5", adm.try_pod(ns, other.by_digest), "denied")
    denied_with(out, *by_kind(policy_kind, ("no matching signatures", "invalid or missing digest in claim"), IVP_DENIED))


@pytest.mark.case("A6")
@pytest.mark.spec(f"{KV}: a tampered signature payload or annotation is denied")
@pytest.mark.parametrize("what", ["payload", "annotation"])
def test_a6_tampered_signature_is_denied(adm, ns, keys, publish, policy, record, ci, what, policy_kind):
    policy([keys["K1"]])
    img = publish("app", sign_with=[keys["K1"]])
    signing.tamper_legacy(ci, img.repo, img.digest, what=what)
    out = record("A6", adm.try_pod(ns, img.by_digest), "denied")
    denied_with(out, *by_kind(policy_kind, ("failed to verify image", "no matching signatures"), IVP_DENIED))


@pytest.mark.case("A7")
@pytest.mark.spec(f"{KV}: a cosign v3 bundle is invisible to a type Cosign rule; an ImageValidatingPolicy detects the format (no type)")
def test_a7_bundle_against_cosign_rule(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]], verify_type="Cosign")
    img = publish("app", sign_with=[keys["K1"]], fmt="bundle")
    detected = policy_kind is IVPOL
    out = record("A7", adm.try_pod(ns, img.by_digest), "admitted" if detected else "denied")
    expect(out, detected, "no signatures found")


@pytest.mark.case("A8")
@pytest.mark.spec(f"{KV}: type SigstoreBundle verifies a cosign v3 bundle signed by the key")
def test_a8_bundle_against_sigstore_bundle_rule_is_admitted(adm, ns, keys, publish, policy, record):
    policy([keys["K1"]], verify_type="SigstoreBundle")
    img = publish("app", sign_with=[keys["K1"]], fmt="bundle")
    out = record("A8", adm.try_pod(ns, img.by_digest), "admitted")
    admitted(out)


@pytest.mark.case("A9")
@pytest.mark.spec(f"{KV}: an image outside imageReferences is not verified")
def test_a9_image_outside_references_is_admitted(adm, ns, keys, publish, policy, record, stack, area):
    policy([keys["K1"]], references=[f"{stack.image_host}/{area}/protected/*"])
    img = publish("elsewhere")
    out = record("A9", adm.try_pod(ns, img.by_digest), "admitted")
    admitted(out)


@pytest.mark.case("A10")
@pytest.mark.spec(f"{KV}: mutateDigest false + verifyDigest true denies a tag-only image")
def test_a10_tag_only_without_mutation_is_denied(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]], mutate_digest=False, verify_digest=True)
    img = publish("app", sign_with=[keys["K1"]])
    out = record("A10", adm.try_pod(ns, img.by_tag), "denied")
    denied_with(out, *by_kind(policy_kind, ("missing digest",), (f"{img.by_tag} does not have a digest",)))


@pytest.mark.case("A11")
@pytest.mark.disruptive("registry", scope="outage")
@pytest.mark.spec(f"{KV}: registry unreachable under failurePolicy Fail: denied")
def test_a11_registry_down_fail_denies(adm, ns, keys, publish, policy, record, stack, policy_kind):
    img = publish("app", sign_with=[keys["K1"]])
    policy([keys["K1"]], failure_policy="Fail")
    with abilities.need(stack, abilities.LIFECYCLE).down("registry"):
        out = record("A11", adm.try_pod(ns, img.by_digest, run=False), "denied")
        denied_with(out, by_kind(policy_kind, "failed to verify image", "failed to evaluate policy"), "connection refused")
    admitted(record("A11", adm.try_pod(ns, img.by_digest), "admitted"))  # the stack is restored


@pytest.mark.case("A11")
@pytest.mark.disruptive("registry", scope="outage")
@pytest.mark.spec(f"{KV}: registry unreachable under failurePolicy Ignore: admitted")
@pytest.mark.parametrize("required", [True, False], ids=["required", "not-required"])
def test_a11_registry_down_ignore_admits(adm, ns, keys, publish, policy, record, stack, required, policy_kind):
    img = publish("app", sign_with=[keys["K1"]])
    policy([keys["K1"]], failure_policy="Ignore", required=required)
    # every webhook of an Ignore policy, or the outcome depends on timing
    if policy_kind is IVPOL:
        adm.wait_webhook(f"ivpol.validate.kyverno.svc-ignore-finegrained-{policy.name}")
    else:
        for webhook in ("mutate.kyverno.svc-ignore", "validate.kyverno.svc-ignore"):
            adm.wait_webhook(webhook)
    with abilities.need(stack, abilities.LIFECYCLE).down("registry"):
        # admitted while the registry is down: on a node it cannot be pulled yet, so only the decision counts
        out = record("A11", adm.try_pod(ns, img.by_digest, run=False), "admitted")
        admitted(out)
    admitted(record("A11", adm.try_pod(ns, img.by_digest), "admitted"))  # the stack is restored


@pytest.mark.case("A12")
@pytest.mark.spec(f"{KV}: autogen rules apply the same verification to a Deployment")
def test_a12_deployment_autogen(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]], kinds=("Pod",))
    signed = publish("app", tag="signed", sign_with=[keys["K1"]])
    unsigned = publish("app", tag="unsigned")
    admitted(record("A12", adm.try_deployment(ns, signed.by_digest), "admitted"))
    out = record("A12", adm.try_deployment(ns, unsigned.by_digest), "denied")
    denied_with(out, *by_kind(policy_kind, ("autogen-verify-signature", "no signatures found"), (f"failed: {kv.IVP_MESSAGE}",)))


@pytest.mark.case("A13")
@pytest.mark.spec(f"{KV}: a ClusterPolicy in Audit with the default mutateDigest is rejected; an ImageValidatingPolicy is accepted")
def test_a13_audit_with_default_mutate_digest(adm, keys, stack, area, request, policy_kind):
    """A ClusterPolicy in Audit cannot mutate, so Kyverno's policy webhook refuses the default
    mutateDigest; an ImageValidatingPolicy whose validationActions are [Audit] keeps it."""
    body = policy_kind.render(name=f"lg-a13-{area.split('/')[-1]}", image_references=[f"{stack.image_host}/{area}/*"],
                              public_keys=[keys["K1"].public_pem().decode()], failure_action="Audit", mutate_digest=None)
    accepted, message = adm.create_policy_raw(body)
    if accepted:
        adm.delete_policy(body["metadata"]["name"], policy_kind.kind)
    want = policy_kind is IVPOL
    request.node.user_properties.append(("admission", __import__("json").dumps(
        {"case": "A13", "object": f"{policy_kind.kind}/{body['metadata']['name']}", "image": "-", "policy": policy_kind.kind,
         "expected": "accepted" if want else "rejected", "observed": "accepted" if accepted else "rejected", "message": message})))
    if want:
        assert accepted, f"an ImageValidatingPolicy with validationActions [Audit] and the default mutateDigest MUST be accepted: {message}"
        return
    assert not accepted, "a ClusterPolicy with failureAction Audit and the default mutateDigest MUST be rejected"
    assert "mutateDigest must be set to false" in message, message


@pytest.mark.case("A14")
@pytest.mark.spec(f"{KV}: a tag re-pointed from a signed to an unsigned digest is denied on the next pod")
def test_a14_repointed_tag_is_denied(adm, ns, keys, publish, policy, record, policy_kind):
    policy([keys["K1"]])
    signed = publish("app", tag="stable", sign_with=[keys["K1"]])
    admitted(record("A14", adm.try_pod(ns, signed.by_tag), "admitted"))
    moved = publish("app", tag="stable")  # same repository and tag, new unsigned digest
    assert moved.digest != signed.digest
    out = record("A14", adm.try_pod(ns, moved.by_tag), "denied")
    denied_with(out, *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))


@pytest.mark.case("A15")
@pytest.mark.spec(f"{KV}: a multi-platform image index signed at its index digest is admitted (and runs on the node's platform)")
def test_a15_multi_platform_index_signed_at_the_index_is_admitted(adm, ns, keys, publish_index, policy, record):
    policy([keys["K1"]])
    img = publish_index("multi", key=keys["K1"], sign="index")
    admitted(record("A15", adm.try_pod(ns, img["by_digest"]), "admitted"))


@pytest.mark.case("A16")
@pytest.mark.spec(f"{KV}: Kyverno verifies the digest the pod names: a signature on one platform's manifest does not sign the index")
def test_a16_signature_on_one_platform_only_is_denied(adm, ns, keys, publish_index, policy, record, policy_kind):
    """Kyverno's verifyImages checks the signature of the image reference as written (here the
    index digest), not of the platform manifest a node would pull; cosign signs an index at its
    digest (``cosign sign --recursive`` also signs each platform). A signature on the arm64
    manifest alone therefore signs nothing the pod names."""
    policy([keys["K1"]])
    img = publish_index("multi", key=keys["K1"], sign="arm64")
    denied_with(record("A16", adm.try_pod(ns, img["by_digest"]), "denied"), *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))


@pytest.mark.case("A17")
@pytest.mark.spec(f"{KV}: signatures stored in another repository (COSIGN_REPOSITORY) are found when the rule's repository names it")
@pytest.mark.parametrize("named", [True, False], ids=["rule-names-it", "rule-does-not"])
def test_a17_signatures_in_another_repository(adm, ns, keys, publish, policy, record, ci, reader, stack, area, named, policy_kind):
    """A lab that keeps signatures apart from images (``COSIGN_REPOSITORY``): the .sig manifest
    lives in ``<area>/signatures``; the image's own repository has none. Kyverno looks there only
    when the rule's ``repository`` names it."""
    sig_repo = f"{area}/signatures"
    policy([keys["K1"]], repository=f"{stack.image_host}/{sig_repo}" if named else None)
    img = publish("app")
    signing.sign_legacy(ci, img.repo, img.digest, keys["K1"], identity=img.ref, signature_repo=sig_repo)
    found = signing.verify_legacy(reader, img.repo, img.digest, keys["K1"].public_pem(), signature_repo=sig_repo)
    assert found and found[0]["docker_reference"] == img.ref, "the harness finds the signature where it was stored, naming the image"
    assert not signing.verify_legacy(reader, img.repo, img.digest, keys["K1"].public_pem()), "no signature next to the image"
    expect(record("A17", adm.try_pod(ns, img.by_digest), "admitted" if named else "denied"), named,
           *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))


@pytest.mark.case("A18")
@pytest.mark.spec(f"{KV}: cosign's OCI 1.1 mode (a referrer) is seen only by a ClusterPolicy rule with cosignOCI11")
@pytest.mark.parametrize("oci11", [True, False], ids=["rule-cosignOCI11", "rule-default"])
def test_a18_cosign_oci11_signature(adm, ns, keys, publish, policy, record, stack, tmp_path, reader, oci11, policy_kind):
    """``cosign sign --registry-referrers-mode=oci-1-1`` (experimental) stores the legacy signature
    as an OCI 1.1 artifact whose subject is the image (through the referrers API, or the referrers
    tag schema where the registry has none), not at the ``.sig`` tag. Kyverno documents
    ``cosignOCI11: true`` for such signatures; without it the rule finds none. An
    ImageValidatingPolicy has no such switch (its cosign attestor looks for the .sig tag, or a
    v3 bundle): a lab that signs in this mode is denied after the move, with or without it."""
    policy([keys["K1"]], cosign_oci11=oci11)
    img = publish("app")
    proc = cosign_sign(stack, keys["K1"], img.for_cosign, tmp_path, "--new-bundle-format=false", "--registry-referrers-mode=oci-1-1",
                       env={"COSIGN_EXPERIMENTAL": "1"})
    assert proc.returncode == 0, f"cosign sign (OCI 1.1 mode) failed: {redact.redact(proc.stderr[-400:])}"
    assert not signing.verify_legacy(reader, img.repo, img.digest, keys["K1"].public_pem()), "OCI 1.1 mode writes no .sig tag"
    seen = oci11 and policy_kind is CPOL
    expect(record("A18", adm.try_pod(ns, img.by_digest), "admitted" if seen else "denied"), seen,
           *by_kind(policy_kind, ("no signatures found",), IVP_DENIED))
