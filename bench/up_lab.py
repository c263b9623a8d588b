"""Benchmark: kubeboot over real SSH on a namespaced lab of 5 and of 30 hosts (needs root; see tests/lab).

Prints, per lab size: a full fact gathering (connect + one round trip per host), placing all files
(`up --only files` on fresh hosts), a no-op re-run, and the SSH connections each host accepted per run
(counted from the hosts' own sshd logs; the target is 1).
Run: sudo python3 bench/up_lab.py [--sizes 5,30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubeboot import output  # noqa: E402
from kubeboot.phases.base import RunOptions  # noqa: E402
from kubeboot.runner import ConnectOptions  # noqa: E402
from kubeboot.workflows.up import UpRequest, up  # noqa: E402
from tests.lab import Lab  # noqa: E402


def inventory(lab: Lab, n: int, path: Path) -> Path:
    hosts = []
    for i in range(1, n + 1):
        role = "load-balancer" if i == 1 else "control-plane" if i <= 4 else "worker"
        hosts.append({"name": f"h{i}", "address": str(lab.host(f"h{i}").address), "roles": [role]})
    doc = {"apiVersion": "kubeboot.io/v1alpha1", "kind": "Cluster", "metadata": {"name": f"bench{n}"},
           "spec": {"controlPlaneEndpoint": f"{lab.host('h1').address}:6443",
                    "ssh": {"user": "root", "keyPath": str(lab.key_path)}, "hosts": hosts}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def accepted(lab: Lab) -> dict[str, int]:
    return {h.name: h.log_path.read_text(errors="replace").count("Accepted publickey") for h in lab.hosts}


def timed(req: UpRequest) -> tuple[float, int]:
    t0 = time.perf_counter()
    _r, result = up(req, output.Reporter(quiet=True))
    return time.perf_counter() - t0, result.changes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5,30")
    sizes = [int(x) for x in ap.parse_args().sizes.split(",")]
    for n in sizes:
        with Lab(f"bench{n}", n) as lab, tempfile.TemporaryDirectory() as tmp:
            ssh_config = Path(tmp) / "ssh_config"
            ssh_config.write_text(f"Host 10.200.0.*\n    ProxyCommand {lab.proxy_command()}\n")
            inv = inventory(lab, n, Path(tmp) / "inventory.yaml")
            conn = ConnectOptions(lab.known_hosts, False, ssh_config, concurrency=10)
            opts = RunOptions(ignore_preflight_errors=frozenset({"all"}))
            # render once first, so key generation is not part of any SSH number
            timed(UpRequest(inv, None, only=("preflight",), options=opts, connect=conn, dry_run=True))
            before = accepted(lab)
            t_gather, _ = timed(UpRequest(inv, None, only=("preflight",), options=opts, connect=conn))
            after_gather = accepted(lab)
            t_files, changes = timed(UpRequest(inv, None, only=("files",), options=opts, connect=conn))
            after_files = accepted(lab)
            t_noop, noop_changes = timed(UpRequest(inv, None, only=("files",), options=opts, connect=conn))
            after_noop = accepted(lab)
            per_run = [after_noop[h] - after_files[h] for h in after_noop]
            per_files = [after_files[h] - after_gather[h] for h in after_files]
            print(f"lab of {n} hosts (concurrency 10):")
            print(f"  fact gathering (connect + 1 round trip/host): {t_gather:.2f}s "
                  f"(connections per host: {sorted(set(after_gather[h] - before[h] for h in before))})")
            print(f"  place all files: {t_files:.2f}s, {changes} files written")
            print(f"  no-op re-run:    {t_noop:.2f}s, {noop_changes} changes")
            print(f"  SSH connections accepted per host per run: files run {sorted(set(per_files))}, "
                  f"no-op run {sorted(set(per_run))} (target 1)")


if __name__ == "__main__":
    main()
