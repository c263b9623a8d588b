"""`certs check-expiration` and `up`'s warning count residual time by the host's own clock, as kubeadm does on the
node: a control plane whose clock runs 300 days ahead (libfaketime for its SSH sessions, tests/lab) sees its
one-year certificates 64 days from expiry. Light lab hosts: the load balancer and one control plane with its files."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import inventory, kubeboot, proxy_only_ssh_config
from tests.lab import Lab

pytestmark = [pytest.mark.lab(hosts=2)]

CP = "h2"
AHEAD = timedelta(days=300)


def check_expiration(lab: Lab, inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubeboot.cli", "certs", "check-expiration", "-i", str(inv), "--known-hosts",
           str(lab.known_hosts), "--ssh-config", str(proxy_only_ssh_config(lab)), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=inv.parent)


def test_residual_time_by_the_hosts_clock(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inventory.yaml", hosts=2)
    placed = kubeboot(lab, inv, "up", "--only", "files", "--ignore-preflight-errors=Systemd")
    assert placed.returncode == 0, placed.stderr
    assert "[certs]" not in placed.stderr  # a fresh year: nothing to warn about
    lab.set_clock_offset(CP, int(AHEAD.total_seconds()))
    try:
        res = check_expiration(lab, inv, "-o", "json")
        text = check_expiration(lab, inv)
        again = kubeboot(lab, inv, "up", "--only", "files", "--ignore-preflight-errors=Systemd")
    finally:
        lab.clear_clock_offset(CP)
    assert res.returncode == 0, res.stderr
    (cp,) = json.loads(res.stdout)["controlPlanes"]
    clock = datetime.fromisoformat(cp["hostClock"].replace("Z", "+00:00"))
    assert abs(clock - (datetime.now(timezone.utc) + AHEAD)) < timedelta(minutes=2)
    rows = {r["name"]: r for r in (*cp["certificates"], *cp["certificateAuthorities"])}
    assert rows["apiserver"]["residual"] == "64d" and rows["admin.conf"]["residual"] == "64d"
    assert rows["ca"]["residual"] == "9y"
    assert f"{CP} (" in text.stdout and "   64d   " in text.stdout, text.stdout
    # `up` reads the same clock: its last step warns
    assert again.returncode == 0, again.stderr
    warning = next(ln for ln in again.stderr.splitlines() if ln.startswith(f"[certs] {CP}: WARNING"))
    assert "expire within 90 days, the first in 64d" in warning, warning
