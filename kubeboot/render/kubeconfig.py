"""Pure core: kubeconfig files in kubeadm's shape (util/kubeconfig: CreateWithCerts / CreateWithToken).

One cluster named clusterName with the CA embedded, one user named after the client CN, one context
`<user>@<cluster>` that is current. Keys are ordered as client-go writes them.
"""

from __future__ import annotations

import base64

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(cluster: str, server: str, ca_pem: bytes, user: str, credentials: dict[str, str]) -> bytes:
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "clusters": [{"cluster": {"certificate-authority-data": _b64(ca_pem), "server": server}, "name": cluster}],
        "contexts": [{"context": {"cluster": cluster, "user": user}, "name": context}],
        "current-context": context,
        "kind": "Config",
        "users": [{"name": user, "user": credentials}],
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).encode()


def client_cert_kubeconfig(cluster: str, server: str, ca_pem: bytes, user: str, cert_pem: bytes,
                           key_pem: bytes) -> bytes:
    return _kubeconfig(cluster, server, ca_pem, user,
                       {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)})


def file_cert_kubeconfig(cluster: str, server: str, ca_pem: bytes, user: str, pem_path: str) -> bytes:
    """A kubeconfig whose client certificate and key are one file on the node: kubelet.conf once kubeadm's
    kubelet-finalize phase pointed it at the kubelet's rotated kubelet-client-current.pem."""
    return _kubeconfig(cluster, server, ca_pem, user, {"client-certificate": pem_path, "client-key": pem_path})


def token_kubeconfig(cluster: str, server: str, ca_pem: bytes, user: str, token: str) -> bytes:
    """bootstrap-kubelet.conf: the bootstrap token authenticates the kubelet's first CSR."""
    return _kubeconfig(cluster, server, ca_pem, user, {"token": token})
