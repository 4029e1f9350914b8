"""The k3d provider: the kind provider's stack on a k3s cluster in Docker, for users who have k3d
and a rancher/k3s image.

Everything after the cluster exists is the kind provider's (images built here, loaded; labgate's
chart and Kyverno's real chart). What differs is the cluster: ``k3d cluster create`` from a
rancher/k3s image, its kubeconfig written into the run directory (never the user's default one),
the registry's NodePort mapped to 127.0.0.1, containerd told by k3s's registries.yaml to reach the
in-cluster registry over http at its fixed Service address, ``k3d image import`` for the images.

k3s cannot be had on a machine that only reaches the package registries: the Go module proxy
refuses github.com/k3s-io/k3s (403 "This module version is not available"; k3s release tags such as
v1.33.1+k3s1 carry +build metadata that Go drops, so they are not addressable as module versions
anyway), its go.mod redirects about 60 modules to forks with replace lines (so ``go install``
refuses it even where it is served), and no registry here serves a rancher/k3s image. The provider
says so and the e2e skips with that reason; it never fakes a cluster.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from labgate import toolchain
from labgate.errors import StackError
from labgate.kind import engine as engines
from labgate.providers.kind import (
    ISSUER_NODE_PORT, REGISTRY_NAME, REGISTRY_NODE_PORT, REGISTRY_PORT, KindHandle, KindProvider, _run,
)

K3S_IMAGE = "rancher/k3s:v1.36.3-k3s1"
K3S_SERVICE_IP = "10.43.0.50"  # k3s's service CIDR is 10.43.0.0/16
UNAVAILABLE = (
    "k3s cannot be obtained here: the Go module proxy refuses github.com/k3s-io/k3s (403 This module version is not "
    "available), its go.mod has about 60 replace lines to forks (go install refuses it), and no registry here serves a "
    "rancher/k3s image"
)
FIX = f"run on a machine with k3d and a rancher/k3s image (e.g. docker pull {K3S_IMAGE}), with K3D_BIN or k3d on PATH"


def k3d_binary() -> str | None:
    return os.environ.get("K3D_BIN") or shutil.which("k3d")


def unavailable(engine: engines.Engine | None = None, image: str = K3S_IMAGE) -> str | None:
    """Why k3d cannot run here (with the fix), or None."""
    if not k3d_binary():
        return f"{UNAVAILABLE}; k3d itself is not installed (fix: {FIX})"
    if engine is not None and not engine.has_image(image):
        return f"{UNAVAILABLE}; the image {image} is not in this Docker (fix: {FIX})"
    return None


def registries_yaml() -> str:
    """k3s's containerd mirror for the in-cluster registry, over http at its fixed Service address."""
    return yaml.safe_dump({"mirrors": {f"{REGISTRY_NAME}:{REGISTRY_PORT}": {"endpoint": [f"http://{K3S_SERVICE_IP}:{REGISTRY_PORT}"]}}})


def create_command(k3d: str, name: str, image: str, *, registry_host_port: int, issuer_host_port: int | None,
                   registries: Path) -> list[str]:
    """One server, no agent; the registry's (and Pocket ID's) NodePort on 127.0.0.1; the registry
    mirror; no traefik; the user's kubeconfig left alone."""
    ports = [f"127.0.0.1:{registry_host_port}:{REGISTRY_NODE_PORT}@server:0"]
    if issuer_host_port:
        ports.append(f"127.0.0.1:{issuer_host_port}:{ISSUER_NODE_PORT}@server:0")
    return [k3d, "cluster", "create", name, "--image", image, "--servers", "1", "--agents", "0",
            "--kubeconfig-update-default=false", "--kubeconfig-switch-context=false", "--registry-config", str(registries),
            *[arg for p in ports for arg in ("--port", p)],
            "--k3s-arg", "--disable=traefik@server:0", "--wait", "--timeout", "180s"]


class K3dProvider(KindProvider):
    name = "k3d"

    def _cluster_tool(self) -> toolchain.Resolved:
        why = unavailable()
        if why:
            raise StackError(f"provider k3d: {why}")
        path = k3d_binary() or ""
        return toolchain.Resolved("k3d", "?", True, "env" if os.environ.get("K3D_BIN") else "PATH", path)

    def _node(self, eng, kind_tool, kube) -> str:
        image = self.settings.image or K3S_IMAGE
        why = unavailable(eng, image)
        if why:
            raise StackError(f"provider k3d: {why}")
        return image

    def _preloaded(self, eng, node: str, images: dict[str, str]) -> None:
        return None  # the images are imported into the cluster once it exists (k3d image import)

    def _cluster_config(self, registry_port: int, issuer_port: int | None, certs_d: Path) -> dict:
        return {"registry_port": registry_port, "issuer_port": issuer_port}

    def _create_cluster(self, k3d: str, name: str, node: str, config: dict, kubeconfig: Path) -> None:
        assert self.engine is not None
        registries = kubeconfig.with_name("registries.yaml")
        registries.write_text(registries_yaml())
        _run(create_command(k3d, name, node, registry_host_port=config["registry_port"], issuer_host_port=config["issuer_port"],
                            registries=registries), "k3d cluster create", env=self.engine.env(), timeout=600)
        out = _run([k3d, "kubeconfig", "get", name], "k3d kubeconfig get", env=self.engine.env())
        kubeconfig.write_bytes(out.stdout)
        kubeconfig.chmod(0o600)

    def _load(self, k3d: str, name: str, images: list[str]) -> None:
        assert self.engine is not None
        _run([k3d, "image", "import", *images, "--cluster", name], "k3d image import", env=self.engine.env(), timeout=900)

    def _delete_cluster(self, k3d: str, name: str) -> None:
        if self.keep or self.settings.cluster:
            return super()._delete_cluster(k3d, name)
        _run([k3d, "cluster", "delete", name], "k3d cluster delete", env=self.engine.env() if self.engine else {}, timeout=300)


class K3dHandle(KindHandle):
    provider = "k3d"

    def delete_command(self) -> list[str] | None:
        k3d = k3d_binary()
        return [k3d, "cluster", "delete", self.stack.cluster] if k3d and self.stack.cluster else None
