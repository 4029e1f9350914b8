"""Deliberately wrong stacks, for proving that the suites notice (``nox -s mutation``).

A mutation is switched on for a whole run with ``LABGATE_MUTATION=<name>``. It changes what the
harness deploys or writes through the same renderers and code paths every run uses (the htpasswd
file, the registry's config, the ClusterPolicy, the signature, Pocket ID's client registration),
never an assertion. suites/mutations.yaml declares, for each, the tests that must change verdict;
labgate.mutate runs them and checks that exactly those flip.
"""

from __future__ import annotations

import os

ENV = "LABGATE_MUTATION"

NAMES = (
    "htpasswd-drops-robot",  # the read-only robot's line is missing from the registry's htpasswd
    "auth-off",  # the registry is rendered without authentication
    "deletion-disabled",  # distribution's storage.delete is off
    "policy-trusts-other-key",  # the ClusterPolicy's public key is a key nobody signs with
    "signature-byte-flipped",  # every legacy signature the harness writes has one byte flipped
    "old-key-never-retired",  # a policy that drops a key keeps it (the GitOps file was never edited)
    "cache-off",  # the policy's useCache is rendered false whatever the test asks
    "redirect-wildcard",  # Pocket ID's relying party is registered with a wildcard callback URL
)


def active() -> str:
    name = os.environ.get(ENV, "")
    if name and name not in NAMES:
        raise ValueError(f"{ENV}={name}: unknown mutation (known: {', '.join(NAMES)})")
    return name


def on(name: str) -> bool:
    assert name in NAMES, name
    return active() == name
