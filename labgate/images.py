"""Small, real, reproducible OCI images built in Python (no Docker, no daemon).

:func:`build_image` makes a single-layer image whose layer is a gzip'd tar holding ``/hello.txt``
with the seed in it. Every timestamp, owner and mode in the tar and the gzip header is fixed, so
the same seed (and platform) always gives the same layer, config and manifest digests; a different
seed gives a different image. :func:`push_image` uploads the blobs and the manifest with an
:class:`~labgate.clients.oci.OciClient` and returns the manifest digest.

Runtimes can pull and unpack these images (``rootfs.diff_ids`` is the sha256 of the uncompressed
tar, as the image spec requires), and run them: the entrypoint is a tiny static program that waits.
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


# A process that waits forever, for images that must run (a pod reaching Running): machine code
# written here for each architecture, a few dozen bytes, no libc. x86-64: ``pause()`` in a loop;
# arm64 (no pause syscall): ``ppoll(NULL, 0, NULL, NULL)`` in a loop.
_WAIT_CODE = {
    "amd64": bytes.fromhex("b822000000" "0f05" "ebf7"),  # mov eax, 34; syscall; jmp back
    "arm64": b"".join(int(w, 16).to_bytes(4, "little") for w in (
        "d2800000", "d2800001", "d2800002", "d2800003",  # mov x0..x3, #0
        "d2800928",  # mov x8, #73 (ppoll)
        "d4000001",  # svc #0
        "17fffffa",  # b back to the first instruction
    )),
}
_ELF_MACHINE = {"amd64": 62, "arm64": 183}
WAITER = "/labgate-wait"


def waiter_elf(architecture: str = "amd64") -> bytes:
    """A static ELF executable that waits forever (the entrypoint of runnable test images)."""
    import struct

    code = _WAIT_CODE[architecture]
    base, ehsize, phsize = 0x400000, 64, 56
    entry = base + ehsize + phsize
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, version 1, System V
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, _ELF_MACHINE[architecture], 1, entry, ehsize, 0, 0,
                                 ehsize, phsize, 1, 0, 0, 0)
    size = ehsize + phsize + len(code)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    return header + phdr + code


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mtime = FIXED_EPOCH
            info.mode = 0o755 if name == WAITER else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the compressed bytes depend on the data only
    return gzip.compress(data, compresslevel=9, mtime=0)


def build_image(seed: str, *, architecture: str = "amd64", os: str = "linux",
                files: dict[str, bytes] | None = None, runnable: bool = True) -> BuiltImage:
    """Build a one-layer OCI image whose ``/hello.txt`` says ``hello from <seed>``.

    ``runnable`` adds a waiting entrypoint for the architecture (:func:`waiter_elf`), so a pod of
    the image reaches Running on a node. ``files`` (absolute path -> content) replaces the default
    layer content. Deterministic: the same arguments give byte-identical blobs and manifest.
    """
    content = dict(files) if files is not None else {"/hello.txt": f"hello from {seed}\n".encode()}
    if runnable and files is None:
        content[WAITER] = waiter_elf(architecture)
    tar = _tar(content)
    layer = _gzip(tar)
    diff_id = digest(tar)
    cfg: dict[str, Any] = {"Labels": {"dev.labgate.seed": seed}}
    if WAITER in content:
        cfg["Entrypoint"] = [WAITER]
    config_obj = {
        "architecture": architecture,
        "os": os,
        "created": FIXED_CREATED,
        "config": cfg,
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
