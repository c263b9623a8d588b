"""Shell: the `kubeboot` command line, run as a real process (exit codes, output, state reuse)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE


def kubeboot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubeboot.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_documents_every_command() -> None:
    out = kubeboot("--help").stdout
    for cmd in ("render", "validate", "version"):
        assert cmd in out
    assert "Exit codes" in out
    assert "DIR/<host>/<absolute path>" in kubeboot("render", "--help").stdout


def test_version() -> None:
    res = kubeboot("version")
    assert res.returncode == 0 and "default 1.37.2" in res.stdout


def test_render_twice_reuses_keys_and_writes_identical_tree(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(EXAMPLE.read_text())
    first = kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "out1"))
    assert first.returncode == 0, first.stderr
    state = tmp_path / ".kubeboot" / "demo"
    assert stat.S_IMODE(os.stat(state / "pki" / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    second = kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "out2"))
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stderr and "reused" in second.stderr
    files1 = sorted(p.relative_to(tmp_path / "out1") for p in (tmp_path / "out1").rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(tmp_path / "out2") for p in (tmp_path / "out2").rglob("*") if p.is_file())
    assert files1 == files2 and len(files1) > 100
    for rel in files1:
        a, b = tmp_path / "out1" / rel, tmp_path / "out2" / rel
        assert a.read_bytes() == b.read_bytes(), rel
        assert stat.S_IMODE(a.stat().st_mode) == stat.S_IMODE(b.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "out1/cp1/etc/kubernetes/pki/ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out1/cp1/etc/kubernetes/pki/ca.crt").stat().st_mode) == 0o644
    # no secret in the progress output
    for res in (first, second):
        assert "PRIVATE KEY" not in res.stderr + res.stdout
        token = (state / "tokens" / "bootstrap").read_text().split()[0]
        assert token not in res.stderr + res.stdout


def test_bad_inventory_exit_code_3_and_nothing_written(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(EXAMPLE.read_text().replace("address: 10.0.0.12", "address: 10.0.0.999"))
    res = kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "out"))
    assert res.returncode == 3
    assert "spec.hosts[2].address: not an IP address: '10.0.0.999'" in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / ".kubeboot").exists()


def test_missing_inventory_and_foreign_output_dir(tmp_path: Path) -> None:
    res = kubeboot("validate", "-i", str(tmp_path / "nope.yaml"))
    assert res.returncode == 3 and "inventory file not found" in res.stderr
    inv = tmp_path / "inv.yaml"
    inv.write_text(EXAMPLE.read_text())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    res = kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "mine"))
    assert res.returncode == 1 and "not empty and was not written by kubeboot" in res.stderr
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def test_broken_state_exit_code_4(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(EXAMPLE.read_text())
    assert kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "o")).returncode == 0
    (tmp_path / ".kubeboot/demo/pki/ca.key").unlink()
    res = kubeboot("render", "-i", str(inv), "-o", str(tmp_path / "o"))
    assert res.returncode == 4 and "refusing to generate a new one" in res.stderr
