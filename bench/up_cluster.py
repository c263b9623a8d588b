"""Benchmark: `kubeboot up` of the recipe's HA cluster on systemd lab hosts, air-gapped, images and binaries
pre-built (tests/setup.sh): 1 load balancer + 3 control planes + 2 workers, split by phase; a no-op re-run;
adding one worker to the running cluster (and what its join-workers phase alone took).
Run as root after tests/setup.sh: python3 bench/up_cluster.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.nodes import Cluster, bench_inputs  # noqa: E402
from tests.e2e.test_up_cluster import LATE_WORKER, WORKERS, ha_inventory  # noqa: E402
from tests.lab.aptrepo import serve, use_as_mirror  # noqa: E402
from tests.lab.systemd import SystemdLab  # noqa: E402


def phases(err: str) -> str:
    m = re.search(r"time per phase: (.*)$", err, re.M)
    return m.group(1) if m else "(no summary)"


def run(c: Cluster, inv: Path, label: str) -> tuple[float, str] | None:
    t0 = time.monotonic()
    res = c.kb("up", inv=inv, netns=True)
    took = time.monotonic() - t0
    if res.returncode != 0:
        print(f"{label}: FAILED\n{res.stderr[-3000:]}")
        return None
    print(f"{label}: {took:.1f}s")
    print(f"  {phases(res.stderr)}")
    return took, res.stderr


def main() -> int:
    inputs = bench_inputs()
    if inputs is None:
        return 2
    images, kubectl, repo = inputs
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SystemdLab(f"bu{int(time.time()) % 100000}", 7) as lab:
        print(f"7 systemd hosts running + SSH: {time.monotonic() - t0:.1f}s")
        with serve(lab, repo) as server:
            for h in lab.hosts:
                use_as_mirror(lab, h.name, server)
            d = Path(tmp)
            inv = ha_inventory(lab, d / "cluster.yaml", server.sources_line, images)
            c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
            if run(c, inv, "kubeboot up, 1 LB + 3 control planes + 2 workers (fresh hosts)") is None:
                return 1
            again = run(c, inv, "no-op re-run")
            if again is None:
                return 1
            print(f"  {'no changes' if 'no changes: the hosts already match' in again[1] else 'CHANGED'}")
            bigger = ha_inventory(lab, d / "bigger.yaml", server.sources_line, images,
                                  workers=(*WORKERS, LATE_WORKER))
            added = run(c, bigger, "adding one worker to the running cluster")
            if added is None:
                return 1
            m = re.search(r"join-workers ([0-9.]+)s", added[1])
            print(f"  of which its join (join-workers phase): {m.group(1) if m else '?'}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
