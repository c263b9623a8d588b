"""Shell: `kubeboot kubeconfig` — the cluster's admin kubeconfig on the workstation, from the state directory
`up` keeps (the first control plane's admin.conf: group kubeadm:cluster-admins, like kubeadm's)."""

from __future__ import annotations

from pathlib import Path

from kubeboot import state
from kubeboot.config.model import LoadBalancerMode
from kubeboot.errors import StateError
from kubeboot.offline import load_inventory, render
from kubeboot.render.cluster import local_api_url


def admin_kubeconfig(inventory: Path, state_dir: Path | None) -> bytes:
    """admin.conf aimed at the endpoint (node-local mode: at the first control plane, as the endpoint is each
    node's own loopback). Refuses when there is no state directory: there is no cluster to reach yet."""
    import yaml

    cfg = load_inventory(inventory)
    root = state_dir or state.default_state_dir(inventory, cfg.name)
    if not (root / "pki" / "ca.key").is_file():
        raise StateError(f"no cluster state in {root} (no pki/ca.key)",
                         hint="run `kubeboot up -i INVENTORY` first, or pass the --state-dir it used")
    rendered = render(inventory, root)
    first = cfg.first_control_plane
    conf = next(a for a in rendered.hosts[first.name] if a.path == "/etc/kubernetes/admin.conf").content
    if cfg.load_balancer_mode is not LoadBalancerMode.NODE_LOCAL:
        return conf
    doc = yaml.safe_load(conf)
    for c in doc["clusters"]:
        c["cluster"]["server"] = local_api_url(first)
    return yaml.safe_dump(doc, sort_keys=False).encode()


def write_kubeconfig(path: Path, content: bytes) -> None:
    """0600, atomically (it holds a private key)."""
    state.write_atomic(path.expanduser(), content, 0o600)
