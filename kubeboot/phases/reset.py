"""Phases of `kubeboot reset` on a node: what `kubeadm reset` does, plus the network rules it leaves to the user.

Each phase plans from facts (``HostFacts.kube_state`` counts what is left, ``files`` what kubeboot placed), so a
reset host plans nothing and a second reset says so. The firewall phase sets every default policy to ACCEPT
before it flushes, so an SSH session through a DROP policy is never cut. Packages, containerd with its
configuration and images, and kernel settings stay: a later `up` reuses them.
"""

from __future__ import annotations

import shlex

from kubeboot.config.model import Host
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.plan.actions import Action, RunCommand
from kubeboot.plan.facts import RESET_DIRS

KUBELET_FILES = ("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "/etc/bash_completion.d/kubectl")

# Kill every task, then delete every container of containerd's CRI namespace (what `crictl rmp -af` does without
# crictl, which nodes need not have), then the pods' network namespaces. Each ctr call is bounded (`kill -a`, which
# signals through the cgroup, hangs on some hosts: the task's init is killed instead, its PID namespace goes with it).
REMOVE_CONTAINERS = (
    "ctr() { timeout 30 /usr/bin/env ctr -n k8s.io \"$@\"; }; "
    "for c in $(ctr tasks ls -q); do ctr tasks kill -s SIGKILL $c >/dev/null 2>&1; done; "
    "for c in $(ctr containers ls -q); do ctr tasks rm -f $c >/dev/null 2>&1; ctr containers rm $c >/dev/null || "
    "{ ctr tasks rm -f $c >/dev/null 2>&1; ctr containers rm $c; }; done; "
    "for n in $(ls /run/netns 2>/dev/null | grep '^cni-'); do ip netns delete $n; done; "
    "test -z \"$(ctr containers ls -q)\""
)
UNMOUNT = "grep ' /var/lib/kubelet/' /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l"
# ACCEPT first: flushing a table whose INPUT policy is DROP would otherwise cut this very SSH session.
FLUSH_RULES = (
    "for t in iptables ip6tables iptables-legacy ip6tables-legacy iptables-nft ip6tables-nft; do "
    "command -v $t >/dev/null 2>&1 || continue; "
    "for c in INPUT FORWARD OUTPUT; do $t -P $c ACCEPT 2>/dev/null; done; "
    "for tab in filter nat mangle raw; do $t -t $tab -F 2>/dev/null; $t -t $tab -X 2>/dev/null; done; done; "
    "if command -v ipvsadm >/dev/null 2>&1; then ipvsadm --clear; fi; "
    "for l in $(ls /sys/class/net | grep -E '^(cni0|flannel\\.|kube-ipvs0)'); do ip link delete $l; done; true"
)


def _count(ctx: PhaseContext, host: Host, what: str) -> int:
    return ctx.facts[host.name].kube_state.get(what, 0)


def plan_stop_kubelet(ctx: PhaseContext, host: Host) -> list[Action]:
    if ctx.facts[host.name].services.get("kubelet") in ("active", "activating", "reloading"):
        return [RunCommand("systemctl stop kubelet", "the kubelet would restart what is removed next")]
    return []


def plan_containers(ctx: PhaseContext, host: Host) -> list[Action]:
    n = _count(ctx, host, "containers") + _count(ctx, host, "netns")
    if n == 0:
        return []
    return [RunCommand(REMOVE_CONTAINERS, f"{_count(ctx, host, 'containers')} Kubernetes container(s) and "
                                          f"{_count(ctx, host, 'netns')} pod network namespace(s)",
                       display="remove every container in containerd's k8s.io namespace and the pods' netns",
                       timeout=300.0)]


def plan_files(ctx: PhaseContext, host: Host) -> list[Action]:
    f = ctx.facts[host.name]
    out: list[Action] = []
    if _count(ctx, host, "mounts"):
        out.append(RunCommand(UNMOUNT, f"{_count(ctx, host, 'mounts')} volume mount(s) under /var/lib/kubelet",
                              display="unmount the pods' volumes under /var/lib/kubelet"))
    kubeconfigs = sorted(p for p in f.files if p.endswith("/.kube/config"))
    extra = [p for p in (*KUBELET_FILES, *kubeconfigs) if p in f.files]
    if _count(ctx, host, "state") or extra:
        # directories are emptied, not removed (a mount point or a package's directory survives)
        dirs = " ".join(f"{shlex.quote(d)}/* {shlex.quote(d)}/.[!.]*" for d in RESET_DIRS)
        files = " ".join(shlex.quote(p) for p in extra)
        out.append(RunCommand(f"rm -rf {dirs} {files}; systemctl daemon-reload 2>/dev/null; true",
                              "the cluster's state" + (f" and {len(extra)} file(s) kubeboot placed" if extra else ""),
                              display=f"empty {', '.join(RESET_DIRS)}" + (f"; remove {', '.join(extra)}" if extra
                                                                        else "")))
    return out


def plan_network(ctx: PhaseContext, host: Host) -> list[Action]:
    rules, links = _count(ctx, host, "rules"), _count(ctx, host, "links")
    if rules == 0 and links == 0:
        return []
    return [RunCommand(FLUSH_RULES, f"{rules} Kubernetes/CNI chain(s), {links} CNI interface(s)",
                       display="set iptables/ip6tables policies to ACCEPT, then flush every table; clear IPVS; "
                               "delete cni0/flannel.*/kube-ipvs0")]


NODE_RESET: tuple[Phase, ...] = (
    Phase("stop-kubelet", "Stop the kubelet (it would restart what is removed next)", plan_stop_kubelet),
    Phase("containers", "Kill and delete every Kubernetes container and pod network namespace",
          plan_containers),
    Phase("files", "Unmount pod volumes; empty /etc/kubernetes, /var/lib/kubelet, /var/lib/etcd and the CNI's "
                   "directories; remove kubeboot's kubelet drop-in, kubectl completion and kubeconfigs",
          plan_files),
    Phase("network", "Default policies to ACCEPT, then flush iptables/ip6tables and IPVS; delete CNI interfaces",
          plan_network),
)
