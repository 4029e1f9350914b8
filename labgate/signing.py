"""Cosign-compatible image signing and verification in pure Python.

Wire formats (facts and sources: shared/reference/admission-signing.md §1.1–1.5, cosign v3.1.2):

* **Keys** – ECDSA P-256. The public key is a PKIX ``PUBLIC KEY`` PEM. The private key is cosign's
  ``ENCRYPTED SIGSTORE PRIVATE KEY`` PEM (older: ``ENCRYPTED COSIGN PRIVATE KEY``): its body is the
  go-securesystemslib JSON envelope ``{"kdf":{scrypt N,r,p,salt},"cipher":{nacl/secretbox,nonce},
  "ciphertext"}`` (standard base64) around the PKCS#8 DER key.
* **Legacy "simple signing"** – the tag ``sha256-<hex>.sig`` holds an OCI manifest with one layer
  per signature: the layer blob is the simple-signing payload, its descriptor annotation
  ``dev.cosignproject.cosign/signature`` is base64(ECDSA-SHA256 DER over the blob).
* **Sigstore bundle v0.3** (cosign v3's default) – an OCI 1.1 referrer manifest (pushed by digest,
  ``subject`` = the image) whose single layer is a bundle with a DSSE envelope over an in-toto
  statement (predicateType ``https://sigstore.dev/cosign/sign/v1``). On a registry without the
  referrers API the OCI "referrers tag schema" index ``sha256-<hex>`` is maintained instead.

Verification contract: :func:`verify_legacy` / :func:`verify_bundles` return the signatures that
verified (a possibly empty list) and never raise because a signature is bad or absent; they raise
:class:`SigningError` only when the registry answers something unexpected (e.g. a 500, or a ``.sig``
tag that is not a manifest). :func:`inspect_legacy` / :func:`inspect_bundles` return every candidate
with ``ok`` and the ``reason`` it was rejected, for negative tests.

Every private key password and private key PEM this module creates or loads is registered with
:mod:`labgate.redact`. Nothing here is safe against concurrent writers of the same ``.sig`` tag or
fallback index (read-modify-write without conditional requests, like cosign/ggcr themselves).

Needs ``pynacl`` (NaCl secretbox) only for encrypted key files; everything else is ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from labgate import redact
from labgate.clients.oci import MT_CONFIG, MT_EMPTY, MT_INDEX, MT_MANIFEST, EMPTY_JSON, OciClient, descriptor
from labgate.clients.oci import digest as content_digest

# ------------------------------------------------------------------------------------------------
# constants (cosign v3.1.2 / sigstore v1.10.8 / sigstore-go v1.2.1)

SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
# go-securesystemslib CheckParams: Legacy (2^15), Standard (2^16, the default), OWASP (2^17)
SCRYPT_PARAMS = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
SCRYPT_N_MIN = 32768  # the cheapest N cosign accepts: half the key derivation, for keys made per test

MT_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLESIGNING_TYPE = "cosign container image signature"

MT_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MT_PREFIX = "application/vnd.dev.sigstore.bundle"
BUNDLE_V03_TYPES = {MT_BUNDLE, "application/vnd.dev.sigstore.bundle+json;version=0.3"}
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANN_BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
ANN_CREATED = "org.opencontainers.image.created"

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_MANIFEST_ACCEPT = (MT_MANIFEST, MT_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST)

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class SigningError(Exception):
    """The registry or a key file did not behave as the signing protocol requires."""


# ------------------------------------------------------------------------------------------------
# keys


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _go_json(obj: Any) -> bytes:
    """Compact JSON in insertion order, like Go's json.Marshal of a struct."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is too small for N=2^16 ("memory limit exceeded")
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=maxmem)


def _pem(pem_type: str, body: bytes) -> bytes:
    b = _b64(body)
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return (f"-----BEGIN {pem_type}-----\n" + "\n".join(lines) + f"\n-----END {pem_type}-----\n").encode()


def _unpem(pem: bytes) -> tuple[str, bytes]:
    text = pem.decode("ascii", errors="replace").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise SigningError("not a PEM block")
    pem_type = lines[0][len("-----BEGIN "):-5]
    try:
        end = lines.index(f"-----END {pem_type}-----")
    except ValueError:
        raise SigningError(f"PEM block {pem_type!r} has no END line") from None
    body = [ln for ln in lines[1:end] if ":" not in ln]  # skip RFC 1421 headers, cosign writes none
    return pem_type, base64.b64decode("".join(body))


def load_public_key(public_pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """A PKIX ``PUBLIC KEY`` PEM (what ``cosign generate-key-pair`` writes as cosign.pub)."""
    if isinstance(public_pem, str):
        public_pem = public_pem.encode()
    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningError(f"only ECDSA public keys are supported, got {type(key).__name__}")
    return key


def _verify_ecdsa(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """ECDSA-SHA256, DER or raw r||s (sigstore's ECDSAVerifier accepts both)."""
    candidates = [signature]
    half = (public_key.curve.key_size + 7) // 8
    if len(signature) == 2 * half:
        r = int.from_bytes(signature[:half], "big")
        s = int.from_bytes(signature[half:], "big")
        candidates.append(encode_dss_signature(r, s))
    for sig in candidates:
        try:
            public_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


@dataclass(frozen=True)
class KeyPair:
    """An ECDSA P-256 signing key in cosign's formats."""

    private_key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            raise SigningError(f"only ECDSA keys are supported, got {type(self.private_key).__name__}")
        # any serialised form of this key that a log might ever see is a secret
        pkcs8 = self._pkcs8_der()
        redact.register(_b64(pkcs8), "signing-key")
        redact.register(self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode(), "signing-key")

    def __repr__(self) -> str:
        return f"KeyPair(ecdsa-p256 {self.fingerprint()[:19]}…)"

    @classmethod
    def generate(cls) -> "KeyPair":
        """A fresh P-256 key (cosign's default algorithm)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    # public side ---------------------------------------------------------------------------------
    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_der(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_pem(self) -> bytes:
        """PKIX ``-----BEGIN PUBLIC KEY-----`` PEM, as in cosign.pub."""
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the PKIX DER public key (the hex form of the bundle hint)."""
        return "sha256:" + hashlib.sha256(self.public_der()).hexdigest()

    def hint(self) -> str:
        """The bundle's ``verificationMaterial.publicKey.hint``: b64(sha256(PKIX DER))."""
        return public_key_hint(self.public_pem())

    # signing ---------------------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        """ECDSA-SHA256 over ``data``, ASN.1 DER (what cosign produces)."""
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, signature: bytes, data: bytes) -> bool:
        return _verify_ecdsa(self.public_key, signature, data)

    # cosign key file -----------------------------------------------------------------------------
    def _pkcs8_der(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def to_cosign_pem(self, password: str, *, pem_type: str = SIGSTORE_PEM_TYPE, scrypt_n: int = SCRYPT_N) -> bytes:
        """The encrypted private key file ``cosign sign --key`` loads (``cosign.key``).

        scrypt(password, 32-byte salt, N=65536, r=8, p=1) -> 32-byte key; NaCl secretbox
        (XSalsa20-Poly1305, 24-byte nonce) over the PKCS#8 DER; JSON envelope as PEM body.
        An empty password is allowed (cosign accepts ``COSIGN_PASSWORD=""``).
        """
        from nacl.secret import SecretBox

        if pem_type not in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE):
            raise SigningError(f"cosign only loads {SIGSTORE_PEM_TYPE!r} or {COSIGN_PEM_TYPE!r}, not {pem_type!r}")
        if (scrypt_n, SCRYPT_R, SCRYPT_P) not in SCRYPT_PARAMS:
            raise SigningError(f"scrypt N={scrypt_n} is not one cosign accepts (2^15, 2^16, 2^17)")
        redact.register(password, "signing-key-password")
        salt = os.urandom(32)
        nonce = os.urandom(24)
        box = SecretBox(_scrypt(password, salt, scrypt_n, SCRYPT_R, SCRYPT_P))
        sealed = box.encrypt(self._pkcs8_der(), nonce).ciphertext  # MAC || ciphertext, as Go's secretbox.Seal
        envelope = {
            "kdf": {"name": "scrypt", "params": {"N": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P}, "salt": _b64(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
            "ciphertext": _b64(sealed),
        }
        body = _go_json(envelope)
        pem = _pem(pem_type, body)
        redact.register(pem.decode(), "signing-key-file")
        redact.register(_b64(body), "signing-key-file")
        return pem

    @classmethod
    def from_cosign_pem(cls, pem: bytes | str, password: str) -> "KeyPair":
        """Load ``cosign.key`` (``ENCRYPTED SIGSTORE PRIVATE KEY`` or the older
        ``ENCRYPTED COSIGN PRIVATE KEY``). Raises SigningError on a wrong password or another format."""
        from nacl.exceptions import CryptoError
        from nacl.secret import SecretBox

        if isinstance(pem, str):
            pem = pem.encode()
        redact.register(password, "signing-key-password")
        redact.register(pem.decode(errors="replace"), "signing-key-file")
        pem_type, body = _unpem(pem)
        if pem_type not in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE):
            raise SigningError(f"unsupported private key PEM type {pem_type!r} (cosign loads {SIGSTORE_PEM_TYPE!r} "
                               f"and {COSIGN_PEM_TYPE!r}; import others with `cosign import-key-pair`)")
        try:
            env = json.loads(body)
            kdf, cipher = env["kdf"], env["cipher"]
            params = kdf["params"]
            n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
            salt, nonce, sealed = _unb64(kdf["salt"]), _unb64(cipher["nonce"]), _unb64(env["ciphertext"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningError(f"encrypted key envelope is malformed: {exc}") from None
        if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
            raise SigningError(f"unsupported key encryption {kdf.get('name')}/{cipher.get('name')}")
        if (n, r, p) not in SCRYPT_PARAMS:
            raise SigningError(f"unsupported scrypt parameters N={n} r={r} p={p}")
        if len(nonce) != 24:
            raise SigningError(f"secretbox nonce must be 24 bytes, got {len(nonce)}")
        try:
            der = SecretBox(_scrypt(password, salt, n, r, p)).decrypt(sealed, nonce)
        except CryptoError:
            raise SigningError("decryption failed: wrong password or corrupted key file") from None
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningError(f"only ECDSA keys are supported, got {type(key).__name__}")
        return cls(key)


def public_key_hint(public_pem: bytes | str) -> str:
    """b64(sha256(PKIX DER)) of a public key PEM (cosign internal/key/svkeypair.go)."""
    der = load_public_key(public_pem).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def cosign_registry_flags(user: str, password: str) -> list[str]:
    """cosign's registry credential flags, each in the ``--flag=value`` form: cosign rewrites any
    argument that starts with one dash into a two-dash flag before parsing, so a separate value such
    as a random password beginning with ``-`` would reach the registry with a dash prepended."""
    return [f"--registry-username={user}", f"--registry-password={password}"]


# ------------------------------------------------------------------------------------------------
# registry helpers


def _hex(dgst: str) -> str:
    alg, _, hexpart = dgst.partition(":")
    if alg != "sha256" or len(hexpart) != 64:
        raise SigningError(f"expected a sha256 digest, got {dgst!r}")
    return hexpart


def sig_tag(dgst: str) -> str:
    """The legacy signature tag of an image digest: ``sha256-<hex>.sig``."""
    return f"sha256-{_hex(dgst)}.sig"


def fallback_tag(dgst: str) -> str:
    """The OCI referrers-tag-schema fallback tag of a subject digest: ``sha256-<hex>``."""
    return f"sha256-{_hex(dgst)}"


def _registry_host(client: OciClient) -> str:
    return client.base_url.split("://", 1)[-1].rstrip("/")


def _get_manifest(client: OciClient, repo: str, ref: str, accept: Iterable[str] = _MANIFEST_ACCEPT) -> tuple[bytes, str] | None:
    """(body, content type) or None on 404; SigningError on anything else."""
    r = client.get_manifest(repo, ref, accept=accept)
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise SigningError(f"GET manifest {repo}:{ref}: {r.status_code} {r.text[:200]}")
    return r.content, r.headers.get("Content-Type", "").split(";")[0].strip()


def _ensure_blob(client: OciClient, repo: str, data: bytes) -> str:
    dgst = content_digest(data)
    if client.head_blob(repo, dgst).status_code != 200:
        client.push_blob(repo, data)
    return dgst


def _get_blob(client: OciClient, repo: str, dgst: str) -> bytes:
    r = client.get_blob(repo, dgst)
    if r.status_code != 200:
        raise SigningError(f"GET blob {repo}@{dgst}: {r.status_code} {r.text[:200]}")
    return r.content


def _put(client: OciClient, repo: str, ref: str, body: bytes, media_type: str) -> str:
    r = client.put_manifest(repo, ref, body, media_type)
    if r.status_code != 201:
        raise SigningError(f"PUT manifest {repo}:{ref}: {r.status_code} {r.text[:300]}")
    return content_digest(body)


def subject_descriptor(client: OciClient, repo: str, dgst: str) -> dict[str, Any]:
    """mediaType, digest and size of a manifest already in the registry (GET by digest; the body
    is hashed, so a registry that lies about the digest is caught)."""
    got = _get_manifest(client, repo, dgst)
    if got is None:
        raise SigningError(f"{repo}@{dgst}: no such manifest (push the image before signing it)")
    body, ctype = got
    if content_digest(body) != dgst:
        raise SigningError(f"{repo}@{dgst}: the registry served a manifest with digest {content_digest(body)}")
    media_type = ctype or json.loads(body).get("mediaType", "")
    return {"mediaType": media_type, "digest": dgst, "size": len(body)}


# ------------------------------------------------------------------------------------------------
# legacy simple signing


def simple_signing_payload(docker_reference: str, dgst: str, annotations: dict[str, str] | None = None) -> bytes:
    """The bytes that are signed and uploaded as the layer blob (sigstore payload.go field order)."""
    if annotations is not None:
        bad = {k: v for k, v in annotations.items() if not isinstance(v, str)}
        if bad:
            raise SigningError(f"annotation values must be strings (Kyverno compares strings): {sorted(bad)}")
    obj = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": dgst},
            "type": SIMPLESIGNING_TYPE,
        },
        "optional": dict(annotations) if annotations else None,
    }
    return _go_json(obj)


def _legacy_config(layer_digests: list[str]) -> bytes:
    """ggcr's empty image config with one diff_id and one history entry per layer (as cosign)."""
    return _go_json({
        "architecture": "",
        "created": _GO_ZERO_TIME,
        "history": [{"created": _GO_ZERO_TIME} for _ in layer_digests],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
        "config": {},
    })


def _write_sig_manifest(client: OciClient, repo: str, tag: str, layers: list[dict[str, Any]],
                        base: dict[str, Any] | None = None) -> str:
    config = _legacy_config([l["digest"] for l in layers])
    _ensure_blob(client, repo, config)
    base = base or {}
    config_mt = (base.get("config") or {}).get("mediaType") or MT_CONFIG
    media_type = base.get("mediaType") or MT_MANIFEST
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_mt, config),
        "layers": layers,
    }
    if base.get("annotations"):
        manifest["annotations"] = base["annotations"]
    return _put(client, repo, tag, _go_json(manifest), media_type)


def _read_sig_manifest(client: OciClient, repo: str, dgst: str) -> dict[str, Any] | None:
    got = _get_manifest(client, repo, sig_tag(dgst), accept=(MT_MANIFEST, MT_DOCKER_MANIFEST))
    if got is None:
        return None
    try:
        manifest = json.loads(got[0])
    except ValueError:
        raise SigningError(f"{repo}:{sig_tag(dgst)} is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise SigningError(f"{repo}:{sig_tag(dgst)} is not an image manifest ({got[1]})")
    return manifest


def sign_legacy(client: OciClient, repo: str, digest: str, key: KeyPair, *,
                annotations: dict[str, str] | None = None, identity: str | None = None, signature_repo: str | None = None) -> str:
    """Sign ``repo@digest`` in cosign's legacy format; returns the ``.sig`` manifest digest.

    ``signature_repo``: store the signature there instead of next to the image (cosign's
    ``COSIGN_REPOSITORY``); the payload still names ``repo``.

    ``identity`` is the payload's ``docker-reference`` (default ``<registry host>/<repo>``, what
    cosign writes); ``annotations`` become ``optional`` (``cosign sign -a k=v``). An existing
    ``.sig`` manifest gets a layer APPENDED (key overlap during rotation); when it already holds
    the same payload signed by this key, nothing is written (cosign's dupe detector).
    """
    dgst = digest
    tag = sig_tag(dgst)
    payload = simple_signing_payload(identity or f"{_registry_host(client)}/{repo}", dgst, annotations)
    repo = signature_repo or repo  # where the .sig manifest lives
    existing = _read_sig_manifest(client, repo, dgst)
    layers: list[dict[str, Any]] = list(existing["layers"]) if existing else []
    payload_digest = content_digest(payload)
    for layer in layers:
        if layer.get("digest") != payload_digest or layer.get("mediaType") != MT_SIMPLESIGNING:
            continue
        try:
            old = _unb64((layer.get("annotations") or {}).get(SIG_ANNOTATION, ""))
        except ValueError:
            continue
        if old and key.verify(old, payload):
            got = _get_manifest(client, repo, tag, accept=(MT_MANIFEST, MT_DOCKER_MANIFEST))
            return content_digest(got[0]) if got else ""
    if len(layers) >= 1000:
        raise SigningError(f"{repo}:{tag} already has {len(layers)} signatures (cosign's cap is 1000)")
    signature = key.sign(payload)
    from labgate import mutations

    if mutations.on("signature-byte-flipped"):
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    _ensure_blob(client, repo, payload)
    layers.append(descriptor(MT_SIMPLESIGNING, payload, annotations={SIG_ANNOTATION: _b64(signature)}))
    return _write_sig_manifest(client, repo, tag, layers, existing)


def inspect_legacy(client: OciClient, repo: str, digest: str, public_pem: bytes | str, *,
                   signature_repo: str | None = None) -> list[dict[str, Any]]:
    """Every layer of ``sha256-<hex>.sig`` with ``ok`` and, when not ok, ``reason``.

    A layer is ok when its blob matches its descriptor digest, the ``dev.cosignproject.cosign/
    signature`` annotation verifies over the blob with ``public_pem``, the payload is a
    ``cosign container image signature`` and its ``docker-manifest-digest`` equals ``digest``
    (a signature transplanted from another digest fails here). Empty list: no ``.sig`` tag.
    """
    dgst = digest
    pub = load_public_key(public_pem)
    repo = signature_repo or repo  # cosign's COSIGN_REPOSITORY
    manifest = _read_sig_manifest(client, repo, dgst)
    if manifest is None:
        return []
    out = []
    for i, layer in enumerate(manifest["layers"]):
        entry: dict[str, Any] = {"format": "legacy", "index": i, "layer": layer.get("digest"), "ok": False, "reason": ""}
        out.append(entry)
        if layer.get("mediaType") != MT_SIMPLESIGNING:
            entry["reason"] = f"layer media type {layer.get('mediaType')!r} is not {MT_SIMPLESIGNING}"
            continue
        blob = _get_blob(client, repo, layer["digest"])
        if content_digest(blob) != layer["digest"]:
            entry["reason"] = "payload blob does not match its descriptor digest"
            continue
        sig_b64 = (layer.get("annotations") or {}).get(SIG_ANNOTATION)
        if not sig_b64:
            entry["reason"] = f"no {SIG_ANNOTATION} annotation"
            continue
        entry["signature"] = sig_b64
        try:
            sig = _unb64(sig_b64)
        except ValueError:
            entry["reason"] = "signature annotation is not base64"
            continue
        if not _verify_ecdsa(pub, sig, blob):
            entry["reason"] = "invalid signature (does not verify over the payload with this key)"
            continue
        try:
            payload = json.loads(blob)
            critical = payload["critical"]
            claimed = critical["image"]["docker-manifest-digest"]
            kind = critical["type"]
        except (ValueError, KeyError, TypeError):
            entry["reason"] = "payload is not a simple-signing document"
            continue
        entry.update(payload=payload, claimed_digest=claimed,
                     docker_reference=(critical.get("identity") or {}).get("docker-reference"),
                     annotations=payload.get("optional"))
        if kind != SIMPLESIGNING_TYPE:
            entry["reason"] = f"payload type {kind!r} is not {SIMPLESIGNING_TYPE!r}"
            continue
        if claimed != dgst:
            entry["reason"] = f"invalid or missing digest in claim: {claimed}"
            continue
        entry["ok"] = True
    return out


def verify_legacy(client: OciClient, repo: str, digest: str, public_pem: bytes | str, *,
                  signature_repo: str | None = None) -> list[dict[str, Any]]:
    """The legacy signatures of ``repo@digest`` that verify with ``public_pem`` and claim exactly
    ``digest`` ([] when none do or there is no ``.sig`` tag); ``signature_repo``: where they are
    stored when not next to the image. Each dict: format, index, layer, signature, payload,
    claimed_digest, docker_reference, annotations, ok=True."""
    return [e for e in inspect_legacy(client, repo, digest, public_pem, signature_repo=signature_repo) if e["ok"]]


# ------------------------------------------------------------------------------------------------
# Sigstore bundle v0.3 (cosign v3)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 <len type> <type> <len body> <body>``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def intoto_statement(dgst: str, annotations: dict[str, Any] | None = None) -> bytes:
    """cosign's signing statement (protojson field order: _type, subject, predicateType, predicate)."""
    alg, _, hexpart = dgst.partition(":")
    subject: dict[str, Any] = {"digest": {alg: hexpart}, "annotations": dict(annotations or {})}
    return _go_json({"_type": INTOTO_STATEMENT_V1, "subject": [subject],
                     "predicateType": COSIGN_SIGN_PREDICATE, "predicate": {}})


def make_bundle(dgst: str, key: KeyPair, annotations: dict[str, Any] | None = None) -> bytes:
    """The bundle JSON (key-based, no tlog entry, as ``cosign sign --tlog-upload=false``)."""
    statement = intoto_statement(dgst, annotations)
    sig = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement))
    bundle = {
        "mediaType": MT_BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": key.hint()}},
        "dsseEnvelope": {"payload": _b64(statement), "payloadType": INTOTO_PAYLOAD_TYPE,
                         "signatures": [{"sig": _b64(sig)}]},
    }
    return _go_json(bundle)


def referrers_api_supported(client: OciClient, repo: str, dgst: str) -> bool:
    """True when ``GET /v2/<repo>/referrers/<digest>`` answers an OCI index (ggcr's test: anything
    else - 404 from CNCF distribution, 400, 406 - means use the fallback tag)."""
    r = client.referrers(repo, dgst)
    if r.status_code >= 500 or r.status_code in (401, 403):
        raise SigningError(f"GET referrers {repo}@{dgst}: {r.status_code} {r.text[:200]}")
    return r.status_code == 200 and r.headers.get("Content-Type", "").split(";")[0].strip() == MT_INDEX


def list_referrers(client: OciClient, repo: str, dgst: str) -> tuple[list[dict[str, Any]], str]:
    """The referrer descriptors of ``dgst`` and where they came from: ``"api"`` or ``"fallback"``
    (the ``sha256-<hex>`` index; absent means no referrers)."""
    if referrers_api_supported(client, repo, dgst):
        r = client.referrers(repo, dgst)
        return list(r.json().get("manifests") or []), "api"
    got = _get_manifest(client, repo, fallback_tag(dgst), accept=(MT_INDEX,))
    if got is None:
        return [], "fallback"
    index = json.loads(got[0])
    if index.get("mediaType", got[1]) != MT_INDEX:
        raise SigningError(f"{repo}:{fallback_tag(dgst)} is not an OCI image index ({index.get('mediaType') or got[1]})")
    return list(index.get("manifests") or []), "fallback"


def _add_to_fallback_index(client: OciClient, repo: str, subject: str, add: dict[str, Any]) -> str:
    tag = fallback_tag(subject)
    got = _get_manifest(client, repo, tag, accept=(MT_INDEX,))
    if got is None:
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    else:
        index = json.loads(got[0])
        if index.get("schemaVersion") != 2 or index.get("mediaType") != MT_INDEX:
            raise SigningError(f"fallback tag {repo}:{tag} is not an OCI image index: {index.get('mediaType')}")
        if any(m.get("digest") == add["digest"] for m in index.get("manifests") or []):
            return content_digest(got[0])
    index["manifests"] = sorted([*(index.get("manifests") or []), add], key=lambda m: m.get("digest", ""))
    return _put(client, repo, tag, _go_json(index), MT_INDEX)


def sign_bundle(client: OciClient, repo: str, digest: str, key: KeyPair, *,
                annotations: dict[str, Any] | None = None) -> str:
    """Sign ``repo@digest`` in cosign v3's format; returns the referrer manifest digest.

    Pushes the bundle blob and the ``{}`` config, PUTs the referrer manifest by digest, and, when
    the registry has no referrers API, adds it (artifactType and annotations included) to the
    ``sha256-<hex>`` fallback index. ``annotations`` go into the statement's subject (``-a``).
    """
    dgst = digest
    subject = subject_descriptor(client, repo, dgst)
    bundle = make_bundle(dgst, key, annotations)
    _ensure_blob(client, repo, bundle)
    _ensure_blob(client, repo, EMPTY_JSON)
    ann = {
        ANN_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ANN_BUNDLE_CONTENT: "dsse-envelope",
        ANN_BUNDLE_PREDICATE: COSIGN_SIGN_PREDICATE,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "artifactType": MT_BUNDLE,
        "config": descriptor(MT_EMPTY, EMPTY_JSON, artifactType=MT_BUNDLE),
        "layers": [descriptor(MT_BUNDLE, bundle)],
        "subject": subject,
        "annotations": ann,
    }
    body = _go_json(manifest)
    ref_digest = content_digest(body)
    r = client.put_manifest(repo, ref_digest, body, MT_MANIFEST)
    if r.status_code != 201:
        raise SigningError(f"PUT referrer manifest {repo}@{ref_digest}: {r.status_code} {r.text[:300]}")
    if r.headers.get("OCI-Subject") == dgst or referrers_api_supported(client, repo, dgst):
        return ref_digest  # the registry indexes the subject itself
    _add_to_fallback_index(client, repo, dgst, {
        "mediaType": MT_MANIFEST, "digest": ref_digest, "size": len(body),
        "artifactType": MT_BUNDLE, "annotations": dict(ann),
    })
    return ref_digest


def _check_bundle(entry: dict[str, Any], bundle_bytes: bytes, pub: ec.EllipticCurvePublicKey, dgst: str) -> None:
    try:
        bundle = json.loads(bundle_bytes)
    except ValueError:
        entry["reason"] = "bundle is not JSON"
        return
    entry["bundle"] = bundle
    if bundle.get("mediaType") not in BUNDLE_V03_TYPES:
        entry["reason"] = f"bundle mediaType {bundle.get('mediaType')!r} is not v0.3"
        return
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    entry["hint"] = hint
    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict):
        entry["reason"] = "bundle has no dsseEnvelope (message signatures are not cosign image signatures)"
        return
    if env.get("payloadType") != INTOTO_PAYLOAD_TYPE:
        entry["reason"] = f"payloadType {env.get('payloadType')!r} is not {INTOTO_PAYLOAD_TYPE}"
        return
    try:
        payload = _unb64(env.get("payload", ""))
        sigs = [_unb64(s.get("sig", "")) for s in env.get("signatures") or []]
    except (ValueError, AttributeError):
        entry["reason"] = "DSSE payload or signature is not base64"
        return
    message = pae(INTOTO_PAYLOAD_TYPE, payload)
    if not any(_verify_ecdsa(pub, s, message) for s in sigs):
        entry["reason"] = "invalid signature (no DSSE signature verifies over the PAE with this key)"
        return
    try:
        statement = json.loads(payload)
        subjects = statement["subject"]
        claimed = [f"sha256:{s['digest']['sha256']}" for s in subjects if "sha256" in (s.get("digest") or {})]
    except (ValueError, KeyError, TypeError):
        entry["reason"] = "DSSE payload is not an in-toto statement"
        return
    entry.update(statement=statement, predicate_type=statement.get("predicateType"), claimed_digests=claimed,
                 annotations=(subjects[0].get("annotations") if subjects else None))
    if statement.get("_type") not in (INTOTO_STATEMENT_V1, "https://in-toto.io/Statement/v0.1"):
        entry["reason"] = f"statement _type {statement.get('_type')!r} is not in-toto"
        return
    if dgst not in claimed:
        entry["reason"] = f"invalid or missing digest in claim: {', '.join(claimed) or 'none'}"
        return
    if statement.get("predicateType") != COSIGN_SIGN_PREDICATE:
        entry["reason"] = f"predicateType {statement.get('predicateType')!r} is not {COSIGN_SIGN_PREDICATE}"
        return
    entry["ok"] = True


def inspect_bundles(client: OciClient, repo: str, digest: str, public_pem: bytes | str) -> list[dict[str, Any]]:
    """Every referrer of ``repo@digest`` (referrers API, else the fallback index) with ``ok`` and,
    when not ok, ``reason``.

    Like cosign, referrers are not filtered by the listed artifactType (and the fallback index
    cosign writes carries no annotations); each manifest is read and must have exactly one
    ``application/vnd.dev.sigstore.bundle*`` layer and ``subject.digest == digest``.
    The bundle must be v0.3 with a DSSE envelope of an in-toto statement whose signature verifies
    over the PAE with ``public_pem``, whose subject digest equals ``digest`` and whose predicateType
    is ``https://sigstore.dev/cosign/sign/v1`` (stricter than ``cosign verify``, which ignores it).
    """
    dgst = digest
    pub = load_public_key(public_pem)
    descs, source = list_referrers(client, repo, dgst)
    out = []
    for d in descs:
        entry: dict[str, Any] = {"format": "bundle", "source": source, "referrer": d.get("digest"),
                                 "artifact_type": d.get("artifactType"), "ok": False, "reason": ""}
        out.append(entry)
        got = _get_manifest(client, repo, d["digest"], accept=(MT_MANIFEST, MT_INDEX))
        if got is None:
            entry["reason"] = "referrer manifest is missing"
            continue
        try:
            manifest = json.loads(got[0])
        except ValueError:
            entry["reason"] = "referrer manifest is not JSON"
            continue
        layers = manifest.get("layers") or []
        if len(layers) != 1 or not str(layers[0].get("mediaType", "")).startswith(BUNDLE_MT_PREFIX):
            entry["reason"] = "not a sigstore bundle referrer (expected exactly one bundle layer)"
            continue
        if (manifest.get("subject") or {}).get("digest") != dgst:
            entry["reason"] = f"referrer subject is {(manifest.get('subject') or {}).get('digest')}, not {dgst}"
            continue
        entry["annotations_manifest"] = manifest.get("annotations") or {}
        blob = _get_blob(client, repo, layers[0]["digest"])
        if content_digest(blob) != layers[0]["digest"]:
            entry["reason"] = "bundle blob does not match its descriptor digest"
            continue
        _check_bundle(entry, blob, pub, dgst)
        if entry["ok"]:
            entry["hint_matches"] = entry.get("hint") == public_key_hint(public_pem)
    return out


def verify_bundles(client: OciClient, repo: str, digest: str, public_pem: bytes | str) -> list[dict[str, Any]]:
    """The v0.3 bundle signatures of ``repo@digest`` that verify with ``public_pem`` and whose
    statement subject is exactly ``digest`` ([] when none). Each dict: format, source
    (api|fallback), referrer, artifact_type, bundle, statement, predicate_type, claimed_digests,
    annotations, hint, hint_matches, ok=True."""
    return [e for e in inspect_bundles(client, repo, digest, public_pem) if e["ok"]]


# ------------------------------------------------------------------------------------------------
# negative-test helpers


def copy_signature(client: OciClient, repo: str, from_digest: str, to_digest: str) -> str:
    """Put the ``.sig`` manifest of ``from_digest`` under ``to_digest``'s ``.sig`` tag, byte for
    byte: a transplanted signature (valid over its payload, but claiming ``from_digest``).
    Returns the manifest digest. Raises SigningError when ``from_digest`` has no ``.sig`` tag."""
    got = _get_manifest(client, repo, sig_tag(from_digest), accept=(MT_MANIFEST, MT_DOCKER_MANIFEST))
    if got is None:
        raise SigningError(f"{repo}:{sig_tag(from_digest)} does not exist")
    body, ctype = got
    return _put(client, repo, sig_tag(to_digest), body, ctype or MT_MANIFEST)


def _other_signature(sig: bytes) -> bytes:
    """A well-formed DER ECDSA signature that does not verify: s moved by half the group order, r
    kept. Far from s, so it cannot land on the valid s of a signature that was off by a bit (the
    signature-byte-flipped mutation), nor on its malleable twin n - s."""
    r, s = decode_dss_signature(sig)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order
    return encode_dss_signature(r, (s + n // 2) % n or 1)


def tamper_legacy(client: OciClient, repo: str, digest: str, what: str = "payload") -> str:
    """Rewrite every layer of ``digest``'s ``.sig`` manifest so it no longer verifies.

    ``what="payload"``: the layer points at a new, well-formed payload blob for the same digest
    (``optional.tampered = "true"``) while keeping the old signature annotation.
    ``what="annotation"``: the payload is kept and the signature annotation is replaced by a
    well-formed DER signature that does not match. Returns the new ``.sig`` manifest digest.
    """
    if what not in ("payload", "annotation"):
        raise ValueError(f"what must be 'payload' or 'annotation', not {what!r}")
    manifest = _read_sig_manifest(client, repo, digest)
    if manifest is None:
        raise SigningError(f"{repo}:{sig_tag(digest)} does not exist")
    layers = []
    for layer in manifest["layers"]:
        layer = dict(layer)
        ann = dict(layer.get("annotations") or {})
        if what == "payload":
            payload = json.loads(_get_blob(client, repo, layer["digest"]))
            payload["optional"] = {**(payload.get("optional") or {}), "tampered": "true"}
            data = _go_json(payload)
            _ensure_blob(client, repo, data)
            layer.update(digest=content_digest(data), size=len(data))
        else:
            ann[SIG_ANNOTATION] = _b64(_other_signature(_unb64(ann[SIG_ANNOTATION])))
        layer["annotations"] = ann
        layers.append(layer)
    return _write_sig_manifest(client, repo, sig_tag(digest), layers, manifest)
