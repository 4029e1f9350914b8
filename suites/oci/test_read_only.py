"""Pull and discovery checks that write nothing: they run against every stack, including a live
deployment the existing provider attaches to (its scenario names the repository to read).

On a stack labgate started, the repository is made for the run first (pushed by the CI robot); on
an existing deployment it is the one the scenario names, read with the scenario's credentials."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from labgate.clients.oci import MT_INDEX, MT_MANIFEST, OciClient, digest
from suites.oci.helpers import SPEC, assert_oci_error, evidence, referrers_api_absent

pytestmark = [pytest.mark.read_only, pytest.mark.area("pull")]
MANIFEST_TYPES = (MT_MANIFEST, MT_INDEX, "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json")


@pytest.fixture(scope="session")
def named(stack, scenario) -> dict:
    """The repository to read, a tag in it and a client allowed to read it."""
    if stack.read_only:
        account = next(iter(stack.credentials), None)
        client = OciClient(stack.registry_url, (account, stack.password(account)) if account else None)
        repo = stack.repository
        tag = scenario.existing.registry.tag if scenario.existing else None
        if tag is None:
            r = client.tags(repo)
            assert r.status_code == 200, f"the scenario's repository {repo} MUST be readable: {evidence(r)}"
            tags = r.json().get("tags") or []
            assert tags, f"the scenario's repository {repo} has no tags: name one that exists (existing.registry.tag)"
            tag = tags[0]
        return {"client": client, "repo": repo, "tag": tag}
    ci = OciClient(stack.registry_url, ("ci-robot", stack.password("ci-robot")))
    repo = f"{scenario.options.oci.repository_prefix}/read-only-{uuid4().hex[:8]}"
    ci.push_image(repo, "v1", seed="read-only checks")
    reader = next((r.name for r in scenario.identities.robots if "readers" in r.groups), "ci-robot")
    return {"client": OciClient(stack.registry_url, (reader, stack.password(reader))), "repo": repo, "tag": "v1"}


@pytest.fixture
def client(named, attach_log) -> OciClient:
    attach_log(named["client"])
    return named["client"]


def _manifest(client: OciClient, repo: str, ref: str):
    r = client.get_manifest(repo, ref, accept=MANIFEST_TYPES)
    assert r.status_code == 200, f"GET manifest {repo}:{ref} MUST answer 200: {evidence(r)}"
    return r


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags (end-8a)")
def test_tag_list_names_the_tag(client, named):
    r = client.tags(named["repo"])
    assert r.status_code == 200, evidence(r)
    body = r.json()
    assert body.get("name") == named["repo"], f"the tag list MUST name its repository: {body.get('name')!r}"
    assert named["tag"] in (body.get("tags") or []), f"{named['tag']!r} MUST be listed: {body.get('tags')}"


@pytest.mark.area("tag list")
@pytest.mark.spec(f"{SPEC} §Listing Tags: ?n=1 (end-8b)")
def test_tag_list_first_one(client, named):
    r = client.tags(named["repo"], n=1)
    assert r.status_code == 200, evidence(r)
    assert len(r.json().get("tags") or []) <= 1, f"?n=1 MUST NOT return more than one tag: {r.json().get('tags')}"


@pytest.mark.spec(f"{SPEC} §Pulling manifests by tag and by digest (end-3)")
def test_manifest_by_tag_and_digest(client, named):
    r = _manifest(client, named["repo"], named["tag"])
    ct = r.headers.get("Content-Type", "").split(";")[0].strip()
    assert ct in MANIFEST_TYPES, f"a manifest's Content-Type MUST be its media type, got {ct!r}"
    d = digest(r.content)
    header = r.headers.get("Docker-Content-Digest")
    assert header in (None, d), f"Docker-Content-Digest {header!r} MUST match the content ({d})"
    by_digest = client.get_manifest(named["repo"], d, accept=MANIFEST_TYPES)
    assert by_digest.status_code == 200 and by_digest.content == r.content, f"the same manifest MUST be served by digest: {evidence(by_digest)}"
    head = client.head_manifest(named["repo"], d, accept=MANIFEST_TYPES)
    assert head.status_code == 200 and not head.content, f"HEAD by digest MUST answer 200 without a body: {evidence(head)}"


@pytest.mark.spec(f"{SPEC} §Pulling blobs: content addressed (end-2)")
def test_blobs_match_their_digests(client, named):
    m = json.loads(_manifest(client, named["repo"], named["tag"]).content)
    if m.get("manifests"):  # an index: read its first child
        m = json.loads(_manifest(client, named["repo"], m["manifests"][0]["digest"]).content)
    for desc in [m["config"], *m.get("layers", [])][:3]:
        if desc.get("urls"):
            continue  # non-distributable
        b = client.get_blob(named["repo"], desc["digest"])
        assert b.status_code == 200, f"GET blob {desc['digest']} MUST answer 200: {evidence(b)}"
        assert digest(b.content, desc["digest"].split(":")[0]) == desc["digest"], f"blob {desc['digest']} MUST match its digest"
        h = client.head_blob(named["repo"], desc["digest"])
        assert h.status_code == 200 and int(h.headers.get("Content-Length", -1)) == desc["size"], (
            f"HEAD blob MUST give its size {desc['size']}: {evidence(h)}")


@pytest.mark.area("error codes")
@pytest.mark.spec(f"{SPEC} §Error Codes: MANIFEST_UNKNOWN, BLOB_UNKNOWN")
def test_unknown_manifest_and_blob_are_404(client, named, verdict):
    missing = digest(b"labgate: content that exists nowhere " + uuid4().hex.encode())
    assert_oci_error(verdict, client.get_manifest(named["repo"], missing), 404, ("MANIFEST_UNKNOWN",))
    assert_oci_error(verdict, client.get_blob(named["repo"], missing), 404, ("BLOB_UNKNOWN",))


@pytest.mark.area("referrers")
@pytest.mark.spec(f"{SPEC} §Listing Referrers (end-12a)")
def test_referrers_of_the_named_manifest(client, named, verdict):
    d = digest(_manifest(client, named["repo"], named["tag"]).content)
    r = client.referrers(named["repo"], d)
    why = referrers_api_absent(r)
    if why:
        verdict.unsupported(f"referrers API (end-12a): {why}")
    assert r.status_code == 200, evidence(r)
    assert r.headers.get("Content-Type", "").split(";")[0] == MT_INDEX, f"referrers MUST answer an image index: {evidence(r)}"
    assert isinstance(r.json().get("manifests"), list)


@pytest.mark.area("auth")
@pytest.mark.spec(f"{SPEC} §Error Codes: UNAUTHORIZED; RFC 7235 (WWW-Authenticate)")
def test_wrong_password_is_401(stack, named, attach_log):
    account = named["client"].auth[0] if named["client"].auth else None
    if account is None:
        pytest.skip("the scenario gives no credentials, so there is no account to send a wrong password for")
    wrong = OciClient(stack.registry_url, (account, "not-the-password-" + uuid4().hex[:6]))
    attach_log(wrong)
    r = wrong.tags(named["repo"])
    assert r.status_code == 401, f"a wrong password MUST be refused with 401: {evidence(r)}"
    assert r.headers.get("WWW-Authenticate"), "a 401 MUST carry WWW-Authenticate"
