"""Fixtures of the OpenID Connect suite: signed-in browsers, a logged back channel, a redirect probe
client, and a row recorder.

Every browser and back channel a test uses is handed to ``attach_log``, so each result carries the
redacted HTTP exchanges (codes, tokens, cookies and keys are registered for redaction the moment
they exist, see labgate.clients.oidc).

Assertion rewriting is off here (PYTEST_DONT_REWRITE): a failure prints only its message, which is
redacted before it is shortened, never an introspected value that could hold a code or a token.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable
from urllib.parse import urljoin, urlparse

import pytest
import requests

from labgate import redact
from labgate.clients import oidc
from labgate.clients.oidc import show
from labgate.stack import Stack

# Registered for the redirect matrix: neither loopback (where RFC 8252 §7.3 lets any port through)
# nor served by anything; the tests only read the Location Pocket ID answers with.
PROBE_REDIRECT = "http://rp.labgate.test/cb"


@pytest.fixture
def browser(stack: Stack, attach_log) -> Callable[..., oidc.Browser]:
    """``browser("alice")``: signed in to Pocket ID through a one-time token; ``browser()``: anonymous."""

    def _make(username: str | None = None) -> oidc.Browser:
        b = oidc.one_time_session(stack, username) if username else oidc.browser("anonymous browser")
        attach_log(b)
        return b

    return _make


@pytest.fixture
def back(attach_log) -> oidc.Browser:
    """The relying party's back channel (token, userinfo, admin API), logged like the front channel."""
    b = oidc.browser("back channel")
    attach_log(b)
    return b


@pytest.fixture(scope="session")
def probe_client(stack: Stack) -> str:
    """A confidential client registered with one non-loopback redirect URI, deleted afterwards."""
    if not stack.has("identity.pocket-id"):
        pytest.skip("Pocket ID is not part of this stack")
    cid = f"labgate-probe-{uuid.uuid4().hex[:8]}"
    oidc.create_client(stack, cid, [PROBE_REDIRECT], skipConsent=True)
    yield cid
    oidc.delete_client(stack, cid)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """One row per checked exchange (what was sent, what was expected, what came back)."""

    def _record(case: str, expected: str, observed: str, **extra: Any) -> None:
        row = {"case": case, "expected": expected, "observed": redact.redact(observed), **extra}
        request.node.user_properties.append(("oidc", redact.redact(json.dumps(row))))

    return _record


def location_of(resp: requests.Response) -> str:
    return resp.headers.get("Location", "")


def refused_without_redirect(resp: requests.Response, issuer: str, requested_uri: str | None) -> str:
    """An authorization request whose client or redirect URI is not valid: the provider MUST NOT
    redirect to the requested URI (RFC 6749 §4.1.2.1, §3.1.2.4) and issues no code. Pocket ID shows
    its own error page instead (302 to a relative /interaction/error?error=<hint>). Returns the hint."""
    loc = location_of(resp)
    target = urlparse(urljoin(issuer + "/", loc)) if loc else None
    where = target.netloc if target is not None else ""
    issued = "code" in oidc.query(loc)  # booleans only: a failing assert never prints a code
    back_to_client = resp.status_code == 303 and target is not None
    assert not issued, f"a code was issued ({resp.status_code}): Location {show(loc)}"
    assert not back_to_client, f"303 is how Pocket ID redirects back to a client: Location {show(loc)}"
    if requested_uri:
        starts = loc.startswith(requested_uri)
        carries = requested_uri in loc
        assert not starts, f"redirected to the requested URI: Location {show(loc)}"
        assert not carries, f"Location carries the requested URI verbatim: {show(loc)}"
    if target is not None:
        away = where != urlparse(issuer).netloc
        assert not away, f"the browser is sent away from the provider, to {where!r}: {show(loc)}"
    return oidc.query(loc).get("error", "")
