"""Host aliases: a name the cluster resolves, reached by the harness through a port on 127.0.0.1.

On kind the issuer is ``http://pocket-id.labgate:1411``: zot (in a pod) resolves that name through
the cluster's DNS; the harness, outside, reaches the same URL through kind's port mapping on
127.0.0.1. Like ``curl --resolve``, only the connection's address changes: the URL, the Host
header, TLS names and cookies stay those of the name, so one issuer URL is right for both, and
every token names it. The mapping is process-wide (name resolution) and set from the stack
(``Stack.host_aliases``), in every process of a run.
"""

from __future__ import annotations

import threading

_aliases: dict[tuple[str, int], tuple[str, int]] = {}
_lock = threading.Lock()
_installed = {"done": False}


def loopback_names() -> set[str]:
    """Names that are served from 127.0.0.1 here (a browser's secure context includes them)."""
    return {host for (host, _), (addr, _) in _aliases.items() if addr in ("127.0.0.1", "::1", "localhost")}


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def install(aliases: dict[str, str]) -> None:
    """``{"pocket-id.labgate:1411": "127.0.0.1:40123"}``: connections to the left go to the right.

    Done in name resolution (``socket.getaddrinfo``), so every client of the process follows it:
    requests, urllib (PyJWT's key fetch), the Kubernetes client."""
    if not aliases:
        return
    with _lock:
        for name, target in aliases.items():
            _aliases[_split(name)] = _split(target)
        if _installed["done"]:
            return
        _installed["done"] = True
    import socket

    original = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            target = _aliases.get((host, int(port))) if host and port is not None else None
        except (TypeError, ValueError):
            target = None
        if target is None:
            return original(host, port, *args, **kwargs)
        return original(target[0], target[1], *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
