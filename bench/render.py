"""Benchmark: render the example inventory (3 control planes, 1 LB, 2 workers) cold and warm.

Prints seconds for a cold render (all keys generated), the share spent generating keys, and a warm render
(everything reused from the state directory). Run: python3 bench/render.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kubeboot.offline import render, write_tree

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory.example.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    runs = ap.parse_args().runs
    cold, keys, warm = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            inv = Path(tmp) / "inventory.yaml"
            inv.write_text(EXAMPLE.read_text())
            t0 = time.perf_counter()
            first = render(inv, Path(tmp) / "state")
            write_tree(Path(tmp) / "out", first.hosts)
            cold.append(time.perf_counter() - t0)
            keys.append(first.seconds_keys)
            t0 = time.perf_counter()
            second = render(inv, Path(tmp) / "state")
            write_tree(Path(tmp) / "out", second.hosts)
            warm.append(time.perf_counter() - t0)
    files = sum(len(a) for a in first.hosts.values())
    print(f"hosts={len(first.hosts)} files={files} runs={runs}")
    print(f"cold render: median {statistics.median(cold):.2f}s (min {min(cold):.2f}s)")
    print(f"  key generation: median {statistics.median(keys):.2f}s "
          f"({100 * statistics.median(keys) / statistics.median(cold):.0f}% of cold)")
    print(f"warm render (keys reused): median {statistics.median(warm):.2f}s (min {min(warm):.2f}s)")


if __name__ == "__main__":
    main()
