"""Pure core: the whole cluster's PKI, decided from existing material, the clock and a key generator.

Stored material is a flat mapping of state-relative paths to PEM bytes:
  pki/<base>.crt|key           the three CAs, pki/sa.key and pki/sa.pub   (shared by every control plane)
  hosts/<host>/pki/<base>.*    per-control-plane leaf certificates
  hosts/<host>/clients/<kubeconfig>.crt|key   client certificates embedded in that host's kubeconfigs
CAs and the sa key are never regenerated once they exist; leaves are re-issued only when leaf_problem says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from kubeboot.config.model import ClusterConfig, Host
from kubeboot.errors import StateError
from kubeboot.pki.certs import (
    BACKDATE,
    CAS,
    CLIENT_AUTH,
    LEAVES,
    AltNames,
    is_ca,
    issue_ca,
    issue_leaf,
    leaf_problem,
)
from kubeboot.pki.keys import KeyGen, PrivateKey, load_private_key, private_key_pem, public_key_pem, same_public_key

from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


@dataclass(frozen=True)
class ClientSpec:
    """A kubeconfig's client identity (kubeadm phases/kubeconfig/kubeconfig.go)."""

    file: str  # admin.conf ...
    cn: str  # "{node}" is replaced by the host name
    orgs: tuple[str, ...]
    first_control_plane_only: bool = False

    def cn_for(self, host: Host) -> str:
        return self.cn.replace("{node}", host.name)


LEAVES_BY_ID = {spec.id: spec for spec in LEAVES}

CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec("admin.conf", "kubernetes-admin", ("kubeadm:cluster-admins",)),
    # super-admin.conf bypasses RBAC (system:masters); kubeadm writes it on the init node only.
    ClientSpec("super-admin.conf", "kubernetes-super-admin", ("system:masters",), first_control_plane_only=True),
    ClientSpec("kubelet.conf", "system:node:{node}", ("system:nodes",)),
    ClientSpec("controller-manager.conf", "system:kube-controller-manager", ()),
    ClientSpec("scheduler.conf", "system:kube-scheduler", ()),
)


@dataclass(frozen=True)
class PkiChange:
    scope: str  # "cluster" or a host name
    item: str  # "ca", "apiserver", "admin.conf", "sa"
    action: str  # "created" | "reissued" | "kept"
    reason: str = ""


@dataclass(frozen=True)
class ClusterPki:
    cas: Mapping[str, KeyPair]
    sa_key: PrivateKey
    leaves: Mapping[tuple[str, str], KeyPair]  # (host, leaf id)
    clients: Mapping[tuple[str, str], KeyPair]  # (host, kubeconfig file)

    def to_stored(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for spec in CAS:
            pair = self.cas[spec.id]
            out[f"pki/{spec.base}.crt"] = pair.cert_pem()
            out[f"pki/{spec.base}.key"] = pair.key_pem()
        out["pki/sa.key"] = private_key_pem(self.sa_key)
        out["pki/sa.pub"] = public_key_pem(self.sa_key.public_key())
        for (host, leaf_id), pair in self.leaves.items():
            out[f"hosts/{host}/pki/{LEAVES_BY_ID[leaf_id].base}.crt"] = pair.cert_pem()
            out[f"hosts/{host}/pki/{LEAVES_BY_ID[leaf_id].base}.key"] = pair.key_pem()
        for (host, file), pair in self.clients.items():
            stem = file.removesuffix(".conf")
            out[f"hosts/{host}/clients/{stem}.crt"] = pair.cert_pem()
            out[f"hosts/{host}/clients/{stem}.key"] = pair.key_pem()
        return out


def clients_for(cfg: ClusterConfig, host: Host) -> tuple[ClientSpec, ...]:
    if not host.is_control_plane:
        return ()
    first = host.name == cfg.first_control_plane.name
    return tuple(c for c in CLIENTS if first or not c.first_control_plane_only)


def _load_pair(stored: Mapping[str, bytes], base: str, what: str) -> KeyPair | None:
    crt, key = stored.get(f"{base}.crt"), stored.get(f"{base}.key")
    if crt is None and key is None:
        return None
    if crt is None or key is None:
        missing = f"{base}.crt" if crt is None else f"{base}.key"
        raise StateError(
            f"{what}: {missing} is missing but its other half exists; refusing to generate a new one",
            hint="restore the missing file from a backup, or remove both halves to start a new PKI",
        )
    try:
        cert = x509.load_pem_x509_certificate(crt)
        pkey = load_private_key(key)
    except ValueError as exc:
        raise StateError(f"{what}: {base}.crt/.key cannot be parsed: {exc}") from None
    if not same_public_key(cert.public_key(), pkey.public_key()):  # type: ignore[arg-type]
        raise StateError(f"{what}: {base}.key does not belong to {base}.crt")
    return KeyPair(cert, pkey)


def plan_pki(cfg: ClusterConfig, stored: Mapping[str, bytes], now: datetime, keygen: KeyGen
             ) -> tuple[ClusterPki, list[PkiChange]]:
    """Reuse what is valid, create what is missing, re-issue invalid leaves; report each decision."""
    alg = cfg.certificates.key_algorithm
    start = now - BACKDATE
    leaf_end = now + timedelta(days=cfg.certificates.validity_days)
    changes: list[PkiChange] = []

    cas: dict[str, KeyPair] = {}
    for spec in CAS:
        pair = _load_pair(stored, f"pki/{spec.base}", f"CA {spec.id}")
        if pair is None:
            key = keygen(alg)
            # kubeadm: NotBefore is back-dated, NotAfter counts from the start time (not from NotBefore).
            cert = issue_ca(spec.cn, key, start, now + timedelta(days=cfg.certificates.ca_validity_days))
            cas[spec.id] = KeyPair(cert, key)
            changes.append(PkiChange("cluster", spec.id, "created"))
            continue
        if not is_ca(pair.cert):
            raise StateError(f"CA {spec.id}: pki/{spec.base}.crt is not a CA certificate")
        if pair.cert.not_valid_after_utc <= now:
            raise StateError(
                f"CA {spec.id} expired on {pair.cert.not_valid_after_utc:%Y-%m-%d}",
                hint="CA rotation is not automatic: every certificate and kubeconfig must be re-issued",
            )
        cas[spec.id] = pair
        changes.append(PkiChange("cluster", spec.id, "kept"))

    sa_pem = stored.get("pki/sa.key")
    if sa_pem is None:
        if "pki/sa.pub" in stored:
            raise StateError("sa: pki/sa.pub exists without pki/sa.key; refusing to generate a new signing key",
                             hint="restore sa.key: a new one invalidates every service-account token")
        sa_key = keygen(alg)
        changes.append(PkiChange("cluster", "sa", "created"))
    else:
        try:
            sa_key = load_private_key(sa_pem)
        except ValueError as exc:
            raise StateError(f"sa: pki/sa.key cannot be parsed: {exc}") from None
        changes.append(PkiChange("cluster", "sa", "kept"))

    leaves: dict[tuple[str, str], KeyPair] = {}
    clients: dict[tuple[str, str], KeyPair] = {}
    for host in cfg.control_planes:
        for leaf in LEAVES:
            ca = cas[leaf.ca]
            alt = leaf.alt_names(cfg, host) if leaf.alt_names else None
            cn = leaf.cn(host)
            base = f"hosts/{host.name}/pki/{leaf.base}"
            leaves[(host.name, leaf.id)] = _leaf(stored, base, leaf.id, host.name, cn, leaf.orgs_for(cfg), leaf.usages, alt,
                                                 ca, cfg, start, leaf_end, now, keygen, changes)
        for client in clients_for(cfg, host):
            base = f"hosts/{host.name}/clients/{client.file.removesuffix('.conf')}"
            # Kubeconfig client certificates carry no explicit NotBefore in kubeadm: it is the CA's.
            clients[(host.name, client.file)] = _leaf(
                stored, base, client.file, host.name, client.cn_for(host), client.orgs, (CLIENT_AUTH,), None,
                cas["ca"], cfg, cas["ca"].cert.not_valid_before_utc, leaf_end, now, keygen, changes)
    return ClusterPki(cas, sa_key, leaves, clients), changes


def _leaf(stored: Mapping[str, bytes], base: str, item: str, scope: str, cn: str, orgs: tuple[str, ...],
          usages: tuple[x509.ObjectIdentifier, ...], alt: AltNames | None, ca: KeyPair, cfg: ClusterConfig,
          start: datetime, end: datetime, now: datetime, keygen: KeyGen, changes: list[PkiChange]) -> KeyPair:
    reason = "missing"
    try:
        pair = _load_pair(stored, base, f"{scope} {item}")
    except StateError as exc:
        pair, reason = None, exc.message  # a broken leaf is simply re-issued; only CAs are precious
    if pair is not None:
        problem = leaf_problem(pair.cert, pair.key, ca.cert, cn, orgs, usages, alt,
                               cfg.certificates.key_algorithm, now)
        if problem is None:
            changes.append(PkiChange(scope, item, "kept"))
            return pair
        reason = problem
    key = keygen(cfg.certificates.key_algorithm)
    cert = issue_leaf(cn, orgs, usages, alt, key, ca.cert, ca.key, start, end)
    changes.append(PkiChange(scope, item, "created" if reason == "missing" else "reissued", reason))
    return KeyPair(cert, key)
