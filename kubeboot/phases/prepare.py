"""Phase `prepare` (the HA recipe's "swap off, SELinux, firewall, kernel"): each step only when facts say so."""

from __future__ import annotations

from kubeboot.config.model import APISERVER_BIND_PORT, Host
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.plan.actions import Action, RunCommand, WriteFile, compare_file
from kubeboot.plan.artifact import Artifact

MODULES_FILE = "/etc/modules-load.d/kubernetes.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-kubernetes.conf"


def _artifact(ctx: PhaseContext, host: Host, path: str) -> Artifact | None:
    return next((a for a in ctx.artifacts.get(host.name, ()) if a.path == path), None)


def plan_swap(ctx: PhaseContext, host: Host) -> list[Action]:
    if not host.is_node:
        return []  # only the kubelet minds swap; a load-balancer host keeps it
    f = ctx.facts[host.name]
    out: list[Action] = []
    if f.swap_devices:
        out.append(RunCommand("swapoff -a", f"swap is on ({', '.join(f.swap_devices)})"))
    if f.fstab_swap:
        # Comment out swap entries so swap stays off after a reboot; keep a backup next to fstab.
        out.append(RunCommand(r"sed -i.kubeboot.bak -E 's@^([^#].*[[:space:]]swap[[:space:]].*)$@# \1@' /etc/fstab",
                              "/etc/fstab enables swap at boot"))
    return out


def plan_selinux(ctx: PhaseContext, host: Host) -> list[Action]:
    if ctx.facts[host.name].selinux != "enforcing":
        return []
    return [RunCommand("setenforce 0 && sed -i -E 's/^SELINUX=enforcing$/SELINUX=permissive/' /etc/selinux/config",
                       "SELinux is enforcing (containers need permissive mode without a policy module)")]


def required_ports(ctx: PhaseContext, host: Host) -> list[str]:
    ports: list[str] = []
    if host.is_control_plane:
        ports += [str(APISERVER_BIND_PORT), "2379-2380", "10257", "10259"]
    if host.is_node:
        ports += ["10250"]
    if host.is_worker:
        ports += ["30000-32767"]
    if host.is_load_balancer:
        ports.append(str(ctx.config.control_plane_endpoint.port))
    return ports


def missing_ports(ctx: PhaseContext, host: Host) -> list[str]:
    """Required ports the active firewall does not open yet (facts list what it opens)."""
    opened = ctx.facts[host.name].firewall_ports
    return [p for p in required_ports(ctx, host) if p not in opened]


def plan_firewall(ctx: PhaseContext, host: Host) -> list[Action]:
    f = ctx.facts[host.name]
    ports = missing_ports(ctx, host)
    if not ports and not ctx.options.disable_firewall:
        return []
    if f.services.get("firewalld") == "active":
        if ctx.options.disable_firewall:
            return [RunCommand("systemctl disable --now firewalld", "firewalld is active (--disable-firewall)")]
        adds = " ".join(f"--add-port={p}/tcp" for p in ports)
        return [RunCommand(f"firewall-cmd --permanent {adds} && firewall-cmd --reload",
                           f"firewalld is active: open {', '.join(ports)}")]
    if f.ufw_active:
        if ctx.options.disable_firewall:
            return [RunCommand("ufw disable", "ufw is active (--disable-firewall)")]
        rules = " && ".join(f"ufw allow {p.replace('-', ':')}/tcp" for p in ports)
        return [RunCommand(rules, f"ufw is active: open {', '.join(ports)}")]
    return []


def plan_kernel(ctx: PhaseContext, host: Host) -> list[Action]:
    """Persist and apply the modules and sysctls Kubernetes networking needs."""
    if not host.is_node:
        return []
    f = ctx.facts[host.name]
    out: list[Action] = []
    for path in (MODULES_FILE, SYSCTL_FILE):
        art = _artifact(ctx, host, path)
        if art is not None:
            w = compare_file(art, f.files.get(path))
            if w is not None:
                out.append(w)
    missing = [m for m in ("overlay", "br_netfilter") if m not in f.modules]
    if missing:
        out.append(RunCommand(f"modprobe -a {' '.join(missing)}", f"kernel module(s) {', '.join(missing)} not loaded"))
    wrong = [k for k in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables") if f.sysctls.get(k) != "1"]
    sysctl_written = any(isinstance(a, WriteFile) and a.artifact.path == SYSCTL_FILE for a in out)
    if wrong or sysctl_written:
        out.append(RunCommand(f"sysctl -q -p {SYSCTL_FILE}",
                              f"apply {SYSCTL_FILE}" + (f" ({', '.join(wrong)} not 1)" if wrong else "")))
    return out


PREPARE = Phase(
    "prepare", "Swap off, SELinux permissive, firewall ports, kernel modules and sysctls (only what is needed)",
    children=(
        Phase("swap", "Turn swap off now and in /etc/fstab", plan_swap),
        Phase("selinux", "Set SELinux to permissive now and at boot", plan_selinux),
        Phase("firewall", "Open the Kubernetes ports in firewalld/ufw (or disable it with --disable-firewall)",
              plan_firewall),
        Phase("kernel", "Load overlay and br_netfilter and set ip_forward, persistently", plan_kernel),
    ),
)
