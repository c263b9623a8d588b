"""Pure planner tests: hand-built HostFacts in, findings and actions out (no SSH, no hosts).

Covers parse_facts on captured gather output, every preflight check (host, name, severity, the
fixable-by-a-later-phase rule, --ignore-preflight-errors, re-run ports), the prepare/runtime/files
planners (what they plan on a fresh host, and that a converged host plans nothing) and phase selection.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from kubeboot.config.load import parse_inventory
from kubeboot.config.model import ClusterConfig
from kubeboot.phases.base import Finding, PhaseContext, RunOptions, all_paths, flatten, select
from kubeboot.phases.files import plan_files
from kubeboot.phases.preflight import run_checks
from kubeboot.phases.prepare import MODULES_FILE, SYSCTL_FILE, plan_firewall, plan_kernel, plan_selinux, plan_swap
from kubeboot.phases.runtime import (
    APT_KEYRING,
    APT_SOURCE,
    CONTAINERD_CONFIG,
    OFFLINE_DIR,
    YUM_REPO,
    plan_containerd,
    plan_packages,
)
from kubeboot.phases.lb import lb_actions
from kubeboot.workflows.up import UP
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.tokens import generate_token
from kubeboot.plan.actions import Action, RunCommand, WriteFile
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import OPTIONAL_BINARIES, REQUIRED_BINARIES, FileState, HostFacts, parse_facts
from kubeboot.render.cluster import render_cluster
from tests.conftest import FIXED_NOW, KeyPool

DOC: dict[str, Any] = {
    "apiVersion": "kubeboot.io/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "phases"},
    "spec": {
        "kubernetesVersion": "1.37",
        "controlPlaneEndpoint": "10.0.0.10:6443",
        "loadBalancer": {"mode": "external-nginx"},
        "certificates": {"keyAlgorithm": "ECDSA-P256"},
        "ssh": {"user": "root"},
        "hosts": [
            {"name": "lb1", "address": "10.0.0.10", "roles": ["load-balancer"]},
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "cp2", "address": "10.0.0.12", "roles": ["control-plane"]},
            {"name": "cp3", "address": "10.0.0.13", "roles": ["control-plane"]},
            {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
        ],
    },
}
HOSTS = ("lb1", "cp1", "cp2", "cp3", "w1")
NODES = ("cp1", "cp2", "cp3", "w1")
ALL_PHASES = frozenset({"preflight", "prepare", "runtime", "files"})
KUBELET_INPUTS = ("/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env",
                  "/var/lib/kubelet/instance-config.yaml", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")


# --- building blocks ---------------------------------------------------------------------------------


class Cluster:
    def __init__(self, doc: dict[str, Any], now: datetime) -> None:
        self.cfg: ClusterConfig = parse_inventory(doc)
        pki, _ = plan_pki(self.cfg, {}, now, KeyPool())
        self.artifacts: dict[str, tuple[Artifact, ...]] = render_cluster(self.cfg, pki, generate_token(now))

    def host(self, name: str):  # type: ignore[no-untyped-def]
        return next(h for h in self.cfg.hosts if h.name == name)

    def art(self, host: str, path: str) -> Artifact:
        return next(a for a in self.artifacts[host] if a.path == path)


@pytest.fixture(scope="module")
def cl() -> Cluster:
    return Cluster(copy.deepcopy(DOC), FIXED_NOW)


def _state(a: Artifact) -> FileState:
    return FileState(a.digest, a.mode, a.owner, a.group)


def converged(cl: Cluster, name: str, **changes: Any) -> HostFacts:
    """A host where everything kubeboot manages is already in place (a re-run should plan nothing)."""
    host = cl.host(name)
    binaries = {b: f"/usr/bin/{b}" for b in (*REQUIRED_BINARIES, *OPTIONAL_BINARIES, "apt-get", "systemctl",
                                                "sysctl", "modprobe", "swapoff", "base64", "sha256sum", "install")}
    services: dict[str, str] = {"firewalld": "inactive", "ufw": "inactive"}
    enabled: dict[str, str] = {"firewalld": "disabled", "ufw": "disabled"}
    versions: dict[str, str] = {}
    if host.is_node:
        binaries.update({b: f"/usr/bin/{b}" for b in ("containerd", "runc", "kubelet", "kubectl")})
        services.update(containerd="active", kubelet="active")
        enabled.update(containerd="enabled", kubelet="enabled")
        versions.update(containerd="containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da",
                        kubelet="Kubernetes v1.37.2", kubectl="Client Version: v1.37.2")
    if host.is_load_balancer:
        binaries["nginx"] = "/usr/sbin/nginx"
        services["nginx"] = "active"
        enabled["nginx"] = "enabled"
    facts = HostFacts(
        os_id="debian", os_version="12", os_like=(), arch="x86_64", hostname=name,
        machine_id=hashlib.md5(name.encode()).hexdigest(), uid=0, swap_devices=(), selinux="absent",
        modules=frozenset({"br_netfilter", "overlay"}),
        sysctls={"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
                 "net.bridge.bridge-nf-call-ip6tables": "1", "net.ipv6.conf.all.forwarding": "0"},
        binaries=binaries, listening_ports=frozenset({22}), mem_mb=7900, cpus=4, clock=1_795_000_000.0,
        systemd=True, services=services, enabled=enabled, versions=versions,
        files={a.path: _state(a) for a in cl.artifacts[name]},
        dirs=frozenset({"/etc/ca-certificates", "/usr/share/ca-certificates"}), ufw_active=False, fstab_swap=False,
        nameservers={"/etc/resolv.conf": ("192.0.2.53", "2001:db8::53")},
    )
    return replace(facts, **changes)


def fresh(cl: Cluster, name: str, **changes: Any) -> HostFacts:
    """A freshly installed Debian host: no runtime, no kubeboot files, kernel settings off."""
    f = converged(cl, name)
    binaries = {k: v for k, v in f.binaries.items() if k not in ("containerd", "runc", "kubelet", "kubectl", "nginx")}
    base = replace(f, binaries=binaries, files={}, versions={}, modules=frozenset(),
                   sysctls={"net.ipv4.ip_forward": "0"},
                   services={"firewalld": "inactive", "ufw": "inactive", "containerd": "inactive",
                             "kubelet": "inactive", "nginx": "inactive"},
                   enabled={"firewalld": "disabled", "ufw": "disabled", "containerd": "disabled",
                            "kubelet": "disabled", "nginx": "disabled"})
    return replace(base, **changes)


def ctx_for(cl: Cluster, facts: Mapping[str, HostFacts] | None = None, *, cfg: ClusterConfig | None = None,
            **options: Any) -> PhaseContext:
    all_facts = {n: converged(cl, n) for n in HOSTS}
    all_facts.update(facts or {})
    opts = RunOptions(**{"phases_in_run": ALL_PHASES, **options})
    return PhaseContext(cfg or cl.cfg, cl.artifacts, all_facts, opts)


def checks(ctx: PhaseContext, cl: Cluster) -> list[Finding]:
    return run_checks(ctx, list(cl.cfg.hosts))


def only(findings: list[Finding], check: str) -> list[tuple[str, str]]:
    return [(f.host, f.severity) for f in findings if f.check == check]


def commands(actions: list[Action] | Any) -> list[str]:
    return [a.command for a in actions if isinstance(a, RunCommand)]


def writes(actions: list[Action] | Any) -> list[str]:
    return [a.artifact.path for a in actions if isinstance(a, WriteFile)]


# --- parse_facts ---------------------------------------------------------------------------------------

CAPTURED = """\
@@kubeboot os-release
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
NAME="Rocky Linux"
VERSION_ID="9.4"
ID="rocky"
ID_LIKE="rhel centos fedora"

@@kubeboot arch
x86_64
@@kubeboot hostname
CP1
@@kubeboot machine-id
4b2f6c8a91d04e6f8a1b2c3d4e5f6a7b
@@kubeboot uid
0
@@kubeboot swaps
/dev/dm-1                               partition\t2097148\t\t0\t\t-2
/swapfile                               file\t\t1048572\t\t0\t\t-3
@@kubeboot fstab-swap
/dev/mapper/rl-swap     none                    swap    defaults        0 0
@@kubeboot selinux
Enforcing
@@kubeboot modules
overlay
br_netfilter
overlay
@@kubeboot sysctl
net.ipv4.ip_forward=0
net.bridge.bridge-nf-call-iptables=1
net.bridge.bridge-nf-call-ip6tables=1
net.ipv6.conf.all.forwarding=0
@@kubeboot binaries
ip=/usr/sbin/ip
iptables=/usr/sbin/iptables
mount=/usr/bin/mount
nsenter=/usr/bin/nsenter
conntrack=/usr/sbin/conntrack
containerd=/usr/bin/containerd
kubelet=/usr/bin/kubelet
kubectl=/usr/bin/kubectl
dnf=/usr/bin/dnf
systemctl=/usr/bin/systemctl
firewall-cmd=/usr/bin/firewall-cmd
@@kubeboot ports
0.0.0.0:22
[::]:22
127.0.0.1:10248
*:10250
[::ffff:10.0.0.11]:6443
10.0.0.11:2379
@@kubeboot meminfo
MemTotal:        3861212 kB
@@kubeboot cpus
2
@@kubeboot clock
1795387922.203522237
@@kubeboot systemd
yes
@@kubeboot services
containerd=active=enabled
kubelet=activating=enabled
nginx=inactive=
firewalld=active=enabled
ufw=inactive=
@@kubeboot ufw
@@kubeboot versions
containerd=containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da
kubelet=Kubernetes v1.37.2
kubectl=Client Version: v1.37.2
@@kubeboot files
1e2ba5c7c2b12368c550cd5d1bbf8265e4643b78f9d0c07008b1b7e95aeafa42 600 root root /etc/kubernetes/admin.conf
aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900 644 kube wheel /etc/my dir/with spaces.txt
@@kubeboot dirs
/etc/pki/ca-trust
/etc/pki/tls/certs
@@kubeboot cgroup-fs
tmpfs
@@kubeboot images
registry.k8s.io/pause:3.10.2 sha256:8ad5367f98b561c0188e6fc84c9fab2bbcd1f09dab96683ec58a9ad97e2972ef
@@kubeboot end
"""


def test_parse_facts_reads_every_section() -> None:
    f = parse_facts(CAPTURED)
    assert f.cgroup_fs == "tmpfs"
    assert dict(f.images) == {"registry.k8s.io/pause:3.10.2":
                              "sha256:8ad5367f98b561c0188e6fc84c9fab2bbcd1f09dab96683ec58a9ad97e2972ef"}
    assert (f.os_id, f.os_version, f.os_like) == ("rocky", "9.4", ("rhel", "centos", "fedora"))
    assert f.arch == "x86_64"
    assert f.hostname == "CP1"
    assert f.machine_id == "4b2f6c8a91d04e6f8a1b2c3d4e5f6a7b"
    assert f.uid == 0
    assert f.swap_devices == ("/dev/dm-1", "/swapfile")
    assert f.fstab_swap is True
    assert f.selinux == "enforcing"
    assert f.modules == frozenset({"overlay", "br_netfilter"})
    assert dict(f.sysctls) == {"net.ipv4.ip_forward": "0", "net.bridge.bridge-nf-call-iptables": "1",
                               "net.bridge.bridge-nf-call-ip6tables": "1", "net.ipv6.conf.all.forwarding": "0"}
    assert f.binaries["firewall-cmd"] == "/usr/bin/firewall-cmd" and len(f.binaries) == 11
    assert f.package_manager == "dnf"
    assert f.listening_ports == frozenset({22, 10248, 10250, 6443, 2379})
    assert f.mem_mb == 3861212 // 1024 == 3770
    assert f.cpus == 2
    assert f.clock == pytest.approx(1795387922.2035)
    assert f.systemd is True
    assert dict(f.services) == {"containerd": "active", "kubelet": "activating", "nginx": "inactive",
                                "firewalld": "active", "ufw": "inactive"}
    assert dict(f.enabled) == {"containerd": "enabled", "kubelet": "enabled", "nginx": "unknown",
                               "firewalld": "enabled", "ufw": "unknown"}
    assert f.versions["kubelet"] == "Kubernetes v1.37.2"
    assert f.versions["kubectl"] == "Client Version: v1.37.2"
    assert f.versions["containerd"].startswith("containerd containerd.io 1.7.27")
    assert f.files == {
        "/etc/kubernetes/admin.conf": FileState(
            "sha256:1e2ba5c7c2b12368c550cd5d1bbf8265e4643b78f9d0c07008b1b7e95aeafa42", 0o600, "root", "root"),
        "/etc/my dir/with spaces.txt": FileState(
            "sha256:aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900", 0o644, "kube", "wheel"),
    }
    assert f.dirs == frozenset({"/etc/pki/ca-trust", "/etc/pki/tls/certs"})
    assert f.ufw_active is False


def test_parse_facts_minimal_host_defaults_and_ufw() -> None:
    text = ("@@kubeboot selinux\n1\n@@kubeboot binaries\nyum=/usr/bin/yum\n@@kubeboot ufw\nStatus: active\n"
            "@@kubeboot systemd\n@@kubeboot end\n")
    f = parse_facts(text)
    assert f.selinux == "enforcing" and f.ufw_active and f.package_manager == "yum"
    assert f.systemd is False and f.swap_devices == () and f.fstab_swap is False
    assert (f.uid, f.cpus, f.mem_mb, f.clock) == (-1, 0, 0, 0.0)
    assert parse_facts("@@kubeboot selinux\n0\n@@kubeboot end\n").selinux == "permissive"
    assert parse_facts("@@kubeboot selinux\nDisabled\n@@kubeboot end\n").selinux == "disabled"
    assert parse_facts("@@kubeboot selinux\n@@kubeboot end\n").selinux == "absent"
    assert parse_facts("@@kubeboot ufw\nStatus: inactive\n@@kubeboot end\n").ufw_active is False
    assert parse_facts("@@kubeboot end\n").package_manager is None


def test_parse_facts_truncated_output_is_an_error() -> None:
    truncated = CAPTURED.split("@@kubeboot files")[0]
    with pytest.raises(ValueError, match="truncated"):
        parse_facts(truncated)
    with pytest.raises(ValueError):
        parse_facts("")


# --- preflight -------------------------------------------------------------------------------------------


def test_converged_cluster_has_no_findings(cl: Cluster) -> None:
    assert checks(ctx_for(cl), cl) == []


def test_each_check_fires_on_the_right_host_with_its_name_and_severity(cl: Cluster) -> None:
    facts = {
        "lb1": converged(cl, "lb1", selinux="enforcing", uid=1000),
        "cp1": converged(cl, "cp1", listening_ports=frozenset({22, 6443, 2379, 10257}), files={},
                         cpus=1, mem_mb=1024),
        "cp2": converged(cl, "cp2", binaries={}, modules=frozenset({"overlay"}), hostname="Node-7"),
        "cp3": converged(cl, "cp3", swap_devices=("/swapfile",), sysctls={"net.ipv4.ip_forward": "0"},
                         services={"firewalld": "active"}),
        "w1": converged(cl, "w1", listening_ports=frozenset({10250}), files={}, ufw_active=True),
    }
    ctx = ctx_for(cl, facts, phases_in_run=frozenset({"preflight", "files"}))  # prepare/runtime not in this run
    found = checks(ctx, cl)
    by = {(f.check, f.host): f for f in found}

    assert only(found, "IsPrivilegedUser") == [("lb1", "error")]
    assert only(found, "SELinux") == [("lb1", "error")]
    assert only(found, "Port-6443") == [("cp1", "error")]
    assert only(found, "Port-2379") == [("cp1", "error")]
    assert only(found, "Port-10257") == [("cp1", "error")]
    assert only(found, "Port-10250") == [("w1", "error")]
    assert by[("Port-6443", "cp1")].message == "port 6443 is in use"
    assert only(found, "NumCPU") == [("cp1", "error")]
    assert only(found, "Mem") == [("cp1", "error")]
    assert "1 CPU(s)" in by[("NumCPU", "cp1")].message and "1024 MB" in by[("Mem", "cp1")].message
    for b in REQUIRED_BINARIES:
        assert only(found, f"FileExisting-{b}") == [("cp2", "error")], b
    for b in OPTIONAL_BINARIES:
        assert only(found, f"FileExisting-{b}") == [("cp2", "warning")], b
    assert only(found, "CRI") == [("cp2", "error")]  # runtime not in the run
    assert only(found, "Module-br_netfilter") == [("cp2", "error")]
    assert only(found, "Module-overlay") == []
    assert only(found, "Hostname") == [("cp2", "warning")]
    assert only(found, "Swap") == [("cp3", "error")]
    assert "/swapfile" in by[("Swap", "cp3")].message
    assert only(found, "FileContent--proc-sys-net-ipv4-ip_forward") == [("cp3", "error")]
    assert only(found, "Firewall") == [("cp3", "error"), ("w1", "error")]
    assert "firewalld" in by[("Firewall", "cp3")].message and "ufw" in by[("Firewall", "w1")].message
    assert not any(f.host == "lb1" and f.check.startswith(("FileExisting", "Module", "CRI", "Port")) for f in found)
    assert {f.check for f in found if f.host == "lb1"} == {"IsPrivilegedUser", "SELinux"}


def test_node_only_and_control_plane_only_checks(cl: Cluster) -> None:
    # A load balancer with swap, no binaries and tiny resources is fine: it runs no kubelet.
    lb = converged(cl, "lb1", swap_devices=("/dev/sda2",), binaries={}, cpus=1, mem_mb=512, modules=frozenset(),
                   sysctls={})
    w1 = converged(cl, "w1", cpus=1, mem_mb=512)  # workers need no control-plane resources
    found = checks(ctx_for(cl, {"lb1": lb, "w1": w1}), cl)
    assert found == []


def test_fixable_findings_are_warnings_when_the_fixing_phase_runs(cl: Cluster) -> None:
    sick = converged(cl, "w1", swap_devices=("/swapfile",), sysctls={}, modules=frozenset(), selinux="enforcing",
                     services={"firewalld": "active"},
                     binaries={b: "/x" for b in REQUIRED_BINARIES + OPTIONAL_BINARIES + ("apt-get",)})
    fixable = {"Swap": "prepare", "FileContent--proc-sys-net-ipv4-ip_forward": "prepare",
               "Module-br_netfilter": "prepare", "Module-overlay": "prepare", "SELinux": "prepare",
               "Firewall": "prepare", "CRI": "runtime"}
    full = {f.check: f for f in checks(ctx_for(cl, {"w1": sick}), cl)}
    assert set(full) == set(fixable)
    for check, phase in fixable.items():
        assert full[check].severity == "warning", check
        assert f"the {phase} phase of this run fixes it" in full[check].message
    narrow = {f.check: f for f in checks(ctx_for(cl, {"w1": sick}, phases_in_run=frozenset({"preflight"})), cl)}
    for check, phase in fixable.items():
        assert narrow[check].severity == "error", check
        assert f"run the {phase} phase or fix it by hand" in narrow[check].message
    # prepare runs but runtime does not: only CRI stays an error
    mixed = checks(ctx_for(cl, {"w1": sick}, phases_in_run=frozenset({"preflight", "prepare"})), cl)
    assert sorted(f.check for f in mixed if f.severity == "error") == ["CRI"]


def test_package_manager_and_systemd_checks_depend_on_the_phases_in_the_run(cl: Cluster) -> None:
    bare = converged(cl, "w1", binaries={b: "/x" for b in REQUIRED_BINARIES + OPTIONAL_BINARIES + ("containerd",)},
                     systemd=False)
    lb = converged(cl, "lb1", systemd=False)
    found = checks(ctx_for(cl, {"w1": bare, "lb1": lb}), cl)
    assert only(found, "PackageManager") == [("w1", "error")]
    assert only(found, "Systemd") == [("lb1", "error"), ("w1", "error")]
    offline = checks(ctx_for(cl, {"w1": bare, "lb1": lb}, offline_packages=(("kubelet.deb", b"x"),)), cl)
    # offline packages are installed with apt/dnf too, so a host without either still cannot take them
    assert only(offline, "PackageManager") == [("w1", "error")]
    prep = checks(ctx_for(cl, {"w1": bare, "lb1": lb}, phases_in_run=frozenset({"preflight", "prepare"})), cl)
    assert only(prep, "PackageManager") == [] and only(prep, "Systemd") == []
    files_only = checks(ctx_for(cl, {"w1": bare, "lb1": lb}, phases_in_run=frozenset({"files"})), cl)
    assert only(files_only, "Systemd") == [("lb1", "error"), ("w1", "error")]
    assert only(files_only, "PackageManager") == []


def test_cross_host_checks_duplicates_and_clock_skew(cl: Cluster) -> None:
    facts = {
        "cp2": converged(cl, "cp2", hostname="CP1"),  # same as cp1, differently cased
        "cp3": converged(cl, "cp3", machine_id=converged(cl, "w1").machine_id),
        "w1": converged(cl, "w1", clock=1_795_000_000.0 + 300),
        "lb1": converged(cl, "lb1", clock=1_795_000_000.0 - 31),
    }
    found = checks(ctx_for(cl, facts), cl)
    assert only(found, "DuplicateHostname") == [("cp2", "error")]
    dup = next(f for f in found if f.check == "DuplicateHostname")
    assert "also used by cp1" in dup.message
    assert only(found, "DuplicateMachineID") == [("w1", "error")]  # the later host in inventory order
    assert "also used by cp3" in next(f for f in found if f.check == "DuplicateMachineID").message
    assert sorted(only(found, "ClockSkew")) == [("lb1", "error"), ("w1", "error")]
    skew = {f.host: f.message for f in found if f.check == "ClockSkew"}
    assert skew["w1"].startswith("clock is +300s off") and skew["lb1"].startswith("clock is -31s off")
    # within the limit: nothing; a host without a clock reading is not compared
    calm = {"w1": converged(cl, "w1", clock=1_795_000_000.0 + 29), "lb1": converged(cl, "lb1", clock=0.0)}
    assert only(checks(ctx_for(cl, calm), cl), "ClockSkew") == []


def test_parse_facts_reads_resolver_files_and_systemd_resolved() -> None:
    f = parse_facts("@@kubeboot services\nsystemd-resolved=active=enabled\n@@kubeboot resolv\n"
                    "/etc/resolv.conf 127.0.0.53 \n/run/systemd/resolve/resolv.conf 192.0.2.1 fe80::1%eth0 \n"
                    "/etc/empty.conf\n@@kubeboot end\n")
    assert f.systemd_resolved is True
    assert dict(f.nameservers) == {"/etc/resolv.conf": ("127.0.0.53",),
                                   "/run/systemd/resolve/resolv.conf": ("192.0.2.1", "fe80::1%eth0"),
                                   "/etc/empty.conf": ()}
    assert parse_facts("@@kubeboot end\n").systemd_resolved is False


def test_resolv_conf_check_refuses_what_would_make_coredns_loop(cl: Cluster) -> None:
    stub = {"/etc/resolv.conf": ("127.0.0.53",)}
    resolved = {"systemd-resolved": "active"}
    facts = {
        "cp1": converged(cl, "cp1", nameservers={"/etc/resolv.conf": ("127.0.0.1", "::1")}),  # local stub only
        "cp2": converged(cl, "cp2", nameservers={"/etc/resolv.conf": ()}),  # no nameserver at all
        # systemd-resolved: the kubelet is pointed at its upstream list (kubeadm's rule), the stub is fine
        "cp3": converged(cl, "cp3", nameservers={**stub, "/run/systemd/resolve/resolv.conf": ("192.0.2.1",)},
                         services=resolved),
        "w1": converged(cl, "w1", nameservers={}),  # no /etc/resolv.conf
        "lb1": converged(cl, "lb1", nameservers=stub),  # not a node: CoreDNS never runs there
    }
    found = checks(ctx_for(cl, facts), cl)
    by = {f.host: f for f in found if f.check == "ResolvConf"}
    assert only(found, "ResolvConf") == [("cp1", "error"), ("cp2", "error"), ("w1", "error")]
    assert "/etc/resolv.conf lists 127.0.0.1, ::1" in by["cp1"].message and "loop" in by["cp1"].message
    assert "lists no nameserver" in by["cp2"].message
    assert "/etc/resolv.conf does not exist" in by["w1"].message
    assert all("spec.kubelet.config.resolvConf" in f.message for f in by.values())
    # systemd-resolved active but its upstream file missing: the kubelet would be pointed at nothing
    gone = checks(ctx_for(cl, {"cp3": converged(cl, "cp3", nameservers=stub, services=resolved)}), cl)
    assert only(gone, "ResolvConf") == [("cp3", "error")]
    ignored = checks(ctx_for(cl, facts, ignore_preflight_errors=frozenset({"resolvconf"})), cl)
    assert only(ignored, "ResolvConf") == [("cp1", "warning"), ("cp2", "warning"), ("w1", "warning")]


def test_resolv_conf_set_by_the_user_is_the_file_checked(cl: Cluster) -> None:
    doc = copy.deepcopy(DOC)
    doc["spec"]["kubelet"] = {"config": {"resolvConf": "/etc/upstream-resolv.conf"}}
    cfg = parse_inventory(doc)
    good = {n: converged(cl, n, nameservers={"/etc/resolv.conf": ("127.0.0.1",),
                                             "/etc/upstream-resolv.conf": ("192.0.2.53",)}) for n in NODES}
    assert only(checks(ctx_for(cl, good, cfg=cfg), cl), "ResolvConf") == []
    missing = {**good, "w1": converged(cl, "w1", nameservers={"/etc/resolv.conf": ("192.0.2.53",)})}
    found = [f for f in checks(ctx_for(cl, missing, cfg=cfg), cl) if f.check == "ResolvConf"]
    assert [(f.host, f.severity) for f in found] == [("w1", "error")]
    assert "spec.kubelet.config.resolvConf /etc/upstream-resolv.conf does not exist" in found[0].message
    # kubeadm's warning: systemd-resolved is active and the user chose another file
    resolved = {**good, "cp1": replace(good["cp1"], services={"systemd-resolved": "active"})}
    assert only(checks(ctx_for(cl, resolved, cfg=cfg), cl), "ResolvConf") == [("cp1", "warning")]
    off = copy.deepcopy(DOC)
    off["spec"]["kubelet"] = {"config": {"resolvConf": ""}}  # the user turned it off: nothing to check
    bare = {n: converged(cl, n, nameservers={}) for n in NODES}
    assert only(checks(ctx_for(cl, bare, cfg=parse_inventory(off)), cl), "ResolvConf") == []


def test_ignore_preflight_errors_downgrades_named_errors_case_insensitively(cl: Cluster) -> None:
    facts = {"cp1": converged(cl, "cp1", swap_devices=("/swapfile",), listening_ports=frozenset({6443}), files={}),
             "w1": converged(cl, "w1", hostname="other")}
    base: dict[str, Any] = {"phases_in_run": frozenset({"preflight"})}
    raw = checks(ctx_for(cl, facts, **base), cl)
    assert {(f.check, f.severity) for f in raw} == {("Swap", "error"), ("Port-6443", "error"),
                                                    ("Hostname", "warning")}
    # names as the CLI passes them: lower-cased user input ("Port-6443,SWAP" -> {"port-6443", "swap"})
    named = checks(ctx_for(cl, facts, ignore_preflight_errors=frozenset({"port-6443"}), **base), cl)
    got = {f.check: f for f in named}
    assert got["Port-6443"].severity == "warning" and got["Port-6443"].message.endswith("(ignored)")
    assert got["Swap"].severity == "error" and "(ignored)" not in got["Swap"].message
    assert not got["Hostname"].message.endswith("(ignored)")  # warnings are never marked
    every = checks(ctx_for(cl, facts, ignore_preflight_errors=frozenset({"all"}), **base), cl)
    assert all(f.severity == "warning" for f in every)
    assert sorted(f.check for f in every if f.message.endswith(" (ignored)")) == ["Port-6443", "Swap"]
    assert all(f.host == "cp1" for f in every if f.message.endswith("(ignored)"))
    unrelated = checks(ctx_for(cl, facts, ignore_preflight_errors=frozenset({"numcpu"}), **base), cl)
    assert {(f.check, f.severity) for f in unrelated} == {(f.check, f.severity) for f in raw}


def test_ports_of_kubeboots_own_components_are_not_conflicts_on_a_rerun(cl: Cluster) -> None:
    busy = frozenset({22, 6443, 10257, 10259, 2379, 2380, 10250, 10248})
    rerun = {"cp1": converged(cl, "cp1", listening_ports=busy),
             "w1": converged(cl, "w1", listening_ports=frozenset({10250})),
             "lb1": converged(cl, "lb1", listening_ports=frozenset({6443}))}
    assert [f for f in checks(ctx_for(cl, rerun), cl) if f.check.startswith("Port-")] == []
    # the same ports without kubeboot's files: somebody else holds them
    foreign = {"cp1": converged(cl, "cp1", listening_ports=busy, files={}),
               "w1": converged(cl, "w1", listening_ports=frozenset({10250}), files={}),
               "lb1": converged(cl, "lb1", listening_ports=frozenset({6443}), files={})}
    ports = sorted((f.host, f.check) for f in checks(ctx_for(cl, foreign), cl) if f.check.startswith("Port-"))
    assert ports == sorted([("cp1", "Port-6443"), ("cp1", "Port-10257"), ("cp1", "Port-10259"),
                            ("cp1", "Port-2379"), ("cp1", "Port-2380"), ("cp1", "Port-10250"),
                            ("w1", "Port-10250"), ("lb1", "Port-6443")])
    # only the owning file counts: with the etcd manifest alone, the API server port is still a conflict
    etcd = "/etc/kubernetes/manifests/etcd.yaml"
    partial = converged(cl, "cp1", listening_ports=frozenset({6443, 2379, 2380}),
                        files={etcd: _state(cl.art("cp1", etcd))})
    assert sorted(f.check for f in checks(ctx_for(cl, {"cp1": partial}), cl)) == ["Port-6443"]


# --- prepare ----------------------------------------------------------------------------------------------


def test_prepare_plans_nothing_on_a_converged_host(cl: Cluster) -> None:
    ctx = ctx_for(cl)
    for name in HOSTS:
        h = cl.host(name)
        for plan in (plan_swap, plan_selinux, plan_firewall, plan_kernel):
            assert plan(ctx, h) == [], (name, plan.__name__)


def test_swap_off_now_and_in_fstab_only_when_needed(cl: Cluster) -> None:
    h = cl.host("w1")
    both = plan_swap(ctx_for(cl, {"w1": converged(cl, "w1", swap_devices=("/swapfile",), fstab_swap=True)}), h)
    cmds = commands(both)
    assert cmds[0] == "swapoff -a" and len(cmds) == 2
    assert "/etc/fstab" in cmds[1] and cmds[1].startswith("sed -i")
    now_only = plan_swap(ctx_for(cl, {"w1": converged(cl, "w1", swap_devices=("/swapfile",))}), h)
    assert commands(now_only) == ["swapoff -a"]
    boot_only = plan_swap(ctx_for(cl, {"w1": converged(cl, "w1", fstab_swap=True)}), h)
    assert len(boot_only) == 1 and "/etc/fstab" in commands(boot_only)[0]


def test_selinux_only_when_enforcing(cl: Cluster) -> None:
    h = cl.host("cp1")
    acts = plan_selinux(ctx_for(cl, {"cp1": converged(cl, "cp1", selinux="enforcing")}), h)
    assert len(acts) == 1 and "setenforce 0" in commands(acts)[0] and "SELINUX=permissive" in commands(acts)[0]
    for state in ("permissive", "disabled", "absent"):
        assert plan_selinux(ctx_for(cl, {"cp1": converged(cl, "cp1", selinux=state)}), h) == []


def test_firewalld_ports_per_role_or_disabled(cl: Cluster) -> None:
    on = {n: converged(cl, n, services={"firewalld": "active"}) for n in HOSTS}
    ctx = ctx_for(cl, on)
    cp = commands(plan_firewall(ctx, cl.host("cp1")))
    assert len(cp) == 1 and cp[0].endswith("&& firewall-cmd --reload")
    assert cp[0].startswith("firewall-cmd --permanent ")
    for port in ("6443", "2379-2380", "10257", "10259", "10250"):
        assert f"--add-port={port}/tcp" in cp[0], port
    assert "30000-32767" not in cp[0]
    w = commands(plan_firewall(ctx, cl.host("w1")))[0]
    assert "--add-port=10250/tcp" in w and "--add-port=30000-32767/tcp" in w and "6443" not in w
    lb = commands(plan_firewall(ctx, cl.host("lb1")))[0]
    assert "--add-port=6443/tcp" in lb and "10250" not in lb
    off = ctx_for(cl, on, disable_firewall=True)
    for name in HOSTS:
        assert commands(plan_firewall(off, cl.host(name))) == ["systemctl disable --now firewalld"]


def test_ufw_ports_or_disabled(cl: Cluster) -> None:
    on = {n: converged(cl, n, ufw_active=True) for n in HOSTS}
    cp = commands(plan_firewall(ctx_for(cl, on), cl.host("cp1")))
    assert len(cp) == 1
    rules = cp[0].split(" && ")
    assert sorted(rules) == sorted(["ufw allow 6443/tcp", "ufw allow 2379:2380/tcp", "ufw allow 10257/tcp",
                                    "ufw allow 10259/tcp", "ufw allow 10250/tcp"])
    w = commands(plan_firewall(ctx_for(cl, on), cl.host("w1")))[0]
    assert "ufw allow 30000:32767/tcp" in w
    assert commands(plan_firewall(ctx_for(cl, on, disable_firewall=True), cl.host("w1"))) == ["ufw disable"]
    # firewalld wins when both are reported
    both = {"w1": converged(cl, "w1", ufw_active=True, services={"firewalld": "active"})}
    assert commands(plan_firewall(ctx_for(cl, both), cl.host("w1")))[0].startswith("firewall-cmd ")


def test_kernel_writes_files_only_when_they_differ_and_loads_only_missing_modules(cl: Cluster) -> None:
    h = cl.host("w1")
    first = plan_kernel(ctx_for(cl, {"w1": fresh(cl, "w1")}), h)
    assert writes(first) == [MODULES_FILE, SYSCTL_FILE]
    assert all(a.reason == "new" for a in first if isinstance(a, WriteFile))
    assert [w.artifact for w in first if isinstance(w, WriteFile)] == [cl.art("w1", MODULES_FILE),
                                                                       cl.art("w1", SYSCTL_FILE)]
    assert commands(first) == ["modprobe -a overlay br_netfilter", f"sysctl -q -p {SYSCTL_FILE}"]

    # modules file edited by hand, one module missing, sysctls right: rewrite that file, load that module
    files = dict(converged(cl, "w1").files)
    files[MODULES_FILE] = FileState("sha256:" + "0" * 64, 0o644, "root", "root")
    partial = converged(cl, "w1", files=files, modules=frozenset({"overlay"}))
    acts = plan_kernel(ctx_for(cl, {"w1": partial}), h)
    assert writes(acts) == [MODULES_FILE]
    assert next(a for a in acts if isinstance(a, WriteFile)).reason == "content changed"
    assert commands(acts) == ["modprobe -a br_netfilter"]

    # sysctl file in place but ip_forward is 0 at runtime: apply it, write nothing
    lost = plan_kernel(ctx_for(cl, {"w1": converged(cl, "w1", sysctls={"net.ipv4.ip_forward": "0",
                                                                          "net.bridge.bridge-nf-call-iptables": "1"})}), h)
    assert writes(lost) == [] and commands(lost) == [f"sysctl -q -p {SYSCTL_FILE}"]
    # mode drift alone rewrites the file (and re-applies it)
    files = dict(converged(cl, "w1").files)
    files[SYSCTL_FILE] = replace(files[SYSCTL_FILE], mode=0o666)
    drift = plan_kernel(ctx_for(cl, {"w1": converged(cl, "w1", files=files)}), h)
    assert writes(drift) == [SYSCTL_FILE] and "mode 0666 -> 0644" in drift[0].reason  # type: ignore[union-attr]
    # not a node: nothing, whatever the kernel says
    assert plan_kernel(ctx_for(cl, {"lb1": fresh(cl, "lb1")}), cl.host("lb1")) == []


# --- runtime ------------------------------------------------------------------------------------------------


def test_apt_installs_pinned_packages_from_pkgs_k8s_io(cl: Cluster) -> None:
    acts = plan_packages(ctx_for(cl, {"w1": fresh(cl, "w1")}), cl.host("w1"))
    cmds = commands(acts)
    assert len(cmds) == 3 and writes(acts) == []
    key, source, install = cmds
    assert "https://pkgs.k8s.io/core:/stable:/v1.37/deb/Release.key" in key and APT_KEYRING in key
    assert source == (f"echo 'deb [signed-by={APT_KEYRING}] https://pkgs.k8s.io/core:/stable:/v1.37/deb/ /' "
                      f"> {APT_SOURCE}")
    assert "apt-get -q -o Dpkg::Options::=--force-confold update" in install
    assert install.split(" && ")[1].split()[-3:] == ["containerd", "kubelet=1.37.2-1.1", "kubectl=1.37.2-1.1"]
    assert install.endswith("&& apt-mark hold kubelet kubectl")


def test_apt_only_what_is_missing(cl: Cluster) -> None:
    f = converged(cl, "w1")
    no_containerd = replace(f, binaries={k: v for k, v in f.binaries.items() if k != "containerd"})
    cmds = commands(plan_packages(ctx_for(cl, {"w1": no_containerd}), cl.host("w1")))
    assert len(cmds) == 1
    assert cmds[0].endswith("install -y --no-install-recommends --allow-downgrades --allow-change-held-packages "
                            "containerd")
    old = converged(cl, "w1", versions={"kubelet": "Kubernetes v1.36.4", "kubectl": "Client Version: v1.37.2"})
    cmds = commands(plan_packages(ctx_for(cl, {"w1": old}), cl.host("w1")))
    assert "kubelet=1.37.2-1.1 kubectl=1.37.2-1.1" in cmds[-1] and " containerd" not in cmds[-1]
    gcloud = converged(cl, "w1", versions={"kubelet": "Kubernetes v1.37.2",
                                           "kubectl": "Client Version: v1.32.4-dispatcher"})
    assert "kubectl=1.37.2-1.1" in commands(plan_packages(ctx_for(cl, {"w1": gcloud}), cl.host("w1")))[-1]


def test_runtime_plans_nothing_when_containerd_and_kube_v1_37_2_are_installed(cl: Cluster) -> None:
    ctx = ctx_for(cl)
    for name in NODES:
        assert plan_packages(ctx, cl.host(name)) == [], name
        assert plan_containerd(ctx, cl.host(name)) == [], name
    offline = ctx_for(cl, offline_packages=(("kubelet_1.37.2-1.1_amd64.deb", b"deb"),))
    assert plan_packages(offline, cl.host("w1")) == []


def test_custom_apt_repository_is_used_verbatim_without_a_key_download(cl: Cluster) -> None:
    line = "deb [trusted=yes] http://10.200.0.1:8080/ ./"
    doc = copy.deepcopy(DOC)
    doc["spec"]["packages"] = {"aptRepository": line}
    cfg = parse_inventory(doc)
    cmds = commands(plan_packages(ctx_for(cl, {"w1": fresh(cl, "w1")}, cfg=cfg), cl.host("w1")))
    assert len(cmds) == 2
    assert cmds[0] == f"echo '{line}' > {APT_SOURCE}"
    assert not any("curl" in c or "Release.key" in c or "gpg" in c for c in cmds)
    assert "kubelet=1.37.2-1.1 kubectl=1.37.2-1.1" in cmds[1]


def test_dnf_repo_and_install(cl: Cluster) -> None:
    dnf = fresh(cl, "w1", binaries={**fresh(cl, "w1").binaries, "dnf": "/usr/bin/dnf"})
    dnf = replace(dnf, binaries={k: v for k, v in dnf.binaries.items() if k != "apt-get"})
    cmds = commands(plan_packages(ctx_for(cl, {"w1": dnf}), cl.host("w1")))
    assert len(cmds) == 2
    assert cmds[0].startswith("printf %s ") and cmds[0].endswith(f"> {YUM_REPO}")
    assert "baseurl=https://pkgs.k8s.io/core:/stable:/v1.37/rpm/" in cmds[0]
    assert "exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni" in cmds[0]
    assert cmds[1].startswith("dnf install -y --disableexcludes=kubernetes containerd kubelet-")
    assert "apt-get" not in " ".join(cmds)
def test_dnf_pins_a_version_the_rpm_repository_has(cl: Cluster) -> None:
    dnf = fresh(cl, "w1", binaries={"dnf": "/usr/bin/dnf", **{b: "/x" for b in REQUIRED_BINARIES}})
    install = commands(plan_packages(ctx_for(cl, {"w1": dnf}), cl.host("w1")))[-1]
    words = install.split()
    assert any(w in ("kubelet-1.37.2", "kubelet-1.37.2-150500.1.1") for w in words), install
    assert any(w in ("kubectl-1.37.2", "kubectl-1.37.2-150500.1.1") for w in words), install


def test_no_package_manager_plans_a_failing_step(cl: Cluster) -> None:
    none = fresh(cl, "w1", binaries={b: "/x" for b in REQUIRED_BINARIES})
    acts = plan_packages(ctx_for(cl, {"w1": none}), cl.host("w1"))
    assert commands(acts) == ["false"]
    assert "use --offline-packages" in acts[0].why  # type: ignore[union-attr]


def test_offline_packages_are_uploaded_then_installed_locally(cl: Cluster) -> None:
    pkgs = (("containerd_1.7.27_amd64.deb", b"containerd-bytes"), ("kubelet_1.37.2-1.1_amd64.deb", b"kubelet"),
            ("kubectl_1.37.2-1.1_amd64.deb", b"kubectl"))
    acts = plan_packages(ctx_for(cl, {"w1": fresh(cl, "w1")}, offline_packages=pkgs), cl.host("w1"))
    assert writes(acts) == [f"{OFFLINE_DIR}/{name}" for name, _ in pkgs]
    for (name, data), act in zip(pkgs, acts):
        assert isinstance(act, WriteFile) and act.artifact.content == data and act.artifact.mode == 0o644
    cmds = commands(acts)
    assert len(cmds) == 1 and isinstance(acts[-1], RunCommand)
    assert (f"apt-get install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages "
            f"{OFFLINE_DIR}/*.deb") in cmds[0]
    assert "apt-mark hold kubelet kubectl" in cmds[0]
    assert not any("pkgs.k8s.io" in c or "update" in c or APT_SOURCE in c for c in cmds)
    # an identical copy already on the host is not uploaded again
    already = {f"{OFFLINE_DIR}/{pkgs[1][0]}": FileState(Artifact("/x", pkgs[1][1], 0o644).digest, 0o644, "root",
                                                         "root")}
    again = plan_packages(ctx_for(cl, {"w1": fresh(cl, "w1", files=already)}, offline_packages=pkgs), cl.host("w1"))
    assert writes(again) == [f"{OFFLINE_DIR}/{pkgs[0][0]}", f"{OFFLINE_DIR}/{pkgs[2][0]}"]
    # rpm hosts install the .rpm files with dnf
    dnf = fresh(cl, "w1", binaries={"dnf": "/usr/bin/dnf", **{b: "/x" for b in REQUIRED_BINARIES}})
    rpm = plan_packages(ctx_for(cl, {"w1": dnf}, offline_packages=(("kubelet.rpm", b"r"),)), cl.host("w1"))
    assert commands(rpm) == [f"dnf install -y --disableexcludes=all {OFFLINE_DIR}/*.rpm"]
def test_offline_packages_on_a_yum_host_use_yum(cl: Cluster) -> None:
    yum = fresh(cl, "w1", binaries={"yum": "/usr/bin/yum", **{b: "/x" for b in REQUIRED_BINARIES}})
    acts = plan_packages(ctx_for(cl, {"w1": yum}, offline_packages=(("kubelet.rpm", b"r"),)), cl.host("w1"))
    (cmd,) = commands(acts)
    assert cmd.split()[0] == "yum", cmd


def test_containerd_config_write_and_restart_only_when_changed_and_active(cl: Cluster) -> None:
    h = cl.host("w1")
    files = dict(converged(cl, "w1").files)
    files[CONTAINERD_CONFIG] = FileState("sha256:" + "1" * 64, 0o644, "root", "root")
    changed = converged(cl, "w1", files=files)
    acts = plan_containerd(ctx_for(cl, {"w1": changed}), h)
    assert writes(acts) == [CONTAINERD_CONFIG]
    assert acts[0].artifact == cl.art("w1", CONTAINERD_CONFIG)  # type: ignore[union-attr]
    assert commands(acts) == ["systemctl restart containerd"]
    # changed but containerd not running: start it (no restart)
    stopped = replace(changed, services={**changed.services, "containerd": "inactive"})
    acts = plan_containerd(ctx_for(cl, {"w1": stopped}), h)
    assert writes(acts) == [CONTAINERD_CONFIG] and commands(acts) == ["systemctl enable --now containerd"]
    # config right, containerd running but not enabled at boot: enable only
    not_enabled = converged(cl, "w1", enabled={"containerd": "disabled", "kubelet": "enabled"})
    # running but not enabled for boot: enable it, without restarting what runs
    assert commands(plan_containerd(ctx_for(cl, {"w1": not_enabled}), h)) == ["systemctl enable containerd"]


def test_kubelet_enabled_only_when_not_enabled(cl: Cluster) -> None:
    h = cl.host("cp2")
    fresh_host = fresh(cl, "cp2")
    cmds = commands(plan_containerd(ctx_for(cl, {"cp2": fresh_host}), h))
    assert cmds == ["systemctl enable --now containerd", "systemctl enable kubelet"]
    enabled = converged(cl, "cp2", enabled={"containerd": "enabled", "kubelet": "enabled"},
                        services={"containerd": "active", "kubelet": "inactive"})
    assert "systemctl enable kubelet" not in commands(plan_containerd(ctx_for(cl, {"cp2": enabled}), h))
    disabled = converged(cl, "cp2", enabled={"containerd": "enabled", "kubelet": "disabled"})
    assert commands(plan_containerd(ctx_for(cl, {"cp2": disabled}), h)) == ["systemctl enable kubelet"]
def test_containerd_is_enabled_even_when_its_config_changed(cl: Cluster) -> None:
    files = dict(converged(cl, "w1").files)
    files[CONTAINERD_CONFIG] = FileState("sha256:" + "1" * 64, 0o644, "root", "root")
    f = converged(cl, "w1", files=files, enabled={"containerd": "disabled", "kubelet": "enabled"})
    cmds = commands(plan_containerd(ctx_for(cl, {"w1": f}), cl.host("w1")))
    assert any(c.startswith("systemctl enable") and "containerd" in c for c in cmds), cmds


# --- files ---------------------------------------------------------------------------------------------------


def test_files_converged_host_plans_nothing(cl: Cluster) -> None:
    ctx = ctx_for(cl)
    for name in HOSTS:
        assert plan_files(ctx, cl.host(name)) == [], name


def test_files_fresh_hosts_get_every_file_and_services_are_started_only_where_needed(cl: Cluster) -> None:
    ctx = ctx_for(cl, {n: fresh(cl, n) for n in HOSTS})
    cp = plan_files(ctx, cl.host("cp1"))
    assert writes(cp) == [a.path for a in cl.artifacts["cp1"]]
    assert commands(cp) == ["systemctl daemon-reload"]  # kubelet and containerd are not running yet
    assert plan_files(ctx, cl.host("lb1")) == []  # nginx.conf is the load-balancer phase's
    lb = lb_actions(ctx, cl.host("lb1"))
    assert writes(lb) == ["/etc/nginx/nginx.conf"]
    install = commands(lb)  # a fresh host has no nginx: installed with the stream module, then started
    assert "libnginx-mod-stream" in install[0]
    assert install[1:] == ["nginx -t -q && systemctl enable nginx && systemctl restart nginx"]


def test_files_only_differing_files_are_written(cl: Cluster) -> None:
    files = dict(converged(cl, "cp1").files)
    del files["/etc/kubernetes/pki/apiserver.crt"]
    files["/etc/kubernetes/admin.conf"] = replace(files["/etc/kubernetes/admin.conf"], mode=0o644)
    files["/etc/kubernetes/pki/ca.crt"] = replace(files["/etc/kubernetes/pki/ca.crt"], owner="kube")
    acts = plan_files(ctx_for(cl, {"cp1": converged(cl, "cp1", files=files)}), cl.host("cp1"))
    reasons = {a.artifact.path: a.reason for a in acts if isinstance(a, WriteFile)}
    assert reasons == {"/etc/kubernetes/pki/apiserver.crt": "new", "/etc/kubernetes/admin.conf": "mode 0644 -> 0600",
                       "/etc/kubernetes/pki/ca.crt": "owner kube:root -> root:root"}
    assert commands(acts) == []  # none of these is a service input


@pytest.mark.parametrize("path", KUBELET_INPUTS)
def test_kubelet_restarts_only_when_one_of_its_inputs_changed_and_it_is_active(cl: Cluster, path: str) -> None:
    files = dict(converged(cl, "w1").files)
    files[path] = FileState("sha256:" + "2" * 64, files[path].mode, "root", "root")
    active = plan_files(ctx_for(cl, {"w1": converged(cl, "w1", files=files)}), cl.host("w1"))
    assert writes(active) == [path]
    expected = ["systemctl restart kubelet"]
    if path.endswith("10-kubeadm.conf"):
        expected = ["systemctl daemon-reload", "systemctl restart kubelet"]  # reload first
    assert commands(active) == expected
    # a kubelet that is not running is started (kubelet-start) whatever changed, after a daemon-reload if needed
    idle = converged(cl, "w1", files=files, services={"containerd": "active", "kubelet": "inactive"})
    idle_acts = [a for a in plan_files(ctx_for(cl, {"w1": idle}), cl.host("w1")) if isinstance(a, RunCommand)]
    assert [a.command for a in idle_acts] == (["systemctl daemon-reload"] if path.endswith("10-kubeadm.conf")
                                              else []) + ["systemctl restart kubelet"]
    assert idle_acts[-1].why == "the kubelet is not running"


def test_files_mode_only_change_restarts_nothing(cl: Cluster) -> None:
    files = dict(converged(cl, "w1").files)
    files["/var/lib/kubelet/config.yaml"] = replace(files["/var/lib/kubelet/config.yaml"], mode=0o600)
    acts = plan_files(ctx_for(cl, {"w1": converged(cl, "w1", files=files)}), cl.host("w1"))
    assert writes(acts) == ["/var/lib/kubelet/config.yaml"] and commands(acts) == []


def test_files_containerd_config_restarts_containerd_when_active(cl: Cluster) -> None:
    files = dict(converged(cl, "w1").files)
    files[CONTAINERD_CONFIG] = FileState("sha256:" + "3" * 64, 0o644, "root", "root")
    acts = plan_files(ctx_for(cl, {"w1": converged(cl, "w1", files=files)}), cl.host("w1"))
    assert writes(acts) == [CONTAINERD_CONFIG] and commands(acts) == ["systemctl restart containerd"]


def test_nginx_reload_when_changed_and_running_enable_when_not_running(cl: Cluster) -> None:
    nginx = "/etc/nginx/nginx.conf"
    changed = converged(cl, "lb1", files={nginx: FileState("sha256:" + "4" * 64, 0o644, "root", "root")})
    acts = lb_actions(ctx_for(cl, {"lb1": changed}), cl.host("lb1"))
    assert writes(acts) == [nginx] and commands(acts) == ["nginx -t -q && systemctl reload nginx"]
    stopped = converged(cl, "lb1", services={"nginx": "inactive"})
    acts = lb_actions(ctx_for(cl, {"lb1": stopped}), cl.host("lb1"))
    assert writes(acts) == [] and commands(acts) == ["nginx -t -q && systemctl enable nginx && systemctl restart nginx"]
    assert lb_actions(ctx_for(cl), cl.host("lb1")) == []  # converged: nothing
    assert lb_actions(ctx_for(cl, {"w1": converged(cl, "w1", services={})}), cl.host("w1")) == []


def test_files_without_systemd_places_files_but_touches_no_service(cl: Cluster) -> None:
    facts = {n: fresh(cl, n, systemd=False, services={}) for n in HOSTS}
    ctx = ctx_for(cl, facts)
    for name in HOSTS:
        acts = plan_files(ctx, cl.host(name))
        assert writes(acts) == [a.path for a in cl.artifacts[name] if a.path != "/etc/nginx/nginx.conf"], name
        assert commands(acts) == [], name
        assert not any("systemctl" in c for c in commands(lb_actions(ctx, cl.host(name)))), name


# --- selection -------------------------------------------------------------------------------------------


def test_flatten_lists_the_leaves_of_up_in_order() -> None:
    assert [s.path for s in flatten(UP)] == ["preflight", "prepare/swap", "prepare/selinux", "prepare/firewall",
                                            "prepare/kernel", "runtime/packages", "runtime/containerd", "images",
                                            "load-balancer", "etcd-snapshot", "files", "init/wait-control-plane", "init/kubelet-finalize", "init/upload-config",
                                            "init/bootstrap-token", "init/mark-control-plane", "init/addons/coredns",
                                            "init/addons/kube-proxy", "join-control-planes", "join-workers", "cni",
                                            "kubectl"]
    assert set(all_paths(UP)) == {"preflight", "prepare", "prepare/swap", "prepare/selinux", "prepare/firewall",
                                  "prepare/kernel", "runtime", "runtime/packages", "runtime/containerd", "images",
                                  "load-balancer", "etcd-snapshot", "files", "init", "init/wait-control-plane", "init/kubelet-finalize", "init/upload-config",
                                  "init/bootstrap-token", "init/mark-control-plane", "init/addons",
                                  "init/addons/coredns", "init/addons/kube-proxy", "join-control-planes",
                                  "join-workers", "cni", "kubectl"}


def test_select_only_and_skip_by_path() -> None:
    def paths(only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[str]:
        return [s.path for s in select(UP, only, skip)]

    assert paths() == [s.path for s in flatten(UP)]
    assert paths(("prepare/swap",)) == ["prepare/swap"]
    assert paths(("prepare",)) == ["prepare/swap", "prepare/selinux", "prepare/firewall", "prepare/kernel"]
    assert paths(("files", "preflight")) == ["preflight", "files"]  # workflow order, not argument order
    assert paths(("prepare",), ("prepare/firewall", "prepare/selinux")) == ["prepare/swap", "prepare/kernel"]
    assert paths((), ("prepare", "runtime/containerd", "init", "join-control-planes", "join-workers", "cni",
                      "kubectl")) == ["preflight", "runtime/packages", "images", "load-balancer", "etcd-snapshot",
                                      "files"]
    assert paths(("init/addons",)) == ["init/addons/coredns", "init/addons/kube-proxy"]
    assert paths(("runtime",), ("runtime",)) == []
    selected = select(UP, ("runtime/packages",))
    assert selected[0].phase.plan is plan_packages


@pytest.mark.parametrize("only,skip", [(("prepare/swapp",), ()), ((), ("Files",)), (("swap",), ()),
                                       (("prepare/",), ()), (("files/x",), ())])
def test_select_unknown_path_is_an_error(only: tuple[str, ...], skip: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        select(UP, only, skip)


def test_cgroup_v1_nodes_need_fail_cgroup_v1_false(cl: Cluster) -> None:
    v1 = {n: converged(cl, n, cgroup_fs="tmpfs") for n in HOSTS}
    assert only(checks(ctx_for(cl, v1), cl), "CgroupsV1") == [(n, "error") for n in NODES]  # not lb1: no kubelet
    doc = copy.deepcopy(DOC)
    doc["spec"]["kubelet"] = {"config": {"failCgroupV1": False}}
    allowed = ctx_for(cl, v1, cfg=parse_inventory(doc))
    assert only(checks(allowed, cl), "CgroupsV1") == [(n, "warning") for n in NODES]
    v2 = {n: converged(cl, n, cgroup_fs="cgroup2fs") for n in HOSTS}
    assert only(checks(ctx_for(cl, v2), cl), "CgroupsV1") == []


def test_combined_errors_name_the_failed_hosts() -> None:
    """runner.combine keeps the failed hosts' names (remove-node's --unreachable hint is chosen from them) and the
    common exit code."""
    from kubeboot.errors import HostConnectionError, RemoteCommandError
    from kubeboot.runner import combine

    same = combine({"h5": HostConnectionError("h5 (root@10.0.0.5:22): connection refused"),
                    "lb1": HostConnectionError("lb1: timed out")}, "connect")
    assert isinstance(same, HostConnectionError) and same.exit_code == 8 and same.hosts == ("h5", "lb1")
    assert same.message.startswith("[connect] 2 host(s) failed:\n  h5 (root@10.0.0.5:22)")
    mixed = combine({"h5": HostConnectionError("refused"), "h6": RemoteCommandError("exit 1")}, "files")
    assert mixed.exit_code == 7 and mixed.hosts == ("h5", "h6")


def test_a_bundles_nginx_is_uploaded_and_installed_only_where_nginx_is_missing(cl: Cluster) -> None:
    from kubeboot.phases.runtime import OFFLINE_LB_DIR

    lb_pkgs = (("libnginx-mod-stream_1.22_amd64.deb", b"stream"), ("nginx_1.22_amd64.deb", b"nginx"))
    ctx = ctx_for(cl, {n: fresh(cl, n) for n in HOSTS}, lb_packages=lb_pkgs)
    acts = lb_actions(ctx, cl.host("lb1"))
    assert writes(acts)[:2] == [f"{OFFLINE_LB_DIR}/{n}" for n, _ in lb_pkgs]
    install = commands(acts)
    assert f"--no-install-recommends {OFFLINE_LB_DIR}/*.deb" in install[0]
    assert not any("update" in c or "libnginx-mod-stream" in c.split(OFFLINE_LB_DIR)[0] for c in install)
    # a host that has nginx gets neither the upload nor the install
    assert not any(OFFLINE_LB_DIR in p for p in writes(lb_actions(ctx_for(cl, lb_packages=lb_pkgs), cl.host("lb1"))))
    # hosts without nginx.conf (control planes in external-nginx mode) get nothing
    assert lb_actions(ctx, cl.host("cp1")) == []


def test_a_bundle_for_another_distribution_is_refused_per_host(cl: Cluster) -> None:
    ubuntu = replace(fresh(cl, "w1"), os_id="ubuntu", os_version="24.04")
    facts = {n: replace(fresh(cl, n), os_id="debian", os_version="12") for n in HOSTS} | {"w1": ubuntu}
    found = checks(ctx_for(cl, facts, offline_packages=(("kubelet.deb", b"x"),), lb_packages=(("nginx.deb", b"n"),),
                           packages_distribution="debian-12"), cl)
    assert only(found, "BundleDistribution") == [("w1", "error")]
    (f,) = [f for f in found if f.check == "BundleDistribution"]
    assert "built for debian-12" in f.message and "runs ubuntu-24.04" in f.message
    # without a bundle, the distribution is not checked
    assert only(checks(ctx_for(cl, facts), cl), "BundleDistribution") == []
