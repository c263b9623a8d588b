"""Benchmark: a kubeboot control plane on a real node (systemd lab host, real kubelet and containerd), air-gapped.

Prints: `kubeboot up` of one control plane + one worker's runtime on fresh hosts (packages from the lab mirror,
images from the local archives), split into its phases; from `systemctl start kubelet` (systemd's timestamp) to
the API server's first /readyz; a no-op re-run; memory per node (the host's memory cgroup: idle fresh host,
worker with containerd + kubelet installed, control plane running).
Run as root after tests/setup.sh: python3 bench/nodes.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.nodes import CP, NODES_ONLY, WORKER, Cluster, bench_inputs, node_inventory  # noqa: E402
from tests.lab.aptrepo import serve, use_as_mirror  # noqa: E402
from tests.lab.systemd import SystemdLab  # noqa: E402


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def mem_stat(lab: SystemdLab, host: str) -> str:
    """anon (total_rss) and page cache (total_cache) of the host's memory cgroup (v1)."""
    for d in lab.host(host).cgroups:
        f = Path(d, "memory.stat")
        if f.exists():
            kv = dict(line.split() for line in f.read_text().splitlines())
            return f"anon {mib(int(kv['total_rss']))} + cache {mib(int(kv['total_cache']))}"
    return "?"


def phase_times(out: str) -> str:
    """`[phase] done ... (1.2s)` lines as `phase 1.2s`."""
    found = re.findall(r"^\[([a-z/-]+)\] .*?\(([0-9.]+)s\)$", out, re.M)
    return ", ".join(f"{p} {s}s" for p, s in found) or "(no per-phase times in the output)"


def main() -> int:
    inputs = bench_inputs()
    if inputs is None:
        return 2
    images, kubectl, repo = inputs
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SystemdLab(f"bn{int(time.time()) % 100000}", 2) as lab:
        print(f"2 systemd hosts running + SSH: {time.monotonic() - t0:.1f}s")
        idle = lab.memory_bytes(WORKER)
        with serve(lab, repo) as server:
            for h in (CP, WORKER):
                use_as_mirror(lab, h, server)
            d = Path(tmp)
            inv = node_inventory(lab, d / "cluster.yaml", {CP: ["control-plane"], WORKER: ["worker"]},
                                 server.sources_line, images)
            c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
            t0 = time.monotonic()
            res = c.kb("up", *NODES_ONLY)
            took = time.monotonic() - t0
            if res.returncode != 0:
                print(res.stdout + res.stderr)
                return 1
            print(f"kubeboot up (1 control plane + 1 worker, fresh hosts, air-gapped): {took:.1f}s")
            print(f"  phases: {phase_times(res.stdout + res.stderr)}")
            c.admin.write_bytes((lab.host(CP).rootfs / "etc/kubernetes/admin.conf").read_bytes())
            # the hosts share the machine's kernel, so systemd's monotonic timestamps and ours are one clock
            started = int(lab.sh_in(CP, "systemctl show -p ActiveEnterTimestampMonotonic --value kubelet")) / 1e6
            deadline = time.monotonic() + 300
            while c.kubectl("get", "--raw", "/readyz").returncode != 0:
                if time.monotonic() > deadline:
                    print("the API server did not become ready within 300s")
                    return 1
                time.sleep(0.2)
            print(f"systemctl start kubelet -> API server /readyz (first success seen from the workstation): "
                  f"{time.monotonic() - started:.1f}s")
            t0 = time.monotonic()
            again = c.kb("up", *NODES_ONLY)
            print(f"no-op re-run: {time.monotonic() - t0:.1f}s "
                  f"({'no changes' if 'no changes' in again.stdout + again.stderr else 'CHANGED'})")
            subprocess.run(["sync"], check=False)
            print(f"memory (memory cgroup usage): fresh idle host {mib(idle)}; worker with containerd + kubelet "
                  f"(not joined) {mib(lab.memory_bytes(WORKER))} ({mem_stat(lab, WORKER)}); control plane "
                  f"{mib(lab.memory_bytes(CP))} ({mem_stat(lab, CP)})")
            anon = lab.sh_in(CP, "ps -eo rss= | awk '{s+=$1} END {print s*1024}'").strip()
            print(f"control plane: resident memory of all its processes {mib(int(anon))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
