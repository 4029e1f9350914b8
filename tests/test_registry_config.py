"""Unit tests: registry configs are plain functions of the scenario."""

import bcrypt
import yaml

from labgate.components import registry as reg
from labgate.scenario import load_scenario

SC = load_scenario("scenarios/local.yaml")


def test_zot_config_from_scenario():
    cfg = reg.render_zot_config(SC, address="127.0.0.1", port=5000, root_dir="/d", htpasswd_path="/h")
    assert cfg["http"]["port"] == "5000"
    assert cfg["http"]["auth"]["failDelay"] == 0
    assert "cve" not in cfg["extensions"]["search"]
    assert cfg["extensions"]["trust"] == {"enable": True, "cosign": True, "notation": False}
    ac = cfg["http"]["accessControl"]
    assert ac["groups"]["robots"]["users"] == ["ci-robot"]
    pols = ac["repositories"]["conformance/**"]["policies"]
    assert {"groups": ["robots"], "actions": ["read", "create", "update", "delete"]} in pols
    assert {"groups": ["readers"], "actions": ["read"]} in pols
    assert ac["repositories"]["vault/**"]["policies"] == [{"groups": ["vault"], "actions": ["read", "create", "update", "delete"]}]


def test_distribution_config():
    text = reg.render_distribution_config(SC, address="127.0.0.1", port=5001, root_dir="/d", htpasswd_path="/h", http_secret="s" * 20)
    cfg = yaml.safe_load(text)
    assert cfg["http"]["addr"] == "127.0.0.1:5001"
    assert cfg["storage"]["delete"]["enabled"] is True
    assert cfg["auth"]["htpasswd"]["path"] == "/h"


def test_htpasswd_is_bcrypt_and_verifies():
    line = reg.htpasswd({"ci-robot": "pw-123456"}).strip()
    user, h = line.split(":", 1)
    assert user == "ci-robot" and h.startswith(f"$2y${reg.BCRYPT_ROUNDS:02d}$")
    assert bcrypt.checkpw(b"pw-123456", h.replace("$2y$", "$2b$", 1).encode())
