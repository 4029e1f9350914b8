"""Redirect URI matching: every variant of a registered redirect URI is refused, without a code and
without a redirect to the requested URI.

OpenID Connect Core 1.0 §3.1.2.1: redirect_uri "MUST exactly match one of the Redirection URI values
for the Client pre-registered at the OpenID Provider, with the matching performed as described in
Section 6.2.1 of [RFC3986] (Simple String Comparison)". RFC 9700 §2.1: "authorization servers MUST
utilize exact string matching except for port numbers in localhost redirection URIs of native apps".
RFC 6749 §4.1.2.1: with an invalid redirect URI the server "MUST NOT automatically redirect the
user-agent to the invalid redirection URI".

The matrix runs against a probe client registered with one non-loopback URI (``PROBE_REDIRECT``), so
the loopback port exception (RFC 8252 §7.3) does not blur it; loopback behaviour is checked on its
own with labgate-rp, whose registered URI is http://127.0.0.1:<port>/callback. Each request is made
by a signed-in user, the worst case: a valid request would be answered with a code at once.

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.stack import Stack

from .conftest import PROBE_REDIRECT, location_of, refused_without_redirect

pytestmark = [pytest.mark.requires("identity.pocket-id"), pytest.mark.area("redirect")]

R = PROBE_REDIRECT  # http://rp.labgate.test/cb

# (case id, client: probe | rp | unknown, requested redirect_uri; "{rp}" is labgate-rp's registered URI)
MATRIX = [
    ("unregistered-host", "probe", "http://evil.example/cb"),
    ("trailing-slash", "probe", R + "/"),
    ("https-instead-of-http", "probe", "https://rp.labgate.test/cb"),
    ("another-port", "probe", "http://rp.labgate.test:8080/cb"),
    ("path-suffix", "probe", R + "/evil"),
    ("extra-query", "probe", R + "?next=http://evil.example/"),
    ("fragment", "probe", R + "#evil.example"),
    ("userinfo", "probe", "http://evil.example@rp.labgate.test/cb"),
    ("percent-encoded-path", "probe", "http://rp.labgate.test/%63b"),
    ("percent-encoded-slash", "probe", "http://rp.labgate.test/cb%2F..%2Fevil"),
    ("percent-encoded-at", "probe", "http://evil.example%40rp.labgate.test/cb"),
    ("registered-uri-in-query", "probe", "http://evil.example/cb?r=" + R),
    ("scheme-relative", "probe", "//evil.example/cb"),
    ("dot-segment", "probe", "http://rp.labgate.test/x/../cb"),
    ("explicit-default-port", "probe", "http://rp.labgate.test:80/cb"),
    ("host-case", "probe", "http://RP.labgate.test/cb"),
    ("backslash-authority", "probe", "http:\\\\rp.labgate.test/cb"),
    ("loopback-percent-encoded", "rp", "{rp:encoded}"),
    ("unknown-client-id", "unknown", "http://evil.example/cb"),
]


def _client_and_uri(stack: Stack, probe: str, client: str, uri: str) -> tuple[str, str]:
    if client == "probe":
        return probe, uri
    if client == "unknown":
        return "labgate-no-such-client", uri
    reg = stack.oidc_redirects["labgate-rp"]
    u = urlparse(reg)
    last = u.path.rsplit("/", 1)
    encoded = f"{last[0]}/%{ord(last[1][0]):02x}{last[1][1:]}"  # /callback -> /%63allback
    return "labgate-rp", reg.replace(u.path, encoded, 1)


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.1; RFC 9700 §2.1; RFC 6749 §4.1.2.1")
@pytest.mark.parametrize("case,client,uri", MATRIX, ids=[m[0] for m in MATRIX])
def test_redirect_uri_mismatch_is_refused(stack: Stack, probe_client: str, browser, record, case: str, client: str, uri: str) -> None:
    cid, requested = _client_and_uri(stack, probe_client, client, uri)
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, cid, redirect_uri=requested))
    loc = location_of(res.response)
    record(case, "refused: Pocket ID's error page, no code, no redirect to the requested URI",
           f"{res.response.status_code} Location {show(loc, 160)}", requested=requested, client=cid)
    hint = refused_without_redirect(res.response, stack.issuer_url, requested)
    assert urlparse(loc).path == "/interaction/error", f"expected Pocket ID's error page, got {show(loc, 160)}"
    assert hint, "the error page names no reason"


@pytest.mark.spec("OpenID Connect Core 1.0 §3.1.2.1 (redirect_uri REQUIRED); §3.1.2.6")
def test_missing_redirect_uri_with_openid_is_refused(stack: Stack, probe_client: str, browser, record) -> None:
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, probe_client, redirect_uri=None))
    loc = location_of(res.response)
    record("no redirect_uri, scope openid", "refused (OpenID Connect requires redirect_uri)", f"{res.response.status_code} {show(loc, 160)}")
    hint = refused_without_redirect(res.response, stack.issuer_url, None)
    assert "redirect_uri" in hint, hint


@pytest.mark.spec("RFC 6749 §3.1.2.3 (one complete registered URI: redirect_uri may be omitted)")
def test_missing_redirect_uri_without_openid_uses_only_the_registered_uri(stack: Stack, probe_client: str, browser, record) -> None:
    """Plain OAuth 2.0 (no openid scope) allows omitting redirect_uri when exactly one complete URI is
    registered; the provider may then use it, or refuse. Either is allowed; a code anywhere else is not."""
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, probe_client, redirect_uri=None, nonce=None, scope="profile"))
    loc = location_of(res.response)
    used = res.response.status_code == 303 and loc.startswith(R + "?")
    record("no redirect_uri, scope profile", "the single registered URI, or refused", f"{res.response.status_code} {show(loc, 120)}",
           behaviour="uses the registered URI" if used else "refuses")
    if not used:
        refused_without_redirect(res.response, stack.issuer_url, None)
    else:
        assert res.code, loc


@pytest.mark.spec("RFC 8252 §7.3 (loopback redirect: any port); RFC 9700 §2.1 (port exception for localhost)")
def test_loopback_redirect_accepts_another_port_on_the_same_host_and_path(stack: Stack, browser, record) -> None:
    """labgate-rp is registered with http://127.0.0.1:<port>/callback; RFC 8252 §7.3 says the server
    MUST allow any port for loopback IP redirect URIs. The code may go to another port, never to
    another host or path."""
    reg = urlparse(stack.oidc_redirects["labgate-rp"])
    other = reg._replace(netloc=f"{reg.hostname}:{(reg.port or 80) % 60000 + 1}").geturl()
    b = browser("alice")
    res = oidc.login(b, stack, oidc.authorize_params(stack, "labgate-rp", redirect_uri=other))
    loc = location_of(res.response)
    record("loopback, another port", "accepted (RFC 8252 §7.3), code only to the loopback host and registered path",
           f"{res.response.status_code} {show(loc, 120)}")
    assert res.response.status_code == 303 and res.code, f"a loopback redirect on another port was refused: {show(loc, 160)}"
    got = urlparse(loc)
    assert (got.scheme, got.hostname, got.path) == (reg.scheme, reg.hostname, reg.path), show(loc, 160)


@pytest.mark.spec("RFC 6749 §4.1.2.1; OpenID Connect Core 1.0 §3.1.2.6 (prompt=none errors go only to a valid redirect URI)")
@pytest.mark.parametrize("how", ["anonymous", "prompt-none"])
def test_unregistered_redirect_refused_before_login(stack: Stack, probe_client: str, browser, record, how: str) -> None:
    """Without a session the URI is still checked first: no login page for an attacker's request, and no
    login_required error sent to the attacker (mirrors Pocket ID's own e2e test)."""
    b = browser()
    extra = {"prompt": "none"} if how == "prompt-none" else {}
    evil = "http://evil.example/cb"
    r = oidc.authorize(b, stack, oidc.authorize_params(stack, probe_client, redirect_uri=evil, **extra))
    loc = location_of(r)
    record(how, "refused before any login step", f"{r.status_code} {show(loc, 160)}")
    refused_without_redirect(r, stack.issuer_url, evil)
    assert urlparse(loc).path == "/interaction/error", f"expected the error page, not a login step: {show(loc, 160)}"
