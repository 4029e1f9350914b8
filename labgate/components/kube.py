"""A real Kubernetes control plane without nodes: etcd + kube-apiserver on 127.0.0.1.

The harness generates the PKI with ``cryptography``: a CA, the apiserver serving certificate, the
service-account signing key and an admin bearer token (group system:masters) written into a
kubeconfig. Everything lives in the run directory and is removed at teardown. No kubelet and no
controller-manager: admission happens at the API, which is what the suites check.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ADMIN_USER = "labgate-admin"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


@dataclass
class Pki:
    dir: Path
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_pub: Path
    sa_key: Path


def make_ca(common_name: str, days: int = 2) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving_cert(ca: x509.Certificate, ca_key, common_name: str, hosts: list[str],
                       days: int = 2) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def generate_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca("labgate-kubernetes-ca")
    serving, serving_key = issue_serving_cert(
        ca, ca_key, "kube-apiserver", ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    )
    pki = Pki(d, d / "ca.crt", d / "apiserver.crt", d / "apiserver.key", d / "sa.pub", d / "sa.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.serving_key, serving_key)
    sa = ec.generate_private_key(ec.SECP256R1())  # the apiserver signs service account tokens with ES256
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def token_file(path: Path, token: str) -> None:
    path.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    path.chmod(0o600)


def kubeconfig(server: str, ca_cert: Path, token: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "labgate", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "labgate", "context": {"cluster": "labgate", "user": ADMIN_USER}}],
        "current-context": "labgate",
    })


def etcd_command(binary: str, data_dir: Path, client_port: int, peer_port: int, existing: bool = False) -> list[str]:
    """``existing``: the data directory was made by another etcd (a cached seed, on other ports):
    --force-new-cluster makes this single member take it over with its own peer address.

    A single member elects itself within one election timeout: 100 ms (heartbeat 10 ms) instead of
    etcd's default second, which every start and restart would wait out."""
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    return [
        binary, "--name", "labgate", "--data-dir", str(data_dir),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"labgate={peer}", "--unsafe-no-fsync", "--log-level", "warn",
        "--heartbeat-interval", "10", "--election-timeout", "100",
        *(["--force-new-cluster"] if existing else []),
    ]


def apiserver_command(binary: str, pki: Pki, *, port: int, etcd_port: int, tokens: Path, cert_dir: Path) -> list[str]:
    return [
        binary,
        "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={port}",
        f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-cluster-ip-range=10.0.0.0/24", "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true", "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
        "--authorization-mode=RBAC", f"--token-auth-file={tokens}",
        "--enable-priority-and-fairness=false", "--profiling=false", "--v=0",
        # reads straight from etcd: no per-resource watch caches to fill before /readyz (its
        # storage-readiness check) nor on the first list of each of Kyverno's CRDs (Kyverno ready
        # in 1.3 s instead of 3 s, measured)
        "--watch-cache=false",
        # /readyz runs its two etcd checks one after the other, each waiting up to its timeout (2 s)
        # on an etcd that is gone: an outage shows in 2 s instead of 4
        "--etcd-healthcheck-timeout=1s", "--etcd-readycheck-timeout=1s",
        # a graceful stop (the control-plane fault) ends open watches after 100 ms (by default
        # they hold the shutdown for up to --request-timeout, 60 s), and answers requests that
        # arrive while it drains with 429 and Retry-After instead of serving them: Kyverno's
        # informers otherwise relist on the draining server, see "very short watch" again and
        # again, and their client-go backoff grows with every round. Measured over six restarts
        # one after the other: a policy created after the restart was enforced 2.1-2.8 s after
        # the apiserver was ready again (once 11 s), against 3.4-41 s before. No endpoint
        # reconciler: there is no Service network to publish the apiserver into, and its
        # pre-shutdown hook waits on it
        "--shutdown-watch-termination-grace-period=100ms", "--shutdown-send-retry-after=true",
        "--endpoint-reconciler-type=none",
    ]
