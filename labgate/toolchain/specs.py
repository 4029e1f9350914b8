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
