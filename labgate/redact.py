"""Redaction at the source.

Every secret the harness generates (passwords, API keys, client secrets, private keys, tokens) is
registered here the moment it is created. Anything the harness writes to a log, a report or an
attachment goes through :func:`redact` first, so no artifact ever holds a secret value.
"""

from __future__ import annotations

import base64
import re
import threading

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # value -> label

_PATTERNS = [
    (re.compile(r"(?i)(authorization:\s*)(basic|bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1\2 <redacted>"),
    (re.compile(r"(?i)(\"?authorization\"?\s*[:=]\s*\"?)(basic|bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1\2 <redacted>"),
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S), r"<redacted \1private key>"),
    (re.compile(r"\bzak_[0-9a-f]{16,}\b"), "zak_<redacted>"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "<redacted jwt>"),
]

MIN_SECRET_LEN = 6


def register(value: str | None, label: str = "secret") -> str | None:
    """Remember a secret value (and its common encodings) so that it is redacted everywhere."""
    if not value or len(value) < MIN_SECRET_LEN:
        return value
    with _lock:
        _secrets[value] = label
        for enc in (base64.b64encode(value.encode()).decode(), base64.urlsafe_b64encode(value.encode()).decode()):
            _secrets.setdefault(enc.rstrip("="), label + ":b64")
    return value


def new_secret(label: str, nbytes: int = 18) -> str:
    """A random secret for this run, registered for redaction the moment it exists."""
    import secrets

    value = secrets.token_urlsafe(nbytes)
    register(value, label)
    return value


def register_basic(user: str, password: str, label: str) -> None:
    """An HTTP basic credential: the password and the base64 of ``user:password``."""
    register(password, label)
    register(base64.b64encode(f"{user}:{password}".encode()).decode(), label + ":basic")


def known() -> list[str]:
    with _lock:
        return list(_secrets)


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        items = sorted(_secrets.items(), key=lambda kv: -len(kv[0]))
    for value, label in items:
        if value in text:
            text = text.replace(value, f"<redacted:{label}>")
    for pat, repl in _PATTERNS:
        text = pat.sub(repl, text)
    return text


def redact_bytes(data: bytes) -> bytes:
    return redact(data.decode("utf-8", errors="replace")).encode()


def clear() -> None:
    """Forget all secrets (unit tests only)."""
    with _lock:
        _secrets.clear()
