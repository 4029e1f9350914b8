"""Unit tests: the stack state file is private and round-trips."""

import os

import pytest

from labgate.errors import StackError
from labgate.stack import ComponentState, Stack


def test_state_file_is_0600_and_round_trips(tmp_path):
    s = Stack(run_id="r", scenario="s.yaml", scenario_name="s", provider="local", arch="amd64", run_dir="/x", report_dir="/y",
              credentials={"ci-robot": "pw-abcdefgh"}, components=[ComponentState("registry", "zot", "v1", "env", "/z", pid=1, ports={"http": 5})])
    p = s.save(tmp_path / "state.json")
    assert os.stat(p).st_mode & 0o777 == 0o600
    back = Stack.load(p)
    assert back.components[0].ports == {"http": 5}
    assert back.password("ci-robot") == "pw-abcdefgh"
    assert back.public_dict()["credentials"] == {"ci-robot": "<redacted>"}


def test_state_file_readable_by_others_is_refused(tmp_path):
    p = tmp_path / "state.json"
    Stack(run_id="r", scenario="s", scenario_name="s", provider="local", arch="amd64", run_dir="/x", report_dir="/y").save(p)
    os.chmod(p, 0o644)
    with pytest.raises(StackError, match="chmod 600"):
        Stack.load(p)


def test_unknown_account_names_the_fix():
    s = Stack(run_id="r", scenario="s", scenario_name="s", provider="local", arch="amd64", run_dir="/x", report_dir="/y")
    with pytest.raises(StackError, match="declare it under identities"):
        s.password("nobody")
