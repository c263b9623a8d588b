"""The read-only day-two commands as processes: without the state `up` keeps there is nothing to authenticate
with, so status refuses before connecting (exit 4); the exit codes are documented in the help."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cli.test_cli_render import kubeboot
from tests.conftest import EXAMPLE


def test_status_without_state_refuses_before_connecting(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yaml"
    shutil.copy(EXAMPLE, inv)
    res = kubeboot("status", "-i", str(inv), "--known-hosts", str(tmp_path / "known_hosts"))
    assert res.returncode == 4, res.stderr
    assert "no cluster state in" in res.stderr and "kubeboot up" in res.stderr
    assert not (tmp_path / ".kubeboot").exists()  # nothing written either


def test_exit_codes_are_in_the_help() -> None:
    res = kubeboot("--help")
    assert "19 status: degraded, 20 status: etcd quorum lost" in " ".join(res.stdout.split())
    res = kubeboot("status", "--help")
    assert "Exit 0 healthy, 19 degraded, 20 etcd quorum lost" in " ".join(res.stdout.split())
    assert kubeboot("certs", "check-expiration", "--help").returncode == 0
