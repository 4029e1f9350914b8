"""The local provider: real component binaries as processes on 127.0.0.1.

Each component gets free ports, its config and data in a private run directory (mode 0700, removed
at teardown: it holds the run's credentials), and its output captured there. Readiness is polled
with a deadline. Teardown runs in reverse start order on success, failure, exception, SIGINT and
SIGTERM, and copies each component's log, redacted, into the report directory.
"""

from __future__ import annotations

import json
import os
import sys
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests

from labgate import checkpoint, redact, toolchain
from labgate.components import registry as reg
from labgate.errors import StackError
from labgate.process import Managed, free_port, wait_until
from labgate.scenario import Scenario
from labgate.stack import ComponentState, Stack, host_arch

HEALTH_TIMEOUT = float(os.environ.get("LABGATE_HEALTH_TIMEOUT", "60"))


class LocalProvider:
    name = "local"

    def __init__(self, scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False):
        self.scenario = scenario
        self.run_id = run_id
        self.report_dir = Path(report_dir)
        self.detached = detached
        self.procs: list[tuple[str, Managed]] = []
        self.after_stop: dict[str, Callable[[], None]] = {}
        self.stack: Stack | None = None
        self._run_dir: Path | None = None

    # ------------------------------------------------------------------------------------------
    def up(self) -> Stack:
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> Stack:
        sc = self.scenario
        arch = host_arch() if sc.arch == "auto" else sc.arch
        if arch != host_arch():
            raise StackError(
                f"{sc.source}: arch: {arch} on a {host_arch()} host: the local provider runs native binaries only",
                fix=f"set arch: auto, or run on a {arch} machine ({arch} emulation needs qemu-user: apt-get install qemu-user-static binfmt-support)",
            )
        check_versions(sc)
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"labgate-{self.run_id}-"))
        os.chmod(self._run_dir, 0o700)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            run_id=self.run_id,
            scenario=sc.source,
            scenario_name=sc.name,
            provider=self.name,
            arch=arch,
            run_dir=str(self._run_dir),
            report_dir=str(self.report_dir),
            owner_pid=os.getpid(),
        )
        self.stack = stack
        for robot in sc.identities.robots:
            stack.credentials[robot.name] = redact.new_secret(f"{robot.name}-password")
            redact.register_basic(robot.name, stack.credentials[robot.name], f"{robot.name}-password")

        t0 = time.monotonic()
        kind, tool = self._choose_registry(stack)
        stack.timings["toolchain"] = round(time.monotonic() - t0, 3)

        registry_port = free_port()
        if sc.components.identity is not None:
            self._start_pocket_id(stack, registry_port if kind == "zot" else None)
        self._start_registry(stack, kind, tool, registry_port)
        if sc.components.kubernetes is not None:
            self._start_kubernetes(stack)
        if sc.components.admission is not None:
            self._start_kyverno(stack)
        stack.save(self._run_dir / "state.json")
        checkpoint.reached("stack-ready", state=stack.state_file, pids=[m.pid for _, m in self.procs], ports=self.ports())
        return stack

    def _secret(self, label: str, nbytes: int = 18) -> str:
        """A random secret for this run, registered for redaction and kept in the state file only."""
        assert self.stack is not None
        self.stack.credentials[label] = redact.new_secret(label, nbytes)
        return self.stack.credentials[label]

    def ports(self) -> list[int]:
        return [p for c in (self.stack.components if self.stack else []) for p in c.ports.values()]

    # ------------------------------------------------------------------------------------------
    def _choose_registry(self, stack: Stack) -> tuple[str, toolchain.Resolved]:
        want = self.scenario.components.registry.kind
        zot = toolchain.resolve("zot")
        if not zot.available:
            stack.skipped_components["zot"] = zot.reason
        if want == "zot" or (want == "auto" and zot.available):
            return "zot", toolchain.install("zot") if zot.available else _unavailable(zot)
        dist = toolchain.install("distribution")
        if not dist.available:
            _unavailable(dist)
        return "distribution", dist

    def _start_pocket_id(self, stack: Stack, zot_port: int | None) -> None:
        """Pocket ID first: zot reads the issuer's discovery document at start-up and exits without it."""
        from labgate.components import pocketid as pid

        assert self._run_dir is not None
        tool = toolchain.resolve("pocket-id")
        if not tool.available:
            stack.skipped_components["pocket-id"] = tool.reason
            return
        d = self._run_dir / "pocket-id"
        d.mkdir(parents=True)
        port, actors = free_port(), free_port()
        app_url = f"http://localhost:{port}"  # its own host name: cookies ignore ports, and zot is 127.0.0.1
        env = pid.env(app_url=app_url, port=port, actors_port=actors, data_dir=str(d), encryption_key=self._secret("pocket-id:encryption-key"))

        def healthy() -> bool:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 204)

        stack.components.append(self._start("identity", "pocket-id", tool, [tool.path], d / "pocket-id.log", healthy,
                                            ports={"http": port, "actors": actors}, url=app_url, env=env, cwd=d))
        t0 = time.monotonic()
        zot_url = f"http://127.0.0.1:{zot_port}" if zot_port else None
        clients: dict[str, dict] = {}
        rp_redirect = f"http://127.0.0.1:{free_port()}/callback"  # registered, never served: tests read Location
        if zot_url:
            clients[pid.ZOT_CLIENT] = {"callbackURLs": [f"{zot_url}/zot/auth/callback/oidc"], "logoutCallbackURLs": [f"{zot_url}/login"],
                                       "pkceEnabled": False, "skipConsent": True}
        clients[pid.RP_CLIENT] = {"callbackURLs": [rp_redirect], "pkceEnabled": False, "skipConsent": False}
        clients[pid.PKCE_CLIENT] = {"callbackURLs": [rp_redirect], "pkceEnabled": True, "skipConsent": True}
        humans = list(self.scenario.identities.humans)
        groups = sorted({g for h in humans for g in h.groups})
        boot = pid.bootstrap(f"http://127.0.0.1:{port}", groups=groups, humans=humans, clients=clients)
        stack.timings["pocket-id-bootstrap"] = round(time.monotonic() - t0, 3)
        stack.credentials["pocket-id:api-key"] = boot.api_key
        for cid, secret in boot.clients.items():
            stack.credentials[f"oidc:{cid}"] = secret
        stack.oidc_redirects = {cid: spec["callbackURLs"][0] for cid, spec in clients.items()}
        stack.humans = boot.users
        stack.issuer_url = app_url
        stack.capabilities = sorted(set(stack.capabilities) | {"identity.pocket-id"})

    def _start_registry(self, stack: Stack, kind: str, tool: toolchain.Resolved, port: int) -> None:
        assert self._run_dir is not None
        d = self._run_dir / "registry"
        (d / "data").mkdir(parents=True)
        htpasswd = d / "htpasswd"
        htpasswd.write_text(reg.htpasswd(stack.credentials))
        url = f"http://127.0.0.1:{port}"
        if kind == "zot":
            cfg = d / "config.json"
            oidc: dict = {}
            if stack.issuer_url and "oidc:zot" in stack.credentials:
                creds = d / "oidc-credentials.json"
                creds.write_text(json.dumps({"clientid": "zot", "clientsecret": stack.credentials["oidc:zot"]}))
                keys = d / "session-keys.json"
                keys.write_text(json.dumps({"hashKey": self._secret("zot:session-hash-key", 48), "encryptKey": self._secret("zot:session-encrypt-key", 24)[:32]}))
                for f in (creds, keys):
                    f.chmod(0o600)
                oidc = {"issuer": stack.issuer_url, "oidc_credentials_path": str(creds), "session_keys_path": str(keys)}
            cfg.write_text(reg.dumps(reg.render_zot_config(
                self.scenario, address="127.0.0.1", port=port, root_dir=str(d / "data"), htpasswd_path=str(htpasswd), **oidc,
            )))
            cmd = [tool.path, "serve", str(cfg)]
            caps = ["registry", "registry.zot", "registry.auth", "registry.delete", "registry.api-keys", "registry.htpasswd-reload"]
            if oidc:
                caps.append("registry.oidc-login")
            if self.scenario.access.policies:
                caps.append("registry.access-control")
        else:
            cfg = d / "config.yml"
            cfg.write_text(reg.render_distribution_config(
                self.scenario, address="127.0.0.1", port=port, root_dir=str(d / "data"), htpasswd_path=str(htpasswd),
                http_secret=self._secret("registry:http-secret"),
            ))
            sub = [] if tool.path.endswith("docker-registry") else ["serve"]
            cmd = [tool.path, *(sub or ["serve"]), str(cfg)]
            caps = ["registry", "registry.distribution", "registry.auth", "registry.delete"]

        def healthy() -> bool:
            r = requests.get(url + "/v2/", timeout=2)
            return r.status_code in (200, 401)

        state = self._start("registry", kind, tool, cmd, d / "registry.log", healthy, ports={"http": port}, url=url)
        stack.registry_kind = kind
        stack.registry_url = url
        stack.registry_htpasswd = str(htpasswd)
        stack.capabilities = sorted(set(stack.capabilities) | set(caps))
        stack.components.append(state)

    def _start_kubernetes(self, stack: Stack) -> None:
        from labgate.components import kube

        assert self._run_dir is not None
        t0 = time.monotonic()
        etcd = toolchain.install("etcd")
        api = toolchain.install("kube-apiserver")
        for tool in (etcd, api):
            if not tool.available:
                _unavailable(tool)
        stack.timings["toolchain"] = round(stack.timings.get("toolchain", 0) + time.monotonic() - t0, 3)
        d = self._run_dir / "kubernetes"
        pki = kube.generate_pki(d / "pki")
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()

        def etcd_healthy() -> bool:
            r = requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=2)
            return r.status_code == 200 and r.json().get("health") == "true"

        cmd = kube.etcd_command(etcd.path, d / "etcd", etcd_port, peer_port)
        stack.components.append(self._start("etcd", "etcd", etcd, cmd, d / "etcd.log", etcd_healthy,
                                            ports={"client": etcd_port, "peer": peer_port}, url=f"http://127.0.0.1:{etcd_port}"))
        token = self._secret("kubernetes:admin-token")
        tokens = d / "tokens.csv"
        kube.token_file(tokens, token)
        url = f"https://127.0.0.1:{api_port}"

        def api_healthy() -> bool:
            r = requests.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, verify=str(pki.ca_cert), timeout=3)
            return r.status_code == 200

        cmd = kube.apiserver_command(api.path, pki, port=api_port, etcd_port=etcd_port, tokens=tokens, cert_dir=d / "certs")
        stack.components.append(self._start("kube-apiserver", "kube-apiserver", api, cmd, d / "kube-apiserver.log", api_healthy,
                                            ports={"https": api_port}, url=url, timeout=3 * HEALTH_TIMEOUT))
        kc = d / "kubeconfig"
        kc.write_text(kube.kubeconfig(url, pki.ca_cert, token))
        kc.chmod(0o600)
        stack.kubeconfig = str(kc)
        stack.kube_url = url
        stack.capabilities = sorted(set(stack.capabilities) | {"kubernetes"})

    def _start_kyverno(self, stack: Stack) -> None:
        from kubernetes import client as kclient
        from kubernetes import config as kconfig
        from kubernetes import utils as kutils

        from labgate.components import kyverno as kv

        assert self._run_dir is not None
        sc = self.scenario
        adm = sc.components.admission
        assert adm is not None
        t0 = time.monotonic()
        tool = toolchain.install("kyverno")
        if not tool.available:
            _unavailable(tool)
        stack.timings["toolchain"] = round(stack.timings.get("toolchain", 0) + time.monotonic() - t0, 3)
        crds = Path(os.environ.get("KYVERNO_CRDS") or Path(tool.path).parent.parent / "config" / "crds")
        if not crds.is_dir():
            raise StackError(f"kyverno: no CRD directory at {crds}", fix="set KYVERNO_CRDS to the config/crds directory of the kyverno module")
        api = kconfig.new_client_from_config(stack.kubeconfig)
        core = kclient.CoreV1Api(api)
        t0 = time.monotonic()
        core.create_namespace(kclient.V1Namespace(metadata=kclient.V1ObjectMeta(name=kv.NAMESPACE)))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:  # 22 large CRDs: the apiserver takes them in parallel
            list(pool.map(lambda f: kutils.create_from_yaml(api, str(f)), kv.crd_files(crds)))
        ext = kclient.ApiextensionsV1Api(api)

        def established() -> bool:
            for name in ("clusterpolicies.kyverno.io", "policies.kyverno.io"):
                crd = ext.read_custom_resource_definition(name)
                if not any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                    return False
            return True

        wait_until(established, timeout=60, what="Kyverno CRDs established")
        robot = adm.pull_robot or next((r.name for r in sc.identities.robots if "readers" in r.groups), None) \
            or (sc.identities.robots[0].name if sc.identities.robots else None)
        if robot is None:
            raise StackError(f"{sc.source}: identities.robots: Kyverno needs a robot to read the registry", fix="declare a read-only robot")
        core.create_namespaced_secret(kv.NAMESPACE, kclient.V1Secret(
            metadata=kclient.V1ObjectMeta(name=kv.PULL_SECRET), type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": kv.docker_config(stack.registry_host, robot, stack.password(robot))},
        ))
        stack.timings["kyverno-prerequisites"] = round(time.monotonic() - t0, 3)
        port, metrics = free_port(), free_port()
        cmd = kv.command(tool.path, kubeconfig=stack.kubeconfig, webhook_port=port, metrics_port=metrics, cache_ttl=adm.cache_ttl)
        url = f"https://127.0.0.1:{port}"

        def healthy() -> bool:
            return requests.get(url + "/health/readiness", verify=False, timeout=2).status_code == 200

        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.after_stop["kyverno"] = lambda: _delete_kyverno_webhooks(api)
        stack.components.append(self._start("kyverno", "kyverno", tool, cmd, self._run_dir / "kyverno" / "kyverno.log", healthy,
                                            ports={"webhook": port, "metrics": metrics}, url=url, env=kv.ENV,
                                            timeout=3 * HEALTH_TIMEOUT))
        stack.capabilities = sorted(set(stack.capabilities) | {"admission", "admission.kyverno"})

    def _start(self, name: str, kind: str, tool: toolchain.Resolved, cmd: list[str], log: Path,
               healthy: Callable[[], bool], *, ports: dict[str, int], url: str = "", env: dict[str, str] | None = None,
               timeout: float = HEALTH_TIMEOUT, cwd: Path | None = None) -> ComponentState:
        t0 = time.monotonic()
        m = Managed(name, cmd, log, env=env or {}, cwd=cwd, die_with_parent=not self.detached).start()
        self.procs.append((name, m))
        checkpoint.reached(f"component-started-{name}", pid=m.pid, ports=list(ports.values()))
        wait_until(healthy, timeout=timeout, what=f"{name} ({kind}) at {url or ports}", abort=lambda: _port_clash(m) or m.exited())
        elapsed = round(time.monotonic() - t0, 3)
        assert self.stack is not None
        self.stack.timings[f"start:{name}"] = elapsed
        return ComponentState(
            name=name, kind=kind, version=tool.version, source=tool.source, path=tool.path,
            reported_version=tool.reported_version, pid=m.pid, ports=ports, url=url, log=str(log), start_seconds=elapsed,
            cmd=cmd,
        )

    # ------------------------------------------------------------------------------------------
    def logs(self) -> dict[str, str]:
        out = {}
        for name, m in self.procs:
            try:
                out[name] = redact.redact(m.log.read_text(errors="replace"))
            except OSError:
                out[name] = ""
        return out

    def _stop_restarted(self) -> None:
        """Components a suite restarted (labgate.disrupt) have new pids, recorded in the state file."""
        from labgate.process import stop_pid

        if not (self.stack and self.stack.state_file and Path(self.stack.state_file).exists()):
            return
        try:
            current = Stack.load(self.stack.state_file)
        except StackError:
            return
        for c in reversed(current.components):
            stop_pid(c.pid)

    def down(self) -> None:
        """Stop everything in reverse order, keep redacted logs, remove the run directory. Idempotent."""
        logs = self.logs()
        for name, m in reversed(self.procs):
            m.stop()
            hook = self.after_stop.pop(name, None)
            if hook is not None:
                try:
                    hook()
                except Exception as exc:  # noqa: BLE001 - teardown goes on; the apiserver's data dies with the run dir
                    print(f"labgate: teardown of {name}: {redact.redact(str(exc))}", file=sys.stderr)
        self.procs = []
        self._stop_restarted()
        if logs:
            logdir = self.report_dir / "logs"
            logdir.mkdir(parents=True, exist_ok=True)
            for name, text in logs.items():
                (logdir / f"{name}.log").write_text(text)
        if self._run_dir and self._run_dir.exists():
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None


def check_versions(sc: Scenario) -> None:
    """A scenario may name a component's version; this labgate builds its pinned versions only."""
    comps = sc.components
    wanted = [
        ("registry", comps.registry.kind if comps.registry.kind != "auto" else None, comps.registry.version),
        ("conformance", "oci-conformance", comps.conformance.version),
        ("kubernetes", "kube-apiserver", comps.kubernetes.version if comps.kubernetes else None),
        ("admission", "kyverno", comps.admission.version if comps.admission else None),
        ("signer", "cosign", comps.signer.version if comps.signer else None),
    ]
    for field, tool_name, version in wanted:
        if version is None:
            continue
        if tool_name is None:
            raise StackError(f"{sc.source}: components.registry.version: a version needs an explicit kind (zot or distribution)")
        pin = toolchain.TOOLS[tool_name].version
        if version.lstrip("v") != pin.lstrip("v"):
            raise StackError(
                f"{sc.source}: components.{field}.version: {version} is not available: this labgate pins {tool_name} {pin}",
                fix=f"set it to {pin} or remove it (set {toolchain.TOOLS[tool_name].env} to use another build)",
            )


def _delete_kyverno_webhooks(api) -> None:
    """Kyverno leaves its webhook configurations behind; under failurePolicy Fail they would block
    every later write to the apiserver."""
    from kubernetes import client as kclient

    from labgate.components.kyverno import MANAGED_BY

    adm = kclient.AdmissionregistrationV1Api(api)
    for cfg in adm.list_mutating_webhook_configuration(label_selector=MANAGED_BY).items:
        adm.delete_mutating_webhook_configuration(cfg.metadata.name)
    for cfg in adm.list_validating_webhook_configuration(label_selector=MANAGED_BY).items:
        adm.delete_validating_webhook_configuration(cfg.metadata.name)


def _unavailable(res: toolchain.Resolved) -> toolchain.Resolved:
    raise StackError(f"{res.name}: {res.reason}")


def _port_clash(m: Managed) -> str | None:
    try:
        text = m.log.read_text(errors="replace")
    except OSError:
        return None
    if "address already in use" in text:
        return "its port is already in use by another process (fix: stop that process, or rerun to get new free ports)"
    return None


def stop_stack(stack: Stack) -> None:
    """Stop a stack started by another process (``labgate stack down``)."""
    from labgate.process import stop_pid

    for c in reversed(stack.components):
        stop_pid(c.pid)
        if c.name == "kyverno" and stack.kubeconfig:
            try:
                from kubernetes import config as kconfig

                _delete_kyverno_webhooks(kconfig.new_client_from_config(stack.kubeconfig))
            except Exception as exc:  # noqa: BLE001 - the apiserver's data goes with the run directory anyway
                print(f"labgate: teardown of kyverno: {redact.redact(str(exc))}", file=sys.stderr)
    logdir = Path(stack.report_dir) / "logs"
    for c in stack.components:
        try:
            text = Path(c.log).read_text(errors="replace")
        except OSError:
            continue
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / f"{c.name}.log").write_text(redact.redact(text))
    shutil.rmtree(stack.run_dir, ignore_errors=True)
