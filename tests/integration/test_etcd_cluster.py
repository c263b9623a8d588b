"""A real 3-member etcd cluster started from the rendered etcd manifests and PKI.

Members run with exactly the manifests' flags (paths remapped to the rendered tree) in a private network
namespace per member holding its inventory address, and join the way `kubeadm join --control-plane` joins them:
the first starts alone, each next one is added as a learner, started, then promoted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE
from tests.integration.conftest import Rendered, render_inventory
from tests.reference.binaries import ref_bin

ADDRS = {"cp1": "10.200.9.11", "cp2": "10.200.9.12", "cp3": "10.200.9.13"}
PKI = "/etc/kubernetes/pki"


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _etcd_binaries() -> tuple[str, str]:
    etcd, etcdctl = ref_bin("etcd"), ref_bin("etcdctl")
    if etcd is None or etcdctl is None:
        pytest.skip("etcd/etcdctl reference binaries not built (tests/reference/build.sh --only etcd)")
    return str(etcd), str(etcdctl)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[dict[str, str]]:
    """One network namespace per member (each has its own 127.0.0.1, as separate hosts do) on a bridge that
    lives in a fourth namespace, where etcdctl runs. Nothing is added to the root namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces for the etcd members")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (run tests/setup.sh)")
    tag = f"kbt{os.getpid() % 100000}"
    sw = f"{tag}-sw"
    spaces = {host: f"{tag}-{host}" for host in ADDRS}
    created: list[str] = []
    try:
        for ns in (sw, *spaces.values()):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "addr", "add", "10.200.9.1/24", "dev", "br0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(spaces.items()):
            _ip("-n", sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{ADDRS[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield {"ctl": sw, **spaces}
    finally:
        for ns in created:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], check=False)


class Cluster:
    def __init__(self, ns: dict[str, str], tree: Rendered, tmp: Path) -> None:
        self.ns, self.tree, self.tmp = ns, tree, tmp
        self.etcd, self.etcdctl = _etcd_binaries()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, host: str) -> list[str]:
        """The etcd command from the rendered manifest, with host paths mapped into the rendered tree."""
        pod = yaml.safe_load(self.tree.path(host, "/etc/kubernetes/manifests/etcd.yaml").read_text())
        cmd: list[str] = pod["spec"]["containers"][0]["command"]
        assert cmd[0] == "etcd"
        pki = str(self.tree.path(host, PKI))
        data = self.tmp / f"{host}-data"
        return [self.etcd] + [a.replace(PKI, pki).replace("=/var/lib/etcd", f"={data}") for a in cmd[1:]]

    def start(self, host: str) -> None:
        log = open(self.tmp / f"{host}.log", "ab")
        self.procs[host] = subprocess.Popen(["ip", "netns", "exec", self.ns[host], *self.command(host)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, host: str) -> None:
        proc = self.procs.pop(host)
        proc.kill()
        proc.wait(timeout=10)

    def ctl(self, *args: str, endpoints: list[str] | None = None, timeout: str = "3s") -> subprocess.CompletedProcess[str]:
        pki = self.tree.path("cp1", PKI)
        eps = endpoints or [f"https://{ADDRS[h]}:2379" for h in self.procs]
        return subprocess.run(
            ["ip", "netns", "exec", self.ns["ctl"], self.etcdctl, f"--endpoints={','.join(eps)}",
             f"--cacert={pki}/etcd/ca.crt", f"--cert={pki}/etcd/healthcheck-client.crt",
             f"--key={pki}/etcd/healthcheck-client.key", "--dial-timeout=2s", f"--command-timeout={timeout}", *args],
            capture_output=True, text=True, timeout=30)

    def healthy(self, host: str) -> bool:
        return self.ctl("endpoint", "health", endpoints=[f"https://{ADDRS[host]}:2379"]).returncode == 0

    def status_view(self) -> dict[str, object]:
        """What `kubeboot status` learns from etcd (kubeboot.workflows.status.read_etcd with the state directory's
        credentials, run in the controller namespace as from the workstation): each member's health, the leader,
        and the member list."""
        render = self.tmp / "render"
        code = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from kubeboot.offline import load_inventory\n"
            "from kubeboot.workflows.status import credentials, read_etcd\n"
            "cfg = load_inventory(Path(sys.argv[1]))\n"
            "r = read_etcd(cfg, credentials(cfg, Path(sys.argv[2])))\n"
            "print(json.dumps({'health': r.health, 'leaders': sorted(h for h, v in r.leader.items() if v),\n"
            "                  'members': None if r.members is None else sorted(m.name for m in r.members)}))\n")
        res = subprocess.run(["ip", "netns", "exec", self.ns["ctl"], sys.executable, "-c", code,
                              str(render / "inventory.yaml"), str(render / "state")], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert res.returncode == 0, res.stderr
        view: dict[str, object] = json.loads(res.stdout)
        return view

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.tmp.glob("*.log")))


def test_three_member_etcd_from_rendered_manifests(netns: dict[str, str], tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for host, addr in ADDRS.items():
        text = text.replace(f"address: 10.0.0.1{host[-1]},", f"address: {addr},")
    tree = render_inventory(text, tmp_path / "render")
    c = Cluster(netns, tree, tmp_path)
    try:
        c.start("cp1")
        wait_for(lambda: c.healthy("cp1"), 30, "cp1 healthy")
        for host in ("cp2", "cp3"):
            # Like kubeadm, retry MemberAdd: etcd refuses it while a just-promoted member is still settling.
            added: list[str] = []

            def add_member(host: str = host) -> bool:
                res = c.ctl("member", "add", host, f"--peer-urls=https://{ADDRS[host]}:2380", "--learner",
                            endpoints=[f"https://{ADDRS['cp1']}:2379"])
                found = re.search(r"Member\s+([0-9a-f]+) added", res.stdout)
                if res.returncode == 0 and found:
                    added.append(found[1])
                return bool(added)

            wait_for(add_member, 60, f"{host} added as a learner", interval=1.0)
            member_id = added[0]
            c.start(host)
            # etcd refuses to promote a learner until it has caught up with the leader.
            wait_for(lambda: c.ctl("member", "promote", member_id,
                                   endpoints=[f"https://{ADDRS['cp1']}:2379"]).returncode == 0, 60,
                     f"{host} promoted")
        members = c.ctl("member", "list", "-w", "simple").stdout.strip().splitlines()
        assert len(members) == 3 and all(", started, " in m and m.endswith("false") for m in members), members
        health = c.ctl("endpoint", "health", "--cluster")
        assert health.returncode == 0 and health.stdout.count("is healthy") == 3, health.stdout + health.stderr
        assert c.ctl("put", "/kubeboot/a", "1").returncode == 0
        view = c.status_view()  # kubeboot status's questions: three healthy members, one leader
        assert view["health"] == {h: [True, ""] for h in ADDRS} and len(view["leaders"]) == 1, view  # type: ignore
        assert view["members"] == list(ADDRS), view

        c.stop("cp1")  # one member down: the other two still form a quorum
        wait_for(lambda: c.ctl("put", "/kubeboot/b", "2").returncode == 0, 30, "a write with one member down")
        assert c.ctl("get", "/kubeboot/a", "--print-value-only").stdout.strip() == "1"
        view = c.status_view()
        health = view["health"]
        assert health["cp1"][0] is None and health["cp2"] == health["cp3"] == [True, ""], view  # type: ignore

        c.stop("cp2")  # two down: no quorum, writes must be refused
        refused = c.ctl("put", "/kubeboot/c", "3", timeout="2s")
        assert refused.returncode != 0
        assert "deadline exceeded" in refused.stderr or "timed out" in refused.stderr, refused.stderr
        # the survivor is up but has no leader, and still says who the members are: an answer within seconds
        t0 = time.monotonic()
        view = c.status_view()
        assert time.monotonic() - t0 < 15
        health = view["health"]
        assert health["cp1"][0] is None and health["cp2"][0] is None, view  # type: ignore[index]
        assert health["cp3"][0] is False and health["cp3"][1] in ("RAFT NO LEADER", "no leader"), view  # type: ignore
        assert view["members"] == list(ADDRS) and view["leaders"] == [], view
    except AssertionError:
        print(c.logs())
        raise
    finally:
        for host in list(c.procs):
            c.stop(host)
