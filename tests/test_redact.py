"""Unit tests: secrets are redacted wherever the harness writes."""

import base64

from labgate import redact


def setup_function():
    redact.clear()


def test_registered_secret_and_its_encodings_are_redacted():
    redact.register_basic("ci-robot", "s3cr3t-value-xyz", "ci-robot-password")
    basic = base64.b64encode(b"ci-robot:s3cr3t-value-xyz").decode()
    text = f"password=s3cr3t-value-xyz header=Basic {basic} b64={base64.b64encode(b's3cr3t-value-xyz').decode()}"
    out = redact.redact(text)
    assert "s3cr3t-value-xyz" not in out
    assert basic not in out
    assert "<redacted:ci-robot-password>" in out


PEM = "-----BEGIN EC " + "PRIVATE KEY-----\nMHc\n-----END EC " + "PRIVATE KEY-----"  # split: no key-shaped text in the tree


def test_patterns_catch_unregistered_secrets():
    text = "Authorization: Bearer eyJhbGciOi.abc.def\nkey zak_0123456789abcdef0123456789abcdef\nid_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz\n" + PEM
    out = redact.redact(text)
    assert "eyJhbGciOi" not in out and "0123456789abcdef0123" not in out and "MHc" not in out
    assert "eyJzdWIiOiJhbGljZSJ9" not in out


def test_short_values_are_not_registered():
    redact.register("abc", "x")
    assert redact.redact("abc") == "abc"
