"""Pinned components and the recipes that obtain them (facts: shared/reference/components.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class GoInstall:
    """``go install module/package@version`` (the module's go.mod has no replace lines)."""

    package: str
    version: str
    ldflags: str = ""
    tags: str = ""

    def describe(self) -> str:
        return f"go install {self.package}@{self.version}"


@dataclass(frozen=True)
class GoWrapper:
    """A generated wrapper module: requires the served module, copies its non-local replace lines,
    then builds the main package(s). Dependency replace lines are ignored by Go, which is the point."""

    module: str
    version: str
    packages: tuple[str, ...]
    replaces: tuple[str, ...] = ()
    extra_requires: tuple[str, ...] = ()
    ldflags: str = ""
    tags: str = ""
    # generate `replace X => X vN` for every `X v0.0.0` requirement of the module (k8s staging repos)
    staging_version: str = ""
    # directories of the downloaded module to keep next to the binary (e.g. Kyverno's CRDs)
    copy_dirs: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"wrapper module requiring {self.module}@{self.version}"


@dataclass(frozen=True)
class Apt:
    """A Debian package that ships the binary."""

    package: str
    path: str
    version_prefix: str

    def describe(self) -> str:
        return f"apt-get install {self.package}"


@dataclass(frozen=True)
class Npm:
    """An npm package installed into the cache (no global install)."""

    package: str
    version: str
    bin: str

    def describe(self) -> str:
        return f"npm install {self.package}@{self.version}"


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    binary: str
    env: str
    purpose: str
    methods: tuple[GoInstall | GoWrapper | Apt | Npm, ...] = ()
    path_names: tuple[str, ...] = ()
    version_args: tuple[str, ...] = ("--version",)
    # when no method can obtain it here: what the user must do
    unavailable: str = ""
    # set for components no registry here serves at all
    prebuilt_only: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    # other programs of the same build, expected next to ``binary`` (also when the variable names it)
    siblings: tuple[str, ...] = ()
    # a cross-compiled build for another architecture (GOARCH); "" is the host's
    goarch: str = ""


CONFORMANCE_VERSION = "v0.0.0-20260831232431-97274622c111"
KUBE_VERSION = "v1.36.3"
KIND_VERSION = "v0.33.0"


def kube_ldflags(version: str) -> str:
    """The version ldflags of a Kubernetes build (what `kubectl version`, /version and kubeadm read)."""
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        f"-X {pkg}.{k}={v}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for k, v in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
    )


def staging(version: str) -> str:
    """The staging modules' version of a Kubernetes release: v1.36.3 -> v0.36.3."""
    return "v0." + version.lstrip("v").split(".", 1)[1]


def helm_ldflags(version: str, kube: str = KUBE_VERSION) -> str:
    """helm's own version and the Kubernetes version it assumes (without them helm says v3.22 and
    Kubernetes v1.20, and charts with a kubeVersion constraint refuse to render)."""
    major, minor = kube.lstrip("v").split(".")[:2]
    mod = "helm.sh/helm/v" + version.lstrip("v").split(".")[0]
    return " ".join([f"-X {mod}/internal/version.version={version}"]
                    + [f"-X {mod}/pkg/{p}.k8sVersion{k}={v}" for p in ("chartutil", "lint/rules") for k, v in (("Major", major), ("Minor", minor))])

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            name="zot",
            version="v2.1.20",
            binary="zot",
            env="ZOT_BIN",
            purpose="OCI registry under test (zot)",
            path_names=("zot",),
            version_args=("--version",),
            prebuilt_only=True,
            unavailable="zot binary not available: set ZOT_BIN (the Go module proxy here does not serve zotregistry.dev/zot/v2)",
        ),
        Tool(
            name="distribution",
            version="v3.1.2",
            binary="registry",
            env="DISTRIBUTION_BIN",
            purpose="OCI registry CI can run (CNCF distribution)",
            path_names=("registry",),
            methods=(
                GoInstall(
                    "github.com/distribution/distribution/v3/cmd/registry",
                    "v3.1.2",
                    ldflags="-X github.com/distribution/distribution/v3/version.version=v3.1.2",
                ),
                Apt("docker-registry", "/usr/bin/docker-registry", "2.8.2"),
            ),
            unavailable="set DISTRIBUTION_BIN, or allow the Go module proxy or apt",
        ),
        Tool(
            name="oci-conformance",
            version=CONFORMANCE_VERSION,
            binary="conformance",
            env="OCI_CONFORMANCE_BIN",
            purpose="the official OCI distribution-spec conformance program (peer cross-check)",
            version_args=(),
            methods=(GoInstall("github.com/opencontainers/distribution-spec/conformance", CONFORMANCE_VERSION),),
            unavailable="set OCI_CONFORMANCE_BIN",
        ),
        Tool(
            name="cosign",
            version="v3.1.2",
            binary="cosign",
            env="COSIGN_BIN",
            purpose="the real cosign CLI: cross-checks the harness's signatures both ways",
            path_names=("cosign",),
            version_args=("version", "--json"),
            methods=(
                GoInstall(
                    "github.com/sigstore/cosign/v3/cmd/cosign",
                    "v3.1.2",
                    ldflags="-X sigs.k8s.io/release-utils/version.gitVersion=v3.1.2",
                ),
            ),
            unavailable="set COSIGN_BIN",
        ),
        Tool(
            name="etcd",
            version="v3.6.16",
            binary="etcd",
            env="ETCD_BIN",
            purpose="the Kubernetes control plane's store",
            path_names=(),
            methods=(GoWrapper("go.etcd.io/etcd/server/v3", "v3.6.16", packages=("go.etcd.io/etcd/server/v3",)),),
            unavailable="set ETCD_BIN (Debian's etcd 3.4.23 is too old for Kubernetes 1.36)",
        ),
        Tool(
            name="kube-apiserver",
            version="v1.36.3",
            binary="kube-apiserver",
            env="KUBE_APISERVER_BIN",
            purpose="a real kube-apiserver: admission happens at the API",
            path_names=("kube-apiserver",),
            methods=(
                GoWrapper(
                    "k8s.io/kubernetes",
                    "v1.36.3",
                    packages=("k8s.io/kubernetes/cmd/kube-apiserver",),
                    staging_version=staging(KUBE_VERSION),
                    ldflags=kube_ldflags(KUBE_VERSION),
                ),
            ),
            unavailable="set KUBE_APISERVER_BIN",
        ),
        Tool(
            name="kyverno",
            version="v1.19.0",
            binary="kyverno",
            env="KYVERNO_BIN",
            purpose="Kyverno's admission controller (verifyImages), run out of cluster",
            methods=(
                GoWrapper(
                    "github.com/kyverno/kyverno",
                    "v1.19.0",
                    packages=("github.com/kyverno/kyverno/cmd/kyverno",),
                    replaces=("k8s.io/pod-security-admission=github.com/kyverno/pod-security-admission@v0.0.0-20251031094455-46f20778634f",),
                    ldflags="-X github.com/kyverno/kyverno/pkg/version.BuildVersion=v1.19.0",
                    copy_dirs=("config/crds",),
                ),
            ),
            version_args=(),
            unavailable="set KYVERNO_BIN (and KYVERNO_CRDS to its config/crds directory)",
        ),
        Tool(
            name="kube-node",
            version=KUBE_VERSION,
            binary="kubeadm",
            env="KUBEADM_BIN",
            siblings=("kubelet", "kubectl", "kube-controller-manager", "kube-scheduler", "kube-proxy"),
            purpose="a kind node's Kubernetes: kubelet, kubeadm, kubectl, controller-manager, scheduler, proxy",
            methods=(
                GoWrapper(
                    "k8s.io/kubernetes",
                    KUBE_VERSION,
                    packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in (
                        "kubeadm", "kubelet", "kubectl", "kube-controller-manager", "kube-scheduler", "kube-proxy")),
                    staging_version=staging(KUBE_VERSION),
                    ldflags=kube_ldflags(KUBE_VERSION),
                ),
            ),
            version_args=("version", "-o", "short"),
            unavailable="set KUBEADM_BIN to a kubeadm next to kubelet, kubectl, kube-controller-manager, kube-scheduler and kube-proxy",
        ),
        Tool(
            name="etcd-node",
            version="v3.6.8",
            binary="etcd",
            env="ETCD_NODE_BIN",
            purpose="the etcd a kind node runs, at the tag `kubeadm config images list` gives (3.6.8-0 for Kubernetes v1.36.3)",
            methods=(GoWrapper("go.etcd.io/etcd/server/v3", "v3.6.8", packages=("go.etcd.io/etcd/server/v3",)),),
            unavailable="set ETCD_NODE_BIN",
        ),
        Tool(
            name="coredns",
            version="v1.14.2",
            binary="coredns",
            env="COREDNS_BIN",
            purpose="a kind node's cluster DNS, at the tag `kubeadm config images list` gives",
            methods=(GoInstall("github.com/coredns/coredns", "v1.14.2"),),
            version_args=("-version",),
            unavailable="set COREDNS_BIN",
        ),
        Tool(
            name="kind",
            version=KIND_VERSION,
            binary="kind",
            env="KIND_BIN",
            purpose="Kubernetes in Docker: the kind provider's clusters",
            path_names=("kind",),
            methods=(GoInstall("sigs.k8s.io/kind", KIND_VERSION),),
            version_args=("version",),
            unavailable="set KIND_BIN",
        ),
        Tool(
            name="helm",
            version="v3.22.0",
            binary="helm",
            env="HELM_BIN",
            purpose="installs Kyverno's chart and labgate's own chart on kind",
            path_names=("helm",),
            methods=(GoInstall("helm.sh/helm/v3/cmd/helm", "v3.22.0", ldflags=helm_ldflags("v3.22.0")),),
            version_args=("version", "--short"),
            unavailable="set HELM_BIN",
        ),
        Tool(
            name="kyverno-images",
            version="v1.19.0",
            binary="kyverno",
            env="KYVERNO_IMAGES_BIN",
            siblings=("kyverno-init", "background-controller", "cleanup-controller", "reports-controller"),
            purpose="Kyverno's in-cluster controllers (admission and its init container, background, cleanup, reports) for its chart",
            methods=(
                GoWrapper(
                    "github.com/kyverno/kyverno",
                    "v1.19.0",
                    packages=tuple(f"github.com/kyverno/kyverno/cmd/{c}" for c in (
                        "kyverno", "kyverno-init", "background-controller", "cleanup-controller", "reports-controller")),
                    replaces=("k8s.io/pod-security-admission=github.com/kyverno/pod-security-admission@v0.0.0-20251031094455-46f20778634f",),
                    ldflags="-X github.com/kyverno/kyverno/pkg/version.BuildVersion=v1.19.0",
                ),
            ),
            version_args=(),
            unavailable="set KYVERNO_IMAGES_BIN to a kyverno next to kyverno-init, background-controller, cleanup-controller and reports-controller",
        ),
        Tool(
            name="dockerd",
            version="20.10",
            binary="dockerd",
            env="DOCKERD_BIN",
            purpose="Debian's Docker engine, started by the kind provider when no Docker daemon answers",
            methods=(Apt("docker.io", "/usr/sbin/dockerd", "20.10"),),
            version_args=("--version",),
            unavailable="install Docker, or allow apt-get install docker.io",
        ),
        Tool(
            name="debootstrap",
            version="1.0",
            binary="debootstrap",
            env="DEBOOTSTRAP_BIN",
            purpose="the Debian root file system of the kind node image built here",
            methods=(Apt("debootstrap", "/usr/sbin/debootstrap", "1.0"),),
            version_args=("--version",),
            unavailable="allow apt-get install debootstrap",
        ),
        Tool(
            name="busybox",
            version="1.35",
            binary="busybox",
            env="BUSYBOX_BIN",
            purpose="a static shell for the kind node's kube-proxy image",
            methods=(Apt("busybox-static", "/bin/busybox", "1:1.35"),),
            version_args=(),
            unavailable="allow apt-get install busybox-static",
        ),
        Tool(
            name="jq",
            version="1.6",
            binary="jq",
            env="JQ_BIN",
            purpose="the OCI runtime wrapper that drops CAP_SYS_RESOURCE (the host's and the node's)",
            path_names=("jq",),
            methods=(Apt("jq", "/usr/bin/jq", "1.6"),),
            unavailable="allow apt-get install jq",
        ),
        Tool(
            name="qemu-user-static",
            version="7.2",
            binary="qemu-aarch64-static",
            env="QEMU_AARCH64_BIN",
            purpose="runs arm64 builds of the components on this amd64 host (binfmt_misc)",
            path_names=("qemu-aarch64-static",),
            methods=(Apt("qemu-user-static", "/usr/bin/qemu-aarch64-static", "1:7.2"),),
            version_args=("--version",),
            unavailable="allow apt-get install qemu-user-static",
        ),
        Tool(
            name="pocket-id",
            version="v2.14.0",
            binary="pocket-id",
            env="POCKET_ID_BIN",
            purpose="Pocket ID, the OpenID Connect provider (API only: the web UI is in no package registry)",
            path_names=("pocket-id",),
            version_args=("version",),
            methods=(
                GoWrapper(
                    "github.com/pocket-id/pocket-id/backend",
                    "v0.0.0-20260818200753-552126622720",  # the pseudo-version of the v2.14.0 release commit
                    packages=("github.com/pocket-id/pocket-id/backend/cmd",),
                    replaces=("github.com/ory/fosite=github.com/pocket-id/fosite@v1.3.0",),
                    tags="exclude_frontend",
                    ldflags="-X github.com/pocket-id/pocket-id/backend/internal/common.Version=2.14.0",
                ),
            ),
            unavailable="set POCKET_ID_BIN to a Pocket ID v2.14 backend binary (built with -tags exclude_frontend)",
        ),
        Tool(
            name="actionlint",
            version="v1.7.12",
            binary="actionlint",
            env="ACTIONLINT_BIN",
            purpose="checks the GitHub workflows labgate renders from the matrix",
            path_names=("actionlint",),
            methods=(GoInstall("github.com/rhysd/actionlint/cmd/actionlint", "v1.7.12"),),
            version_args=("-version",),
            unavailable="set ACTIONLINT_BIN, or allow the Go module proxy",
        ),
        Tool(
            name="allure",
            version="3.18.0",
            binary="allure",
            env="ALLURE_BIN",
            purpose="offline generator of the Allure HTML report",
            methods=(Npm("allure", "3.18.0", "node_modules/.bin/allure"),),
            version_args=("--version",),
            unavailable="set ALLURE_BIN, or install Node.js and npm",
        ),
    )
}


def tool(name: str) -> Tool:
    """A component by name, or ``name@version`` for another version than the pinned one."""
    base, _, version = name.partition("@")
    if base not in TOOLS:
        from labgate.errors import UsageError

        raise UsageError(f"unknown component {base!r}", fix=f"choose one of: {', '.join(TOOLS)}")
    return variant(base, version=version or None)


KUBE_FAMILY = {"kube-apiserver", "kube-node"}


def variant(name: str, *, version: str | None = None, arch: str | None = None) -> Tool:
    """The component at ``version`` and for ``arch`` (GOARCH): the same recipe, another module
    version (and the version ldflags that go with it), or a cross-compiled build. Each variant has
    its own cache directory; an unserved version fails with the registry's own refusal."""
    from labgate.stack import host_arch

    t = TOOLS[name]
    if version and version != t.version:
        old = t.version
        methods = []
        for m in t.methods:
            if isinstance(m, (GoInstall, GoWrapper)) and m.version == old:
                changes: dict = {"version": version, "ldflags": m.ldflags.replace(old, version)}
                if name in KUBE_FAMILY:
                    changes["ldflags"] = kube_ldflags(version)
                    changes["staging_version"] = staging(version)
                if name == "helm":
                    changes["ldflags"] = helm_ldflags(version)
                methods.append(replace(m, **changes))
            elif isinstance(m, Apt) and version.lstrip("v").startswith(m.version_prefix):
                methods.append(m)
            # a pseudo-version of its own (pocket-id) names one release: no other version derives from it
        env = f"{t.env}_{version.lstrip('v').replace('.', '_')}"
        t = replace(t, version=version, methods=tuple(methods), path_names=(), env=env,
                    unavailable=t.unavailable.replace(t.env, env) if methods else f"set {env} to a {t.binary} {version} binary")
    if arch and arch != host_arch():
        t = replace(t, goarch=arch, env=f"{t.env}_{arch.upper()}", path_names=(),
                    methods=tuple(m for m in t.methods if isinstance(m, (GoInstall, GoWrapper))),
                    unavailable=f"set {t.env}_{arch.upper()} to a linux/{arch} build, or allow the Go module proxy")
    return t
