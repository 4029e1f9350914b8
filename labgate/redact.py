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
_ordered: list[tuple[str, str]] | None = None  # _secrets, longest first (None: to be sorted again)

# (a literal every match contains, whether it is to be found in the lower-cased text, the pattern,
# its replacement): the literal is looked for first, so a pattern costs nothing on a text that
# cannot hold a match (megabytes of component logs; a header value of every request)
_PATTERNS = [
    # "Authorization: Basic ...", authorization="Bearer ...", "authorization": "Basic ..."
    ("authorization", True, re.compile(r"(?i)(authorization\"?\s*[:=]\s*\"?)(basic|bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1\2 <redacted>"),
    ("PRIVATE KEY-----", False, re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S),
     r"<redacted \1private key>"),
    ("zak_", False, re.compile(r"\bzak_[0-9a-f]{16,}\b"), "zak_<redacted>"),
    ("eyJ", False, re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "<redacted jwt>"),
]

MIN_SECRET_LEN = 6


def register(value: str | None, label: str = "secret") -> str | None:
    """Remember a secret value (and its common encodings) so that it is redacted everywhere."""
    if not value or len(value) < MIN_SECRET_LEN:
        return value
    global _ordered
    with _lock:
        _secrets[value] = label
        for enc in (base64.b64encode(value.encode()).decode(), base64.urlsafe_b64encode(value.encode()).decode()):
            _secrets.setdefault(enc.rstrip("="), label + ":b64")
        _ordered = None
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


def _longest_first() -> list[tuple[str, str]]:
    global _ordered
    items = _ordered
    if items is None:
        with _lock:
            items = _ordered = sorted(_secrets.items(), key=lambda kv: -len(kv[0]))
    return items


def redact(text: str) -> str:
    if not text:
        return text
    for value, label in _longest_first():
        if value in text:
            text = text.replace(value, f"<redacted:{label}>")
    lower = None
    for literal, folded, pat, repl in _PATTERNS:
        if folded:
            lower = text.lower() if lower is None else lower
        if literal in (lower if folded else text):
            text = pat.sub(repl, text)
            lower = None
    return text


def redact_bytes(data: bytes) -> bytes:
    return redact(data.decode("utf-8", errors="replace")).encode()


def clear() -> None:
    """Forget all secrets (unit tests only)."""
    global _ordered
    with _lock:
        _secrets.clear()
        _ordered = None
