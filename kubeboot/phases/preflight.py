"""Phase `preflight`: named checks on every host at once, each a warning or an error (kubeadm's node checks
plus the cross-host ones peers learned the hard way). `--ignore-preflight-errors=Name,...|all` downgrades.

A problem that a later phase of the same run fixes (swap on, ip_forward off, SELinux enforcing, firewall
active) is reported as a warning naming that phase; with that phase skipped it is an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from kubeboot.config.model import APISERVER_BIND_PORT, Host
from kubeboot.phases.base import Finding, PhaseContext
from kubeboot.phases.prepare import missing_ports
from kubeboot.plan.facts import OPTIONAL_BINARIES, REQUIRED_BINARIES, HostFacts
from kubeboot.render.node import SYSTEMD_RESOLV_CONF, effective_resolv_conf

CLOCK_SKEW_LIMIT = 30.0  # seconds; etcd leases and certificate NotBefore tolerate little more
MIN_CPUS = 2  # kubeadm ControlPlaneNumCPU
MIN_MEM_MB = 1700  # kubeadm ControlPlaneMem

HostCheck = Callable[[PhaseContext, Host, HostFacts], list[Finding]]


def _fixable(ctx: PhaseContext, phase: str, check: str, host: Host, message: str) -> Finding:
    if ctx.will_run(phase):
        return Finding(check, host.name, f"{message} (the {phase} phase of this run fixes it)", "warning")
    return Finding(check, host.name, f"{message}; run the {phase} phase or fix it by hand", "error")


def _manages(facts: HostFacts, path: str) -> bool:
    return path in facts.files


def check_privileged(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if f.uid != 0:
        return [Finding("IsPrivilegedUser", host.name, f"commands run as uid {f.uid}, not root")]
    return []


def check_swap(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if host.is_node and f.swap_devices:
        return [_fixable(ctx, "prepare", "Swap", host, f"swap is on ({', '.join(f.swap_devices)}); the kubelet "
                                                        f"refuses to start with swap by default")]
    return []


def _port_owner_expected(f: HostFacts, port: int) -> bool:
    """On a re-run the components kubeboot placed hold their ports; that is not a conflict."""
    owners = {
        APISERVER_BIND_PORT: "/etc/kubernetes/manifests/kube-apiserver.yaml",
        10257: "/etc/kubernetes/manifests/kube-controller-manager.yaml",
        10259: "/etc/kubernetes/manifests/kube-scheduler.yaml",
        2379: "/etc/kubernetes/manifests/etcd.yaml",
        2380: "/etc/kubernetes/manifests/etcd.yaml",
        2381: "/etc/kubernetes/manifests/etcd.yaml",
        10250: "/var/lib/kubelet/config.yaml",
        10248: "/var/lib/kubelet/config.yaml",
    }
    path = owners.get(port)
    return path is not None and _manages(f, path)


def check_ports(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    wanted: list[int] = []
    if host.is_node:
        wanted.append(10250)
    if host.is_control_plane:
        wanted += [APISERVER_BIND_PORT, 10257, 10259, 2379, 2380]
    out = []
    for port in wanted:
        if port in f.listening_ports and not _port_owner_expected(f, port):
            out.append(Finding(f"Port-{port}", host.name, f"port {port} is in use"))
    lb_port = ctx.config.control_plane_endpoint.port
    if host.is_load_balancer and lb_port in f.listening_ports and not _manages(f, "/etc/nginx/nginx.conf"):
        out.append(Finding(f"Port-{lb_port}", host.name, f"port {lb_port} (load balancer) is in use"))
    return out


def check_binaries(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if not host.is_node:
        return []
    out = [Finding(f"FileExisting-{b}", host.name, f"{b} not found in PATH") for b in REQUIRED_BINARIES
           if b not in f.binaries]
    out += [Finding(f"FileExisting-{b}", host.name, f"{b} not found in PATH", "warning") for b in OPTIONAL_BINARIES
            if b not in f.binaries]
    return out


def check_kernel(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if not host.is_node:
        return []
    out = []
    if f.sysctls.get("net.ipv4.ip_forward") != "1":
        out.append(_fixable(ctx, "prepare", "FileContent--proc-sys-net-ipv4-ip_forward", host,
                            "/proc/sys/net/ipv4/ip_forward is not 1"))
    for mod in ("br_netfilter", "overlay"):
        if mod not in f.modules:
            out.append(_fixable(ctx, "prepare", f"Module-{mod}", host, f"kernel module {mod} is not loaded"))
    return out


def check_runtime(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if not host.is_node or "containerd" in f.binaries:
        return []
    return [_fixable(ctx, "runtime", "CRI", host, "no container runtime (containerd) is installed")]


def check_resources(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if not host.is_control_plane:
        return []
    out = []
    if f.cpus < MIN_CPUS:
        out.append(Finding("NumCPU", host.name, f"{f.cpus} CPU(s); a control plane needs at least {MIN_CPUS}"))
    if f.mem_mb < MIN_MEM_MB:
        out.append(Finding("Mem", host.name, f"{f.mem_mb} MB of memory; a control plane needs at least {MIN_MEM_MB} MB"))
    return out


def check_selinux_firewall(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    out = []
    if f.selinux == "enforcing":
        out.append(_fixable(ctx, "prepare", "SELinux", host, "SELinux is enforcing"))
    if f.services.get("firewalld") == "active" or f.ufw_active:
        which = "firewalld" if f.services.get("firewalld") == "active" else "ufw"
        closed = missing_ports(ctx, host)
        if closed:
            out.append(_fixable(ctx, "prepare", "Firewall", host,
                                f"{which} is active and does not open {', '.join(closed)}"))
    return out


def check_hostname(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if f.hostname and f.hostname.lower() != host.name:
        return [Finding("Hostname", host.name, f"the host calls itself {f.hostname!r}; it registers as node "
                                               f"{host.name!r} (kubelet --hostname-override)", "warning")]
    return []


def check_package_manager(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    if host.is_node and ctx.will_run("runtime") and f.package_manager is None:
        return [Finding("PackageManager", host.name, "neither apt-get nor dnf/yum is available to install the "
                                                     "runtime (also needed for --offline-packages)")]
    want = ctx.options.packages_distribution
    installs = (host.is_node and ctx.will_run("runtime")) or \
        (ctx.options.lb_packages and ctx.will_run("load-balancer") and "nginx" not in f.binaries)
    have = f"{f.os_id}-{f.os_version}" if f.os_id else "an unknown distribution"
    if want and installs and have != want:
        return [Finding("BundleDistribution", host.name, f"the bundle's packages are built for {want}; this host "
                                                         f"runs {have}: build a bundle on a {have} machine")]
    return []


def check_service_manager(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    needs = host.is_node or host.is_load_balancer
    if needs and not f.systemd and (ctx.will_run("runtime") or ctx.will_run("files")):
        return [Finding("Systemd", host.name, "systemd is not running (PID 1): kubeboot cannot enable or restart "
                                              "containerd, kubelet or nginx here")]
    return []


def check_cgroups(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    """kubeadm's SystemVerification on cgroups: kubelets since 1.35 refuse cgroup v1 unless failCgroupV1 is
    false, so a v1 host fails at kubelet start, long after the run began. Say it here, with the fix."""
    if not host.is_node or f.cgroup_fs in ("", "cgroup2fs"):
        return []
    if ctx.config.kubelet_config.get("failCgroupV1") is False:
        return [Finding("CgroupsV1", host.name, "the host uses cgroup v1, which Kubernetes deprecated; the kubelet "
                                                "runs only because spec.kubelet.config.failCgroupV1 is false",
                        "warning")]
    return [Finding("CgroupsV1", host.name, f"the host uses cgroup v1 (/sys/fs/cgroup is {f.cgroup_fs}): the "
                                            f"kubelet refuses to start on it; boot with cgroup v2 "
                                            f"(systemd.unified_cgroup_hierarchy=1) or set "
                                            f"spec.kubelet.config.failCgroupV1: false")]


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_resolv_conf(ctx: PhaseContext, host: Host, f: HostFacts) -> list[Finding]:
    """CoreDNS (dnsPolicy Default) gets the nameservers of the kubelet's resolvConf and forwards to them from its
    own network namespace: a loopback nameserver there is CoreDNS itself (its loop plugin stops it, every
    in-cluster lookup fails). kubeadm checks nothing and the cluster looks healthy until DNS is used."""
    if not host.is_node:
        return []
    path = effective_resolv_conf(ctx.config, f.systemd_resolved)
    if not path:
        return []  # resolvConf: "" — the user disabled it
    set_by_user = "resolvConf" in ctx.config.kubelet_config
    fix = ("set spec.kubelet.config.resolvConf to a file listing the upstream nameservers (the ones a local stub "
           "forwards to)")
    if f.systemd_resolved and set_by_user and path != SYSTEMD_RESOLV_CONF:
        out = [Finding("ResolvConf", host.name, f"systemd-resolved is active: kubeadm recommends resolvConf "
                                                f"{SYSTEMD_RESOLV_CONF}, spec.kubelet.config.resolvConf is {path}",
                       "warning")]
    else:
        out = []
    servers = f.nameservers.get(path)
    if servers is None:
        what = "spec.kubelet.config.resolvConf" if set_by_user else "the kubelet's resolvConf"
        return out + [Finding("ResolvConf", host.name, f"{what} {path} does not exist on the host; pods with "
                                                       f"dnsPolicy Default (CoreDNS) cannot start; {fix}")]
    if not servers or all(_loopback(a) for a in servers):
        listed = ", ".join(servers) if servers else "no nameserver"
        return out + [Finding("ResolvConf", host.name, f"{path} lists {listed}: CoreDNS forwards there from its "
                                                       f"own network namespace, finds itself and stops (loop "
                                                       f"detected); {fix}")]
    return out


HOST_CHECKS: tuple[HostCheck, ...] = (
    check_privileged, check_cgroups, check_swap, check_ports, check_binaries, check_kernel, check_runtime,
    check_resources,
    check_selinux_firewall, check_hostname, check_package_manager, check_service_manager, check_resolv_conf,
)


def cluster_checks(ctx: PhaseContext, hosts: Sequence[Host]) -> list[Finding]:
    """Checks that compare hosts: duplicate hostnames and machine-ids (cloned VMs), clock skew."""
    out: list[Finding] = []
    seen_names: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for h in hosts:
        f = ctx.facts[h.name]
        if f.hostname:
            other = seen_names.setdefault(f.hostname.lower(), h.name)
            if other != h.name:
                out.append(Finding("DuplicateHostname", h.name, f"hostname {f.hostname!r} is also used by {other}"))
        if f.machine_id:
            other = seen_ids.setdefault(f.machine_id, h.name)
            if other != h.name:
                out.append(Finding("DuplicateMachineID", h.name, f"machine-id {f.machine_id[:8]}… is also used by "
                                                                 f"{other} (a cloned image?)"))
    clocks = sorted((ctx.facts[h.name].clock, h.name) for h in hosts if ctx.facts[h.name].clock)
    if len(clocks) > 1:
        median = clocks[len(clocks) // 2][0]
        for clock, name in clocks:
            skew = clock - median
            if abs(skew) > CLOCK_SKEW_LIMIT:
                out.append(Finding("ClockSkew", name, f"clock is {skew:+.0f}s off the other hosts' "
                                                      f"(limit {CLOCK_SKEW_LIMIT:.0f}s); run NTP"))
    return out


def run_checks(ctx: PhaseContext, hosts: Sequence[Host]) -> list[Finding]:
    """Every finding for every host, with ignored errors downgraded to warnings."""
    findings: list[Finding] = []
    for h in hosts:
        for check in HOST_CHECKS:
            findings += check(ctx, h, ctx.facts[h.name])
    findings += cluster_checks(ctx, hosts)
    ignore = ctx.options.ignore_preflight_errors
    out = []
    for fd in findings:
        if fd.severity == "error" and ("all" in ignore or fd.check.lower() in ignore):
            fd = Finding(fd.check, fd.host, fd.message + " (ignored)", "warning")
        out.append(fd)
    return out
