"""Shell: the phases of `kubeboot init` that talk to the API server (kubeadm's upload-config, upload-certs,
mark-control-plane, bootstrap-token), the token commands, and the join command lines init prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from cryptography import x509
from kubernetes import client as k8s

from kubeboot.config.model import ClusterConfig
from kubeboot.errors import ConfigError, Problem
from kubeboot.kube import client as kc
from kubeboot.kube import objects
from kubeboot.pki.protocol import (
    KUBEADM_CERTS_FILES,
    ca_cert_hash,
    encrypt_shared_files,
    new_certificate_key,
    parse_certificate_key,
)
from kubeboot.pki.tokens import BootstrapToken, generate_token
from kubeboot.render.node import kubelet_config

ADMIN_CONF = Path("/etc/kubernetes/admin.conf")
SUPER_ADMIN_CONF = Path("/etc/kubernetes/super-admin.conf")
CERT_DIR = Path("/etc/kubernetes/pki")


def parse_ttl(text: str) -> timedelta:
    """kubeadm-style durations: 24h, 90m, 2h30m, 0 (never expires)."""
    import re

    if text.strip() in ("0", "0s"):
        return timedelta(0)
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not m or not any(m.groups()):
        raise ConfigError([Problem("--ttl", f"not a duration like 24h or 90m: {text!r}")], source="flags")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s)


def kubeconfig_server_and_ca(path: Path) -> tuple[str, bytes]:
    import base64

    doc = yaml.safe_load(path.read_text())
    cluster = doc["clusters"][0]["cluster"]
    return str(cluster["server"]), base64.b64decode(cluster["certificate-authority-data"])


@dataclass(frozen=True)
class JoinCommands:
    worker: str
    control_plane: str | None


def join_commands(endpoint: str, token: BootstrapToken, ca_pem: bytes, certificate_key: str | None) -> JoinCommands:
    pins = " ".join(f"--discovery-token-ca-cert-hash {ca_cert_hash(c)}" for c in x509.load_pem_x509_certificates(ca_pem))
    worker = f"kubeboot join {endpoint} --token {token} {pins}"
    cp = f"{worker} --control-plane --certificate-key {certificate_key}" if certificate_key else None
    return JoinCommands(worker, cp)


def bootstrap_token_phase(api: k8s.ApiClient, cfg: ClusterConfig | None, server: str, ca_pem: bytes,
                          tokens: Sequence[BootstrapToken]) -> dict[str, str]:
    """Tokens, node-bootstrap RBAC, cluster-info and its anonymous-read RBAC. Returns object -> outcome."""
    objs = kc.Objects(api)
    out: dict[str, str] = {}
    for t in tokens:
        out[f"secret/bootstrap-token-{t.id}"] = objs.apply(
            objects.token_secret(t, description=objects.INIT_TOKEN_DESCRIPTION))
    for o in objects.bootstrap_rbac(cfg):
        out[f"{o['kind'].lower()}/{o['metadata']['name']}"] = objs.apply(o)
    current = objs.get(objects.cluster_info(server, ca_pem))
    if current is None:  # kubeadm creates it only if absent: joined signatures live in the same ConfigMap
        out["configmap/cluster-info"] = objs.apply(objects.cluster_info(server, ca_pem))
    else:
        out["configmap/cluster-info"] = "unchanged"
    return out


def upload_config_phase(api: k8s.ApiClient, cfg: ClusterConfig) -> dict[str, str]:
    objs = kc.Objects(api)
    return {"configmap/kubeadm-config": objs.apply(objects.kubeadm_config(cfg)),
            "configmap/kubelet-config": objs.apply(objects.kubelet_config_map(kubelet_config(cfg)))}


def read_shared_files(cert_dir: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for rel in KUBEADM_CERTS_FILES.values():
        p = cert_dir / rel
        if p.exists():
            out[rel] = p.read_bytes()
    missing = [r for r in ("ca.crt", "ca.key", "sa.key", "sa.pub") if r not in out]
    if missing:
        raise ConfigError([Problem(str(cert_dir), f"missing {', '.join(missing)}: not a control plane's PKI")],
                          source="--cert-dir")
    return out


def upload_certs_phase(api: k8s.ApiClient, cert_dir: Path, certificate_key: str | None,
                       now: datetime | None = None) -> str:
    """Encrypt the shared CA/SA files with the certificate key (new one if not given) into kubeadm-certs,
    owned by a fresh 2-hour proxy token. Returns the key (the caller prints it; nothing else may)."""
    return upload_shared_files(api, read_shared_files(cert_dir), certificate_key, now)


def upload_shared_files(api: k8s.ApiClient, files: dict[str, bytes], certificate_key: str | None = None,
                        now: datetime | None = None) -> str:
    """kubeadm-certs from the shared files given (relative names as in /etc/kubernetes/pki), encrypted with
    the certificate key (a new one unless given); returns the key."""
    key_hex = certificate_key or new_certificate_key()
    try:
        key = parse_certificate_key(key_hex)
    except ValueError as exc:
        raise ConfigError([Problem("--certificate-key", str(exc))], source="flags") from None
    data = encrypt_shared_files(key, files)
    proxy = generate_token(now or datetime.now(timezone.utc), objects.CERTS_TOKEN_TTL)
    kc.upload_certs(api, data, proxy)
    return key_hex




CONTROL_PLANE_LABELS = {"node-role.kubernetes.io/control-plane": "",
                        "node.kubernetes.io/exclude-from-external-load-balancers": ""}
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def control_plane_patch(node: k8s.V1Node) -> dict[str, object]:
    """The patch that labels and taints a Node as a control plane; empty when it already is one."""
    labels = dict(node.metadata.labels or {}) if node.metadata else {}
    taints = list(node.spec.taints or []) if node.spec else []
    patch: dict[str, object] = {}
    if any(labels.get(k) != v for k, v in CONTROL_PLANE_LABELS.items()):
        patch["metadata"] = {"labels": CONTROL_PLANE_LABELS}
    if not any(t.key == CONTROL_PLANE_TAINT and t.effect == "NoSchedule" for t in taints):
        existing = [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]
        patch["spec"] = {"taints": existing + [{"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}]}
    return patch


def mark_control_plane(api: k8s.ApiClient, name: str, wait: float = 60.0) -> str:
    """kubeadm mark-control-plane: label and taint the Node, waiting up to `wait` seconds for the kubelet to
    register it. Returns what happened; an unregistered Node is reported and left to the next run."""
    core = k8s.CoreV1Api(api)
    try:
        node = kc.retry(lambda: core.read_node(name), timeout=wait, interval=1.0,
                        retry_on=lambda e: getattr(e, "status", None) == 404)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) != 404:
            raise
        return "the Node is not registered yet; run again once the kubelet has registered it to label and taint it"
    patch = control_plane_patch(node)
    if not patch:
        return "already labelled and tainted"
    core.patch_node(name, patch)
    return "labelled and tainted"
