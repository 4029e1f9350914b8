"""Fixtures of the OCI distribution-spec v1.1 suite.

Every test gets its own repository (``repo`` / ``new_repo``), so tests are independent and run in
any order and under pytest-xdist. Clients are per identity and per test; each test attaches the
clients it uses with ``attach_log(client)``.

Identities (scenarios/local.yaml): ci-robot reads and writes conformance/** (the ``oci`` client),
readonly-robot only reads there (``reader``), vault-robot owns vault/** (``vault``), and
``anonymous`` sends no credentials.
"""

from __future__ import annotations

import re
from typing import Callable
from uuid import uuid4

import pytest

from labgate.clients.oci import OciClient

CI_ROBOT = "ci-robot"
READONLY_ROBOT = "readonly-robot"
VAULT_ROBOT = "vault-robot"


# ----------------------------------------------------------------------------------------------
# clients


def _client(stack, account: str | None) -> OciClient:
    auth = (account, stack.password(account)) if account else None
    return OciClient(stack.registry_url, auth)


@pytest.fixture
def oci(stack) -> OciClient:
    """ci-robot: read/write on conformance/** and zeroclaw/**."""
    return _client(stack, CI_ROBOT)


@pytest.fixture
def reader(stack) -> OciClient:
    """readonly-robot: read only on conformance/** and zeroclaw/**."""
    return _client(stack, READONLY_ROBOT)


@pytest.fixture
def vault(stack) -> OciClient:
    """vault-robot: read/write on vault/** only."""
    return _client(stack, VAULT_ROBOT)


@pytest.fixture
def anonymous(stack) -> OciClient:
    """No credentials at all."""
    return _client(stack, None)


# ----------------------------------------------------------------------------------------------
# repositories


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:48].strip("-") or "t"


@pytest.fixture
def new_repo(request: pytest.FixtureRequest, scenario) -> Callable[..., str]:
    """A factory of fresh repository names: ``new_repo()``, ``new_repo("src")``,
    ``new_repo(prefix="vault")``. Every name carries a random suffix."""
    base = _slug(request.node.originalname.removeprefix("test_"))

    def make(suffix: str = "", prefix: str | None = None) -> str:
        pre = prefix or scenario.options.oci.repository_prefix
        name = f"{base}-{_slug(suffix)}" if suffix else base
        return f"{pre}/{name}-{uuid4().hex[:8]}"

    return make


@pytest.fixture
def repo(new_repo) -> str:
    """A fresh repository name under the scenario's repository prefix (nothing is pushed yet)."""
    return new_repo()
