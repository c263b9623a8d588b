"""kubeboot up over real SSH on a 5-host lab: preflight findings, file placement, convergence, dry-run,
a host lost mid-run, and every distinct connection/auth failure with its own exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeboot import output
from kubeboot.errors import HostConnectionError
from kubeboot.phases.base import RunOptions
from kubeboot.runner import ConnectOptions
from kubeboot.workflows.up import UpRequest, up
from tests.e2e.conftest import inventory, kubeboot, proxy_only_ssh_config, snapshot
from tests.lab import Lab
from tests.lab.common import RESOLV_CONF

pytestmark = pytest.mark.lab(hosts=5)
NO_SYSTEMD = "--ignore-preflight-errors=Systemd"  # lab hosts run sshd as PID 1's child, not systemd


def test_preflight_reports_seeded_problems_on_the_right_hosts(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml")
    lab.enable_fake_swap("h2")
    pid = lab.occupy_port("h3", 10250)
    lab.hide_binary("h4", "iptables")
    lab.set_hostname("h5", "h4")  # duplicate of h4's hostname
    lab.set_clock_offset("h1", 300)
    lab.sh_in("h2", "printf 'nameserver 127.0.0.53\\n' > /etc/resolv.conf")  # a local stub, no systemd-resolved
    try:
        res = kubeboot(lab, inv, "up", "--only", "preflight")
        assert res.returncode == 5, res.stderr
        err = res.stderr
        assert "h2: [Swap] swap is on (/swapfile)" in err
        assert "h3: [Port-10250] port 10250 is in use" in err
        assert "h4: [FileExisting-iptables] iptables not found in PATH" in err
        assert "h5: [DuplicateHostname] hostname 'h4' is also used by h4" in err
        assert "h1: [ClockSkew] clock is +300s off the other hosts'" in err
        assert "h2: [ResolvConf] /etc/resolv.conf lists 127.0.0.53: CoreDNS forwards there" in err
        assert "--ignore-preflight-errors=" in err
        names = ("Swap,Port-10250,FileExisting-iptables,DuplicateHostname,ClockSkew,ResolvConf,"
                 "FileContent--proc-sys-net-ipv4-ip_forward")
        ok = kubeboot(lab, inv, "up", "--only", "preflight", f"--ignore-preflight-errors={names}")
        assert ok.returncode == 0, ok.stderr
        lines = ok.stderr.splitlines()
        for host, check in (("h2", "Swap"), ("h3", "Port-10250"), ("h4", "FileExisting-iptables"),
                            ("h5", "DuplicateHostname"), ("h1", "ClockSkew"), ("h2", "ResolvConf")):
            assert any(ln.startswith(f"[preflight] {host}: warning {check}: ") and ln.endswith("(ignored)")
                       for ln in lines), (host, check, ok.stderr)
    finally:
        lab.disable_fake_swap("h2")
        lab.release_port("h3", pid)
        lab.restore_binaries("h4")
        lab.set_hostname("h5", "h5")
        lab.clear_clock_offset("h1")
        lab.sh_in("h2", f"printf '{RESOLV_CONF}' > /etc/resolv.conf")


def test_files_are_placed_then_a_rerun_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml")
    first = kubeboot(lab, inv, "up", "--only", "load-balancer", "--only", "files", NO_SYSTEMD)
    assert first.returncode == 0, first.stderr
    before = {h: snapshot(lab, h) for h in ("h1", "h2", "h3", "h4", "h5")}
    assert "/etc/kubernetes/pki/ca.key" in before["h2"]
    assert before["h2"]["/etc/kubernetes/pki/apiserver.key"].split()[1] == "600"
    # the other control planes and the workers get their node files only: their certificates, kubeconfigs and
    # manifests come from joining (join-control-planes, join-workers), as with kubeadm
    for h in ("h1", "h3", "h4", "h5"):
        assert not any(p.startswith("/etc/kubernetes") for p in before[h]), h
    assert "/var/lib/kubelet/config.yaml" in before["h3"] and "/var/lib/kubelet/config.yaml" in before["h5"]
    assert "/etc/nginx/nginx.conf" in before["h1"]
    # first control plane: 3 CAs + sa + 7 leaves (pairs), 5 kubeconfigs with super-admin.conf, 4 manifests
    assert sum(p.startswith("/etc/kubernetes/") for p in before["h2"]) == 31

    # the trace log records every command but no secret: grep it for the actual values
    trace = (inv.parent / ".kubeboot/lab/trace.log").read_text()
    token_secret = (inv.parent / ".kubeboot/lab/tokens/bootstrap").read_text().split()[0].split(".")[1]
    assert "put /etc/kubernetes/pki/ca.key" in trace and token_secret not in trace
    for key in (inv.parent / ".kubeboot/lab").rglob("*.key"):
        body = "".join(key.read_text().splitlines()[1:-1])
        assert body[:40] not in trace.replace("\n", ""), key
    assert "PRIVATE KEY" not in trace

    second = kubeboot(lab, inv, "up", "--only", "load-balancer", "--only", "files", NO_SYSTEMD)
    assert second.returncode == 0, second.stderr
    assert "no changes: the hosts already match" in second.stderr
    assert "wrote" not in second.stderr
    assert {h: snapshot(lab, h) for h in before} == before  # same bytes, modes and mtimes

    # one input changes -> exactly the files that depend on it change
    inventory(lab, inv, containerRuntime={"cgroupDriver": "cgroupfs"})
    third = kubeboot(lab, inv, "up", "--only", "load-balancer", "--only", "files", NO_SYSTEMD)
    assert third.returncode == 0, third.stderr
    after = {h: snapshot(lab, h) for h in before}
    changed = sorted((h, p) for h in before for p in after[h] if after[h][p] != before[h].get(p))
    expected = sorted((h, p) for h in ("h2", "h3", "h4", "h5")
                      for p in ("/etc/containerd/config.toml", "/var/lib/kubelet/config.yaml"))
    assert changed == expected


def test_dry_run_prints_the_plan_and_touches_nothing(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml", containerRuntime={"cgroupDriver": "cgroupfs"})
    assert kubeboot(lab, inv, "up", "--only", "files", NO_SYSTEMD).returncode == 0  # a known starting point
    before = {h: snapshot(lab, h) for h in ("h2", "h5")}
    inventory(lab, inv, certificates={"apiServerCertSANs": ["api.lab.test"]})  # and back to systemd cgroups
    res = kubeboot(lab, inv, "plan", "--only", "files", NO_SYSTEMD)
    assert res.returncode == 0, res.stderr
    assert "would write /etc/kubernetes/pki/apiserver.crt" in res.stderr
    # a changed non-secret file is shown as a diff against the host's copy; secrets never are
    assert "-        SystemdCgroup = false" in res.stderr and "+        SystemdCgroup = true" in res.stderr
    assert "nothing was changed" in res.stderr
    assert "BEGIN RSA PRIVATE KEY" not in res.stderr + res.stdout and "client-key-data" not in res.stderr
    assert {h: snapshot(lab, h) for h in before} == before


class _LoseHostAfterConnect(output.Reporter):
    """Stops h3's sshd (and its sessions) right after facts are gathered: the host dies mid-run."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(quiet=True)
        self.lab = lab

    def phase_done(self, phase: str, summary: str) -> None:
        super().phase_done(phase, summary)
        if phase == "connect":
            self.lab.stop_sshd("h3", drop_sessions=True)


def test_host_lost_mid_run_fails_alone_and_a_rerun_converges(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml")
    lab.sh_in("h2", "rm -rf /etc/kubernetes/* /var/lib/kubelet/*")
    lab.sh_in("h3", "rm -rf /etc/kubernetes/* /var/lib/kubelet/*")
    req = UpRequest(inv, None, only=("files",), options=RunOptions(ignore_preflight_errors=frozenset({"systemd"})),
                    connect=ConnectOptions(lab.known_hosts, False, proxy_only_ssh_config(lab), 10))
    try:
        with pytest.raises(HostConnectionError) as info:
            up(req, _LoseHostAfterConnect(lab))
        assert info.value.message.startswith("[files] 1 host(s) failed:")
        assert "h3: connection lost" in info.value.message
        assert "h2" not in info.value.message
        assert "/etc/kubernetes/pki/ca.key" in snapshot(lab, "h2")  # the others completed the phase
        assert not any(p.startswith("/var/lib/kubelet/") for p in snapshot(lab, "h3"))
    finally:
        lab.start_sshd("h3")
    rerun = kubeboot(lab, inv, "up", "--only", "files", NO_SYSTEMD)
    assert rerun.returncode == 0, rerun.stderr
    assert "h3: wrote" in rerun.stderr and "h2: wrote" not in rerun.stderr
    assert {"/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env"} <= set(snapshot(lab, "h3"))


def test_connection_failures_have_distinct_messages_and_exit_codes(lab: Lab, tmp_path: Path) -> None:
    import subprocess

    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    base = inventory(lab, tmp_path / "inv.yaml", hosts=2)

    wrong_key = inventory(lab, tmp_path / "wrong-key.yaml", hosts=2, ssh={"user": "root", "keyPath": str(other_key)})
    res = kubeboot(lab, wrong_key, "up", "--only", "preflight", "--ignore-preflight-errors=all")
    assert res.returncode == 9 and "SSH authentication failed" in res.stderr, res.stderr

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    res = kubeboot(lab, base, "up", "--only", "preflight", "--ignore-preflight-errors=all", known_hosts=empty)
    assert res.returncode == 10 and "unknown host key" in res.stderr and "--accept-new-host-keys" in res.stderr

    bad = tmp_path / "bad_known_hosts"
    bad.write_text("".join(line.replace(str(lab.host("h1").address), str(lab.host("h2").address))
                           for line in lab.known_hosts.read_text().splitlines(True)
                           if str(lab.host("h1").address) in line))
    two = inventory(lab, tmp_path / "h2.yaml", hosts=2)
    res = kubeboot(lab, two, "up", "--only", "preflight", "--ignore-preflight-errors=all", known_hosts=bad)
    assert res.returncode == 10 and "does not match" in res.stderr, res.stderr

    accept = tmp_path / "accepted_known_hosts"
    res = kubeboot(lab, base, "up", "--only", "preflight", "--ignore-preflight-errors=all", "--accept-new-host-keys", known_hosts=accept)
    assert res.returncode == 0, res.stderr
    assert str(lab.host("h2").address) in accept.read_text()

    sudo = inventory(lab, tmp_path / "sudo.yaml", hosts=2,
                     ssh={"user": "kbuser", "keyPath": str(lab.key_path), "sudoPasswordEnv": "KB_SUDO"})
    res = kubeboot(lab, sudo, "up", "--only", "preflight", "--ignore-preflight-errors=all", env={"KB_SUDO": "wrong"})
    assert res.returncode == 11 and "sudo rejected the password" in res.stderr, res.stderr
    res = kubeboot(lab, sudo, "up", "--only", "preflight", "--ignore-preflight-errors=all", env={"KB_SUDO": "kbpass"})
    assert res.returncode == 0, res.stderr  # the right password works, without a terminal

    nosudo = inventory(lab, tmp_path / "nosudo.yaml", hosts=2, ssh={"user": "nosudo", "keyPath": str(lab.key_path)})
    res = kubeboot(lab, nosudo, "up", "--only", "preflight", "--ignore-preflight-errors=all")
    assert res.returncode == 11 and ("may not use sudo" in res.stderr or "needs a password" in res.stderr), res.stderr

    missing = inventory(lab, tmp_path / "missing.yaml", hosts=2, ssh={"user": "root", "keyPath": "/nonexistent/key"})
    res = kubeboot(lab, missing, "up", "--only", "preflight", "--ignore-preflight-errors=all")
    assert res.returncode == 3 and "spec.hosts[0].ssh.keyPath: key file /nonexistent/key does not exist" in res.stderr

    text = base.read_text().replace(str(lab.host("h2").address), "10.200.0.99")
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(text)
    res = kubeboot(lab, unreachable, "up", "--only", "preflight", "--ignore-preflight-errors=all")
    assert res.returncode == 8 and "h2 (root@10.200.0.99:22)" in res.stderr, res.stderr
