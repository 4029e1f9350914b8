"""``labgate gate``: the chart-bump gate.

One stack is started at FROM, given state that must survive (seeded), judged by the suites, upgraded
in place to TO while availability probes run, checked for what survived, judged again; the gate is
the per-test difference between the two verdicts, the survival table and the probes' gaps. Unlike
``ct install --upgrade`` it never skips a bump (major or not) and never shows an old-revision
failure as anything but a failure.

Exit codes: 0 the gate passed; otherwise 16 plus the sum of what failed: 1 a test regressed,
2 a survival check failed, 4 an availability gap exceeded its budget (17..23). Bad input exits 2
and a stack that cannot start (or a version that cannot be obtained) 4, before anything is judged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
import yaml

from labgate.errors import LabgateError, ScenarioError, StackError
from labgate.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
REGRESSED, SURVIVAL, AVAILABILITY = 1, 2, 4
EXIT_BASE = 16
GOOD = {"pass", "warn", "known", "not-enforced"}
RAN_NOT = {"skip", "unsupported"}
SEED_REPO = "zeroclaw/gate-seed"
UNSIGNED_REPO = "zeroclaw/gate-unsigned"
POLICY = "labgate-gate"
PROBE_INTERVAL = 0.4  # seconds between two probes of one kind: at least twice a second
DEFAULT_MAX_GAP = 60.0


def exit_code(failed: int) -> int:
    return EXIT_BASE + failed if failed else 0


def explain_exit(code: int) -> str:
    if code == 0:
        return "passed"
    if code < EXIT_BASE:
        return f"exit {code}"
    bits = code - EXIT_BASE
    return ", ".join(w for b, w in ((REGRESSED, "regressions"), (SURVIVAL, "survival failures"), (AVAILABILITY, "availability gaps over budget")) if bits & b)


# ----------------------------------------------------------------------------------------------
# versions on each side


def versions_of(sc: Scenario) -> dict[str, str]:
    """component -> the version the scenario asks for (the toolchain's pin when it names none)."""
    from labgate.providers.base import tool_ref
    from labgate.toolchain.specs import TOOLS

    out = {}
    comps = sc.components
    reg = comps.registry.kind if comps.registry.kind != "auto" else "distribution"
    roles = [("registry", reg)]
    if comps.kubernetes is not None:
        roles.append(("kubernetes", "kube-apiserver"))
    if comps.admission is not None:
        roles.append(("admission", "kyverno"))
    if comps.identity is not None:
        roles.append(("identity", "pocket-id"))
    for role, tool in roles:
        ref = tool_ref(sc, tool)
        out[role] = ref.partition("@")[2] or TOOLS[tool].version
    return out


def kyverno_chart(version: str) -> dict[str, str]:
    """The chart version and app version Kyverno's own module ships at ``version`` (its
    charts/kyverno/Chart.yaml), or why they cannot be read."""
    from labgate.kind.charts import module_dir

    try:
        chart = yaml.safe_load((module_dir(f"github.com/kyverno/kyverno@{version}") / "charts" / "kyverno" / "Chart.yaml").read_text())
    except (StackError, OSError) as exc:
        return {"chart": "?", "app": version, "error": str(exc)}
    return {"chart": str(chart.get("version")), "app": str(chart.get("appVersion"))}


def check_pair(a: Scenario, b: Scenario) -> None:
    """A gate upgrades one stack in place: both sides describe the same stack but for versions and
    the policy's values."""
    if a.provider != b.provider:
        raise ScenarioError(f"{b.source}: provider: {b.provider} differs from {a.source}'s {a.provider}",
                            fix="both sides of a gate run on one provider (use --provider to choose it for both)")
    if a.identities != b.identities:
        raise ScenarioError(f"{b.source}: identities: differ from {a.source}'s", fix="an upgrade keeps the accounts: make them equal")
    for role in ("kubernetes", "admission", "identity"):
        if (getattr(a.components, role) is None) != (getattr(b.components, role) is None):
            raise ScenarioError(f"{b.source}: components.{role}: present on one side only", fix="a gate upgrades components; it adds or removes none")
    if a.components.registry.kind != b.components.registry.kind:
        raise ScenarioError(f"{b.source}: components.registry.kind: {b.components.registry.kind} differs from {a.components.registry.kind}",
                            fix="a registry migration is not an upgrade in place")


def with_provider(sc: Scenario, provider: str | None, dest: Path) -> Scenario:
    if not provider or provider == sc.provider:
        return sc
    from labgate.scenario import read_yaml

    data = read_yaml(Path(sc.source))
    data["provider"] = provider
    out = dest / f"{Path(sc.source).stem}-{provider}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_scenario(str(out))


# where each HelmRelease's app version goes in a scenario
RELEASE_FIELDS = {"admission": ("admission", None), "registry": ("registry", "zot"), "identity": ("identity", None)}


def scenario_for_release(base: Path, versions: dict[str, str], dest: Path, label: str) -> str:
    """``base`` with the versions a ref's HelmReleases pin (labgate.gitops), written to ``dest``."""
    from labgate.scenario import read_yaml

    data = read_yaml(base)
    comps = data.setdefault("components", {})
    for comp, version in versions.items():
        role, kind = RELEASE_FIELDS[comp]
        entry = comps.get(role) or {}
        if kind:
            entry["kind"] = kind
        entry["version"] = version
        comps[role] = entry
    data["name"] = f"{data.get('name', 'scenario')}-{label}"
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{label}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


# ----------------------------------------------------------------------------------------------
# availability probes


@dataclass
class ProbeResult:
    probe: str
    t: float  # seconds since the upgrade began
    ok: bool
    detail: str = ""


class Probes:
    """Each probe started every PROBE_INTERVAL on a fixed cadence, from start() to stop(), whatever
    one answer takes (up to IN_FLIGHT of a kind at once, each with a short timeout of its own), so
    a slow answer under load does not lower the rate; each result is timed at its start."""

    IN_FLIGHT = 3

    def __init__(self, checks: dict[str, Callable[[], str | None]]):
        self.checks = checks
        self.results: list[ProbeResult] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pending: list[threading.Thread] = []
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        for name, check in self.checks.items():
            t = threading.Thread(target=self._loop, args=(name, check), name=f"labgate-probe-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _one(self, name: str, check: Callable[[], str | None], t: float) -> None:
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - a probe's failure is a result, whatever it is
            problem = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.results.append(ProbeResult(name, round(t, 3), problem is None, _short(problem or "")))

    def _loop(self, name: str, check: Callable[[], str | None]) -> None:
        tick = 0
        running: list[threading.Thread] = []
        while not self._stop.is_set():
            running = [r for r in running if r.is_alive()]
            if len(running) < self.IN_FLIGHT:
                r = threading.Thread(target=self._one, args=(name, check, time.monotonic() - self.t0), daemon=True)
                r.start()
                running.append(r)
                with self._lock:
                    self._pending.append(r)
            tick += 1
            self._stop.wait(max(0.0, self.t0 + tick * PROBE_INTERVAL - time.monotonic()))

    def stop(self) -> float:
        self._stop.set()
        seconds = time.monotonic() - self.t0
        for t in [*self._threads, *self._pending]:
            t.join(timeout=30)
        return seconds


def _short(text: str, n: int = 300) -> str:
    from labgate import redact

    text = redact.redact(" ".join(text.split()))
    return text if len(text) <= n else text[: n - 1] + "…"


def gaps(results: list[ProbeResult], end: float) -> list[dict[str, Any]]:
    """Per probe, each run of failures: from the first failed probe to the next one that passed
    (or the end of probing)."""
    out = []
    for name in sorted({r.probe for r in results}):
        start = None
        first = ""
        for r in sorted((r for r in results if r.probe == name), key=lambda r: r.t):
            if not r.ok and start is None:
                start, first = r.t, r.detail
            elif r.ok and start is not None:
                out.append({"probe": name, "start": start, "end": r.t, "seconds": round(r.t - start, 3), "detail": first})
                start = None
        if start is not None:
            out.append({"probe": name, "start": start, "end": round(end, 3), "seconds": round(end - start, 3), "detail": first, "open": True})
    return out


def rate(results: list[ProbeResult], seconds: float) -> dict[str, float]:
    return {name: round(sum(r.probe == name for r in results) / seconds, 2) if seconds > 0 else 0.0
            for name in sorted({r.probe for r in results})}


# ----------------------------------------------------------------------------------------------
# seeded state


@dataclass
class Seeded:
    repo: str
    digest: str
    tags: dict[str, str]
    unsigned: str
    key_pem: str
    legacy_signature: str
    referrers: list[str]
    namespace: str = ""
    policy: str = ""
    deployment: str = ""  # on a cluster with nodes: a Deployment of the signed image, running before the upgrade
    pods: dict[str, int] = field(default_factory=dict)  # its pods: uid -> restarts, as the upgrade found them
    policy_kinds: list[str] = field(default_factory=list)  # the seeded policy exists once per kind
    jwks_kids: list[str] = field(default_factory=list)
    identity: dict[str, list[str]] = field(default_factory=dict)

    def image(self, host: str, digest: str | None = None, repo: str | None = None) -> str:
        return f"{host}/{repo or self.repo}@{digest or self.digest}"


def _robots(sc: Scenario) -> tuple[str, str]:
    """The CI robot the gate seeds as, and the robot that reads (as Kyverno does)."""
    from labgate.providers.base import reading_robot

    robots = sc.identities.robots
    ci = next((r.name for r in robots if "robots" in r.groups), robots[0].name if robots else "")
    if not ci:
        raise ScenarioError(f"{sc.source}: identities.robots: the gate seeds images as a robot", fix="declare a CI robot")
    return ci, reading_robot(sc) or ci


def seed(stack, sc: Scenario, key) -> Seeded:
    """Images pushed by the CI robot and signed both ways, a second tag, the referrers that come
    with a bundle, an unsigned image (the policy, and Pocket ID's users, clients and signing keys,
    are taken just before the upgrade)."""
    from labgate import images, signing
    from labgate.clients.oci import OciClient

    ci_name, _ = _robots(sc)
    ci = OciClient(stack.registry_url, (ci_name, stack.password(ci_name)))
    nonce = uuid.uuid4().hex
    digest = images.push_image(ci, SEED_REPO, "v1", images.build_image(f"gate-seed:{nonce}"))
    images.push_image(ci, SEED_REPO, "stable", images.build_image(f"gate-seed:{nonce}"))
    unsigned = images.push_image(ci, UNSIGNED_REPO, "v1", images.build_image(f"gate-unsigned:{nonce}"))
    legacy = signing.sign_legacy(ci, SEED_REPO, digest, key, identity=f"{stack.image_host}/{SEED_REPO}")
    signing.sign_bundle(ci, SEED_REPO, digest, key)
    refs, _ = signing.list_referrers(ci, SEED_REPO, digest)
    s = Seeded(repo=SEED_REPO, digest=digest, tags={"v1": digest, "stable": digest}, unsigned=unsigned,
               key_pem=key.public_pem().decode(), legacy_signature=str(legacy), referrers=sorted(r["digest"] for r in refs))
    return s


def seed_policy(stack, sc: Scenario, s: Seeded) -> None:
    """The policy the upgrade must keep: the scenario's, trusting the seed key, for the seeded
    repositories, Ready, of the first policy kind the scenario names (the kind the lab holds
    before the upgrade; the suites run every kind). It lives from just before the upgrade to just
    after the survival checks: under failurePolicy Fail it would change what the suites' own
    Kyverno-down cases see."""
    from labgate.components import kyverno as kv

    base = sc.signing.policy
    adm = _admission(stack, sc)
    s.namespace = s.namespace or adm.namespace("gate")
    for kind in base.kinds[:1]:
        body = kv.POLICY_KINDS[kind].render(name=POLICY, image_references=[f"{stack.image_host}/zeroclaw/gate-*"],
                                            public_keys=[s.key_pem], failure_policy=base.failure_policy, verify_type="Cosign",
                                            timeout_seconds=5)
        adm.apply_policy(body)
        s.policy_kinds.append(kind)
    s.policy = POLICY


def seed_deployment(stack, sc: Scenario, s: Seeded, timeout: float = 180.0) -> None:
    """On a cluster with nodes: a Deployment of the seeded signed image, admitted under the seeded
    policy and Running, pulled through the read-only robot's pull secret. The upgrade must leave
    its pod alone (same pod, no restart)."""
    from labgate.process import kube_retry, wait_until

    adm = _admission(stack, sc)
    out = adm.try_deployment(s.namespace, s.image(stack.image_host), name="gate-signed")
    if not out.admitted:
        raise StackError(f"gate: the seeded Deployment of the signed image was denied: {out.message}")
    s.deployment = out.name

    def running() -> bool:
        pods = _deployment_pods(stack, s)
        return bool(pods) and all(p.status.phase == "Running" for p in pods)

    wait_until(running, timeout=timeout, what=f"the seeded Deployment {s.namespace}/{s.deployment} Running", interval=1.0,
               retry_on=kube_retry())
    s.pods = {p.metadata.uid: _restarts(p) for p in _deployment_pods(stack, s)}


def _deployment_pods(stack, s: Seeded) -> list:
    return [p for p in _admission(stack).core.list_namespaced_pod(s.namespace, label_selector=f"app={s.deployment}").items
            if p.metadata.deletion_timestamp is None]


def _restarts(pod) -> int:
    return sum(c.restart_count for c in pod.status.container_statuses or [])


def _deployment_kept(stack, s: Seeded) -> str | None:
    now = {p.metadata.uid: (_restarts(p), p.status.phase) for p in _deployment_pods(stack, s)}
    if set(now) != set(s.pods):
        return f"its pods were replaced: {sorted(s.pods)} -> {sorted(now)}"
    restarted = {uid: (s.pods[uid], r) for uid, (r, _) in now.items() if r != s.pods[uid]}
    if restarted:
        return f"restarted: {restarted}"
    down = {uid: phase for uid, (_, phase) in now.items() if phase != "Running"}
    return f"not Running: {down}" if down else None


def drop_policy(stack, s: Seeded) -> None:
    if s.policy:
        adm = _admission(stack)
        for kind in s.policy_kinds:
            adm.delete_policy(s.policy, kind)
        adm.drop_namespace(s.namespace)


def _admission(stack, sc: Scenario | None = None, *, dry_run: bool = False):
    """The gate's admission client; given the scenario, on a cluster with nodes its namespaces get
    the read-only robot's pull secret (as the admission suite's do). ``dry_run``: every pod is a
    server-side dry run (the probes: judged by admission, never stored, never scheduled)."""
    from labgate.clients.kube import Admission
    from labgate.providers.base import reading_robot

    pull = None
    if sc is not None and stack.has("cluster.nodes"):
        robot = reading_robot(sc)
        pull = (stack.image_host, robot, stack.password(robot))
    return Admission(stack.kubeconfig, stack.kube_context, pull_secret=pull, dry_run=dry_run)


def _jwks_kids(stack) -> list[str]:
    disc = requests.get(stack.issuer_url.rstrip("/") + "/.well-known/openid-configuration", timeout=3)
    disc.raise_for_status()
    jwks = requests.get(disc.json()["jwks_uri"], timeout=3)
    jwks.raise_for_status()
    return sorted(k.get("kid", "") for k in jwks.json().get("keys", []))


def _identity_snapshot(stack) -> dict[str, list[str]]:
    """Pocket ID's users and OIDC clients, by id, through its API (the run's API key)."""
    from labgate.clients.oidc import admin_headers

    out = {}
    for what, path in (("users", "/api/users"), ("clients", "/api/oidc/clients")):
        r = requests.get(stack.issuer_url.rstrip("/") + path, headers=admin_headers(stack), params={"pagination[limit]": 100}, timeout=5)
        r.raise_for_status()
        body = r.json()
        rows = body.get("data", body) if isinstance(body, dict) else body
        out[what] = sorted(str(row.get("id")) for row in rows)
    return out


def probes_for(stack, sc: Scenario, s: Seeded) -> dict[str, Callable[[], str | None]]:
    from labgate.clients.oci import MT_INDEX, MT_MANIFEST

    _, reader = _robots(sc)
    auth = (reader, stack.password(reader))
    session = requests.Session()

    def pull() -> str | None:
        r = session.get(f"{stack.registry_url}/v2/{s.repo}/manifests/{s.digest}", auth=auth, timeout=2,
                        headers={"Accept": f"{MT_MANIFEST}, {MT_INDEX}"})
        if r.status_code != 200:
            return f"GET manifest {s.digest[:19]}: {r.status_code}"
        from labgate.clients.oci import digest as dg

        return None if dg(r.content) == s.digest else "the manifest served has another digest"

    checks: dict[str, Callable[[], str | None]] = {"pull": pull}
    if stack.issuer_url:
        def oidc() -> str | None:
            d = requests.get(stack.issuer_url.rstrip("/") + "/.well-known/openid-configuration", timeout=2)
            if d.status_code != 200:
                return f"discovery: {d.status_code}"
            j = requests.get(d.json()["jwks_uri"], timeout=2)
            if j.status_code != 200 or not j.json().get("keys"):
                return f"JWKS: {j.status_code}"
            return None

        checks["oidc"] = oidc
    if s.namespace:
        adm = _admission(stack, dry_run=True)
        signed, unsigned = s.image(stack.image_host), s.image(stack.image_host, s.unsigned, UNSIGNED_REPO)

        def admit_signed() -> str | None:
            out = adm.try_pod(s.namespace, signed, run=False)
            return None if out.admitted else f"signed pod denied: {out.message}"

        def deny_unsigned() -> str | None:
            out = adm.try_pod(s.namespace, unsigned, run=False)
            if out.admitted:
                return "unsigned pod admitted"
            return None if "signature" in out.message.lower() or "verif" in out.message.lower() else f"denied, but not by the signature check: {out.message}"

        checks["admission-signed"] = admit_signed
        checks["admission-unsigned"] = deny_unsigned
    return checks


# ----------------------------------------------------------------------------------------------
# survival


def survival(stack, sc: Scenario, s: Seeded, key) -> list[dict[str, str]]:
    """What the upgrade had to keep: one row per check, ok | FAILED | n/a (with the reason)."""
    from labgate import signing
    from labgate.clients.oci import OciClient

    _, reader = _robots(sc)
    rd = OciClient(stack.registry_url, (reader, stack.password(reader)))
    rows: list[dict[str, str]] = []

    def check(name: str, fn: Callable[[], str | None]) -> None:
        try:
            problem = fn()
        except Exception as exc:  # noqa: BLE001 - a failed check is a row
            problem = f"{type(exc).__name__}: {exc}"
        rows.append({"check": name, "result": "ok" if problem is None else "FAILED", "detail": _short(problem or "")})

    def na(name: str, why: str) -> None:
        rows.append({"check": name, "result": "n/a", "detail": why})

    def manifest() -> str | None:
        from labgate.clients.oci import digest as dg

        r = rd.get_manifest(s.repo, s.digest)
        return None if r.status_code == 200 and dg(r.content) == s.digest else f"GET by digest: {r.status_code}"

    def tags() -> str | None:
        moved = {}
        for tag, want in s.tags.items():
            r = rd.head_manifest(s.repo, tag)
            got = r.headers.get("Docker-Content-Digest", "")
            if r.status_code != 200 or got != want:
                moved[tag] = f"{r.status_code} {got[:19]}"
        return f"tags moved or gone: {moved}" if moved else None

    def legacy() -> str | None:
        return None if signing.verify_legacy(rd, s.repo, s.digest, s.key_pem) else "no .sig signature verifies"

    def bundle() -> str | None:
        return None if signing.verify_bundles(rd, s.repo, s.digest, s.key_pem) else "no bundle verifies"

    def referrers() -> str | None:
        refs, _ = signing.list_referrers(rd, s.repo, s.digest)
        missing = set(s.referrers) - {r["digest"] for r in refs}
        return f"referrers gone: {sorted(missing)}" if missing else None

    check("seeded image served by digest", manifest)
    check("tags v1 and stable name the seeded digest", tags)
    check("legacy signature (.sig) verifies with the seed key", legacy)
    check("cosign v3 bundle verifies with the seed key", bundle)
    check("referrers still listed", referrers)
    if stack.has("registry.api-keys"):
        na("zot API keys still work", "not seeded by this gate yet (the zot login needs a browser session through Pocket ID)")
    else:
        na("zot API keys still work", f"registry {stack.registry_kind} has no API keys")
    if stack.issuer_url:
        check("Pocket ID users and clients unchanged", lambda: None if _identity_snapshot(stack) == s.identity else "users or clients changed")

        def jwks() -> str | None:
            now = _jwks_kids(stack)
            return None if now == s.jwks_kids or (set(now) & set(s.jwks_kids)) else f"JWKS key ids {s.jwks_kids} -> {now} (no overlap)"

        check("signing keys unchanged or rotated with overlap (JWKS)", jwks)
    else:
        na("Pocket ID users, clients and JWKS", "no identity provider in this stack (set POCKET_ID_BIN)")
    if stack.kubeconfig and s.policy:
        check("every policy Ready (ClusterPolicy, ImageValidatingPolicy)", lambda: _policies_ready(stack, s))
        check("no webhook configuration points at a missing endpoint", lambda: _webhooks_answer(stack))
    if stack.has("cluster.nodes") and s.deployment:
        check("the signed Deployment was not restarted (same pod, no container restart)", lambda: _deployment_kept(stack, s))
    elif stack.has("cluster.nodes"):
        na("the signed Deployment was not restarted", "the stack has no admission: nothing was seeded")
    else:
        na("the signed Deployment was not restarted", f"the {stack.provider} provider has no nodes: no pod runs")
    return rows


def _policies_ready(stack, s: Seeded) -> str | None:
    from labgate.components import kyverno as kv

    adm = _admission(stack)
    problems = []
    for kind in kv.POLICY_KINDS:
        items = adm.policies(kind)
        bad = [p["metadata"]["name"] for p in items if not kv.POLICY_KINDS[kind].ready(p)]
        if kind in s.policy_kinds and POLICY not in {p["metadata"]["name"] for p in items}:
            problems.append(f"{kind} {POLICY} is gone")
        if bad:
            problems.append(f"{kind} not Ready: {bad}")
    return "; ".join(problems) or None


def _webhooks_answer(stack) -> str | None:
    import socket
    from urllib.parse import urlparse

    from kubernetes import client as kclient

    adm = _admission(stack)
    api = kclient.AdmissionregistrationV1Api(adm.api)
    problems = []
    for kind, items in (("validating", api.list_validating_webhook_configuration(_request_timeout=10).items),
                        ("mutating", api.list_mutating_webhook_configuration(_request_timeout=10).items)):
        for cfg in items:
            for wh in cfg.webhooks or []:
                cc = wh.client_config
                if cc.url:
                    u = urlparse(cc.url)
                    try:
                        socket.create_connection((u.hostname, u.port or 443), timeout=2).close()
                    except OSError as exc:
                        problems.append(f"{kind} {cfg.metadata.name}/{wh.name}: {cc.url}: {exc}")
                elif cc.service is not None:
                    try:
                        adm.core.read_namespaced_service(cc.service.name, cc.service.namespace, _request_timeout=10)
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"{kind} {cfg.metadata.name}/{wh.name}: service {cc.service.namespace}/{cc.service.name}: {exc}")
    return "; ".join(problems) or None


# ----------------------------------------------------------------------------------------------
# the verdict diff


def diff(before: dict[str, dict], after: dict[str, dict]) -> list[dict[str, str]]:
    """Per test: same, fixed, regressed, new, removed, newly-skipped; regressions first."""
    rows = []
    for nodeid in sorted(set(before) | set(after)):
        b, a = before.get(nodeid), after.get(nodeid)
        bv, av = (b or {}).get("verdict", ""), (a or {}).get("verdict", "")
        if b is None:
            change = "new"
        elif a is None:
            change = "removed"
        elif bv == av:
            change = "same"
        elif av in RAN_NOT and bv not in RAN_NOT:
            change = "newly-skipped"
        elif av not in GOOD and av not in RAN_NOT and (bv in GOOD or bv in RAN_NOT):
            change = "regressed"
        elif av in GOOD and bv not in GOOD:
            change = "fixed"
        else:
            change = "changed"
        message = (a or {}).get("message") or (b or {}).get("message") or ""
        rows.append({"nodeid": nodeid, "before": bv, "after": av, "change": change, "message": message})
    order = {"regressed": 0, "newly-skipped": 1, "changed": 2, "removed": 3, "new": 4, "fixed": 5, "same": 6}
    return sorted(rows, key=lambda r: (order[r["change"]], r["nodeid"]))


# ----------------------------------------------------------------------------------------------
# running it


def _suites_run(state: str, scenario: str, suites: list[str], reports: Path, run_id: str, extra: list[str]) -> dict[str, dict]:
    cmd = [sys.executable, "-m", "pytest", *suites, "--labgate-state", state, "--scenario", scenario, "-q", "-p", "no:cacheprovider",
           "--labgate-reports", str(reports), "--labgate-run-id", run_id, "--labgate-no-html",
           "-n", os.environ.get("LABGATE_WORKERS", "2"), "--dist", "loadgroup", *extra]
    print(f"labgate gate: {run_id} suites: {' '.join(suites)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    summary = reports / run_id / "summary.json"
    if not summary.exists():
        raise LabgateError(f"gate: the {run_id} suites wrote no summary (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
    data = json.loads(summary.read_text())
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"labgate gate: {run_id}: {tail}", file=sys.stderr, flush=True)
    return {t["nodeid"]: t for t in data["tests"]}


def run(from_path: str, to_path: str, *, provider: str | None = None, reports: str = "reports", suites: list[str] | None = None,
        pytest_args: list[str] | None = None, label: str = "") -> int:
    from labgate import redact, reaper, signing
    from labgate.providers import get_provider

    gate_id = f"gate-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    out = Path(reports) / gate_id
    a, b = load_scenario(from_path), load_scenario(to_path)
    a, b = with_provider(a, provider, out / "scenarios"), with_provider(b, provider, out / "scenarios")
    check_pair(a, b)
    suites = suites or ["suites/"]
    for line in reaper.reap():
        print(f"labgate: reaper: {line}", file=sys.stderr)
    prov = get_provider(a, run_id=gate_id, report_dir=str(out / "stack"))
    if not hasattr(prov, "upgrade"):
        raise StackError(f"gate: the {prov.name} provider cannot upgrade a stack in place yet",
                         fix="run the gate on the local provider (--provider local); the kind upgrade (helm upgrade) is issue 8's next part")
    record: dict[str, Any] = {"id": gate_id, "label": label, "from": {"scenario": a.source, "versions": versions_of(a)},
                              "to": {"scenario": b.source, "versions": versions_of(b)}, "suites": suites, "phases": {}}
    for side, sc in (("from", a), ("to", b)):
        if sc.components.admission is not None:
            record[side]["kyverno_chart"] = kyverno_chart(record[side]["versions"]["admission"])
    t_all = time.monotonic()
    try:
        prov.prepare_upgrade(b)  # every TO binary first: an unobtainable version fails before anything starts
        t0 = time.monotonic()
        stack = prov.up()
        record["phases"]["baseline-up"] = round(time.monotonic() - t0, 2)
        key = signing.KeyPair.generate()
        t0 = time.monotonic()
        seeded = seed(stack, a, key)
        record["phases"]["seed"] = round(time.monotonic() - t0, 2)
        record["seeded"] = asdict(seeded)
        t0 = time.monotonic()
        before = _suites_run(stack.state_file, a.source, suites, out, "baseline", pytest_args or [])
        record["phases"]["baseline-suites"] = round(time.monotonic() - t0, 2)
        if stack.kubeconfig and a.components.admission is not None:
            seed_policy(stack, a, seeded)
            if stack.has("cluster.nodes"):
                seed_deployment(stack, a, seeded)
        if stack.issuer_url:  # as the upgrade finds them (the suites add and remove their own clients)
            seeded.jwks_kids, seeded.identity = _jwks_kids(stack), _identity_snapshot(stack)
        record["seeded"] = asdict(seeded)
        probes = Probes(probes_for(stack, a, seeded))
        probes.start()
        t0 = time.monotonic()
        try:
            time.sleep(1.0)  # a second of probes before anything changes: the healthy baseline
            upgraded = prov.upgrade(b, progress=lambda m: print(f"labgate gate: {m}", file=sys.stderr, flush=True))
            time.sleep(2.0)  # and after
        finally:
            probe_seconds = probes.stop()
        record["phases"]["upgrade"] = round(time.monotonic() - t0, 2)
        record["upgraded"] = upgraded
        results = sorted(probes.results, key=lambda r: r.t)
        record["probes"] = {"seconds": round(probe_seconds, 2), "rate_hz": rate(results, probe_seconds),
                            "results": [asdict(r) for r in results], "gaps": gaps(results, probe_seconds),
                            "upgrade_window": [1.0, round(1.0 + record["phases"]["upgrade"] - 3.0, 2)]}
        budget = b.gate.max_gap_seconds if b.gate else {}
        over = [g for g in record["probes"]["gaps"] if g["seconds"] > budget.get(g["probe"], budget.get("default", DEFAULT_MAX_GAP))]
        record["probes"]["budget"] = budget or {"default": DEFAULT_MAX_GAP}
        record["probes"]["over_budget"] = over
        t0 = time.monotonic()
        record["survival"] = survival(prov.stack, b, seeded, key)
        drop_policy(prov.stack, seeded)
        record["phases"]["survival"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        after = _suites_run(stack.state_file, b.source, suites, out, "candidate", pytest_args or [])
        record["phases"]["candidate-suites"] = round(time.monotonic() - t0, 2)
        record["diff"] = diff(before, after)
    finally:
        t0 = time.monotonic()
        prov.down()
        record["phases"]["teardown"] = round(time.monotonic() - t0, 2)
        record["phases"]["total"] = round(time.monotonic() - t_all, 2)
    failed = 0
    regressed = [r for r in record["diff"] if r["change"] == "regressed"]
    failed |= REGRESSED if regressed else 0
    failed |= SURVIVAL if any(r["result"] == "FAILED" for r in record["survival"]) else 0
    failed |= AVAILABILITY if record["probes"]["over_budget"] else 0
    record["exit_code"] = exit_code(failed)
    record["result"] = explain_exit(record["exit_code"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(redact.redact(json.dumps(record, indent=2)))
    from labgate.report.gate_page import write_page

    page = write_page(record, out)
    counts: dict[str, int] = {}
    for r in record["diff"]:
        counts[r["change"]] = counts.get(r["change"], 0) + 1
    print(f"labgate gate: {' '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; survival "
          f"{sum(r['result'] == 'ok' for r in record['survival'])} ok, {sum(r['result'] == 'FAILED' for r in record['survival'])} failed; "
          f"longest gap {max((g['seconds'] for g in record['probes']['gaps']), default=0):.1f}s", file=sys.stderr)
    for r in regressed:
        print(f"labgate gate: REGRESSED {r['nodeid']}: {r['before']} -> {r['after']}: {r['message'][:200]}", file=sys.stderr)
    print(f"labgate gate: {record['result']}; page {page}")
    return record["exit_code"]
