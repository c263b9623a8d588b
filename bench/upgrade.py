"""Benchmark: `kubeboot upgrade` of the recipe's HA cluster (1 load balancer + 3 control planes + 2 workers) on
systemd lab hosts, air-gapped, from the previous release (tests.reference.binaries.PREVIOUS_VERSION) to the default
one, timed while a client reads `/api/v1/namespaces/default` through the load balancer at 10 Hz with the admin
identity (failed requests and the longest run of consecutive failures are printed); then the second, no-op run.

Run as root after tests/setup.sh: python3 bench/upgrade.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from day_two import bring_up, timed  # noqa: E402 - bench/day_two.py, beside this file

from tests.e2e.nodes import Cluster, prebuilt  # noqa: E402
from tests.e2e.test_up_cluster import CPS, LB, WORKERS, ha_inventory  # noqa: E402
from tests.lab.aptrepo import build_repo, default_repo_dir, serve, use_as_mirror  # noqa: E402
from tests.lab.systemd import SystemdLab  # noqa: E402
from tests.reference.binaries import DEFAULT_VERSION, PREVIOUS_VERSION  # noqa: E402
from tests.reference.images import upgrade_images_dir  # noqa: E402


def main() -> int:
    built, images = prebuilt(), upgrade_images_dir(PREVIOUS_VERSION, DEFAULT_VERSION)
    if built is None or images is None:
        print("needs tests/setup.sh first (images and reference binaries of both versions)")
        return 2
    kubectl = built[1]
    also = (PREVIOUS_VERSION,)
    repo = build_repo(default_repo_dir(DEFAULT_VERSION, also), DEFAULT_VERSION, also=also)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, SystemdLab(f"bu{int(time.time()) % 100000}", 6) as lab:
        print(f"6 systemd hosts running + SSH: {time.monotonic() - t0:.1f}s", flush=True)
        with serve(lab, repo) as server:
            for h in (LB, *CPS, *WORKERS):
                use_as_mirror(lab, h, server)
            d = Path(tmp)
            inv = ha_inventory(lab, d / "cluster.yaml", server.sources_line, images,
                               kubernetesVersion=PREVIOUS_VERSION)
            c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
            if not bring_up(c, f"{PREVIOUS_VERSION}, 6 hosts"):
                return 1
            res = timed(c, inv, f"upgrade {PREVIOUS_VERSION} -> {DEFAULT_VERSION} (3 control planes, 2 workers)",
                        "upgrade", "--to", DEFAULT_VERSION, poll=True)
            for line in res.stderr.splitlines():  # the time of each phase, from the run's own progress lines
                if re.match(r"^\[(check|etcd-snapshot|images|control-planes|cluster/[a-z-]+|workers|finish)\] "
                            r".*\(\d+\.\d+s\)$", line):
                    print("  " + line)
            timed(c, inv, "upgrade again (nothing to do)", "upgrade", "--to", DEFAULT_VERSION, poll=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
