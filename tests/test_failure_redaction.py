"""Unit test: a failing test's texts (assertion message, repr, captured output) reach neither
JUnit XML nor Allure results with a registered secret in them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAKY = '''
from labgate import redact
SECRET = "topsecret-" + "value-123"
redact.register(SECRET, "pw")

class Holder:
    def __repr__(self):
        return "Holder(" + SECRET + ")"

def test_leak():
    print("stdout " + SECRET)
    assert Holder() is None, "message " + SECRET
'''


def test_failure_texts_are_redacted(tmp_path):
    (tmp_path / "test_leak.py").write_text(LEAKY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_leak.py"), "-p", "fixtures.plugin", "-p", "no:cacheprovider",
         f"--junitxml={tmp_path / 'j.xml'}", f"--alluredir={tmp_path / 'allure'}", "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    texts = [(tmp_path / "j.xml").read_text()] + [p.read_text() for p in (tmp_path / "allure").iterdir()]
    assert any("<redacted:pw>" in t for t in texts)
    for t in texts:
        assert "topsecret-value-123" not in t
    assert "topsecret-value-123" not in proc.stdout
