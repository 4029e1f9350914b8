"""The access truth table: identities × actions × repositories → allow or deny.

The scenario's access policies are the single statement of intent: zot's accessControl is rendered
from them (labgate.components.registry.zot_access_control) and this module expands the same
policies into one expected cell per (identity, credential, action, repository), with zot's
semantics: only the longest matching repository glob is evaluated; ``defaultPolicy`` is empty;
anonymous users get what ``anonymous_read`` grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labgate.scenario import Scenario

REPO_ACTIONS = {"pull": "read", "tags": "read", "push": "create", "delete": "delete"}
ACTIONS = ("catalog", "pull", "tags", "push", "delete", "apikey", "oidc-login")


@dataclass(frozen=True)
class Cell:
    identity: str  # ci-robot, alice, anonymous, ...
    credential: str  # password | session | apikey | none
    action: str
    repository: str | None
    expect: str  # allow | deny
    why: str

    @property
    def id(self) -> str:
        repo = f"@{self.repository}" if self.repository else ""
        return f"{self.identity}[{self.credential}]-{self.action}{repo}"

    @property
    def row(self) -> str:
        return f"{self.identity} ({self.credential})"

    @property
    def column(self) -> str:
        return f"{self.action} {self.repository}" if self.repository else self.action


def _regex(glob: str) -> "re.Pattern[str]":
    """zot's repository globs: ``**`` crosses path segments, ``*`` does not."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out)


def longest_glob(scenario: Scenario, repo: str) -> str | None:
    globs = {g for p in scenario.access.policies for g in p.repositories} | set(scenario.access.anonymous_read)
    matching = [g for g in globs if _regex(g).fullmatch(repo)]
    return max(matching, key=len) if matching else None


def groups_of(scenario: Scenario, identity: str) -> set[str]:
    for who in list(scenario.identities.robots) + list(scenario.identities.humans):
        if who.name == identity:
            return set(who.groups)
    return set()


def allowed(scenario: Scenario, identity: str | None, zot_action: str, repo: str) -> tuple[bool, str]:
    glob = longest_glob(scenario, repo)
    if glob is None:
        return False, f"no policy names {repo}"
    if identity is None:
        ok = glob in scenario.access.anonymous_read and zot_action == "read"
        return ok, f"{glob}: anonymousPolicy {'read' if glob in scenario.access.anonymous_read else '[]'}"
    groups = groups_of(scenario, identity)
    for pol in scenario.access.policies:
        if glob in pol.repositories and zot_action in pol.actions and (identity in pol.users or groups & set(pol.groups)):
            who = identity if identity in pol.users else "group " + ",".join(sorted(groups & set(pol.groups)))
            return True, f"{glob}: {who} may {zot_action}"
    return False, f"{glob}: nothing grants {identity} {zot_action}"


def expand(scenario: Scenario) -> list[Cell]:
    """Every cell of the table the scenario declares."""
    table = scenario.access.table
    if table is None:
        return []
    cells: list[Cell] = []
    humans = {h.name for h in scenario.identities.humans}
    for ident in table.identities:
        if ident == "anonymous":
            creds = ["none"]
        elif ident in humans:
            creds = ["session", "apikey"]
        else:
            creds = ["password"]
        name = None if ident == "anonymous" else ident
        for cred in creds:
            for action in table.actions:
                if action in REPO_ACTIONS:
                    for repo in table.repositories:
                        ok, why = allowed(scenario, name, REPO_ACTIONS[action], repo)
                        cells.append(Cell(ident, cred, action, repo, "allow" if ok else "deny", why))
                elif action == "catalog":
                    ok = name is not None or bool(scenario.access.anonymous_read)
                    cells.append(Cell(ident, cred, action, None, "allow" if ok else "deny",
                                      "any authenticated identity lists what it may read" if ok else "anonymous: authentication required"))
                elif action == "apikey":
                    ok = name is not None
                    cells.append(Cell(ident, cred, action, None, "allow" if ok else "deny",
                                      "any authenticated identity may create its own API key" if ok else "anonymous: authentication required"))
                elif action == "oidc-login":
                    if cred == "apikey":
                        continue
                    ok = ident in humans
                    cells.append(Cell(ident, cred, action, None, "allow" if ok else "deny",
                                      "humans log in through the identity provider" if ok else "robots and anonymous have no identity-provider account"))
    if table.invalid_credentials:
        robot = next((r.name for r in scenario.identities.robots), "ci-robot")
        for ident, cred in ((robot, "wrong-password"), ("unknown-user", "password")):
            for action in table.actions:
                if action == "oidc-login":
                    continue
                why = "bad credentials: authentication required (and the same answer for both, no account enumeration)"
                for repo in table.repositories if action in REPO_ACTIONS else [None]:
                    cells.append(Cell(ident, cred, action, repo, "deny", why))
    for ov in table.overrides:
        cells = [
            Cell(c.identity, c.credential, c.action, c.repository, ov.expect, f"override: {ov.why}")
            if c.identity == ov.identity and c.action == ov.action and (ov.repository is None or ov.repository == c.repository)
            else c
            for c in cells
        ]
    return cells
