"""Integration: labgate.signing against the real cosign binary and a real registry.

Both directions: cosign verifies what the harness signs (legacy ``.sig`` and v3 bundle, the bundle
found through the referrers fallback tag on CNCF distribution), the harness verifies what
``cosign sign`` writes, and key files cross over both ways. Negative cases assert cosign's exact
error text next to the harness's verdict, so the two verifiers are known to agree.

cosign comes from COSIGN_BIN (else the toolchain cache). The stack is started with
`labgate stack up` under a private LABGATE_CACHE (so it never meets another stack's pointer) and
stopped with `labgate stack down --state`. Registry credentials reach cosign as flags only; commands shown in
failure messages have the password replaced, and all output goes through labgate.redact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labgate import redact, signing, toolchain
from labgate.clients.oci import OciClient
from labgate.images import build_image, push_image
from labgate.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration

COSIGN_MISSING = "cosign not available: set COSIGN_BIN (fix: labgate tools install cosign)"
REPO = "conformance/signing"
ROBOT = "ci-robot"
# offline, key-based, no Rekor/TUF: shared/reference/admission-signing.md §1.3 "Choosing a format"
SIGN_FLAGS = ["sign", "-y", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"]
VERIFY_FLAGS = ["verify", "--insecure-ignore-tlog=true", "--allow-http-registry"]
LEGACY = ["--new-bundle-format=false"]


@dataclass
class Cosign:
    bin: str
    host: str
    user: str
    password: str = field(repr=False)
    home: Path

    def run(self, *args: str, key_password: str | None = None, registry: bool = True,
            cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("COSIGN_", "SIGSTORE_", "TUF_")) and k != "DOCKER_CONFIG"}
        env.update(HOME=str(self.home), DOCKER_CONFIG=str(self.home / "docker"), TUF_ROOT=str(self.home / "tuf"))
        if key_password is not None:
            env["COSIGN_PASSWORD"] = key_password
        cmd = [self.bin, *args]
        if registry:
            cmd[2:2] = signing.cosign_registry_flags(self.user, self.password)
        proc = subprocess.run(cmd, cwd=cwd or self.home, env=env, capture_output=True, text=True, timeout=timeout)
        proc.args = ["cosign", *[a.replace(self.password, "<redacted>") for a in cmd[1:]]]
        proc.stdout, proc.stderr = redact.redact(proc.stdout), redact.redact(proc.stderr)
        return proc

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        proc = self.run(*args, **kw)
        assert proc.returncode == 0, _show(proc)
        return proc

    def ref(self, dgst: str) -> str:
        return f"{self.host}/{REPO}@{dgst}"


def _show(proc: subprocess.CompletedProcess) -> str:
    return f"`{' '.join(proc.args)}` exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
    assert lines, _show(proc)
    return lines[-1]


@dataclass
class Env:
    stack: Stack
    client: OciClient
    cosign: Cosign
    tmp: Path

    @property
    def fallback_expected(self) -> bool:
        """CNCF distribution has no referrers API (GET .../referrers/<digest> answers 404)."""
        return self.stack.registry_kind == "distribution"

    def image(self, seed: str) -> str:
        return push_image(self.client, REPO, seed, build_image(seed))

    def write(self, name: str, data: bytes) -> Path:
        p = self.tmp / name
        p.write_bytes(data)
        p.chmod(0o600)
        return p


def _executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


@pytest.fixture(scope="module")
def cosign_bin() -> str:
    """COSIGN_BIN, else what `labgate tools install cosign` put in the toolchain cache."""
    path = os.environ.get("COSIGN_BIN", "")
    if not path:
        try:
            r = toolchain.resolve("cosign")
            path = r.path if r.available else ""
        except Exception:  # a toolchain without a cosign entry
            path = ""
    if not _executable(path):
        pytest.skip(COSIGN_MISSING)
    return path


@pytest.fixture(scope="module")
def env(cosign_bin) -> Env:
    r = toolchain.resolve("distribution")
    if not r.available:
        pytest.skip(f"distribution registry not available: {r.reason} (fix: labgate tools install distribution)")
    # not tmp_path_factory: a concurrent pytest run by the same user prunes old /tmp/pytest-of-<user>
    # directories, and with them the key files and cosign's HOME while these tests use them
    tmp = Path(tempfile.mkdtemp(prefix="labgate-signing-test-"))
    cli = [sys.executable, "-m", "labgate.cli"]
    # `stack up` refuses when the cache's current-stack pointer names a live stack: a private cache
    # root keeps this stack apart from a developer's stack and from other xdist workers
    run_env = {k: v for k, v in os.environ.items() if k != "LABGATE_STATE"}
    run_env.update(LABGATE_CACHE=str(tmp / "cache"), DISTRIBUTION_BIN=r.path)
    up = subprocess.run([*cli, "stack", "up", "--reports", str(tmp / "reports")], cwd=ROOT, env=run_env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, redact.redact(up.stderr)
    state = re.search(r"state file: (\S+)", up.stdout).group(1)
    try:
        stack = Stack.load(state)
        password = stack.password(ROBOT)
        client = OciClient(stack.registry_url, (ROBOT, password))
        home = tmp / "home"
        (home / "docker").mkdir(parents=True)
        yield Env(stack, client, Cosign(cosign_bin, stack.registry_host, ROBOT, password, home), tmp)
    finally:
        down = subprocess.run([*cli, "stack", "down", "--state", state], cwd=ROOT, env=run_env,
                              capture_output=True, text=True, timeout=120)
        if down.returncode == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        assert down.returncode == 0, redact.redact(down.stderr)


@pytest.fixture(scope="module")
def harness_key(env) -> tuple[signing.KeyPair, Path, Path, str]:
    """A harness key, as cosign.key (encrypted by the harness) + cosign.pub, and its password."""
    key = signing.KeyPair.generate()
    password = "harness-" + os.urandom(8).hex()
    key_file = env.write("harness.key", key.to_cosign_pem(password))
    pub_file = env.write("harness.pub", key.public_pem())
    return key, key_file, pub_file, password


def _verified_payloads(proc: subprocess.CompletedProcess) -> list[dict]:
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# cosign verifies what the harness signs


def test_cosign_verifies_harness_legacy_signature(env, harness_key):
    key, _, pub, _ = harness_key
    d = env.image("harness-legacy")
    signing.sign_legacy(env.client, REPO, d, key, annotations={"team": "e2e"})
    proc = env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), *LEGACY, env.cosign.ref(d))
    (payload,) = _verified_payloads(proc)
    assert payload["critical"]["image"]["docker-manifest-digest"] == d
    assert payload["critical"]["type"] == "cosign container image signature"
    assert payload["optional"] == {"team": "e2e"}
    # cosign's annotation check (-a) works against the harness payload
    env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), *LEGACY, "-a", "team=e2e", env.cosign.ref(d))


def test_cosign_verifies_harness_bundle_signature(env, harness_key):
    key, _, pub, _ = harness_key
    d = env.image("harness-bundle")
    ref = signing.sign_bundle(env.client, REPO, d, key)
    listed, source = signing.list_referrers(env.client, REPO, d)
    assert ref in [m["digest"] for m in listed]
    if env.fallback_expected:
        assert source == "fallback", "distribution: the bundle is found through the sha256-<hex> index"
    proc = env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), env.cosign.ref(d))
    (payload,) = _verified_payloads(proc)
    assert payload["critical"]["image"]["docker-manifest-digest"] == d
    assert payload["critical"]["type"] == signing.COSIGN_SIGN_PREDICATE, "cosign took the bundle path"


# ------------------------------------------------------------------------------------------------
# the harness verifies what cosign signs (with a key file the harness encrypted)


def test_harness_verifies_cosign_legacy_signature(env, harness_key):
    key, key_file, pub, password = harness_key
    d = env.image("cosign-legacy")
    env.cosign.ok(*SIGN_FLAGS, "--key", str(key_file), *LEGACY, env.cosign.ref(d), key_password=password)
    (entry,) = signing.verify_legacy(env.client, REPO, d, key.public_pem())
    assert entry["claimed_digest"] == d
    assert entry["docker_reference"] == f"{env.cosign.host}/{REPO}"
    assert signing.verify_bundles(env.client, REPO, d, key.public_pem()) == []


def test_harness_verifies_cosign_bundle_signature(env, harness_key):
    key, key_file, pub, password = harness_key
    d = env.image("cosign-bundle")
    env.cosign.ok(*SIGN_FLAGS, "--key", str(key_file), env.cosign.ref(d), key_password=password)
    (entry,) = signing.verify_bundles(env.client, REPO, d, key.public_pem())
    assert entry["claimed_digests"] == [d] and entry["hint_matches"]
    assert entry["source"] == ("fallback" if env.fallback_expected else "api")
    assert signing.verify_legacy(env.client, REPO, d, key.public_pem()) == []
    # and the harness accepts an index cosign maintains: a harness bundle is added next to cosign's
    other = signing.KeyPair.generate()
    signing.sign_bundle(env.client, REPO, d, other)
    assert len(signing.verify_bundles(env.client, REPO, d, key.public_pem())) == 1
    assert len(signing.verify_bundles(env.client, REPO, d, other.public_pem())) == 1
    env.cosign.ok(*VERIFY_FLAGS, "--key", str(env.write("other.pub", other.public_pem())), env.cosign.ref(d))
    env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), env.cosign.ref(d))


# ------------------------------------------------------------------------------------------------
# key files cross over


def test_cosign_generated_key_loads_in_harness(env):
    workdir = env.tmp / "generated"
    workdir.mkdir()
    password = "gen-" + os.urandom(8).hex()
    redact.register(password, "cosign-generated-key-password")
    env.cosign.ok("generate-key-pair", key_password=password, registry=False, cwd=workdir)
    pem = (workdir / "cosign.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    key = signing.KeyPair.from_cosign_pem(pem, password)
    assert key.public_pem() == (workdir / "cosign.pub").read_bytes()
    with pytest.raises(signing.SigningError, match="wrong password"):
        signing.KeyPair.from_cosign_pem(pem, password + "x")
    d = env.image("generated-key")
    signing.sign_legacy(env.client, REPO, d, key)
    env.cosign.ok(*VERIFY_FLAGS, "--key", str(workdir / "cosign.pub"), *LEGACY, env.cosign.ref(d))


@pytest.mark.parametrize("pem_type,password", [
    (signing.SIGSTORE_PEM_TYPE, "pw-" + "s" * 12),
    (signing.COSIGN_PEM_TYPE, "pw-" + "c" * 12),
    (signing.SIGSTORE_PEM_TYPE, ""),
], ids=["sigstore-pem", "older-cosign-pem", "empty-password"])
def test_harness_key_file_accepted_by_cosign_sign(env, pem_type, password):
    key = signing.KeyPair.generate()
    name = f"harness-key-{pem_type.split()[1].lower()}-{len(password)}"
    key_file = env.write(f"{name}.key", key.to_cosign_pem(password, pem_type=pem_type))
    d = env.image(name)
    env.cosign.ok(*SIGN_FLAGS, "--key", str(key_file), *LEGACY, env.cosign.ref(d), key_password=password)
    assert len(signing.verify_legacy(env.client, REPO, d, key.public_pem())) == 1


# ------------------------------------------------------------------------------------------------
# key rotation: harness and cosign append to the same .sig manifest


def test_rotation_overlap_legacy(env, harness_key):
    old, _, old_pub, _ = harness_key
    new = signing.KeyPair.generate()
    new_password = "new-" + os.urandom(8).hex()
    new_key = env.write("new.key", new.to_cosign_pem(new_password))
    new_pub = env.write("new.pub", new.public_pem())
    d = env.image("rotation")
    first = signing.sign_legacy(env.client, REPO, d, old)
    env.cosign.ok(*SIGN_FLAGS, "--key", str(new_key), *LEGACY, env.cosign.ref(d), key_password=new_password)
    manifest = env.client.get_manifest(REPO, signing.sig_tag(d)).json()
    assert len(manifest["layers"]) == 2, "cosign appended to the harness's .sig manifest"
    for pub in (old_pub, new_pub):
        env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), *LEGACY, env.cosign.ref(d))
    assert len(signing.verify_legacy(env.client, REPO, d, old.public_pem())) == 1
    assert len(signing.verify_legacy(env.client, REPO, d, new.public_pem())) == 1
    # re-signing with the old key is a duplicate for the harness, as for cosign
    current = signing.content_digest(env.client.get_manifest(REPO, signing.sig_tag(d)).content)
    assert current != first
    assert signing.sign_legacy(env.client, REPO, d, old) == current, "nothing written"
    assert len(env.client.get_manifest(REPO, signing.sig_tag(d)).json()["layers"]) == 2
    env.cosign.ok(*SIGN_FLAGS, "--key", str(new_key), *LEGACY, env.cosign.ref(d), key_password=new_password)
    assert len(env.client.get_manifest(REPO, signing.sig_tag(d)).json()["layers"]) == 2, "cosign's dupe detector"
    # and the harness appends to a manifest cosign wrote: all three keys verify in cosign
    third = signing.KeyPair.generate()
    signing.sign_legacy(env.client, REPO, d, third)
    assert len(env.client.get_manifest(REPO, signing.sig_tag(d)).json()["layers"]) == 3
    for pub in (old_pub, new_pub, env.write("third.pub", third.public_pem())):
        env.cosign.ok(*VERIFY_FLAGS, "--key", str(pub), *LEGACY, env.cosign.ref(d))


# ------------------------------------------------------------------------------------------------
# what both verifiers reject, with cosign's exact words


@pytest.mark.parametrize("case", ["transplanted", "tampered-payload", "tampered-annotation", "wrong-key", "unsigned"])
def test_cosign_and_harness_reject_bad_legacy_signatures(env, harness_key, case):
    key, _, pub, _ = harness_key
    d = env.image(f"bad-{case}")
    expected = "Error: no matching signatures: invalid signature when validating ASN.1 encoded signature"
    if case == "transplanted":
        src = env.image(f"bad-{case}-source")
        signing.sign_legacy(env.client, REPO, src, key)
        signing.copy_signature(env.client, REPO, src, d)
        expected = f"Error: no matching signatures: invalid or missing digest in claim: {src}"
    elif case.startswith("tampered"):
        signing.sign_legacy(env.client, REPO, d, key)
        signing.tamper_legacy(env.client, REPO, d, case.split("-")[1])
    elif case == "wrong-key":
        signing.sign_legacy(env.client, REPO, d, signing.KeyPair.generate())
    else:
        expected = "Error: no signatures found"
    assert signing.verify_legacy(env.client, REPO, d, key.public_pem()) == []
    proc = env.cosign.run(*VERIFY_FLAGS, "--key", str(pub), *LEGACY, env.cosign.ref(d))
    assert proc.returncode != 0, _show(proc)
    assert _error_line(proc) == expected


def test_cosign_and_harness_reject_transplanted_bundle(env, harness_key):
    """A valid bundle of image A listed as a referrer of image B (the fallback index of B)."""
    key, _, pub, _ = harness_key
    a, b = env.image("bundle-transplant-a"), env.image("bundle-transplant-b")
    ref = signing.sign_bundle(env.client, REPO, a, key)
    if not env.fallback_expected:
        pytest.skip("the registry computes referrers from subject fields; nothing to transplant into")
    body = env.client.get_manifest(REPO, ref).content
    signing._add_to_fallback_index(env.client, REPO, b, {"mediaType": signing.MT_MANIFEST, "digest": ref,
                                                          "size": len(body), "artifactType": signing.MT_BUNDLE})
    assert signing.verify_bundles(env.client, REPO, b, key.public_pem()) == []
    proc = env.cosign.run(*VERIFY_FLAGS, "--key", str(pub), env.cosign.ref(b))
    assert proc.returncode != 0, _show(proc)
    # the bundle path names neither digest (the legacy path says "invalid or missing digest in claim")
    assert _error_line(proc) == ("Error: no matching attestations: failed to verify signature: "
                                 "provided artifact digest does not match any digest in statement")


@pytest.mark.parametrize("password", ["-leading-dash", "plain_value", "-a=b"])
def test_registry_password_reaches_the_registry_verbatim(cosign_bin, tmp_path, password):
    """Unit test of the credential flags against a fake registry that only records the Basic
    credentials it is sent: cosign rewrites a one-dash argument into a two-dash flag, so a random
    password that starts with '-' (token_urlsafe gives one in 64) must travel as --flag=value."""
    import base64
    import http.server
    import threading

    seen: list[str] = []

    class Challenge(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                seen.append(base64.b64decode(auth[6:]).decode())
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fake"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Challenge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ref = f"127.0.0.1:{server.server_port}/some/repo@sha256:{'0' * 64}"
        cmd = [cosign_bin, "verify", "--key", "/dev/null", "--insecure-ignore-tlog", "--allow-http-registry", *signing.cosign_registry_flags(ROBOT, password), ref]
        subprocess.run(cmd, env={**os.environ, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert seen, "cosign sent no credentials to the registry's Basic challenge"
    assert set(seen) == {f"{ROBOT}:{password}"}, f"cosign sent other credentials than given: {sorted(seen)}"
