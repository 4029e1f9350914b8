"""Unit tests of labgate.signing and labgate.images: wire formats, no registry, no cosign binary.

The registry-level logic (append to ``.sig``, dupe skip, fallback index, transplant and tamper
detection) runs against an in-memory fake that answers like CNCF distribution (no referrers API)
or like zot (referrers API). The real registry and the real cosign are in test_signing_cosign.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from labgate import redact, signing
from labgate.clients.oci import MT_EMPTY, MT_INDEX, MT_MANIFEST, digest
from labgate.images import build_image, push_image

nacl = pytest.importorskip("nacl.secret", reason="pynacl is needed for cosign key files (fix: pip install pynacl)")

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64

# Known answer: written by the real `cosign generate-key-pair` (v3.1.2) with COSIGN_PASSWORD set to
# the value below. A throwaway test key that signs nothing anywhere.
COSIGN_KAT_PASSWORD = "genpass-123"
KAT_DIR = Path(__file__).parent / "data" / "cosign-kat"
COSIGN_KAT_KEY = (KAT_DIR / "cosign.key").read_bytes()
COSIGN_KAT_PUB = (KAT_DIR / "cosign.pub").read_bytes()


@pytest.fixture(scope="module")
def key() -> signing.KeyPair:
    return signing.KeyPair.generate()


@pytest.fixture(scope="module")
def other_key() -> signing.KeyPair:
    return signing.KeyPair.generate()


def _pem_body(pem: bytes) -> tuple[str, list[str], bytes]:
    lines = pem.decode().strip().splitlines()
    assert lines[0].startswith("-----BEGIN ") and lines[-1].startswith("-----END ")
    body_lines = lines[1:-1]
    return lines[0][11:-5], body_lines, base64.b64decode("".join(body_lines))


# ------------------------------------------------------------------------------------------------
# keys


@pytest.mark.parametrize("pem_type", [signing.SIGSTORE_PEM_TYPE, signing.COSIGN_PEM_TYPE])
def test_encrypted_key_round_trip(key, pem_type):
    pem = key.to_cosign_pem("correct horse battery", pem_type=pem_type)
    assert pem.startswith(f"-----BEGIN {pem_type}-----\n".encode())
    back = signing.KeyPair.from_cosign_pem(pem, "correct horse battery")
    assert back.public_pem() == key.public_pem()
    assert back.fingerprint() == key.fingerprint()
    sig = back.sign(b"data")
    key.public_key.verify(sig, b"data", ec.ECDSA(hashes.SHA256()))


def test_empty_password_round_trips(key):
    assert signing.KeyPair.from_cosign_pem(key.to_cosign_pem(""), "").public_pem() == key.public_pem()


def test_wrong_password_and_corruption_are_refused(key):
    pem = key.to_cosign_pem("right-password")
    with pytest.raises(signing.SigningError, match="wrong password"):
        signing.KeyPair.from_cosign_pem(pem, "wrong-password")
    _, _, body = _pem_body(pem)
    env = json.loads(body)
    ct = bytearray(base64.b64decode(env["ciphertext"]))
    ct[-1] ^= 1
    env["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    bad = signing._pem(signing.SIGSTORE_PEM_TYPE, json.dumps(env).encode())
    with pytest.raises(signing.SigningError, match="wrong password or corrupted"):
        signing.KeyPair.from_cosign_pem(bad, "right-password")


def test_other_pem_types_are_refused_like_cosign(key):
    plain = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="unsupported private key PEM type 'PRIVATE KEY'.*import-key-pair"):
        signing.KeyPair.from_cosign_pem(plain, "x")
    with pytest.raises(signing.SigningError, match="scrypt N=1024"):
        key.to_cosign_pem("pw", scrypt_n=1024)


def test_encrypted_key_structure_known_answer(key):
    """The file is exactly go-securesystemslib's envelope; decrypted here independently of
    labgate.signing (hashlib.scrypt + raw libsodium secretbox_open)."""
    from nacl.bindings import crypto_secretbox_open

    password = "kat-password-1"
    pem = key.to_cosign_pem(password)
    pem_type, body_lines, body = _pem_body(pem)
    assert pem_type == "ENCRYPTED SIGSTORE PRIVATE KEY"
    assert all(len(ln) == 64 for ln in body_lines[:-1]) and 0 < len(body_lines[-1]) <= 64  # Go's pem.Encode
    # Go's json.Marshal: compact, struct field order
    assert re.fullmatch(
        rb'\{"kdf":\{"name":"scrypt","params":\{"N":65536,"r":8,"p":1\},"salt":"[A-Za-z0-9+/]{43}="\},'
        rb'"cipher":\{"name":"nacl/secretbox","nonce":"[A-Za-z0-9+/]{32}"\},"ciphertext":"[A-Za-z0-9+/]+=*"\}', body), body
    env = json.loads(body)
    salt, nonce = base64.b64decode(env["kdf"]["salt"]), base64.b64decode(env["cipher"]["nonce"])
    sealed = base64.b64decode(env["ciphertext"])
    assert (len(salt), len(nonce)) == (32, 24)
    pkcs8 = key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
    assert len(sealed) == len(pkcs8) + 16  # Poly1305 tag || ciphertext
    k = hashlib.scrypt(password.encode(), salt=salt, n=65536, r=8, p=1, dklen=32, maxmem=128 * 1024 * 1024)
    assert crypto_secretbox_open(sealed, nonce, k) == pkcs8


def test_key_written_by_real_cosign_loads():
    k = signing.KeyPair.from_cosign_pem(COSIGN_KAT_KEY, COSIGN_KAT_PASSWORD)
    assert k.public_pem() == COSIGN_KAT_PUB
    with pytest.raises(signing.SigningError):
        signing.KeyPair.from_cosign_pem(COSIGN_KAT_KEY, "not-the-password")


def test_key_material_is_registered_for_redaction(key):
    pem = key.to_cosign_pem("a-long-key-password")
    text = f"pw=a-long-key-password file={pem.decode()}"
    out = redact.redact(text)
    assert "a-long-key-password" not in out and "ENCRYPTED SIGSTORE" not in out
    assert "KeyPair(ecdsa-p256 sha256:" in repr(key)


def test_public_key_formats(key):
    pub = serialization.load_pem_public_key(key.public_pem())
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert key.public_pem().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    der = key.public_der()
    assert key.fingerprint() == "sha256:" + hashlib.sha256(der).hexdigest()
    assert key.hint() == base64.b64encode(hashlib.sha256(der).digest()).decode()
    assert signing.public_key_hint(key.public_pem()) == key.hint()


def test_signature_is_der_ecdsa_sha256(key):
    sig = key.sign(b"payload bytes")
    r, s = decode_dss_signature(sig)  # DER, not raw r||s
    assert r > 0 and s > 0
    serialization.load_pem_public_key(key.public_pem()).verify(sig, b"payload bytes", ec.ECDSA(hashes.SHA256()))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert signing._verify_ecdsa(key.public_key, raw, b"payload bytes"), "raw r||s is accepted, like sigstore"
    assert not signing._verify_ecdsa(key.public_key, sig, b"other bytes")
    other = signing._other_signature(sig)
    decode_dss_signature(other)
    assert not signing._verify_ecdsa(key.public_key, other, b"payload bytes")
    # a signature off by one bit in s (the signature-byte-flipped mutation) tampered again is still invalid
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    for off in (encode_dss_signature(r, s ^ 1), encode_dss_signature(r, n - s)):
        assert not signing._verify_ecdsa(key.public_key, signing._other_signature(off), b"payload bytes")


# ------------------------------------------------------------------------------------------------
# payload and bundle shapes


def test_simple_signing_payload_shape():
    p = signing.simple_signing_payload("127.0.0.1:5000/app", DIGEST_A)
    assert p == (b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/app"},"image":{"docker-manifest-digest":"'
                 + DIGEST_A.encode() + b'"},"type":"cosign container image signature"},"optional":null}')
    p2 = json.loads(signing.simple_signing_payload("r/app", DIGEST_A, {"env": "prod"}))
    assert p2["optional"] == {"env": "prod"}
    with pytest.raises(signing.SigningError, match="strings"):
        signing.simple_signing_payload("r/app", DIGEST_A, {"n": 1})  # type: ignore[dict-item]


def test_pae_matches_the_dsse_spec_vector():
    assert signing.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert signing.pae("application/vnd.in-toto+json", b"") == b"DSSEv1 28 application/vnd.in-toto+json 0 "


def test_bundle_shape(key):
    raw = signing.make_bundle(DIGEST_A, key)
    b = json.loads(raw)
    assert list(b) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert b["verificationMaterial"] == {"publicKey": {"hint": key.hint()}}
    assert "tlogEntries" not in b["verificationMaterial"]
    env = b["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert len(env["signatures"]) == 1 and set(env["signatures"][0]) == {"sig"}
    payload = base64.b64decode(env["payload"])
    # byte-identical to what cosign v3.1.2 signs (protojson of the statement, observed)
    assert payload == (b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"' + b"a" * 64
                       + b'"},"annotations":{}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}')
    pae = b"DSSEv1 28 application/vnd.in-toto+json %d %s" % (len(payload), payload)
    sig = base64.b64decode(env["signatures"][0]["sig"])
    key.public_key.verify(sig, pae, ec.ECDSA(hashes.SHA256()))  # over the PAE, not the bare payload
    with pytest.raises(Exception):
        key.public_key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))


def test_bundle_validates_against_the_sigstore_protobuf_schema(key):
    models = pytest.importorskip("sigstore_models.bundle.v1", reason="sigstore-models not installed (pip install sigstore-models)")
    bundle = json.loads(signing.make_bundle(DIGEST_A, key, {"team": "x"}))
    # sigstore-models 0.0.6 makes verificationMaterial.tlogEntries required ("Field required"), while
    # protobuf (and cosign v3.1.2, which omits it in the bundles it pushes) treats absent as empty
    bundle["verificationMaterial"].setdefault("tlogEntries", [])
    parsed = models.Bundle.model_validate(bundle)
    assert parsed.media_type == signing.MT_BUNDLE
    assert parsed.dsse_envelope.payload_type == signing.INTOTO_PAYLOAD_TYPE


# ------------------------------------------------------------------------------------------------
# images


def test_build_image_is_deterministic_and_real():
    a, b, c = build_image("seed-1"), build_image("seed-1"), build_image("seed-2")
    assert a.digest == b.digest and a.manifest == b.manifest
    assert c.digest != a.digest
    assert build_image("seed-1", architecture="arm64").digest != a.digest
    tar = gzip.decompress(a.layer)
    assert a.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        hello, waiter = t.getmembers()
        assert hello.name == "hello.txt" and hello.mtime == 946684800 and hello.uid == 0
        assert t.extractfile(hello).read() == b"hello from seed-1\n"
        assert waiter.name == "labgate-wait" and waiter.mode == 0o755
        assert t.extractfile(waiter).read()[:4] == b"\x7fELF"
    config = json.loads(a.config)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["Entrypoint"] == ["/labgate-wait"], "the image runs: a pod of it reaches Running"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [a.diff_id]}
    m = json.loads(a.manifest)
    assert m["mediaType"] == MT_MANIFEST and m["config"]["digest"] == a.config_digest
    assert m["layers"] == [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": a.layer_digest,
                            "size": len(a.layer)}]


def test_waiter_runs_and_waits(tmp_path):
    """The runnable images' entrypoint: a static program that waits until it is killed."""
    import platform
    import subprocess

    from labgate.images import waiter_elf

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if arch is None:
        pytest.skip(f"no waiter for {platform.machine()}")
    exe = tmp_path / "wait"
    exe.write_bytes(waiter_elf(arch))
    exe.chmod(0o755)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([str(exe)], timeout=1)


# ------------------------------------------------------------------------------------------------
# an in-memory registry


@dataclass
class _Resp:
    status_code: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class FakeRegistry:
    """Just enough of OciClient. ``referrers_api=False`` answers like CNCF distribution v3."""

    referrers_api: bool = False
    base_url: str = "http://127.0.0.1:5000"
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> body, type
    tags: dict[str, str] = field(default_factory=dict)  # "repo:tag" -> digest
    puts: list[str] = field(default_factory=list)

    def head_blob(self, repo, dgst):
        return _Resp(200 if dgst in self.blobs else 404)

    def push_blob(self, repo, data, algorithm="sha256"):
        self.blobs[digest(data)] = data
        return digest(data)

    def get_blob(self, repo, dgst, headers=None):
        return _Resp(200, self.blobs[dgst]) if dgst in self.blobs else _Resp(404)

    def put_manifest(self, repo, reference, body, media_type=MT_MANIFEST):
        d = digest(body)
        m = json.loads(body)
        for desc in [m.get("config")] + list(m.get("layers") or []):
            if desc and desc["digest"] not in self.blobs:
                return _Resp(400, b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
        if reference.startswith("sha256:") and reference != d:
            return _Resp(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
        self.manifests[d] = (body, media_type)
        if not reference.startswith("sha256:"):
            self.tags[f"{repo}:{reference}"] = d
        self.puts.append(reference)
        h = {"Docker-Content-Digest": d}
        if self.referrers_api and m.get("subject"):
            h["OCI-Subject"] = m["subject"]["digest"]
        return _Resp(201, b"", h)

    def _resolve(self, repo, ref):
        return ref if ref.startswith("sha256:") else self.tags.get(f"{repo}:{ref}")

    def get_manifest(self, repo, reference, accept=()):
        d = self._resolve(repo, reference)
        if d not in self.manifests:
            return _Resp(404)
        body, mt = self.manifests[d]
        return _Resp(200, body, {"Content-Type": mt, "Docker-Content-Digest": d})

    def referrers(self, repo, dgst, artifact_type=None):
        if not self.referrers_api:
            return _Resp(404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
        out = []
        for d, (body, mt) in self.manifests.items():
            m = json.loads(body)
            if (m.get("subject") or {}).get("digest") == dgst:
                out.append({"mediaType": mt, "digest": d, "size": len(body),
                            "artifactType": m.get("artifactType") or m["config"]["mediaType"],
                            "annotations": m.get("annotations", {})})
        body = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": out}).encode()
        return _Resp(200, body, {"Content-Type": MT_INDEX})


REPO = "conformance/signing"


@pytest.fixture
def reg():
    return FakeRegistry()


def _image(reg, seed="img") -> str:
    return push_image(reg, REPO, seed, build_image(seed))


def test_legacy_sign_verify_and_manifest_shape(reg, key, other_key):
    d = _image(reg)
    sig_digest = signing.sign_legacy(reg, REPO, d, key, annotations={"team": "e2e"})
    body, mt = reg.manifests[reg.tags[f"{REPO}:{signing.sig_tag(d)}"]]
    assert sig_digest == digest(body) and mt == MT_MANIFEST
    m = json.loads(body)
    assert m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = m["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert set(layer["annotations"]) == {"dev.cosignproject.cosign/signature"}
    payload = reg.blobs[layer["digest"]]
    key.public_key.verify(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]), payload,
                          ec.ECDSA(hashes.SHA256()))
    assert json.loads(payload)["critical"]["identity"]["docker-reference"] == f"127.0.0.1:5000/{REPO}"
    config = json.loads(reg.blobs[m["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    (ok,) = signing.verify_legacy(reg, REPO, d, key.public_pem())
    assert ok["claimed_digest"] == d and ok["annotations"] == {"team": "e2e"}
    assert signing.verify_legacy(reg, REPO, d, other_key.public_pem()) == []
    assert signing.verify_legacy(reg, REPO, _image(reg, "unsigned"), key.public_pem()) == []


def test_legacy_signature_stored_in_another_repository(reg, key):
    """COSIGN_REPOSITORY: the .sig manifest goes to the signature repository, its payload names the image."""
    d = _image(reg)
    signing.sign_legacy(reg, REPO, d, key, signature_repo="conformance/signatures")
    assert f"conformance/signatures:{signing.sig_tag(d)}" in reg.tags
    assert f"{REPO}:{signing.sig_tag(d)}" not in reg.tags
    (ok,) = signing.verify_legacy(reg, REPO, d, key.public_pem(), signature_repo="conformance/signatures")
    assert ok["docker_reference"] == f"127.0.0.1:5000/{REPO}"
    assert signing.verify_legacy(reg, REPO, d, key.public_pem()) == []


def test_legacy_resign_appends_and_skips_duplicates(reg, key, other_key):
    d = _image(reg)
    first = signing.sign_legacy(reg, REPO, d, key)
    assert signing.sign_legacy(reg, REPO, d, key) == first, "same key + payload: nothing written"
    second = signing.sign_legacy(reg, REPO, d, other_key)
    assert second != first
    layers = json.loads(reg.manifests[second][0])["layers"]
    assert len(layers) == 2 and layers[0] == json.loads(reg.manifests[first][0])["layers"][0]
    assert len(signing.verify_legacy(reg, REPO, d, key.public_pem())) == 1
    assert len(signing.verify_legacy(reg, REPO, d, other_key.public_pem())) == 1
    third = signing.sign_legacy(reg, REPO, d, key, annotations={"k": "v"})  # other payload: appended
    assert len(json.loads(reg.manifests[third][0])["layers"]) == 3


def test_transplanted_legacy_signature_fails(reg, key):
    a, b = _image(reg, "a"), _image(reg, "b")
    signing.sign_legacy(reg, REPO, a, key)
    signing.copy_signature(reg, REPO, a, b)
    assert signing.verify_legacy(reg, REPO, b, key.public_pem()) == []
    (entry,) = signing.inspect_legacy(reg, REPO, b, key.public_pem())
    assert entry["reason"] == f"invalid or missing digest in claim: {a}"
    with pytest.raises(signing.SigningError, match="does not exist"):
        signing.copy_signature(reg, REPO, DIGEST_B, a)


@pytest.mark.parametrize("what", ["payload", "annotation"])
def test_tampered_legacy_signature_fails(reg, key, what):
    d = _image(reg)
    signing.sign_legacy(reg, REPO, d, key)
    signing.sign_legacy(reg, REPO, d, key, annotations={"second": "layer"})
    signing.tamper_legacy(reg, REPO, d, what)
    entries = signing.inspect_legacy(reg, REPO, d, key.public_pem())
    assert len(entries) == 2 and all(e["reason"].startswith("invalid signature") for e in entries)
    with pytest.raises(ValueError):
        signing.tamper_legacy(reg, REPO, d, "config")


@pytest.mark.parametrize("referrers_api", [False, True], ids=["fallback-tag", "referrers-api"])
def test_bundle_referrer_and_fallback_index(key, other_key, referrers_api):
    reg = FakeRegistry(referrers_api=referrers_api)
    d = _image(reg)
    ref = signing.sign_bundle(reg, REPO, d, key)
    body, _ = reg.manifests[ref]
    assert ref in reg.puts, "the referrer is pushed by digest"
    m = json.loads(body)
    assert m["artifactType"] == signing.MT_BUNDLE
    assert m["config"] == {"mediaType": MT_EMPTY, "digest": digest(b"{}"), "size": 2, "artifactType": signing.MT_BUNDLE}
    (layer,) = m["layers"]
    assert layer["mediaType"] == signing.MT_BUNDLE
    assert m["subject"] == {"mediaType": MT_MANIFEST, "digest": d, "size": len(build_image("img").manifest)}
    assert m["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
    assert m["annotations"]["dev.sigstore.bundle.predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    fallback = f"{REPO}:{signing.fallback_tag(d)}"
    if referrers_api:
        assert fallback not in reg.tags
    else:
        index = json.loads(reg.manifests[reg.tags[fallback]][0])
        assert index["mediaType"] == MT_INDEX
        assert index["manifests"] == [{"mediaType": MT_MANIFEST, "digest": ref, "size": len(body),
                                       "artifactType": signing.MT_BUNDLE, "annotations": m["annotations"]}]
    ref2 = signing.sign_bundle(reg, REPO, d, other_key)
    if not referrers_api:
        index = json.loads(reg.manifests[reg.tags[fallback]][0])
        assert sorted(x["digest"] for x in index["manifests"]) == sorted([ref, ref2]), "read-modify-write keeps both"
    (ok,) = signing.verify_bundles(reg, REPO, d, key.public_pem())
    assert ok["referrer"] == ref and ok["hint_matches"] and ok["source"] == ("api" if referrers_api else "fallback")
    assert ok["predicate_type"] == signing.COSIGN_SIGN_PREDICATE
    assert [e["referrer"] for e in signing.verify_bundles(reg, REPO, d, other_key.public_pem())] == [ref2]
    assert signing.verify_bundles(reg, REPO, _image(reg, "unsigned"), key.public_pem()) == []


def test_transplanted_bundle_fails(reg, key):
    """A valid bundle for image A listed as a referrer of image B: the statement's subject and the
    manifest's subject both name A."""
    a, b = _image(reg, "a"), _image(reg, "b")
    ref = signing.sign_bundle(reg, REPO, a, key)
    body, _ = reg.manifests[ref]
    signing._add_to_fallback_index(reg, REPO, b, {"mediaType": MT_MANIFEST, "digest": ref, "size": len(body),
                                                   "artifactType": signing.MT_BUNDLE})
    assert signing.verify_bundles(reg, REPO, b, key.public_pem()) == []
    (entry,) = signing.inspect_bundles(reg, REPO, b, key.public_pem())
    assert entry["reason"] == f"referrer subject is {a}, not {b}"
    # same bundle, rewrapped in a manifest whose subject is B: caught by the statement
    m = json.loads(body)
    m["subject"] = signing.subject_descriptor(reg, REPO, b)
    rewrapped = json.dumps(m).encode()
    reg.put_manifest(REPO, digest(rewrapped), rewrapped)
    signing._add_to_fallback_index(reg, REPO, b, {"mediaType": MT_MANIFEST, "digest": digest(rewrapped),
                                                   "size": len(rewrapped)})
    reasons = {e["reason"] for e in signing.inspect_bundles(reg, REPO, b, key.public_pem())}
    assert f"invalid or missing digest in claim: {a}" in reasons


def test_sign_refuses_a_missing_image(reg, key):
    with pytest.raises(signing.SigningError, match="no such manifest"):
        signing.sign_bundle(reg, REPO, DIGEST_A, key)
    with pytest.raises(signing.SigningError, match="sha256 digest"):
        signing.sig_tag("sha512:abc")
