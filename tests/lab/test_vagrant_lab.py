"""The Vagrant path on a light lab host: a box-like `vagrant` user, the client config `vagrant ssh-config`
prints, and kubeboot reaching the host with no keyPath of its own (the key is the config's IdentityFile for the
host's name), verifying host keys although that config says StrictHostKeyChecking no."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .fixtures import lab, lab_factory, lab_requirements  # noqa: F401  (works without -p tests.lab.fixtures)
from .lab import Lab
from .vagrant import VAGRANT_USER, add_vagrant_user, vagrant_key, vagrant_ssh_config

pytestmark = pytest.mark.lab(hosts=1)
REPO = Path(__file__).resolve().parents[2]


def _inventory(lab: Lab, path: Path) -> Path:
    address = str(lab.host("h1").address)
    doc = {
        "apiVersion": "kubeboot.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "vagrantlab"},
        "spec": {
            "controlPlaneEndpoint": f"{address}:6443",
            "loadBalancer": {"mode": "none"},
            "ssh": {"user": VAGRANT_USER, "keyPath": None},  # as inventory.vagrant.yaml: keys from the ssh-config
            "hosts": [{"name": "h1", "address": address, "roles": ["control-plane"]}],
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _preflight(inv: Path, ssh_config: Path, known_hosts: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubeboot.cli", "up", "-i", str(inv), "--only", "preflight",
           "--ignore-preflight-errors=all", "--ssh-config", str(ssh_config), "--known-hosts", str(known_hosts),
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=inv.parent)


def test_vagrant_user_is_box_like(lab: Lab) -> None:
    add_vagrant_user(lab, "h1")
    add_vagrant_user(lab, "h1")  # idempotent
    assert lab.sh_in("h1", "su - vagrant -c 'sudo -n id -u'").strip() == "0"
    assert lab.sh_in("h1", "stat -c '%a %U' /etc/sudoers.d/vagrant ~vagrant/.ssh/authorized_keys").split() == [
        "440", "root", "600", VAGRANT_USER]
    pub = vagrant_key(lab).with_suffix(".pub").read_text().strip()
    assert lab.sh_in("h1", "cat ~vagrant/.ssh/authorized_keys").strip() == pub


def test_ssh_config_has_vagrants_format(lab: Lab) -> None:
    key = vagrant_key(lab)
    text = vagrant_ssh_config(lab, ["h1"], key)
    assert text.splitlines() == [
        "Host h1", f"  HostName {lab.host('h1').address}", "  User vagrant", "  Port 22",
        "  UserKnownHostsFile /dev/null", "  StrictHostKeyChecking no", "  PasswordAuthentication no",
        f"  IdentityFile {key}", "  IdentitiesOnly yes", "  LogLevel FATAL", "  PubkeyAcceptedKeyTypes +ssh-rsa",
        "  HostKeyAlgorithms +ssh-rsa", ""]


def test_kubeboot_connects_as_vagrant_with_the_ssh_config_key(lab: Lab, tmp_path: Path) -> None:
    add_vagrant_user(lab, "h1")
    inv = _inventory(lab, tmp_path / "inventory.yaml")
    route = f"Host 10.200.0.*\n    ProxyCommand {lab.proxy_command()}\n\n"  # the lab's only way in
    ssh_config = tmp_path / "ssh-config"
    ssh_config.write_text(route + vagrant_ssh_config(lab, ["h1"], vagrant_key(lab)))
    known_hosts = tmp_path / "known_hosts"

    # StrictHostKeyChecking no in the config does not switch off kubeboot's host-key check: an unknown key is
    # refused (exit 10) until the user explicitly accepts new keys.
    refused = _preflight(inv, ssh_config, known_hosts)
    assert refused.returncode == 10, refused.stderr
    assert "unknown host key" in refused.stderr and "--accept-new-host-keys" in refused.stderr

    accepted = _preflight(inv, ssh_config, known_hosts, "--accept-new-host-keys")
    assert accepted.returncode == 0, accepted.stderr  # connected as vagrant, every check ran through sudo -n
    address = str(lab.host("h1").address)
    assert known_hosts.read_text().split() == [address, *lab.host("h1").host_key.split()]
    trace = (tmp_path / ".kubeboot/vagrantlab/trace.log").read_text()
    assert "h1: exit 0" in trace

    # now known: strict checking passes without the flag
    again = _preflight(inv, ssh_config, known_hosts)
    assert again.returncode == 0, again.stderr

    # the key really comes from the `Host h1` block: without it, nothing authenticates as vagrant (exit 9)
    route_only = tmp_path / "route-only"
    route_only.write_text(route)
    no_key = _preflight(inv, route_only, known_hosts)
    assert no_key.returncode == 9 and "no SSH key to offer" in no_key.stderr, no_key.stderr
