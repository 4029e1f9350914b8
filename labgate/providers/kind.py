"""The kind provider: a real Kubernetes cluster in Docker, built and installed offline.

1. Docker: the user's when ``docker info`` answers, else Debian's dockerd started for the run
   (labgate.kind.engine).
2. The node image: assembled here from Debian and Go-built Kubernetes (labgate.kind.nodeimage),
   cached by (Kubernetes version, kind version); or kind's upstream kindest/node by digest.
3. The cluster, named after the run, its kubeconfig in the run directory (the user's kubeconfig and
   current context are never touched), one node; containerd on it reaches the in-cluster registry
   by a fixed Service address; the harness reaches the registry and Pocket ID through ports on
   127.0.0.1.
4. Images of the components, made here from the binaries the toolchain has, loaded with
   ``kind load``; the registry and Pocket ID installed with labgate's chart (charts/labgate) mounting
   exactly the configurations the renderers produce; Kyverno from its real chart, its CRDs applied
   server-side first.

Names the cluster resolves and the harness reaches alike: a pod's image reference names the
registry ``registry.labgate:5000`` (the Service ``registry`` in namespace ``labgate``, which
Kyverno's pod resolves through cluster DNS and the node's containerd through its hosts directory);
the issuer is ``http://pocket-id.labgate:1411`` for zot and, through labgate.hostalias, for the
harness's browser.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import requests
import yaml

from labgate import checkpoint, redact, toolchain
from labgate.abilities import CREDENTIALS, KUBECONFIG, LIFECYCLE, LOGS, AbilityMissing, Handle, Health
from labgate.components import registry as reg
from labgate.errors import StackError
from labgate.kind import charts, engine as engines, nodeimage
from labgate.process import free_port, kube_retry, wait_until
from labgate.providers.base import Teardown, choose_registry, obtain, reading_robot, robot_credentials, suite_tools, tool_ref
from labgate.providers.local import _register_run, _Side, _unregister_run, _write_teardown_record
from labgate.scenario import KindSettings, Scenario
from labgate.stack import ComponentState, Stack, host_arch, proc_ticks

NAMESPACE = "labgate"
REGISTRY_NAME = f"registry.{NAMESPACE}"
REGISTRY_PORT = 5000
REGISTRY_CLUSTER_IP = "10.96.0.50"
REGISTRY_NODE_PORT = 30500
ISSUER_NAME = f"pocket-id.{NAMESPACE}"
ISSUER_PORT = 1411
ISSUER_NODE_PORT = 30511
PULL_SECRET = "labgate-registry"
# component -> (namespace, Deployment)
DEPLOYMENTS = {
    "registry": (NAMESPACE, "registry"),
    "identity": (NAMESPACE, "pocket-id"),
    "kyverno": ("kyverno", "kyverno-admission-controller"),
    "kyverno-background": ("kyverno", "kyverno-background-controller"),
    "kyverno-cleanup": ("kyverno", "kyverno-cleanup-controller"),
    "kyverno-reports": ("kyverno", "kyverno-reports-controller"),
}
KYVERNO_BINARIES = ("kyverno", "kyverno-init", "background-controller", "cleanup-controller", "reports-controller")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cluster_name(run_id: str) -> str:
    return "labgate-" + run_id.split("-", 1)[-1].lower()[:30].strip("-")


def bare_kind_config() -> dict[str, Any]:
    """What any cluster from the built node image needs: one node, no kindnetd (the node image has
    a bridge CNI), kubelet allowed on cgroup v1."""
    return {
        "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": {"disableDefaultCNI": True, "kubeProxyMode": "iptables"},
        "kubeadmConfigPatches": ["kind: KubeletConfiguration\nfailCgroupV1: false\n"],
        "nodes": [{"role": "control-plane"}],
    }


def kind_config(*, registry_host_port: int, issuer_host_port: int | None, certs_d: Path) -> dict[str, Any]:
    """The bare configuration, plus the registry's and Pocket ID's NodePorts mapped to 127.0.0.1
    and the registry hosts directory mounted."""
    ports = [{"containerPort": REGISTRY_NODE_PORT, "hostPort": registry_host_port, "listenAddress": "127.0.0.1"}]
    if issuer_host_port:
        ports.append({"containerPort": ISSUER_NODE_PORT, "hostPort": issuer_host_port, "listenAddress": "127.0.0.1"})
    cfg = bare_kind_config()
    cfg["nodes"][0].update(extraPortMappings=ports,
                           extraMounts=[{"hostPath": str(certs_d), "containerPath": nodeimage.CERTS_D, "readOnly": True}])
    return cfg


def registry_hosts(certs_d: Path) -> None:
    """containerd's hosts directory: pulls of registry.labgate:5000 go to the Service's address, over http."""
    d = certs_d / f"{REGISTRY_NAME}:{REGISTRY_PORT}"
    d.mkdir(parents=True, exist_ok=True)
    url = f"http://{REGISTRY_CLUSTER_IP}:{REGISTRY_PORT}"
    (d / "hosts.toml").write_text(f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n')


def _digest_tag(version: str, path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{version.lstrip('v')}-{h.hexdigest()[:10]}"


def component_image(eng: engines.Engine, repo: str, version: str, binary: str, name: str) -> str:
    """An image holding one static binary at /<name> as its entrypoint, tagged by version and content."""
    ref = f"{repo}:{_digest_tag(version, binary)}"
    if not eng.has_image(ref):
        nodeimage.single_binary(eng, ref, binary, f"/{name}", entrypoint=[f"/{name}"])
    return ref


class KindProvider:
    name = "kind"

    def __init__(self, scenario: Scenario, *, run_id: str, report_dir: str, detached: bool = False, keep: bool = False):
        self.scenario = scenario
        self.settings = scenario.kind or KindSettings()
        self.run_id = run_id
        self.report_dir = Path(report_dir)
        self.detached = detached
        self.keep = keep or self.settings.keep
        self.teardown = Teardown()
        self.stack: Stack | None = None
        self.engine: engines.Engine | None = None
        self._run_dir: Path | None = None
        self._registry_values: dict[str, Any] = {}  # labgate's chart values for the registry release, for an upgrade
        self._upgrade_tools: dict[str, toolchain.Resolved] | None = None

    # ------------------------------------------------------------------------------------------
    def up(self) -> Stack:
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _tool(self, name: str) -> toolchain.Resolved:
        t = toolchain.install(name)
        if not t.available:
            raise StackError(f"kind: {name}: {t.reason}")
        return t

    def _timed(self, key: str, t0: float) -> None:
        assert self.stack is not None
        self.stack.timings[key] = round(time.monotonic() - t0, 3)

    def _up(self) -> Stack:
        sc = self.scenario
        arch = host_arch() if sc.arch == "auto" else sc.arch
        if host_arch() != "amd64":
            raise StackError(f"{sc.source}: provider: kind here builds amd64 nodes only (this host is {host_arch()})")
        if tool_ref(sc, "kube-node") != "kube-node":
            raise StackError(f"{sc.source}: components.kubernetes.version: {sc.components.kubernetes.version}: a kind node image here "
                             f"carries the etcd and CoreDNS its kubeadm lists, prepared for {toolchain.TOOLS['kube-node'].version} only",
                             fix=f"remove it, or set it to {toolchain.TOOLS['kube-node'].version} (another Kubernetes version runs on the local provider)")
        t0 = time.monotonic()
        kind_tool = self._cluster_tool()
        helm = self._tool("helm")
        kube = self._tool("kube-node")
        kyv = obtain(sc, "kyverno-images") if sc.components.admission is not None else None
        if kyv is not None and not kyv.available:
            raise StackError(f"kind: kyverno-images: {kyv.reason}")
        reg_kind, reg_tool = self._registry_tool()
        pid_tool = toolchain.resolve(tool_ref(sc, "pocket-id")) if sc.components.identity is not None else None
        if pid_tool is not None and not pid_tool.available and os.environ.get(toolchain.TOOLS["pocket-id"].env):
            raise StackError(f"identity: {pid_tool.reason}")
        toolchain_seconds = round(time.monotonic() - t0, 3)

        run_dir = Path(tempfile.mkdtemp(prefix=f"labgate-{self.run_id}-"))
        self._run_dir = run_dir
        os.chmod(run_dir, 0o700)
        self.teardown.add("run-dir", lambda: shutil.rmtree(run_dir, ignore_errors=True))
        self.report_dir.mkdir(parents=True, exist_ok=True)
        name = self.settings.cluster or cluster_name(self.run_id)
        stack = Stack(run_id=self.run_id, scenario=sc.source, scenario_name=sc.name, provider=self.name, arch=arch,
                      run_dir=str(run_dir), report_dir=str(self.report_dir), owner_pid=os.getpid(), owner_ticks=proc_ticks(os.getpid()),
                      detached=self.detached, cluster=name)
        self.stack = stack
        stack.timings["toolchain"] = toolchain_seconds
        stack.tools = suite_tools(sc)
        if pid_tool is not None and not pid_tool.available:
            stack.skipped_components["pocket-id"] = pid_tool.reason
        robot_credentials(stack, sc)
        self._save()
        _register_run(stack)

        t0 = t_up = time.monotonic()
        eng = engines.ensure(_say)
        self.engine = eng
        stack.provider_data["engine"] = {"host": eng.host, "owned": eng.owned, "pid": eng.pid, "ticks": eng.ticks, "version": eng.version}
        self._save()
        if eng.owned:
            self.teardown.add("dockerd", lambda: engines.stop_owned(eng) if not self.keep else None)
        self._timed("docker-engine", t0)

        node = self._node(eng, kind_tool, kube)
        stack.provider_data["node_image"] = node
        stack.provider_data["reused"] = bool(self.settings.cluster)

        t0 = time.monotonic()
        images = self._component_images(eng, reg_kind, reg_tool, pid_tool, kyv)
        self._timed("component-images", t0)
        preloaded = self._preloaded(eng, node, images)
        if preloaded:
            node = stack.provider_data["node_image"] = preloaded

        registry_port = free_port()
        issuer_port = free_port() if pid_tool is not None and pid_tool.available else None
        certs_d = run_dir / "certs.d"
        registry_hosts(certs_d)
        kubeconfig = run_dir / "kubeconfig"
        stack.kubeconfig = str(kubeconfig)
        self.teardown.add("cluster", lambda: self._delete_cluster(kind_tool.path, name))
        self.teardown.add("logs", self._copy_logs)  # runs before the cluster goes
        self._create_cluster(kind_tool.path, name, node, self._cluster_config(registry_port, issuer_port, certs_d), kubeconfig)
        # Kyverno's CRDs need only the API: created while the node gets Ready and the registry installs
        crds = _Side(lambda: self._kyverno_crds(stack, helm.path, kube, kyv)) if kyv is not None else None
        self._wait_cluster(name)
        stack.capabilities = ["kubernetes", "cluster.write", "cluster.nodes"]
        self._save()

        if not preloaded:
            t0 = time.monotonic()
            self._load(kind_tool.path, name, list(images.values()))
            self._timed("image-load", t0)

        api = _api(stack)
        from kubernetes import client as kclient

        core = kclient.CoreV1Api(api)
        for ns in (NAMESPACE, "kyverno"):
            core.create_namespace(kclient.V1Namespace(metadata=kclient.V1ObjectMeta(name=ns)))
        stack.registry_url = f"http://127.0.0.1:{registry_port}"
        stack.registry_ref_host = f"{REGISTRY_NAME}:{REGISTRY_PORT}"
        # Kyverno's release does not wait for the registry (its images are on the node; it reads
        # signatures only when a pod is admitted): installed beside Pocket ID and the registry
        kyverno = _Side(lambda: self._install_kyverno(stack, helm.path, crds, images)) if crds is not None else None
        try:
            if issuer_port:
                self._install_pocket_id(stack, helm.path, images["identity"], issuer_port, registry_port if reg_kind == "zot" else None)
            self._install_registry(stack, helm.path, reg_kind, reg_tool, images["registry"])
        finally:
            if kyverno is not None:
                kyverno.release()
        if kyverno is not None:
            self._kyverno_installed(stack, kyv, images, kyverno.result())
        stack.components.append(ComponentState(name="kubernetes", kind="kind", version=kube.version, source=kube.source,
                                               path=node, reported_version=kube.reported_version, url=_api_url(stack)))
        stack.timings["stack-up"] = round(time.monotonic() - t_up, 3)  # the wall time: some phases run side by side
        self._save()
        checkpoint.reached("stack-ready", state=stack.state_file, cluster=name, pids=[], ports=[registry_port] + ([issuer_port] if issuer_port else []))
        return stack

    # ------------------------------------------------------------------------------------------
    def _save(self) -> None:
        assert self.stack is not None and self._run_dir is not None
        self.stack.save(self._run_dir / "state.json")

    def _registry_tool(self) -> tuple[str, toolchain.Resolved]:
        kind, tool = choose_registry(self.scenario)
        if tool.source == "apt":
            raise StackError("registry: the kind provider needs a static distribution binary, not Debian's docker-registry",
                             fix="labgate tools install distribution (go install), or set DISTRIBUTION_BIN")
        return kind, tool

    def _node_binaries(self, kube: toolchain.Resolved) -> dict[str, str]:
        d = Path(kube.path).parent
        bins = {b: str(d / b) for b in ("kubeadm", "kubelet", "kubectl", "kube-controller-manager", "kube-scheduler", "kube-proxy")}
        bins["kube-apiserver"] = self._tool("kube-apiserver").path
        bins["etcd"] = self._tool("etcd-node").path
        bins["coredns"] = self._tool("coredns").path
        return bins

    def _component_images(self, eng, reg_kind: str, reg_tool, pid_tool, kyv) -> dict[str, str]:
        images = {"registry": component_image(eng, f"labgate/{reg_kind}", reg_tool.version, reg_tool.path, "registry")}
        if pid_tool is not None and pid_tool.available:
            images["identity"] = component_image(eng, "labgate/pocket-id", pid_tool.version, pid_tool.path, "pocket-id")
        if kyv is not None:
            d = Path(kyv.path).parent
            for b in KYVERNO_BINARIES:
                images[b] = component_image(eng, f"labgate/{b}", kyv.version, str(d / b), b)
        return images

    # the cluster tool's part (labgate.providers.k3d overrides these) ---------------------------
    def _cluster_tool(self) -> toolchain.Resolved:
        return self._tool("kind")

    def _node(self, eng: engines.Engine, kind_tool: toolchain.Resolved, kube: toolchain.Resolved) -> str:
        assert self.stack is not None
        t0 = time.monotonic()
        if self.settings.node_image == "upstream":
            return self.settings.image or _kind_default_image(kind_tool.version)
        node, built = nodeimage.build(eng, kube_version=kube.version, kind_version=kind_tool.version, bins=self._node_binaries(kube),
                                      busybox=self._tool("busybox").path, progress=_say)
        self.stack.timings["node-image-build" if built else "node-image-reuse"] = round(time.monotonic() - t0, 3)
        return node

    def _preloaded(self, eng: engines.Engine, node: str, images: dict[str, str]) -> str | None:
        """The node image with the component images already in its containerd (cached; a cluster
        made from it needs no ``kind load``), or None where they are loaded after the cluster is
        made: a reused cluster (its node exists), kind's upstream node image."""
        if self.settings.cluster or self.settings.node_image == "upstream":
            return None
        assert self.stack is not None
        t0 = time.monotonic()
        ref, built = nodeimage.with_images(eng, node, list(images.values()), progress=_say)
        self.stack.timings["node-image-preload" if built else "node-image-preload-reuse"] = round(time.monotonic() - t0, 3)
        return ref

    def _cluster_config(self, registry_port: int, issuer_port: int | None, certs_d: Path) -> dict:
        return kind_config(registry_host_port=registry_port, issuer_host_port=issuer_port, certs_d=certs_d)

    def _load(self, tool: str, name: str, images: list[str]) -> None:
        assert self.engine is not None
        _run([tool, "load", "docker-image", *images, "--name", name], "kind load docker-image", env=self.engine.env(), timeout=900)

    def _create_cluster(self, kind: str, name: str, node: str, config: dict, kubeconfig: Path) -> None:
        assert self.stack is not None and self.engine is not None
        cfg = kubeconfig.with_name("kind-config.yaml")
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        t0 = time.monotonic()
        if self.settings.cluster:
            _say(f"[kind] reusing cluster {name}")
            out = _run([kind, "get", "kubeconfig", "--name", name], f"kind get kubeconfig --name {name}", env=self.engine.env())
            kubeconfig.write_text(out.stdout.decode())
        else:
            _say(f"[kind] creating cluster {name} from {node}")
            _run([kind, "create", "cluster", "--name", name, "--image", node, "--config", str(cfg), "--kubeconfig", str(kubeconfig),
                  "--wait", "0s"], "kind create cluster", env=self.engine.env(), timeout=600)
        kubeconfig.chmod(0o600)
        self._timed("cluster-create", t0)

    def _wait_cluster(self, name: str) -> None:
        assert self.stack is not None
        t0 = time.monotonic()
        from kubernetes import client as kclient

        api = _api(self.stack)
        core = kclient.CoreV1Api(api)

        def ready() -> bool:
            nodes = core.list_node().items
            return bool(nodes) and all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)

        wait_until(ready, timeout=180, what=f"kind cluster {name}: node Ready", interval=0.5, retry_on=kube_retry())
        # right after create, pods are refused until the default service account exists
        wait_until(lambda: core.read_namespaced_service_account("default", "default"), timeout=120,
                   what="the default service account", interval=0.5, retry_on=kube_retry())
        self._timed("cluster-ready", t0)

    def _delete_cluster(self, kind: str, name: str) -> None:
        if self.keep:
            _say(f"labgate: kept kind cluster {name}: attach with `KUBECONFIG={self.stack.kubeconfig if self.stack else '?'} kubectl get pods -A` "
                 f"(copy the kubeconfig first: the run directory is removed); delete with `kind delete cluster --name {name}`"
                 + (f" (DOCKER_HOST={self.engine.host})" if self.engine and self.engine.host else ""))
            return
        if self.settings.cluster:
            self._uninstall(name)
            return
        env = self.engine.env() if self.engine else {}
        _run([kind, "delete", "cluster", "--name", name], "kind delete cluster", env=env, timeout=300)

    def _uninstall(self, name: str) -> None:
        """A reused cluster keeps existing; what labgate installed in it goes."""
        from kubernetes import client as kclient

        assert self.stack is not None
        api = _api(self.stack)
        helm = toolchain.resolve("helm")
        for rel, ns in (("kyverno", "kyverno"), ("labgate-registry", NAMESPACE), ("labgate-identity", NAMESPACE)):
            subprocess.run([helm.path, "uninstall", rel, "-n", ns, "--kubeconfig", self.stack.kubeconfig, "--wait"], capture_output=True, timeout=300)
        from labgate.providers.local import _delete_kyverno_webhooks

        with contextlib.suppress(Exception):
            _delete_kyverno_webhooks(self.stack.kubeconfig)
        core = kclient.CoreV1Api(api)
        for ns in (NAMESPACE, "kyverno"):
            with contextlib.suppress(Exception):
                core.delete_namespace(ns)

    # ------------------------------------------------------------------------------------------
    def _helm(self, helm: str, release: str, chart: Path, namespace: str, values: dict, timeout: str = "10m") -> None:
        assert self._run_dir is not None and self.stack is not None
        vf = self._run_dir / f"values-{release}.yaml"
        fd = os.open(vf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the values hold credentials
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(values, fh, sort_keys=False)
        _run([helm, "upgrade", "--install", release, str(chart), "-n", namespace, "--kubeconfig", self.stack.kubeconfig,
              "-f", str(vf), "--wait", "--timeout", timeout], f"helm install {release}", timeout=900)

    def _install_pocket_id(self, stack: Stack, helm: str, image: str, host_port: int, zot_port: int | None) -> None:
        from labgate import hostalias
        from labgate.components import pocketid as pid

        t0 = time.monotonic()
        issuer = f"http://{ISSUER_NAME}:{ISSUER_PORT}"
        stack.host_aliases[f"{ISSUER_NAME}:{ISSUER_PORT}"] = f"127.0.0.1:{host_port}"
        hostalias.install(stack.host_aliases)
        key = redact.new_secret("pocket-id:encryption-key")
        stack.credentials["pocket-id:encryption-key"] = key
        settings = {k: v for k, v in pid.env(app_url=issuer, port=ISSUER_PORT, actors_port=0, data_dir="/data", encryption_key=key).items()
                    if k in ("DISABLE_RATE_LIMITING", "ANALYTICS_DISABLED", "VERSION_CHECK_DISABLED", "TRUST_PROXY", "LOG_LEVEL", "FILE_BACKEND")}
        repo, tag = image.rsplit(":", 1)
        self._helm(helm, "labgate-identity", charts.LABGATE_CHART, NAMESPACE, {
            "registry": {"enabled": False},
            "pocketId": {"enabled": True, "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"}, "appUrl": issuer,
                         "encryptionKey": key, "env": settings,
                         "service": {"type": "NodePort", "port": ISSUER_PORT, "nodePort": ISSUER_NODE_PORT},
                         "persistence": {"hostPath": "/var/lib/labgate/pocket-id"}},
        })
        wait_until(lambda: requests.get(issuer + "/healthz", timeout=2).status_code in (200, 204), timeout=120,
                   what=f"Pocket ID at {issuer} (127.0.0.1:{host_port})", interval=0.5)
        stack.timings["ready:identity"] = round(time.monotonic() - t0, 3)
        clients: dict[str, dict] = {}
        zot_url = f"http://127.0.0.1:{zot_port}" if zot_port else None
        rp_redirect = f"http://127.0.0.1:{free_port()}/callback"
        if zot_url:
            clients[pid.ZOT_CLIENT] = {"callbackURLs": [f"{zot_url}/zot/auth/callback/oidc"], "logoutCallbackURLs": [f"{zot_url}/login"],
                                       "pkceEnabled": False, "skipConsent": True}
        clients[pid.RP_CLIENT] = {"callbackURLs": [rp_redirect], "pkceEnabled": False, "skipConsent": False}
        clients[pid.PKCE_CLIENT] = {"callbackURLs": [rp_redirect], "pkceEnabled": True, "skipConsent": True}
        humans = list(self.scenario.identities.humans)
        boot = pid.bootstrap(issuer, groups=sorted({g for h in humans for g in h.groups}), humans=humans, clients=clients)
        stack.credentials["pocket-id:api-key"] = boot.api_key
        for cid, secret in boot.clients.items():
            stack.credentials[f"oidc:{cid}"] = secret
        stack.oidc_redirects = {cid: spec["callbackURLs"][0] for cid, spec in clients.items()}
        stack.humans = boot.users
        stack.issuer_url = stack.issuer_internal_url = issuer
        stack.capabilities = sorted(set(stack.capabilities) | {"identity", "identity.pocket-id", "identity.write"})
        stack.components.append(ComponentState(name="identity", kind="pocket-id", version=toolchain.TOOLS["pocket-id"].version,
                                               source=toolchain.resolve("pocket-id").source, path=image, url=issuer,
                                               start_seconds=stack.timings["ready:identity"]))
        self._save()

    def _install_registry(self, stack: Stack, helm: str, kind: str, tool: toolchain.Resolved, image: str) -> None:
        t0 = time.monotonic()
        secret_files = {"htpasswd": reg.robots_htpasswd(self.scenario, stack.credentials)}
        if kind == "zot":
            oidc: dict = {}
            if stack.issuer_url and "oidc:zot" in stack.credentials:
                secret_files["oidc-credentials.json"] = json.dumps({"clientid": "zot", "clientsecret": stack.credentials["oidc:zot"]})
                hash_key, enc_key = redact.new_secret("zot:session-hash-key", 48), redact.new_secret("zot:session-encrypt-key", 24)[:32]
                stack.credentials["zot:session-hash-key"], stack.credentials["zot:session-encrypt-key"] = hash_key, enc_key
                secret_files["session-keys.json"] = json.dumps({"hashKey": hash_key, "encryptKey": enc_key})
                oidc = {"issuer": stack.issuer_internal_url, "oidc_credentials_path": "/secret/oidc-credentials.json",
                        "session_keys_path": "/secret/session-keys.json"}
            config = {"config.json": reg.dumps(reg.render_zot_config(
                self.scenario, address="0.0.0.0", port=REGISTRY_PORT, root_dir="/var/lib/registry", htpasswd_path="/secret/htpasswd",
                external_url=stack.registry_url, **oidc))}
            caps = ["registry", "registry.zot", "registry.auth", "registry.delete", "registry.api-keys", "registry.htpasswd-reload"]
            if oidc:
                caps.append("registry.oidc-login")
            if self.scenario.access.policies:
                caps.append("registry.access-control")
        else:
            http_secret = redact.new_secret("registry:http-secret")
            stack.credentials["registry:http-secret"] = http_secret
            config = {"config.yml": reg.render_distribution_config(
                self.scenario, address="0.0.0.0", port=REGISTRY_PORT, root_dir="/var/lib/registry", htpasswd_path="/secret/htpasswd",
                http_secret=http_secret)}
            caps = ["registry", "registry.distribution", "registry.auth", "registry.delete"]
        repo, tag = image.rsplit(":", 1)
        self._registry_values = {
            "registry": {"enabled": True, "kind": kind, "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
                         "service": {"type": "NodePort", "port": REGISTRY_PORT, "nodePort": REGISTRY_NODE_PORT, "clusterIP": REGISTRY_CLUSTER_IP},
                         "persistence": {"hostPath": "/var/lib/labgate/registry"},  # the content outlives a restart
                         "configFiles": config, "secretFiles": secret_files},
            "pocketId": {"enabled": False},
        }
        self._helm(helm, "labgate-registry", charts.LABGATE_CHART, NAMESPACE, self._registry_values)
        self._wait_registry(stack)
        stack.timings["ready:registry"] = round(time.monotonic() - t0, 3)
        stack.registry_kind = kind
        stack.capabilities = sorted(set(stack.capabilities) | set(caps) | {"registry.write", "disruptive"})
        stack.components.append(ComponentState(name="registry", kind=kind, version=tool.version, source=tool.source, path=image,
                                               reported_version=tool.reported_version, url=stack.registry_url,
                                               start_seconds=stack.timings["ready:registry"]))
        self._save()

    def _kyverno_crds(self, stack: Stack, helm: str, kube: toolchain.Resolved, kyv: toolchain.Resolved) -> tuple[Path, dict, float]:
        """Kyverno's chart from its module, and its CRDs applied: (the chart, its versions, the
        seconds it took)."""
        assert self._run_dir is not None
        t0 = time.monotonic()
        chart = self._run_dir / "charts" / f"kyverno-{kyv.version}"
        versions = charts.kyverno_chart(kyv.version, chart)
        self._apply_kyverno_crds(stack, helm, kube, chart)
        return chart, versions, time.monotonic() - t0

    def _install_kyverno(self, stack: Stack, helm: str, crds: _Side, images: dict[str, str]) -> dict[str, float]:
        """Kyverno's release, once its CRDs are in (``crds``): the phases' seconds. Only the
        registry's pull secret and the release change the cluster; the stack is updated by the
        caller (``_kyverno_installed``), in one thread."""
        from kubernetes import client as kclient

        from labgate.components import kyverno as kv

        t0 = time.monotonic()
        chart, versions, crd_seconds = crds.result()
        crds.release()
        robot = reading_robot(self.scenario)
        core = kclient.CoreV1Api(_api(stack))
        core.create_namespaced_secret("kyverno", kclient.V1Secret(
            metadata=kclient.V1ObjectMeta(name=PULL_SECRET), type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": kv.docker_config(stack.image_host, robot, stack.password(robot))}))
        t1 = time.monotonic()
        self._helm(helm, "kyverno", chart, "kyverno", self._kyverno_values(images))
        return {"kyverno-crds": crd_seconds, "chart-install:kyverno": time.monotonic() - t1,
                "ready:kyverno": time.monotonic() - t0, "chart": versions}

    def _kyverno_installed(self, stack: Stack, kyv: toolchain.Resolved, images: dict[str, str], done: dict) -> None:
        versions = done.pop("chart")
        stack.provider_data["kyverno_chart"] = versions
        stack.timings.update({k: round(v, 3) for k, v in done.items()})
        stack.capabilities = sorted(set(stack.capabilities) | {"admission", "admission.kyverno"})
        stack.components.append(ComponentState(name="kyverno", kind="kyverno", version=kyv.version, source=kyv.source, path=images["kyverno"],
                                               reported_version=f"chart {versions['chart']}", start_seconds=stack.timings["ready:kyverno"]))
        self._save()

    def _kyverno_values(self, images: dict[str, str]) -> dict:
        adm = self.scenario.components.admission
        assert adm is not None
        split = {b: tuple(images[b].rsplit(":", 1)) for b in KYVERNO_BINARIES}
        return charts.kyverno_values(images=split, pull_secret=PULL_SECRET, cache_ttl=adm.cache_ttl)

    def _apply_kyverno_crds(self, stack: Stack, helm: str, kube: toolchain.Resolved, chart: Path) -> None:
        """Kyverno's CRDs, server-side (kyverno#5036: too large for a client-side apply's
        annotation; helm never upgrades CRDs)."""
        assert self._run_dir is not None
        crds = self._run_dir / f"{chart.name}-crds.yaml"
        rendered = _run([helm, "template", "kyverno", str(chart), "-n", "kyverno", "--set", "crds.install=true"], "helm template kyverno").stdout
        docs = [d for d in yaml.safe_load_all(rendered) if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
        crds.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        kubectl = str(Path(kube.path).parent / "kubectl")
        _run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(crds), "--kubeconfig", stack.kubeconfig], "kubectl apply --server-side (Kyverno CRDs)",
             timeout=300)

    def _kyverno_release(self, stack: Stack, helm: str, kube: toolchain.Resolved, chart: Path, images: dict[str, str]) -> None:
        """Kyverno's chart upgraded in place (``helm upgrade --install``): its CRDs first, then the
        release with these images, waited for."""
        t0 = time.monotonic()
        self._apply_kyverno_crds(stack, helm, kube, chart)
        stack.timings["kyverno-crds"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        self._helm(helm, "kyverno", chart, "kyverno", self._kyverno_values(images))
        stack.timings["chart-install:kyverno"] = round(time.monotonic() - t1, 3)

    def _wait_registry(self, stack: Stack) -> None:
        wait_until(lambda: requests.get(stack.registry_url + "/v2/", timeout=2).status_code in (200, 401), timeout=120,
                   what=f"the registry at {stack.registry_url}", interval=0.5)

    # the chart-bump gate: an upgrade in place ----------------------------------------------------
    def prepare_upgrade(self, to: Scenario) -> None:
        """What ``to`` needs, obtained before the baseline starts (one clear error, nothing started):
        Kyverno's controller images at its version, the registry binary for its image."""
        if tool_ref(to, "kube-node") != tool_ref(self.scenario, "kube-node"):
            raise StackError(f"{to.source}: components.kubernetes.version: a kind node runs the Kubernetes of its node image; "
                             "a new version is a new cluster, not an upgrade in place",
                             fix="gate a Kubernetes bump on the local provider (--provider local), which swaps kube-apiserver and etcd")
        tools: dict[str, toolchain.Resolved] = {}
        if to.components.admission is not None:
            kyv = obtain(to, "kyverno-images")
            if not kyv.available:
                raise StackError(f"kind: kyverno-images: {kyv.reason}")
            tools["kyverno"] = kyv
        kind, tool = choose_registry(to)
        if tool.source == "apt":
            raise StackError("registry: the kind provider needs a static distribution binary, not Debian's docker-registry",
                             fix="labgate tools install distribution (go install), or set DISTRIBUTION_BIN")
        tools["registry"] = tool
        self._upgrade_tools = tools

    def upgrade(self, to: Scenario, progress=lambda m: None) -> list[dict[str, object]]:
        """Each release whose version differs in ``to`` upgraded in place with ``helm upgrade``:
        the registry (labgate's chart, its data on the node kept), then Kyverno (its own chart from
        the module at the new version, CRDs server-side first). Its images are built and loaded
        into the node before anything changes."""
        assert self.stack is not None and self.engine is not None
        stack = self.stack
        if self._upgrade_tools is None:
            self.prepare_upgrade(to)
        tools = self._upgrade_tools
        assert tools is not None
        helm, kube, kind_tool = self._tool("helm"), self._tool("kube-node"), self._cluster_tool()
        done: list[dict[str, object]] = []
        name = stack.cluster
        reg_c = stack.component("registry")
        new_reg = tools["registry"]
        if new_reg.version != reg_c.version:
            t0 = time.monotonic()
            progress(f"upgrade registry: {reg_c.reported_version or reg_c.version} -> {new_reg.reported_version or new_reg.version} (helm upgrade labgate-registry)")
            image = component_image(self.engine, f"labgate/{stack.registry_kind}", new_reg.version, new_reg.path, "registry")
            self._load(kind_tool.path, name, [image])
            repo, tag = image.rsplit(":", 1)
            self._registry_values["registry"]["image"].update(repository=repo, tag=tag)
            self._helm(helm.path, "labgate-registry", charts.LABGATE_CHART, NAMESPACE, self._registry_values)
            self._wait_registry(stack)
            done.append({"component": "registry", "from": reg_c.version, "to": new_reg.version, "how": "helm upgrade labgate-registry",
                         "seconds": round(time.monotonic() - t0, 2)})
            reg_c.version, reg_c.path, reg_c.reported_version, reg_c.source = new_reg.version, image, new_reg.reported_version, new_reg.source
        kyv = tools.get("kyverno")
        if kyv is not None:
            ky_c = stack.component("kyverno")
            if kyv.version != ky_c.version:
                t0 = time.monotonic()
                assert self._run_dir is not None
                chart = self._run_dir / "charts" / f"kyverno-{kyv.version}"
                versions = charts.kyverno_chart(kyv.version, chart)
                before = stack.provider_data.get("kyverno_chart", {})
                progress(f"upgrade kyverno: {ky_c.version} (chart {before.get('chart', '?')}) -> {kyv.version} (chart {versions['chart']}): "
                         "images built and loaded, CRDs server-side, helm upgrade kyverno")
                d = Path(kyv.path).parent
                images = {b: component_image(self.engine, f"labgate/{b}", kyv.version, str(d / b), b) for b in KYVERNO_BINARIES}
                self._load(kind_tool.path, name, list(images.values()))
                previous, self.scenario = self.scenario, to  # the values come from ``to`` (its cache TTL)
                try:
                    self._kyverno_release(stack, helm.path, kube, chart, images)
                except BaseException:
                    self.scenario = previous
                    raise
                stack.provider_data["kyverno_chart"] = versions
                done.append({"component": "kyverno", "from": ky_c.version, "to": kyv.version,
                             "how": f"helm upgrade kyverno (chart {before.get('chart', '?')} -> {versions['chart']})",
                             "seconds": round(time.monotonic() - t0, 2)})
                ky_c.version, ky_c.path, ky_c.source = kyv.version, images["kyverno"], kyv.source
                ky_c.reported_version = f"chart {versions['chart']}"
        self.scenario = to
        stack.scenario, stack.scenario_name, stack.tools = to.source, to.name, suite_tools(to)
        self._save()
        return done

    # ------------------------------------------------------------------------------------------
    def _copy_logs(self) -> None:
        if self.stack is None or not self.stack.kubeconfig or not Path(self.stack.kubeconfig).exists():
            return
        KindHandle(self.stack).copy_logs()

    def logs(self) -> dict[str, str]:
        return {}

    def down(self) -> None:
        done = self.teardown.run()
        if done:
            _write_teardown_record(str(self.report_dir), done)
        if self.stack is not None:
            _unregister_run(self.stack.run_id)


def _kind_default_image(kind_version: str) -> str:
    import re

    src = charts.module_dir(f"sigs.k8s.io/kind@{kind_version}") / "pkg" / "apis" / "config" / "defaults" / "image.go"
    m = re.search(r'Image = "([^"]+)"', src.read_text())
    if not m:
        raise StackError(f"kind {kind_version}: no default node image in {src}")
    return m.group(1)


def _run(cmd: list[str], what: str, *, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise StackError(f"kind: {what} failed: {redact.redact(err)[-800:]}")
    return proc


def _api(stack: Stack):
    from kubernetes import config as kconfig

    return kconfig.new_client_from_config(stack.kubeconfig, context=stack.kube_context or None)


def _api_url(stack: Stack) -> str:
    try:
        return _api(stack).configuration.host
    except Exception:  # noqa: BLE001
        return ""


# ----------------------------------------------------------------------------------------------


class KindHandle(Handle):
    provider = "kind"
    abilities = frozenset({LIFECYCLE, CREDENTIALS, LOGS, KUBECONFIG})
    missing = {
        "pause": "freezing a pod's processes is not offered on kind (fix: run the slow-registry fault on the local provider)",
    }

    def _apps(self):
        from kubernetes import client as kclient

        return kclient.AppsV1Api(_api(self.stack))

    def _core(self):
        from kubernetes import client as kclient

        return kclient.CoreV1Api(_api(self.stack))

    def cannot(self, ability: str, component: str) -> str | None:
        if ability in (LIFECYCLE, LOGS) and component not in DEPLOYMENTS:
            return "the control plane of a kind node runs as static pods, which labgate does not stop (fix: run this case on the local provider)"
        return None

    def _deployment(self, component: str) -> tuple[str, str]:
        if component not in DEPLOYMENTS:
            raise AbilityMissing(f"the kind provider cannot stop {component!r}: it is not a Deployment labgate installed "
                                 f"(the control plane runs as static pods of the node)")
        return DEPLOYMENTS[component]

    def _mark(self, component: str, planned: str) -> None:
        def change(st: Stack) -> None:
            for c in st.components:
                if c.name == component:
                    c.planned = planned
            st.provider_data.setdefault("planned", {})[component] = planned
        Stack.update(self.stack.state_file, change)

    def _scale(self, component: str, replicas: int, timeout: float, crash: bool = False) -> None:
        """``crash`` (scaling to zero): the pods are deleted at once with no grace period, as a
        lost node or an OOM kill ends them."""
        ns, name = self._deployment(component)
        apps = self._apps()
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
        if crash and replicas == 0:
            d = apps.read_namespaced_deployment(name, ns)
            for pod in self._core().list_namespaced_pod(ns, label_selector=_selector(d)).items:
                self._core().delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)

        def settled() -> bool:
            d = apps.read_namespaced_deployment(name, ns)
            if replicas == 0:
                pods = self._core().list_namespaced_pod(ns, label_selector=_selector(d)).items
                return not pods
            return (d.status.available_replicas or 0) >= replicas and d.status.observed_generation >= d.metadata.generation

        wait_until(settled, timeout=timeout, what=f"{name} scaled to {replicas}", interval=0.5, retry_on=kube_retry())

    def stop(self, component: str, crash: bool = False) -> None:
        self._mark(component, "stopped")
        self._scale(component, 0, 120, crash=crash)

    def start(self, component: str, timeout: float = 180.0) -> None:
        self._scale(component, 1, timeout)
        self._answers(component, timeout)
        self._mark(component, "")

    def _answers(self, component: str, timeout: float) -> None:
        """Available is not enough: the harness reaches the component through kind's port mapping,
        which answers once kube-proxy routes the NodePort to the new pod."""
        url = {"registry": (self.stack.registry_url + "/v2/", (200, 401)),
               "identity": (self.stack.issuer_url + "/healthz", (200, 204))}.get(component)
        if url is None or not url[0].startswith("http"):
            return
        wait_until(lambda: requests.get(url[0], timeout=2).status_code in url[1], timeout=timeout,
                   what=f"{component} answering again at {url[0]}", interval=0.3)

    @contextlib.contextmanager
    def supervised(self, component: str, why: str) -> Iterator[list[float]]:
        """The kubelet restarts the component's containers itself; the restarts are counted."""
        before = self._restarts(component)
        self._mark(component, f"supervised: {why}")
        restarts: list[float] = []
        try:
            yield restarts
        finally:
            restarts.extend([time.time()] * max(0, self._restarts(component) - before))
            with contextlib.suppress(Exception):
                self._scale(component, 1, 180)
            self._mark(component, "")

    def revoke_modes(self) -> set[str]:
        return {"replace"}

    @contextlib.contextmanager
    def revoked(self, account: str, *, how: str = "replace") -> Iterator[None]:
        """Remove the robot from the registry's Secret (the kubelet swaps the mounted file, as for any
        Secret volume), then restore it. A pod annotation makes the kubelet sync at once."""
        if how != "replace":
            raise AbilityMissing(f"on kind the htpasswd file changes only as a Secret volume does (replace), not {how}")
        core = self._core()
        secret = core.read_namespaced_secret("labgate-registry-registry-secret", NAMESPACE)
        import base64

        original = base64.b64decode(secret.data["htpasswd"]).decode()
        kept = "".join(ln for ln in original.splitlines(keepends=True) if not ln.startswith(f"{account}:"))

        def write(text: str) -> None:
            core.patch_namespaced_secret("labgate-registry-registry-secret", NAMESPACE, {"stringData": {"htpasswd": text}})
            for pod in core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=registry").items:
                core.patch_namespaced_pod(pod.metadata.name, NAMESPACE, {"metadata": {"annotations": {"labgate.dev/secret-sync": str(time.time())}}})

        write(kept)
        try:
            yield
        finally:
            write(original)

    def logs(self, component: str) -> str:
        try:
            ns, name = self._deployment(component)
            core = self._core()
            d = self._apps().read_namespaced_deployment(name, ns)
            pods = core.list_namespaced_pod(ns, label_selector=_selector(d)).items
            return redact.redact("".join(core.read_namespaced_pod_log(p.metadata.name, ns, _request_timeout=10) for p in pods))
        except Exception:  # noqa: BLE001 - logs are best effort
            return ""

    def _restarts(self, component: str) -> int:
        ns, name = DEPLOYMENTS[component]
        core = self._core()
        d = self._apps().read_namespaced_deployment(name, ns)
        return sum(cs.restart_count for p in core.list_namespaced_pod(ns, label_selector=_selector(d)).items
                   for cs in (p.status.container_statuses or []))

    def health(self) -> dict[str, Health]:
        out: dict[str, Health] = {}
        try:
            st = Stack.load(self.stack.state_file)
            planned = st.provider_data.get("planned", {})
            apps, core = self._apps(), self._core()
            for component, (ns, name) in DEPLOYMENTS.items():
                if planned.get(component):
                    continue
                try:
                    d = apps.read_namespaced_deployment(name, ns, _request_timeout=5)
                except Exception:  # noqa: BLE001 - not installed in this stack
                    continue
                pods = core.list_namespaced_pod(ns, label_selector=_selector(d), _request_timeout=5).items
                restarts = sum(cs.restart_count for p in pods for cs in (p.status.container_statuses or []))
                last = ""
                for p in pods:
                    for cs in p.status.container_statuses or []:
                        term = cs.last_state.terminated if cs.last_state else None
                        if term is not None:
                            last = f"restarted ({term.reason or 'exit ' + str(term.exit_code)})"
                alive = (d.status.available_replicas or 0) >= 1
                out[component] = Health(alive, last or ("not available" if not alive else ""), restarts)
        except Exception:  # noqa: BLE001 - the watcher never breaks a run
            return out
        return out

    def delete_command(self) -> list[str] | None:
        kind = toolchain.resolve("kind")
        return [kind.path, "delete", "cluster", "--name", self.stack.cluster] if kind.available and self.stack.cluster else None

    def copy_logs(self) -> None:
        logdir = Path(self.stack.report_dir) / "logs"
        for component in DEPLOYMENTS:
            text = self.logs(component)
            if text:
                logdir.mkdir(parents=True, exist_ok=True)
                (logdir / f"{component}.log").write_text(text)

    def teardown(self) -> list[dict[str, object]]:
        """Delete the run's cluster and stop the dockerd the run started (`labgate stack down`, the reaper)."""
        st = self.stack
        td = Teardown()
        td.add("run-dir", lambda: shutil.rmtree(st.run_dir, ignore_errors=True))
        eng = st.provider_data.get("engine") or {}
        if eng.get("owned"):
            td.add("dockerd", lambda: engines.stop_owned(engines.Engine("docker", owned=True, pid=eng.get("pid", 0),
                                                                        ticks=eng.get("ticks", 0), host=eng.get("host", ""))))
        env = {"DOCKER_HOST": eng["host"]} if eng.get("host") else {}
        cmd = self.delete_command()
        if cmd and not st.provider_data.get("reused"):
            td.add("cluster", lambda: _run(cmd, f"{cmd[0]} cluster delete", env=env, timeout=300))
        td.add("logs", self.copy_logs)
        done = td.run()
        _write_teardown_record(st.report_dir, done)
        _unregister_run(st.run_id)
        return done


def _selector(d) -> str:
    return ",".join(f"{k}={v}" for k, v in (d.spec.selector.match_labels or {}).items())


__all__ = ["KindProvider", "KindHandle", "kind_config", "cluster_name", "registry_hosts"]
