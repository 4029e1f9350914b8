"""Content discovery: listing tags with n/last pagination and the Link header (end-8a, end-8b), and the
referrers API with and without the artifactType filter (end-12a, end-12b)."""

from __future__ import annotations

import random

import pytest

from labgate.clients.oci import MT_CONFIG, MT_INDEX, MT_MANIFEST, descriptor
from suites.oci.helpers import SPEC, assert_error_body, assert_referrers_index, evidence, next_link, referrers_api_absent

# lower-case tags only: byte order and the spec's case-insensitive lexical order then agree
TAGS = ["0.9", "1.0", "1.1", "2.0", "edge", "latest", "stable"]

SIG = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


# ----------------------------------------------------------------------------------------------
# tag list


@pytest.fixture
def tagged(oci, repo):
    """A repository holding one manifest under every tag of TAGS (pushed in a shuffled order)."""
    img = oci.push_image(repo, None, seed="tags")
    for tag in random.sample(TAGS, len(TAGS)):
        r = oci.put_manifest(repo, tag, img.body)
        assert r.status_code == 201, f"tagging {tag}: {evidence(r)}"
    return repo


def _tags(resp, repo: str) -> list[str]:
    assert resp.status_code == 200, f"listing the tags of an existing repository MUST answer 200: {evidence(resp)}"
    body = resp.json()
    assert body.get("name") == repo, f"the tag list 'name' MUST be the repository name {repo!r}, got {body.get('name')!r}"
    tags = body.get("tags")
    assert isinstance(tags, list), f"the tag list MUST carry a 'tags' list: {resp.text[:200]}"
    assert tags == sorted(tags, key=str.lower), f"tags MUST be in lexical order, got {tags}"
    return tags


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags (end-8a)")
def test_tags_list_all(oci, tagged, attach_log):
    attach_log(oci)
    assert _tags(oci.tags(tagged), tagged) == TAGS


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: n (end-8b)")
@pytest.mark.parametrize("n", [1, 3, len(TAGS) - 1])
def test_tags_list_first_n(oci, tagged, attach_log, verdict, n):
    attach_log(oci)
    r = oci.tags(tagged, n=n)
    tags = _tags(r, tagged)
    link = next_link(r)
    if link is None:
        assert tags == TAGS[:n], f"without a Link header, ?n={n} MUST return exactly the first {n} tags, got {tags}"
    else:
        assert 0 < len(tags) <= n and tags == TAGS[:len(tags)], f"?n={n} MUST return the first tags (at most {n}), got {tags}"
    verdict.should(link is not None, f"more tags than n={n} are available: the answer SHOULD carry a Link header with rel=\"next\" ({evidence(r)})")


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: n and last (end-8b)")
def test_tags_paginate_with_last(oci, tagged, attach_log):
    """A client that pages with n and last (the previous page's last tag) sees every tag once, in order."""
    attach_log(oci)
    seen: list[str] = []
    last = None
    for _ in range(len(TAGS) + 2):
        page = _tags(oci.tags(tagged, n=2, last=last), tagged)
        assert len(page) <= 2, f"?n=2 MUST NOT return more than 2 tags, got {page}"
        if not page:
            break
        assert last is None or page[0] > last, f"?last={last} MUST return only tags after {last!r}, got {page}"
        seen += page
        last = page[-1]
    assert seen == TAGS, f"paging with n=2 and last MUST visit every tag once, in order: got {seen}"


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: Link header (end-8b)")
def test_tags_follow_link_header(oci, tagged, attach_log, verdict):
    """A client that follows the Link header from ?n=2 sees every tag once, in order."""
    attach_log(oci)
    r = oci.tags(tagged, n=2)
    seen = _tags(r, tagged)
    link = next_link(r)
    if not verdict.should(link is not None, f"more tags are available: ?n=2 SHOULD answer a Link header with rel=\"next\" ({evidence(r)})"):
        return
    for _ in range(len(TAGS) + 2):
        if link is None:
            break
        r = oci.get(link)
        page = _tags(r, tagged)
        assert not seen or not page or page[0] > seen[-1], f"the page behind the Link MUST continue after {seen[-1]!r}, got {page}"
        seen += page
        link = next_link(r)
    assert seen == TAGS, f"following the Link headers MUST visit every tag once, in order: got {seen}"
    assert link is None, "the last page MUST NOT point to a further page"


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: n=0 (end-8b)")
def test_tags_n_zero_is_empty(oci, tagged, attach_log):
    attach_log(oci)
    r = oci.tags(tagged, n=0)
    assert _tags(r, tagged) == [], "with n=0 the tag list MUST be empty"
    assert "Link" not in r.headers, f"with n=0 the answer MUST NOT include a Link header: {r.headers.get('Link')!r}"


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: last without n (end-8b)")
@pytest.mark.parametrize("last", ["1.1", "edge", "stable"])
def test_tags_after_last(oci, tagged, attach_log, last):
    attach_log(oci)
    expected = [t for t in TAGS if t > last]
    assert _tags(oci.tags(tagged, last=last), tagged) == expected, f"?last={last} MUST return the tags after {last!r} (n is optional)"


# ----------------------------------------------------------------------------------------------
# referrers


def _referrers(verdict, client, repo, subject_digest, artifact_type=None):
    """GET the referrers; an absent referrers API is 'unsupported (optional)' (helpers.referrers_api_absent)."""
    r = client.referrers(repo, subject_digest, artifact_type)
    why = referrers_api_absent(r)
    if why:
        verdict.unsupported(f"referrers API (end-12): {why}")
    return r


@pytest.fixture
def referred(oci, repo):
    """A subject image and its referrers in one repository:
    a signature and an SBOM (artifactType set), a plain image manifest (no artifactType: its config
    media type stands in), an index (no artifactType: omitted), and an unrelated manifest."""
    subject = oci.push_image(repo, "subject", seed="subject")
    sig = oci.push_image(repo, None, seed="sig", subject=subject.descriptor, artifact_type=SIG,
                         annotations={"org.example.signature.fingerprint": "abcd"})
    sbom = oci.push_image(repo, None, seed="sbom", subject=subject.descriptor, artifact_type=SBOM,
                          annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    plain = oci.push_image(repo, None, seed="plain", subject=subject.descriptor)
    child = oci.push_image(repo, None, seed="index-child")
    index = oci.push_index(repo, None, [child.descriptor], subject=subject.descriptor,
                           annotations={"org.example.kind": "bundle"})
    unrelated = oci.push_image(repo, "unrelated", seed="unrelated")
    return {"repo": repo, "subject": subject, "sig": sig, "sbom": sbom, "plain": plain, "index": index,
            "unrelated": unrelated}


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers (end-12a)")
def test_referrers_list(oci, referred, attach_log, verdict):
    attach_log(oci)
    repo, subject = referred["repo"], referred["subject"]
    r = _referrers(verdict, oci, repo, subject.digest)
    body = assert_referrers_index(r)
    listed = {d.get("digest"): d for d in body["manifests"]}
    expected = {
        referred["sig"].digest: (MT_MANIFEST, SIG, referred["sig"]),
        referred["sbom"].digest: (MT_MANIFEST, SBOM, referred["sbom"]),
        referred["plain"].digest: (MT_MANIFEST, MT_CONFIG, referred["plain"]),
        referred["index"].digest: (MT_INDEX, None, referred["index"]),
    }
    assert set(listed) == set(expected), (
        f"the referrers MUST be exactly the manifests whose subject is {subject.digest}: "
        f"missing {sorted(set(expected) - set(listed))}, unexpected {sorted(set(listed) - set(expected))}")
    for dgst, (media_type, artifact_type, pushed) in expected.items():
        d = listed[dgst]
        assert d.get("mediaType") == media_type, f"{dgst}: mediaType {d.get('mediaType')!r} MUST be {media_type!r}"
        assert d.get("size") == len(pushed.body), f"{dgst}: size {d.get('size')!r} MUST be {len(pushed.body)}"
        if artifact_type is None:
            assert not d.get("artifactType"), f"{dgst}: an index without artifactType MUST have artifactType omitted, got {d.get('artifactType')!r}"
        else:
            assert d.get("artifactType") == artifact_type, (
                f"{dgst}: artifactType MUST be {artifact_type!r} (the manifest's artifactType, else its config media type), got {d.get('artifactType')!r}")
        for key, value in (pushed.manifest.get("annotations") or {}).items():
            assert (d.get("annotations") or {}).get(key) == value, f"{dgst}: the descriptor MUST include the annotation {key}={value!r}"


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers: artifactType filter, OCI-Filters-Applied (end-12b)")
@pytest.mark.parametrize("artifact_type", [SIG, "application/vnd.example.none.v1"], ids=["matching", "no-match"])
def test_referrers_filter_artifact_type(oci, referred, attach_log, verdict, artifact_type):
    attach_log(oci)
    repo, subject = referred["repo"], referred["subject"]
    r = _referrers(verdict, oci, repo, subject.digest, artifact_type)
    body = assert_referrers_index(r)
    applied = [f.strip() for f in r.headers.get("OCI-Filters-Applied", "").split(",") if f.strip()]
    got = sorted(d.get("digest") for d in body["manifests"])
    if "artifactType" in applied:
        want = sorted([referred["sig"].digest]) if artifact_type == SIG else []
        assert got == want, f"with OCI-Filters-Applied: artifactType the list MUST hold only {artifact_type!r} referrers: {got}"
        return
    # no filter applied: the full list comes back, and the client filters
    full = sorted(referred[k].digest for k in ("sig", "sbom", "plain", "index"))
    assert got == full, (f"without OCI-Filters-Applied the registry did not filter, so the list MUST be the unfiltered "
                         f"referrers list; got {got}")
    verdict.should(False, f"the registry SHOULD support filtering on artifactType (no OCI-Filters-Applied header: {evidence(r)})")


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers: no referrers is an empty index (end-12a)")
def test_referrers_empty_index(oci, repo, attach_log, verdict):
    attach_log(oci)
    lonely = oci.push_image(repo, "lonely", seed="lonely")
    r = _referrers(verdict, oci, repo, lonely.digest)
    body = assert_referrers_index(r)
    assert body["manifests"] == [], f"a manifest without referrers MUST give an empty manifests list: {body['manifests']}"


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers: subject pushed after its referrer (end-12a)")
def test_referrers_before_subject_exists(oci, repo, attach_log, verdict):
    """Referrers may be pushed before their subject; the API lists them for the (still missing) digest."""
    attach_log(oci)
    anchor = oci.push_image(repo, "anchor", seed="anchor")  # the repository exists
    _referrers(verdict, oci, repo, anchor.digest)  # an absent API is 'unsupported', judged on an existing manifest
    absent = descriptor(MT_MANIFEST, b'{"labgate":"a subject that is never pushed"}')
    sig = oci.push_image(repo, None, seed="early-sig", subject=absent, artifact_type=SIG)
    r = oci.referrers(repo, absent["digest"])
    assert r.status_code != 404, f"a registry with the referrers API MUST NOT answer 404 to a referrers request: {evidence(r)}"
    body = assert_referrers_index(r)
    assert [d.get("digest") for d in body["manifests"]] == [sig.digest], (
        f"a newly pushed manifest with a subject MUST be listed for that subject, even before it exists: {body['manifests']}")


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers: invalid digest is 400 (end-12a)")
def test_referrers_invalid_digest_is_400(oci, repo, attach_log, verdict):
    attach_log(oci)
    img = oci.push_image(repo, "v1", seed="invalid-digest")
    # first make sure the endpoint exists at all (the verdict of an absent API is 'unsupported')
    _referrers(verdict, oci, repo, img.digest)
    bad = "sha256:" + "z" * 64
    r = oci.referrers(repo, bad)
    assert r.status_code == 400, f"a referrers request with an invalid digest MUST answer 400 Bad Request: {evidence(r)}"
    # the spec names no error code here; a JSON body must still use the error format and table
    assert_error_body(r)
