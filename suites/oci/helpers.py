"""Shared judgements of the OCI suite, so that every test decides the same question the same way.

- :func:`referrers_api_absent` is the ONE place that decides "this registry has no referrers API".
- :func:`assert_oci_error` checks a negative answer: the status AND the OCI error code, plus the
  error body format of the spec's "Error Codes" section.
- :func:`check_content_digest` checks the Docker-Content-Digest header (SHOULD be present; when
  present it MUST match the content).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import requests

from labgate.clients.oci import digest, error_codes

SPEC = "distribution-spec v1.1"
CODE_RE = re.compile(r"^[A-Z_]+$")
# the spec's "Error Codes" table: the code field MUST be one of these
SPEC_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
})


def evidence(resp: requests.Response, limit: int = 160) -> str:
    """One line naming a response: method, path, status, content type and the start of the body."""
    req = resp.request
    path = (req.path_url if req is not None else "?").split("?_state=")[0]
    body = resp.text.strip().replace("\n", " ")[:limit] if resp.content else ""
    ct = resp.headers.get("Content-Type", "")
    return f"{req.method if req is not None else '?'} {path} -> {resp.status_code}" + (f" [{ct}]" if ct else "") + (f" {body!r}" if body else "")


# ----------------------------------------------------------------------------------------------
# referrers


def referrers_api_absent(resp: requests.Response, subject_exists: bool = True) -> str | None:
    """Why ``resp`` (an answer of GET /v2/<name>/referrers/<digest>) shows that the registry has no
    referrers API, or None when the endpoint exists.

    The spec: a registry that supports the referrers API MUST NOT answer 404 to it, and a client that
    gets a 404 falls back to the referrers tag schema. So a 404 to a referrers request for a manifest
    that exists means the API is absent, whatever its body says (distribution answers 404 with an
    OCI NAME_UNKNOWN-style body from its generic router). For a subject that does not exist, only a
    bare 404 (a router's "404 page not found") or an UNSUPPORTED error says so; a 404 with an OCI
    error body is then the endpoint answering, and the MUST NOT applies.
    """
    codes = error_codes(resp)
    if resp.status_code == 404 and subject_exists:
        return f"a referrers request for an existing manifest answers 404 (clients fall back to the tag schema): {evidence(resp)}"
    if resp.status_code == 404 and not codes:
        return f"the referrers endpoint is not routed: {evidence(resp)}"
    if resp.status_code in (400, 404, 405, 501) and "UNSUPPORTED" in codes:
        return f"the referrers endpoint answers UNSUPPORTED: {evidence(resp)}"
    if resp.status_code in (405, 501) and not codes:
        return f"the referrers endpoint is not implemented: {evidence(resp)}"
    return None


def require_referrers(verdict: Any, client: Any, repo: str, subject_digest: str) -> None:
    """Skip as 'unsupported (optional)' when the registry has no referrers API (probed with a GET)."""
    why = referrers_api_absent(client.referrers(repo, subject_digest))
    if why:
        verdict.unsupported(f"referrers API (end-12a): {why}")


def assert_referrers_index(resp: requests.Response) -> dict[str, Any]:
    """A successful referrers answer: 200, an image index with the index media type."""
    assert resp.status_code == 200, f"referrers API MUST answer 200 for an existing repository: {evidence(resp)}"
    ct = resp.headers.get("Content-Type", "").split(";")[0].strip()
    assert ct == "application/vnd.oci.image.index.v1+json", f"referrers Content-Type MUST be the image index media type, got {ct!r}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("manifests"), list), f"referrers body MUST be an image index: {resp.text[:300]}"
    assert body.get("schemaVersion") == 2, f"referrers index schemaVersion MUST be 2: {resp.text[:300]}"
    return body


# ----------------------------------------------------------------------------------------------
# errors


def assert_error_body(resp: requests.Response) -> list[str]:
    """A 4xx body MAY be in any format; a JSON one MUST be {"errors": [{"code", "message", "detail"}]}
    with every code one of the spec's table (code-1 .. code-14). Returns the codes."""
    try:
        body = resp.json()
    except ValueError:
        return []
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), (
        f"a JSON error body MUST be an object with an 'errors' list: {evidence(resp)}")
    codes = []
    for i, err in enumerate(body["errors"]):
        assert isinstance(err, dict), f"errors[{i}] MUST be an object: {evidence(resp)}"
        code = err.get("code")
        assert isinstance(code, str) and CODE_RE.match(code), f"errors[{i}].code MUST contain only uppercase letters and underscores: {code!r}"
        assert code in SPEC_CODES, f"errors[{i}].code MUST be one of the spec's error codes, got {code!r}: {evidence(resp)}"
        if err.get("message") is not None:
            assert isinstance(err["message"], str), f"errors[{i}].message SHOULD be a human readable string: {err['message']!r}"
        codes.append(code)
    return codes


def assert_oci_error(verdict: Any, resp: requests.Response, statuses: int | Iterable[int], codes: str | Iterable[str],
                     *, code_must: bool = False) -> list[str]:
    """A negative answer: one of ``statuses`` (MUST) and an OCI error body naming one of ``codes``.

    - A JSON body MUST follow the spec's error format and use only the table's codes, and it must
      name one of ``codes`` (which error happened).
    - A body that is not JSON at all: the spec lets a 4xx body take any format, so this is not a
      MUST failure; the test cannot tell which error happened and records a warning, unless the
      spec prescribes the code for this case (``code_must``, e.g. MANIFEST_BLOB_UNKNOWN).
    """
    want_status = {statuses} if isinstance(statuses, int) else set(statuses)
    want_codes = {codes} if isinstance(codes, str) else set(codes)
    assert resp.status_code in want_status, f"expected HTTP {sorted(want_status)}, got {evidence(resp)}"
    try:
        resp.json()
        is_json = True
    except ValueError:
        is_json = False
    if not is_json:
        message = f"expected an OCI error body with code {sorted(want_codes)}, got {evidence(resp)}"
        assert not code_must, f"the spec prescribes the error code here: {message}"
        verdict.should(False, f"{message} (a 4xx body MAY take any format, so which error happened cannot be checked)")
        return []
    got = assert_error_body(resp)
    assert want_codes & set(got), f"expected error code {sorted(want_codes)}, got {got}: {evidence(resp)}"
    return got


# ----------------------------------------------------------------------------------------------
# digests and links


def check_content_digest(verdict: Any, resp: requests.Response, content: bytes, what: str) -> None:
    """Docker-Content-Digest SHOULD be present; when present it MUST be a digest of ``content``."""
    value = resp.headers.get("Docker-Content-Digest")
    if not verdict.should(bool(value), f"{what}: the response SHOULD carry a Docker-Content-Digest header ({evidence(resp)})"):
        return
    algorithm, _, _ = value.partition(":")
    assert algorithm in ("sha256", "sha512"), f"{what}: Docker-Content-Digest {value!r} uses an unknown algorithm"
    assert value == digest(content, algorithm), f"{what}: Docker-Content-Digest {value!r} MUST match the content ({digest(content, algorithm)})"


_LINK_RE = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')


def next_link(resp: requests.Response) -> str | None:
    """The target of the RFC 5988 ``rel="next"`` link of a response (None when there is no Link
    header). A Link header that is present MUST be RFC 5988 with the relation type next."""
    header = resp.headers.get("Link")
    if not header:
        return None
    for m in _LINK_RE.finditer(header):
        params = [p.strip() for p in m.group(2).split(";") if p.strip()]
        rels = [p.split("=", 1)[1].strip().strip('"') for p in params if p.lower().startswith("rel=")]
        if any("next" in r.split() for r in rels):
            return m.group(1)
    raise AssertionError(f"a Link header MUST be RFC 5988 with rel=\"next\", got {header!r}")
