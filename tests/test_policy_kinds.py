"""Unit tests: the two Kyverno policy kinds the admission cases run under, rendered from the same
arguments, and how the harness tells that Kyverno took in a spec it just wrote."""

from __future__ import annotations

import copy

import pytest

from labgate.components import kyverno as kv
from labgate.signing import KeyPair

KEYS = [KeyPair.generate().public_pem().decode() for _ in range(2)]
REFS = ["registry.labgate:5000/zeroclaw/app/*"]


def _ivp(**kw):
    return kv.render_image_validating_policy(name="p", image_references=REFS, public_keys=KEYS, **kw)


def test_every_kind_is_registered_with_its_api():
    assert {k: (v.group, v.version, v.plural, v.short) for k, v in kv.POLICY_KINDS.items()} == {
        "ClusterPolicy": ("kyverno.io", "v1", "clusterpolicies", "cpol"),
        "ImageValidatingPolicy": ("policies.kyverno.io", "v1", "imagevalidatingpolicies", "ivpol")}
    for kind in kv.POLICY_KINDS.values():
        body = kind.render(name="p", image_references=REFS, public_keys=KEYS)
        assert kv.kind_of(body) is kind and body["kind"] == kind.kind


@pytest.mark.parametrize(("count", "need"), [(1, ">= 1"), (2, ">= 2"), (None, "== 2")])
def test_ivp_count_maps_to_the_validation(count, need):
    spec = _ivp(count=count)["spec"]
    assert [a["name"] for a in spec["attestors"]] == ["k0", "k1"]
    expr = spec["validations"][0]["expression"]
    assert "verifyImageSignatures(image, [attestors.k0, attestors.k1])" in expr and expr.endswith(f"e {need})")


def test_ivp_carries_the_policy_settings():
    spec = _ivp(failure_policy="Ignore", failure_action="Audit", mutate_digest=None, verify_digest=False, required=False,
                timeout_seconds=7, repository="registry.labgate:5000/zeroclaw/sigs")["spec"]
    assert spec["failurePolicy"] == "Ignore" and spec["validationActions"] == ["Audit"]
    assert spec["webhookConfiguration"] == {"timeoutSeconds": 7}
    assert spec["validationConfigurations"] == {"verifyDigest": False, "required": False}  # mutateDigest left to Kyverno
    assert spec["matchImageReferences"] == [{"glob": REFS[0]}]
    assert spec["credentials"] == {"secrets": [kv.PULL_SECRET], "allowInsecureRegistry": True}
    assert spec["evaluation"] == {"background": {"enabled": False}}
    assert all(a["cosign"]["source"] == {"repository": "registry.labgate:5000/zeroclaw/sigs"} for a in spec["attestors"])
    assert all(a["cosign"]["ctlog"] == {"insecureIgnoreTlog": True, "insecureIgnoreSCT": True} for a in spec["attestors"])
    assert _ivp()["spec"]["validationActions"] == ["Deny"]


def _served(body: dict, ready: bool = True) -> dict:
    """An ImageValidatingPolicy as Kyverno serves it: its spec copied into the autogen configs."""
    obj = copy.deepcopy(body)
    spec = obj["spec"]
    obj["status"] = {"conditionStatus": {"ready": ready},
                     "autogen": {"configs": {"defaults": {"spec": {**spec, "matchConstraints": {"resourceRules": []}}},
                                             "cronjobs": {"spec": spec}}}}
    return obj


def test_ivp_status_tells_which_spec_it_was_computed_from():
    old, new = _ivp(), kv.render_image_validating_policy(name="p", image_references=REFS, public_keys=KEYS[1:])
    assert kv.ivp_status_reflects(_served(old), old) is True
    assert kv.ivp_status_reflects(_served(old), new) is False, "the key list changed: the status is the old spec's"
    assert kv.ivp_status_reflects({"status": {}}, new) is None, "no autogen configs: cannot tell"
    ivp = kv.IMAGE_VALIDATING_POLICY
    assert ivp.ready(_served(old)) and not ivp.ready(_served(old, ready=False))


def test_ivp_takes_the_cluster_policy_arguments_and_no_others():
    assert _ivp(verify_type="SigstoreBundle", use_cache=True, kinds=("Pod",), cosign_oci11=True) == _ivp()
    with pytest.raises(TypeError, match="verifyDigest"):
        _ivp(verifyDigest=False)
