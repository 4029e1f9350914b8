"""Fixtures for the admission and rotation suites: a real kube-apiserver with Kyverno, keys made
per run, images the harness builds and pushes as the CI robot, policies rendered per test.

Each test publishes to its own repository and its policy matches only that repository, so tests
never see each other's policies and run in parallel.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest

from fixtures.plugin import scenario_of
from labgate import images, redact, signing
from labgate.clients.kube import Admission, Outcome
from labgate.clients.oci import OciClient
from labgate.components import kyverno as kv
from labgate.stack import Stack

CI_ROBOT = "ci-robot"
CPOL, IVPOL = kv.CLUSTER_POLICY, kv.IMAGE_VALIDATING_POLICY
# an ImageValidatingPolicy denies with the message of its failed CEL validation, through its own webhook
IVP_DENIED = ("ivpol.validate.kyverno.svc-fail-finegrained-", f"failed: {kv.IVP_MESSAGE}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that applies a policy runs once per policy kind the scenario names
    (signing.policy.kinds), with the kind's short name as its id: [cpol], [ivpol]."""
    if "policy_kind" in metafunc.fixturenames:
        scenario = scenario_of(metafunc.config)
        names = scenario.signing.policy.kinds if scenario is not None else ["ClusterPolicy"]
        kinds = [kv.POLICY_KINDS[n] for n in names]
        metafunc.parametrize("policy_kind", kinds, ids=[k.short for k in kinds])


@pytest.fixture
def policy_kind(scenario) -> kv.PolicyKind:
    """The policy kind a test that is not run per kind uses: the scenario's first."""
    return kv.POLICY_KINDS[scenario.signing.policy.kinds[0]]


def by_kind(policy_kind: kv.PolicyKind, cpol, ivpol):
    """The expectation for the kind the test runs under."""
    return ivpol if policy_kind is IVPOL else cpol


@dataclass
class Published:
    repo: str  # path inside the registry, e.g. zeroclaw/a1-1234abcd
    ref: str  # host/path as a pod's image reference names it, no tag or digest
    tag: str
    digest: str
    harness_host: str = ""  # the registry as this process reaches it (the cosign CLI runs here)

    @property
    def by_tag(self) -> str:
        return f"{self.ref}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.ref}@{self.digest}"

    @property
    def for_cosign(self) -> str:
        """The digest reference as the cosign CLI, run by the harness, reaches it."""
        return f"{self.harness_host}/{self.repo}@{self.digest}"


@pytest.fixture(scope="session")
def adm(stack: Stack, scenario) -> Admission:
    """On a cluster with nodes, pods pull through the read-only robot's pull secret and must run."""
    if not stack.kubeconfig:
        pytest.skip("the stack has no Kubernetes API (fix: add components.kubernetes and components.admission to the scenario)")
    nodes = stack.has("cluster.nodes")
    reader = (scenario.components.admission.pull_robot if scenario.components.admission else None) or "readonly-robot"
    pull = (stack.image_host, reader, stack.password(reader)) if nodes and reader in stack.credentials else None
    return Admission(stack.kubeconfig, stack.kube_context, dry_run=stack.read_only, pull_secret=pull, run_pods=nodes)


@pytest.fixture(scope="session")
def keys(scenario) -> dict[str, signing.KeyPair]:
    """Keys made for this run, by role: K1 is the CI key the policy trusts, K2 the rotation key,
    'other' a key nobody trusts (the scenario's signing section names them)."""
    sg = scenario.signing
    made = {name: signing.KeyPair.generate() for name in sg.keys}
    other = next(n for n in sg.keys if n not in (sg.ci_key, sg.rotation_key))
    return {"K1": made[sg.ci_key], "K2": made[sg.rotation_key], "other": made[other]}


@pytest.fixture
def ci(stack: Stack, attach_log) -> OciClient:
    c = OciClient(stack.registry_url, (CI_ROBOT, stack.password(CI_ROBOT)))
    attach_log(c)
    return c


@pytest.fixture
def reader(stack: Stack, attach_log) -> OciClient:
    """The registry as the read-only robot sees it (as Kyverno reads signatures)."""
    c = OciClient(stack.registry_url, ("readonly-robot", stack.password("readonly-robot")))
    attach_log(c)
    return c


@pytest.fixture
def ns(adm: Admission):
    name = adm.namespace()
    yield name
    if not adm.dry_run:
        adm.drop_namespace(name)  # its pods go with it


@pytest.fixture
def area(stack: Stack, request: pytest.FixtureRequest) -> str:
    """This test's own repository prefix; its policies match only images under it."""
    short = request.node.name.split("[")[0].removeprefix("test_")[:24].replace("_", "-")
    return f"zeroclaw/{short}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def publish(ci: OciClient, stack: Stack, area: str):
    """Build a small real image, push it as the CI robot, optionally sign it."""

    def _publish(name: str, *, tag: str = "v1", sign_with: list[signing.KeyPair] = (), fmt: str = "legacy",
                 seed: str | None = None) -> Published:
        repo = f"{area}/{name}"
        built = images.build_image(seed or f"{repo}:{tag}:{uuid.uuid4().hex}")
        digest = images.push_image(ci, repo, tag, built)
        for key in sign_with:
            if fmt == "bundle":
                signing.sign_bundle(ci, repo, digest, key)
            else:  # the signed reference as pods name it, as cosign writes it
                signing.sign_legacy(ci, repo, digest, key, identity=f"{stack.image_host}/{repo}")
        return Published(repo, f"{stack.image_host}/{repo}", tag, digest, stack.registry_host)

    return _publish


@pytest.fixture
def publish_index(ci: OciClient, stack: Stack, area: str):
    """A multi-platform image: an index over an amd64 and an arm64 image (each runnable on its
    platform), pushed as the CI robot; ``sign`` chooses what is signed: the index digest or one
    platform's manifest."""

    def _publish(name: str, *, tag: str = "v1", key: signing.KeyPair | None = None, sign: str = "index") -> dict:
        repo = f"{area}/{name}"
        nonce = uuid.uuid4().hex
        platforms = {}
        for arch in ("amd64", "arm64"):
            built = images.build_image(f"{repo}:{arch}:{nonce}", architecture=arch)
            platforms[arch] = images.push_image(ci, repo, None, built)
            platforms[arch + ":descriptor"] = {**built.descriptor, "platform": {"architecture": arch, "os": "linux"}}
        index = ci.push_index(repo, tag, [platforms["amd64:descriptor"], platforms["arm64:descriptor"]])
        if key is not None:
            target = index.digest if sign == "index" else platforms[sign]
            signing.sign_legacy(ci, repo, target, key, identity=f"{stack.image_host}/{repo}")
        return {"repo": repo, "ref": f"{stack.image_host}/{repo}", "digest": index.digest,
                "by_digest": f"{stack.image_host}/{repo}@{index.digest}", "platforms": {a: platforms[a] for a in ("amd64", "arm64")}}

    return _publish


@pytest.fixture
def policy(adm: Admission, stack: Stack, scenario, area: str, policy_kind: kv.PolicyKind):
    """Apply a policy of the test's kind (a ClusterPolicy or an ImageValidatingPolicy) for this
    test's repositories, rendered from the scenario's signing policy with the test's own
    variations (``kind``: another kind than the test's); it is deleted afterwards. ``policy.name``
    is the name it has unless the test names another."""
    applied: list[tuple[str, str]] = []
    own = f"lg-{area.split('/')[-1]}"  # the test's policy, unless it names another
    base = scenario.signing.policy
    defaults = {"verify_type": base.type, "count": base.count, "failure_action": base.failure_action,
                "failure_policy": base.failure_policy, "mutate_digest": base.mutate_digest, "verify_digest": base.verify_digest,
                "required": base.required, "use_cache": base.use_cache, "timeout_seconds": base.timeout_seconds}

    def _apply(public_keys: list[signing.KeyPair], *, name: str | None = None, references: list[str] | None = None,
               wait: bool = True, kind: kv.PolicyKind | None = None, **kw) -> float:
        pname = name or own
        pk = kind or policy_kind
        body = pk.render(
            name=pname,
            image_references=references or [f"{stack.image_host}/{area}/*"],
            public_keys=[k.public_pem().decode() for k in public_keys],
            **{**defaults, **kw},
        )
        if (pname, pk.kind) not in applied:
            applied.append((pname, pk.kind))
        return adm.apply_policy(body, wait=wait)

    _apply.name = own
    yield _apply
    for name, kind in applied:
        adm.delete_policy(name, kind)


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """Each admission decision goes to the summary page: object, image, expected, observed, message."""

    def _record(case: str, outcome: Outcome, expected: str) -> Outcome:
        kind = request.node.callspec.params.get("policy_kind") if hasattr(request.node, "callspec") else None
        row = {"case": case, **outcome.record(expected), **({"policy": kind.kind} if kind else {})}
        request.node.user_properties.append(("admission", json.dumps(row)))
        return outcome

    return _record


def denied_with(outcome: Outcome, *needles: str) -> None:
    assert not outcome.admitted, f"{outcome.kind} {outcome.image} was admitted; expected a denial"
    for needle in needles:
        assert needle in outcome.message, f"denial message lacks {needle!r}: {outcome.message}"
    if outcome.phase:
        assert outcome.phase == "absent", f"the denied {outcome.kind} MUST NOT exist: {outcome.phase}"


def admitted(outcome: Outcome) -> None:
    assert outcome.admitted, f"{outcome.kind} {outcome.image} was denied: {outcome.message}"
    if outcome.phase:
        assert outcome.phase == "Running", f"the admitted {outcome.kind} {outcome.image} MUST reach Running (pulled with the read-only robot's pull secret): {outcome.phase}"


def expect(outcome: Outcome, admit: bool, *needles: str) -> None:
    """``admitted`` when ``admit``, else ``denied_with`` the needles."""
    if admit:
        admitted(outcome)
    else:
        denied_with(outcome, *needles)


def cosign(stack: Stack, *args: str, robot: str = "readonly-robot", home=None, env: dict[str, str] | None = None):
    """The real cosign CLI against the stack's registry as ``robot`` (skips when cosign is missing)."""
    import os
    import subprocess

    from labgate import toolchain

    tool = toolchain.resolve(stack.tool("cosign"))
    if not tool.available:
        pytest.skip(f"cosign not available: {tool.reason} (fix: labgate tools install {stack.tool('cosign')})")
    run_env = {**os.environ, "COSIGN_PASSWORD": "", **({"HOME": str(home)} if home else {}), **(env or {})}
    cmd = [tool.path, *args, "--allow-http-registry", *signing.cosign_registry_flags(robot, stack.password(robot))]
    return subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=120)


def cosign_sign(stack: Stack, key: signing.KeyPair, image: str, tmp_path, *extra: str, env: dict[str, str] | None = None):
    """``cosign sign`` of ``image`` with ``key`` (written in cosign's encrypted format), as the CI robot, no tlog."""
    key_file = tmp_path / "cosign.key"
    key_file.write_bytes(key.to_cosign_pem("", scrypt_n=signing.SCRYPT_N_MIN))  # cosign derives the key again: the cheapest N it takes
    return cosign(stack, "sign", "-y", "--key", str(key_file), "--tlog-upload=false", "--use-signing-config=false", *extra, image,
                  robot=CI_ROBOT, home=tmp_path, env=env)


__all__ = ["Published", "CPOL", "IVPOL", "IVP_DENIED", "by_kind", "denied_with", "admitted", "expect", "redact", "cosign", "cosign_sign"]
