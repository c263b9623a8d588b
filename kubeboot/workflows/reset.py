"""Shell: `kubeboot reset` — undo `up` on chosen hosts, the way `kubeadm reset` does, without risking the rest.

Read RESET in order: take the hosts' API servers out of every load balancer first (no request is sent to a
server about to stop), leave etcd while the member still runs (refused when the remaining members would lose
quorum, unless --force), then on each host stop the kubelet, remove the containers, the cluster's files and the
network rules. A plan is printed first; the caller confirms before anything changes.
"""

from __future__ import annotations

import time
from typing import Any
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client as k8s

from kubeboot import output
from kubeboot.config.model import ClusterConfig, Host, Role
from kubeboot.errors import ConfigError, HostConnectionError, Problem, QuorumRiskError, WaitTimeoutError
from kubeboot.etcdapi import Member
from kubeboot.offline import RenderResult, render
from kubeboot.phases.base import Phase, RunOptions
from kubeboot.phases.reset import KUBELET_FILES, NODE_RESET
from kubeboot.render import manifests
from kubeboot.render.lb import nginx_conf
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog
from kubeboot.workflows.session import Session, ready_control_planes

NODE_ROLES = frozenset({Role.CONTROL_PLANE, Role.WORKER})


@dataclass(frozen=True)
class ResetRequest:
    inventory: Path
    state_dir: Path | None
    hosts: Sequence[str] = ()  # empty: every host of the inventory
    force: bool = False  # leave etcd even when the rest would lose quorum
    dry_run: bool = False
    drain_timeout: float | None = None  # remove-node: drain first, within this many seconds
    unreachable: bool = False  # remove-node of a host that is gone: no drain, no connection to it, no host reset
    connect: ConnectOptions = ConnectOptions()


def chosen(cfg: ClusterConfig, names: Sequence[str]) -> list[Host]:
    if not names:
        return [h for h in cfg.hosts if h.is_node]
    known = {h.name: h for h in cfg.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError([Problem("--hosts", f"not in the inventory: {', '.join(unknown)} "
                                              f"(hosts: {', '.join(known)})")], source="flags")
    return [known[n] for n in names]


def quorum_after(members: Sequence[Member], healthy: Collection[int], leaving: Collection[int]) -> tuple[int, int]:
    """(healthy voters, voters) once `leaving` is gone: quorum holds when the first is more than half the second."""
    rest = [m for m in members if not m.learner and m.id not in leaving]
    return sum(1 for m in rest if m.id in healthy), len(rest)


def leave_etcd(s: Session, leaving: Sequence[Host], force: bool, remove: bool = True) -> None:
    """Remove the leaving control planes' etcd members (kubeadm reset's remove-etcd-member), one at a time, from
    a member that stays. Nothing to do when every control plane goes (the whole cluster is reset). With
    remove=False only the quorum check (the workflow's first step: a refusal must come before any change)."""
    s.start()
    cfg = s.cfg
    names = {h.name for h in leaving}
    staying = [h for h in cfg.control_planes if h.name not in names]
    if not any(h.is_control_plane for h in leaving) or not staying:
        s.done("no etcd member leaves" if staying else "every control plane is reset: no member to leave")
        return
    etcd = s.etcd(staying)
    try:
        members = etcd.members()
        by_url = {u: m for m in members for u in m.peer_urls}
        gone = {h.name: by_url[manifests.etcd_peer_url(h)] for h in leaving
                if h.is_control_plane and manifests.etcd_peer_url(h) in by_url}
        healthy = {by_url[manifests.etcd_peer_url(h)].id for h in cfg.control_planes
                   if manifests.etcd_peer_url(h) in by_url and etcd.health(manifests.etcd_client_url(h))[0]}
        ok, voters = quorum_after(members, healthy, {m.id for m in gone.values()})
        if gone and not ok > voters / 2 and not force:
            down = [h.name for h in staying if manifests.etcd_peer_url(h) in by_url
                    and by_url[manifests.etcd_peer_url(h)].id not in healthy]
            order = (f"safe order: start {', '.join(down)} again, or remove {'them' if len(down) > 1 else 'it'} "
                     f"first (`kubeboot remove-node {down[0]}`: a stopped member leaving keeps the quorum of the "
                     f"healthy ones), then {', '.join(gone)}" if down else
                     "remove control planes one at a time")
            raise QuorumRiskError(
                f"[leave-etcd] removing {', '.join(gone)} would leave {ok} healthy of {voters} voting etcd "
                f"member(s): no quorum, the cluster would stop accepting writes",
                hint=f"{order}; --force removes anyway (restore from a snapshot if the cluster breaks)")
        if not remove:
            s.done(f"{ok} healthy of {voters} voting etcd member(s) stay" if gone else "no etcd member leaves")
            return
        for name, m in gone.items():
            if s.dry_run:
                s.change(name, f"leave etcd (member {m.id:x}); {ok} healthy of {voters} voting members stay")
                continue
            etcd.remove(m.id)
            s.change(name, f"left etcd (member {m.id:x})")
    finally:
        etcd.close()
    s.done()


def take_out_of_load_balancers(s: Session, leaving: Collection[str]) -> None:
    """Re-render nginx wherever one runs with the leaving control planes dropped, before they stop: the
    staying control planes whose API server is ready (all staying ones when none is)."""
    s.start()
    cfg = s.cfg
    staying = [h for h in cfg.control_planes if h.name not in leaving]
    if leaving and staying:
        s.point_load_balancers(ready_control_planes(cfg, staying) or [h.name for h in staying])
    s.done()


def delete_nodes(s: Session, leaving: Sequence[Host]) -> None:
    """Delete the reset hosts' Node objects (their kubelets are stopped, so none re-registers): the names are
    free for a later `up` to join again. Skipped when every control plane was reset (no API is left)."""
    s.start()
    cfg = s.cfg
    names = {h.name for h in leaving}
    if not [h for h in cfg.control_planes if h.name not in names]:
        s.done("every control plane is reset: no API server is left")
        return
    core = k8s.CoreV1Api(s.admin())
    existing = {n.metadata.name for n in core.list_node(_request_timeout=10).items if n.metadata}
    for h in leaving:
        if h.is_node and h.name in existing:
            if not s.dry_run:
                core.delete_node(h.name, _request_timeout=10)
            s.change(h.name, "delete its Node object")
    s.done()


def _evictable(pod: k8s.V1Pod) -> bool:
    """kubectl drain's filter: not a mirror (static) pod, not a DaemonSet's, not finished."""
    meta = pod.metadata
    if meta is None or "kubernetes.io/config.mirror" in (meta.annotations or {}):
        return False
    if any(o.kind == "DaemonSet" for o in meta.owner_references or []):
        return False
    return pod.status is None or pod.status.phase not in ("Succeeded", "Failed")


def drain(s: Session, leaving: Sequence[Host], timeout: float) -> None:
    """kubectl drain, for each host (see drain_node)."""
    s.start()
    for h in leaving:
        if h.is_node:
            drain_node(s, h, timeout)
    s.done()


# on a Node kubeboot cordoned for an operation (value: which): that operation uncordons it when done, also after a
# run that stopped halfway; a Node cordoned by someone else stays cordoned
CORDONED_BY = "kubeboot.io/cordoned-by"


def drain_node(s: Session, h: Host, timeout: float, cordoned_by: str | None = None) -> None:
    """kubectl drain: cordon, then evict the node's pods through the Eviction API (PodDisruptionBudgets are
    respected: a refused eviction is retried until the timeout) and wait until they are gone. `cordoned_by` marks
    the Node (CORDONED_BY) when this drain cordons it, for uncordon_node."""
    core = k8s.CoreV1Api(s.admin())
    try:
        node = core.read_node(h.name, _request_timeout=10)
    except k8s.ApiException as exc:
        if exc.status == 404:
            s.info(h.name, "no Node object: nothing to drain")
            return
        raise
    pods = [p for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={h.name}",
                                                          _request_timeout=10).items if _evictable(p)]
    if s.dry_run:
        if not (node.spec and node.spec.unschedulable):
            s.change(h.name, "cordon")
        if pods:
            s.change(h.name, f"evict {len(pods)} pod(s) (PodDisruptionBudgets respected, {timeout:.0f}s)")
        return
    if not (node.spec and node.spec.unschedulable):
        patch: dict[str, Any] = {"spec": {"unschedulable": True}}
        if cordoned_by:
            patch["metadata"] = {"annotations": {CORDONED_BY: cordoned_by}}
        core.patch_node(h.name, patch, _request_timeout=10)
        s.change(h.name, "cordoned")
    deadline = time.monotonic() + timeout
    left = {(str(p.metadata.namespace), str(p.metadata.name)) for p in pods if p.metadata}
    while left:
        blocked = []
        for ns, name in sorted(left):
            body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=ns))
            try:
                core.create_namespaced_pod_eviction(name, ns, body, _request_timeout=10)
            except k8s.ApiException as exc:
                if exc.status == 404:
                    continue
                if exc.status != 429:  # 429: a PodDisruptionBudget refuses it for now
                    raise
                blocked.append(f"{ns}/{name}")
        # gone = deleted (kubectl drain waits for that too), not merely terminated
        present = {(str(p.metadata.namespace), str(p.metadata.name)) for p in core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={h.name}", _request_timeout=10).items if p.metadata}
        left &= present
        if not left:
            break
        if time.monotonic() > deadline:
            why = f" (PodDisruptionBudget: {', '.join(blocked)})" if blocked else ""
            raise WaitTimeoutError(
                f"{h.name} [drain]: {len(left)} pod(s) still on the node after {timeout:.0f}s{why}",
                hint="check the PodDisruptionBudgets (kubectl get pdb -A), then run again; nothing was removed")
        time.sleep(1.0)
    if pods:
        s.change(h.name, f"drained ({len(pods)} pod(s) evicted)")


def uncordon_node(s: Session, h: Host, cordoned_by: str) -> None:
    """Undo drain_node's cordon: only on a Node this operation cordoned (CORDONED_BY), which is unmarked too."""
    core = k8s.CoreV1Api(s.admin())
    node = core.read_node(h.name, _request_timeout=10)
    marked = (node.metadata.annotations or {}).get(CORDONED_BY) == cordoned_by if node.metadata else False
    if not marked:
        if node.spec and node.spec.unschedulable:
            s.info(h.name, "stays cordoned: it was cordoned before, not by kubeboot")
        return
    if not s.dry_run:
        core.patch_node(h.name, {"spec": {"unschedulable": None}, "metadata": {"annotations": {CORDONED_BY: None}}},
                        _request_timeout=10)
    s.change(h.name, "uncordon")


def only_on(phases: Sequence[Phase], names: Collection[str]) -> tuple[Phase, ...]:
    """The node phases, planning only for the chosen hosts."""
    out = []
    for ph in phases:
        plan = ph.plan
        assert plan is not None
        out.append(Phase(ph.name, ph.summary, (lambda p: lambda ctx, h: p(ctx, h) if h.name in names else [])(plan),
                         roles=NODE_ROLES))
    return tuple(out)


def reset(req: ResetRequest, rep: output.Reporter) -> RunResult:
    """Plan (dry run) or apply the reset of the chosen hosts."""
    rendered: RenderResult = render(req.inventory, req.state_dir)
    cfg = rendered.config
    leaving = chosen(cfg, req.hosts)
    names = {h.name for h in leaving}
    cp_leaving = {h.name for h in leaving if h.is_control_plane}
    drained: tuple[Phase, ...] = ()
    if req.drain_timeout is not None and not req.unreachable:
        timeout = req.drain_timeout
        drained = (Phase("drain", "Cordon, then evict the pods (PodDisruptionBudgets respected)",
                         step=lambda s: drain(s, leaving, timeout)),)
    workflow: tuple[Phase, ...] = (
        Phase("check-quorum", "Refuse before any change when etcd would lose quorum (unless --force)",
              step=lambda s: leave_etcd(s, leaving, req.force, remove=False)),
        *drained,
        Phase("load-balancer", "Take the hosts' API servers out of every load balancer",
              step=lambda s: take_out_of_load_balancers(s, cp_leaving)),
        Phase("leave-etcd", "Remove their etcd members while they still run (quorum-checked)",
              step=lambda s: leave_etcd(s, leaving, req.force)),
        *(() if req.unreachable else only_on(NODE_RESET, names)),
        # a Node deleted while its kubelet is gone: the pod garbage collector deletes the pods bound to it
        Phase("delete-node", "Delete their Node objects", step=lambda s: delete_nodes(s, leaving)),
    )
    # the chosen hosts, and every host that runs a load balancer the leaving control planes are in
    if req.drain_timeout is not None and cp_leaving and not [h for h in cfg.control_planes if h.name not in names]:
        raise QuorumRiskError(f"{', '.join(sorted(cp_leaving))} is the cluster's last control plane: removing it "
                              f"would destroy the cluster",
                              hint="to tear the whole cluster down, run `kubeboot reset`")
    lbs = [h for h in cfg.hosts if h.name not in names and nginx_conf(cfg, h) is not None] if cp_leaving else []
    trace = TraceLog(rendered.state_dir / "trace.log")

    def session(runner: Runner, path: str, dry_run: bool, result: RunResult) -> Session:
        return Session(runner, rendered, path, dry_run, result)

    runner = Runner(cfg, {}, RunOptions(), req.connect, rep, trace, session=session,
                    extra_paths=lambda h: ["/root/.kube/config", *KUBELET_FILES,
                                           "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml"])
    runner.hosts = [h for h in cfg.hosts if (h.name in names and not req.unreachable) or h in lbs]
    try:
        return runner.run(workflow, (), (), req.dry_run)
    except HostConnectionError as exc:
        gone = sorted(names & set(exc.hosts))
        if req.drain_timeout is None or not gone:
            raise
        raise HostConnectionError(exc.message, hint=f"if {', '.join(gone)} is gone for good, `kubeboot remove-node "
                                                    f"{', '.join(gone)} --unreachable` takes it out of etcd, every "
                                                    f"load balancer and the API without connecting to it") from None
    finally:
        runner.close()
