"""Unit tests: where the local provider makes its run directory (labgate.providers.local.run_dir_parent)."""

from __future__ import annotations

import pytest

from labgate.errors import StackError
from labgate.providers.local import run_dir_parent


@pytest.fixture
def mounts(tmp_path):
    """A /proc/mounts naming ``ram`` a tmpfs, and ``disk`` an ext4."""
    (tmp_path / "ram").mkdir()
    (tmp_path / "disk").mkdir()
    f = tmp_path / "mounts"
    f.write_text(f"/dev/vda {tmp_path / 'disk'} ext4 rw,relatime 0 0\ntmpfs {tmp_path / 'ram'} tmpfs rw,nosuid,nodev 0 0\n")
    return f


def test_a_tmpfs_with_room_is_chosen(tmp_path, mounts, monkeypatch):
    monkeypatch.delenv("LABGATE_RUN_DIR_PARENT", raising=False)
    assert run_dir_parent(tmp_path / "ram", min_free=0, mounts=mounts) == str(tmp_path / "ram")


def test_a_tmpfs_without_room_falls_back_to_the_temp_dir(tmp_path, mounts, monkeypatch):
    monkeypatch.delenv("LABGATE_RUN_DIR_PARENT", raising=False)
    assert run_dir_parent(tmp_path / "ram", min_free=1 << 60, mounts=mounts) is None  # a container's 64 MB /dev/shm


def test_a_directory_that_is_not_a_tmpfs_is_not_chosen(tmp_path, mounts, monkeypatch):
    monkeypatch.delenv("LABGATE_RUN_DIR_PARENT", raising=False)
    assert run_dir_parent(tmp_path / "disk", min_free=0, mounts=mounts) is None
    assert run_dir_parent(tmp_path / "missing", min_free=0, mounts=mounts) is None


def test_the_users_choice_wins(tmp_path, mounts, monkeypatch):
    monkeypatch.setenv("LABGATE_RUN_DIR_PARENT", str(tmp_path / "disk"))
    assert run_dir_parent(tmp_path / "ram", min_free=0, mounts=mounts) == str(tmp_path / "disk")


def test_a_choice_that_is_not_a_directory_names_the_variable(tmp_path, mounts, monkeypatch):
    monkeypatch.setenv("LABGATE_RUN_DIR_PARENT", str(tmp_path / "nowhere"))
    with pytest.raises(StackError) as info:
        run_dir_parent(tmp_path / "ram", min_free=0, mounts=mounts)
    assert info.value.render() == f"LABGATE_RUN_DIR_PARENT={tmp_path / 'nowhere'}: not a writable directory (fix: create it, or unset it)"
