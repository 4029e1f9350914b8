"""Read-only mode: the harness itself refuses every write to a deployment it did not start.

Switched on for the whole process (the xdist controller and each worker) when the stack is
read-only (provider ``existing``). Two choke points cover every client the suites use:

- HTTP through ``requests`` (the OCI, OIDC and registry clients): only GET, HEAD and OPTIONS leave
  the process; anything else raises :class:`WriteRefused` before a byte is sent.
- The Kubernetes API through the ``kubernetes`` client: reads pass; a write passes only as a
  server-side dry run (``dryRun=All``), which the apiserver and Kyverno's webhooks evaluate and
  never persist.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_state = {"on": False, "why": ""}


class WriteRefused(AssertionError):
    """A test tried to write to a read-only stack (an AssertionError: the test is wrong to try)."""


def enabled() -> bool:
    return _state["on"]


def enable(why: str) -> None:
    if _state["on"]:
        return
    _state.update(on=True, why=why)
    import requests

    original = requests.Session.send

    def send(self, request, **kwargs):
        if _state["on"] and request.method.upper() not in SAFE:
            raise WriteRefused(f"labgate refused {request.method} {_short(request.url)}: {_state['why']}")
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        from kubernetes.client import rest
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        return
    kube_request = rest.RESTClientObject.request

    def request(self, method, url, *args, **kwargs):
        if _state["on"] and method.upper() not in SAFE and not _dry_run(url, kwargs):
            raise WriteRefused(f"labgate refused {method} {_short(url)} (only dryRun=All writes reach a read-only cluster): {_state['why']}")
        return kube_request(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = request  # type: ignore[method-assign]


def _dry_run(url: str, kwargs: dict) -> bool:
    query = parse_qs(urlparse(url).query)
    if "All" in query.get("dryRun", []):
        return True
    for k, v in kwargs.get("query_params") or []:
        if k == "dryRun" and v == "All":
            return True
    return False


def _short(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}{u.path}"
