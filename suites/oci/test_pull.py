"""Pull: GET and HEAD of manifests (by tag and by digest) and of blobs (end-2, end-3)."""

from __future__ import annotations

import pytest

from labgate.clients.oci import MT_MANIFEST, digest
from suites.oci.helpers import SPEC, check_content_digest, evidence

pytestmark = pytest.mark.area("pull")


@pytest.fixture
def image(oci, repo):
    return oci.push_image(repo, "v1", layers=2, seed="pull")


@pytest.mark.spec(f"{SPEC} §Pulling manifests (end-3 GET)")
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_get_manifest(oci, image, attach_log, verdict, by):
    attach_log(oci)
    ref = image.tag if by == "tag" else image.digest
    r = oci.get_manifest(image.repo, ref)
    assert r.status_code == 200, f"GET of an existing manifest by {by} MUST answer 200: {evidence(r)}"
    assert r.content == image.body, "the registry MUST return the manifest in the exact bytes it was pushed with"
    ct = r.headers.get("Content-Type", "")
    verdict.should(ct == MT_MANIFEST, f"Content-Type SHOULD be the pushed media type {MT_MANIFEST!r} without parameters, got {ct!r}")
    check_content_digest(verdict, r, image.body, f"GET manifest by {by}")


@pytest.mark.spec(f"{SPEC} §Checking if content exists in the registry (end-3 HEAD)")
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_head_manifest(oci, image, attach_log, verdict, by):
    attach_log(oci)
    ref = image.tag if by == "tag" else image.digest
    r = oci.head_manifest(image.repo, ref)
    assert r.status_code == 200, f"HEAD of an existing manifest by {by} MUST answer 200: {evidence(r)}"
    assert not r.content, "a HEAD answer has no body"
    length = r.headers.get("Content-Length")
    verdict.should(length == str(len(image.body)), f"HEAD manifest SHOULD carry Content-Length {len(image.body)}, got {length!r}")
    dcd = r.headers.get("Docker-Content-Digest")
    if verdict.should(bool(dcd), f"HEAD manifest by {by} SHOULD carry Docker-Content-Digest"):
        assert dcd == image.digest, f"Docker-Content-Digest {dcd!r} MUST be the digest of the manifest ({image.digest})"


@pytest.mark.spec(f"{SPEC} §Pulling blobs (end-2 GET)")
@pytest.mark.parametrize("blob", ["config", "layer"])
def test_get_blob(oci, image, attach_log, verdict, blob):
    attach_log(oci)
    desc = image.manifest["config"] if blob == "config" else image.manifest["layers"][1]
    r = oci.get_blob(image.repo, desc["digest"])
    assert r.status_code == 200, f"GET of an existing blob MUST answer 200: {evidence(r)}"
    assert digest(r.content) == desc["digest"] and len(r.content) == desc["size"], "GET blob MUST return the blob's exact bytes"
    check_content_digest(verdict, r, r.content, f"GET {blob} blob")


@pytest.mark.spec(f"{SPEC} §Checking if content exists in the registry (end-2 HEAD)")
@pytest.mark.parametrize("blob", ["config", "layer"])
def test_head_blob(oci, image, attach_log, verdict, blob):
    attach_log(oci)
    desc = image.manifest["config"] if blob == "config" else image.manifest["layers"][0]
    r = oci.head_blob(image.repo, desc["digest"])
    assert r.status_code == 200, f"HEAD of an existing blob MUST answer 200: {evidence(r)}"
    assert not r.content, "a HEAD answer has no body"
    length = r.headers.get("Content-Length")
    verdict.should(length == str(desc["size"]), f"HEAD blob SHOULD carry Content-Length {desc['size']}, got {length!r}")
    dcd = r.headers.get("Docker-Content-Digest")
    if verdict.should(bool(dcd), "HEAD blob SHOULD carry Docker-Content-Digest"):
        assert dcd == desc["digest"], f"Docker-Content-Digest {dcd!r} MUST be the blob's digest ({desc['digest']})"


@pytest.mark.spec(f"{SPEC} §Pull (end-3 then end-2: a whole image)")
def test_pull_whole_image_by_tag(oci, repo, attach_log, verdict):
    """What a client does: resolve the tag, then fetch and verify every blob the manifest names."""
    attach_log(oci)
    pushed = oci.push_image(repo, "release-1.0", layers=3, seed="whole")
    r = oci.get_manifest(repo, "release-1.0")
    assert r.status_code == 200, f"GET manifest by tag MUST answer 200: {evidence(r)}"
    manifest = r.json()
    assert digest(r.content) == pushed.digest, "the manifest pulled by tag MUST be the one pushed"
    for desc in [manifest["config"], *manifest["layers"]]:
        b = oci.get_blob(repo, desc["digest"])
        assert b.status_code == 200, f"every blob the manifest references MUST be pullable: {evidence(b)}"
        assert digest(b.content) == desc["digest"] and len(b.content) == desc["size"], f"blob {desc['digest']} content mismatch"



@pytest.mark.spec(f"{SPEC} §Pulling blobs (end-2 GET) with a Range header (RFC 9110 §14)")
@pytest.mark.parametrize("rng", ["bytes=10-19", "bytes=500-0", "bytes=5000-10000"], ids=["satisfiable", "invalid", "unsatisfiable"])
def test_get_blob_range(oci, repo, attach_log, rng):
    """A registry may honour or ignore a Range header, but its answer MUST be a whole HTTP message:
    206 with exactly the bytes asked for, 200 with the whole blob, or 416 for a range it cannot satisfy."""
    import os

    import requests

    attach_log(oci)
    data = b"labgate range " + os.urandom(1500)
    dgst = oci.push_blob(repo, data)
    try:
        r = oci.get_blob(repo, dgst, headers={"Range": rng})
    except requests.RequestException as exc:
        raise AssertionError(f"GET with Range: {rng} broke off: {exc.__class__.__name__}: {exc}") from None
    assert r.status_code in (200, 206, 416), f"Range {rng}: {evidence(r)}"
    if r.status_code == 200:
        assert r.content == data, "a 200 answer MUST carry the whole blob"
    elif r.status_code == 206:
        first, last = (int(x) for x in rng.split("=")[1].split("-"))
        assert first <= last and r.content == data[first:last + 1], f"a 206 answer MUST carry bytes {first}-{last}: {evidence(r)}"
