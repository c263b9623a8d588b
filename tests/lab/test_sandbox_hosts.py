"""The product's host machinery (kubeboot/sandbox/hosts.py) with a sandbox's parameters -- own host names,
namespace prefix, subnet and directory, root only -- and its teardown from the state file alone after every
process of the set was SIGKILLed mid-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from kubeboot.sandbox import hosts as sandbox_hosts
from kubeboot.sandbox.hosts import SystemdHosts

from .fixtures import systemd_lab_requirements  # noqa: F401

PREFIX = "kbt-"
SUBNET = "10.209.0.0/24"
REPO = str(Path(__file__).parents[2])


@pytest.fixture
def parent() -> Iterator[Path]:
    """A parent directory like /var/lib/kubeboot/sandbox (on disk: /tmp is the root ext4 here)."""
    d = Path(f"/tmp/kubeboot-sandbox-test-{os.getpid()}")
    d.mkdir(exist_ok=True)
    yield d
    for name in os.listdir(d):
        sandbox_hosts.teardown(name, PREFIX, d / name / "hosts", graceful=False)
        (d / name).rmdir()  # the caller's part (`kubeboot sandbox` keeps its own files beside "hosts")
    d.rmdir()


def test_named_hosts_with_own_prefix_subnet_and_dir(systemd_lab_requirements: None, parent: Path) -> None:
    state_dir = parent / "demo" / "hosts"
    sb = SystemdHosts("demo", names=["cp1", "w1"], state_dir=state_dir, netns_prefix=PREFIX, subnet=SUBNET)
    with sb:
        assert [(h.name, h.address, h.netns) for h in sb.hosts] == [
            ("cp1", "10.209.0.11", "kbt-demo-cp1"), ("w1", "10.209.0.12", "kbt-demo-w1")]  # fmt: skip
        assert sb.ctl_netns == "kbt-demo-ctl" and sb.dir == state_dir and sb.state_path.parent == state_dir
        assert all(d.endswith("/kbt-demo-cp1") for d in sb.host("cp1").cgroups)
        # OpenSSH by host name through the generated ssh_config (ProxyCommand into the ctl namespace)
        p = subprocess.run(["ssh", "-F", str(sb.ssh_config), "w1", "hostname; ping -c1 -W2 cp1 >/dev/null && echo ok"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert (p.returncode, p.stdout.split()) == (0, ["w1", "ok"]), p.stderr
        assert sb.known_hosts.read_text().startswith(f"cp1,10.209.0.11 {sb.host('cp1').host_key}\n")
        hosts_file = sb.sh_in("w1", "cat /etc/hosts")
        assert "10.209.0.1\tworkstation" in hosts_file and "10.209.0.11\tcp1" in hosts_file
        assert sb.sh_in("cp1", "cat /etc/resolv.conf").startswith("nameserver 10.209.0.1\n")
        assert sb.sh_in("cp1", "ip -4 -o addr show eth0").split()[3] == "10.209.0.11/24"
        # root only: the base's lab users have no key and a locked password
        assert sb.sh_in("cp1", "passwd -S kbuser; passwd -S nosudo").split()[1::7] == ["L", "L"]
        assert sb.run_in("cp1", ["test", "-e", "/home/kbuser/.ssh/authorized_keys"], check=False).returncode == 1
        state = json.loads(sb.state_path.read_text())
        assert (state["netns_prefix"], state["subnet"], state["users"], state["ready"]) == (PREFIX, SUBNET, [], True)
        # re-opened from the state file by name, prefix and directory (as `kubeboot sandbox status` does)
        other = sandbox_hosts.attach("demo", PREFIX, state_dir)
        assert other is not None and sandbox_hosts.running(other)
        assert [h.name for h in other.hosts] == ["cp1", "w1"] and other.subnet.cidr == SUBNET
        assert SystemdHosts.find_stale(parent, PREFIX, "hosts") == {}
        hosts = list(sb.hosts)
    assert sandbox_hosts.leftovers("demo", PREFIX, state_dir, hosts) == []
    assert not state_dir.exists()


def test_teardown_after_sigkill_of_launchers_and_owner_mid_up(systemd_lab_requirements: None, parent: Path) -> None:
    """`up` SIGKILLs every host's supervisor and then itself right after launching them (before the hosts are
    ready): hosts and nspawn keep running, orphaned; the state file alone finds and removes everything."""
    state_dir = parent / "killed" / "hosts"
    code = f"""
import os, signal, sys
sys.path.insert(0, {REPO!r})
from kubeboot.sandbox.hosts import SystemdHosts

class Killed(SystemdHosts):
    def wait_booted(self, host, timeout=60.0):
        time_to_die = self.host(host).name == self.hosts[0].name
        if time_to_die:
            import time
            time.sleep(0.5)  # nspawn is running by now
            for h in self.hosts:
                os.kill(h.launcher_pid, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return 0.0

Killed("killed", names=["lb1", "cp1"], state_dir={str(state_dir)!r}, netns_prefix={PREFIX!r},
       subnet={SUBNET!r}).up()
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    sb = SystemdHosts.open(state_dir)
    assert not sb.ready
    # the orphaned hosts still run (nspawn outlived its supervisor)
    deadline = time.monotonic() + 10
    while not any(sandbox_hosts.cgroups.pids_in(h.cgroups) for h in sb.hosts):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any("systemd-nspawn" in sandbox_hosts.cmdline(pid) for h in sb.hosts
               for pid in sandbox_hosts.cgroups.pids_in(h.cgroups))  # fmt: skip
    stale = SystemdHosts.find_stale(parent, PREFIX, "hosts")
    assert "died before the hosts were ready" in stale["killed"][0]
    assert not sandbox_hosts.running(sb)
    hosts = list(sb.hosts)
    t0 = time.monotonic()
    removed = sandbox_hosts.teardown("killed", PREFIX, state_dir)
    assert time.monotonic() - t0 < 20
    assert "netns kbt-killed-ctl" in removed
    assert sandbox_hosts.leftovers("killed", PREFIX, state_dir, hosts) == []
    assert not state_dir.exists()
