"""A kind node image built offline, from Debian packages and Go-built Kubernetes binaries.

kind's own ``kind build node-image`` pulls images and needs a newer containerd than Debian has, so
the harness assembles the node itself, following what kind v0.33's base image holds
(images/base/Dockerfile and images/base/files in the kind module):

1. a Debian bookworm root file system (debootstrap, minbase, kind's package list plus Debian's
   containerd, runc and CNI plugins), cached;
2. kind's base files on it, the same services enabled and pruned, containerd told not to lower
   oom_score_adj (that needs CAP_SYS_RESOURCE), a registry hosts directory, the runtime wrapper as
   the node's runc, a bridge CNI (no kindnetd image), kubelet/kubeadm/kubectl, ``/kind/version``;
3. the control-plane images kubeadm asks for (``kubeadm config images list``), each one static
   binary made into an image here, pause being labgate's own waiter, kube-proxy with iptables;
4. those images imported into the node's containerd (as kind's build does), then committed.

The result is cached in the engine by (Kubernetes version, kind version, recipe): a second run
builds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from labgate import toolchain
from labgate.errors import StackError
from labgate.kind.engine import Engine, wrapper_text

RECIPE = "labgate-node-3"
PACKAGES = ("systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,"
            "ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins,socat,ebtables")
POD_CIDR = "10.244.0.0/24"
CERTS_D = "/etc/containerd/certs.d"


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 sources first, then sources.list)."""
    for f in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise StackError(f"kind node image: {what} failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc


def rootfs(progress: Callable[[str], None]) -> Path:
    """Debian bookworm with the node's packages, made once by debootstrap and kept in the cache."""
    root = toolchain.cache_root() / "kind" / "rootfs-bookworm-amd64"
    if (root / ".labgate-complete").exists():
        return root
    tool = toolchain.install("debootstrap")
    if not tool.available:
        raise StackError(f"kind node image: {tool.reason}")
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    progress(f"[kind] debootstrap bookworm (minbase + the node's packages) from {debian_mirror()} ... about a minute")
    _run([tool.path, "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(root), debian_mirror()], "debootstrap", timeout=1800)
    (root / ".labgate-complete").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return root


def kind_files(kind_version: str) -> Path:
    """kind's images/base/files, from the kind module the toolchain downloaded."""
    out = _run(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{kind_version}"], "go mod download sigs.k8s.io/kind",
               env={**os.environ, "GOFLAGS": "-mod=mod"})
    d = Path(json.loads(out.stdout)["Dir"]) / "images" / "base" / "files"
    if not d.is_dir():
        raise StackError(f"kind node image: no images/base/files in sigs.k8s.io/kind@{kind_version}")
    return d


def images_list(kubeadm: str, kube_version: str) -> dict[str, str]:
    """``kubeadm config images list``: component -> image reference."""
    out = _run([kubeadm, "config", "images", "list", "--kubernetes-version", kube_version], "kubeadm config images list")
    refs = [ln.strip() for ln in out.stdout.decode().splitlines() if ln.strip()]
    found = {}
    for ref in refs:
        name = ref.rsplit("/", 1)[1].split(":")[0]
        found[name] = ref
    for need in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns", "pause", "etcd"):
        if need not in found:
            raise StackError(f"kind node image: kubeadm lists no {need} image: {refs}")
    return found


def node_ref(kube_version: str, kind_version: str) -> str:
    key = hashlib.sha256(f"{RECIPE}|{kube_version}|{kind_version}".encode()).hexdigest()[:10]
    return f"labgate/kind-node:{kube_version}-kind{kind_version.lstrip('v')}-{key}"


# ----------------------------------------------------------------------------------------------
# small images made of a few files


def _add(tar: tarfile.TarFile, path: str, *, data: bytes | None = None, src: Path | None = None, mode: int = 0o755,
         link: str | None = None, directory: bool = False) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.mtime = 946684800
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    else:
        content = data if data is not None else Path(src).read_bytes()
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))


def _base_files(tar: tarfile.TarFile, shell: str = "/sbin/nologin") -> None:
    _add(tar, "/tmp", directory=True, mode=0o1777)
    _add(tar, "/etc", directory=True)
    _add(tar, "/etc/passwd", data=f"root:x:0:0:root:/root:{shell}\n".encode(), mode=0o644)
    _add(tar, "/etc/group", data=b"root:x:0:\n", mode=0o644)


def import_image(engine: Engine, ref: str, build: Callable[[tarfile.TarFile], None], *, entrypoint: list[str] | None = None,
                 env_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") -> None:
    """``docker import`` of a file system written by ``build`` into a tar stream."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        build(tar)
    changes = ["--change", f"ENV PATH={env_path}"]
    if entrypoint:
        changes += ["--change", "ENTRYPOINT " + json.dumps(entrypoint)]
    engine.run("import", *changes, "-", ref, input=buf.getvalue())


def single_binary(engine: Engine, ref: str, binary: str, dest: str, entrypoint: list[str] | None = None) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _base_files(tar)
        _add(tar, dest, src=Path(binary))
    import_image(engine, ref, build, entrypoint=entrypoint)


IPTABLES_WRAPPER = """#!/bin/sh
# labgate: point iptables at the backend the node already uses (more rules wins; nft on a tie)
legacy=$( (xtables-legacy-multi iptables-save; xtables-legacy-multi ip6tables-save) 2>/dev/null | grep -c '^-')
nft=$( (xtables-nft-multi iptables-save; xtables-nft-multi ip6tables-save) 2>/dev/null | grep -c '^-')
mode=nft; [ "$legacy" -gt "$nft" ] && mode=legacy
for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf "xtables-$mode-multi" "/usr/sbin/$c"
done
exec "$0" "$@"
"""
IPTABLES = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")


def kube_proxy_image(engine: Engine, ref: str, binary: str, root: Path, busybox: str) -> None:
    """kube-proxy needs iptables: Debian's xtables binaries from the node's root file system with
    their whole shared-library closure (the extension plugins too: libxt_statistic needs libm),
    busybox for the wrapper's shell, and a wrapper that picks the backend the node uses."""
    libdir = "/usr/lib/x86_64-linux-gnu"
    plugins = sorted(str(p.relative_to(root)) for p in (root / libdir.lstrip("/") / "xtables").glob("*.so"))
    out = _run(["chroot", str(root), "sh", "-c", "ldd /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi "
                + " ".join("/" + p for p in plugins)], "ldd of the iptables binaries")
    libs = sorted({m.group(1) for m in re.finditer(r"=> (/\S+)", out.stdout.decode())})

    def build(tar: tarfile.TarFile) -> None:
        _base_files(tar, shell="/bin/sh")
        for d in ("/run", "/var", "/var/run", "/lib64", "/bin", "/usr", "/usr/sbin", "/usr/local", "/usr/local/bin", "/lib", libdir):
            _add(tar, d, directory=True)
        _add(tar, "/usr/local/bin/kube-proxy", src=Path(binary))
        for b in ("xtables-legacy-multi", "xtables-nft-multi"):
            _add(tar, f"/usr/sbin/{b}", src=root / "usr/sbin" / b)
        seen = set()
        for lib in libs:
            name = Path(lib).name
            if name not in seen:
                seen.add(name)
                _add(tar, f"{libdir}/{name}", src=(root / lib.lstrip("/")).resolve(), mode=0o644)
        _add(tar, "/lib64/ld-linux-x86-64.so.2", src=(root / "lib64/ld-linux-x86-64.so.2").resolve())
        _add(tar, f"{libdir}/xtables", directory=True)
        for p in plugins:
            _add(tar, "/" + p, src=root / p, mode=0o644)
        _add(tar, "/bin/busybox", src=Path(busybox))
        for a in ("sh", "grep", "ln"):
            _add(tar, f"/bin/{a}", link="busybox")
        for mode in ("legacy", "nft"):
            for c in IPTABLES:
                _add(tar, f"/usr/sbin/{c.replace('tables', 'tables-' + mode)}", link=f"xtables-{mode}-multi")
        _add(tar, "/usr/sbin/iptables-wrapper", data=IPTABLES_WRAPPER.encode())
        for c in IPTABLES:
            _add(tar, f"/usr/sbin/{c}", link="iptables-wrapper")
    import_image(engine, ref, build)


# ----------------------------------------------------------------------------------------------


def _assemble(r: Path, files: Path, bins: dict[str, str], kube_version: str) -> None:
    """The node's root file system in ``r`` (a copy of the Debian root)."""
    for top in ("bin", "sbin", "lib", "lib64"):  # merged /usr: relative links, or a write below would land on this host
        link = r / top
        if link.is_symlink() and os.readlink(link).startswith("/"):
            raise StackError(f"kind node image: {link} links to an absolute path ({os.readlink(link)}); refusing to write through it")
    def put(src: Path, dest: str, mode: int) -> None:
        target = r / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(mode)

    for f in (files / "usr/local/bin").iterdir():
        put(f, f"/usr/local/bin/{f.name}", 0o755)
    for f in (files / "kind").rglob("*"):
        if f.is_file():
            put(f, "/kind/" + str(f.relative_to(files / "kind")), 0o755 if f.parent.name == "bin" else 0o644)
    for d in ("kind", "kind/bin"):
        (r / d).chmod(0o755)
    for f in (files / "etc").rglob("*"):
        if f.is_file():
            put(f, "/etc/" + str(f.relative_to(files / "etc")), 0o644)
    # what kind's Dockerfile removes and adds
    for p in (r / "lib/systemd/system/sysinit.target.wants").glob("systemd-tmpfiles-setup.service"):
        p.unlink()
    for pattern in ("lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
                    "lib/systemd/system/local-fs.target.wants/*", "lib/systemd/system/sockets.target.wants/*udev*",
                    "lib/systemd/system/sockets.target.wants/*initctl*", "lib/systemd/system/basic.target.wants/*"):
        for p in r.glob(pattern):
            if p.is_symlink() or p.is_file():
                p.unlink()
    with open(r / "etc/systemd/journald.conf", "a") as fh:
        fh.write("ReadKMsg=no\n")
    for link, target in (("sbin/init", "/usr/lib/systemd/systemd"),
                         *((f"usr/local/bin/{b}", f"/usr/bin/{b}") for b in ("containerd", "ctr", "containerd-shim-runc-v2"))):
        p = r / link
        if p.exists() or p.is_symlink():
            p.unlink()
        p.symlink_to(target)
    cni = r / "opt/cni/bin"
    if cni.exists() or cni.is_symlink():
        shutil.rmtree(cni) if cni.is_dir() and not cni.is_symlink() else cni.unlink()
    cni.parent.mkdir(parents=True, exist_ok=True)
    cni.symlink_to("/usr/lib/cni")  # Debian's CNI plugins
    runc = r / "usr/local/sbin/runc"
    runc.parent.mkdir(parents=True, exist_ok=True)
    runc.write_text(wrapper_text("/usr/sbin/runc"))  # privileged pods (kube-proxy) meet the same missing capability
    runc.chmod(0o755)
    cfg = r / "etc/containerd/config.toml"
    text = cfg.read_text().replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
    text += f'\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{CERTS_D}"\n'
    cfg.write_text(text)
    (r / CERTS_D.lstrip("/")).mkdir(parents=True, exist_ok=True)
    spec = json.loads(_run(["chroot", str(r), "/usr/bin/ctr", "oci", "spec"], "ctr oci spec").stdout)
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    (r / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=2))
    _run(["chroot", str(r), "systemctl", "enable", "kubelet.service", "containerd.service", "undo-mount-hacks.service"], "systemctl enable")
    _run(["chroot", str(r), "systemctl", "mask", "systemd-binfmt.service"], "systemctl mask")
    (r / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    (r / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
    (r / "etc/cni/net.d/10-labgate-bridge.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "labgate", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2))
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (r / d).glob("*"):
            if p.is_file():
                p.unlink()
    for b in ("kubelet", "kubeadm", "kubectl"):
        put(Path(bins[b]), f"/usr/bin/{b}", 0o755)
    (r / "kind/version").write_text(kube_version)


def build(engine: Engine, *, kube_version: str, kind_version: str, bins: dict[str, str], busybox: str,
          progress: Callable[[str], None] = print) -> tuple[str, bool]:
    """The node image reference, and whether it had to be built."""
    ref = node_ref(kube_version, kind_version)
    if engine.has_image(ref):
        return ref, False
    t0 = time.monotonic()
    root = rootfs(progress)
    files = kind_files(kind_version)
    wanted = images_list(bins["kubeadm"], kube_version)
    progress(f"[kind] assembling node image {ref}")
    work = Path(tempfile.mkdtemp(prefix="labgate-node-"))
    made: list[str] = []
    try:
        r = work / "root"
        _run(["cp", "-a", str(root), str(r)], "copy of the Debian root")
        (r / ".labgate-complete").unlink(missing_ok=True)
        _assemble(r, files, bins, kube_version)
        base = ref + "-base"
        tar = subprocess.Popen(["tar", "-C", str(r), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([engine.docker, "import", "--change", "ENV container=docker", "--change",
                              'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]', "-", base],
                             stdin=tar.stdout, capture_output=True, env={**os.environ, **engine.env()}, timeout=900)
        tar.wait()
        if imp.returncode != 0:
            raise StackError(f"kind node image: docker import failed: {imp.stderr.decode(errors='replace')[-400:]}")
        made.append(base)
        # the control-plane images kubeadm expects, made here from the same binaries
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            single_binary(engine, wanted[name], bins[name], f"/usr/local/bin/{name}")
        single_binary(engine, wanted["etcd"], bins["etcd"], "/usr/local/bin/etcd")
        single_binary(engine, wanted["coredns"], bins["coredns"], "/coredns", entrypoint=["/coredns"])
        from labgate.images import waiter_elf

        pause = work / "pause"
        pause.write_bytes(waiter_elf("amd64"))
        pause_refs = sorted({wanted["pause"], "registry.k8s.io/pause:3.10"})  # kind's containerd config names 3.10
        for pref in pause_refs:
            single_binary(engine, pref, str(pause), "/pause", entrypoint=["/pause"])
        kube_proxy_image(engine, wanted["kube-proxy"], bins["kube-proxy"], r, busybox)
        preload = [*(wanted[n] for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "coredns")), *pause_refs]
        made += preload
        progress("[kind] preloading the control-plane images into the node's containerd")
        _preload(engine, base, preload, ref, work)
    finally:
        for img in made:
            engine.run("rmi", img, check=False)
        subprocess.run(["rm", "-rf", str(work)], capture_output=True)
    progress(f"[kind] node image {ref} built in {time.monotonic() - t0:.0f}s")
    return ref, True


NODE_CHANGES = ("ENTRYPOINT [ \"/usr/local/bin/entrypoint\", \"/sbin/init\" ]", "ENV container=docker")
PRELOADED_OF = "labgate.preloaded-of"  # the label a node image with the stack's images carries: the node image it extends
KEEP_PRELOADS = 2  # per node image (about 1 GB each): the newest


def _preload(engine: Engine, base: str, images: list[str], ref: str, work: Path, label: str = "") -> None:
    """Import ``images`` into the containerd of a container run from ``base`` (not unpacked: the
    first container of each unpacks it, as in kind's own node images) and commit it as ``ref``."""
    container = f"labgate-node-preload-{os.getpid()}"
    saved = work / "preload.tar"
    engine.run("save", "-o", str(saved), *images)
    try:
        engine.run("run", "-d", "--name", container, "--entrypoint", "sleep", "--security-opt", "seccomp=unconfined", base, "infinity")
        engine.run("exec", container, "sh", "-c", "nohup containerd > /tmp/containerd.log 2>&1 &")
        for _ in range(100):
            if engine.run("exec", container, "ctr", "version", check=False).returncode == 0:
                break
            time.sleep(0.2)
        with open(saved, "rb") as fh:
            proc = subprocess.run([engine.docker, "exec", "-i", container, "ctr", "--namespace=k8s.io", "images", "import",
                                   "--all-platforms", "--no-unpack", "--digests", "-"], stdin=fh, capture_output=True,
                                  env={**os.environ, **engine.env()}, timeout=900)
        if proc.returncode != 0:
            raise StackError(f"kind node image: ctr images import failed: {proc.stderr.decode(errors='replace')[-400:]}")
        engine.run("exec", container, "sh", "-c", "kill $(pidof containerd); sleep 1; rm -rf /tmp/* /run/containerd")
        changes = [*NODE_CHANGES, *([f"LABEL {PRELOADED_OF}={label}"] if label else [])]
        engine.run("commit", *(a for c in changes for a in ("--change", c)), container, ref)
    finally:
        engine.run("rm", "-f", "-v", container, check=False)
        saved.unlink(missing_ok=True)


def with_images(engine: Engine, node: str, images: list[str], progress: Callable[[str], None] = print) -> tuple[str, bool]:
    """``node`` with ``images`` (the stack's component images) preloaded into its containerd, and
    whether it had to be built: a cluster made from it needs no ``kind load``, which costs half a
    minute on every run (saving the images and importing them into the node again). Cached by the
    node image and the images' IDs; of the preloads of ``node``, the KEEP_PRELOADS newest stay."""
    ids = engine.run("image", "inspect", "--format", "{{.Id}}", node, *images).stdout.decode().split()
    pairs = sorted(f"{r} {i}" for r, i in zip([node, *images], ids))
    ref = "labgate/kind-node-preloaded:" + hashlib.sha256("\n".join([node, *pairs]).encode()).hexdigest()[:16]
    if engine.has_image(ref):
        return ref, False
    t0 = time.monotonic()
    progress(f"[kind] preloading the stack's images into {ref}")
    work = Path(tempfile.mkdtemp(prefix="labgate-node-"))
    try:
        _preload(engine, node, images, ref, work, label=node)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # newest first: the one just built and the one before it stay (a gate's two sides, each warm)
    made = engine.run("images", "--filter", f"label={PRELOADED_OF}={node}", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    for img in [m for m in made if m != ref][KEEP_PRELOADS - 1:]:
        engine.run("rmi", img, check=False)
    progress(f"[kind] node image with the stack's images {ref} built in {time.monotonic() - t0:.0f}s")
    return ref, True
