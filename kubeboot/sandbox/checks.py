"""Can this machine host sandbox hosts? (shell, read-only): each check returns a list of problems, each naming
what is missing and how to get it (the Debian package), so a caller reports all of them at once.

The pure parts take what they judge as arguments (platform, euid, ``which``, /proc/meminfo text, ``ip -j``
output); their defaults read this machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import cgroups, rootfs
from .net import root_netns_uses
from .system import SAFE_ENV, run

MiB = 1 << 20

#: Programs the host machinery runs on the machine -> the Debian package that has them.
HOST_TOOLS: Mapping[str, str] = {
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",  # namespaces, veths, the bridge; `ip netns exec` in the ProxyCommand
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "nc": "netcat-openbsd",  # the ssh_config ProxyCommand: ip netns exec <ctl> nc %h %p
}
#: Only needed while the base root filesystem is not cached yet.
ROOTFS_TOOLS: Mapping[str, str] = {"debootstrap": "debootstrap", "chroot": "coreutils"}
#: `kubeboot sandbox ssh NODE` execs OpenSSH with the generated ssh_config.
SSH_TOOLS: Mapping[str, str] = {"ssh": "openssh-client"}

#: Namespaces a host needs (``/proc/self/ns/<kind>``).
NAMESPACES = ("net", "mnt", "pid", "uts", "ipc", "cgroup")

# Memory a host holds (anon memory of its memory cgroup, plus 10 MiB nspawn supervisor + wrapper outside it),
# measured on this machine kind (notes/kubelet-in-systemd-hosts.md §7, tests/lab/README.md): a control plane
# 341-373 MiB anon (apiserver 274-309 MiB RSS, etcd ~50, kubelet ~100, containerd ~50) plus 0.5-0.7 GiB of
# reclaimable image page cache; an idle joined worker 34 MiB anon (115 MiB with cache); an idle systemd host
# 19 MiB, ~35 MiB with containerd.  MemAvailable already counts reclaimable cache as available, so the budget is
# anon + margin: CNI and CoreDNS pods, growth under load, the kubelet's own cache.
CONTROL_PLANE_BYTES = 640 * MiB
WORKER_BYTES = 256 * MiB
LB_BYTES = 64 * MiB  # a systemd host with nginx
#: kubeboot itself (paramiko sessions, rendering) and the machine's own needs while the sandbox runs.
MACHINE_RESERVE_BYTES = 512 * MiB


def platform_problems(system: str | None = None, euid: int | None = None) -> list[str]:
    """Not Linux, not root."""
    system = platform.system() if system is None else system
    if system != "Linux":
        return [f"sandbox hosts need Linux (namespaces, systemd-nspawn); this is {system}"]
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return ["sandbox hosts need root (network namespaces, overlay mounts, cgroups, systemd-nspawn): run with sudo"]
    return []


def missing_tools(tools: Mapping[str, str], which: Callable[[str], str | None] | None = None) -> list[str]:
    """One problem per program of ``tools`` (program -> package) not on root's PATH, packages grouped."""
    look = which or (lambda prog: shutil.which(prog, path=SAFE_ENV["PATH"]))
    missing = [prog for prog in tools if look(prog) is None]
    return [f"`{prog}` is missing (apt-get install --no-install-recommends {tools[prog]})" for prog in missing]


def namespace_problems(proc: Path = Path("/proc"), filesystems: str | None = None) -> list[str]:
    """Namespaces the kernel lacks (``/proc/self/ns``), and overlayfs (``/proc/filesystems``)."""
    problems = [f"the kernel has no {kind} namespaces (/proc/self/ns/{kind} is missing)"
                for kind in NAMESPACES if not (proc / "self" / "ns" / kind).exists()]  # fmt: skip
    if filesystems is None:
        filesystems = (proc / "filesystems").read_text()
    if "overlay" not in filesystems.split():
        problems.append("overlayfs is not available (modprobe overlay; a kernel with CONFIG_OVERLAY_FS)")
    return problems


def namespace_probe() -> list[str]:
    """Create network, mount and PID namespaces for real (``unshare``; as root): a container or a seccomp policy
    may forbid what the kernel has."""
    p = run(["unshare", "--net", "--mount", "--pid", "--uts", "--ipc", "--fork", "true"], check=False, timeout=30)
    if p.returncode != 0:
        return [f"cannot create namespaces here (unshare: {p.stderr.strip() or p.returncode})"]
    return []


def machine_problems(probe: bool = True) -> list[str]:
    """Everything that keeps this machine from running sandbox hosts: platform, root, namespaces, overlayfs,
    programs (debootstrap only while the base is not cached), and (``probe``) a real namespace and cgroup
    probe.  Empty: it can."""
    problems = platform_problems()
    if problems:
        return problems
    problems += namespace_problems()
    tools = dict(HOST_TOOLS)
    if rootfs.cached() is None:
        tools.update(ROOTFS_TOOLS)
    problems += missing_tools(tools)
    if probe and not problems:
        problems += namespace_probe()
        reason = cgroups.probe()
        if reason:
            problems.append(f"cgroup layout unusable: {reason}")
    return problems


# ---------------------------------------------------------------------------------------------
# memory


def memory_needed(control_planes: int, workers: int, lbs: int = 0) -> int:
    """Bytes of memory a sandbox of that shape needs available (see the constants for the measurements)."""
    if min(control_planes, workers, lbs) < 0:
        raise ValueError("host counts must not be negative")
    return (control_planes * CONTROL_PLANE_BYTES + workers * WORKER_BYTES + lbs * LB_BYTES
            + MACHINE_RESERVE_BYTES)  # fmt: skip


def memory_available(meminfo: str | None = None) -> int:
    """MemAvailable of /proc/meminfo (or of ``meminfo`` text), in bytes."""
    text = Path("/proc/meminfo").read_text() if meminfo is None else meminfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            number, _, unit = value.strip().partition(" ")
            return int(number) * (1024 if unit.strip() == "kB" else 1)
    raise ValueError("no MemAvailable in /proc/meminfo")


def memory_problems(control_planes: int, workers: int, lbs: int = 0, available: int | None = None) -> list[str]:
    """A problem if the machine has less memory available than :func:`memory_needed`."""
    need = memory_needed(control_planes, workers, lbs)
    have = memory_available() if available is None else available
    if have >= need:
        return []
    shape = f"{control_planes} control plane(s), {workers} worker(s)" + (f", {lbs} load balancer(s)" if lbs else "")
    return [f"not enough memory: {shape} need about {need // MiB} MiB available, the machine has {have // MiB} MiB "
            f"(MemAvailable); use fewer hosts or free memory"]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# subnet


def state_subnet_uses(subnet: str, state_files: Iterable[Path], default: str = "10.200.0.0/24") -> list[str]:
    """Other host sets (their lab.json) whose subnet overlaps ``subnet`` (a state file without a ``subnet`` key
    was written before subnets were chosen: ``default``)."""
    net = ipaddress.ip_network(subnet, strict=False)
    out = []
    for path in state_files:
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        theirs = state.get("subnet") or default
        if ipaddress.ip_network(theirs, strict=False).overlaps(net):
            out.append(f"{state.get('name', '?')} ({path.parent}) uses {theirs}")
    return out


def subnet_in_use(subnet: str, state_files: Iterable[Path] = ()) -> list[str]:
    """What already uses ``subnet``: an address or route of the machine's own network namespace (read with
    ``ip -j``), or another sandbox or lab (their state files).  Empty: free."""
    return root_netns_uses(subnet) + state_subnet_uses(subnet, state_files)
