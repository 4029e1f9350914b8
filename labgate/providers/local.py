"""The local provider: real component binaries as processes on 127.0.0.1.

Each component gets free ports, its config and data in a private run directory (mode 0700, removed
at teardown: it holds the run's credentials), and its output captured there. Readiness is polled
with a deadline. What does not depend on each other starts at the same time: the registry side
(Pocket ID, then the registry, which reads Pocket ID's discovery document) and the cluster side
(etcd, kube-apiserver, Kyverno's CRDs, Kyverno).

Teardown is a list of steps registered as things are created (labgate.providers.base.Teardown):
every process, Kyverno's webhook configurations, the logs and the run directory. It runs in
reverse on success, failure, exception, SIGINT and SIGTERM, finishes every step whatever one of
them raises, and a further interrupt waits for it. The state file is written as soon as the run
directory exists and after every process start, so that `labgate stack down` and the reaper find
everything a run started even when it was killed half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import requests

from labgate import checkpoint, redact, toolchain
from labgate.abilities import CREDENTIALS, KUBECONFIG, LIFECYCLE, LOGS, PAUSE, Handle, Health
from labgate.components import registry as reg
from labgate.errors import StackError
from labgate.process import Managed, free_port, pid_alive, stop_pid, wait_until
from labgate.providers.base import Teardown, choose_registry, obtain, reading_robot, robot_credentials, suite_tools, tool_ref
from labgate.scenario import Scenario
from labgate.stack import ComponentState, Stack, host_arch, proc_ticks

HEALTH_TIMEOUT = float(os.environ.get("LABGATE_HEALTH_TIMEOUT", "60"))
# the run directory goes to memory (a tmpfs) when it has this much room: a whole e2e run writes
# about 200 MB there (etcd's preallocated files, the registry's blobs, the logs)
RAM_DIR, RAM_MIN_FREE = Path("/dev/shm"), 1 << 30
KUBE_TIMEOUT = 10  # seconds for one Kubernetes API call made by the harness itself


# ----------------------------------------------------------------------------------------------
# health: one function per component, used at start, at restart and by the watcher


def healthy(stack: Stack, c: ComponentState) -> bool:
    """Whether ``c`` answers its health endpoint now (requests errors propagate as OSError)."""
    if c.name == "registry":
        return requests.get(c.url + "/v2/", timeout=2).status_code in (200, 401)
    if c.name == "identity":
        return requests.get(f"http://127.0.0.1:{c.ports['http']}/healthz", timeout=2).status_code in (200, 204)
    if c.name == "etcd":
        r = requests.get(c.url + "/health", timeout=2)
        return r.status_code == 200 and r.json().get("health") == "true"
    if c.name == "kube-apiserver":
        ca = Path(stack.run_dir) / "kubernetes" / "pki" / "ca.crt"
        r = requests.get(c.url + "/readyz", headers={"Authorization": f"Bearer {stack.password('kubernetes:admin-token')}"},
                         verify=str(ca), timeout=3)
        return r.status_code == 200
    if c.name == "kyverno":
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return requests.get(c.url + "/health/readiness", verify=False, timeout=2).status_code == 200
    raise StackError(f"no health check for component {c.name!r}")


def run_dir_parent(ram: Path = RAM_DIR, min_free: int = RAM_MIN_FREE, mounts: Path = Path("/proc/mounts")) -> str | None:
    """Where the local stack makes its run directory: ``LABGATE_RUN_DIR_PARENT`` when set, else in
    memory (``/dev/shm``) when it is a tmpfs with room, else the temp directory (None).

    The registry syncs every blob and link file it writes to disk: on this machine's disk a push
    of a small image took 42 ms, on a tmpfs 22 ms, and the admission suites push hundreds. The
    run's keys and passwords then never reach a disk either."""
    chosen = os.environ.get("LABGATE_RUN_DIR_PARENT", "")
    if chosen:
        if not os.path.isdir(chosen) or not os.access(chosen, os.W_OK):
            raise StackError(f"LABGATE_RUN_DIR_PARENT={chosen}: not a writable directory", fix="create it, or unset it")
        return chosen
    try:
        on_tmpfs = any(line.split()[1:3] == [str(ram), "tmpfs"] for line in mounts.read_text().splitlines())
        free = os.statvfs(ram)
    except OSError:
        return None
    room = free.f_bavail * free.f_frsize >= min_free
    return str(ram) if on_tmpfs and room and os.access(ram, os.W_OK) else None


def _alive(c: ComponentState) -> bool:
    return bool(c.pid) and pid_alive(c.pid) and (not c.started_ticks or proc_ticks(c.pid) == c.started_ticks)


# killed at teardown, not stopped: what they hold dies with the run, and their graceful shutdowns
# wait on open watches and leases (the apiserver a second or more, Kyverno about a second); their
# logs are complete on disk, and Kyverno's webhook configurations are deleted by the harness
KILLED_AT_TEARDOWN = ("kyverno", "kube-apiserver", "etcd")


def _stop_component(c: ComponentState, proc: Managed | None = None) -> None:
    """At teardown: stop (or kill, KILLED_AT_TEARDOWN) the process the state file records for ``c``
    (a test may have restarted it under a new pid) and the one this provider started, if different."""
    graceful = c.name not in KILLED_AT_TEARDOWN
    if proc is not None:
        stop_pid(proc.pid, proc=proc.proc, graceful=graceful)
    if c.pid and (proc is None or c.pid != proc.pid) and _alive(c):
        stop_pid(c.pid, graceful=graceful)


def _delete_kyverno_webhooks(kubeconfig: str) -> None:
    """Kyverno leaves its webhook configurations behind; under failurePolicy Fail they would block
    every later write to the apiserver (and a reused cluster would keep them)."""
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    from labgate.components.kyverno import MANAGED_BY

    adm = kclient.AdmissionregistrationV1Api(kconfig.new_client_from_config(kubeconfig))
    for cfg in adm.list_mutating_webhook_configuration(label_selector=MANAGED_BY, _request_timeout=KUBE_TIMEOUT).items:
        adm.delete_mutating_webhook_configuration(cfg.metadata.name, _request_timeout=KUBE_TIMEOUT)
    for cfg in adm.list_validating_webhook_configuration(label_selector=MANAGED_BY, _request_timeout=KUBE_TIMEOUT).items:
        adm.delete_validating_webhook_configuration(cfg.metadata.name, _request_timeout=KUBE_TIMEOUT)


def _copy_logs(components: list[ComponentState], report_dir: str) -> None:
    logdir = Path(report_dir) / "logs"
    for c in components:
        try:
            text = Path(c.log).read_text(errors="replace")
        except OSError:
            continue
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / f"{c.name}.log").write_text(redact.redact(text))


def _write_teardown_record(report_dir: str, done: list[dict[str, object]]) -> None:
    try:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / "teardown.json").write_text(json.dumps(done, indent=2))
    except OSError:
        pass


def _current(stack: Stack) -> Stack:
    """The state file's view (pids change when a test restarts a component); the given stack when
    the file is gone."""
    try:
        return Stack.load(stack.state_file) if stack.state_file and Path(stack.state_file).exists() else stack
    except StackError:
        return stack


def component_steps(td: Teardown, stack: Stack, name: str, proc: Managed | None = None) -> None:
    """Register the teardown of one component (and, for Kyverno, its webhook configurations, to be
    deleted after it stopped and while the apiserver still answers)."""
    def stop() -> None:
        now = _current(stack)
        try:
            c = now.component(name)
        except KeyError:
            if proc is not None:
                proc.stop()
            return
        _stop_component(c, proc)

    if name == "kyverno":
        td.add("kyverno-webhooks", lambda: _delete_kyverno_webhooks(stack.kubeconfig))
    td.add(f"stop-{name}", stop)


CONTROL_PLANE = ("etcd", "kube-apiserver")


def stop_apps_step(td: Teardown, stack: Stack, procs: dict[str, Managed] | None = None) -> None:
    """Register, to run first, one step that stops every component but the control plane at the
    same time (they do not depend on each other's shutdown); the per-component steps that follow
    find them stopped, and the control plane still answers for Kyverno's webhooks."""
    def stop_all() -> None:
        from concurrent.futures import ThreadPoolExecutor

        comps = [c for c in _current(stack).components if c.name not in CONTROL_PLANE]
        with ThreadPoolExecutor(max_workers=max(1, len(comps))) as pool:
            list(pool.map(lambda c: _stop_component(c, (procs or {}).get(c.name)), comps))

    td.add("stop-components", stop_all)


# ----------------------------------------------------------------------------------------------


class LocalProvider:
    name = "local"

    def __init__(self, scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False, keep: bool = False,
                 sequential: bool = False):
        """``sequential``: one component at a time, nothing in parallel (the benchmark's floor: each
        component's own time to healthy, started alone)."""
        self.sequential = sequential
        self.scenario = scenario
        self.run_id = run_id
        self.report_dir = Path(report_dir)
        self.detached = detached
        self.procs: dict[str, Managed] = {}
        self.teardown = Teardown()
        self.stack: Stack | None = None
        self._run_dir: Path | None = None
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._side: _Side | None = None
        self.arch: str | None = None  # another architecture than the host's, run under qemu-user
        self._upgrade_tools: dict[str, toolchain.Resolved] = {}  # labgate gate: the target's binaries, obtained first

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
        cross = _cross(sc)  # GOARCH builds run under qemu-user (labgate.binfmt)
        self.arch = cross
        if sc.components.kubernetes is not None:
            # the Kubernetes client takes a second to load: let it load while the components start
            from labgate.clients import kube as kube_client

            kube_client.preloading()
        # every binary first: a missing one is one clear error before anything starts
        t0 = time.monotonic()
        kind, reg_tool = choose_registry(sc, cross)
        kube_tools = self._kube_tools(sc, cross)
        toolchain_seconds = round(time.monotonic() - t0, 3)
        if cross:
            from labgate import binfmt

            undo = binfmt.ensure(cross, self.run_id, progress=lambda m: print(m, file=sys.stderr, flush=True))
            if undo is not None:
                self.teardown.add("binfmt", undo)

        self._run_dir = Path(tempfile.mkdtemp(prefix=f"labgate-{self.run_id}-", dir=run_dir_parent()))
        run_dir = self._run_dir
        os.chmod(run_dir, 0o700)
        self.teardown.add("run-dir", lambda: shutil.rmtree(run_dir, ignore_errors=True))
        self.report_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            run_id=self.run_id, scenario=sc.source, scenario_name=sc.name, provider=self.name, arch=arch,
            run_dir=str(run_dir), report_dir=str(self.report_dir), owner_pid=os.getpid(), owner_ticks=proc_ticks(os.getpid()),
            detached=self.detached,
        )
        self.stack = stack
        stack.timings["toolchain"] = toolchain_seconds
        stack.tools = suite_tools(sc)
        self.teardown.add("logs", lambda: _copy_logs(_current(stack).components, str(self.report_dir)))
        robot_credentials(stack, sc)
        registry_port = free_port()
        stack.registry_url = f"http://127.0.0.1:{registry_port}"
        self._save()
        _register_run(stack)

        t0 = time.monotonic()
        if kube_tools and not self.sequential:
            # the cluster side does not wait for the registry side: it needs only the registry's address
            self._side = _Side(lambda: self._cluster_side(stack, kube_tools))
        if sc.components.identity is not None:
            self._start_pocket_id(stack, registry_port if kind == "zot" else None)
        self._start_registry(stack, kind, reg_tool, registry_port)
        if self._side is not None:
            self._side.result()
        elif kube_tools:
            self._cluster_side(stack, kube_tools)
        stack.timings["stack-up"] = round(time.monotonic() - t0, 3)
        stop_apps_step(self.teardown, stack, self.procs)
        self._save()
        checkpoint.reached("stack-ready", state=stack.state_file, pids=[m.pid for m in self.procs.values()], ports=self.ports())
        return stack

    def _save(self) -> None:
        assert self.stack is not None and self._run_dir is not None
        with self._lock:
            self.stack.save(self._run_dir / "state.json")

    def _secret(self, label: str, nbytes: int = 18) -> str:
        """A random secret for this run, registered for redaction and kept in the state file only."""
        assert self.stack is not None
        with self._lock:
            self.stack.credentials[label] = redact.new_secret(label, nbytes)
            return self.stack.credentials[label]

    def ports(self) -> list[int]:
        return [p for c in (self.stack.components if self.stack else []) for p in c.ports.values()]

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _kube_tools(sc: Scenario, arch: str | None) -> dict[str, toolchain.Resolved]:
        comps = sc.components
        names = (["etcd", "kube-apiserver"] if comps.kubernetes is not None else []) + (["kyverno"] if comps.admission is not None else [])
        tools = {}
        for n in names:
            tools[n] = obtain(sc, n, arch=arch)
            if not tools[n].available:
                raise StackError(f"{n}: {tools[n].reason}")
        return tools

    # ------------------------------------------------------------------------------------------
    def _start_pocket_id(self, stack: Stack, zot_port: int | None) -> None:
        """Pocket ID first: zot reads the issuer's discovery document at start-up and exits without it."""
        from labgate.components import pocketid as pid

        assert self._run_dir is not None
        ref = tool_ref(self.scenario, "pocket-id")
        tool = toolchain.resolve(ref, arch=self.arch)
        if not tool.available:
            stack.skipped_components["pocket-id"] = tool.reason
            if os.environ.get(toolchain.spec(ref, self.arch).env):
                raise StackError(f"identity: {tool.reason}")
            return
        d = self._run_dir / "pocket-id"
        d.mkdir(parents=True)
        port, actors = free_port(), free_port()
        app_url = f"http://localhost:{port}"  # its own host name: cookies ignore ports, and zot is 127.0.0.1
        env = pid.env(app_url=app_url, port=port, actors_port=actors, data_dir=str(d), encryption_key=self._secret("pocket-id:encryption-key"))
        self._start("identity", "pocket-id", tool, [tool.path], d / "pocket-id.log", ports={"http": port, "actors": actors},
                    url=app_url, env=env, cwd=d)
        t0 = time.monotonic()
        zot_url = f"http://127.0.0.1:{zot_port}" if zot_port else None
        clients: dict[str, dict] = {}
        rp_redirect = f"http://127.0.0.1:{free_port()}/callback"  # registered, never served: tests read Location
        if zot_url:
            clients[pid.ZOT_CLIENT] = {"callbackURLs": [f"{zot_url}/zot/auth/callback/oidc"], "logoutCallbackURLs": [f"{zot_url}/login"],
                                       "pkceEnabled": False, "skipConsent": True}
        from labgate import mutations

        rp_urls = [rp_redirect.rsplit("/", 1)[0] + "/*"] if mutations.on("redirect-wildcard") else [rp_redirect]
        clients[pid.RP_CLIENT] = {"callbackURLs": rp_urls, "pkceEnabled": False, "skipConsent": False}
        clients[pid.PKCE_CLIENT] = {"callbackURLs": [rp_redirect], "pkceEnabled": True, "skipConsent": True}
        humans = list(self.scenario.identities.humans)
        groups = sorted({g for h in humans for g in h.groups})
        boot = pid.bootstrap(f"http://127.0.0.1:{port}", groups=groups, humans=humans, clients=clients)
        with self._lock:
            stack.timings["pocket-id-bootstrap"] = round(time.monotonic() - t0, 3)
            stack.credentials["pocket-id:api-key"] = boot.api_key
            for cid, secret in boot.clients.items():
                stack.credentials[f"oidc:{cid}"] = secret
            stack.oidc_redirects = {cid: spec["callbackURLs"][0] for cid, spec in clients.items()}
            stack.oidc_redirects[pid.RP_CLIENT] = rp_redirect
            stack.humans = boot.users
            stack.issuer_url = app_url
            stack.capabilities = sorted(set(stack.capabilities) | {"identity", "identity.pocket-id", "identity.write"})

    def _start_registry(self, stack: Stack, kind: str, tool: toolchain.Resolved, port: int) -> None:
        assert self._run_dir is not None
        d = self._run_dir / "registry"
        (d / "data").mkdir(parents=True)
        htpasswd = d / "htpasswd"
        htpasswd.write_text(reg.robots_htpasswd(self.scenario, stack.credentials))
        htpasswd.chmod(0o600)
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
        with self._lock:
            stack.registry_kind = kind
            stack.registry_htpasswd = str(htpasswd)
            stack.capabilities = sorted(set(stack.capabilities) | set(caps) | {"registry.write", "disruptive"})
        self._start("registry", kind, tool, cmd, d / "registry.log", ports={"http": port}, url=stack.registry_url)

    def _cluster_side(self, stack: Stack, tools: dict[str, toolchain.Resolved]) -> None:
        seed = None
        if "kyverno" in tools:
            t0 = time.monotonic()
            seed, built = self._kyverno_seed(tools)
            with self._lock:
                stack.timings["kyverno-seed-build" if built else "kyverno-seed-restore"] = round(time.monotonic() - t0, 3)
        self._start_kubernetes(stack, tools["etcd"], tools["kube-apiserver"], seed=seed)
        if "kyverno" in tools:
            self._start_kyverno(stack, tools["kyverno"])

    def _kyverno_crds(self, tool: toolchain.Resolved) -> Path:
        crds = Path(os.environ.get("KYVERNO_CRDS") or Path(tool.path).parent.parent / "config" / "crds")
        if not crds.is_dir():
            raise StackError(f"kyverno: no CRD directory at {crds}", fix="set KYVERNO_CRDS to the config/crds directory of the kyverno module")
        return crds

    def _kyverno_seed(self, tools: dict[str, toolchain.Resolved]) -> tuple[Path, bool]:
        """An etcd data directory holding Kyverno's namespace and CRDs, made once per (etcd,
        kube-apiserver, Kyverno, CRD digest) and kept in the cache: creating 22 large CRDs is the
        slowest part of a stack start, and what they are does not change between runs."""
        import hashlib

        from labgate.components import kube
        from labgate.components import kyverno as kv

        etcd, api, kyv = tools["etcd"], tools["kube-apiserver"], tools["kyverno"]
        crds = self._kyverno_crds(kyv)
        key = hashlib.sha256("|".join([
            "seed-1", etcd.reported_version or etcd.version, api.reported_version or api.version, kyv.version, kv.crds_digest(crds),
        ]).encode()).hexdigest()[:16]
        seed = toolchain.cache_root() / "seeds" / f"etcd-kyverno-{key}"
        if (seed / "member").is_dir():
            return seed, False
        seed.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=seed.parent))
        self.teardown.add("seed-build-dir", lambda: shutil.rmtree(work, ignore_errors=True))
        pki = kube.generate_pki(work / "pki")
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        token = redact.new_secret("seed-build-token")
        kube.token_file(work / "tokens.csv", token)
        procs: list[Managed] = []
        try:
            e = Managed("seed-etcd", kube.etcd_command(etcd.path, work / "etcd", etcd_port, peer_port), work / "etcd.log").start()
            procs.append(e)
            wait_until(lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=2).status_code == 200, timeout=HEALTH_TIMEOUT,
                       what="etcd for the Kyverno seed", abort=lambda: self._aborted() or e.exited())
            a = Managed("seed-apiserver", kube.apiserver_command(api.path, pki, port=api_port, etcd_port=etcd_port, tokens=work / "tokens.csv",
                                                                cert_dir=work / "certs"), work / "apiserver.log").start()
            procs.append(a)
            url = f"https://127.0.0.1:{api_port}"
            wait_until(lambda: requests.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, verify=str(pki.ca_cert),
                                            timeout=3).status_code == 200,
                       timeout=3 * HEALTH_TIMEOUT, what="kube-apiserver for the Kyverno seed", abort=lambda: self._aborted() or a.exited())
            kc = work / "kubeconfig"
            kc.write_text(kube.kubeconfig(url, pki.ca_cert, token))
            from kubernetes import config as kconfig

            kv.install_crds(kconfig.new_client_from_config(str(kc)), crds, abort=self._aborted)
        finally:
            for m in reversed(procs):
                m.stop()  # SIGTERM: etcd writes what it holds before it exits
        (work / "etcd").rename(seed)
        shutil.rmtree(work, ignore_errors=True)
        return seed, True

    def _start_kubernetes(self, stack: Stack, etcd: toolchain.Resolved, api: toolchain.Resolved, seed: Path | None = None) -> None:
        from labgate.components import kube

        assert self._run_dir is not None
        d = self._run_dir / "kubernetes"
        pki = kube.generate_pki(d / "pki")
        if seed is not None:
            shutil.copytree(seed, d / "etcd")
            (d / "etcd").chmod(0o700)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        cmd = kube.etcd_command(etcd.path, d / "etcd", etcd_port, peer_port, existing=seed is not None)
        self._start("etcd", "etcd", etcd, cmd, d / "etcd.log", ports={"client": etcd_port, "peer": peer_port},
                    url=f"http://127.0.0.1:{etcd_port}")
        token = self._secret("kubernetes:admin-token")
        tokens = d / "tokens.csv"
        kube.token_file(tokens, token)
        url = f"https://127.0.0.1:{api_port}"
        kc = d / "kubeconfig"
        kc.write_text(kube.kubeconfig(url, pki.ca_cert, token))
        kc.chmod(0o600)
        with self._lock:
            stack.kubeconfig = str(kc)
            stack.kube_url = url
        cmd = kube.apiserver_command(api.path, pki, port=api_port, etcd_port=etcd_port, tokens=tokens, cert_dir=d / "certs")
        self._start("kube-apiserver", "kube-apiserver", api, cmd, d / "kube-apiserver.log", ports={"https": api_port}, url=url,
                    timeout=3 * HEALTH_TIMEOUT)
        with self._lock:
            stack.capabilities = sorted(set(stack.capabilities) | {"kubernetes", "cluster.write"})

    def _start_kyverno(self, stack: Stack, tool: toolchain.Resolved) -> None:
        from kubernetes import config as kconfig

        from labgate.components import kyverno as kv

        assert self._run_dir is not None
        sc = self.scenario
        adm = sc.components.admission
        assert adm is not None
        robot = reading_robot(sc)
        if robot is None:
            raise StackError(f"{sc.source}: identities.robots: Kyverno needs a robot to read the registry", fix="declare a read-only robot")
        api = kconfig.new_client_from_config(stack.kubeconfig)
        t0 = time.monotonic()
        # the CRDs came with the seed, established: a ready apiserver serves them (its readiness
        # waits for crd-informer-synced)
        kv.install_secrets(api, registry_host=stack.image_host, robot=robot, password=stack.password(robot), webhook_hosts=["127.0.0.1"])
        with self._lock:
            stack.timings["kyverno-prerequisites"] = round(time.monotonic() - t0, 3)
        port, metrics = free_port(), free_port()
        cmd = kv.command(tool.path, kubeconfig=stack.kubeconfig, webhook_port=port, metrics_port=metrics, cache_ttl=adm.cache_ttl)
        self._start("kyverno", "kyverno", tool, cmd, self._run_dir / "kyverno" / "kyverno.log",
                    ports={"webhook": port, "metrics": metrics}, url=f"https://127.0.0.1:{port}", env=kv.ENV, timeout=3 * HEALTH_TIMEOUT)
        with self._lock:
            stack.capabilities = sorted(set(stack.capabilities) | {"admission", "admission.kyverno"})

    def _aborted(self) -> str | None:
        return "the stack start was interrupted" if self._abort.is_set() else None

    def _start(self, name: str, kind: str, tool: toolchain.Resolved, cmd: list[str], log: Path, *, ports: dict[str, int],
               url: str = "", env: dict[str, str] | None = None, timeout: float = HEALTH_TIMEOUT, cwd: Path | None = None) -> ComponentState:
        assert self.stack is not None
        if self._abort.is_set():
            raise StackError(f"{name}: not started: the stack start was interrupted")
        t0 = time.monotonic()
        m = Managed(name, cmd, log, env=env or {}, cwd=cwd, die_with_parent=not self.detached)
        with self._lock:
            m.start()
            self.procs[name] = m
            state = ComponentState(
                name=name, kind=kind, version=tool.version, source=tool.source, path=tool.path,
                reported_version=tool.reported_version, pid=m.pid, ports=ports, url=url, log=str(log), cmd=cmd,
                env=env or {}, cwd=str(cwd or ""), started_ticks=proc_ticks(m.pid),
            )
            self.stack.components.append(state)
            component_steps(self.teardown, self.stack, name, m)
            self._save()
        checkpoint.reached(f"component-started-{name}", pid=m.pid, ports=list(ports.values()))
        wait_until(lambda: healthy(self.stack, state), timeout=timeout, what=f"{name} ({kind}) at {url or ports}",
                   abort=lambda: self._aborted() or _port_clash(m) or m.exited())
        state.start_seconds = round(time.monotonic() - t0, 3)
        with self._lock:
            self.stack.timings[f"start:{name}"] = state.start_seconds
        return state

    # ------------------------------------------------------------------------------------------
    # the gate (labgate.gate): upgrade in place

    def _tools_for(self, sc: Scenario) -> dict[str, toolchain.Resolved]:
        _, reg_tool = choose_registry(sc, _cross(sc))
        return {"registry": reg_tool, **self._kube_tools(sc, _cross(sc))}

    def prepare_upgrade(self, to: Scenario) -> None:
        """Every binary ``to`` needs, obtained before the baseline starts (one clear error, nothing started)."""
        self._upgrade_tools = self._tools_for(to)

    def upgrade(self, to: Scenario, progress=lambda m: None) -> list[dict[str, object]]:
        """Each component whose binary differs in ``to`` is stopped, swapped, its config re-rendered
        from ``to`` and started again on its ports with its data kept, in dependency order (registry,
        etcd, kube-apiserver, Kyverno, whose new CRDs are applied server-side before it starts)."""
        assert self.stack is not None
        tools = self._upgrade_tools or self._tools_for(to)
        stack, handle = self.stack, LocalHandle(self.stack)
        done: list[dict[str, object]] = []
        changed = []
        for name in ("registry", "etcd", "kube-apiserver", "kyverno"):
            new = tools.get(name)
            try:
                c = _current(stack).component(name)
            except KeyError:
                continue
            if new is not None and (new.path != c.path or new.version != c.version):
                changed.append((name, c, new))
        control_plane = any(n in CONTROL_PLANE for n, _, _ in changed) and any(c.name == "kyverno" for c in _current(stack).components)
        with contextlib.ExitStack() as supervision:
            if control_plane:
                # Kyverno exits when it loses the apiserver (its leader election); a kubelet would start it again
                supervision.enter_context(handle.supervised("kyverno", "a leader-elected controller exits when it cannot renew its lease while the control plane is swapped, and is restarted"))
            for name, c, new in changed:
                if name == "kyverno" and control_plane:
                    supervision.close()  # the supervisor's restarts end before Kyverno itself is swapped
                done.append(self._swap(stack, handle, to, name, c, new, progress))
                if name == "kube-apiserver" and control_plane:
                    from kubernetes import config as kconfig

                    from labgate.components import kyverno as kv

                    kv.wait_leases_renewed(kconfig.new_client_from_config(stack.kubeconfig), time.time(), timeout=3 * HEALTH_TIMEOUT)
        self.scenario = to

        def retarget(st: Stack) -> None:
            st.scenario, st.scenario_name, st.tools = to.source, to.name, suite_tools(to)

        Stack.update(stack.state_file, retarget)
        retarget(stack)
        return done

    def _swap(self, stack: Stack, handle: "LocalHandle", to: Scenario, name: str, c: ComponentState, new: toolchain.Resolved,
              progress) -> dict[str, object]:
        """One component stopped, its binary swapped, its config rendered from ``to``, started again."""
        t0 = time.monotonic()
        progress(f"upgrade {name}: {c.reported_version or c.version} -> {new.reported_version or new.version}")
        cmd = [new.path, *c.cmd[1:]]
        if name == "kyverno":
            from kubernetes import config as kconfig

            from labgate.components import kyverno as kv

            adm = to.components.admission
            assert adm is not None
            cmd = kv.command(new.path, kubeconfig=stack.kubeconfig, webhook_port=c.ports["webhook"], metrics_port=c.ports["metrics"],
                             cache_ttl=adm.cache_ttl)
            # the new CRDs first, while the old Kyverno still serves (helm's order: CRDs, then the release)
            kv.apply_crds(kconfig.new_client_from_config(stack.kubeconfig), self._kyverno_crds(new), abort=self._aborted)
        handle.stop(name)
        if name == "registry":
            self._render_registry_config(stack, to, c)
        handle._mark(name, cmd=cmd, path=new.path, version=new.version, reported_version=new.reported_version, source=new.source)
        handle.start(name, timeout=3 * HEALTH_TIMEOUT)
        return {"component": name, "from": c.version, "to": new.version, "reported": new.reported_version,
                "seconds": round(time.monotonic() - t0, 2)}

    def _render_registry_config(self, stack: Stack, sc: Scenario, c: ComponentState) -> None:
        """The registry's config file rendered again, from ``sc``, at the path its command names."""
        cfg = Path(c.cmd[-1])
        d = cfg.parent
        port = c.ports["http"]
        if stack.registry_kind == "zot":
            doc = json.loads(cfg.read_text())
            oidc = {}
            if (d / "oidc-credentials.json").exists():
                oidc = {"issuer": stack.issuer_url, "oidc_credentials_path": str(d / "oidc-credentials.json"),
                        "session_keys_path": str(d / "session-keys.json")}
            cfg.write_text(reg.dumps(reg.render_zot_config(sc, address="127.0.0.1", port=port, root_dir=doc["storage"]["rootDirectory"],
                                                           htpasswd_path=stack.registry_htpasswd, **oidc)))
        else:
            cfg.write_text(reg.render_distribution_config(sc, address="127.0.0.1", port=port, root_dir=str(d / "data"),
                                                          htpasswd_path=stack.registry_htpasswd,
                                                          http_secret=stack.password("registry:http-secret")))

    # ------------------------------------------------------------------------------------------
    def logs(self) -> dict[str, str]:
        out = {}
        for name, m in self.procs.items():
            try:
                out[name] = redact.redact(m.log.read_text(errors="replace"))
            except OSError:
                out[name] = ""
        return out

    def exit_status(self, name: str, pid: int) -> str | None:
        """How the process this provider started for ``name`` ended ("exited (signal 9)"), when
        ``pid`` is that process; None when it is still running or not ours."""
        m = self.procs.get(name)
        if m is None or m.pid != pid or m.proc is None:
            return None
        code = m.proc.poll()
        if code is None:
            return None
        return f"exited (signal {-code})" if code < 0 else f"exited with code {code}"

    def down(self) -> None:
        """Every teardown step, in reverse order, each once, whatever is raised. Idempotent."""
        self._abort.set()
        side = self._side
        if side is not None:
            side.finished(timeout=60)  # the cluster side stops at its next check, then registers nothing more
        done = self.teardown.run()
        if side is not None:
            side.release()
        if done:
            _write_teardown_record(str(self.report_dir), done)
        if self.stack is not None:
            _unregister_run(self.stack.run_id)
        self._run_dir = None


class _Side:
    """A start-up chain run beside the main one, in a thread that lives until teardown: the
    processes it starts die with the thread that started them (PR_SET_PDEATHSIG is per thread), so
    the thread must outlive them."""

    def __init__(self, fn):
        self._done = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._value = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name="labgate-cluster-side", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by result()
            self._error = exc
        finally:
            self._done.set()
        self._release.wait()

    def result(self):
        """What the chain returned, once it has finished (its exception, raised here)."""
        while not self._done.wait(0.1):  # in small steps: Ctrl-C reaches the main thread at once
            pass
        if self._error is not None:
            raise self._error
        return self._value

    def finished(self, timeout: float) -> None:
        self._done.wait(timeout)

    def release(self) -> None:
        self._release.set()


# ----------------------------------------------------------------------------------------------
# the local provider's abilities, for any process attached to the stack


class LocalHandle(Handle):
    provider = "local"
    abilities = frozenset({LIFECYCLE, PAUSE, CREDENTIALS, LOGS, KUBECONFIG})

    def _state(self) -> Stack:
        return Stack.load(self.stack.state_file)

    def _mark(self, name: str, **changes: object) -> Stack:
        def change(st: Stack) -> None:
            c = st.component(name)
            for k, v in changes.items():
                setattr(c, k, v)

        st = Stack.update(self.stack.state_file, change)
        mine = self.stack.component(name)
        for k, v in changes.items():
            setattr(mine, k, v)
        return st

    def stop(self, component: str, crash: bool = False) -> None:
        c = self._mark(component, planned="stopped").component(component)
        if _alive(c):
            stop_pid(c.pid, graceful=not crash)
        with contextlib.suppress(OSError):
            if healthy(self.stack, c):
                raise StackError(f"{component} still answers at {c.url} after it was stopped")

    def start(self, component: str, timeout: float = 90.0) -> None:
        self._start_process(component, timeout)
        self._mark(component, planned="")

    def _start_process(self, component: str, timeout: float = 90.0) -> None:
        c = self._state().component(component)
        if not c.cmd:
            raise StackError(f"{component}: its start command is not recorded; it cannot be restarted")
        if _alive(c):
            raise StackError(f"{component}: already running (pid {c.pid})")
        # not tied to this process: `labgate stack down` (or the owner's teardown) stops it by pid
        m = Managed(component, c.cmd, Path(c.log), env=c.env, cwd=Path(c.cwd) if c.cwd else None, die_with_parent=False).start()
        self._mark(component, pid=m.pid, started_ticks=proc_ticks(m.pid))
        c.pid = m.pid
        wait_until(lambda: healthy(self.stack, c), timeout=timeout, what=f"{component} restart", abort=m.exited)

    def pause(self, component: str) -> None:
        c = self._mark(component, planned="paused").component(component)
        _signal_group(c.pid, signal.SIGSTOP)

    def resume(self, component: str) -> None:
        c = self._state().component(component)
        _signal_group(c.pid, signal.SIGCONT)
        self._mark(component, planned="")

    @contextlib.contextmanager
    def revoked(self, account: str, *, how: str = "replace") -> Iterator[None]:
        """Remove ``account`` from the registry's htpasswd file for the duration, then restore it.

        ``how``: "in-place" rewrites the file (what an editor or `htpasswd -D` does); "replace"
        writes a new file and renames it over the old one (what Kubernetes does when a mounted
        Secret changes)."""
        path = Path(self.stack.registry_htpasswd)
        if not self.stack.registry_htpasswd or not path.exists():
            raise StackError("this stack records no htpasswd file for its registry")
        original = path.read_text()
        kept = "".join(ln for ln in original.splitlines(keepends=True) if not ln.startswith(f"{account}:"))
        if kept == original:
            raise StackError(f"{account} has no line in the registry's htpasswd file")

        def write(text: str) -> None:
            if how == "replace":
                tmp = path.with_name(path.name + ".new")
                tmp.write_text(text)
                tmp.chmod(0o600)
                tmp.replace(path)
            else:
                with open(path, "r+") as fh:
                    fh.seek(0)
                    fh.write(text)
                    fh.truncate()

        write(kept)
        try:
            yield
        finally:
            write(original)

    def logs(self, component: str) -> str:
        try:
            return redact.redact(Path(self._state().component(component).log).read_text(errors="replace"))
        except OSError:
            return ""

    def health(self) -> dict[str, Health]:
        out: dict[str, Health] = {}
        try:
            st = self._state()
        except StackError:
            return out
        dead = []
        for c in st.components:
            if c.planned:
                continue  # a test stopped or paused it on purpose
            if _alive(c):
                out[c.name] = Health(True)
            else:
                dead.append(c.name)
        if dead:
            # a test marks a component planned before it stops it: read again, so that a stop that
            # happened between the two reads is not taken for a death
            try:
                again = {c.name: c for c in self._state().components}
            except StackError:
                return out
            for name in dead:
                c = again.get(name)
                if c is not None and not c.planned and not _alive(c):
                    out[name] = Health(False, "exited")
        return out

    @contextlib.contextmanager
    def supervised(self, component: str, why: str) -> Iterator[list[float]]:
        """While the block runs, ``component`` may exit (``why`` says why that is its documented
        behaviour) and is started again at once, as a kubelet restarts a container; yields the
        times it had to be restarted. It is running when the block ends."""
        restarts: list[float] = []
        stop = threading.Event()
        self._mark(component, planned=f"supervised: {why}")

        def watch() -> None:
            while not stop.wait(0.25):
                c = self._state().component(component)
                if not _alive(c):
                    restarts.append(time.time())
                    with contextlib.suppress(StackError):
                        self._start_process(component)

        t = threading.Thread(target=watch, name=f"labgate-supervise-{component}", daemon=True)
        t.start()
        try:
            yield restarts
        finally:
            stop.set()
            t.join(timeout=120)
            c = self._state().component(component)
            if not _alive(c):
                restarts.append(time.time())
                self._start_process(component)
            self._mark(component, planned="")

    # ------------------------------------------------------------------------------------------
    def teardown(self) -> list[dict[str, object]]:
        """Stop a stack another process started (`labgate stack down`, the reaper)."""
        st = _current(self.stack)
        td = Teardown()
        run_dir = st.run_dir
        td.add("run-dir", lambda: shutil.rmtree(run_dir, ignore_errors=True))
        td.add("logs", lambda: _copy_logs(_current(st).components, st.report_dir))
        for c in st.components:
            component_steps(td, st, c.name)
        stop_apps_step(td, st)
        done = td.run()
        _write_teardown_record(st.report_dir, done)
        _unregister_run(st.run_id)
        return done


def _cross(sc: Scenario) -> str | None:
    """The scenario's architecture when it is not the host's (its binaries run under qemu-user)."""
    arch = host_arch() if sc.arch == "auto" else sc.arch
    return arch if arch != host_arch() else None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ----------------------------------------------------------------------------------------------
# the runs index (the reaper reads it): cache_root()/runs/<run-id>.json -> the state file


def _runs_dir() -> Path:
    return toolchain.cache_root() / "runs"


def _register_run(stack: Stack) -> None:
    d = _runs_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stack.run_id}.json").write_text(json.dumps({
        "run_id": stack.run_id, "provider": stack.provider, "state_file": stack.state_file, "run_dir": stack.run_dir,
        "owner_pid": stack.owner_pid, "owner_ticks": stack.owner_ticks, "detached": stack.detached,
        "report_dir": stack.report_dir,
    }))


def _unregister_run(run_id: str) -> None:
    with contextlib.suppress(OSError):
        (_runs_dir() / f"{run_id}.json").unlink()


def _port_clash(m: Managed) -> str | None:
    try:
        text = m.log.read_text(errors="replace")
    except OSError:
        return None
    if "address already in use" in text:
        return "its port is already in use by another process (fix: stop that process, or rerun to get new free ports)"
    return None


def stop_stack(stack: Stack) -> list[dict[str, object]]:
    """Stop a stack started by another process (``labgate stack down``)."""
    return LocalHandle(stack).teardown()


__all__ = ["LocalProvider", "LocalHandle", "healthy", "stop_stack"]
