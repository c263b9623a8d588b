"""The hosts' network (shell): a /24 on a bridge inside a controller network namespace, one namespace per host,
nothing in the machine's own (root) namespace; sockets created inside a namespace; what else on the machine uses
a subnet (read-only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from .system import alive, all_pids, ancestors, run

CLONE_NEWNET = 0x40000000
#: Hosts get ``.11`` .. ``.210`` of their /24 (``.1`` is the bridge in the controller namespace).
FIRST_HOST = 11
MAX_HOSTS = 200

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True)
class Subnet:
    """A /24 for one set of hosts: the gateway (the controller namespace's bridge) is ``.1``, host ``i``
    (1-based) is ``.(10+i)``."""

    cidr: str

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.cidr, strict=True)  # ValueError on "10.0.0.1/24", "x"
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 24:
            raise ValueError(f"subnet {self.cidr!r}: an IPv4 /24 expected (e.g. 10.200.0.0/24)")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def prefix_len(self) -> int:
        return 24

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def host(self, index: int) -> str:
        """Address of host ``index`` (1-based)."""
        if not 1 <= index <= MAX_HOSTS:
            raise ValueError(f"host index {index}: 1..{MAX_HOSTS}")
        return str(self.network.network_address + 10 + index)


def resolv_conf(gateway: str) -> str:
    """Every host's resolver: the controller namespace, where nothing listens on port 53, so a query fails at
    once (ICMP port unreachable) and DNS never leaves the hosts' network.  Not loopback: CoreDNS forwards to the
    nameservers of its node's resolv.conf from its own network namespace, where 127.0.0.1 is CoreDNS itself (a
    loop it refuses), and kubeboot's preflight refuses such hosts (ResolvConf) as it should."""
    return f"nameserver {gateway}\noptions timeout:1 attempts:1\n"


# ---------------------------------------------------------------------------------------------
# namespaces


def netns_socket(netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that belongs to network namespace ``netns`` (created by a short-lived thread that
    setns()-es into it; the socket keeps its namespace, the calling thread never moves)."""
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, kind)
        except BaseException as e:  # handed to the caller
            result["err"] = e

    t = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "err" in result:
        raise result["err"]
    sock: socket.socket = result["sock"]
    return sock


def ip_batch(lines: Iterable[str], netns: str | None = None, force: bool = False) -> None:
    """``ip [-n netns] [-force] -batch -`` of ``lines`` (nothing when there are none)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    script = "".join(line + "\n" for line in lines)
    if script:
        run(argv, input=script, check=not force)


def ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def link_inode(pid: int, ns: str) -> int | None:
    """The inode of ``pid``'s namespace of kind ``ns`` ("net", "pid", ...), None once it is gone."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/{ns}")  # e.g. "net:[4026532281]"
    except OSError:
        return None
    return int(link[link.index("[") + 1 : -1])


def netns_names(prefix: str, hosts: Iterable[str] | None = None) -> list[str]:
    """The namespaces in /run/netns of the hosts whose namespaces are named ``<prefix><host>`` and
    ``<prefix>ctl``: those of ``hosts``, or (None) every ``<prefix><word>`` whose word has no ``-`` -- so the
    set named ``a`` (prefix ``kbs-a-``) never claims those of a set named ``a-b`` (``kbs-a-b-ctl``)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    wanted = None if hosts is None else {"ctl", *hosts}
    out = []
    for ns in names:
        if not ns.startswith(prefix):
            continue
        rest = ns[len(prefix) :]
        if (rest in wanted) if wanted is not None else (bool(rest) and "-" not in rest):
            out.append(ns)
    return sorted(out)


def netns_pids(netns_inodes: set[int], pidns_inodes: set[int] | None = None) -> list[int]:
    """Live processes (not us or our ancestors) in one of those network or PID namespaces."""
    pidns_inodes = pidns_inodes or set()
    if not netns_inodes and not pidns_inodes:
        return []
    mine = ancestors()
    found = []
    for pid in all_pids():
        if pid in mine:
            continue
        if link_inode(pid, "net") in netns_inodes or link_inode(pid, "pid") in pidns_inodes:
            if alive(pid):
                found.append(pid)
    return found


# ---------------------------------------------------------------------------------------------
# what else uses a subnet


def overlapping_uses(subnet: str, addrs: list[dict[str, Any]], routes: list[dict[str, Any]]) -> list[str]:
    """What of ``ip -j addr`` / ``ip -j route`` output overlaps ``subnet`` (pure): one line per address or
    route, e.g. ``"address 10.200.0.5/16 on eth1"``.  The default route (0.0.0.0/0) overlaps everything and is
    not a use."""
    net = ipaddress.ip_network(subnet, strict=False)
    out = []
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") != "inet":
                continue
            iface = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}")
            if iface.network.overlaps(net):
                out.append(f"address {iface} on {link.get('ifname', '?')}")
    for r in routes:
        dst = r.get("dst", "")
        # local/broadcast entries mirror the addresses listed above
        if dst in ("", "default") or r.get("type", "unicast") not in ("unicast", "blackhole", "unreachable", "prohibit"):
            continue
        rnet = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if rnet.prefixlen and rnet.version == 4 and rnet.overlaps(net):
            via = f" via {r['gateway']}" if r.get("gateway") else ""
            out.append(f"route {dst}{via} dev {r.get('dev', '?')}")
    return out


def root_netns_uses(subnet: str) -> list[str]:
    """Addresses and routes of the machine's own network namespace that overlap ``subnet`` (read-only:
    ``ip -j addr show``, ``ip -j route show table all``)."""
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    return overlapping_uses(subnet, addrs, routes)
