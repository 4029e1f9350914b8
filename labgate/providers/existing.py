"""The existing provider: attach read-only to a live deployment named in a scenario.

Nothing is started and nothing is written. The scenario names the registry (and a repository to
read), optionally the issuer and a kubeconfig context; credentials come from environment
variables or files, never from the scenario text. The harness refuses every write itself
(labgate.guard): only GET/HEAD/OPTIONS reach the registry and the issuer, and the Kubernetes API
gets reads and server-side dry runs (``dryRun=All``) only. The stack has no write permissions, so
every test that would write skips with the reason; what runs is pull and discovery against the
named repository, OIDC discovery and the redirect negative matrix, read-only access cells, and
admission through dry runs against the cluster's own policies.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import requests

from labgate import redact
from labgate.abilities import KUBECONFIG, Handle, Health
from labgate.errors import ScenarioError, StackError
from labgate.providers.base import suite_tools
from labgate.scenario import Scenario, Secret
from labgate.stack import Stack, host_arch


def read_secret(source: Secret, field: str, scenario: Scenario) -> str:
    """A credential from its environment variable or file; one clear error naming the field."""
    if source.password_env:
        value = os.environ.get(source.password_env)
        if not value:
            raise ScenarioError(f"{scenario.source}: {field}.password_env: the environment variable {source.password_env} is not set",
                                fix=f"export {source.password_env}=<the password>")
        return value
    if source.password_file:
        p = Path(os.path.expanduser(source.password_file))
        try:
            return p.read_text().strip()
        except OSError as exc:
            raise ScenarioError(f"{scenario.source}: {field}.password_file: cannot read {p}: {exc.strerror}") from None
    return ""


def _answers(url: str, ok: tuple[int, ...]) -> str | None:
    """Why ``url`` does not answer as a live component should, or None."""
    try:
        r = requests.get(url, timeout=10)
    except requests.RequestException as exc:
        return f"{url} does not answer: {exc.__class__.__name__}"
    return None if r.status_code in ok else f"{url} answered {r.status_code}"


class ExistingProvider:
    name = "existing"

    def __init__(self, scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False, keep: bool = False):
        self.scenario = scenario
        self.run_id = run_id
        self.report_dir = Path(report_dir)
        self.detached = detached
        self.stack: Stack | None = None

    def up(self) -> Stack:
        import tempfile

        sc = self.scenario
        ex = sc.existing
        assert ex is not None
        t0 = time.monotonic()
        reg = ex.registry
        url = reg.url.rstrip("/")
        why = _answers(url + "/v2/", (200, 401))
        if why:
            raise StackError(f"{sc.source}: existing.registry.url: {why}", fix="point it at the registry as this machine reaches it")
        run_dir = Path(tempfile.mkdtemp(prefix=f"labgate-{self.run_id}-"))
        os.chmod(run_dir, 0o700)
        stack = Stack(run_id=self.run_id, scenario=sc.source, scenario_name=sc.name, provider=self.name,
                      arch=host_arch() if sc.arch == "auto" else sc.arch, run_dir=str(run_dir), report_dir=str(self.report_dir),
                      owner_pid=os.getpid(), registry_url=url, registry_ref_host=reg.image_host or "", read_only=True,
                      repository=reg.repository, detached=self.detached, tools=suite_tools(sc))
        caps = {"registry", "registry.read", "registry.auth"}
        if reg.username:
            stack.credentials[reg.username] = read_secret(reg, "existing.registry", sc)
            redact.register_basic(reg.username, stack.credentials[reg.username], f"{reg.username}-password")
        stack.registry_kind = "existing"
        if ex.identity is not None:
            issuer = ex.identity.issuer.rstrip("/")
            why = _answers(issuer + "/.well-known/openid-configuration", (200,))
            if why:
                raise StackError(f"{sc.source}: existing.identity.issuer: {why}")
            stack.issuer_url = issuer
            caps |= {"identity", "identity.oidc"}
            if ex.identity.client_id and ex.identity.redirect_uri:
                stack.oidc_redirects = {ex.identity.client_id: ex.identity.redirect_uri}
                caps.add("identity.client")
        if ex.kubernetes is not None:
            kc = os.path.expanduser(ex.kubernetes.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
            if not Path(kc).is_file():
                raise ScenarioError(f"{sc.source}: existing.kubernetes.kubeconfig: no kubeconfig at {kc}")
            from kubernetes import client as kclient
            from kubernetes import config as kconfig

            try:
                api = kconfig.new_client_from_config(kc, context=ex.kubernetes.context)
                kclient.VersionApi(api).get_code(_request_timeout=10)
            except Exception as exc:  # noqa: BLE001 - one line naming the field
                raise StackError(f"{sc.source}: existing.kubernetes: the cluster in {kc} "
                                 f"(context {ex.kubernetes.context or 'current'}) does not answer: {redact.redact(str(exc))[:200]}") from None
            stack.kubeconfig, stack.kube_context = kc, ex.kubernetes.context or ""
            caps.add("kubernetes")
            if ex.kubernetes.signed_image and ex.kubernetes.unsigned_image:
                caps.add("admission.dry-run")
        stack.capabilities = sorted(caps)
        stack.timings["attach"] = round(time.monotonic() - t0, 3)
        stack.save(run_dir / "state.json")
        self.stack = stack
        return stack

    def down(self) -> None:
        import shutil

        if self.stack is not None:
            shutil.rmtree(self.stack.run_dir, ignore_errors=True)

    def logs(self) -> dict[str, str]:
        return {}


class ExistingHandle(Handle):
    provider = "existing"
    abilities = frozenset({KUBECONFIG})
    missing = {
        "lifecycle": "labgate never stops a component of a deployment it did not start (fix: run against provider local or kind)",
        "pause": "labgate never pauses a component of a deployment it did not start (fix: run against provider local or kind)",
        "credentials": "labgate never changes credentials of a deployment it did not start (fix: run against provider local or kind)",
        "logs": "the existing provider has no access to the components' logs",
    }

    def health(self) -> dict[str, Health]:
        out = {"registry": Health(_answers(self.stack.registry_url + "/v2/", (200, 401)) is None, "stopped answering")}
        if self.stack.issuer_url:
            out["identity"] = Health(_answers(self.stack.issuer_url + "/.well-known/openid-configuration", (200,)) is None,
                                     "stopped answering")
        return out

    def logs(self, component: str) -> str:
        return ""

    def teardown(self) -> list[dict[str, object]]:
        import shutil

        shutil.rmtree(self.stack.run_dir, ignore_errors=True)
        return [{"step": "run-dir", "seconds": 0.0, "error": ""}]
