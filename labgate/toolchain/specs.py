"""Pinned components and the recipes that obtain them (facts: shared/reference/components.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


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


CONFORMANCE_VERSION = "v0.0.0-20260831232431-97274622c111"

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
                    staging_version="v0.36.3",
                    ldflags=" ".join(
                        f"-X {pkg}.{k}={v}"
                        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                        for k, v in (("gitVersion", "v1.36.3"), ("gitMajor", "1"), ("gitMinor", "36"), ("gitTreeState", "clean"))
                    ),
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
    try:
        return TOOLS[name]
    except KeyError:
        from labgate.errors import UsageError

        raise UsageError(f"unknown component {name!r}", fix=f"choose one of: {', '.join(TOOLS)}") from None
