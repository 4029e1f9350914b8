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
from labgate.clients import oidc
from labgate.clients.oci import OciClient, error_codes
from labgate.errors import StackError
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


class _Seeds:
    """An image in each table repository, pushed on first use by an identity the policies let push
    there; a repository that cannot be seeded affects only the cells that read it."""

    def __init__(self, stack: Stack, scenario) -> None:
        self.stack = stack
        self.cells = expand(scenario)
        self.done: dict[str, tuple[str, OciClient]] = {}

    def owner(self, repo: str) -> tuple[str, OciClient] | None:
        if repo in self.done:
            return self.done[repo]
        pusher = next((c.identity for c in self.cells if c.action == "push" and c.repository == repo and c.expect == "allow"
                       and c.credential == "password"), None)
        if pusher is None:
            return None
        client = OciClient(self.stack.registry_url, (pusher, self.stack.password(pusher)))
        try:
            client.push_image(repo, "seed", seed="access-table")
        except AssertionError as exc:
            raise AssertionError(f"precondition: {pusher} may push to {repo} under the policies, and could not seed it: {exc}") from None
        self.done[repo] = (pusher, client)
        return self.done[repo]


@pytest.fixture(scope="session")
def seeded(stack: Stack, scenario) -> _Seeds:
    return _Seeds(stack, scenario)


class _Humans:
    """Human credentials, made once per human per test session: a zot session from the OIDC login
    through Pocket ID, and a zak_ API key created through that session (revoked at the end)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.sessions: dict[str, oidc.Browser] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # human -> (key, key id)

    def session(self, who: str) -> oidc.Browser:
        if who not in self.sessions:
            self.sessions[who] = oidc.zot_login(self.stack, who)  # sends X-ZOT-API-CLIENT: zot-ui from now on
        return self.sessions[who]

    def api_key(self, who: str) -> str:
        if who not in self.keys:
            r = oidc.zot_create_api_key(self.session(who), self.stack, f"labgate-access-{who}")
            if r.status_code != 201:
                raise AssertionError(f"{who} could not create a zot API key through the session: {r.status_code} {oidc.show(r.text)}")
            self.keys[who] = (r.json()["apiKey"], r.json()["uuid"])
        return self.keys[who][0]

    def close(self) -> None:
        for who, (_, key_id) in self.keys.items():
            oidc.zot_revoke_api_key(self.session(who), self.stack, key_id)
        for b in self.sessions.values():
            oidc.zot_logout(b, self.stack)


_HUMANS: list[_Humans] = []


@pytest.fixture(scope="session", autouse=True)
def _human_credentials(stack: Stack):
    """Session-scoped cache of the humans' zot sessions and API keys (made on first use only)."""
    humans = _Humans(stack)
    _HUMANS.append(humans)
    yield humans
    _HUMANS.remove(humans)
    humans.close()


def _humans(stack: Stack) -> _Humans:
    for h in _HUMANS:
        if h.stack is stack:
            return h
    raise AssertionError("no human credential cache for this stack")


def _client(stack: Stack, cell: Cell) -> OciClient:
    if cell.credential == "session":
        # the human's zot session (cookie) from the OIDC login, sent with X-ZOT-API-CLIENT: zot-ui
        return OciClient(stack.registry_url, None, session=_humans(stack).session(cell.identity))
    if cell.credential == "apikey":
        # basic auth: the human's zot identity (preferred_username) and a zak_ key made through the session
        return OciClient(stack.registry_url, (cell.identity, _humans(stack).api_key(cell.identity)))
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
    return None


def _unenforceable(stack: Stack, cell: Cell) -> str | None:
    """Why the registry cannot enforce this deny cell (it still runs, and shows what happened)."""
    valid = cell.credential in ("password", "session", "apikey") and cell.identity != "unknown-user"
    if cell.expect == "deny" and valid and not stack.has("registry.access-control"):
        return (f"the {stack.registry_kind} registry has no per-repository authorization (htpasswd lets every account do "
                "everything); per-repository access control needs zot (set ZOT_BIN)")
    return None


def _perform(client: OciClient, cell: Cell, seeded: _Seeds) -> requests.Response:
    repo = cell.repository
    if cell.action == "catalog":
        return client.catalog()
    if cell.action == "tags":
        seeded.owner(repo)  # the repository exists, whichever cell ran first (a tag list of nothing is 404)
        return client.tags(repo)
    if cell.action == "pull":
        if seeded.owner(repo) is None:
            pytest.skip(f"nothing can be pushed to {repo} under the scenario's policies, so there is nothing to pull")
        return client.get_manifest(repo, "seed")
    if cell.action == "push":
        r = client.start_upload(repo)
        if r.status_code == 202 and r.headers.get("Location"):
            client.cancel_upload(r.headers["Location"])
        return r
    if cell.action == "delete":
        found = seeded.owner(repo)
        if found is None:
            pytest.skip(f"nothing can be pushed to {repo} under the scenario's policies, so there is nothing to delete")
        owner = found[1]
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
    if cell.action == "oidc-login":
        return _oidc_login(client, cell)
    raise AssertionError(f"no way to perform {cell.action!r} here")


def _oidc_login(client: OciClient, cell: Cell) -> requests.Response:
    """The zot OIDC login (/zot/auth/login?provider=oidc → Pocket ID → zot's callback).

    A human completes it: the answer is zot's callback, 201 with a session cookie. Anyone else has no
    Pocket ID account: no one-time login can be minted for them (404 user_not_found), and the login
    stops at Pocket ID's authenticate step (completing it answers 401 not_signed_in), so zot never
    gets a callback; the answer is then what the registry says to the browser the attempt left
    behind, which holds no zot session (401 with a Basic challenge)."""
    stack = _HUMANS[-1].stack
    if cell.identity in stack.humans:
        res = oidc.zot_login_flow(stack, cell.identity)
        client.exchanges.extend(res.session.exchanges)
        if res.ok:
            assert res.session.cookie("user", stack.registry_url) == cell.identity, f"zot's identity is {res.session.cookie('user')!r}"
            oidc.zot_logout(res.session, stack)
        return res.callback or (res.authorize.response if res.authorize else res.start)
    b = oidc.browser(f"oidc-login attempt of {cell.identity}")
    if cell.credential != "none":
        found = b.get(f"{stack.issuer_url}/api/users", params={"search": cell.identity}, headers=oidc.admin_headers(stack))
        assert found.status_code == 200 and not [u for u in found.json().get("data", []) if u.get("username") == cell.identity], \
            f"{cell.identity} has a Pocket ID account"
        minted = oidc.create_one_time_token(stack, cell.identity, via=b)
        assert minted.status_code == 404, f"a one-time login for {cell.identity}: {minted.status_code} {oidc.show(minted.text)}"
    start = oidc.zot_login_start(b, stack)
    assert start.status_code == 302, f"zot's login answered {start.status_code}"
    at_idp = b.get(start.headers["Location"])
    iid = oidc.interaction_id(at_idp.headers.get("Location"))
    assert iid, f"Pocket ID did not ask for authentication: {at_idp.status_code} {oidc.show(at_idp.headers.get('Location', ''))}"
    step = b.get(f"{stack.issuer_url}/api/oidc/interactions/{iid}").json().get("currentStep")
    assert step == "authenticate", f"the interaction's step is {step!r}"
    done = b.post(f"{stack.issuer_url}/api/oidc/interactions/{iid}/complete", json={"step": step})
    assert done.status_code == 401, f"completing authentication without an account answered {done.status_code} {oidc.show(done.text)}"
    assert not b.cookie("session", stack.registry_url), "a zot session cookie appeared"
    after = b.get(f"{client.base_url}/v2/_catalog")  # what the attempt left: no session, still unauthenticated
    client.exchanges.extend(b.exchanges)
    return after


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
    unenforceable = _unenforceable(stack, cell)
    if unenforceable and observed == "allow":
        # the scenario's intent is never dropped: the cell ran, and the summary counts it
        _record(request, cell, observed, f"{resp.status_code} {code}".strip(), cell.why, not_enforced=True)
        request.node.user_properties.append(("verdict", "not-enforced"))
        request.node.user_properties.append(("not_enforced", f"{cell.id}: the scenario denies it ({cell.why}); {unenforceable}; "
                                             f"observed {resp.status_code}: allowed"))
        return
    _record(request, cell, observed, f"{resp.status_code} {code}".strip(), cell.why)
    if cell.expect == "allow":
        assert observed == "allow", f"{cell.id}: expected 2xx ({cell.why}), got {resp.status_code} {code}"
        return
    # a robot's password means nothing to the identity provider: its login attempt ends without a
    # session, and the registry then answers as to anyone without credentials
    unauthenticated = cell.credential in ("none", "wrong-password") or cell.identity == "unknown-user" or cell.action == "oidc-login"
    if unauthenticated:
        assert resp.status_code == 401, f"{cell.id}: without valid credentials the answer MUST be 401, got {resp.status_code} {code}"
        assert resp.headers.get("WWW-Authenticate"), f"{cell.id}: a 401 MUST carry WWW-Authenticate"
        assert code == "UNAUTHORIZED", f"{cell.id}: expected error code UNAUTHORIZED, got {code!r}"
    else:
        assert resp.status_code == 403, f"{cell.id}: an authenticated identity without the permission MUST get 403, got {resp.status_code} {code}"
        assert code == "DENIED", f"{cell.id}: expected error code DENIED, got {code!r}"


def _record(request: pytest.FixtureRequest, cell: Cell, observed: str, answer: str, why: str, not_enforced: bool = False) -> None:
    request.node.user_properties.append(("access", json.dumps({
        "row": cell.row, "column": cell.column, "expected": cell.expect, "observed": observed, "answer": answer, "why": why,
        "not_enforced": not_enforced,
    })))


# ----------------------------------------------------------------------------------------------


@pytest.mark.read_only
@pytest.mark.spec("OWASP ASVS V2.2: no account enumeration; distribution-spec §Error Codes")
@pytest.mark.parametrize("path", ["/v2/", "/v2/_catalog", "/v2/{repository}/tags/list"])
def test_wrong_password_and_unknown_user_get_the_same_answer(stack: Stack, scenario, attach_log, path: str) -> None:
    robot = next(iter(stack.credentials), None) if stack.read_only else scenario.identities.robots[0].name
    if robot is None:
        pytest.skip("the scenario gives no account (fix: existing.registry.username with password_env or password_file)")
    path = path.format(repository=stack.repository or "zeroclaw/app")
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


@pytest.mark.disruptive("registry")  # the robot may be the one Kyverno reads signatures with
@pytest.mark.requires("registry.htpasswd-reload")
@pytest.mark.spec("zot htpasswd: a robot removed from the htpasswd file stops working at once")
@pytest.mark.parametrize("how", ["in-place", "replace"])
def test_revoked_robot_stops_working_at_once(stack: Stack, scenario, attach_log, how: str, request) -> None:
    """Revoking a robot is deleting its htpasswd line. "in-place" rewrites the file; "replace" renames
    a new file over it, which is how a Kubernetes Secret volume changes.

    zot's file watcher follows the file it first opened: after a rename it watches a file that no
    longer exists and sees no later change, even in place (known issue
    zot-htpasswd-replaced-file-not-reloaded). So the "replace" case restarts the registry when it
    ends: no other test depends on running before or after it."""
    import time

    from labgate import abilities
    from labgate.process import wait_until

    creds = abilities.need(stack, abilities.CREDENTIALS)
    if how not in creds.revoke_modes():
        pytest.skip(f"the {stack.provider} provider changes the htpasswd file only by {' or '.join(sorted(creds.revoke_modes()))}, not {how}")
    life = abilities.need(stack, abilities.LIFECYCLE) if how == "replace" else None
    robot = next(r.name for r in scenario.identities.robots if "vault" in r.groups or "readers" in r.groups)
    client = OciClient(stack.registry_url, (robot, stack.password(robot)))
    attach_log(client)
    assert client.catalog().status_code == 200
    try:
        with creds.revoked(robot, how=how):
            t0 = time.monotonic()
            try:
                wait_until(lambda: client.catalog().status_code == 401, timeout=10, what=f"{robot} refused after revocation ({how})")
            except StackError:
                raise AssertionError(f"{robot}'s password still works 10 s after its htpasswd line was removed ({how})") from None
            request.node.user_properties.append(("measured", f"refused {time.monotonic() - t0:.2f}s after the line was removed"))
        wait_until(lambda: client.catalog().status_code == 200, timeout=10, what=f"{robot} restored")
    finally:
        if life is not None:
            life.restart("registry")  # a fresh watcher on the restored file, whatever happened above
