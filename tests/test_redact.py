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


def test_authorization_in_any_case_and_quoting_is_redacted():
    text = ('"authorization": "Basic Y2k6cHc=" AUTHORIZATION: bearer abc.def authorization=Basic xyz== '
            "Proxy-Authorization:Basic cXE=")
    out = redact.redact(text)
    for secret in ("Y2k6cHc=", "abc.def", "xyz==", "cXE="):
        assert secret not in out
    assert '"authorization": "Basic <redacted>"' in out


def test_a_secret_registered_later_is_redacted_too():
    redact.register("first-secret-value", "a")
    assert redact.redact("first-secret-value") == "<redacted:a>"
    redact.register("second-secret-value", "b")
    redact.register("second-secret-value-longer", "c")
    assert redact.redact("second-secret-value-longer second-secret-value") == "<redacted:c> <redacted:b>"


def test_text_without_the_patterns_literals_is_left_as_it_is():
    text = "GET /v2/ 401 invalid authorisation credential eyJ-short zak_notahex"
    assert redact.redact(text) == text
