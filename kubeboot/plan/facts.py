"""Pure core: what kubeboot needs to know about a host, gathered in ONE round trip and parsed here.

`gather_script(paths)` is the shell script a transport runs; `parse_facts(output)` turns its output into
HostFacts. Both are pure, so the parser is unit-tested on captured output and the script on real hosts.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kubeboot.render.node import KUBELET_RESOLV_CONF, SYSTEMD_RESOLV_CONF

REQUIRED_BINARIES = ("ip", "iptables", "mount", "nsenter")
OPTIONAL_BINARIES = ("conntrack", "ethtool", "socat", "tc", "touch", "ebtables")
OTHER_BINARIES = ("containerd", "runc", "kubelet", "kubectl", "kubeadm", "nginx", "apt-get", "dnf", "yum",
                  "systemctl", "firewall-cmd", "ufw", "getenforce", "modprobe", "sysctl", "swapoff", "base64",
                  "sha256sum", "install")
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
           "net.ipv6.conf.all.forwarding")
SERVICES = ("containerd", "kubelet", "nginx", "firewalld", "ufw", "systemd-resolved")
#: the resolver files the kubelet may hand to pods with dnsPolicy Default (CoreDNS forwards to their nameservers)
RESOLV_CONFS = (KUBELET_RESOLV_CONF, SYSTEMD_RESOLV_CONF)
#: the directories whose content makes a host a cluster member (what kubeadm reset empties, plus the CNI's)
RESET_DIRS = ("/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd", "/etc/cni/net.d", "/var/lib/cni",
              "/run/flannel")
CA_DIRS = ("/etc/pki/ca-trust", "/etc/pki/tls/certs", "/etc/ca-certificates", "/usr/share/ca-certificates",
           "/usr/local/share/ca-certificates")
_MARK = "@@kubeboot "
MARK = _MARK  # section header of every gathering script (kubeboot.plan.status uses the same format)


@dataclass(frozen=True)
class FileState:
    digest: str  # "sha256:<hex>"
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class HostFacts:
    os_id: str = ""
    os_version: str = ""
    os_like: tuple[str, ...] = ()
    arch: str = ""
    hostname: str = ""
    machine_id: str = ""
    uid: int = -1
    swap_devices: tuple[str, ...] = ()
    selinux: str = "absent"  # enforcing | permissive | disabled | absent
    modules: frozenset[str] = frozenset()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    binaries: Mapping[str, str] = field(default_factory=dict)  # name -> path
    listening_ports: frozenset[int] = frozenset()
    mem_mb: int = 0
    cpus: int = 0
    clock: float = 0.0  # host's epoch seconds when the script ran
    systemd: bool = False  # systemd is PID 1 (services can be managed with systemctl)
    services: Mapping[str, str] = field(default_factory=dict)  # name -> active | inactive | failed | unknown
    enabled: Mapping[str, str] = field(default_factory=dict)  # name -> enabled | disabled | ...
    versions: Mapping[str, str] = field(default_factory=dict)  # containerd / kubelet / kubectl / kubeadm
    files: Mapping[str, FileState] = field(default_factory=dict)  # managed paths that exist
    dirs: frozenset[str] = frozenset()  # which CA_DIRS exist
    ufw_active: bool = False
    fstab_swap: bool = False
    firewall_ports: frozenset[str] = frozenset()  # "6443", "2379-2380" (firewalld or ufw notation normalised)
    # containerd's k8s.io namespace, `ctr images ls`: name -> target digest (the CRI also lists each image by its
    # ID, `sha256:<config digest>`). Empty when containerd is not running.
    images: Mapping[str, str] = field(default_factory=dict)
    cgroup_fs: str = ""  # file system type of /sys/fs/cgroup: cgroup2fs (v2) or tmpfs (v1 / hybrid)
    homes: Mapping[str, str] = field(default_factory=dict)  # user -> home directory (the users asked about)
    # resolver file that exists -> its nameserver addresses, in order (RESOLV_CONFS and the kubelet's resolvConf)
    nameservers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # what a reset removes, counted: containers (containerd k8s.io), rules (KUBE-/FLANNEL-/CNI- chains in
    # iptables and ip6tables), links (cni0, flannel.*, kube-ipvs0), mounts (under /var/lib/kubelet), netns (cni-*),
    # state (entries in the cluster's directories: RESET_DIRS)
    kube_state: Mapping[str, int] = field(default_factory=dict)

    @property
    def systemd_resolved(self) -> bool:
        return self.services.get("systemd-resolved") == "active"

    @property
    def package_manager(self) -> str | None:
        if "apt-get" in self.binaries:
            return "apt"
        if "dnf" in self.binaries:
            return "dnf"
        if "yum" in self.binaries:
            return "yum"
        return None


def gather_script(paths: Iterable[str], users: Iterable[str] = (), resolv_confs: Iterable[str] = ()) -> str:
    """One POSIX sh script printing `@@kubeboot <section>` headers, each followed by its raw lines. For each
    of `users` (that exists) its home directory, and its ~/.kube/config among the files. The nameservers of
    RESOLV_CONFS and of `resolv_confs` (the kubelet's resolvConf, when the user set one)."""
    bins = " ".join(REQUIRED_BINARIES + OPTIONAL_BINARIES + OTHER_BINARIES)
    sysctls = " ".join(SYSCTLS)
    services = " ".join(SERVICES)
    quoted = " ".join(shlex.quote(p) for p in sorted(set(paths)))
    dirs = " ".join(CA_DIRS)
    names = " ".join(shlex.quote(u) for u in users)
    resolv = " ".join(shlex.quote(p) for p in dict.fromkeys((*RESOLV_CONFS, *resolv_confs)))
    reset_dirs = " ".join(RESET_DIRS)
    return f"""export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
m() {{ echo "{_MARK}$1"; }}
m os-release; cat /etc/os-release 2>/dev/null
m arch; uname -m
m hostname; hostname 2>/dev/null || cat /proc/sys/kernel/hostname
m machine-id; cat /etc/machine-id 2>/dev/null
m uid; id -u
m swaps; tail -n +2 /proc/swaps 2>/dev/null
m fstab-swap; grep -E '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab 2>/dev/null
m selinux; if command -v getenforce >/dev/null 2>&1; then getenforce; elif [ -r /sys/fs/selinux/enforce ]; then cat /sys/fs/selinux/enforce; fi
m modules; for mod in br_netfilter overlay; do [ -d /sys/module/$mod ] && echo $mod; done; [ -d /proc/sys/net/bridge ] && echo br_netfilter; grep -qw overlay /proc/filesystems 2>/dev/null && echo overlay
m sysctl; for k in {sysctls}; do f=/proc/sys/$(echo $k | tr . /); [ -r "$f" ] && echo "$k=$(cat "$f")"; done
m binaries; for b in {bins}; do p=$(command -v "$b" 2>/dev/null) && echo "$b=$p"; done
m ports; (ss -Htln 2>/dev/null || netstat -tln 2>/dev/null | tail -n +3) | awk '{{print $4}}'
m meminfo; grep -E '^MemTotal:' /proc/meminfo
m cpus; nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo
m clock; date +%s.%N
m systemd; [ -d /run/systemd/system ] && echo yes
m services; if [ -d /run/systemd/system ]; then for s in {services}; do echo "$s=$(systemctl is-active $s 2>/dev/null || true)=$(systemctl is-enabled $s 2>/dev/null || true)"; done; fi
m ufw; command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | head -1
m firewall-ports; command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --list-ports 2>/dev/null | tr ' ' '\\n'; command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | awk 'NR>4 && $2=="ALLOW" {{print $1}}'
m versions; for b in containerd kubelet kubeadm; do command -v $b >/dev/null 2>&1 && echo "$b=$($b --version 2>/dev/null | head -1)"; done; command -v kubectl >/dev/null 2>&1 && echo "kubectl=$(kubectl version --client 2>/dev/null | head -1)"
m files; for f in {quoted}; do [ -f "$f" ] && echo "$(sha256sum "$f" | cut -d' ' -f1) $(stat -c '%a %U %G' "$f") $f"; done
m homes; for u in {names}; do h=$(getent passwd "$u" | cut -d: -f6) && [ -n "$h" ] && echo "$u $h"; done
m user-files; for u in {names}; do h=$(getent passwd "$u" | cut -d: -f6) && f="$h/.kube/config" && [ -f "$f" ] && echo "$(sha256sum "$f" | cut -d' ' -f1) $(stat -c '%a %U %G' "$f") $f"; done
m resolv; for f in {resolv}; do [ -f "$f" ] && echo "$f $(awk '$1=="nameserver" {{printf "%s ", $2}}' "$f" 2>/dev/null)"; done
m kube-state; if command -v ctr >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then echo "containers $(timeout 30 ctr -n k8s.io containers ls -q 2>/dev/null | wc -l)"; fi; echo "rules $( (iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) | grep -cE '^:(KUBE|FLANNEL|CNI)-')"; echo "links $(ls /sys/class/net 2>/dev/null | grep -cE '^(cni0|flannel\\.|kube-ipvs0)')"; echo "mounts $(grep -c ' /var/lib/kubelet/' /proc/self/mounts)"; echo "netns $(ls /run/netns 2>/dev/null | grep -c '^cni-')"; echo "state $(find {reset_dirs} -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
m dirs; for d in {dirs}; do [ -d "$d" ] && echo "$d"; done
m cgroup-fs; stat -fc %T /sys/fs/cgroup 2>/dev/null
m images; if command -v ctr >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then timeout 30 ctr -n k8s.io images ls 2>/dev/null | awk 'NR>1 {{print $1, $3}}'; fi
m end
"""


def _sections(output: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(_MARK):
            current = out.setdefault(line[len(_MARK):].strip(), [])
        elif current is not None and line.strip():
            current.append(line.rstrip())
    if "end" not in out:
        raise ValueError("fact gathering output is truncated (no end marker)")
    return out


def parse_sections(output: str) -> dict[str, list[str]]:
    """The raw lines of each `@@kubeboot <section>` of a gathering script's output (ValueError if truncated)."""
    return _sections(output)


def _kv(lines: list[str], sep: str = "=") -> dict[str, str]:
    return dict(line.split(sep, 1) for line in lines if sep in line)


def _port(addr: str) -> int | None:
    tail = addr.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def parse_facts(output: str) -> HostFacts:
    s = _sections(output)
    osr = {k: v.strip('"') for k, v in _kv(s.get("os-release", [])).items()}
    sel = (s.get("selinux") or [""])[0].strip().lower()
    selinux = {"1": "enforcing", "0": "permissive"}.get(sel, sel or "absent")
    mem = (s.get("meminfo") or ["MemTotal: 0 kB"])[0].split()
    services: dict[str, str] = {}
    enabled: dict[str, str] = {}
    for line in s.get("services", []):
        name, active, en = (line.split("=") + ["", ""])[:3]
        services[name] = active or "unknown"
        enabled[name] = en or "unknown"
    files: dict[str, FileState] = {}
    for line in s.get("files", []) + s.get("user-files", []):
        digest, mode, owner, group, path = line.split(" ", 4)
        files[path] = FileState("sha256:" + digest, int(mode, 8), owner, group)
    ports = {p for p in (_port(a) for a in s.get("ports", [])) if p is not None}
    return HostFacts(
        os_id=osr.get("ID", ""),
        os_version=osr.get("VERSION_ID", ""),
        os_like=tuple(osr.get("ID_LIKE", "").split()),
        arch=(s.get("arch") or [""])[0],
        hostname=(s.get("hostname") or [""])[0].strip(),
        machine_id=(s.get("machine-id") or [""])[0].strip(),
        uid=int((s.get("uid") or ["-1"])[0]),
        swap_devices=tuple(line.split()[0] for line in s.get("swaps", [])),
        selinux=selinux,
        modules=frozenset(s.get("modules", [])),
        sysctls=_kv(s.get("sysctl", [])),
        binaries=_kv(s.get("binaries", [])),
        listening_ports=frozenset(ports),
        mem_mb=int(mem[1]) // 1024 if len(mem) > 1 and mem[1].isdigit() else 0,
        cpus=int((s.get("cpus") or ["0"])[0]),
        clock=float((s.get("clock") or ["0"])[0]),
        systemd=bool(s.get("systemd")),
        services=services,
        enabled=enabled,
        versions=_kv(s.get("versions", [])),
        files=files,
        dirs=frozenset(s.get("dirs", [])),
        ufw_active=any("Status: active" in line for line in s.get("ufw", [])),
        firewall_ports=frozenset(p.split("/")[0].replace(":", "-") for p in s.get("firewall-ports", [])
                                 if p.endswith("/tcp")),
        fstab_swap=bool(s.get("fstab-swap")),
        images=_kv(s.get("images", []), " "),
        cgroup_fs=(s.get("cgroup-fs") or [""])[0].strip(),
        homes=_kv(s.get("homes", []), " "),
        kube_state={k: int(v) for k, v in _kv(s.get("kube-state", []), " ").items() if v.strip().isdigit()},
        nameservers={path: tuple(rest.split())
                     for path, _, rest in (line.partition(" ") for line in s.get("resolv", []))},
    )
