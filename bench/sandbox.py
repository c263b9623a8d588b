"""Benchmark: the README's first command after `pip install .`, piece by piece, as a person runs it:
`kubeboot bundle build --from-source` (cold or warm, whatever the cache holds), `kubeboot sandbox up` with the
defaults (1 nginx host, 3 control planes, 2 workers), a second `sandbox up` (no changes), the memory the six hosts
use (resident and page cache, from their memory cgroups), and `sandbox down`.

Run as root: python3 bench/sandbox.py [--name NAME] [--keep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubeboot.sandbox import hosts  # noqa: E402
from kubeboot.workflows.sandbox import NETNS_PREFIX, sandbox_dir  # noqa: E402


def kubeboot(*args: str) -> float:
    t0 = time.monotonic()
    got = subprocess.run([sys.executable, "-m", "kubeboot.cli", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    if got.returncode != 0:
        sys.stderr.write(got.stderr[-4000:])
        raise SystemExit(f"kubeboot {' '.join(args)}: exit {got.returncode}")
    return time.monotonic() - t0


def memory(name: str) -> list[tuple[str, int, int]]:
    """(host, resident bytes, page cache bytes) from each host's memory cgroup."""
    lab = hosts.attach(name, NETNS_PREFIX, sandbox_dir(name) / "hosts")
    assert lab is not None
    out = []
    for h in lab.hosts:
        d = next(c for c in h.cgroups if "/memory" in c)
        st = dict(line.split() for line in Path(d, "memory.stat").read_text().splitlines())
        out.append((h.name, int(st["total_rss"]), int(st["total_cache"])))
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default=f"bench{int(time.time()) % 100000}")
    p.add_argument("--keep", action="store_true", help="leave the sandbox up")
    a = p.parse_args()
    print(f"bundle build --from-source: {kubeboot('bundle', 'build', '--from-source'):.1f}s", flush=True)
    print(f"bundle build again (no-op): {kubeboot('bundle', 'build', '--from-source'):.1f}s", flush=True)
    print(f"sandbox up (6 hosts): {kubeboot('sandbox', 'up', '--name', a.name):.1f}s", flush=True)
    print(f"sandbox up again (no changes): {kubeboot('sandbox', 'up', '--name', a.name):.1f}s", flush=True)
    rows = memory(a.name)
    for host, rss, cache in rows:
        print(f"  {host:4} resident {rss >> 20:5} MiB  page cache {cache >> 20:5} MiB")
    print(f"memory of the 6 hosts: resident {sum(r for _h, r, _c in rows) >> 20} MiB, page cache "
          f"{sum(c for _h, _r, c in rows) >> 20} MiB", flush=True)
    if not a.keep:
        print(f"sandbox down: {kubeboot('sandbox', 'down', '--name', a.name):.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
