"""The Vagrantfile and inventory.vagrant.yaml agree (pure: the defaults are read from the Vagrantfile's text),
and the Vagrantfile is valid Ruby and valid Vagrant configuration where ruby and vagrant are installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubeboot.config.load import load_inventory_text
from kubeboot.config.model import LoadBalancerMode, Role

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
INVENTORY = REPO / "inventory.vagrant.yaml"
ROLE_OF = {"lb": Role.LOAD_BALANCER, "cp": Role.CONTROL_PLANE, "w": Role.WORKER}


def _default(name: str) -> str:
    """The default of one KUBEBOOT_* setting, as the Vagrantfile spells it (ENV.fetch or env_int)."""
    text = VAGRANTFILE.read_text()
    m = re.search(rf'(?:ENV\.fetch|env_int)\("{name}", "?([^")]+)"?\)', text)
    assert m, f"{name} has no default in the Vagrantfile"
    return m.group(1)


def _vagrant_nodes() -> list[tuple[str, str, Role]]:
    """(name, address, role) of every VM at the defaults, by the Vagrantfile's own numbering rules."""
    text = VAGRANTFILE.read_text()
    subnet, lbs = _default("KUBEBOOT_SUBNET"), int(_default("KUBEBOOT_LBS"))
    counts = {"lb": lbs, "cp": int(_default("KUBEBOOT_CPS")), "w": int(_default("KUBEBOOT_WORKERS"))}
    nodes = []
    # (1..LBS).map { |i| ["lb#{i}", "#{SUBNET}.#{9 + i}", ...
    for prefix, offset in re.findall(r'\["(lb|cp|w)#\{i\}", "#\{SUBNET\}\.#\{([^}]+)\}"', text):
        terms = {"LBS": lbs, "i": 0}  # "9 + LBS + i" -> 9 + lbs
        base = sum(terms[t] if t in terms else int(t) for t in (x.strip() for x in offset.split("+")))
        nodes += [(f"{prefix}{i}", f"{subnet}.{base + i}", ROLE_OF[prefix]) for i in range(1, counts[prefix] + 1)]
    return nodes


def test_vagrantfile_defaults_are_the_recipes_cluster() -> None:
    nodes = _vagrant_nodes()
    assert [n for n, _, _ in nodes] == ["lb1", "cp1", "cp2", "cp3", "w1", "w2"]
    assert [a for _, a, _ in nodes] == ["192.168.56.10", "192.168.56.11", "192.168.56.12", "192.168.56.13",
                                        "192.168.56.21", "192.168.56.22"]


def test_inventory_vagrant_matches_the_vagrantfile() -> None:
    cfg = load_inventory_text(INVENTORY.read_text(), str(INVENTORY))
    assert cfg.warnings == ()
    assert [(h.name, str(h.address), set(h.roles)) for h in cfg.hosts] == [
        (name, address, {role}) for name, address, role in _vagrant_nodes()]
    lb = next(a for n, a, r in _vagrant_nodes() if r is Role.LOAD_BALANCER)
    assert cfg.load_balancer_mode is LoadBalancerMode.EXTERNAL_NGINX
    assert cfg.control_plane_endpoint.hostport() == f"{lb}:6443"
    for h in cfg.hosts:
        # the vagrant user through sudo; no key file of kubeboot's own: `vagrant ssh-config` names each VM's key
        assert (h.ssh.user, h.ssh.port, h.ssh.key_path) == ("vagrant", 22, None)
        assert not h.address.is_loopback and str(h.address) != "10.0.2.15"  # never the shared NAT address


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAGRANT_CWD": str(REPO), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
           "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


def test_vagrantfile_is_valid_ruby(tmp_path: Path) -> None:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (tests/setup.sh installs it: apt-get install ruby)")
    p = _run(["ruby", "-c", str(VAGRANTFILE)], tmp_path)
    assert p.returncode == 0 and "Syntax OK" in p.stdout, p.stderr


def test_vagrant_validates_the_vagrantfile(tmp_path: Path) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (tests/setup.sh installs it: apt-get install vagrant)")
    # --ignore-provider: no VirtualBox here, and the provider blocks are for the user's machine
    p = _run(["vagrant", "validate", "--ignore-provider"], tmp_path)
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr
    bad = _run(["env", "KUBEBOOT_CPUS=two", "vagrant", "validate", "--ignore-provider"], tmp_path)
    assert bad.returncode != 0 and "KUBEBOOT_CPUS must be a whole number" in bad.stderr
