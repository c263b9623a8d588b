"""The committed component tables (kubeboot/config/data/) are exactly what tools/gen_component_tables.py
generates: the KubeletConfiguration field table from k8s.io/kubelet@v0.37.2 in the Go module cache, the flag
tables from the reference binaries' --help. Skipped (with the command that fixes it) when those are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference.binaries import cache_root, require_bin

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "tools" / "gen_component_tables.py"


def test_kubelet_field_table_matches_the_generator() -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go not installed (tests/setup.sh installs it)")
    cached = subprocess.run([go, "mod", "download", "-json", "k8s.io/kubelet@v0.37.2"], capture_output=True,
                            text=True, env={**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod"})
    if cached.returncode != 0:
        pytest.skip("k8s.io/kubelet@v0.37.2 is not in the Go module cache: go mod download k8s.io/kubelet@v0.37.2")
    res = subprocess.run([sys.executable, str(GEN), "kubelet", "--offline", "--check"], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, ("kubeboot/config/data/kubelet-config-v1beta1.json is stale: run "
                                 f"python3 tools/gen_component_tables.py kubelet\n{res.stdout}{res.stderr}")


def test_flag_tables_match_the_reference_binaries() -> None:
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        require_bin(name)
    res = subprocess.run([sys.executable, str(GEN), "flags", "--ref-cache", str(cache_root()), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, ("kubeboot/config/data/flags-1.37.json is stale: run "
                                 f"python3 tools/gen_component_tables.py flags\n{res.stdout}{res.stderr}")
