"""The sandbox's pure checks (kubeboot/sandbox/checks.py, net.py, client.py): platform, tools, namespaces, memory,
subnets, host names -- each problem names what is missing and the Debian package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeboot.sandbox import checks
from kubeboot.sandbox.client import check_host_names
from kubeboot.sandbox.net import Subnet, overlapping_uses, resolv_conf
from kubeboot.sandbox.rootfs import digest_of, inputs

MiB = 1 << 20


def test_platform_refusals() -> None:
    assert checks.platform_problems("Darwin", 0) == [
        "sandbox hosts need Linux (namespaces, systemd-nspawn); this is Darwin"
    ]
    assert "need root" in checks.platform_problems("Linux", 1000)[0]
    assert checks.platform_problems("Linux", 0) == []


def test_missing_tools_name_their_package() -> None:
    have = {"ip", "nsenter", "unshare", "mount", "umount"}
    got = checks.missing_tools(checks.HOST_TOOLS, which=lambda p: f"/usr/bin/{p}" if p in have else None)
    assert got == [
        "`systemd-nspawn` is missing (apt-get install --no-install-recommends systemd-container)",
        "`nc` is missing (apt-get install --no-install-recommends netcat-openbsd)",
    ]
    assert checks.missing_tools(checks.ROOTFS_TOOLS, which=lambda p: None)[0].endswith("install "
                                                                                         "--no-install-recommends debootstrap)")  # fmt: skip
    assert checks.missing_tools(checks.HOST_TOOLS, which=lambda p: "/x") == []


def test_namespaces_and_overlayfs(tmp_path: Path) -> None:
    ns = tmp_path / "self" / "ns"
    ns.mkdir(parents=True)
    for kind in ("net", "mnt", "uts", "ipc", "cgroup"):
        (ns / kind).touch()
    got = checks.namespace_problems(tmp_path, filesystems="nodev\tproc\nnodev\ttmpfs\n")
    assert got == ["the kernel has no pid namespaces (/proc/self/ns/pid is missing)",
                   "overlayfs is not available (modprobe overlay; a kernel with CONFIG_OVERLAY_FS)"]  # fmt: skip
    (ns / "pid").touch()
    assert checks.namespace_problems(tmp_path, filesystems="nodev\toverlay\n") == []


def test_memory_needed_and_available() -> None:
    assert checks.memory_needed(3, 2, 1) == 3 * 640 * MiB + 2 * 256 * MiB + 64 * MiB + 512 * MiB
    assert checks.memory_needed(1, 0) == 1152 * MiB
    with pytest.raises(ValueError):
        checks.memory_needed(-1, 0)
    assert checks.memory_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n") == 2048 * 1024
    with pytest.raises(ValueError):
        checks.memory_available("MemTotal: 100 kB\n")
    assert checks.memory_problems(3, 2, 1, available=8 << 30) == []
    (msg,) = checks.memory_problems(3, 2, 1, available=1 << 30)
    assert msg.startswith("not enough memory: 3 control plane(s), 2 worker(s), 1 load balancer(s) need about 3008 MiB")
    assert "1024 MiB" in msg


def test_subnet_layout() -> None:
    s = Subnet("10.210.0.0/24")
    assert (s.gateway, s.host(1), s.host(3), s.prefix_len) == ("10.210.0.1", "10.210.0.11", "10.210.0.13", 24)
    for bad in ("10.210.0.0/16", "10.210.0.5/24", "fd00::/64", "x"):
        with pytest.raises(ValueError):
            Subnet(bad)
    with pytest.raises(ValueError):
        s.host(0)
    assert resolv_conf("10.210.0.1") == "nameserver 10.210.0.1\noptions timeout:1 attempts:1\n"


def test_overlapping_addresses_and_routes() -> None:
    addrs = [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "10.210.3.4", "prefixlen": 16},
                                         {"family": "inet6", "local": "fd00::1", "prefixlen": 64}]},
    ]  # fmt: skip
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "10.210.0.0/24", "gateway": "192.0.2.9", "dev": "eth0"},
        {"dst": "10.211.0.7", "dev": "tun0"},
        {"type": "local", "dst": "10.210.3.4", "dev": "eth1", "table": "local"},
    ]
    assert overlapping_uses("10.210.0.0/24", addrs, routes) == [
        "address 10.210.3.4/16 on eth1",
        "route 10.210.0.0/24 via 192.0.2.9 dev eth0",
    ]
    assert overlapping_uses("10.211.0.0/24", addrs, routes) == ["route 10.211.0.7 dev tun0"]
    assert overlapping_uses("172.31.9.0/24", addrs, routes) == []


def test_other_sets_using_a_subnet(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "lab.json").write_text(json.dumps({"name": "a", "subnet": "10.210.0.0/24"}))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "lab.json").write_text(json.dumps({"name": "old"}))  # before subnets: 10.200.0.0/24
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "lab.json").write_text("{")
    files = sorted(tmp_path.glob("*/lab.json"))
    assert checks.state_subnet_uses("10.210.0.0/24", files) == [f"a ({tmp_path / 'a'}) uses 10.210.0.0/24"]
    assert checks.state_subnet_uses("10.200.0.0/24", files) == [f"old ({tmp_path / 'old'}) uses 10.200.0.0/24"]
    assert checks.state_subnet_uses("10.212.0.0/24", files) == []


def test_host_names() -> None:
    check_host_names(["lb1", "cp1", "cp2", "w1"])
    for bad in (["cp-1"], ["CP1"], ["1cp"], ["ctl"], ["abcdefghijk"], ["cp1", "cp1"], [""]):
        with pytest.raises(ValueError):
            check_host_names(bad)


def test_rootfs_cache_key_is_unchanged_by_the_move() -> None:
    """The warm cache's digest: a changed key means a cold debootstrap (minutes) on every machine."""
    inp = inputs("http://deb.debian.org/debian")
    assert digest_of(inp) == "39f9c8e42f713c00"
