"""Benchmark: day-two commands on the recipe's HA cluster (1 load balancer + 3 control planes + 2 workers) on systemd
lab hosts, air-gapped, images and binaries pre-built (tests/setup.sh):

- `kubeboot status` over 5 hosts (LB, the control planes, one worker) and over 30 (the 6 cluster hosts and 24 more
  hosts that are reachable but not part of it), median of 3;
- `kubeboot certs renew all`, `etcd snapshot save` and `etcd snapshot restore`, each timed while a client reads
  `/api/v1/namespaces/default` through the load balancer at 10 Hz with the admin identity (failed requests and the
  longest run of consecutive failures are printed: restore stops every API server by design).

Run as root after tests/setup.sh: python3 bench/day_two.py
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.conftest import proxy_only_ssh_config  # noqa: E402
from tests.e2e.nodes import Cluster, bench_inputs  # noqa: E402
from tests.e2e.test_up_cluster import CPS, LB, WORKERS, ha_inventory  # noqa: E402
from tests.lab.aptrepo import serve, use_as_mirror  # noqa: E402
from tests.lab.systemd import SystemdLab  # noqa: E402

EXTRA = 24  # reachable hosts beyond the cluster, for status over 30
CLONE_NEWNET = 0x40000000


class Poller:
    """10 requests a second through the endpoint, from a thread that entered the lab's controller network namespace
    (setns is per thread); counts failures and the longest run of consecutive ones."""

    def __init__(self, netns: str, admin: Path) -> None:
        self.netns, self.stop = netns, threading.Event()
        self.ok = self.failed = self.worst = 0
        doc = yaml.safe_load(admin.read_text())
        self.url = doc["clusters"][0]["cluster"]["server"] + "/api/v1/namespaces/default"
        user = doc["users"][0]["user"]
        self.tmp = tempfile.TemporaryDirectory()
        crt, key, ca = (Path(self.tmp.name) / n for n in ("c.pem", "k.pem", "ca.pem"))
        crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ca.write_bytes(base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]))
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(crt), str(key))
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        streak = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, context=self.ctx, timeout=2) as r:
                    r.read()
                self.ok, streak = self.ok + 1, 0
            except OSError:
                self.failed, streak = self.failed + 1, streak + 1
                self.worst = max(self.worst, streak)
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

    def __enter__(self) -> "Poller":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.tmp.cleanup()

    def line(self) -> str:
        return f"poller: {self.ok + self.failed} requests, {self.failed} failed, longest failure run {self.worst}"


def kb(c: Cluster, inv: Path, *args: str) -> tuple[float, Any]:
    t0 = time.monotonic()
    res = c.kb(*args, "-i", str(inv), "--known-hosts", str(c.lab.known_hosts),
               "--ssh-config", str(proxy_only_ssh_config(c.lab)), netns=True)
    return time.monotonic() - t0, res


def timed(c: Cluster, inv: Path, label: str, *args: str, poll: bool = False) -> Any:
    p = Poller(c.lab.ctl_netns, c.admin) if poll else None
    if p is not None:
        p.__enter__()
    try:
        took, res = kb(c, inv, *args)
    finally:
        if p is not None:
            p.__exit__()
    print(f"{label}: {took:.1f}s (exit {res.returncode})" + (f"; {p.line()}" if p else ""), flush=True)
    if res.returncode not in (0, 19):
        print(res.stderr[-2000:])
    return res


def bring_up(c: Cluster, label: str) -> bool:
    """`kubeboot up` of the cluster, timed, then its admin kubeconfig on the workstation; False (said) on failure."""
    t1 = time.monotonic()
    res = c.kb("up", netns=True)
    if res.returncode != 0:
        print(f"up failed:\n{res.stderr[-3000:]}")
        return False
    print(f"kubeboot up ({label}): {time.monotonic() - t1:.1f}s", flush=True)
    return c.kb("kubeconfig", "-i", str(c.inv), "-o", str(c.admin)).returncode == 0


def main() -> int:
    inputs = bench_inputs()
    if inputs is None:
        return 2
    images, kubectl, repo = inputs
    n = 1 + len(CPS) + len(WORKERS) + EXTRA
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SystemdLab(f"bd{int(time.time()) % 100000}", n) as lab:
        print(f"{n} systemd hosts running + SSH: {time.monotonic() - t0:.1f}s", flush=True)
        with serve(lab, repo) as server:
            cluster_hosts = [LB, *CPS, *WORKERS]
            for h in cluster_hosts:
                use_as_mirror(lab, h, server)
            d = Path(tmp)
            inv = ha_inventory(lab, d / "cluster.yaml", server.sources_line, images)
            c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
            if not bring_up(c, "6 hosts"):
                return 1
            five = ha_inventory(lab, d / "five.yaml", server.sources_line, images, workers=WORKERS[:1])
            extra = [h.name for h in lab.hosts if h.name not in cluster_hosts]
            doc = yaml.safe_load(inv.read_text())
            doc["spec"]["hosts"] += [{"name": h, "address": str(lab.host(h).address), "roles": ["worker"]}
                                     for h in extra]
            thirty = d / "thirty.yaml"
            thirty.write_text(yaml.safe_dump(doc))
            for label, path in (("status, 5 hosts", five), ("status, 30 hosts", thirty)):
                times = [kb(c, path, "status", "-o", "json")[0] for _ in range(3)]
                print(f"{label}: median {statistics.median(times):.2f}s of {', '.join(f'{t:.2f}' for t in times)}",
                      flush=True)
            timed(c, inv, "certs renew all (3 control planes, one at a time)", "certs", "renew", "all", poll=True)
            snap = d / "snap.db"
            res = timed(c, inv, "etcd snapshot save", "etcd", "snapshot", "save", "-o", str(snap), poll=True)
            if res.returncode == 0:
                meta = json.loads(Path(f"{snap}.json").read_text()) if Path(f"{snap}.json").exists() else {}
                print(f"  snapshot {snap.stat().st_size / 1e6:.1f} MB; {meta.get('etcdVersion', '')}")
                timed(c, inv, "etcd snapshot restore (every control plane stops, by design)", "etcd", "snapshot",
                      "restore", str(snap), "--yes", poll=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
