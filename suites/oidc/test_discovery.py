"""OpenID Connect Discovery 1.0 against Pocket ID: the document, its issuer, its keys.

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

import pytest
import requests

from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.stack import Stack

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (fix: pip install PyJWT)")

pytestmark = [pytest.mark.requires("identity"), pytest.mark.read_only, pytest.mark.area("discovery")]

# Discovery 1.0 §3: REQUIRED provider metadata (token_endpoint: unless only the implicit flow is used)
REQUIRED = ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
            "subject_types_supported", "id_token_signing_alg_values_supported"]


def _config(stack: Stack, back: oidc.Browser) -> requests.Response:
    return back.get(stack.issuer_url + "/.well-known/openid-configuration")


@pytest.mark.spec("OpenID Connect Discovery 1.0 §4.3")
def test_issuer_equals_the_configured_url_exactly(stack: Stack, back, record) -> None:
    r = _config(stack, back)
    assert r.status_code == 200, r.status_code
    issuer = r.json().get("issuer")
    record("issuer", stack.issuer_url, str(issuer))
    # "The issuer value returned MUST be identical to the Issuer URL that was used as the prefix to
    # /.well-known/openid-configuration": byte for byte, no trailing slash, same case.
    assert issuer == stack.issuer_url, f"issuer {issuer!r} is not the URL the configuration was fetched from ({stack.issuer_url!r})"


@pytest.mark.spec("OpenID Connect Discovery 1.0 §4.2")
def test_configuration_is_json_over_200(stack: Stack, back) -> None:
    r = _config(stack, back)
    assert r.status_code == 200, r.status_code
    ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
    assert ctype == "application/json", f"a successful response MUST use the application/json content type, got {ctype!r}"
    assert isinstance(r.json(), dict)


@pytest.mark.spec("OpenID Connect Discovery 1.0 §3")
@pytest.mark.parametrize("field", REQUIRED)
def test_required_metadata_present(stack: Stack, back, field: str) -> None:
    doc = _config(stack, back).json()
    assert doc.get(field), f"REQUIRED provider metadata {field!r} is missing or empty"
    if field == "response_types_supported":
        # "Dynamic OpenID Providers MUST support the code, id_token, and the token id_token Response
        # Type values"; Pocket ID is a static provider, so only its own flow is checked: code.
        assert "code" in doc[field], doc[field]
    if field == "id_token_signing_alg_values_supported":
        assert "RS256" in doc[field], f"the algorithm RS256 MUST be included, got {doc[field]}"
    if field.endswith("_endpoint") or field == "jwks_uri":
        assert str(doc[field]).startswith(("http://", "https://")), doc[field]


@pytest.mark.spec("OpenID Connect Discovery 1.0 §3 (scopes_supported; openid MUST be listed); Pocket ID groups scope")
def test_scopes_supported_includes_openid_and_groups(stack: Stack, back, record) -> None:
    scopes = _config(stack, back).json().get("scopes_supported", [])
    record("scopes_supported", "openid, groups", ", ".join(scopes))
    assert "openid" in scopes, "the server MUST support the openid scope value"
    assert "groups" in scopes, f"the groups scope (group names in the groups claim) is not announced: {scopes}"


@pytest.mark.requires("identity.write")  # it logs in, which a read-only stack does not allow
@pytest.mark.spec("OpenID Connect Core 1.0 §10.1.1; RFC 7517 §4-5; Discovery 1.0 §3 (jwks_uri)")
def test_jwks_keys_verify_an_id_token(stack: Stack, browser, back, record) -> None:
    doc = _config(stack, back).json()
    jwks = back.get(doc["jwks_uri"])
    assert jwks.status_code == 200, jwks.status_code
    keys = jwks.json().get("keys", [])
    assert keys, "the JWK Set has no keys"
    for k in keys:
        private = {"d", "p", "q", "dp", "dq", "qi", "k"} & set(k)
        assert not private, f"key {k.get('kid')} publishes private members {sorted(private)}"
        assert k.get("use", "sig") == "sig", f"key {k.get('kid')} has use {k.get('use')!r}"
    b = browser("alice")
    flow = oidc.code_flow(b, stack, "labgate-rp", via=back, prompt="consent")
    assert flow.token is not None and flow.token.status_code == 200, show(flow.token.text) if flow.token is not None else "no exchange"
    id_token = flow.tokens["id_token"]
    header = jwt.get_unverified_header(id_token)
    record("id_token header", "alg in id_token_signing_alg_values_supported, kid in the JWK Set",
           f"alg {header.get('alg')}, kid {header.get('kid')}")
    assert header.get("alg") in doc["id_token_signing_alg_values_supported"], header
    # "If there are multiple keys in the referenced JWK Set document, a kid value MUST be provided in the JOSE Header"
    if len(keys) > 1:
        assert header.get("kid"), "several keys published and the ID token names none (kid)"
    match = [k for k in keys if k.get("kid") == header.get("kid")] if header.get("kid") else keys
    assert len(match) == 1, f"kid {header.get('kid')!r} does not name exactly one key of the JWK Set"
    key = jwt.PyJWK(match[0]).key
    claims = jwt.decode(id_token, key, algorithms=[header["alg"]], audience="labgate-rp", issuer=stack.issuer_url)
    assert claims["iss"] == stack.issuer_url, f"iss {claims['iss']!r}"
