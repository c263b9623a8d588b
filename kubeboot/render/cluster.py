"""Pure core: the complete desired file set of every host, from config + PKI + bootstrap token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubeboot.config.model import APISERVER_BIND_PORT, ClusterConfig, Host
from kubeboot.pki.bundle import CLIENTS, ClusterPki, clients_for
from kubeboot.pki.certs import CAS, LEAVES
from kubeboot.pki.keys import private_key_pem, public_key_pem
from kubeboot.pki.tokens import BootstrapToken
from kubeboot.plan.artifact import Artifact
from kubeboot.render import kubeconfig, manifests
from kubeboot.render.lb import nginx_conf
from kubeboot.render.node import node_artifacts

K8S = "/etc/kubernetes"
PKI = f"{K8S}/pki"
MANIFESTS = f"{K8S}/manifests"


@dataclass(frozen=True)
class RenderHints:
    """The few host facts rendering depends on (from facts gathered over SSH; defaults assume Debian/Ubuntu)."""

    ca_dirs: Sequence[str] = manifests.DEFAULT_CA_DIRS
    lb_backends: Sequence[str] | None = None  # control planes the load balancer proxies to (None: all)
    systemd_resolved: bool = False  # the systemd-resolved service is active (the kubelet's resolvConf follows)
    kubelet_client_rotated: bool = False  # the kubelet keeps its client certificate in KUBELET_CLIENT_PEM
    package_dropin: bool = False  # the kubeadm package's kubelet drop-in is there and kubeboot's is not


KUBELET_CLIENT_PEM = "/var/lib/kubelet/pki/kubelet-client-current.pem"


def local_api_url(host: Host) -> str:
    ip = str(host.address)
    return f"https://[{ip}]:{APISERVER_BIND_PORT}" if ":" in ip else f"https://{ip}:{APISERVER_BIND_PORT}"


def _kubeconfig_server(cfg: ClusterConfig, host: Host, file: str) -> str:
    """admin/super-admin: the endpoint. controller-manager, scheduler and kubelet: this node's own API server
    (kubeadm's init kubeconfig phase clears the endpoint for kubelet.conf; joined control planes bootstrap
    against their local API server too), so a control plane's components never depend on the load balancer."""
    if file in ("controller-manager.conf", "scheduler.conf", "kubelet.conf"):
        return local_api_url(host)
    return cfg.control_plane_endpoint.url()


def kubelet_kubeconfig(cfg: ClusterConfig, pki: ClusterPki, host: Host, rotated: bool) -> Artifact:
    """The first control plane's kubelet.conf. As `kubeadm init` writes it: the node's client certificate embedded;
    once the kubelet keeps a rotated one (KUBELET_CLIENT_PEM exists), as kubeadm's kubelet-finalize phase rewrites
    it: pointing at that file, so the certificate the kubelet renews is the one it uses."""
    server, ca_pem = _kubeconfig_server(cfg, host, "kubelet.conf"), pki.cas["ca"].cert_pem()
    user = next(c for c in CLIENTS if c.file == "kubelet.conf").cn_for(host)
    if rotated:
        content = kubeconfig.file_cert_kubeconfig(cfg.cluster_name, server, ca_pem, user, KUBELET_CLIENT_PEM)
    else:
        pair = pki.clients[(host.name, "kubelet.conf")]
        content = kubeconfig.client_cert_kubeconfig(cfg.cluster_name, server, ca_pem, user, pair.cert_pem(),
                                                    pair.key_pem())
    return Artifact(f"{K8S}/kubelet.conf", content, 0o600, secret=True)


def _control_plane_files(cfg: ClusterConfig, pki: ClusterPki, host: Host, facts: RenderHints) -> list[Artifact]:
    out: list[Artifact] = []
    for spec in CAS:
        pair = pki.cas[spec.id]
        out.append(Artifact(f"{PKI}/{spec.base}.crt", pair.cert_pem(), 0o644))
        out.append(Artifact(f"{PKI}/{spec.base}.key", pair.key_pem(), 0o600, secret=True))
    out.append(Artifact(f"{PKI}/sa.key", private_key_pem(pki.sa_key), 0o600, secret=True))
    out.append(Artifact(f"{PKI}/sa.pub", public_key_pem(pki.sa_key.public_key()), 0o600))
    for leaf in LEAVES:
        pair = pki.leaves[(host.name, leaf.id)]
        out.append(Artifact(f"{PKI}/{leaf.base}.crt", pair.cert_pem(), 0o644))
        out.append(Artifact(f"{PKI}/{leaf.base}.key", pair.key_pem(), 0o600, secret=True))
    for client in clients_for(cfg, host):
        if client.file == "kubelet.conf":
            out.append(kubelet_kubeconfig(cfg, pki, host, facts.kubelet_client_rotated))
            continue
        pair = pki.clients[(host.name, client.file)]
        content = kubeconfig.client_cert_kubeconfig(cfg.cluster_name, _kubeconfig_server(cfg, host, client.file),
                                                    pki.cas["ca"].cert_pem(), client.cn_for(host), pair.cert_pem(),
                                                    pair.key_pem())
        out.append(Artifact(f"{K8S}/{client.file}", content, 0o600, secret=True))
    pods = {
        "etcd": manifests.etcd(cfg, host),
        "kube-apiserver": manifests.apiserver(cfg, host, facts.ca_dirs),
        "kube-controller-manager": manifests.controller_manager(cfg, host, facts.ca_dirs),
        "kube-scheduler": manifests.scheduler(cfg, host),
    }
    for name, pod in pods.items():
        out.append(Artifact(f"{MANIFESTS}/{name}.yaml", manifests.dump(pod), 0o600))
    return out


def _worker_files(cfg: ClusterConfig, pki: ClusterPki, token: BootstrapToken) -> list[Artifact]:
    """What a worker needs before TLS bootstrap: the cluster CA certificate (never a CA key) and a bootstrap
    kubeconfig whose token lets the kubelet request its own client certificate."""
    ca_pem = pki.cas["ca"].cert_pem()
    user = "tls-bootstrap-token-user"
    content = kubeconfig.token_kubeconfig(cfg.cluster_name, cfg.control_plane_endpoint.url(), ca_pem, user,
                                          str(token))
    return [
        Artifact(f"{PKI}/ca.crt", ca_pem, 0o644),
        Artifact(f"{K8S}/bootstrap-kubelet.conf", content, 0o600, secret=True),
    ]


def render_host(cfg: ClusterConfig, pki: ClusterPki, token: BootstrapToken, host: Host,
                facts: RenderHints | None = None) -> tuple[Artifact, ...]:
    facts = facts or RenderHints()
    out: list[Artifact] = []
    if host.is_control_plane:
        out += _control_plane_files(cfg, pki, host, facts)
    elif host.is_worker:
        out += _worker_files(cfg, pki, token)
    if host.is_node:
        out += node_artifacts(cfg, host, facts.systemd_resolved, facts.package_dropin)
    lb = nginx_conf(cfg, host, facts.lb_backends)
    if lb is not None:
        out.append(lb)
    paths = [a.path for a in out]
    if len(paths) != len(set(paths)):
        raise AssertionError(f"duplicate artifact paths for {host.name}")
    return tuple(sorted(out, key=lambda a: a.path))


def render_cluster(cfg: ClusterConfig, pki: ClusterPki, token: BootstrapToken,
                   facts: Mapping[str, RenderHints] | None = None) -> dict[str, tuple[Artifact, ...]]:
    """Every host's artifacts, keyed by host name, in inventory order."""
    facts = facts or {}
    return {h.name: render_host(cfg, pki, token, h, facts.get(h.name)) for h in cfg.hosts}
