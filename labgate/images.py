"""Small, real, reproducible OCI images built in Python (no Docker, no daemon).

:func:`build_image` makes a single-layer image whose layer is a gzip'd tar holding ``/hello.txt``
with the seed in it. Every timestamp, owner and mode in the tar and the gzip header is fixed, so
the same seed (and platform) always gives the same layer, config and manifest digests; a different
seed gives a different image. :func:`push_image` uploads the blobs and the manifest with an
:class:`~labgate.clients.oci.OciClient` and returns the manifest digest.

Runtimes can pull and unpack these images (``rootfs.diff_ids`` is the sha256 of the uncompressed
tar, as the image spec requires); there is no executable in them, so they cannot be run.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field
from typing import Any

from labgate.clients.oci import MT_CONFIG, MT_LAYER_GZIP, MT_MANIFEST, OciClient, canonical, descriptor, digest

# 2000-01-01T00:00:00Z: a fixed, obviously synthetic time for the tar entries and the config
FIXED_EPOCH = 946684800
FIXED_CREATED = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class BuiltImage:
    """An image that exists only in memory until :func:`push_image` uploads it."""

    seed: str
    layer: bytes  # the gzip'd tar, as uploaded
    diff_id: str  # sha256 of the uncompressed tar
    config: bytes
    manifest: bytes
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The manifest digest (what a signature covers)."""
        return digest(self.manifest)

    @property
    def layer_digest(self) -> str:
        return digest(self.layer)

    @property
    def config_digest(self) -> str:
        return digest(self.config)

    @property
    def descriptor(self) -> dict[str, Any]:
        """The manifest's descriptor (mediaType, digest, size)."""
        return descriptor(MT_MANIFEST, self.manifest)

    def blobs(self) -> dict[str, bytes]:
        return {self.config_digest: self.config, self.layer_digest: self.layer}


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mtime = FIXED_EPOCH
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the compressed bytes depend on the data only
    return gzip.compress(data, compresslevel=9, mtime=0)


def build_image(seed: str, *, architecture: str = "amd64", os: str = "linux",
                files: dict[str, bytes] | None = None) -> BuiltImage:
    """Build a one-layer OCI image whose ``/hello.txt`` says ``hello from <seed>``.

    ``files`` (absolute path -> content) replaces the default layer content. Deterministic: the
    same arguments give byte-identical blobs and manifest, hence the same digest.
    """
    content = files if files is not None else {"/hello.txt": f"hello from {seed}\n".encode()}
    tar = _tar(content)
    layer = _gzip(tar)
    diff_id = digest(tar)
    config_obj = {
        "architecture": architecture,
        "os": os,
        "created": FIXED_CREATED,
        "config": {"Labels": {"dev.labgate.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": FIXED_CREATED, "created_by": "labgate.images.build_image"}],
    }
    config = canonical(config_obj)
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": descriptor(MT_CONFIG, config),
        "layers": [descriptor(MT_LAYER_GZIP, layer)],
    }
    manifest = canonical(manifest_obj)
    return BuiltImage(seed=seed, layer=layer, diff_id=diff_id, config=config, manifest=manifest,
                      platform={"architecture": architecture, "os": os})


def push_image(client: OciClient, repo: str, tag: str | None, built: BuiltImage) -> str:
    """Upload the image's blobs (skipping those the repository already has) and PUT its manifest
    under ``tag`` (or by digest when ``tag`` is None). Returns the manifest digest; raises
    AssertionError when the registry refuses a step."""
    for dgst, data in built.blobs().items():
        if client.head_blob(repo, dgst).status_code != 200:
            client.push_blob(repo, data)
    ref = tag or built.digest
    r = client.put_manifest(repo, ref, built.manifest, MT_MANIFEST)
    if r.status_code != 201:
        raise AssertionError(f"manifest PUT {repo}:{ref}: {r.status_code} {r.text[:300]}")
    got = r.headers.get("Docker-Content-Digest")
    if got and got != built.digest:
        raise AssertionError(f"manifest PUT {repo}:{ref}: registry says {got}, expected {built.digest}")
    return built.digest
