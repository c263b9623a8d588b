"""Pure core: the nginx stream (layer-4) load balancer in front of the API servers."""

from __future__ import annotations

from collections.abc import Sequence

from kubeboot.config.model import APISERVER_BIND_PORT, ClusterConfig, Host, LoadBalancerMode
from kubeboot.plan.artifact import Artifact
from kubeboot.render.templates import render_template

NGINX_CONF = "/etc/nginx/nginx.conf"


def _backends(cfg: ClusterConfig, names: Sequence[str] | None) -> list[str]:
    out = []
    for h in cfg.control_planes:
        if names is not None and h.name not in names:
            continue
        ip = str(h.address)
        out.append(f"[{ip}]:{APISERVER_BIND_PORT}" if ":" in ip else f"{ip}:{APISERVER_BIND_PORT}")
    return out


def nginx_conf(cfg: ClusterConfig, host: Host, backends: Sequence[str] | None = None) -> Artifact | None:
    """external-nginx: every load-balancer host listens on the endpoint port on all addresses.
    node-local: every node without an API server listens on 127.0.0.1:6443 only, so each node reaches the API
    through its own proxy (running as a host service, so it exists before the kubelet does).
    `backends` names the control planes to proxy to (kubeboot up: those whose API server is ready; the first
    one alone before init); None: every control plane of the inventory."""
    port = cfg.control_plane_endpoint.port
    if cfg.load_balancer_mode is LoadBalancerMode.EXTERNAL_NGINX and host.is_load_balancer:
        listens = [str(port), f"[::]:{port}"] if host.address.version == 6 else [str(port)]
    elif cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL and host.is_node and not host.is_control_plane:
        listens = [f"127.0.0.1:{port}"]
    else:
        return None
    content = render_template("nginx-stream.conf.j2", mode=cfg.load_balancer_mode.value, cluster=cfg.name,
                              backends=_backends(cfg, backends), listens=listens)
    return Artifact(NGINX_CONF, content, 0o644)
