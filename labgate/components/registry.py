"""Registry configs rendered from the scenario: plain functions, shared by every provider.

The zot.json the local provider writes is the zot.json a chart would mount, and the same for the
distribution config.yml. Nothing here starts a process.
"""

from __future__ import annotations

import json
from typing import Any

import bcrypt
import yaml

from labgate.scenario import Scenario

# bcrypt cost: the registry checks the hash on every request (Kyverno's reads included), so the
# cost is paid thousands of times a run: 4, bcrypt's minimum, is 1.1 ms a request against 2.2 ms for
# htpasswd's default 5 (measured on distribution); the hash is as valid either way
BCRYPT_ROUNDS = 4


def htpasswd(credentials: dict[str, str]) -> str:
    """htpasswd file content with bcrypt entries (what `htpasswd -bB` writes)."""
    lines = []
    for user, password in credentials.items():
        h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
        lines.append(f"{user}:{h.replace('$2b$', '$2y$', 1)}")
    return "\n".join(lines) + "\n"


def robots_htpasswd(scenario: Scenario, credentials: dict[str, str]) -> str:
    """The registry's htpasswd: the scenario's robots and nobody else. The run holds other secrets
    (Pocket ID's keys, OIDC client secrets); none of them is an account of the registry."""
    from labgate import mutations

    robots = [r.name for r in scenario.identities.robots]
    if mutations.on("htpasswd-drops-robot"):
        robots = [r for r in robots if r != "readonly-robot"]
    return htpasswd({r: credentials[r] for r in robots})


def zot_access_control(scenario: Scenario) -> dict[str, Any]:
    """zot ``http.accessControl`` from the scenario's access policies.

    zot evaluates only the longest matching repository glob, then ``adminPolicy``; so every glob gets
    exactly the policies that name it.
    """
    groups: dict[str, dict[str, list[str]]] = {}
    for who in list(scenario.identities.robots) + list(scenario.identities.humans):
        for g in who.groups:
            groups.setdefault(g, {"users": []})["users"].append(who.name)
    repos: dict[str, dict[str, Any]] = {}
    for pol in scenario.access.policies:
        for glob in pol.repositories:
            entry = repos.setdefault(glob, {"policies": [], "defaultPolicy": [], "anonymousPolicy": []})
            p: dict[str, Any] = {"actions": list(pol.actions)}
            if pol.users:
                p["users"] = list(pol.users)
            if pol.groups:
                p["groups"] = list(pol.groups)
            entry["policies"].append(p)
    for glob in scenario.access.anonymous_read:
        repos.setdefault(glob, {"policies": [], "defaultPolicy": [], "anonymousPolicy": []})["anonymousPolicy"] = ["read"]
    return {"groups": groups, "repositories": repos, "adminPolicy": {"users": [], "actions": []}}


def render_zot_config(
    scenario: Scenario,
    *,
    address: str,
    port: int,
    root_dir: str,
    htpasswd_path: str,
    external_url: str | None = None,
    log_level: str = "info",
    issuer: str | None = None,
    oidc_credentials_path: str | None = None,
    session_keys_path: str | None = None,
) -> dict[str, Any]:
    """zot's config.json for the scenario; with ``issuer``, humans log in through OpenID Connect."""
    http: dict[str, Any] = {
        "address": address,
        "port": str(port),
        "realm": "labgate",
        "externalUrl": external_url or f"http://{address}:{port}",
        "auth": {"htpasswd": {"path": htpasswd_path}, "apikey": True, "failDelay": 0},
    }
    if issuer:
        http["auth"]["openid"] = {"providers": {"oidc": {
            "name": "Pocket ID",
            "issuer": issuer,
            "credentialsFile": oidc_credentials_path,
            "scopes": ["openid", "profile", "email", "groups"],
            "claimMapping": {"username": "preferred_username", "groups": "groups"},
        }}}
        http["auth"]["sessionKeysFile"] = session_keys_path
    if scenario.access.policies or scenario.access.anonymous_read:
        http["accessControl"] = zot_access_control(scenario)
    from labgate import mutations

    if mutations.on("auth-off"):
        http.pop("auth")
        http.pop("accessControl", None)
    return {
        "distSpecVersion": "1.1.1",
        "storage": {"rootDirectory": root_dir, "dedupe": True, "gc": False},
        "http": http,
        "log": {"level": log_level},
        "extensions": {
            "search": {"enable": True},  # no "cve" key: nothing is downloaded at start
            "mgmt": {"enable": True},
            "trust": {"enable": True, "cosign": True, "notation": False},
        },
    }


def render_distribution_config(
    scenario: Scenario, *, address: str, port: int, root_dir: str, htpasswd_path: str, http_secret: str
) -> str:
    """CNCF distribution's config.yml (v3 and Debian's 2.8 read the same keys)."""
    cfg = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": root_dir},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{address}:{port}", "secret": http_secret, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": {"htpasswd": {"realm": "labgate", "path": htpasswd_path}},
    }
    from labgate import mutations

    if mutations.on("auth-off"):
        cfg.pop("auth")
    if mutations.on("deletion-disabled"):
        cfg["storage"]["delete"]["enabled"] = False
    return yaml.safe_dump(cfg, sort_keys=False)


def dumps(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"
