"""Error codes and bodies: every negative answer is checked for its status AND its OCI error code
(§Error Codes: code-1 .. code-14), and its body for the spec's error format."""

from __future__ import annotations

import os

import pytest

from labgate.clients.oci import MT_CONFIG, MT_INDEX, MT_LAYER, MT_MANIFEST, canonical, descriptor, digest
from suites.oci.helpers import SPEC, assert_oci_error, evidence

pytestmark = pytest.mark.area("error codes")


def _missing(label: str) -> bytes:
    return f"labgate {label} that was never pushed ".encode() + os.urandom(16)


@pytest.fixture
def image(oci, repo):
    return oci.push_image(repo, "v1", seed="errors")


@pytest.mark.spec(f"{SPEC} §Error Codes: BLOB_UNKNOWN (code-1; end-2 404)")
def test_blob_unknown(oci, image, attach_log, verdict):
    attach_log(oci)
    missing = digest(_missing("blob"))
    assert_oci_error(verdict, oci.get_blob(image.repo, missing), 404, "BLOB_UNKNOWN")
    h = oci.head_blob(image.repo, missing)
    assert h.status_code == 404, f"HEAD of an unknown blob MUST answer 404: {evidence(h)}"


@pytest.mark.spec(f"{SPEC} §Error Codes: MANIFEST_UNKNOWN (code-7; end-3 404)")
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_manifest_unknown(oci, image, attach_log, verdict, by):
    attach_log(oci)
    ref = "no-such-tag" if by == "tag" else digest(_missing("manifest"))
    assert_oci_error(verdict, oci.get_manifest(image.repo, ref), 404, "MANIFEST_UNKNOWN")
    h = oci.head_manifest(image.repo, ref)
    assert h.status_code == 404, f"HEAD of an unknown manifest MUST answer 404: {evidence(h)}"


@pytest.mark.spec(f"{SPEC} §Error Codes: NAME_UNKNOWN (code-9; end-8a 404)")
def test_name_unknown_tag_list(oci, repo, attach_log, verdict):
    attach_log(oci)
    assert_oci_error(verdict, oci.tags(repo), 404, "NAME_UNKNOWN")


@pytest.mark.spec(f"{SPEC} §Pushing Manifests: pull from a nonexistent repository (end-3 404)")
def test_manifest_in_unknown_repository(oci, repo, attach_log, verdict):
    attach_log(oci)
    # the spec asks for 404; NAME_UNKNOWN and MANIFEST_UNKNOWN both describe it
    assert_oci_error(verdict, oci.get_manifest(repo, "v1"), 404, ("NAME_UNKNOWN", "MANIFEST_UNKNOWN"))


@pytest.mark.spec(f"{SPEC} §Error Codes: DIGEST_INVALID (code-4; end-6 400)")
@pytest.mark.parametrize("case", ["mismatch", "malformed"])
def test_blob_digest_invalid(oci, repo, attach_log, verdict, case):
    attach_log(oci)
    data = b"labgate digest check " + os.urandom(16)
    wrong = digest(b"other content") if case == "mismatch" else "sha256:not-a-hex-digest"
    r = oci.start_upload(repo)
    assert r.status_code == 202, f"POST upload: {evidence(r)}"
    put = oci.put_upload(r.headers["Location"], wrong, data)
    assert_oci_error(verdict, put, 400, "DIGEST_INVALID")
    h = oci.head_blob(repo, digest(data))
    assert h.status_code == 404, f"a blob rejected for its digest MUST NOT be stored: {evidence(h)}"


@pytest.mark.spec(f"{SPEC} §Error Codes: DIGEST_INVALID (code-4; end-7 by a digest that is not the manifest's)")
def test_manifest_digest_invalid(oci, image, attach_log, verdict):
    attach_log(oci)
    wrong = digest(_missing("manifest digest"))
    # the spec ties no code to this case: DIGEST_INVALID ("provided digest did not match uploaded
    # content") describes it, and MANIFEST_INVALID (the upload to that digest is not a valid manifest) is
    # accepted too
    r = oci.put_manifest(image.repo, wrong, image.body)
    assert_oci_error(verdict, r, 400, ("DIGEST_INVALID", "MANIFEST_INVALID"))
    h = oci.head_manifest(image.repo, wrong)
    assert h.status_code == 404, f"a manifest rejected for its digest MUST NOT be stored under it: {evidence(h)}"


@pytest.mark.spec(f"{SPEC} §Error Codes: MANIFEST_INVALID (code-6; end-7 400)")
@pytest.mark.parametrize("case", ["not-json", "layers-not-a-list", "media-type-mismatch"])
def test_manifest_invalid(oci, image, attach_log, verdict, case):
    attach_log(oci)
    if case == "not-json":
        body, ct = b"{this is not json", MT_MANIFEST
    elif case == "layers-not-a-list":
        body, ct = canonical(dict(image.manifest, layers="not a list")), MT_MANIFEST
    else:  # the body says image manifest, the Content-Type says index
        body, ct = image.body, MT_INDEX
    r = oci.put_manifest(image.repo, f"invalid-{case}", body, ct)
    assert_oci_error(verdict, r, 400, "MANIFEST_INVALID")
    g = oci.get_manifest(image.repo, f"invalid-{case}")
    assert g.status_code == 404, f"an invalid manifest MUST NOT be stored: {evidence(g)}"


@pytest.mark.spec(f"{SPEC} §Push: manifest referencing unknown blobs, MANIFEST_BLOB_UNKNOWN (code-5; end-7)")
@pytest.mark.parametrize("missing", ["layer", "config", "index-child"])
@pytest.mark.beyond_official("the official program pushes no manifest with a missing blob")
def test_manifest_blob_unknown(oci, image, attach_log, verdict, missing):
    attach_log(oci)
    if missing == "index-child":
        ghost = descriptor(MT_MANIFEST, _missing("child manifest"))
        body = canonical({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [image.descriptor, ghost]})
        ct = MT_INDEX
    else:
        m = dict(image.manifest)
        if missing == "layer":
            m["layers"] = [*m["layers"], descriptor(MT_LAYER, _missing("layer"))]
        else:
            m["config"] = descriptor(MT_CONFIG, _missing("config"))
        body, ct = canonical(m), MT_MANIFEST
    r = oci.put_manifest(image.repo, f"ghost-{missing}", body, ct)
    if r.status_code == 201:
        verdict.unsupported(f"the registry MAY reject manifests referencing unknown content and does not: {evidence(r)}")
    # the spec prescribes the code: "When a manifest is rejected for this reason, it MUST result in one or
    # more MANIFEST_BLOB_UNKNOWN errors"
    assert_oci_error(verdict, r, 400, "MANIFEST_BLOB_UNKNOWN", code_must=True)


@pytest.mark.spec(f"{SPEC} §Error Codes: UNAUTHORIZED (code-11) with WWW-Authenticate")
@pytest.mark.parametrize("request_kind", ["api-version", "pull-manifest", "push-upload"])
@pytest.mark.beyond_official("the official program sends credentials on every request")
def test_unauthorized_without_credentials(anonymous, oci, image, scenario, attach_log, verdict, request_kind):
    attach_log(oci)
    attach_log(anonymous)
    if request_kind == "pull-manifest" and scenario.access.anonymous_read:
        pytest.skip(f"the scenario lets anonymous users read {scenario.access.anonymous_read} (fix: run with a scenario without access.anonymous_read)")
    if request_kind == "api-version":
        r = anonymous.ping()
    elif request_kind == "pull-manifest":
        r = anonymous.get_manifest(image.repo, "v1")
    else:
        r = anonymous.start_upload(image.repo)
    assert_oci_error(verdict, r, 401, "UNAUTHORIZED")
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge, f"a 401 MUST carry a WWW-Authenticate challenge (RFC 7235): {evidence(r)}"
    assert challenge.split()[0].lower() in ("basic", "bearer"), f"unexpected WWW-Authenticate scheme: {challenge!r}"


@pytest.mark.spec(f"{SPEC} §Error Codes: a manifest reference that is not a well-formed digest (end-3, end-7)")
@pytest.mark.parametrize("method", ["get", "put"])
def test_manifest_reference_malformed_digest(oci, image, attach_log, verdict, method):
    """``sha256:`` followed by something that is not hex is neither a tag nor a digest: a client
    error (400 DIGEST_INVALID, or 404 MANIFEST_UNKNOWN for a lookup), never a server error."""
    attach_log(oci)
    bad = "sha256:" + "not-a-hex-digest".ljust(64, "z")
    if method == "get":
        r = oci.get_manifest(image.repo, bad)
        assert_oci_error(verdict, r, (400, 404), ("DIGEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_INVALID"))
    else:
        r = oci.put_manifest(image.repo, bad, image.body)
        assert_oci_error(verdict, r, 400, ("DIGEST_INVALID", "MANIFEST_INVALID"))
