"""Pocket ID: the OpenID Connect provider humans log in through.

Started as a process with a per-run ENCRYPTION_KEY, its database and uploads in the run directory,
rate limiting, analytics and version checks off. Bootstrapped only through its public API, right
after start: the first admin is claimed through the signup setup endpoint (open to anyone until a
user exists, so the harness claims it before anything else listens), then an API key, the groups,
the humans the scenario lists and the OIDC clients. Every secret is random per run and registered
for redaction the moment it exists.

Cookies: Pocket ID (and zot's OIDC state cookie) are always ``Secure``, even over plain http, and
Python's cookie jar never sends Secure cookies back over http. The harness handles that
deliberately (labgate.clients.oidc.Browser with :class:`LoopbackSecureCookiePolicy`): like a
browser, it treats loopback hosts as a secure context (Chromium does the same for
http://localhost), and only loopback hosts. The bootstrap itself needs no cookie: it reads the
setup answer's access token and sends it as a bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests

from labgate import redact
from labgate.errors import StackError

LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}
ZOT_CLIENT = "zot"
RP_CLIENT = "labgate-rp"  # a confidential client that does not skip consent
PKCE_CLIENT = "labgate-pkce"  # a confidential client that requires PKCE
ADMIN = "labgate-admin"


class LoopbackSecureCookiePolicy(DefaultCookiePolicy):
    """Return Secure cookies over http to loopback hosts only (a browser's "secure context"); a
    name the harness reaches on 127.0.0.1 (labgate.hostalias) is such a host."""

    def return_ok_secure(self, cookie, request) -> bool:  # type: ignore[override]
        from labgate.hostalias import loopback_names

        host = request.host.split(":")[0] if not request.host.startswith("[") else request.host.split("]")[0] + "]"
        if cookie.secure and request.type == "http" and (host in LOOPBACK or host in loopback_names()):
            return True
        return super().return_ok_secure(cookie, request)


def env(*, app_url: str, port: int, actors_port: int, data_dir: str, encryption_key: str) -> dict[str, str]:
    return {
        "APP_URL": app_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ACTORS_HOST": "127.0.0.1",
        "ACTORS_PORT": str(actors_port),
        "ENCRYPTION_KEY": encryption_key,
        "DB_CONNECTION_STRING": f"{data_dir}/pocket-id.db",
        "UPLOAD_PATH": f"{data_dir}/uploads",
        "FILE_BACKEND": "filesystem",
        "DISABLE_RATE_LIMITING": "true",
        "ANALYTICS_DISABLED": "true",
        "VERSION_CHECK_DISABLED": "true",
        "TRUST_PROXY": "false",
        "LOG_LEVEL": "info",
    }


@dataclass
class Bootstrap:
    """What the bootstrap created; secrets go to the state file only."""

    api_key: str = ""
    groups: dict[str, str] = field(default_factory=dict)  # name -> id
    users: dict[str, str] = field(default_factory=dict)  # username -> id
    clients: dict[str, str] = field(default_factory=dict)  # client id -> secret


def _check(r: requests.Response, what: str, *ok: int) -> dict[str, Any]:
    if r.status_code not in ok:
        raise StackError(f"pocket-id bootstrap: {what}: HTTP {r.status_code}: {redact.redact(r.text[:300])}")
    try:
        return r.json() if r.content else {}
    except ValueError:
        return {}


def bootstrap(base: str, *, groups: list[str], humans: list[Any], clients: dict[str, dict[str, Any]]) -> Bootstrap:
    """Claim the first admin, then create an API key, groups, users and OIDC clients."""
    out = Bootstrap()
    s = requests.Session()
    r = s.post(f"{base}/api/signup/setup", json={"username": ADMIN, "email": "admin@labgate.test", "firstName": "Labgate", "lastName": "Admin"}, timeout=30)
    _check(r, "claim the first admin (POST /api/signup/setup)", 200, 201)
    token = r.cookies.get("access_token") or r.cookies.get("__Host-access_token")
    if not token:
        raise StackError("pocket-id bootstrap: the setup answer carried no access_token cookie")
    redact.register(token, "pocket-id-admin-session")
    r = s.post(f"{base}/api/api-keys", json={"name": "labgate", "description": "labgate harness", "expiresAt": "2099-01-01T00:00:00Z"},
               headers={"Authorization": f"Bearer {token}"}, timeout=30)
    out.api_key = _check(r, "create the API key (POST /api/api-keys)", 201)["token"]
    redact.register(out.api_key, "pocket-id-api-key")
    h = {"X-API-Key": out.api_key}
    for g in groups:
        body = _check(s.post(f"{base}/api/user-groups", json={"name": g, "friendlyName": g.title()}, headers=h, timeout=30),
                      f"create group {g}", 201)
        out.groups[g] = body["id"]
    for person in humans:
        body = _check(s.post(f"{base}/api/users", headers=h, timeout=30, json={
            "username": person.name, "email": person.email or f"{person.name}@labgate.test", "emailVerified": True,
            "firstName": person.name.title(), "lastName": "Labgate", "displayName": person.name.title(),
            "isAdmin": False, "disabled": False, "userGroupIds": [out.groups[g] for g in person.groups if g in out.groups],
        }), f"create user {person.name}", 201)
        out.users[person.name] = body["id"]
    for cid, spec in clients.items():
        body = {"id": cid, "name": cid, "isPublic": False, "requiresReauthentication": False,
                "requiresPushedAuthorizationRequests": False, "isGroupRestricted": False, "credentials": {}, **spec}
        _check(s.post(f"{base}/api/oidc/clients", json=body, headers=h, timeout=30), f"create OIDC client {cid}", 201)
        secret = redact.new_secret(f"oidc-client-secret:{cid}", 24)
        _check(s.post(f"{base}/api/oidc/clients/{cid}/secrets", json={"secret": secret}, headers=h, timeout=30),
               f"set the secret of OIDC client {cid}", 201)
        out.clients[cid] = secret
    return out
