"""Benchmark: the systemd lab hosts (tests/lab/systemd.py), with the light hosts (tests/lab/lab.py) beside them.

Prints: the base rootfs (a cached lookup; with ``--cold`` also a from-scratch debootstrap into a scratch
cache, leaving the real cache alone), N hosts to ``running`` + SSH, memory per idle host (its memory
cgroup's charge, which includes its supervisor and nspawn), teardown, and SSH latency (connect + one
command; ten commands on one connection) on both kinds.
Run: sudo python3 bench/lab_systemd.py [--sizes 3,6] [--cold] [--idle 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab import Lab  # noqa: E402
from tests.lab import rootfs  # noqa: E402
from tests.lab.common import LabClient  # noqa: E402
from tests.lab.systemd import SystemdLab, leftovers, prerequisites  # noqa: E402

MiB = 1024 * 1024


def ssh_latency(lab: LabClient, host: str) -> tuple[float, float]:
    """(connect + first command, mean of the next ten commands on that connection) in seconds."""
    t0 = time.monotonic()
    with lab.connection(host) as c:
        c.run("true", hide=True)
        first = time.monotonic() - t0
        t1 = time.monotonic()
        for _ in range(10):
            c.run("true", hide=True)
        return first, (time.monotonic() - t1) / 10


def bench_systemd(n: int, idle: float) -> None:
    lab = SystemdLab(f"bench{n}", n)
    t0 = time.monotonic()
    try:
        lab.up(timeout=300)
        up_s = time.monotonic() - t0
        print(f"systemd {n} hosts: running + SSH in {up_s:.2f}s "
              f"(prepare {lab.timings['prepare']:.2f}s, boot all {lab.timings['boot']:.2f}s)")  # fmt: skip
        userspace = [lab.sh_in(h, "systemd-analyze time 2>/dev/null | head -1", check=False).strip()
                     for h in lab.hosts]  # fmt: skip
        print(f"  systemd-analyze h1: {userspace[0]}")
        time.sleep(idle)  # idle on purpose: what an idle host costs, after boot-time page cache settles
        mem = [lab.memory_bytes(h) / MiB for h in lab.hosts]
        print(f"  memory per idle host (memory cgroup, after {idle:.0f}s idle): mean {statistics.mean(mem):.1f} MiB, "
              f"min {min(mem):.1f}, max {max(mem):.1f}")  # fmt: skip
        first, each = ssh_latency(lab, "h1")
        print(f"  ssh: connect + command {first * 1000:.0f} ms, then {each * 1000:.1f} ms per command")
    finally:
        t1 = time.monotonic()
        lab.down()
        print(f"  teardown {time.monotonic() - t1:.2f}s, leftovers: {leftovers(lab.name, lab.hosts) or 'none'}")


def bench_light(n: int) -> None:
    lab = Lab(f"benchl{n}", n)
    t0 = time.monotonic()
    try:
        lab.up()
        print(f"light {n} hosts: SSH up in {time.monotonic() - t0:.2f}s")
        first, each = ssh_latency(lab, "h1")
        print(f"  ssh: connect + command {first * 1000:.0f} ms, then {each * 1000:.1f} ms per command")
    finally:
        t1 = time.monotonic()
        lab.down()
        print(f"  teardown {time.monotonic() - t1:.2f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="3,6")
    ap.add_argument("--cold", action="store_true", help="also build the base from scratch (scratch cache)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading memory")
    args = ap.parse_args()
    problems = prerequisites()
    if problems:
        print("cannot run: " + "; ".join(problems), file=sys.stderr)
        return 1
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="kubeboot-rootfs-bench-", dir="/var/tmp") as scratch:
            base = rootfs.ensure_base(cache=Path(scratch))
            print(f"base rootfs cold build: {base.seconds:.1f}s")
    base = rootfs.ensure_base()
    print(f"base rootfs cached: {base.seconds * 1000:.1f} ms ({'built now' if base.built else 'from cache'}) "
          f"{base.root}")  # fmt: skip
    for n in (int(s) for s in args.sizes.split(",")):
        bench_systemd(n, args.idle)
        bench_light(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
