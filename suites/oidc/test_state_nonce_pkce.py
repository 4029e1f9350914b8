"""state, nonce, PKCE and single-use codes.

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

import pytest

from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.stack import Stack

pytestmark = [pytest.mark.requires("identity.pocket-id"), pytest.mark.area("state/nonce/pkce")]
RP = "labgate-rp"
PKCE = "labgate-pkce"


@pytest.mark.spec("RFC 6749 §4.1.2 (state: the exact value received from the client)")
def test_state_echoed_unchanged(stack: Stack, browser, record) -> None:
    state = "st-Ünïcode +/=&%;x-" + oidc.new_state()  # characters that must survive encoding both ways
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, RP, state=state, prompt="consent"))
    record("state", state, res.params.get("state", "<none>"))
    assert res.response.status_code == 303 and res.code, show(res.location, 160)
    assert res.params.get("state") == state, f"state came back as {res.params.get('state')!r}"


@pytest.mark.spec("RFC 6749 §4.1.2.1 (error response: error, state); RFC 9700 §2.1 (CSRF protection); Pocket ID: state ≥ 8 characters")
@pytest.mark.parametrize("state", [None, "1234567"], ids=["missing", "too-short"])
def test_missing_or_short_state_refused(stack: Stack, browser, record, state: str | None) -> None:
    """Pocket ID requires a state of at least 8 characters (fosite's minimum parameter entropy). The
    refusal of a request with a valid redirect URI is an error response at that URI, without a code."""
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, RP, state=state, prompt="consent"))
    q = res.params
    record("state " + ("missing" if state is None else repr(state)), "error at the redirect URI, no code",
           f"{res.response.status_code} error={q.get('error')} state={q.get('state')!r}")
    assert "code" not in q, "a code was issued for a request without a usable state"
    assert res.location.startswith(stack.oidc_redirects[RP] + "?"), show(res.location, 160)
    assert q.get("error") == "invalid_state", q
    if state is not None:
        assert q.get("state") == state, "an error response MUST carry the state the client sent"


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.1 (nonce), §3.1.3.7 item 11, §2 (nonce passed through unmodified)")
def test_nonce_echoed_in_the_id_token(stack: Stack, browser, back, record) -> None:
    nonce = "n-" + oidc.new_state()
    b = browser("bob")
    flow = oidc.code_flow(b, stack, RP, via=back, nonce=nonce, prompt="consent")
    claims = oidc.verify_id_token(stack, flow.tokens["id_token"], RP, nonce=nonce)
    record("nonce", nonce, str(claims.get("nonce")))
    assert claims.get("nonce") == nonce, f"nonce {claims.get('nonce')!r}, sent {nonce!r}"


@pytest.mark.spec("RFC 7636 §4.6 (S256 verification); §4.5")
def test_pkce_s256_correct_verifier_works(stack: Stack, browser, back, record) -> None:
    b = browser("alice")
    flow = oidc.code_flow(b, stack, PKCE, pkce=True, via=back)
    assert flow.params.get("code_challenge_method") == "S256", flow.params.get("code_challenge_method")
    record("S256 verifier", "200", f"{flow.token.status_code if flow.token is not None else '-'}")
    assert flow.token is not None and flow.token.status_code == 200, show(flow.token.text, 200) if flow.token is not None else ""
    oidc.verify_id_token(stack, flow.tokens["id_token"], PKCE, nonce=flow.params["nonce"])


@pytest.mark.spec("RFC 7636 §4.6 (mismatch: invalid_grant)")
@pytest.mark.parametrize("verifier", ["wrong", "missing"])
def test_pkce_wrong_or_missing_verifier_is_invalid_grant(stack: Stack, browser, back, record, verifier: str) -> None:
    b = browser("alice")
    flow = oidc.code_flow(b, stack, PKCE, pkce=True, exchange=False)
    code = flow.auth.code
    assert code, show(flow.auth.location, 160)
    sent = oidc.pkce_pair()[0] if verifier == "wrong" else None
    r = oidc.exchange_code(stack, PKCE, code, code_verifier=sent, via=back)
    record(f"{verifier} verifier", "400 invalid_grant", f"{r.status_code} {r.json().get('error')}")
    assert r.status_code == 400 and r.json().get("error") == "invalid_grant", f"{r.status_code} {show(r.text, 200)}"
    assert "access_token" not in r.text, "an access token was issued anyway"


@pytest.mark.spec("RFC 7636 §4.4.1; RFC 9700 §2.1.1 (a client that requires PKCE: missing code_challenge refused)")
def test_pkce_client_without_code_challenge_refused(stack: Stack, browser, record) -> None:
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, PKCE))
    q = res.params
    record("no code_challenge", "error invalid_request at the redirect URI, no code", f"{res.response.status_code} error={q.get('error')}")
    assert "code" not in q, "a code was issued without a code_challenge to a client that requires PKCE"
    assert res.location.startswith(stack.oidc_redirects[PKCE] + "?"), show(res.location, 160)
    assert q.get("error") == "invalid_request", q


@pytest.mark.spec("RFC 6749 §4.1.2 (a code used twice MUST be denied; tokens SHOULD be revoked); RFC 9700 §4.5")
def test_code_reuse_is_invalid_grant_and_revokes_the_first_tokens(stack: Stack, browser, back, verdict, record) -> None:
    b = browser("alice")
    flow = oidc.code_flow(b, stack, RP, via=back, prompt="consent", scope="openid profile groups offline_access")
    assert flow.token is not None and flow.token.status_code == 200, show(flow.token.text, 200) if flow.token is not None else ""
    first = flow.tokens
    fresh = oidc.userinfo(stack, first["access_token"], via=back).status_code
    assert fresh == 200, f"the fresh access token is refused at userinfo ({fresh})"
    again = oidc.exchange_code(stack, RP, flow.auth.code, via=back)
    record("second exchange", "400 invalid_grant", f"{again.status_code} {again.json().get('error')}")
    assert again.status_code == 400 and again.json().get("error") == "invalid_grant", f"{again.status_code} {show(again.text, 200)}"
    assert "access_token" not in again.text, "the replayed code was exchanged for tokens"
    ui = oidc.userinfo(stack, first["access_token"], via=back)
    record("first access token at userinfo afterwards", "401 (revoked)", str(ui.status_code))
    verdict.should(ui.status_code == 401, f"the access token from the first exchange still works at userinfo ({ui.status_code}) "
                                          "after the code was replayed (RFC 6749 §4.1.2: SHOULD revoke)")
    if first.get("refresh_token"):
        rt = oidc.token_request(stack, RP, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, via=back)
        record("first refresh token afterwards", "400 invalid_grant (revoked)", f"{rt.status_code} {rt.json().get('error')}")
        verdict.should(rt.status_code != 200, f"the refresh token from the first exchange still works ({rt.status_code}) after the code was replayed")
