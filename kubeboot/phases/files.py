"""Phase `files`: place each host's rendered files (only those whose digest, mode or owner differ) and
restart a service only when one of its inputs changed."""

from __future__ import annotations

from kubeboot.config.model import Host
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.plan.actions import Action, RunCommand, WriteFile, file_actions

# what the kubelet reads only when it starts (kubelet.conf too: kubelet-finalize's rewrite needs a restart)
KUBELET_INPUTS = ("/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env",
                  "/var/lib/kubelet/instance-config.yaml", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
                  "/etc/kubernetes/kubelet.conf")
DROP_IN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
NGINX = "/etc/nginx/nginx.conf"
CONTAINERD = "/etc/containerd/config.toml"


def plan_files(ctx: PhaseContext, host: Host) -> list[Action]:
    f = ctx.facts[host.name]
    # nginx.conf belongs to the load-balancer phase
    writes = file_actions(tuple(a for a in ctx.artifacts.get(host.name, ()) if a.path != NGINX), f)
    out: list[Action] = list(writes)
    changed = {w.artifact.path for w in writes if "content changed" in w.reason or w.reason == "new"}
    if not f.systemd:
        return out  # preflight reported it (Systemd); files are placed, services are left alone
    if DROP_IN in changed:
        out.append(RunCommand("systemctl daemon-reload", f"{DROP_IN} changed"))
    kubelet_changed = sorted(changed & set(KUBELET_INPUTS))
    kubelet_active = f.services.get("kubelet") == "active"
    if kubelet_changed and kubelet_active:
        out.append(RunCommand("systemctl restart kubelet", f"{', '.join(kubelet_changed)} changed"))
    elif not kubelet_active and host.is_node and "kubelet" in f.binaries and _has_kubelet_kubeconfig(ctx, host):
        # kubeadm's kubelet-start: the kubelet (enabled by the runtime phase) runs the static pods, or joins with
        # its bootstrap kubeconfig. restart, not start: a unit crash-looping without its config is "activating".
        out.append(RunCommand("systemctl restart kubelet", "the kubelet is not running"))
    if CONTAINERD in changed and f.services.get("containerd") == "active":
        out.append(RunCommand("systemctl restart containerd", f"{CONTAINERD} changed"))
    return out


def _has_kubelet_kubeconfig(ctx: PhaseContext, host: Host) -> bool:
    paths = {a.path for a in ctx.artifacts.get(host.name, ())}
    return bool(paths & {"/etc/kubernetes/kubelet.conf", "/etc/kubernetes/bootstrap-kubelet.conf"})


def written_paths(actions: list[Action]) -> list[str]:
    return [a.artifact.path for a in actions if isinstance(a, WriteFile)]


FILES = Phase("files", "Place every rendered file (PKI, kubeconfigs, manifests, kubelet, containerd, nginx)",
              plan_files)
