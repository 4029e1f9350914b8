"""Push: blob uploads (monolithic POST+PUT, single POST, chunked, streamed, cancelled), cross-repository
mounts, and manifest pushes (end-4a, end-4b, end-5, end-6, end-7, end-11, end-13)."""

from __future__ import annotations

import json
import os

import pytest

from labgate.clients.oci import MT_CONFIG, MT_LAYER, MT_MANIFEST, canonical, descriptor, digest
from suites.oci.helpers import SPEC, assert_error_body, assert_oci_error, evidence

pytestmark = pytest.mark.area("push")


def _blob(label: str, size: int = 300) -> bytes:
    """Unique content (so no test ever finds its blob already present)."""
    head = f"labgate {label} ".encode() + os.urandom(16)
    return (head * (size // len(head) + 1))[:size]


def _assert_upload_session(r, what: str) -> str:
    assert r.status_code == 202, f"{what} MUST answer 202 Accepted: {evidence(r)}"
    loc = r.headers.get("Location")
    assert loc, f"{what} MUST carry a Location header: {evidence(r)}"
    return loc


def _assert_pullable(client, r, repo: str, data: bytes, what: str) -> None:
    """A 201 with a Location header that is a pullable blob URL serving ``data``."""
    assert r.status_code == 201, f"{what} MUST answer 201 Created: {evidence(r)}"
    loc = r.headers.get("Location")
    assert loc, f"{what} MUST carry Location: <blob-location>: {evidence(r)}"
    got = client.get(loc)
    assert got.status_code == 200 and got.content == data, f"the Location of {what} MUST be a pullable blob URL: {evidence(got)}"
    by_digest = client.get_blob(repo, digest(data))
    assert by_digest.status_code == 200 and by_digest.content == data, f"the blob MUST be pullable by its digest: {evidence(by_digest)}"


def _check_range(r, end: int, what: str) -> None:
    rng = r.headers.get("Range")
    assert rng == f"0-{end}", f"{what} MUST carry Range: 0-{end} (the last uploaded byte), got {rng!r}"


# ----------------------------------------------------------------------------------------------
# monolithic


@pytest.mark.spec(f"{SPEC} §POST then PUT (end-4a, end-6)")
def test_blob_post_then_put(oci, repo, attach_log):
    attach_log(oci)
    data = _blob("post-put")
    loc = _assert_upload_session(oci.start_upload(repo), "POST /blobs/uploads/")
    r = oci.put_upload(loc, digest(data), data)
    _assert_pullable(oci, r, repo, data, "the closing PUT")


@pytest.mark.spec(f"{SPEC} §Single POST (end-4b)")
def test_blob_single_post(oci, repo, attach_log, verdict):
    attach_log(oci)
    data = _blob("single-post")
    r = oci.start_upload(repo, params={"digest": digest(data)}, data=data)
    if r.status_code == 202:
        # the SHOULD for registries without single POST: 202 + Location, the client then PUTs
        loc = r.headers.get("Location")
        assert loc, f"a registry answering 202 to a single POST SHOULD give a Location to PUT to: {evidence(r)}"
        done = oci.put_upload(loc, digest(data), data)
        _assert_pullable(oci, done, repo, data, "the PUT after a 202 single POST")
        verdict.unsupported(f"single POST monolithic upload (MAY): {evidence(r)} with Location; the fallback PUT answered {done.status_code}")
    _assert_pullable(oci, r, repo, data, "a single POST with ?digest=")


# ----------------------------------------------------------------------------------------------
# chunked and streamed


@pytest.mark.spec(f"{SPEC} §Pushing a blob in chunks (end-5, end-13, end-6)")
@pytest.mark.parametrize("final_chunk", ["patch", "put"])
def test_blob_chunked_upload(oci, repo, attach_log, verdict, final_chunk):
    attach_log(oci)
    r = oci.start_upload(repo)
    loc = _assert_upload_session(r, "POST /blobs/uploads/ (Content-Length: 0)")
    min_len = int(r.headers.get("OCI-Chunk-Min-Length") or 0)
    size = max(min_len, 100)
    data = _blob("chunked", size * 3 + size // 2)
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    offset = 0
    last = chunks.pop() if final_chunk == "put" else None
    for chunk in chunks:
        p = oci.patch_upload(loc, chunk, offset)
        assert p.status_code == 202, f"PATCH of chunk {offset}-{offset + len(chunk) - 1} MUST answer 202: {evidence(p)}"
        loc = p.headers.get("Location") or ""
        assert loc, f"a chunk PATCH answer MUST carry Location: {evidence(p)}"
        offset += len(chunk)
        _check_range(p, offset - 1, "a chunk PATCH answer")
        status = oci.upload_status(loc)
        assert status.status_code == 204, f"GET of an active upload MUST answer 204 No Content: {evidence(status)}"
        assert status.headers.get("Location"), f"the upload status MUST carry Location: {evidence(status)}"
        _check_range(status, offset - 1, "the upload status (end-13)")
        loc = status.headers["Location"]
    if last is None:
        done = oci.put_upload(loc, digest(data))
    else:
        done = oci.request("PUT", oci.absolute(loc), params={"digest": digest(data)}, data=last, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(len(last)),
            "Content-Range": f"{offset}-{offset + len(last) - 1}"})
    _assert_pullable(oci, done, repo, data, f"the closing PUT (final chunk in the {final_chunk.upper()})")


@pytest.mark.spec(f"{SPEC} §Pushing a blob in chunks: out-of-order chunk (end-5 416, end-13)")
def test_blob_chunk_out_of_order_is_416(oci, repo, attach_log):
    attach_log(oci)
    data = _blob("out-of-order", 200)
    loc = _assert_upload_session(oci.start_upload(repo), "POST /blobs/uploads/")
    p = oci.patch_upload(loc, data[:100], 0)
    assert p.status_code == 202, f"the first chunk MUST be accepted: {evidence(p)}"
    loc = p.headers["Location"]
    bad = oci.patch_upload(loc, data[150:], 150)  # skips bytes 100-149
    assert bad.status_code == 416, f"a chunk uploaded out of order MUST answer 416 Requested Range Not Satisfiable: {evidence(bad)}"
    # recover as the spec describes: GET the status, resume at the end of the valid range
    status = oci.upload_status(loc)
    assert status.status_code == 204, f"GET of the upload after a 416 MUST answer 204: {evidence(status)}"
    _check_range(status, 99, "the upload status after a 416")
    resume = oci.patch_upload(status.headers["Location"], data[100:], 100)
    assert resume.status_code == 202, f"the in-order chunk after a 416 MUST be accepted: {evidence(resume)}"
    done = oci.put_upload(resume.headers["Location"], digest(data))
    _assert_pullable(oci, done, repo, data, "the closing PUT after a 416")
    # a 416 body MAY have any format; when it is JSON, it MUST follow the spec's error format and codes
    assert_error_body(bad)


@pytest.mark.spec(f"{SPEC} §Pushing a blob in chunks: streamed PATCH without Content-Range (end-5, end-6)")
def test_blob_streamed_upload(oci, repo, attach_log):
    attach_log(oci)
    data = _blob("streamed", 4096)
    loc = _assert_upload_session(oci.start_upload(repo), "POST /blobs/uploads/")
    p = oci.patch_upload(loc, data)  # no Content-Range: the whole stream in one PATCH
    assert p.status_code == 202, f"a streamed PATCH MUST answer 202: {evidence(p)}"
    assert p.headers.get("Location"), f"a PATCH answer MUST carry Location: {evidence(p)}"
    _check_range(p, len(data) - 1, "a streamed PATCH answer")
    done = oci.put_upload(p.headers["Location"], digest(data))
    _assert_pullable(oci, done, repo, data, "the closing PUT of a streamed upload")


@pytest.mark.spec(f"{SPEC} §Pushing a blob in chunks: cancelled upload (DELETE upload, end-13 404)")
def test_cancelled_upload_is_gone(oci, repo, attach_log, verdict):
    attach_log(oci)
    data = _blob("cancelled", 100)
    loc = _assert_upload_session(oci.start_upload(repo), "POST /blobs/uploads/")
    p = oci.patch_upload(loc, data, 0)
    assert p.status_code == 202, f"PATCH MUST answer 202: {evidence(p)}"
    loc = p.headers["Location"]
    c = oci.cancel_upload(loc)
    assert c.status_code in (200, 202, 204), f"DELETE of an upload session should cancel it (2xx): {evidence(c)}"
    status = oci.upload_status(loc)
    assert_oci_error(verdict, status, 404, "BLOB_UPLOAD_UNKNOWN")
    blob = oci.head_blob(repo, digest(data))
    assert blob.status_code == 404, f"a cancelled upload MUST NOT have produced a blob: {evidence(blob)}"


# ----------------------------------------------------------------------------------------------
# cross-repository mount


@pytest.mark.spec(f"{SPEC} §Mounting a blob from another repository (end-11)")
def test_mount_blob_from_another_repository(oci, new_repo, attach_log, verdict):
    attach_log(oci)
    src, dst = new_repo("src"), new_repo("dst")
    data = _blob("mount")
    dgst = oci.push_blob(src, data)
    r = oci.mount_blob(dst, dgst, src)
    if r.status_code == 202:
        verdict.unsupported(f"cross-repository mount (the registry answered a new upload session): {evidence(r)}")
    _assert_pullable(oci, r, dst, data, "a successful mount")
    dcd = r.headers.get("Docker-Content-Digest")
    if dcd:
        algorithm = dcd.split(":", 1)[0]
        assert dcd == digest(data, algorithm), f"Docker-Content-Digest {dcd!r} of the mount MUST be a digest of the blob"


@pytest.mark.spec(f"{SPEC} §Mounting a blob from another repository: blob unknown there (end-11 202)")
def test_mount_unknown_blob_starts_upload(oci, new_repo, attach_log, verdict):
    attach_log(oci)
    src, dst = new_repo("src"), new_repo("dst")
    oci.push_blob(src, _blob("mount-src"))  # the source repository exists
    data = _blob("never-pushed")
    r = oci.mount_blob(dst, digest(data), src)
    assert r.status_code != 201, f"a blob that is not in the source repository MUST NOT be mounted: {evidence(r)}"
    verdict.should(r.status_code == 202, f"an impossible mount SHOULD answer 202 (a new upload session): {evidence(r)}")
    if r.status_code == 202:
        loc = r.headers.get("Location")
        assert loc, f"a 202 upload session MUST carry Location: {evidence(r)}"
        done = oci.put_upload(loc, digest(data), data)
        _assert_pullable(oci, done, dst, data, "the PUT into the session a failed mount opened")


@pytest.mark.requires("registry.access-control")
@pytest.mark.spec(f"{SPEC} §Mounting a blob from another repository: source not readable by the caller (end-11)")
@pytest.mark.beyond_official("the official program runs as one identity")
def test_mount_from_unreadable_repository_is_refused(oci, vault, new_repo, attach_log, verdict):
    """vault-robot owns vault/**; ci-robot must not obtain a vault blob by mounting it."""
    attach_log(oci)
    attach_log(vault)
    secret_repo = new_repo("secret", prefix="vault")
    dst = new_repo("dst")
    data = _blob("vault-secret")
    dgst = vault.push_blob(secret_repo, data)
    direct = oci.head_blob(secret_repo, dgst)
    assert direct.status_code in (401, 403, 404), f"ci-robot MUST NOT read vault/**: {evidence(direct)}"
    r = oci.mount_blob(dst, dgst, secret_repo)
    assert r.status_code != 201, f"a mount FROM a repository the caller cannot read MUST NOT succeed: {evidence(r)}"
    if r.status_code in (401, 403):
        assert_oci_error(verdict, r, (401, 403), ("UNAUTHORIZED", "DENIED"))
    else:
        assert r.status_code == 202, f"expected a new upload session (202) or 401/403, got {evidence(r)}"
        leaked = oci.head_blob(dst, dgst)
        assert leaked.status_code == 404, f"the vault blob MUST NOT appear in {dst}: {evidence(leaked)}"


# ----------------------------------------------------------------------------------------------
# manifests


@pytest.mark.spec(f"{SPEC} §Pushing Manifests (end-7)")
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_push_manifest(oci, repo, attach_log, verdict, by):
    attach_log(oci)
    config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = _blob("manifest-layer")
    for blob in (config, layer):
        oci.push_blob(repo, blob)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": descriptor(MT_CONFIG, config), "layers": [descriptor(MT_LAYER, layer)]}
    body = json.dumps(manifest, indent=3).encode() + b"\n"  # not canonical: the exact bytes must survive
    dgst = digest(body)
    ref = "v1.0" if by == "tag" else dgst
    r = oci.put_manifest(repo, ref, body)
    assert r.status_code == 201, f"manifest PUT by {by} MUST answer 201: {evidence(r)}"
    loc = r.headers.get("Location")
    assert loc, f"manifest PUT MUST carry Location: {evidence(r)}"
    dcd = r.headers.get("Docker-Content-Digest")
    if by == "digest":
        assert dcd in (None, dgst), f"Docker-Content-Digest {dcd!r} MUST equal the client provided digest {dgst}"
    elif dcd:
        assert dcd == dgst, f"Docker-Content-Digest {dcd!r} MUST be the digest of the pushed bytes ({dgst})"
    pulled = oci.get(loc, headers={"Accept": MT_MANIFEST})
    assert pulled.status_code == 200 and pulled.content == body, f"Location MUST be a pullable manifest URL serving the exact bytes: {evidence(pulled)}"
    for reference in {ref, dgst}:
        got = oci.get_manifest(repo, reference)
        assert got.status_code == 200, f"GET manifest {reference}: {evidence(got)}"
        assert got.content == body, "the registry MUST store the manifest in the exact byte representation provided"


MT_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


@pytest.mark.spec(f"{SPEC} §Pushing Manifests (end-7): a manifest whose non-distributable layer is not in the registry")
def test_push_manifest_with_non_distributable_layer(oci, repo, attach_log):
    """image-spec v1.1 §Non-distributable layers: the layer is fetched from its URLs, not pushed,
    so its absence in the repository MUST NOT make the manifest invalid."""
    attach_log(oci)
    config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    oci.push_blob(repo, config)
    foreign = _blob("foreign-layer")
    layer = descriptor(MT_NONDISTRIBUTABLE, foreign, urls=["https://example.invalid/layers/" + digest(foreign).split(":")[1]])
    body = canonical({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": descriptor(MT_CONFIG, config), "layers": [layer]})
    r = oci.put_manifest(repo, "foreign", body)
    assert r.status_code == 201, f"a manifest with a non-distributable layer MUST be accepted without that blob: {evidence(r)}"
    got = oci.get_manifest(repo, "foreign")
    assert got.status_code == 200 and got.content == body, f"GET manifest foreign: {evidence(got)}"
