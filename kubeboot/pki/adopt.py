"""Pure core: adopting a cluster that kubeadm (or an earlier kubeboot whose state directory is gone) built.

What a control plane holds under /etc/kubernetes becomes state-directory entries (kubeboot.pki.bundle's layout):
the three CAs and the service-account key pair from any control plane, and each control plane's own leaf
certificates and kubeconfig client certificates. plan_pki then keeps every one that is still valid for the
inventory, so nothing is re-issued where the inventory matches what is on the hosts.

Refused: control planes (or nodes) that hold different cluster CAs, a cluster CA without its key (an external CA,
which kubeboot does not manage), and a key that does not belong to its certificate.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kubeboot.config.model import ClusterConfig, Host
from kubeboot.errors import AdoptError, ForeignClusterError
from kubeboot.pki.bundle import CLIENTS, clients_for
from kubeboot.pki.certs import CAS, LEAVES
from kubeboot.pki.keys import load_private_key, same_public_key

PKI = "/etc/kubernetes/pki"
K8S = "/etc/kubernetes"
CA_CERT = f"{PKI}/ca.crt"


def control_plane_paths() -> tuple[str, ...]:
    """Every file adoption reads on a control plane (private keys included: they stay in the state directory)."""
    out = [f"{PKI}/{spec.base}.{ext}" for spec in CAS for ext in ("crt", "key")]
    out += [f"{PKI}/sa.key", f"{PKI}/sa.pub"]
    out += [f"{PKI}/{leaf.base}.{ext}" for leaf in LEAVES for ext in ("crt", "key")]
    out += [f"{K8S}/{c.file}" for c in CLIENTS]
    return tuple(out)


def fingerprint(pem: bytes) -> str:
    """A CA certificate's short identity for messages: sha256 of its DER, as kubeadm's discovery hash does of the
    public key (close enough to tell two CAs apart at a glance)."""
    try:
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError:
        der = pem
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True)
class Adopted:
    entries: dict[str, bytes]  # state-relative path -> bytes
    source: str  # the control plane the CAs and sa key came from
    per_host: dict[str, int]  # host -> leaf and client certificates taken from it


def check_same_ca(state_ca: bytes | None, ca_by_host: Mapping[str, bytes | None]) -> None:
    """Every host that holds /etc/kubernetes/pki/ca.crt holds the same one, and it is the state directory's when
    the state directory has one: otherwise kubeboot would write another cluster's CA over it."""
    held = {name: pem for name, pem in ca_by_host.items() if pem is not None}
    if state_ca is not None:
        foreign = sorted(name for name, pem in held.items() if pem.strip() != state_ca.strip())
        if foreign:
            raise ForeignClusterError(
                f"{', '.join(foreign)}: {CA_CERT} is another cluster's CA ({fingerprint(held[foreign[0]])}, the "
                f"state directory's is {fingerprint(state_ca)}); nothing was changed",
                hint="use the state directory of that cluster (--state-dir), or reset those hosts "
                     "(kubeboot reset --hosts ...) to make them part of this one")
        return
    distinct = {pem.strip() for pem in held.values()}
    if len(distinct) > 1:
        groups = ", ".join(f"{name} {fingerprint(pem)}" for name, pem in sorted(held.items()))
        raise ForeignClusterError(f"the hosts hold different cluster CAs ({groups}): they are not one cluster; "
                                  f"nothing was changed",
                                  hint="remove the hosts of the other cluster from the inventory, or reset them")


def kubeconfig_client(data: bytes) -> tuple[bytes, bytes] | None:
    """The embedded client certificate and key of a kubeconfig's current user (None when it references files, e.g.
    a kubelet.conf pointing at the kubelet's rotated certificate)."""
    try:
        doc = yaml.safe_load(data)
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        crt, key = user.get("client-certificate-data"), user.get("client-key-data")
        if not crt or not key:
            return None
        return base64.b64decode(crt, validate=True), base64.b64decode(key, validate=True)
    except (yaml.YAMLError, KeyError, TypeError, StopIteration, ValueError):
        return None


def _pair_ok(crt: bytes, key: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(crt)
        return same_public_key(cert.public_key(), load_private_key(key).public_key())  # type: ignore[arg-type]
    except ValueError:
        return False


def node_material(read: Callable[[str], bytes | None], cfg: ClusterConfig, host: Host,
                  cas: bool = True) -> dict[str, bytes]:
    """A control plane's key material (read(absolute path) -> bytes, None when absent) in the state layout plan_pki
    reuses from: the CAs and the sa key pair (unless cas=False), the host's leaf certificates and the client
    certificates embedded in its kubeconfigs. (A leaf whose key does not fit is re-issued by plan_pki.)"""
    out: dict[str, bytes] = {}

    def take(key: str, path: str) -> None:
        data = read(path)
        if data is not None:
            out[key] = data

    if cas:
        for spec in CAS:
            for ext in ("crt", "key"):
                take(f"pki/{spec.base}.{ext}", f"{PKI}/{spec.base}.{ext}")
        for name in ("sa.key", "sa.pub"):
            take(f"pki/{name}", f"{PKI}/{name}")
    for leaf in LEAVES:
        for ext in ("crt", "key"):
            take(f"hosts/{host.name}/pki/{leaf.base}.{ext}", f"{PKI}/{leaf.base}.{ext}")
    for client in clients_for(cfg, host):
        data = read(f"{K8S}/{client.file}")
        pair = kubeconfig_client(data) if data is not None else None
        if pair is not None:
            stem = client.file.removesuffix(".conf")
            out[f"hosts/{host.name}/clients/{stem}.crt"], out[f"hosts/{host.name}/clients/{stem}.key"] = pair
    return out


def adopt(cfg: ClusterConfig, files: Mapping[str, Mapping[str, bytes | None]]) -> Adopted | None:
    """State entries from the control planes' files (`files[host][path]`, None for absent), or None when no
    control plane holds a cluster CA (a new cluster). The first control plane (inventory order) that holds the CA
    key provides the CAs and the sa key pair; each control plane provides its own leaves and client certificates."""
    cps: Sequence[Host] = [h for h in cfg.control_planes if files.get(h.name, {}).get(CA_CERT) is not None]
    if not cps:
        return None
    check_same_ca(None, {h.name: files[h.name].get(CA_CERT) for h in cps})
    source = next((h for h in cps if files[h.name].get(f"{PKI}/ca.key") is not None), None)
    if source is None:
        raise AdoptError(f"{', '.join(h.name for h in cps)}: {CA_CERT} without {PKI}/ca.key: an external CA, which "
                         f"kubeboot does not manage; nothing was changed",
                         hint="kubeboot needs the cluster CA's key to issue certificates; adopt a cluster whose "
                              "control planes hold it (kubeadm's default)")
    src = files[source.name]
    for spec in CAS:
        crt, key = src.get(f"{PKI}/{spec.base}.crt"), src.get(f"{PKI}/{spec.base}.key")
        if crt is None or key is None or not _pair_ok(crt, key):
            raise AdoptError(f"{source.name}: {PKI}/{spec.base}.crt/.key missing or not a pair; nothing was changed",
                             hint=f"restore {PKI}/{spec.base}.* on {source.name} from a backup")
    if src.get(f"{PKI}/sa.key") is None:
        raise AdoptError(f"{source.name}: {PKI}/sa.key is missing; nothing was changed",
                         hint="a new service-account key would invalidate every token: restore it from a backup")
    entries: dict[str, bytes] = {}
    per_host: dict[str, int] = {}
    for h in cps:
        got = node_material(files[h.name].get, cfg, h, cas=h is source)
        per_host[h.name] = sum(1 for k in got if k.startswith("hosts/") and k.endswith(".crt"))
        entries.update(got)
    return Adopted(entries, source.name, per_host)
