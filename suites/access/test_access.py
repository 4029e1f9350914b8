"""Robot versus human access: the scenario's truth table, one test per cell.

Every cell asserts the exact status (2xx for allow; 401 without valid credentials, with
WWW-Authenticate; 403 for an authenticated identity the policies do not grant) and, for denials,
the OCI error code. The summary page draws the table as a grid, expected against observed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from labgate.access import Cell, expand
from labgate.clients.oci import OciClient, error_codes
from labgate.stack import Stack

pytestmark = pytest.mark.area("access")
SPEC = "distribution-spec v1.1 §Error Codes (UNAUTHORIZED 401, DENIED 403); zot accessControl"


def _code(resp: requests.Response) -> str:
    codes = error_codes(resp)
    if codes:
        return codes[0]
    try:  # zot answers 401 with a bare error object (known issue zot-401-body-not-an-error-list)
        body = resp.json()
        return str(body.get("code", "")) if isinstance(body, dict) else ""
    except ValueError:
        return ""


@pytest.fixture(scope="session")
def seeded(stack: Stack, scenario) -> dict[str, tuple[str, OciClient]]:
    """An image in every table repository, pushed by an identity the policies let push there."""
    out: dict[str, tuple[str, OciClient]] = {}
    cells = expand(scenario)
    for repo in scenario.access.table.repositories if scenario.access.table else []:
        pusher = next((c.identity for c in cells if c.action == "push" and c.repository == repo and c.expect == "allow"
                       and c.credential == "password"), None)
        if pusher is None:
            continue
        client = OciClient(stack.registry_url, (pusher, stack.password(pusher)))
        client.push_image(repo, "seed", seed="access-table")
        out[repo] = (pusher, client)
    return out


def _client(stack: Stack, cell: Cell) -> OciClient:
    if cell.credential == "none":
        return OciClient(stack.registry_url, None)
    if cell.credential == "wrong-password":
        return OciClient(stack.registry_url, (cell.identity, "not-" + stack.password(cell.identity)))
    if cell.identity == "unknown-user":
        return OciClient(stack.registry_url, ("unknown-user", "labgate-unknown-" + uuid.uuid4().hex[:8]))
    return OciClient(stack.registry_url, (cell.identity, stack.password(cell.identity)))


def _skip_reason(stack: Stack, cell: Cell) -> str | None:
    kind = stack.registry_kind
    if cell.credential in ("session", "apikey") and not stack.has("registry.oidc-login"):
        return f"human rows need OIDC login through Pocket ID, which the {kind} registry here lacks (fix: set ZOT_BIN and POCKET_ID_BIN)"
    if cell.action == "oidc-login" and not stack.has("registry.oidc-login"):
        return f"the {kind} registry here has no OIDC login (fix: set ZOT_BIN and POCKET_ID_BIN)"
    if cell.action == "apikey" and not stack.has("registry.api-keys"):
        return f"the {kind} registry has no API keys (fix: set ZOT_BIN)"
    valid = cell.credential in ("password", "session", "apikey") and cell.identity != "unknown-user"
    if cell.expect == "deny" and valid and not stack.has("registry.access-control"):
        return (f"the {kind} registry has no per-repository authorization (htpasswd lets every account do everything), "
                "so a deny cell for a valid account does not apply (fix: set ZOT_BIN)")
    return None


def _perform(client: OciClient, cell: Cell, seeded: dict[str, tuple[str, OciClient]]) -> requests.Response:
    repo = cell.repository
    if cell.action == "catalog":
        return client.catalog()
    if cell.action == "tags":
        return client.tags(repo)
    if cell.action == "pull":
        if repo not in seeded:
            pytest.skip(f"nothing can be pushed to {repo} under the scenario's policies, so there is nothing to pull")
        return client.get_manifest(repo, "seed")
    if cell.action == "push":
        r = client.start_upload(repo)
        if r.status_code == 202 and r.headers.get("Location"):
            client.cancel_upload(r.headers["Location"])
        return r
    if cell.action == "delete":
        if repo not in seeded:
            pytest.skip(f"nothing can be pushed to {repo} under the scenario's policies, so there is nothing to delete")
        owner = seeded[repo][1]
        img = owner.push_image(repo, f"del-{uuid.uuid4().hex[:8]}", seed=uuid.uuid4().hex)
        return client.delete_manifest(repo, img.digest)
    if cell.action == "apikey":
        r = client.request("POST", "/zot/auth/apikey", data=json.dumps({"label": "labgate-access-" + uuid.uuid4().hex[:6]}),
                           headers={"Content-Type": "application/json"})
        if r.status_code == 201:
            key_id = r.json().get("uuid")
            if key_id:
                client.request("DELETE", "/zot/auth/apikey", params={"id": key_id})
        return r
    raise AssertionError(f"no way to perform {cell.action!r} here")  # oidc-login cells run in the OIDC suite


@pytest.mark.spec(SPEC)
def test_access_cell(cell: Cell, stack: Stack, seeded, attach_log, request: pytest.FixtureRequest) -> None:
    why = _skip_reason(stack, cell)
    if why:
        _record(request, cell, "skip", "", why)
        pytest.skip(why)
    client = _client(stack, cell)
    attach_log(client)
    resp = _perform(client, cell, seeded)
    code = _code(resp)
    observed = "allow" if 200 <= resp.status_code < 300 else "deny"
    _record(request, cell, observed, f"{resp.status_code} {code}".strip(), cell.why)
    if cell.expect == "allow":
        assert observed == "allow", f"{cell.id}: expected 2xx ({cell.why}), got {resp.status_code} {code}"
        return
    unauthenticated = cell.credential in ("none", "wrong-password") or cell.identity == "unknown-user"
    if unauthenticated:
        assert resp.status_code == 401, f"{cell.id}: without valid credentials the answer MUST be 401, got {resp.status_code} {code}"
        assert resp.headers.get("WWW-Authenticate"), f"{cell.id}: a 401 MUST carry WWW-Authenticate"
        assert code == "UNAUTHORIZED", f"{cell.id}: expected error code UNAUTHORIZED, got {code!r}"
    else:
        assert resp.status_code == 403, f"{cell.id}: an authenticated identity without the permission MUST get 403, got {resp.status_code} {code}"
        assert code == "DENIED", f"{cell.id}: expected error code DENIED, got {code!r}"


def _record(request: pytest.FixtureRequest, cell: Cell, observed: str, answer: str, why: str) -> None:
    request.node.user_properties.append(("access", json.dumps({
        "row": cell.row, "column": cell.column, "expected": cell.expect, "observed": observed, "answer": answer, "why": why,
    })))


# ----------------------------------------------------------------------------------------------


@pytest.mark.spec("OWASP ASVS V2.2: no account enumeration; distribution-spec §Error Codes")
@pytest.mark.parametrize("path", ["/v2/", "/v2/_catalog", "/v2/zeroclaw/app/tags/list"])
def test_wrong_password_and_unknown_user_get_the_same_answer(stack: Stack, scenario, attach_log, path: str) -> None:
    robot = scenario.identities.robots[0].name
    wrong = OciClient(stack.registry_url, (robot, "not-" + stack.password(robot)))
    unknown = OciClient(stack.registry_url, ("unknown-" + uuid.uuid4().hex[:6], "x" * 16))
    attach_log(wrong)
    attach_log(unknown)
    a, b = wrong.request("GET", path), unknown.request("GET", path)
    assert a.status_code == b.status_code == 401, (a.status_code, b.status_code)

    def shape(r: requests.Response) -> tuple[Any, ...]:
        return (r.headers.get("WWW-Authenticate"), r.headers.get("Content-Type"), r.content)

    assert shape(a) == shape(b), "a wrong password and an unknown user MUST be indistinguishable"


@pytest.mark.requires("registry.api-keys")
@pytest.mark.spec("zot API keys: a revoked key stops working at once")
def test_revoked_api_key_stops_working_at_once(stack: Stack, scenario, attach_log) -> None:
    robot = next(r.name for r in scenario.identities.robots if "robots" in r.groups)
    owner = OciClient(stack.registry_url, (robot, stack.password(robot)))
    attach_log(owner)
    r = owner.request("POST", "/zot/auth/apikey", data=json.dumps({"label": "labgate-revoke"}), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.status_code
    key, key_id = r.json()["apiKey"], r.json()["uuid"]
    from labgate import redact

    redact.register(key, "zot-api-key")
    with_key = OciClient(stack.registry_url, (robot, key))
    attach_log(with_key)
    assert with_key.catalog().status_code == 200, "a fresh API key works as a basic-auth password"
    d = owner.request("DELETE", "/zot/auth/apikey", params={"id": key_id})
    assert d.status_code == 200, d.status_code
    after = with_key.catalog()
    assert after.status_code == 401, f"a revoked API key MUST stop working at once, got {after.status_code}"
