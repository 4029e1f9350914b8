"""Content: sha512 blobs and manifests, manifests with subject and artifactType (OCI-Subject), and
large and nested image indexes."""

from __future__ import annotations

import json
import os

import pytest

from labgate.clients.oci import (EMPTY_JSON, MT_CONFIG, MT_EMPTY, MT_INDEX, MT_LAYER, MT_MANIFEST, canonical,
                                 descriptor, digest, error_codes)
from suites.oci.helpers import SPEC, assert_oci_error, check_content_digest, evidence, referrers_api_absent

SIG = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


def _blob(label: str, size: int = 256) -> bytes:
    head = f"labgate {label} ".encode() + os.urandom(16)
    return (head * (size // len(head) + 1))[:size]


# ----------------------------------------------------------------------------------------------
# sha512


def _sha512_unsupported(verdict, r, what: str) -> None:
    """sha512 is optional: a 400 DIGEST_INVALID or UNSUPPORTED for a correct sha512 digest is the
    registry not supporting it."""
    if r.status_code == 400 and {"DIGEST_INVALID", "UNSUPPORTED"} & set(error_codes(r)):
        verdict.unsupported(f"sha512 {what}: the registry rejects a correct sha512 digest: {evidence(r)}")


def _push_sha512_blob(verdict, client, repo: str, data: bytes) -> str:
    d512 = digest(data, "sha512")
    r = client.start_upload(repo)
    assert r.status_code == 202, f"POST upload: {evidence(r)}"
    put = client.put_upload(r.headers["Location"], d512, data)
    _sha512_unsupported(verdict, put, "blob upload")
    assert put.status_code == 201, f"a blob PUT with ?digest=sha512:... MUST answer 201 (or 400 when sha512 is unsupported): {evidence(put)}"
    return d512


def _assert_blob_by_sha512(verdict, client, repo: str, data: bytes, what: str) -> None:
    d512 = digest(data, "sha512")
    h = client.head_blob(repo, d512)
    assert h.status_code == 200, f"{what}: HEAD of the blob by its sha512 digest MUST answer 200: {evidence(h)}"
    g = client.get_blob(repo, d512)
    assert g.status_code == 200, f"{what}: GET of the blob by its sha512 digest MUST answer 200: {evidence(g)}"
    assert g.content == data, f"{what}: GET by sha512 MUST return the blob's exact bytes"
    check_content_digest(verdict, g, data, f"{what}: GET by sha512")


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §POST then PUT with a sha512 digest (end-4a, end-6, end-2)")
def test_sha512_blob_post_then_put(oci, repo, attach_log, verdict):
    attach_log(oci)
    data = _blob("sha512 monolithic")
    _push_sha512_blob(verdict, oci, repo, data)
    _assert_blob_by_sha512(verdict, oci, repo, data, "monolithic sha512 upload")


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §Pushing a blob in chunks with a sha512 digest (end-5, end-6, end-2)")
def test_sha512_blob_chunked(oci, repo, attach_log, verdict):
    attach_log(oci)
    data = _blob("sha512 chunked", 300)
    r = oci.start_upload(repo)
    assert r.status_code == 202, f"POST upload: {evidence(r)}"
    loc = r.headers["Location"]
    for start in (0, 100, 200):
        p = oci.patch_upload(loc, data[start:start + 100], start)
        assert p.status_code == 202, f"PATCH {start}: {evidence(p)}"
        loc = p.headers["Location"]
    put = oci.put_upload(loc, digest(data, "sha512"))
    _sha512_unsupported(verdict, put, "chunked upload")
    assert put.status_code == 201, f"closing a chunked upload with a sha512 digest MUST answer 201: {evidence(put)}"
    _assert_blob_by_sha512(verdict, oci, repo, data, "chunked sha512 upload")


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §Error Codes: DIGEST_INVALID for a wrong sha512 digest (end-6 400)")
def test_sha512_blob_digest_mismatch(oci, repo, attach_log, verdict):
    attach_log(oci)
    data = _blob("sha512 mismatch")
    r = oci.start_upload(repo)
    assert r.status_code == 202, f"POST upload: {evidence(r)}"
    put = oci.put_upload(r.headers["Location"], digest(b"something else", "sha512"), data)
    assert_oci_error(verdict, put, 400, ("DIGEST_INVALID", "UNSUPPORTED"))
    h = oci.head_blob(repo, digest(data, "sha512"))
    assert h.status_code == 404, f"a blob rejected for its digest MUST NOT be stored: {evidence(h)}"


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §Mounting a blob from another repository with a sha512 digest (end-11)")
def test_sha512_blob_mount(oci, new_repo, attach_log, verdict):
    attach_log(oci)
    src, dst = new_repo("src"), new_repo("dst")
    data = _blob("sha512 mount")
    d512 = _push_sha512_blob(verdict, oci, src, data)
    r = oci.mount_blob(dst, d512, src)
    if r.status_code == 202:
        verdict.unsupported(f"mounting a sha512 blob (the registry answered a new upload session): {evidence(r)}")
    assert r.status_code == 201, f"a successful mount MUST answer 201: {evidence(r)}"
    loc = r.headers.get("Location")
    assert loc, f"a successful mount MUST carry Location: {evidence(r)}"
    got = oci.get(loc)
    assert got.status_code == 200 and got.content == data, f"the Location of a 201 mount MUST be a pullable blob URL: {evidence(got)}"
    _assert_blob_by_sha512(verdict, oci, dst, data, "mounted sha512 blob")


def _sha512_image_parts(oci, verdict, repo: str, seed: str) -> dict:
    config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "labgate": seed})
    layer = _blob(f"sha512 layer {seed}")
    for data in (config, layer):
        _push_sha512_blob(verdict, oci, repo, data)
    return {"schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": descriptor(MT_CONFIG, config, "sha512"), "layers": [descriptor(MT_LAYER, layer, "sha512")]}


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §Pushing Manifests with sha512 descriptors (end-7, end-3, end-2)")
def test_sha512_descriptors_in_manifest(oci, repo, attach_log, verdict):
    attach_log(oci)
    manifest = _sha512_image_parts(oci, verdict, repo, "by-tag")
    body = canonical(manifest)
    r = oci.put_manifest(repo, "sha512", body)
    _sha512_unsupported(verdict, r, "descriptors in a manifest")
    assert r.status_code == 201, f"a manifest whose descriptors use sha512 MUST be accepted once its blobs are pushed: {evidence(r)}"
    got = oci.get_manifest(repo, "sha512")
    assert got.status_code == 200 and got.content == body, f"GET by tag MUST return the exact bytes pushed: {evidence(got)}"
    for desc in (manifest["config"], *manifest["layers"]):
        b = oci.get_blob(repo, desc["digest"])
        assert b.status_code == 200 and digest(b.content, "sha512") == desc["digest"], f"blob {desc['digest'][:20]}…: {evidence(b)}"


@pytest.mark.area("sha512")
@pytest.mark.spec(f"{SPEC} §Pushing Manifests by a sha512 digest (end-7, end-3)")
def test_sha512_manifest_by_digest(oci, repo, attach_log, verdict):
    attach_log(oci)
    manifest = _sha512_image_parts(oci, verdict, repo, "by-digest")
    body = canonical(manifest)
    d512 = digest(body, "sha512")
    r = oci.put_manifest(repo, d512, body)
    _sha512_unsupported(verdict, r, "manifest digest")
    assert r.status_code == 201, f"manifest PUT by its sha512 digest MUST answer 201: {evidence(r)}"
    dcd = r.headers.get("Docker-Content-Digest")
    assert dcd in (None, d512), f"Docker-Content-Digest {dcd!r} MUST equal the client provided digest {d512}"
    got = oci.get_manifest(repo, d512)
    assert got.status_code == 200 and got.content == body, f"GET by the sha512 digest MUST return the exact bytes: {evidence(got)}"
    h = oci.head_manifest(repo, d512)
    assert h.status_code == 200, f"HEAD by the sha512 digest MUST answer 200: {evidence(h)}"


# ----------------------------------------------------------------------------------------------
# subject and artifactType


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Pushing Manifests with Subject: OCI-Subject header (end-7)")
def test_subject_push_answers_oci_subject(oci, repo, attach_log, verdict):
    attach_log(oci)
    subject = oci.push_image(repo, "subject", seed="oci-subject")
    sig = oci.push_image(repo, None, seed="oci-subject-sig", subject=subject.descriptor, artifact_type=SIG)
    header = sig.put_response.headers.get("OCI-Subject")
    if header is None:
        why = referrers_api_absent(oci.referrers(repo, subject.digest))
        if why:
            verdict.unsupported(f"OCI-Subject is absent from the PUT answer ({evidence(sig.put_response)}) and {why}")
        raise AssertionError(f"a registry with the referrers API MUST answer OCI-Subject: {subject.digest} to a manifest PUT with a subject: "
                             f"{evidence(sig.put_response)}")
    assert header == subject.digest, f"OCI-Subject MUST be the subject's digest {subject.digest}, got {header!r}"


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Push: a subject that does not exist yet MUST be accepted (end-7)")
def test_subject_not_yet_pushed_is_accepted(oci, repo, attach_log):
    attach_log(oci)
    ghost = descriptor(MT_MANIFEST, b'{"labgate":"subject pushed later"}')
    oci.push_blob(repo, EMPTY_JSON)
    layer = _blob("early referrer")
    oci.push_blob(repo, layer)
    body = canonical({"schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": SIG,
                      "config": descriptor(MT_EMPTY, EMPTY_JSON), "layers": [descriptor(MT_LAYER, layer)], "subject": ghost})
    r = oci.put_manifest(repo, digest(body), body)
    assert r.status_code == 201, f"a manifest whose subject does not exist MUST initially be accepted: {evidence(r)}"
    got = oci.get_manifest(repo, digest(body))
    assert got.status_code == 200 and got.content == body, f"the referrer MUST be pullable: {evidence(got)}"


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Pushing Manifests: artifactType and subject round-trip (end-7, end-3)")
@pytest.mark.parametrize("kind", ["artifact-type", "subject", "artifact-type-and-subject", "index-with-subject"])
def test_artifact_manifest_round_trip(oci, repo, attach_log, verdict, kind):
    """Manifests using the 1.1 fields are stored and served byte for byte, with their media type."""
    attach_log(oci)
    subject = oci.push_image(repo, "subject", seed=f"round-trip {kind}")
    if kind == "index-with-subject":
        child = oci.push_image(repo, None, seed=f"round-trip child {kind}")
        pushed = oci.push_index(repo, None, [child.descriptor], subject=subject.descriptor, artifact_type=SBOM)
        media_type = MT_INDEX
    else:
        pushed = oci.push_image(repo, None, seed=f"round-trip {kind}",
                                subject=subject.descriptor if "subject" in kind else None,
                                artifact_type=SBOM if "artifact-type" in kind else None)
        media_type = MT_MANIFEST
    got = oci.get_manifest(repo, pushed.digest)
    assert got.status_code == 200, f"GET by digest: {evidence(got)}"
    assert got.content == pushed.body, "the registry MUST store the manifest in the exact byte representation provided"
    ct = got.headers.get("Content-Type", "")
    verdict.should(ct == media_type, f"Content-Type SHOULD be the pushed media type {media_type!r}, got {ct!r}")
    check_content_digest(verdict, got, pushed.body, f"GET {kind} manifest")
    served = json.loads(got.content)
    if "subject" in kind:
        assert served.get("subject") == subject.descriptor
    if "artifact-type" in kind or kind == "index-with-subject":
        assert served.get("artifactType") == SBOM


# ----------------------------------------------------------------------------------------------
# large and nested indexes


def _platform(i: int) -> dict:
    archs = ["amd64", "arm64", "ppc64le", "s390x", "riscv64", "386", "arm", "mips64le"]
    return {"architecture": archs[i % len(archs)], "os": "linux", "variant": f"v{i}"}


@pytest.mark.area("push")
@pytest.mark.spec(f"{SPEC} §Pushing Manifests: an image index with many manifests (end-7, end-3)")
def test_large_index(oci, repo, scenario, attach_log, verdict):
    attach_log(oci)
    count = scenario.options.oci.large_index_manifests
    children = []
    for i in range(count):
        # one config and one layer shared by all; the annotation makes every manifest distinct
        img = oci.push_image(repo, None, seed="large-index", annotations={"org.example.index.position": str(i)})
        children.append(dict(img.descriptor, platform=_platform(i)))
    assert len({c["digest"] for c in children}) == count
    index = oci.push_index(repo, "multi", children, annotations={"org.example.count": str(count)})
    got = oci.get_manifest(repo, "multi")
    assert got.status_code == 200 and got.content == index.body, f"GET of an index with {count} manifests MUST return the exact bytes: {evidence(got)}"
    ct = got.headers.get("Content-Type", "")
    verdict.should(ct == MT_INDEX, f"Content-Type SHOULD be {MT_INDEX!r}, got {ct!r}")
    check_content_digest(verdict, got, index.body, "GET large index")
    for child in children:
        h = oci.head_manifest(repo, child["digest"])
        assert h.status_code == 200, f"every manifest of the index MUST be retrievable by digest: {evidence(h)}"


@pytest.mark.area("pull")
@pytest.mark.spec(f"{SPEC} §Pulling manifests: nested image indexes (end-7, end-3)")
def test_nested_index(oci, repo, attach_log, verdict):
    """index(top) -> index(mid) -> index(leaf) -> images, plus an image at every level; a client
    walking down from the top tag by digest reaches every image."""
    attach_log(oci)
    images = [oci.push_image(repo, None, seed=f"nested {i}") for i in range(4)]
    leaf = oci.push_index(repo, None, [dict(images[0].descriptor, platform=_platform(0)),
                                       dict(images[1].descriptor, platform=_platform(1))])
    mid = oci.push_index(repo, None, [leaf.descriptor, dict(images[2].descriptor, platform=_platform(2))])
    top = oci.push_index(repo, "nested", [mid.descriptor, dict(images[3].descriptor, platform=_platform(3))])
    bodies = {x.digest: x.body for x in [*images, leaf, mid, top]}
    reached: set[str] = set()
    queue = [("nested", top.body)]
    fetched = 0
    while queue:
        ref, expected = queue.pop()
        r = oci.get_manifest(repo, ref)
        assert r.status_code == 200, f"GET {ref}: {evidence(r)}"
        assert r.content == expected, f"{ref}: the registry MUST serve the exact bytes pushed"
        fetched += 1
        doc = r.json()
        if doc.get("mediaType") == MT_INDEX:
            queue += [(d["digest"], bodies[d["digest"]]) for d in doc["manifests"]]
        else:
            reached.add(digest(r.content))
    assert reached == {i.digest for i in images}, "walking the nested indexes MUST reach every image"
    assert fetched == len(bodies), f"expected to fetch {len(bodies)} manifests, fetched {fetched}"
