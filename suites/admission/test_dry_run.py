"""Admission through server-side dry runs: the checks that also run, writing nothing, against a live
cluster the existing provider attaches to (its policies, the images its scenario names).

``dryRun=All``: the apiserver runs admission, Kyverno's webhooks included (they declare
SideEffects None/NoneOnDryRun), and stores nothing. On a stack labgate started, the policy and
the images are made for the test first."""

from __future__ import annotations

import pytest

from labgate.clients.kube import Admission
from suites.admission.conftest import denied_with

pytestmark = [pytest.mark.read_only, pytest.mark.requires("kubernetes"), pytest.mark.area("admission")]
KV = "Kyverno verifyImages under a server-side dry run (dryRun=All)"


@pytest.fixture
def lab(stack, scenario, request):
    """(namespace, signed image, unsigned image) to dry-run pods with."""
    if stack.read_only:
        k = scenario.existing.kubernetes if scenario.existing else None
        if k is None or not (k.signed_image and k.unsigned_image):
            pytest.skip("the scenario names no images to dry-run (fix: existing.kubernetes.signed_image and unsigned_image)")
        return k.namespace, k.signed_image, k.unsigned_image
    if not stack.has("admission.kyverno"):
        pytest.skip("the stack has no Kyverno (fix: add components.admission to the scenario)")
    adm, ns, keys, publish, policy = (request.getfixturevalue(n) for n in ("adm", "ns", "keys", "publish", "policy"))
    policy([keys["K1"]])
    return ns, publish("app", sign_with=[keys["K1"]]).by_digest, publish("unsigned").by_digest


@pytest.fixture
def dry(stack) -> Admission:
    return Admission(stack.kubeconfig, stack.kube_context, dry_run=True)


@pytest.mark.case("D1")
@pytest.mark.spec(f"{KV}: a signed digest is admitted, and nothing is stored")
def test_d1_signed_digest_admitted_in_a_dry_run(dry, lab, record):
    ns, signed, _ = lab
    out = record("D1", dry.try_pod(ns, signed), "admitted")
    assert out.admitted, f"the signed image was denied in a dry run: {out.message}"
    assert not dry.exists(ns, out.name), "a dry run MUST store nothing"


@pytest.mark.case("D2")
@pytest.mark.spec(f"{KV}: an unsigned image is denied with Kyverno's message")
def test_d2_unsigned_denied_in_a_dry_run(stack, dry, lab, record):
    ns, _, unsigned = lab
    out = record("D2", dry.try_pod(ns, unsigned), "denied")
    # a live cluster's own policy may word its rules as it likes; Kyverno's verifyImages part is fixed
    denied_with(out, "failed to verify image", *(() if stack.read_only else ("no signatures found",)))
    assert not dry.exists(ns, out.name)
