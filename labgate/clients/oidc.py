"""A headless OpenID Connect relying party and "browser" for Pocket ID and zot's OIDC login.

Nothing here hides the protocol: every step returns the raw :class:`requests.Response` (redirects
are never followed) so that suites assert on status codes and ``Location`` headers, and every
exchange is kept in a redacted log that ``attach_log`` attaches to the result.

Logging in without a passkey: the harness's admin API key mints a one-time access token for the
user (``POST /api/users/{id}/one-time-access-token``), a browser-like session exchanges it
(``POST /api/one-time-access-token/{code}``) and receives Pocket ID's session cookie. From there the
authorization code flow is the one a browser performs: ``/authorize`` → (interaction steps, such
as consent, completed through ``/api/oidc/interactions/{id}/complete``) → 303 to the client's
redirect URI with ``code``, ``state`` and ``iss``.

Every token, code and key obtained here is registered for redaction the moment it exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlparse

import requests
from requests.cookies import RequestsCookieJar

from labgate import redact
from labgate.clients.oci import Exchange, _show_body
from labgate.components.pocketid import LoopbackSecureCookiePolicy
from labgate.stack import Stack

ZOT_UI = {"X-ZOT-API-CLIENT": "zot-ui"}  # without it zot ignores the session cookie
SCOPES = "openid profile email groups"
TIMEOUT = 30.0


# ----------------------------------------------------------------------------------------------
# the browser


class Browser(requests.Session):
    """A requests.Session that behaves like a browser towards loopback hosts, with an exchange log.

    Pocket ID's session cookie and zot's OIDC ``state`` cookie are always ``Secure``; browsers
    treat http://localhost and 127.0.0.1 as secure contexts and send them, Python's cookie jar does
    not. :class:`LoopbackSecureCookiePolicy` allows exactly that, but ``requests`` copies the jar
    into a fresh one with the default policy for every request (``Session.prepare_request`` →
    ``merge_cookies(RequestsCookieJar(), self.cookies)``), which drops the Secure cookies again; so
    the Cookie header is rebuilt here from a jar that keeps the policy.
    """

    def __init__(self, label: str = "browser") -> None:
        super().__init__()
        self.label = label
        self.cookies.set_policy(LoopbackSecureCookiePolicy())
        self.exchanges: list[Exchange] = []

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        p = super().prepare_request(request)
        jar = RequestsCookieJar()
        jar.set_policy(self.cookies.get_policy())
        jar.update(self.cookies)
        if request.cookies:
            extra = request.cookies if isinstance(request.cookies, RequestsCookieJar) else requests.cookies.cookiejar_from_dict(request.cookies)
            jar.update(extra)
        p.headers.pop("Cookie", None)
        p.prepare_cookies(jar)
        return p

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", TIMEOUT)
        t0 = time.monotonic()
        resp = super().request(method, url, *args, **kwargs)
        for c in resp.cookies:  # session cookies, state cookies: secrets from the moment they exist
            if c.value and len(c.value) >= 16:
                redact.register(c.value, f"cookie:{c.name}")
        _register_secrets(resp)
        req = resp.request
        self.exchanges.append(Exchange(
            method=str(req.method),
            url=redact.redact(req.url or str(url)),
            request_headers={k: redact.redact(f"{k}: {v}").split(": ", 1)[1] for k, v in req.headers.items()},
            request_body=redact.redact(_show_body(req.body, req.headers)),
            status=resp.status_code,
            response_headers={k: redact.redact(v) for k, v in resp.headers.items()},
            response_body=redact.redact(_show_body(resp.content, resp.headers)),
            seconds=time.monotonic() - t0,
        ))
        return resp

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("allow_redirects", False)  # requests' get() defaults to following
        return self.request("GET", url, **kwargs)

    def log_text(self) -> str:
        return f"# {self.label}\n" + "\n".join(e.render() for e in self.exchanges)

    def cookie(self, name: str, url: str | None = None) -> str | None:
        """A cookie's value, optionally only one set by ``url``'s host (zot and Pocket ID both may
        use the name ``session``; the jar stores a dotless host such as localhost as localhost.local)."""
        host = urlparse(url).hostname if url else None
        for c in self.cookies:
            if c.name == name and (host is None or c.domain in (host, host + ".local")):
                return c.value
        return None

    def __repr__(self) -> str:  # never cookies or headers
        return f"Browser({self.label!r})"


def browser(label: str = "browser") -> Browser:
    return Browser(label)


# ----------------------------------------------------------------------------------------------
# small helpers


def show(value: object, n: int = 200) -> str:
    """For messages: redacted first, then shortened (a shortened secret would escape redaction)."""
    return redact.redact(str(value))[:n]


def query(location: str | None) -> dict[str, str]:
    """The query parameters of a Location (first value of each)."""
    if not location:
        return {}
    return {k: v[0] for k, v in parse_qs(urlparse(location).query, keep_blank_values=True).items()}


def fragment(location: str | None) -> dict[str, str]:
    if not location:
        return {}
    return {k: v[0] for k, v in parse_qs(urlparse(location).fragment, keep_blank_values=True).items()}


def new_state() -> str:
    return "st-" + secrets.token_urlsafe(16)


def new_nonce() -> str:
    return "n-" + secrets.token_urlsafe(16)


def pkce_pair(method: str = "S256") -> tuple[str, str]:
    """(code_verifier, code_challenge), RFC 7636 §4.1-4.2: a 43-128 character verifier from the
    unreserved set; S256 challenge = BASE64URL(SHA256(ASCII(verifier))) without padding."""
    verifier = secrets.token_urlsafe(48)[:64]
    if method == "plain":
        return verifier, verifier
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def admin_headers(stack: Stack) -> dict[str, str]:
    return {"X-API-Key": stack.password("pocket-id:api-key")}


def client_secret(stack: Stack, client_id: str) -> str:
    return stack.password(f"oidc:{client_id}")


_DISCOVERY: dict[str, dict[str, Any]] = {}


def discovery(issuer: str, *, fresh: bool = False) -> dict[str, Any]:
    """The provider's discovery document (OpenID Connect Discovery 1.0 §4)."""
    if fresh or issuer not in _DISCOVERY:
        r = requests.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=TIMEOUT)
        r.raise_for_status()
        _DISCOVERY[issuer] = r.json()
    return _DISCOVERY[issuer]


# ----------------------------------------------------------------------------------------------
# Pocket ID sessions without a passkey


def create_one_time_token(stack: Stack, user_id: str, ttl: str | int = "5m", *, via: Any = None) -> requests.Response:
    """Admin API: a one-time access ("login") code for the user. The token is registered."""
    r = (via or requests).post(f"{stack.issuer_url}/api/users/{user_id}/one-time-access-token", json={"ttl": ttl},
                               headers=admin_headers(stack), timeout=TIMEOUT)
    if r.status_code == 201:
        redact.register(r.json().get("token"), "pocket-id-one-time-token")
    return r


def exchange_one_time_token(b: Browser, stack: Stack, token: str) -> requests.Response:
    r = b.post(f"{stack.issuer_url}/api/one-time-access-token/{token}")
    if r.status_code == 200:
        for name in ("access_token", "__Host-access_token"):
            redact.register(b.cookie(name), "pocket-id-session")
    return r


def one_time_session(stack: Stack, username: str, *, ttl: str = "5m") -> Browser:
    """A browser signed in to Pocket ID as ``username`` (one-time token minted with the admin key)."""
    if username not in stack.humans:
        raise LookupError(f"{username!r} has no Pocket ID account in this stack (humans: {sorted(stack.humans)})")
    r = create_one_time_token(stack, stack.humans[username], ttl)
    if r.status_code != 201:
        raise AssertionError(f"one-time access token for {username}: HTTP {r.status_code} {redact.redact(r.text)[:200]}")
    b = browser(f"pocket-id session of {username}")
    x = exchange_one_time_token(b, stack, r.json()["token"])
    if x.status_code != 200 or not (b.cookie("access_token") or b.cookie("__Host-access_token")):
        raise AssertionError(f"one-time access token exchange for {username}: HTTP {x.status_code} {redact.redact(x.text)[:200]}")
    return b


# ----------------------------------------------------------------------------------------------
# the authorization code flow


@dataclass
class AuthResult:
    """The end of an authorization request: the response that redirected back to the client."""

    response: requests.Response  # the 303 (or whatever ended the flow)
    steps: list[str] = field(default_factory=list)  # interaction steps completed (consent, ...)

    @property
    def location(self) -> str:
        return self.response.headers.get("Location", "")

    @property
    def params(self) -> dict[str, str]:
        return query(self.location)

    @property
    def code(self) -> str | None:
        return self.params.get("code")


def authorize_params(stack: Stack, client_id: str, *, redirect_uri: str | None = "registered", state: str | None = "new",
                     nonce: str | None = "new", scope: str = SCOPES, **extra: str) -> dict[str, str]:
    p: dict[str, str] = {"client_id": client_id, "response_type": "code", "scope": scope}
    if redirect_uri == "registered":
        redirect_uri = stack.oidc_redirects[client_id]
    if redirect_uri is not None:
        p["redirect_uri"] = redirect_uri
    if state is not None:
        p["state"] = new_state() if state == "new" else state
    if nonce is not None:
        p["nonce"] = new_nonce() if nonce == "new" else nonce
    p.update({k: v for k, v in extra.items() if v is not None})
    return p


def authorize(b: requests.Session, stack: Stack, params: dict[str, str]) -> requests.Response:
    """GET /authorize with exactly these parameters; the raw answer (never followed)."""
    return b.get(discovery(stack.issuer_url)["authorization_endpoint"], params=params, allow_redirects=False)


def interaction_id(location: str | None) -> str | None:
    """The interaction id of a ``/interaction?interaction=<id>`` redirect, or None."""
    if not location:
        return None
    u = urlparse(location)
    if u.path.rstrip("/") != "/interaction":
        return None
    return query(location).get("interaction")


def complete_interactions(b: Browser, stack: Stack, resp: requests.Response, *, max_steps: int = 5) -> AuthResult:
    """Follow Pocket ID's interaction redirects like its frontend does: read the interaction,
    complete its current step with the session (consent, authenticate once signed in, ...), then
    resume /authorize?interaction=ID, until the answer is no longer an interaction redirect."""
    steps: list[str] = []
    for _ in range(max_steps):
        iid = interaction_id(resp.headers.get("Location")) if resp.status_code in (302, 303) else None
        if iid is None:
            break
        info = b.get(f"{stack.issuer_url}/api/oidc/interactions/{iid}")
        if info.status_code != 200:
            raise AssertionError(f"GET interaction {iid}: HTTP {info.status_code} {info.text[:200]}")
        step = info.json().get("currentStep")
        done = b.post(f"{stack.issuer_url}/api/oidc/interactions/{iid}/complete", json={"step": step})
        if done.status_code != 200:
            raise AssertionError(f"completing interaction step {step!r}: HTTP {done.status_code} {redact.redact(done.text)[:200]}")
        steps.append(str(step))
        body = done.json()
        while "interaction" in body and "redirectUrl" not in body:  # more steps in the same interaction
            step = body["interaction"].get("currentStep")
            done = b.post(f"{stack.issuer_url}/api/oidc/interactions/{iid}/complete", json={"step": step})
            if done.status_code != 200:
                raise AssertionError(f"completing interaction step {step!r}: HTTP {done.status_code} {redact.redact(done.text)[:200]}")
            steps.append(str(step))
            body = done.json()
        resp = b.get(urljoin(stack.issuer_url + "/", body["redirectUrl"]), allow_redirects=False)
    return AuthResult(resp, steps)


def _register_secrets(resp: requests.Response) -> None:
    """Codes in a redirect, tokens and keys in a JSON body: registered before anything logs them."""
    loc = resp.headers.get("Location", "")
    code = query(loc).get("code") or fragment(loc).get("code")
    if code:
        redact.register(code, "oidc-authorization-code")
    if "json" in resp.headers.get("Content-Type", ""):
        try:
            body = resp.json()
        except ValueError:
            return
        if isinstance(body, dict):
            labels = {"access_token": "oidc-access-token", "id_token": "oidc-id-token", "refresh_token": "oidc-refresh-token",
                      "token": "pocket-id-token", "apiKey": "zot-api-key", "secret": "oidc-client-secret"}
            for k, label in labels.items():
                if isinstance(body.get(k), str):
                    redact.register(body[k], label)


def login(b: Browser, stack: Stack, params: dict[str, str]) -> AuthResult:
    """/authorize with a signed-in browser, interactions completed, ending at the client redirect."""
    return complete_interactions(b, stack, authorize(b, stack, params))


def token_request(stack: Stack, client_id: str, data: dict[str, str], *, auth: str = "basic",
                  secret: str | None = None, via: Any = None) -> requests.Response:
    """POST the token endpoint as a confidential client: client_secret_basic (RFC 6749 §2.3.1,
    form-urlencoded id and secret in HTTP Basic) or client_secret_post (in the body)."""
    secret = client_secret(stack, client_id) if secret is None else secret
    body = dict(data)
    kw: dict[str, Any] = {}
    if auth == "basic":
        kw["auth"] = (quote(client_id, safe=""), quote(secret, safe=""))
        redact.register_basic(quote(client_id, safe=""), quote(secret, safe=""), f"oidc-client-secret:{client_id}")
    elif auth == "post":
        body.update(client_id=client_id, client_secret=secret)
    elif auth == "none":
        body.update(client_id=client_id)
    r = (via or requests).post(discovery(stack.issuer_url)["token_endpoint"], data=body, timeout=TIMEOUT, **kw)
    if r.status_code == 200:
        for k in ("access_token", "id_token", "refresh_token"):
            redact.register(r.json().get(k), f"oidc-{k}")
    return r


def exchange_code(stack: Stack, client_id: str, code: str, *, redirect_uri: str | None = "registered",
                  code_verifier: str | None = None, auth: str = "basic", secret: str | None = None,
                  via: Any = None) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code}
    if redirect_uri == "registered":
        redirect_uri = stack.oidc_redirects[client_id]
    if redirect_uri is not None:
        data["redirect_uri"] = redirect_uri
    if code_verifier is not None:
        data["code_verifier"] = code_verifier
    return token_request(stack, client_id, data, auth=auth, secret=secret, via=via)


def verify_id_token(stack: Stack, id_token: str, client_id: str, *, nonce: str | None, leeway: int = 5) -> dict[str, Any]:
    """Verify an ID token as OpenID Connect Core 1.0 §3.1.3.7 asks, with PyJWT and the provider's
    JWKS: signature (an algorithm the provider announces, never ``none``), ``iss`` equal to the
    issuer, ``aud`` containing the client id, ``exp`` in the future, ``iat`` present and not in the
    future, and ``nonce`` equal to the one sent. Raises ``jwt.PyJWTError`` or AssertionError."""
    import jwt  # PyJWT (with cryptography for RS256/ES256); imported here so that sessions and zot logins work without it

    disc = discovery(stack.issuer_url)
    algs = [a for a in disc.get("id_token_signing_alg_values_supported", ["RS256"]) if a != "none"]
    key = jwt.PyJWKClient(disc["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(id_token)
    claims = jwt.decode(id_token, key.key, algorithms=algs, audience=client_id, issuer=stack.issuer_url, leeway=leeway,
                        options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_signature": True})
    assert claims["iat"] <= time.time() + leeway, f"iat {claims['iat']} is in the future"
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(aud) > 1:
        assert claims.get("azp") == client_id, f"several audiences {aud} and azp {claims.get('azp')!r} is not {client_id!r}"
    if nonce is not None:
        assert claims.get("nonce") == nonce, f"nonce {claims.get('nonce')!r} is not the one sent ({nonce!r})"
    return claims


def userinfo(stack: Stack, access_token: str, *, via: Any = None) -> requests.Response:
    return (via or requests).get(discovery(stack.issuer_url)["userinfo_endpoint"],
                                 headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT)


@dataclass
class CodeFlow:
    """A complete authorization code flow: what was sent and what came back at each step."""

    params: dict[str, str]
    auth: AuthResult
    token: requests.Response | None = None
    tokens: dict[str, Any] = field(default_factory=dict)
    code_verifier: str | None = None


def code_flow(b: Browser, stack: Stack, client_id: str, *, pkce: bool = False, exchange: bool = True,
              token_auth: str = "basic", via: Any = None, **params: Any) -> CodeFlow:
    """A whole authorization code flow with a signed-in browser; ``via`` logs the back channel."""
    verifier = None
    if pkce:
        verifier, challenge = pkce_pair()
        params.setdefault("code_challenge", challenge)
        params.setdefault("code_challenge_method", "S256")
    p = authorize_params(stack, client_id, **params)
    res = login(b, stack, p)
    flow = CodeFlow(p, res, code_verifier=verifier)
    if exchange:
        if res.code is None:
            raise AssertionError(f"no code: {res.response.status_code} Location {show(res.location)}")
        flow.token = exchange_code(stack, client_id, res.code, redirect_uri=p.get("redirect_uri"), code_verifier=verifier,
                                   auth=token_auth, via=via)
        if flow.token.status_code == 200:
            flow.tokens = flow.token.json()
    return flow


# ----------------------------------------------------------------------------------------------
# Pocket ID admin: extra OIDC clients a suite needs (created and deleted by the suite)


def create_client(stack: Stack, client_id: str, callback_urls: list[str], **spec: Any) -> str:
    """Create a confidential OIDC client with a fresh secret; returns the secret (registered)."""
    h = admin_headers(stack)
    from labgate import mutations

    registered = [u.rsplit("/", 1)[0] + "/*" for u in callback_urls] if mutations.on("redirect-wildcard") else callback_urls
    body = {"id": client_id, "name": client_id, "callbackURLs": registered, "logoutCallbackURLs": [], "isPublic": False,
            "pkceEnabled": False, "skipConsent": True, "requiresReauthentication": False,
            "requiresPushedAuthorizationRequests": False, "isGroupRestricted": False, "credentials": {}, **spec}
    r = requests.post(f"{stack.issuer_url}/api/oidc/clients", json=body, headers=h, timeout=TIMEOUT)
    if r.status_code != 201:
        raise AssertionError(f"create OIDC client {client_id}: HTTP {r.status_code} {r.text[:200]}")
    secret = redact.register(secrets.token_urlsafe(24), f"oidc-client-secret:{client_id}")
    r = requests.post(f"{stack.issuer_url}/api/oidc/clients/{client_id}/secrets", json={"secret": secret}, headers=h, timeout=TIMEOUT)
    if r.status_code != 201:
        raise AssertionError(f"secret of OIDC client {client_id}: HTTP {r.status_code} {r.text[:200]}")
    stack.credentials[f"oidc:{client_id}"] = secret  # this process only; the state file is not rewritten
    stack.oidc_redirects[client_id] = callback_urls[0]
    return secret


def delete_client(stack: Stack, client_id: str) -> None:
    requests.delete(f"{stack.issuer_url}/api/oidc/clients/{client_id}", headers=admin_headers(stack), timeout=TIMEOUT)
    stack.credentials.pop(f"oidc:{client_id}", None)
    stack.oidc_redirects.pop(client_id, None)


# ----------------------------------------------------------------------------------------------
# zot's OIDC login (zot is the relying party; Pocket ID client "zot", skipConsent)


@dataclass
class ZotLogin:
    """Every step of a zot login through Pocket ID; ``session`` carries zot's session afterwards."""

    session: Browser
    start: requests.Response  # GET /zot/auth/login?provider=oidc → 302 to /authorize
    authorize: AuthResult | None = None  # /authorize (and interactions) → 303 to zot's callback
    callback: requests.Response | None = None  # zot's callback → 201 (or 302 to callback_ui)
    identity: str = ""

    @property
    def ok(self) -> bool:
        return (self.callback is not None and self.callback.status_code in (201, 302)
                and bool(self.session.cookie("session", self.callback.url)))


def zot_login_start(b: Browser, stack: Stack, *, callback_ui: str | None = None) -> requests.Response:
    params = {"provider": "oidc"}
    if callback_ui is not None:
        params["callback_ui"] = callback_ui
    return b.get(f"{stack.registry_url}/zot/auth/login", params=params)


def zot_login_flow(stack: Stack, username: str, *, b: Browser | None = None, callback_ui: str | None = None) -> ZotLogin:
    """E(2): one-time token → Pocket ID session → zot /zot/auth/login → Pocket ID /authorize →
    303 to zot's callback → zot exchanges the code, reads userinfo and sets its session cookie.
    Returns every response; asserts nothing beyond what is needed to continue."""
    b = b or one_time_session(stack, username)
    b.label = f"zot login of {username}"
    start = zot_login_start(b, stack, callback_ui=callback_ui)
    out = ZotLogin(b, start)
    loc = start.headers.get("Location", "")
    if start.status_code != 302 or not loc.startswith(discovery(stack.issuer_url)["authorization_endpoint"]):
        return out
    out.authorize = complete_interactions(b, stack, b.get(loc))
    cb = out.authorize.location
    if out.authorize.response.status_code not in (302, 303) or not cb.startswith(stack.registry_url + "/zot/auth/callback/oidc"):
        return out
    out.callback = b.get(cb)
    if out.ok:
        out.identity = b.cookie("user", stack.registry_url) or username
        b.headers.update(ZOT_UI)  # session use requires it (zot pkg/api/authn.go tryAuthnHandlers)
    return out


def zot_login(stack: Stack, username: str) -> Browser:
    """A browser holding a zot session for ``username`` (send it with X-ZOT-API-CLIENT: zot-ui)."""
    res = zot_login_flow(stack, username)
    if not res.ok:
        last = res.callback or (res.authorize.response if res.authorize else res.start)
        raise AssertionError(f"zot OIDC login of {username} did not complete: {last.request.method} "
                             f"{redact.redact(last.request.url or '')} → {last.status_code} {redact.redact(last.text)[:200]}")
    return res.session


def zot_logout(b: Browser, stack: Stack) -> requests.Response:
    return b.post(f"{stack.registry_url}/zot/auth/logout", headers=ZOT_UI)


def zot_create_api_key(b: requests.Session, stack: Stack, label: str | None = None, *,
                       expiration: str | None = None, headers: dict[str, str] | None = None) -> requests.Response:
    """POST /zot/auth/apikey with the session; a 201 body carries apiKey (zak_...) and uuid."""
    body: dict[str, Any] = {"label": label or "labgate-" + uuid.uuid4().hex[:8]}
    if expiration:
        body["expirationDate"] = expiration
    r = b.post(f"{stack.registry_url}/zot/auth/apikey", data=json.dumps(body),
               headers={"Content-Type": "application/json", **ZOT_UI, **(headers or {})}, allow_redirects=False, timeout=TIMEOUT)
    if r.status_code == 201:
        redact.register(r.json().get("apiKey"), "zot-api-key")
    return r


def zot_revoke_api_key(b: requests.Session, stack: Stack, key_id: str) -> requests.Response:
    return b.delete(f"{stack.registry_url}/zot/auth/apikey", params={"id": key_id}, headers=ZOT_UI, allow_redirects=False,
                    timeout=TIMEOUT)
