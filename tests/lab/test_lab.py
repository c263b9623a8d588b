"""Tests of the lab harness itself: real namespaces, real sshd, real SSH (fabric, strict host keys)."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fixtures import LabFactory, lab_skip_reason
from .fixtures import lab, lab_factory, lab_requirements  # noqa: F401  (works without -p tests.lab.fixtures)
from .lab import KBUSER, KBUSER_PASSWORD, NOSUDO_PASSWORD, NOSUDO_USER, Lab, LabError, _alive

fabric = pytest.importorskip("fabric", reason="fabric not installed (pip install fabric)")
paramiko = pytest.importorskip("paramiko")

pytestmark = pytest.mark.lab(hosts=5)
REPO = Path(__file__).resolve().parents[2]


def _netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _assert_gone(name: str, pids: list[int], netns: list[str], lab_dir: Path) -> None:
    alive = [p for p in pids if _alive(p)]
    assert not alive, f"processes left: {alive}"
    assert not (set(netns) & _netns_names()), f"netns left: {set(netns) & _netns_names()}"
    assert not lab_dir.exists(), f"{lab_dir} left"
    assert name not in Lab.list_labs()


def test_five_hosts_up(lab: Lab) -> None:
    assert [h.name for h in lab.hosts] == ["h1", "h2", "h3", "h4", "h5"]
    assert [h.address for h in lab.hosts] == [f"10.200.0.{i}" for i in range(11, 16)]
    assert {h.netns for h in lab.hosts} | {lab.ctl_netns} <= _netns_names()
    for h in lab.hosts:
        assert lab.sshd_running(h)
    # the state file lets another process attach
    other = Lab.attach(lab.name)
    assert [(h.name, h.init_pid) for h in other.hosts] == [(h.name, h.init_pid) for h in lab.hosts]
    # the root namespace got no lab address or route
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    assert "10.200." not in routes + addrs


def test_each_host_has_own_identity_and_dirs(lab: Lab) -> None:
    seen_ids = set()
    for h in lab.hosts:
        with lab.connection(h) as c:
            out = c.run("hostname; cat /etc/hostname /etc/machine-id; hostname -I", hide=True).stdout.split()
        assert out[:2] == [h.name, h.name]
        assert out[2] == h.machine_id
        assert out[3] == h.address
        seen_ids.add(out[2])
    assert len(seen_ids) == len(lab.hosts)

    h1, h2 = lab.host("h1"), lab.host("h2")
    with lab.connection(h1) as c:
        c.run("echo written-on-h1 > /etc/kubernetes/marker.txt; echo x > /var/lib/etcd/m; echo y > /tmp/m", hide=True)
    with lab.connection(h2) as c:
        r = c.run("ls /etc/kubernetes/marker.txt /var/lib/etcd/m /tmp/m", hide=True, warn=True)
        assert r.failed and r.stderr.count("No such file") == 3
    assert (h1.dir("/etc/kubernetes") / "marker.txt").read_text() == "written-on-h1\n"
    assert lab.run_in(h1, ["cat", "/etc/kubernetes/marker.txt"]).stdout == "written-on-h1\n"
    assert not Path("/etc/kubernetes/marker.txt").exists()  # the machine itself is untouched


def test_strict_host_key_checking(lab: Lab, tmp_path: Path) -> None:
    h1, h2 = lab.host("h1"), lab.host("h2")
    # every host key is in known_hosts and differs per host
    keys = [h.host_key for h in lab.hosts]
    assert len(set(keys)) == len(keys)
    assert lab.known_hosts.read_text().count("ssh-ed25519") == len(lab.hosts)
    # a wrong key for h1 is rejected ...
    c = lab.connection(h1)
    c.client.get_host_keys().clear()
    kind, blob = h2.host_key.split()
    c.client.get_host_keys().add(h1.address, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
    with pytest.raises(paramiko.BadHostKeyException):
        c.open()
    # ... and so is an unknown host
    c = lab.connection(h1)
    c.client.get_host_keys().clear()
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        c.open()


@pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("nc") is None, reason="ssh or nc missing")
def test_openssh_client_with_generated_config(lab: Lab) -> None:
    r = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "h4", "hostname"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (r.returncode, r.stdout.strip()) == (0, "h4"), r.stderr
    r = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), f"{KBUSER}@{lab.host('h4').address}", "id -un"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (r.returncode, r.stdout.strip()) == (0, KBUSER), r.stderr


def test_proxy_command_gateway(lab: Lab) -> None:
    with lab.connection("h5", via="proxy") as c:
        assert c.run("hostname", hide=True).stdout.strip() == "h5"


def test_password_sudo_without_tty_or_stdin(lab: Lab) -> None:
    with lab.connection("h2", user=KBUSER) as c:
        assert c.run("id -un", hide=True).stdout.strip() == KBUSER
        r = c.sudo("id -u", password=KBUSER_PASSWORD, in_stream=False, hide=True)
        assert r.stdout.strip() == "0"
        # the Connection's config already carries password and in_stream=False
        assert c.sudo("sh -c 'id -u; cat /etc/shadow >/dev/null && echo ok'", hide=True).stdout.split() == ["0", "ok"]


def test_nosudo_user_cannot_sudo(lab: Lab) -> None:
    with lab.connection("h3", user=NOSUDO_USER) as c:
        assert c.run("id -un", hide=True).stdout.strip() == NOSUDO_USER
        r = c.sudo("id -u", password=NOSUDO_PASSWORD, in_stream=False, hide=True, warn=True)
    assert r.failed
    assert "not in the sudoers file" in r.stderr


def test_stop_and_start_sshd(lab: Lab) -> None:
    h3 = lab.host("h3")
    survivor = lab.connection(h3)
    survivor.open()
    lab.stop_sshd(h3)
    try:
        with pytest.raises(OSError):  # ConnectionRefusedError from the lab socket
            lab.connection(h3).open()
        assert survivor.run("hostname", hide=True).stdout.strip() == "h3"  # like `systemctl stop ssh`
        with lab.connection("h4") as c:
            assert c.run("hostname", hide=True).stdout.strip() == "h4"
    finally:
        lab.start_sshd(h3)
    with lab.connection(h3) as c:  # same host key, strict checking still passes
        assert c.run("hostname", hide=True).stdout.strip() == "h3"

    # "host goes down": open sessions die too
    lab.stop_sshd(h3, drop_sessions=True)
    try:
        with pytest.raises(Exception):
            survivor.run("hostname", hide=True)
    finally:
        survivor.close()
        lab.start_sshd(h3)
    with lab.connection(h3) as c:
        assert c.run("hostname", hide=True).stdout.strip() == "h3"


def test_disconnect_and_reconnect(lab: Lab) -> None:
    h5 = lab.host("h5")
    lab.disconnect(h5)
    try:
        assert not lab.port_open(h5, 22, timeout=0.3)
    finally:
        lab.reconnect(h5)
    lab.wait_for_ssh(h5, 5)


def test_freeze_and_thaw(lab: Lab) -> None:
    h4 = lab.host("h4")
    lab.freeze(h4)
    try:
        with lab.sock_for(h4, 22) as s:  # the kernel still accepts ...
            s.settimeout(0.5)
            with pytest.raises(socket.timeout):  # ... but sshd never sends its banner
                s.recv(4)
    finally:
        lab.thaw(h4)
    lab.wait_for_ssh(h4, 5)
    with lab.connection(h4) as c:
        assert c.run("hostname", hide=True).stdout.strip() == "h4"


def test_fault_helpers(lab: Lab) -> None:
    h1, h2, h4 = lab.host("h1"), lab.host("h2"), lab.host("h4")
    assert lab.run_in(h1, ["hostname"]).stdout.strip() == "h1"

    # fake swap (kubeadm preflight reads /proc/swaps)
    lab.enable_fake_swap(h1)
    with lab.connection(h1) as c:
        assert "/swapfile" in c.run("cat /proc/swaps", hide=True).stdout
    assert "/swapfile" not in lab.run_in(h2, ["cat", "/proc/swaps"]).stdout
    lab.disable_fake_swap(h1)
    assert "/swapfile" not in lab.run_in(h1, ["cat", "/proc/swaps"]).stdout

    # occupied port
    pid = lab.occupy_port(h1, 6443)
    assert 6443 in lab.listening_ports(h1) and 6443 not in lab.listening_ports(h2)
    assert lab.port_open(h1, 6443)
    lab.release_port(h1, pid)
    deadline = time.monotonic() + 5
    while 6443 in lab.listening_ports(h1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 6443 not in lab.listening_ports(h1)

    # a binary missing on one host only
    lab.hide_binary(h4, "nc")
    try:
        with lab.connection(h4) as c:
            assert c.run("command -v nc", hide=True, warn=True).failed
            assert c.run("ls /usr/bin/nc /bin/nc", hide=True, warn=True).failed
        assert lab.run_in(h2, ["sh", "-c", "command -v nc"]).stdout.strip()
    finally:
        lab.restore_binaries(h4)
    assert lab.run_in(h4, ["sh", "-c", "command -v nc"]).stdout.strip()
    assert Path("/usr/bin/nc").exists()

    # duplicate hostname / machine-id
    lab.set_machine_id(h2, h1.machine_id)
    lab.set_hostname(h2, "h1")
    try:
        with lab.connection(h2) as c:
            assert c.run("hostname; cat /etc/machine-id", hide=True).stdout.split() == ["h1", h1.machine_id]
    finally:
        lab.set_machine_id(h2, h2.machine_id)
        lab.set_hostname(h2, "h2")
    assert lab.run_in(h2, ["cat", "/etc/machine-id"]).stdout.strip() == h2.machine_id


@pytest.mark.skipif(not Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists(), reason="no libfaketime")
def test_clock_offset(lab: Lab) -> None:
    h5 = lab.host("h5")
    lab.set_clock_offset(h5, 86400)
    try:
        with lab.connection(h5) as c:
            remote = int(c.run("date +%s", hide=True).stdout)
        assert abs(remote - time.time() - 86400) < 60
        assert abs(int(lab.run_in("h4", ["date", "+%s"]).stdout) - time.time()) < 60
    finally:
        lab.clear_clock_offset(h5)
    with lab.connection(h5) as c:
        assert abs(int(c.run("date +%s", hide=True).stdout) - time.time()) < 60


def test_teardown_leaves_nothing(lab_factory: LabFactory) -> None:
    lab2 = lab_factory(2)
    pids = lab2.processes()
    netns = [lab2.ctl_netns] + [h.netns for h in lab2.hosts]
    assert len(pids) >= 2 * 2  # per host at least init + sshd (+ launcher)
    with lab2.connection("h1") as c:  # something started over SSH must die too
        c.run("setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > /root/sleep.pid", hide=True)
    pids = lab2.processes()
    t0 = time.monotonic()
    lab_factory.down(lab2)
    took = time.monotonic() - t0
    _assert_gone(lab2.name, pids, netns, lab2.dir)
    assert took < 5
    lab2.down()  # idempotent


def test_cli_up_status_down_from_other_processes(lab_requirements: None) -> None:
    name = f"cli{os.getpid()}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "tests.lab"]
    up = subprocess.run(cli + ["up", "2", "--name", name], capture_output=True, text=True, env=env, cwd=REPO)
    try:
        assert up.returncode == 0, up.stderr
        attached = Lab.attach(name)  # this process did not start it
        with attached.connection("h2") as c:
            assert c.run("hostname", hide=True).stdout.strip() == "h2"
        st = subprocess.run(cli + ["status"], capture_output=True, text=True, env=env, cwd=REPO, check=True)
        assert f"lab {name}" in st.stdout
        pids = attached.processes()
        netns = [attached.ctl_netns] + [h.netns for h in attached.hosts]
        with pytest.raises(LabError, match="already exists"):
            Lab(name, 1).up()
    finally:
        down = subprocess.run(cli + ["down", "--name", name], capture_output=True, text=True, env=env, cwd=REPO)
    assert down.returncode == 0, down.stderr
    _assert_gone(name, pids, netns, attached.dir)


def _build_deb(tmp: Path) -> Path:
    root = tmp / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: kubeboot-lab-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: kubeboot tests <tests@invalid>\nDescription: lab overlay probe\n"
    )
    tool = root / "usr" / "bin" / "kubeboot-lab-probe"
    tool.write_text("#!/bin/sh\necho probe-ok\n")
    tool.chmod(0o755)
    out = tmp / "probe.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb missing")
def test_overlay_host_package_install(lab_factory: LabFactory, tmp_path: Path) -> None:
    deb = _build_deb(tmp_path)
    lab3 = lab_factory(2, overlay=True)
    try:
        with lab3.connection("h1") as c:
            c.put(str(deb), "/tmp/probe.deb")
            c.run("dpkg -i /tmp/probe.deb", hide=True)
            assert c.run("kubeboot-lab-probe", hide=True).stdout.strip() == "probe-ok"
        with lab3.connection("h2") as c:
            assert c.run("command -v kubeboot-lab-probe", hide=True, warn=True).failed
        assert not Path("/usr/bin/kubeboot-lab-probe").exists()
        assert "kubeboot-lab-probe" not in Path("/var/lib/dpkg/status").read_text()
    finally:
        lab_factory.down(lab3)


def test_skip_reason_is_clear() -> None:
    reason = lab_skip_reason()
    if os.geteuid() != 0:
        assert reason and "root" in reason
    else:
        assert reason is None or reason.startswith("lab unavailable: ")
