"""A small OCI distribution-spec client that keeps a redacted log of every exchange.

It deliberately does not hide the protocol: suites assert on status codes, headers and error bodies,
so each helper returns the raw :class:`requests.Response`. The exchange log is attached to every
test result (Authorization headers and every registered secret are redacted as they are recorded).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urljoin

import requests

from labgate.redact import redact

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"


def digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def descriptor(media_type: str, data: bytes, algorithm: str = "sha256", **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest(data, algorithm), "size": len(data), **extra}


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Exchange:
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str
    status: int
    response_headers: dict[str, str]
    response_body: str
    seconds: float

    def render(self) -> str:
        req_h = "\n".join(f"{k}: {v}" for k, v in self.request_headers.items())
        res_h = "\n".join(f"{k}: {v}" for k, v in self.response_headers.items())
        return (
            f"> {self.method} {self.url}\n{req_h}\n\n{self.request_body}\n"
            f"< {self.status} ({self.seconds * 1000:.0f} ms)\n{res_h}\n\n{self.response_body}\n"
        )


def _show_body(body: Any, headers: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray)):
        ct = str(headers.get("Content-Type", "")) if headers else ""
        if len(body) > 4096 or not ("json" in ct or "text" in ct or body[:1] in (b"{", b"[")):
            return f"<{len(body)} bytes>"
        return body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        return body[:4096]
    return f"<{type(body).__name__} body>"


@dataclass
class OciClient:
    base_url: str
    auth: tuple[str, str] | None = field(default=None, repr=False)
    timeout: float = field(default=30.0, repr=False)
    exchanges: list[Exchange] = field(default_factory=list, repr=False)
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")

    def __repr__(self) -> str:  # never the password: test failures print reprs
        who = self.auth[0] if self.auth else "anonymous"
        return f"OciClient({self.base_url!r} as {who})"

    # ------------------------------------------------------------------------------------------
    def as_user(self, auth: tuple[str, str] | None) -> "OciClient":
        """The same registry, another identity (shares the exchange log)."""
        return OciClient(self.base_url, auth, self.timeout, self.exchanges)

    def request(self, method: str, path_or_url: str, *, headers: dict[str, str] | None = None,
                data: Any = None, params: dict[str, str] | None = None, auth: Any = "default",
                allow_redirects: bool = False) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        use_auth = self.auth if auth == "default" else auth
        t0 = time.monotonic()
        resp = self.session.request(method, url, headers=headers or {}, data=data, params=params, auth=use_auth,
                                    timeout=self.timeout, allow_redirects=allow_redirects)
        elapsed = time.monotonic() - t0
        req = resp.request
        self.exchanges.append(Exchange(
            method=method,
            url=redact(req.url or url),
            request_headers={k: redact(f"{k}: {v}").split(": ", 1)[1] for k, v in req.headers.items()},
            request_body=redact(_show_body(req.body, req.headers)),
            status=resp.status_code,
            response_headers={k: redact(v) for k, v in resp.headers.items()},
            response_body=redact(_show_body(resp.content, resp.headers)),
            seconds=elapsed,
        ))
        return resp

    def log_text(self) -> str:
        return "\n".join(e.render() for e in self.exchanges)

    def absolute(self, location: str) -> str:
        return urljoin(self.base_url + "/", location)

    # ------------------------------------------------------------------------------------------
    # end-1 / base
    def ping(self) -> requests.Response:
        return self.request("GET", "/v2/")

    # blobs
    def head_blob(self, repo: str, dgst: str) -> requests.Response:
        return self.request("HEAD", f"/v2/{repo}/blobs/{dgst}")

    def get_blob(self, repo: str, dgst: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.request("GET", f"/v2/{repo}/blobs/{dgst}", headers=headers, allow_redirects=True)

    def delete_blob(self, repo: str, dgst: str) -> requests.Response:
        return self.request("DELETE", f"/v2/{repo}/blobs/{dgst}")

    def start_upload(self, repo: str, params: dict[str, str] | None = None, data: bytes | None = None,
                     headers: dict[str, str] | None = None) -> requests.Response:
        h = dict(headers or {})
        if data is not None:
            h.setdefault("Content-Type", "application/octet-stream")
            h.setdefault("Content-Length", str(len(data)))
        else:
            h.setdefault("Content-Length", "0")
        return self.request("POST", f"/v2/{repo}/blobs/uploads/", params=params, data=data, headers=h)

    def put_upload(self, location: str, dgst: str, data: bytes = b"") -> requests.Response:
        return self.request("PUT", self.absolute(location), params={"digest": dgst}, data=data,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})

    def patch_upload(self, location: str, chunk: bytes, start: int | None = None) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk))}
        if start is not None:
            headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
        return self.request("PATCH", self.absolute(location), data=chunk, headers=headers)

    def upload_status(self, location: str) -> requests.Response:
        return self.request("GET", self.absolute(location))

    def cancel_upload(self, location: str) -> requests.Response:
        return self.request("DELETE", self.absolute(location))

    def push_blob(self, repo: str, data: bytes, algorithm: str = "sha256") -> str:
        """Monolithic POST+PUT; returns the digest. Raises if the registry does not accept it."""
        dgst = digest(data, algorithm)
        r = self.start_upload(repo)
        if r.status_code != 202:
            raise AssertionError(f"POST upload for {repo}: {r.status_code} {r.text[:200]}")
        r = self.put_upload(r.headers["Location"], dgst, data)
        if r.status_code != 201:
            raise AssertionError(f"PUT upload for {repo} ({dgst}): {r.status_code} {r.text[:200]}")
        return dgst

    def mount_blob(self, repo: str, dgst: str, source: str) -> requests.Response:
        return self.start_upload(repo, params={"mount": dgst, "from": source})

    # manifests
    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str = MT_MANIFEST) -> requests.Response:
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", data=body, headers={"Content-Type": media_type})

    def get_manifest(self, repo: str, reference: str, accept: Iterable[str] = (MT_MANIFEST, MT_INDEX)) -> requests.Response:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)})

    def head_manifest(self, repo: str, reference: str, accept: Iterable[str] = (MT_MANIFEST, MT_INDEX)) -> requests.Response:
        return self.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)})

    def delete_manifest(self, repo: str, reference: str) -> requests.Response:
        return self.request("DELETE", f"/v2/{repo}/manifests/{reference}")

    # discovery
    def tags(self, repo: str, n: int | None = None, last: str | None = None) -> requests.Response:
        params = {}
        if n is not None:
            params["n"] = str(n)
        if last is not None:
            params["last"] = last
        return self.request("GET", f"/v2/{repo}/tags/list", params=params or None)

    def referrers(self, repo: str, dgst: str, artifact_type: str | None = None) -> requests.Response:
        params = {"artifactType": artifact_type} if artifact_type else None
        return self.request("GET", f"/v2/{repo}/referrers/{dgst}", params=params)

    def catalog(self, n: int | None = None) -> requests.Response:
        return self.request("GET", "/v2/_catalog", params={"n": str(n)} if n else None)

    # ------------------------------------------------------------------------------------------
    # composite helpers used by many tests
    def push_image(self, repo: str, tag: str | None = None, *, layers: int = 1, seed: str = "",
                   algorithm: str = "sha256", subject: dict[str, Any] | None = None,
                   artifact_type: str | None = None, annotations: dict[str, str] | None = None) -> "PushedImage":
        """Push a small real image (config + layer blobs + manifest). Returns its descriptors."""
        config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                            "labgate": seed or repo})
        cfg_mt = MT_CONFIG if artifact_type is None else MT_EMPTY
        if artifact_type is not None:
            config = EMPTY_JSON
        blobs = {digest(config, algorithm): config}
        layer_descs = []
        for i in range(layers):
            data = f"labgate layer {i} of {repo} {seed}\n".encode() * 8
            blobs[digest(data, algorithm)] = data
            layer_descs.append(descriptor(MT_LAYER, data, algorithm))
        for d, data in blobs.items():
            if self.head_blob(repo, d).status_code != 200:
                self.push_blob(repo, data, algorithm)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": descriptor(cfg_mt, config, algorithm),
            "layers": layer_descs,
        }
        if artifact_type:
            manifest["artifactType"] = artifact_type
        if subject:
            manifest["subject"] = subject
        if annotations:
            manifest["annotations"] = annotations
        body = canonical(manifest)
        dgst = digest(body, algorithm)
        ref = tag or dgst
        r = self.put_manifest(repo, ref, body)
        if r.status_code != 201:
            raise AssertionError(f"manifest PUT {repo}:{ref}: {r.status_code} {r.text[:300]}")
        return PushedImage(repo, tag, dgst, body, descriptor(MT_MANIFEST, body, algorithm), manifest, r)

    def push_index(self, repo: str, reference: str | None, manifests: list[dict[str, Any]], *,
                   algorithm: str = "sha256", subject: dict[str, Any] | None = None,
                   artifact_type: str | None = None, annotations: dict[str, str] | None = None) -> "PushedImage":
        """Push an image index over already pushed manifests (by tag, or by its digest when
        ``reference`` is None). Raises if the registry does not answer 201."""
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": list(manifests)}
        if artifact_type:
            index["artifactType"] = artifact_type
        if subject:
            index["subject"] = subject
        if annotations:
            index["annotations"] = annotations
        body = canonical(index)
        dgst = digest(body, algorithm)
        ref = reference or dgst
        r = self.put_manifest(repo, ref, body, MT_INDEX)
        if r.status_code != 201:
            raise AssertionError(f"index PUT {repo}:{ref}: {r.status_code} {r.text[:300]}")
        return PushedImage(repo, reference, dgst, body, descriptor(MT_INDEX, body, algorithm), index, r)

    def get(self, path_or_url: str, headers: dict[str, str] | None = None) -> requests.Response:
        """GET a path or URL the registry handed out (a Link header, a Location)."""
        url = path_or_url if "://" in path_or_url else self.absolute(path_or_url)
        return self.request("GET", url, headers=headers)


@dataclass
class PushedImage:
    repo: str
    tag: str | None
    digest: str
    body: bytes
    descriptor: dict[str, Any]
    manifest: dict[str, Any]
    put_response: requests.Response


def error_codes(resp: requests.Response) -> list[str]:
    """The OCI error codes in a response body (empty when the body is not an OCI error)."""
    try:
        body = resp.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    return [e.get("code", "") for e in body.get("errors", []) if isinstance(e, dict)]
