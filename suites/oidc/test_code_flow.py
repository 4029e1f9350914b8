"""The authorization code flow, headless, with the confidential client labgate-rp (consent not skipped).

A browser signs in to Pocket ID with a one-time token minted through the admin API, then does what
a user agent does: /authorize → consent interaction → 303 to the registered redirect URI with a
code → the relying party exchanges it with its client secret → the ID token is verified (signature
against the JWKS, iss, aud, exp, iat, nonce) → userinfo.

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.process import wait_until
from labgate.stack import Stack

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (fix: pip install PyJWT)")

pytestmark = [pytest.mark.requires("identity.pocket-id"), pytest.mark.area("code flow")]
RP = "labgate-rp"


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.4 (consent), §3.1.2.5; RFC 9207 §2 (iss)")
def test_consent_interaction_then_code(stack: Stack, browser, record) -> None:
    b = browser("alice")
    params = oidc.authorize_params(stack, RP, prompt="consent")
    first = oidc.authorize(b, stack, params)
    iid = oidc.interaction_id(first.headers.get("Location"))
    assert first.status_code == 302 and iid, f"prompt=consent must lead to the consent interaction: {first.status_code} {first.headers.get('Location')}"
    info = b.get(f"{stack.issuer_url}/api/oidc/interactions/{iid}").json()
    record("interaction", "currentStep consent, the requested scopes", json.dumps({k: info.get(k) for k in ("currentStep", "scopes")}))
    assert info.get("currentStep") == "consent", info
    assert set(params["scope"].split()) <= set(info.get("scopes", [])), info
    assert info.get("client", {}).get("id") == RP, info
    res = oidc.complete_interactions(b, stack, first)
    assert res.steps == ["consent"], res.steps
    assert res.response.status_code == 303, res.response.status_code
    reg = stack.oidc_redirects[RP]
    assert res.location.startswith(reg + "?"), f"the code goes to the registered redirect URI {reg}, got {show(res.location, 120)}"
    q = res.params
    assert q.get("code"), q
    assert q.get("state") == params["state"], "state MUST be echoed exactly"
    assert q.get("iss") == stack.issuer_url, f"RFC 9207: iss MUST be the issuer identifier, got {q.get('iss')!r}"


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.3 (token endpoint), §3.1.3.7 (ID token validation), §5.3 (userinfo); RFC 6749 §2.3.1")
@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_code_flow_end_to_end(stack: Stack, browser, back, record, auth: str) -> None:
    b = browser("alice")
    flow = oidc.code_flow(b, stack, RP, via=back, token_auth=auth.removeprefix("client_secret_"), prompt="consent")
    assert flow.auth.steps == ["consent"], flow.auth.steps
    tok = flow.token
    assert tok is not None and tok.status_code == 200, f"token exchange with {auth}: {tok.status_code if tok is not None else '-'} {show(tok.text, 200) if tok is not None else ''}"
    body = tok.json()
    record(auth, "200 with access_token, token_type Bearer, id_token", f"{tok.status_code} {sorted(body)}")
    assert body.get("access_token") and body.get("id_token"), sorted(body)
    assert str(body.get("token_type", "")).lower() == "bearer", body.get("token_type")
    assert "no-store" in tok.headers.get("Cache-Control", ""), "RFC 6749 §5.1: the token response MUST carry Cache-Control: no-store"
    claims = oidc.verify_id_token(stack, body["id_token"], RP, nonce=flow.params["nonce"])
    now = time.time()
    assert claims["exp"] > now, claims["exp"]
    assert claims["iat"] <= now + 5, claims["iat"]
    assert claims.get("sub") == stack.humans["alice"], f"sub {claims.get('sub')!r} is not alice's Pocket ID user id"
    ui = oidc.userinfo(stack, body["access_token"], via=back)
    assert ui.status_code == 200, ui.status_code
    info = ui.json()
    # §5.3.2: "The sub Claim in the UserInfo Response MUST be verified to exactly match the sub Claim in the ID Token"
    assert info.get("sub") == claims["sub"], (info.get("sub"), claims["sub"])
    assert info.get("preferred_username") == "alice", info.get("preferred_username")


@pytest.mark.spec("OpenID Connect Core 1.0 §5.1, §5.4 (claims by scope); Pocket ID groups scope → groups claim")
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_groups_claim_holds_the_group_names(stack: Stack, scenario, browser, back, record, who: str) -> None:
    want = sorted(next(h.groups for h in scenario.identities.humans if h.name == who))
    b = browser(who)
    flow = oidc.code_flow(b, stack, RP, via=back, prompt="consent")
    assert flow.token is not None and flow.token.status_code == 200, show(flow.token.text, 200) if flow.token is not None else ""
    claims = oidc.verify_id_token(stack, flow.tokens["id_token"], RP, nonce=flow.params["nonce"])
    info = oidc.userinfo(stack, flow.tokens["access_token"], via=back).json()
    record(f"{who} groups", f"{want} in the ID token and userinfo", f"id_token {claims.get('groups')}, userinfo {info.get('groups')}")
    assert sorted(claims.get("groups") or []) == want, f"ID token groups {claims.get('groups')} (want the group names {want})"
    assert sorted(info.get("groups") or []) == want, f"userinfo groups {info.get('groups')} (want {want})"


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.3.7 (signature, aud)")
def test_id_token_verification_catches_tampering(stack: Stack, browser, back) -> None:
    """The verifier the suite relies on is real: an altered payload or another audience fails."""
    b = browser("bob")
    flow = oidc.code_flow(b, stack, RP, via=back, prompt="consent")
    token = flow.tokens["id_token"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = stack.humans["alice"]
    forged = head + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + sig
    with pytest.raises(jwt.InvalidSignatureError):
        oidc.verify_id_token(stack, forged, RP, nonce=flow.params["nonce"])
    with pytest.raises(jwt.InvalidAudienceError):
        oidc.verify_id_token(stack, token, "labgate-pkce", nonce=flow.params["nonce"])
    with pytest.raises(AssertionError):
        oidc.verify_id_token(stack, token, RP, nonce="n-not-the-nonce-sent")


@pytest.mark.spec("RFC 6749 §5.2 (invalid_client); §2.3.1")
@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_wrong_client_secret_is_invalid_client(stack: Stack, browser, back, record, auth: str) -> None:
    b = browser("bob")
    flow = oidc.code_flow(b, stack, RP, exchange=False, prompt="consent")
    code = flow.auth.code
    assert code, flow.auth.location
    r = oidc.exchange_code(stack, RP, code, auth=auth.removeprefix("client_secret_"), secret="labgate-wrong-secret-" + "x" * 16, via=back)
    err = r.json().get("error") if r.headers.get("Content-Type", "").startswith("application/json") else None
    record(auth, "401 invalid_client" + (" with WWW-Authenticate: Basic" if auth.endswith("basic") else ""),
           f"{r.status_code} {err} WWW-Authenticate={r.headers.get('WWW-Authenticate')!r}")
    assert err == "invalid_client", f"expected invalid_client, got {r.status_code} {show(r.text, 200)}"
    assert r.status_code == 401, f"invalid_client answered with {r.status_code}"
    assert "access_token" not in r.text, "an access token was issued anyway"
    if auth == "client_secret_basic":
        # "If the client attempted to authenticate via the Authorization request header field, the
        # authorization server MUST respond with an HTTP 401 status code and include the
        # WWW-Authenticate response header field matching the authentication scheme used by the client."
        challenge = r.headers.get("WWW-Authenticate", "")
        assert challenge.lower().startswith("basic"), f"401 invalid_client without a Basic WWW-Authenticate challenge (got {challenge!r})"


@pytest.mark.spec("RFC 6749 §4.1.3 (the code was issued to the authenticated client; redirect_uri identical)")
@pytest.mark.parametrize("mismatch", ["another-client", "no-redirect-uri"])
def test_code_is_bound_to_client_and_redirect_uri(stack: Stack, browser, back, record, mismatch: str) -> None:
    b = browser("bob")
    flow = oidc.code_flow(b, stack, RP, exchange=False, prompt="consent")
    code = flow.auth.code
    assert code, flow.auth.location
    if mismatch == "another-client":
        r = oidc.exchange_code(stack, "labgate-pkce", code, redirect_uri=stack.oidc_redirects[RP], via=back)
    else:  # redirect_uri was sent at /authorize, so it is REQUIRED here
        r = oidc.exchange_code(stack, RP, code, redirect_uri=None, via=back)
    record(mismatch, "400 invalid_grant", f"{r.status_code} {r.json().get('error')}")
    assert r.status_code == 400 and r.json().get("error") == "invalid_grant", f"{r.status_code} {show(r.text, 200)}"
    assert "access_token" not in r.text, "an access token was issued anyway"


def _server_time(resp) -> float:
    """The answer's Date header as a unix time (one-second resolution)."""
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(resp.headers["Date"]).timestamp()


@pytest.mark.spec("Pocket ID one-time access tokens: single use, limited lifetime (401 Token is invalid or expired)")
@pytest.mark.parametrize("case", ["expired", "already-used"])
def test_one_time_token_refused(stack: Stack, back, record, case: str) -> None:
    user = stack.humans["bob"]
    if case == "expired":
        r = oidc.create_one_time_token(stack, user, "2s", via=back)
        assert r.status_code == 201, f"{r.status_code} {show(r.text, 200)}"
        token = r.json()["token"]
        expiry = _server_time(r) + 2
        # the token cannot be tried before it expires (a try consumes it): wait for Pocket ID's own
        # clock, as its Date header tells it, to be past the expiry
        wait_until(lambda: _server_time(back.get(f"{stack.issuer_url}/healthz")) > expiry + 1, timeout=15,
                   what="Pocket ID's clock past the token's expiry", interval=0.2)
    else:
        r = oidc.create_one_time_token(stack, user, "5m", via=back)
        assert r.status_code == 201, f"{r.status_code} {show(r.text, 200)}"
        token = r.json()["token"]
        first = oidc.exchange_one_time_token(oidc.browser(), stack, token)
        assert first.status_code == 200, f"the fresh token is refused: {first.status_code}"
    b = oidc.browser(f"{case} one-time token")
    r = oidc.exchange_one_time_token(b, stack, token)
    back.exchanges.extend(b.exchanges)
    record(case, "401, no session cookie", f"{r.status_code} {show(r.text, 120)}")
    assert r.status_code == 401, f"an {case} one-time token MUST be refused with 401, got {r.status_code}"
    assert not (b.cookie("access_token") or b.cookie("__Host-access_token")), "a session cookie was set anyway"
    me = b.get(f"{stack.issuer_url}/api/users/me").status_code
    assert me == 401, f"the refused browser is signed in anyway: /api/users/me answered {me}"
