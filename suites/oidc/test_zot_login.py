"""zot's OpenID Connect login through Pocket ID, and what a human's session and API keys allow.

zot is the relying party here (Pocket ID client "zot", confidential, skipConsent). The flow is the
one reference section E(2) describes: /zot/auth/login?provider=oidc → 302 to Pocket ID /authorize →
303 to zot's callback with code and state → zot exchanges the code over the back channel, reads
userinfo and sets its session cookie. A zot session counts only with X-ZOT-API-CLIENT: zot-ui.

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from labgate.access import allowed
from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.clients.oci import OciClient, error_codes
from labgate.stack import Stack

pytestmark = [pytest.mark.requires("registry.oidc-login", "identity.pocket-id"), pytest.mark.area("zot login")]


@pytest.fixture
def login(stack: Stack, attach_log):
    """``login("alice")``: a completed zot login with every step's response."""

    def _login(who: str) -> oidc.ZotLogin:
        res = oidc.zot_login_flow(stack, who)
        attach_log(res.session)
        return res

    return _login


def _oci(stack: Stack, b: oidc.Browser, attach_log) -> OciClient:
    c = OciClient(stack.registry_url, None, session=b)
    attach_log(c)
    return c


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.1 (authentication request); RFC 6749 §4.1.1")
def test_zot_login_redirects_to_the_issuer_with_its_registered_redirect_uri(stack: Stack, browser, record) -> None:
    b = browser()
    r = oidc.zot_login_start(b, stack)
    loc = r.headers.get("Location", "")
    q = oidc.query(loc)
    record("GET /zot/auth/login?provider=oidc", "302 to the authorization endpoint", f"{r.status_code} {show(loc, 200)}")
    assert r.status_code == 302, r.status_code
    assert loc.split("?")[0] == oidc.discovery(stack.issuer_url)["authorization_endpoint"], show(loc, 120)
    assert q.get("client_id") == "zot", q
    assert q.get("redirect_uri") == stack.oidc_redirects["zot"], f"redirect_uri {q.get('redirect_uri')!r} is not the registered {stack.oidc_redirects['zot']!r}"
    assert q.get("response_type") == "code", q
    assert "openid" in q.get("scope", "").split() and "groups" in q.get("scope", "").split(), q.get("scope")
    assert len(q.get("state", "")) >= 8, "zot sends a state (it is checked against its state cookie on the callback)"
    assert b.cookie("state", stack.registry_url) and b.cookie("statecookie", stack.registry_url), "zot sets its state cookies with the redirect"


@pytest.mark.spec("RFC 9700 §2.1.1 (clients MUST prevent authorization code injection: PKCE, or nonce for OpenID Connect clients)")
def test_zot_login_request_binds_the_code_to_the_browser(stack: Stack, browser, record) -> None:
    b = browser()
    q = oidc.query(oidc.zot_login_start(b, stack).headers.get("Location", ""))
    record("authorization request", "code_challenge (S256) or nonce",
           f"code_challenge={'yes' if q.get('code_challenge') else 'no'} method={q.get('code_challenge_method')} nonce={'yes' if q.get('nonce') else 'no'}")
    assert q.get("code_challenge") or q.get("nonce"), "zot's authorization request carries neither a PKCE code_challenge nor a nonce"
    if q.get("code_challenge"):
        assert q.get("code_challenge_method") == "S256", q.get("code_challenge_method")


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.5-§3.1.3 (zot as relying party); zot OIDC login")
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_zot_login_completes(stack: Stack, login, record, who: str) -> None:
    res = login(who)
    az = res.authorize
    assert az is not None, f"zot's redirect did not lead to Pocket ID: {res.start.status_code} {res.start.headers.get('Location')}"
    assert az.response.status_code == 303 and az.steps == [], f"skipConsent: a signed-in user gets the 303 at once ({az.response.status_code}, steps {az.steps})"
    assert az.location.startswith(stack.oidc_redirects["zot"] + "?"), show(az.location, 160)
    assert az.params.get("iss") == stack.issuer_url, f"iss {az.params.get('iss')!r}"
    cb = res.callback
    assert cb is not None, f"Pocket ID did not send the browser to zot's callback: {show(az.location)}"
    record(who, "callback 201, session and user cookies", f"{cb.status_code} cookies {sorted(c.name for c in res.session.cookies)}")
    assert cb.status_code == 201, f"zot's callback answered {cb.status_code} {show(cb.text, 200)}"
    assert res.session.cookie("session", stack.registry_url), "no zot session cookie"
    assert res.session.cookie("user", stack.registry_url) == who, f"zot's identity is {res.session.cookie('user')!r} (claimMapping.username preferred_username)"
    r = res.session.get(f"{stack.registry_url}/v2/_catalog")
    assert r.status_code == 200, f"the fresh session does not authenticate: {r.status_code}"


@pytest.mark.spec("zot accessControl with OIDC groups (the groups claim names zot policy groups)")
@pytest.mark.parametrize("who,action", [("alice", "push"), ("bob", "push"), ("bob", "pull"), ("alice", "delete")])
def test_zot_session_grants_what_the_groups_allow(stack: Stack, scenario, login, attach_log, record, who: str, action: str) -> None:
    zot_action = {"push": "create", "pull": "read", "delete": "delete"}[action]
    repo = f"zeroclaw/oidc-{uuid.uuid4().hex[:8]}"
    ok, why = allowed(scenario, who, zot_action, repo)
    res = login(who)
    assert res.ok, f"{who} could not log in to zot"
    c = _oci(stack, res.session, attach_log)
    robot = next(r.name for r in scenario.identities.robots if allowed(scenario, r.name, "create", repo)[0])
    owner = OciClient(stack.registry_url, (robot, stack.password(robot)))
    if action == "push":
        r = c.start_upload(repo)
        if r.status_code == 202 and r.headers.get("Location"):
            c.cancel_upload(r.headers["Location"])
        success = 202
    else:
        img = owner.push_image(repo, "v1", seed=uuid.uuid4().hex)
        r = c.get_manifest(repo, "v1") if action == "pull" else c.delete_manifest(repo, img.digest)
        success = 200 if action == "pull" else 202
    record(f"{who} {action} {repo}", f"{'allow' if ok else 'deny'} ({why})", f"{r.status_code} {error_codes(r)}")
    if ok:
        assert r.status_code == success, f"{who} ({why}) got {r.status_code} {show(r.text, 200)}"
    else:
        assert r.status_code == 403 and error_codes(r) == ["DENIED"], f"{who} ({why}) got {r.status_code} {show(r.text, 200)}"


@pytest.mark.spec("zot: a session counts only with X-ZOT-API-CLIENT: zot-ui (pkg/api/authn.go tryAuthnHandlers)")
def test_zot_session_cookie_alone_does_not_authenticate(stack: Stack, login, record) -> None:
    res = login("bob")
    cookie = res.session.cookie("session", stack.registry_url)
    plain = requests.get(f"{stack.registry_url}/v2/_catalog", cookies={"session": cookie}, timeout=30)
    with_header = requests.get(f"{stack.registry_url}/v2/_catalog", cookies={"session": cookie}, headers=oidc.ZOT_UI, timeout=30)
    record("session cookie without / with the header", "401 / 200", f"{plain.status_code} / {with_header.status_code}")
    assert plain.status_code == 401 and plain.headers.get("WWW-Authenticate"), plain.status_code
    assert with_header.status_code == 200, with_header.status_code


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.7 / RFC 6749 §10.12 (the client MUST check state: CSRF)")
@pytest.mark.parametrize("tamper", ["no-state-cookie", "altered-state", "no-state-parameter"])
def test_zot_callback_refuses_missing_or_altered_state(stack: Stack, browser, record, tamper: str) -> None:
    b = browser("alice")
    start = oidc.zot_login_start(b, stack)
    az = oidc.complete_interactions(b, stack, b.get(start.headers["Location"]))
    cb = az.location
    state = az.params.get("state", "")
    assert cb.startswith(stack.oidc_redirects["zot"] + "?") and state, show(cb, 160)
    if tamper == "no-state-cookie":
        other = browser()  # an attacker's browser: the victim's code, no state cookie
        r = other.get(cb)
        jar = other
    elif tamper == "altered-state":
        r = b.get(cb.replace(f"state={state}", f"state={state[:-4]}beef"))
        jar = b
    else:
        r = b.get(cb.replace(f"&state={state}", "").replace(f"state={state}&", "").replace(f"?state={state}", "?"))
        jar = b
    record(tamper, "401, no session", f"{r.status_code} {show(r.text.strip(), 80)}")
    assert r.status_code == 401, f"zot answered {r.status_code} {show(r.text, 200)}"
    assert not jar.cookie("session", stack.registry_url), "a session cookie was set anyway"


@pytest.mark.spec("zot logout (POST /zot/auth/logout); OpenID Connect RP-Initiated Logout 1.0 §2 (end_session_endpoint)")
def test_zot_logout_ends_the_session(stack: Stack, login, record) -> None:
    res = login("bob")
    cookie = res.session.cookie("session", stack.registry_url)
    r = oidc.zot_logout(res.session, stack)
    body = r.json() if r.status_code == 200 else {}
    end = str(body.get("endSessionUrl", ""))
    record("logout", "200 with endSessionUrl; the old session cookie no longer works", f"{r.status_code} {show(end, 120)}")
    assert r.status_code == 200, r.status_code
    assert end.startswith(oidc.discovery(stack.issuer_url)["end_session_endpoint"] + "?"), end
    assert oidc.query(end).get("client_id") == "zot", end
    after = res.session.get(f"{stack.registry_url}/v2/_catalog")
    replay = requests.get(f"{stack.registry_url}/v2/_catalog", cookies={"session": cookie}, headers=oidc.ZOT_UI, timeout=30)
    record("after logout: browser / replayed cookie", "401 / 401", f"{after.status_code} / {replay.status_code}")
    assert after.status_code == 401, after.status_code
    assert replay.status_code == 401, f"the session cookie from before the logout still authenticates ({replay.status_code})"


@pytest.mark.spec("zot API keys for OIDC users (basic auth: preferred_username + zak_ key)")
def test_human_api_key_works_with_basic_auth(stack: Stack, login, record) -> None:
    res = login("alice")
    r = oidc.zot_create_api_key(res.session, stack, "labgate-human-" + uuid.uuid4().hex[:6])
    assert r.status_code == 201, f"{r.status_code} {show(r.text, 200)}"
    key, key_id = r.json()["apiKey"], r.json()["uuid"]
    try:
        assert key.startswith("zak_"), "zot API keys start with zak_"
        ok = requests.get(f"{stack.registry_url}/v2/_catalog", auth=("alice", key), timeout=30)
        other = requests.get(f"{stack.registry_url}/v2/_catalog", auth=("bob", key), timeout=30)
        record("zak_ key as alice / as bob", "200 / 401", f"{ok.status_code} / {other.status_code}")
        assert ok.status_code == 200, f"alice's API key with basic auth: {ok.status_code}"
        assert other.status_code == 401, f"alice's key under another username: {other.status_code}"
    finally:
        oidc.zot_revoke_api_key(res.session, stack, key_id)


@pytest.mark.spec("zot API keys: a revoked key stops working at once")
def test_revoked_human_api_key_stops_working(stack: Stack, login, record) -> None:
    res = login("bob")
    r = oidc.zot_create_api_key(res.session, stack)
    assert r.status_code == 201, f"{r.status_code} {show(r.text, 200)}"
    key, key_id = r.json()["apiKey"], r.json()["uuid"]
    before = requests.get(f"{stack.registry_url}/v2/_catalog", auth=("bob", key), timeout=30)
    d = oidc.zot_revoke_api_key(res.session, stack, key_id)
    after = requests.get(f"{stack.registry_url}/v2/_catalog", auth=("bob", key), timeout=30)
    record("before / revoke / after", "200 / 200 / 401", f"{before.status_code} / {d.status_code} / {after.status_code}")
    assert before.status_code == 200 and d.status_code == 200, (before.status_code, d.status_code)
    assert after.status_code == 401, f"a revoked API key MUST stop working at once, got {after.status_code}"
