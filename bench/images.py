"""Benchmark: packaging the lab's container images (tests/reference/images.py), cold and cached, and their sizes.

    python3 bench/images.py [--cold] [--runs N] [--go-warm] [VERSION]

* cached: ``build_images`` on the version's images dir with nothing to do (median of N runs);
* ``--cold``: every image packaged into a fresh output dir, one at a time (pause compiled again; the Debian
  packages and the Go binaries come from their caches: they are inputs, not packaging);
* ``--go-warm``: rebuilds the addon Go binaries (kube-proxy, coredns, flanneld, install-conf, CNI plugins) into a
  throwaway cache root with build.sh, i.e. with Go's build cache warm (the cold numbers, measured once on the
  2-core test machine with an empty Go cache for those modules, are printed for reference).

Needs the images built first (``python3 -m tests.reference.images``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reference import images  # noqa: E402
from tests.reference.binaries import DEFAULT_VERSION  # noqa: E402

# Measured on the 2-core test machine (tests/reference/build.sh output), seconds: first build with an empty Go
# cache for that module's dependencies (module downloads done beforehand: CoreDNS's 44.6 s, flannel's 9.1 s).
# coredns and flanneld were built at nice 19 while the reference build used both cores, so they are upper
# bounds. kube-proxy shares nearly all packages with the Kubernetes binaries built before it. Rebuilds with a
# warm Go cache in the real cache root took: kube-proxy 14.7, coredns 7.2, flanneld 4.1, each CNI plugin <= 1.0
# (--go-warm measures them again in a throwaway cache root; on a loaded machine they come out slower).
GO_COLD_MEASURED = {
    "kube-proxy": "14.7 (after the other Kubernetes binaries)", "coredns": "463.6 (contended)", "flanneld": "201.8 (contended, cgo)",
    "flannel-install-conf": "0.7", "cni-bridge": "39.2 (first of the four; shared deps)",
    "cni-host-local": "2.5", "cni-portmap": "3.4", "cni-loopback": "1.2", "cni-flannel": "3.1",
}
GO_ADDONS = tuple(GO_COLD_MEASURED)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("version", nargs="?", default=DEFAULT_VERSION)
    ap.add_argument("--cold", action="store_true", help="also package every image into a fresh directory")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--go-warm", action="store_true", help="also time warm Go rebuilds of the addon binaries")
    args = ap.parse_args()

    built = images.read_images_json(images.default_images_dir(args.version))
    if not built:
        sys.exit(f"no images for v{args.version}; build them with: {images.build_command(args.version)}")
    names = [b.name for b in built]

    cached = []
    for _ in range(args.runs):
        res = images.build_images(args.version, names)
        assert not res.built and not res.failed, (res.built, res.failed)
        cached.append(res.seconds)
    print(f"cached build of {len(names)} images: median {statistics.median(cached) * 1000:.0f} ms "
          f"(min {min(cached) * 1000:.0f} ms, {args.runs} runs)")

    cold: dict[str, float] = {}
    if args.cold:
        with tempfile.TemporaryDirectory(dir=images.default_images_dir(args.version).parent) as tmp:
            for name in names:
                t0 = time.perf_counter()
                res = images.build_images(args.version, [name], out_dir=Path(tmp))
                cold[name] = time.perf_counter() - t0
                assert [b.name for b in res.built] == [name], res.failed

    print(f"\n{'image':<20} {'ref':<58} {'MiB':>7} {'cold s':>7}")
    for b in built:
        c = f"{cold[b.name]:7.2f}" if b.name in cold else ""
        print(f"{b.name:<20} {b.ref:<58} {b.size / 2**20:7.1f} {c}")
    total = sum(b.size for b in built)
    print(f"{'total':<20} {'':<58} {total / 2**20:7.1f} {sum(cold.values()):7.2f}" if cold else
          f"{'total':<20} {'':<58} {total / 2**20:7.1f}")

    print("\nGo builds, cold (measured once, seconds):")
    for n, s in GO_COLD_MEASURED.items():
        print(f"  {n:<22} {s}")
    if args.go_warm:
        with tempfile.TemporaryDirectory(prefix="kb-bench-ref-") as root:
            env = {**os.environ, "KUBEBOOT_REF_CACHE": root}
            out = subprocess.run([str(REPO / "tests/reference/build.sh"), "--only", ",".join(GO_ADDONS), args.version],
                                 capture_output=True, text=True, env=env)
            print("Go builds, warm Go cache (this run, seconds):")
            for line in out.stdout.splitlines():
                m = re.match(r"\s+(\S+)\s+built ([\d.]+)s", line)
                if m:
                    print(f"  {m.group(1):<22} {m.group(2)}")
            if out.returncode != 0:
                print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
