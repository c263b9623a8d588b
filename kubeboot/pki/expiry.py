"""Pure core: kubeadm's `certs check-expiration` — which certificates a control plane holds, which CA signed
each, how long each has left, and the two tables kubeadm prints.

The list is kubeadm's renewal manager's (cmd/kubeadm/app/phases/certs/renewal/manager.go): every leaf of the
certificate table, the client certificate embedded in admin.conf, controller-manager.conf, scheduler.conf and
super-admin.conf (not kubelet.conf: the kubelet rotates its own), and the three CAs; rows sorted by name.
The shell reads the files over SSH; everything here works on their bytes and a clock.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from kubeboot.pki.bundle import CLIENTS
from kubeboot.pki.certs import CAS, LEAVES

CERTS_DIR = "/etc/kubernetes/pki"
KUBERNETES_DIR = "/etc/kubernetes"
#: every `up` warns when a certificate a control plane holds expires sooner than this
WARN_WITHIN = timedelta(days=90)


@dataclass(frozen=True)
class Item:
    """One row of kubeadm's tables: a certificate file (or a kubeconfig's embedded client certificate)."""

    name: str  # apiserver, admin.conf, ca ...
    path: str  # absolute path on the control plane
    ca: str | None  # the signing CA's name; None for a CA row
    kubeconfig: bool = False


def _items() -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    leaves = [Item(s.id, f"{CERTS_DIR}/{s.base}.crt", s.ca) for s in LEAVES]
    # every certificate embedded in a kubeconfig is signed by the cluster CA
    confs = [Item(c.file, f"{KUBERNETES_DIR}/{c.file}", "ca", kubeconfig=True)
             for c in CLIENTS if c.file != "kubelet.conf"]
    cas = [Item(s.id, f"{CERTS_DIR}/{s.base}.crt", None) for s in CAS]
    return tuple(sorted(leaves + confs, key=lambda i: i.name)), tuple(sorted(cas, key=lambda i: i.name))


CERTIFICATES, AUTHORITIES = _items()
#: a CA whose key is absent is "externally managed" (kubeadm UsingExternalCA / UsingExternalFrontProxyCA);
#: kubeadm never reports the etcd CA as external, so its key is not looked at
CA_KEYS: Mapping[str, str] = {s.id: f"{CERTS_DIR}/{s.base}.key" for s in CAS if s.id != "etcd-ca"}


def pem_paths() -> tuple[str, ...]:
    return tuple(i.path for i in (*CERTIFICATES, *AUTHORITIES) if not i.kubeconfig)


def kubeconfig_paths() -> tuple[str, ...]:
    return tuple(i.path for i in CERTIFICATES if i.kubeconfig)


@dataclass(frozen=True)
class Expiry:
    """One row: when the certificate expires (None: the file is missing or unreadable, with why)."""

    name: str
    ca: str | None
    not_after: datetime | None
    externally_managed: bool = False
    problem: str = ""  # "missing" or why it could not be read

    def residual(self, now: datetime) -> timedelta | None:
        return None if self.not_after is None else self.not_after - now


def first_certificate(data: bytes) -> x509.Certificate:
    """The first certificate of PEM bytes, or of base64 PEM (a kubeconfig's client-certificate-data)."""
    text = data.strip()
    if not text.startswith(b"-----"):
        try:
            text = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("neither PEM nor base64 PEM") from None
    return x509.load_pem_x509_certificates(text)[0]


def check(files: Mapping[str, bytes], keys_present: frozenset[str]) -> tuple[tuple[Expiry, ...], tuple[Expiry, ...]]:
    """kubeadm's two lists from one control plane's files: `files` maps each path that exists to its
    certificate bytes (for kubeconfigs, the client-certificate-data); `keys_present` the CA key paths found."""
    external = {ca: path not in keys_present for ca, path in CA_KEYS.items()}

    def row(item: Item) -> Expiry:
        managed_by = item.ca or item.name
        ext = external.get(managed_by, False)
        data = files.get(item.path)
        if data is None:
            return Expiry(item.name, item.ca, None, ext, "missing")
        try:
            cert = first_certificate(data)
        except ValueError as exc:
            return Expiry(item.name, item.ca, None, ext, f"unreadable: {exc}")
        return Expiry(item.name, item.ca, cert.not_valid_after_utc, ext)

    return tuple(row(i) for i in CERTIFICATES), tuple(row(i) for i in AUTHORITIES)


def earliest(rows: Sequence[Expiry]) -> Expiry | None:
    dated = [r for r in rows if r.not_after is not None]
    return min(dated, key=lambda r: r.not_after or datetime.max) if dated else None


def expiring(rows: Sequence[Expiry], now: datetime, within: timedelta = WARN_WITHIN) -> list[Expiry]:
    """Rows that expire before now + within (already expired ones too), soonest first."""
    soon = [r for r in rows if r.not_after is not None and r.not_after - now < within]
    return sorted(soon, key=lambda r: r.not_after or datetime.max)


def short_human_duration(d: timedelta) -> str:
    """apimachinery's duration.ShortHumanDuration, which kubeadm prints as RESIDUAL TIME: "59d", "9y"; a value
    more than a second in the past is "<invalid>"."""
    seconds = int(d.total_seconds())  # truncates toward zero, as Go's int(d.Seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if (minutes := seconds // 60) < 60:
        return f"{minutes}m"
    if (hours := seconds // 3600) < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{int(d.total_seconds() / 3600 / 24 / 365)}y"


def expires_text(when: datetime) -> str:
    """Go's "Jan 02, 2006 15:04 MST" in UTC, as kubeadm prints EXPIRES."""
    return when.strftime("%b %d, %Y %H:%M UTC")


def tabwrite(lines: Sequence[str], minwidth: int = 10, padding: int = 3) -> str:
    """Go text/tabwriter with kubeadm's settings (minwidth 10, padding 3, spaces): tab-terminated cells are
    aligned per column over runs of consecutive lines that have that column; the last cell is left as is."""
    cells = [line.split("\t") for line in lines]
    widths: list[list[int]] = [[0] * (len(c) - 1) for c in cells]
    ncols = max((len(c) - 1 for c in cells), default=0)
    for col in range(ncols):
        i = 0
        while i < len(cells):
            if len(cells[i]) - 1 <= col:
                i += 1
                continue
            j = i
            while j < len(cells) and len(cells[j]) - 1 > col:
                j += 1
            width = max(minwidth, *(len(cells[k][col]) + padding for k in range(i, j)))
            for k in range(i, j):
                widths[k][col] = width
            i = j
    out = []
    for c, w in zip(cells, widths):
        out.append("".join(cell.ljust(w[n]) for n, cell in enumerate(c[:-1])) + c[-1])
    return "\n".join(out)


def _yes_no(value: bool) -> str:
    return f"{'yes' if value else 'no':<8}"  # kubeadm's %-8v


def render_tables(certs: Sequence[Expiry], cas: Sequence[Expiry], now: datetime) -> str:
    """kubeadm's check-expiration output: the certificate table, a blank line, the CA table. A missing
    certificate is kubeadm's `!MISSING! <name>` row (super-admin.conf on every control plane but the first)."""
    lines = ["CERTIFICATE\tEXPIRES\tRESIDUAL TIME\tCERTIFICATE AUTHORITY\tEXTERNALLY MANAGED"]
    for r in certs:
        if r.not_after is None:
            lines.append(f"!MISSING! {r.name}\t\t\t\t")
            continue
        lines.append(f"{r.name}\t{expires_text(r.not_after)}\t{short_human_duration(r.not_after - now)}\t"
                     f"{r.ca}\t{_yes_no(r.externally_managed)}")
    lines.append("")
    lines.append("CERTIFICATE AUTHORITY\tEXPIRES\tRESIDUAL TIME\tEXTERNALLY MANAGED")
    for r in cas:
        if r.not_after is None:
            lines.append(f"!MISSING! {r.name}\t\t\t")
            continue
        lines.append(f"{r.name}\t{expires_text(r.not_after)}\t{short_human_duration(r.not_after - now)}\t"
                     f"{_yes_no(r.externally_managed)}")
    return tabwrite(lines)


def as_json(rows: Sequence[Expiry], now: datetime) -> list[dict[str, object]]:
    """Rows for `-o json`: name, ca, expires (RFC 3339 UTC or null), residualSeconds, residual, externallyManaged,
    missing/problem."""
    out: list[dict[str, object]] = []
    for r in rows:
        d: dict[str, object] = {"name": r.name}
        if r.ca is not None:
            d["certificateAuthority"] = r.ca
        if r.not_after is None:
            d.update(expires=None, problem=r.problem)
        else:
            left = r.not_after - now
            d.update(expires=r.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), residualSeconds=int(left.total_seconds()),
                     residual=short_human_duration(left))
        d["externallyManaged"] = r.externally_managed
        out.append(d)
    return out
