"""Shell: `kubeboot certs check-expiration` — kubeadm's two tables for every control plane, read from the files
on the host (not from the state directory: what the components use is what counts), with the host's own clock —
and the warning every `up` prints when a control plane holds a certificate that expires within 90 days."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kubeboot import output, state
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.offline import load_inventory
from kubeboot.pki import expiry
from kubeboot.plan import status as st
from kubeboot.runner import ConnectOptions
from kubeboot.transport.base import Transport, close_all
from kubeboot.workflows.status import connect, read_hosts


@dataclass(frozen=True)
class ControlPlaneCerts:
    host: Host
    error: str | None
    now: datetime | None  # the host's clock when it was read
    certificates: tuple[expiry.Expiry, ...] = ()
    authorities: tuple[expiry.Expiry, ...] = ()


def _rows(cfg: ClusterConfig, readings: Mapping[str, st.HostReading]) -> list[ControlPlaneCerts]:
    out = []
    for h in cfg.control_planes:
        r = readings[h.name]
        if r.error is not None:
            out.append(ControlPlaneCerts(h, r.error, None))
            continue
        now = datetime.fromtimestamp(r.clock, timezone.utc) if r.clock else datetime.now(timezone.utc)
        certs, cas = expiry.check(r.certs, r.keys)
        out.append(ControlPlaneCerts(h, None, now, certs, cas))
    return out


def check_expiration(inventory: Path, state_dir: Path | None, opts: ConnectOptions) -> list[ControlPlaneCerts]:
    """Read every control plane's certificates (one round trip each, in parallel)."""
    cfg = load_inventory(inventory)
    root = state_dir or state.default_state_dir(inventory, cfg.name)
    transports = connect(cfg, root, opts)
    try:
        return _rows(cfg, read_hosts(cfg.control_planes, transports, opts.concurrency, containers=False))
    finally:
        close_all(transports.values())


def as_json(rows: list[ControlPlaneCerts]) -> dict[str, object]:
    """`-o json` (documented in README): per control plane its clock and kubeadm's two lists."""
    cps: list[dict[str, object]] = []
    for r in rows:
        d: dict[str, object] = {"name": r.host.name, "address": str(r.host.address), "reachable": r.error is None}
        if r.error is not None or r.now is None:
            d["error"] = r.error
        else:
            d["hostClock"] = r.now.strftime("%Y-%m-%dT%H:%M:%SZ")
            d["certificates"] = expiry.as_json(r.certificates, r.now)
            d["certificateAuthorities"] = expiry.as_json(r.authorities, r.now)
        cps.append(d)
    return {"apiVersion": st.API_VERSION, "kind": "CertificateExpiration", "controlPlanes": cps}


def warn_expiring(cfg: ClusterConfig, transports: Mapping[str, Transport], reporter: output.Reporter,
                  concurrency: int) -> None:
    """`up`'s last look: one warning per control plane holding certificates that expire within 90 days (or
    already did), read from the host. A host that cannot be read is skipped: `up` already reported it."""
    readings = read_hosts([h for h in cfg.control_planes if h.name in transports], transports, concurrency,
                          containers=False)
    for row in _rows(cfg, {h.name: readings.get(h.name, st.HostReading(error="not read"))
                           for h in cfg.control_planes}):
        if row.error is not None or row.now is None:
            continue
        soon = expiry.expiring((*row.certificates, *row.authorities), row.now)
        if not soon:
            continue
        first = soon[0]
        assert first.not_after is not None
        left = expiry.short_human_duration(first.not_after - row.now)
        names = ", ".join(e.name for e in soon)
        reporter.warn("certs", row.host.name,
                      f"{len(soon)} certificate(s) expire within {expiry.WARN_WITHIN.days} days, the first in {left} "
                      f"({expiry.expires_text(first.not_after)}): {names}; see `kubeboot certs check-expiration`")
