"""Shell: `kubeboot upgrade -i INV --to VERSION` — kubeadm's upgrade recipe ("Upgrading kubeadm clusters") for every
host of the cluster in one run, with the API answering through the load balancer throughout.

Read UPGRADE in order: check what every node runs against the target (one minor version at a time, never down,
the kubelet skew policy) and that the cluster is healthy; take an etcd snapshot; load the target's images on every
node (nothing restarts); then each control plane in turn — out of the load balancer, its certificates renewed (as
`kubeadm upgrade` does), etcd, the API server, the controller-manager and the scheduler moved to their new manifests
one after the other and each waited for, then its kubelet (drain, packages, kubelet configuration, restart,
uncordon), back into the load balancer; then the cluster's configuration (kubeadm-config, kubelet-config, RBAC with
the 1.36+ kubeadm:apiserver-kubelet-client binding) and the CoreDNS and kube-proxy addons, once every control plane
runs the target; then the workers in batches, the same way as a control plane's kubelet.

Every step first looks at what the host runs, so a run that stopped (a timeout, a lost connection) continues where
it stopped, and a run on an upgraded cluster changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from kubeboot import output, state
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.config.versions import resolve_version
from kubeboot.errors import ClusterDegradedError, ConfigError, Problem, StateError, WaitTimeoutError
from kubeboot.offline import RenderResult, load_inventory, render
from kubeboot.phases.base import Phase, PhaseContext, RunOptions
from kubeboot.phases.files import plan_files
from kubeboot.phases.images import IMAGES
from kubeboot.phases.kubectl import ADMIN_CONF, plan_kubectl
from kubeboot.phases.runtime import plan_packages
from kubeboot.plan.actions import RunCommand, file_actions
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts
from kubeboot.plan.upgrade import COMPONENTS, HostChange, NodeVersions, UpgradePlan, manifest_path, parse_version
from kubeboot.plan.upgrade import plan_upgrade
from kubeboot.render.cluster import local_api_url
from kubeboot.render.images import component_image, etcd_image, required_images
from kubeboot.render.manifests import etcd_client_url
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog, combine, parallel, ssh_transports
from kubeboot.transport.base import Transport, close_all
from kubeboot.kube import client as kc
from kubeboot.workflows import controlplane as cp
from kubeboot.workflows.adopt import adopt_existing, running_versions
from kubeboot.workflows.etcd import default_snapshot_path, save_snapshot
from kubeboot.workflows.renew import RENEWABLE, host_paths, running_containers, state_entries
from kubeboot.workflows.reset import drain_node, uncordon_node
from kubeboot.workflows.session import PROBED, Session, ready, ready_control_planes
from kubeboot.workflows.up import archive_dir, load_image_archives, placed_by_up, render_for_hosts

CORDON_MARK = "upgrade"
# seconds a 403 to the cluster admin is retried while API servers are replaced (kc.retry_forbidden)
FORBIDDEN_RETRY = 30.0
RENEWED = tuple(sorted(RENEWABLE))  # kubeadm upgrade renews every certificate kubeadm manages on the node


@dataclass(frozen=True)
class UpgradeRequest:
    inventory: Path
    state_dir: Path | None
    to: str  # the target version, "1.37" or "1.37.2"
    dry_run: bool = False
    connect: ConnectOptions = ConnectOptions()
    images: Path | None = None  # --images DIR (overrides spec.images.archiveDir)
    wait_timeout: float = 300.0  # each component / kubelet to come back
    drain_timeout: float = 300.0
    worker_batch: int = 1  # workers upgraded at the same time
    force: bool = False  # go on although the cluster is not healthy


def _target(text: str) -> str:
    try:
        return resolve_version(text).version
    except ValueError as exc:
        raise ConfigError([Problem("--to", str(exc))], source="flags") from None


class Upgrade:
    """One run: the rendered target (re-rendered once the plan says which certificates to renew) and the plan."""

    def __init__(self, req: UpgradeRequest, rendered: RenderResult, running: Sequence[NodeVersions]) -> None:
        self.req = req
        self.rendered = rendered
        self.running = {n.name: n for n in running}  # control planes' manifests, read before the run
        self.plan: UpgradePlan | None = None
        self.full: dict[str, tuple[Artifact, ...]] = {}

    @property
    def cfg(self) -> ClusterConfig:
        return self.rendered.config

    def wanted_images(self) -> dict[str, str]:
        cfg = self.cfg
        return {c: etcd_image(cfg) if c == "etcd" else component_image(cfg, c) for c in COMPONENTS}

    def rerender(self, facts: Mapping[str, HostFacts]) -> dict[str, tuple[Artifact, ...]]:
        self.full = render_for_hosts(self.rendered, facts)
        return self.full

    def artifact(self, host: Host, path: str) -> Artifact | None:
        return next((a for a in self.full.get(host.name, ()) if a.path == path), None)

    # --- check ---------------------------------------------------------------------------------------------------

    def check(self, s: Session) -> None:
        """Versions and skew; the cluster's health (unless --force); the plan per host. Certificates of the control
        planes that change are issued anew here (kept in the state directory: a re-run issues them again)."""
        s.start()
        cfg = self.cfg
        nodes = []
        for h in cfg.hosts:
            if not h.is_node:
                continue
            kubelet = s.runner.facts[h.name].versions.get("kubelet")
            images = self.running[h.name].images if h.name in self.running else {}
            nodes.append(NodeVersions(h.name, h.is_control_plane, images, parse_version(kubelet) if kubelet else None))
        plan = plan_upgrade(cfg.version, nodes, self.wanted_images())
        self.plan = plan
        if not self.req.force:
            self.check_health(s)
        if plan.nothing:
            s.done(f"every node runs {cfg.version.tag}: nothing to upgrade")
            return
        wanted = self.wanted_images()
        for ch in plan.hosts:
            if not ch.nothing:
                s.info(ch.name, ("would upgrade: " if s.dry_run else "upgrade: ") + ch.describe(cfg.version, wanted))
        renewing = [h.name for h in plan.control_planes if h.components]
        if renewing and not s.dry_run:
            entries = {e for e in state_entries(cfg, RENEWED) if e.split("/")[1] in renewing}
            self.rendered = render(self.req.inventory, self.req.state_dir, renew=lambda _c: entries,
                                   version=cfg.version.version)
            s.runner.artifacts = self.rerender(s.runner.facts)
            s.info(None, f"issued {len(entries)} certificate(s) anew for {', '.join(renewing)} from the existing CAs")
        s.done(f"{'plan: ' if s.dry_run else ''}from {plan.source[0]}.{plan.source[1]}.{plan.source[2]} to "
               f"{cfg.version.tag}: {sum(not h.nothing for h in plan.hosts)} node(s) change")

    def check_health(self, s: Session) -> None:
        """kubeadm upgrade's preflight: every control plane's API server ready, every etcd member healthy, every
        Node Ready. An upgrade started on a sick cluster ends with a sicker one."""
        cfg = self.cfg
        problems = []
        ready_cps = set(ready_control_planes(cfg, cfg.control_planes))
        problems += [f"{h.name}: API server not ready at {local_api_url(h)}" for h in cfg.control_planes
                     if h.name not in ready_cps]
        client = s.etcd(cfg.control_planes)
        try:
            for h in cfg.control_planes:
                ok, why = client.health(etcd_client_url(h))
                if ok is not True:
                    problems.append(f"{h.name}: etcd member not healthy ({why})")
        finally:
            client.close()
        if ready_cps:
            node: Any
            for node in k8s.CoreV1Api(s.admin()).list_node(_request_timeout=10).items:
                if not _node_ready(node):
                    problems.append(f"{node.metadata.name}: Node not Ready")
        if problems:
            raise ClusterDegradedError("[upgrade] the cluster is not healthy:\n  " + "\n  ".join(problems),
                                       hint="`kubeboot status` shows more; fix it first, or pass --force to upgrade "
                                            "anyway (a stopped upgrade continues with --force too)")

    # --- snapshot ------------------------------------------------------------------------------------------------

    def snapshot(self, s: Session) -> None:
        s.start()
        assert self.plan is not None
        members = [h.name for h in self.plan.control_planes if "etcd" in h.components]
        if not members:
            s.done("no etcd member changes")
            return
        reason = f"before upgrade to {self.cfg.version.tag}"
        dest = default_snapshot_path(self.rendered.state_dir, self.cfg, datetime.now(timezone.utc), reason)
        if s.dry_run:
            s.change(None, f"take an etcd snapshot into {dest.parent} ({reason})")
        else:
            client = s.etcd(self.cfg.control_planes)
            try:  # no snapshot, no upgrade: the EtcdError goes to the user
                save_snapshot(self.cfg, s.runner.transports, client, self.rendered.pki.cas["ca"].cert_pem(), dest,
                              reason, s.runner.rep, s.path)
            finally:
                client.close()
            s.change(None, f"took an etcd snapshot: {dest}")
        s.done()

    # --- control planes ------------------------------------------------------------------------------------------

    def control_planes(self, s: Session) -> None:
        s.start()
        assert self.plan is not None
        for change in self.plan.control_planes:  # one at a time, in inventory order (the first is kubeadm's apply)
            host = self.cfg.host(change.name)
            if change.nothing:  # still uncordoned if a run that stopped had cordoned it
                self.kubelet(s, host)
                continue
            others = [h for h in self.cfg.control_planes if h.name != host.name]
            serving = ready_control_planes(self.cfg, others)
            if serving and not s.dry_run:  # the others answer while this one's API server restarts
                s.point_load_balancers(serving)
            if change.components:
                self.static_pods(s, host, change)
            self.kubelet(s, host)
            if not s.dry_run:
                # a new kubelet may restart the static pods it took over: back into the LB only once it serves
                self.wait_component(s, host, "kube-apiserver")
                s.point_load_balancers(ready_control_planes(self.cfg, self.cfg.control_planes) or [host.name])
        s.done()

    def static_pods(self, s: Session, host: Host, change: HostChange) -> None:
        """kubeadm upgrade apply/node on one control plane: renewed certificates, then each component's manifest,
        waiting for its new container (and etcd's health, the API server's readiness) before the next."""
        facts = s.runner.facts[host.name]
        renewed = [a for a in self.full[host.name] if a.path in host_paths(RENEWED) and a.path in facts.files]
        writes = file_actions(tuple(renewed), facts)
        if writes:
            s.apply(host, writes)
        for comp in COMPONENTS:
            want = self.artifact(host, manifest_path(comp))
            assert want is not None
            acts = file_actions((want,), s.runner.facts[host.name])
            if s.dry_run:
                if comp in change.components:
                    s.change(host.name, f"{comp}: new manifest ({self.wanted_images()[comp]}), wait until it runs")
                continue
            if acts:
                s.apply(host, acts)
            self.wait_component(s, host, comp)
        if not s.dry_run:  # ~/.kube/config follows a renewed admin.conf
            s.runner.gather([host])
            kubectl = plan_kubectl(s.runner.context(), host)
            s.apply(host, [a for a in kubectl if isinstance(a, RunCommand) and "completion" not in a.command])

    def wait_component(self, s: Session, host: Host, comp: str) -> None:
        image = self.wanted_images()[comp]
        t = s.runner.transports[host.name]
        deadline = time.monotonic() + self.req.wait_timeout
        while True:
            running = running_images(t, comp)
            if running == {image} and self.healthy(s, host, comp):
                s.info(host.name, f"{comp} runs {image}")
                return
            if time.monotonic() > deadline:
                raise WaitTimeoutError(
                    f"{host.name} [upgrade]: {comp} does not run {image} healthily after "
                    f"{self.req.wait_timeout:.0f}s (running: {', '.join(sorted(running)) or 'nothing'})",
                    hint=f"check {host.name}: journalctl -u kubelet, crictl ps -a; the new manifest is in place; "
                         f"the etcd snapshot is in {self.rendered.state_dir / 'snapshots'}; run again to go on")
            time.sleep(1.0)

    def healthy(self, s: Session, host: Host, comp: str) -> bool:
        if comp == "kube-apiserver":
            if not ready(local_api_url(host)):
                return False
            # ready is not yet authorizing: right after a start its RBAC may still deny the admin (seen here: a 403
            # on the next call once it was back in the LB); it re-enters the LB only once it authorizes
            kc.wait_cluster_admin(kc.from_kubeconfig_data(s.first_cp_file(ADMIN_CONF).content, local_api_url(host)),
                                  timeout=self.req.wait_timeout)
            return True
        if comp == "etcd":
            client = s.etcd([host])
            try:
                return client.health(etcd_client_url(host))[0] is True
            finally:
                client.close()
        return True

    # --- kubelets ------------------------------------------------------------------------------------------------

    def kubelet(self, s: Session, host: Host) -> None:
        """The recipe's kubelet part on one node: drain, packages at the target version, the kubelet's files,
        restart, wait until the Node reports the target and is Ready, uncordon."""
        cfg = self.cfg
        node_files = {host.name: tuple(a for a in placed_by_up(cfg, self.full)[host.name]
                                       if not a.path.startswith("/etc/kubernetes/"))}

        def ctx() -> PhaseContext:
            return PhaseContext(cfg, node_files, s.runner.facts, s.runner.options)

        core = k8s.CoreV1Api(s.admin())
        node = core.read_node(host.name, _request_timeout=10)
        reported = node.status.node_info.kubelet_version if node.status and node.status.node_info else ""
        packages, files = plan_packages(ctx(), host), plan_files(ctx(), host)
        if not packages and not files and reported == cfg.version.tag:
            uncordon_node(s, host, CORDON_MARK)  # a run that stopped after the kubelet came back
            return
        if s.dry_run:
            s.change(host.name, f"drain, kubelet {reported or '?'} -> {cfg.version.tag} ({len(packages)} package "
                                f"step(s), {len(files)} file step(s)), restart the kubelet, uncordon")
            return
        drain_node(s, host, self.req.drain_timeout, cordoned_by=CORDON_MARK)
        s.apply(host, packages)
        files = plan_files(ctx(), host)
        s.apply(host, files)
        restarted = any(isinstance(a, RunCommand) and "restart kubelet" in a.command for a in files)
        if not restarted and reported != cfg.version.tag:
            s.apply(host, [RunCommand("systemctl restart kubelet", f"the kubelet runs {reported}, not "
                                                                    f"{cfg.version.tag}")])
        self.wait_node(s, host)
        uncordon_node(s, host, CORDON_MARK)

    def wait_node(self, s: Session, host: Host) -> None:
        core = k8s.CoreV1Api(s.admin())
        want = self.cfg.version.tag
        deadline = time.monotonic() + self.req.wait_timeout
        seen = "?"
        while True:
            try:
                node: Any = core.read_node(host.name, _request_timeout=10)
                seen = node.status.node_info.kubelet_version
                if seen == want and _node_ready(node):
                    s.info(host.name, f"kubelet {want}, Ready")
                    return
            except Exception:  # noqa: BLE001 - the API may blink while a control plane restarts
                pass
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"{host.name} [upgrade]: the Node does not report kubelet {want} and Ready "
                                       f"after {self.req.wait_timeout:.0f}s (it reports {seen})",
                                       hint=f"check {host.name}: journalctl -u kubelet; run again to go on (it stays "
                                            f"cordoned until then)")
            time.sleep(1.0)

    def workers(self, s: Session) -> None:
        s.start()
        assert self.plan is not None
        todo = [self.cfg.host(h.name) for h in self.plan.workers]
        size = max(1, self.req.worker_batch)
        for i in range(0, len(todo), size):
            batch = todo[i:i + size]
            errors = parallel(batch, lambda h: self.kubelet(s, h), len(batch))
            if errors:
                raise combine({batch[j].name: e for j, e in errors.items()}, s.path)
        s.done()

    def finish(self, s: Session) -> None:
        """Every Node reports the target; say so, and what the inventory should say from now on."""
        s.start()
        if s.dry_run:
            s.done()
            return
        nodes: list[Any] = k8s.CoreV1Api(s.admin()).list_node(_request_timeout=10).items
        want = self.cfg.version.tag
        behind = [n.metadata.name for n in nodes if n.status.node_info.kubelet_version != want]
        if behind:
            s.runner.rep.warn(s.path, None, f"{', '.join(behind)} do not report {want} (not in the inventory?)")
        declared = load_inventory(self.req.inventory).version
        if declared.version != self.cfg.version.version:
            s.runner.rep.warn(s.path, None, f"{self.req.inventory} still says {declared.tag}: set "
                                            f"spec.kubernetesVersion to {self.cfg.version.version}, or `up` refuses "
                                            f"to run against this cluster")
        s.done(f"{len(nodes) - len(behind)} of {len(nodes)} node(s) run {want}")


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions if node.status else None)
               or [])


def running_images(t: Transport, component: str) -> set[str]:
    """The images of the component's running containers, from containerd (what crictl ps shows)."""
    out = t.run(running_containers(component), display=f"list the running {component} containers", check=False).stdout
    return {line.split()[1] for line in out.splitlines() if len(line.split()) == 2}


def upgrade(req: UpgradeRequest, rep: output.Reporter) -> RunResult:
    target = _target(req.to)
    cfg0 = load_inventory(req.inventory, target)
    root = req.state_dir or state.default_state_dir(req.inventory, cfg0.name)
    if "pki/ca.crt" not in state.read_state(root):
        raise StateError(f"no cluster in the state directory {root}",
                         hint=f"upgrade changes a cluster kubeboot knows: run `kubeboot up -i {req.inventory}` first "
                              f"(at the version the cluster runs; it adopts a cluster built with kubeadm)")
    trace = TraceLog(root / "trace.log")
    conns = ssh_transports(cfg0, req.connect, trace)
    try:
        read = adopt_existing(cfg0, root, conns, rep, req.connect.concurrency)  # same CA, and the manifests
        rendered = render(req.inventory, req.state_dir, version=target)
    except BaseException:
        close_all(conns.values())
        raise
    run = Upgrade(req, rendered, running_versions(cfg0, read))
    options = RunOptions(wait_timeout=req.wait_timeout)
    where = archive_dir(req.images, req.inventory, rendered.config.image_archive_dir)
    if where is not None:  # only the archives that hold an image the target needs
        needed = set(required_images(rendered.config))
        archives = tuple((p, a) for p, a in load_image_archives(*where) if set(a.refs) & needed)
        options = replace(options, image_archives=archives)

    def session(runner: Runner, path: str, dry_run: bool, result: RunResult) -> Session:
        s = Session(runner, run.rendered, path, dry_run, result)
        s.inventory = req.inventory
        s.admin_retry_forbidden = FORBIDDEN_RETRY
        return s

    renew_paths = list(host_paths(RENEWED)) + ["/root/.kube/config", ADMIN_CONF]
    # the rendered paths are what the facts hash (the files each step compares); rerender refines them per host
    runner = Runner(rendered.config, rendered.hosts, options, req.connect, rep, trace, conns, run.rerender, session,
                    lambda h: [*PROBED, *renew_paths] if h.is_control_plane else list(PROBED))
    try:
        return runner.run(workflow(run), (), (), req.dry_run)
    finally:
        runner.close()


def workflow(run: Upgrade) -> tuple[Phase, ...]:
    """UPGRADE: the phases of one run (steps are the run's methods)."""
    return (
        Phase("check", "Versions (one minor at a time, the skew policy), the cluster's health, the plan per host",
              step=run.check),
        Phase("etcd-snapshot", "An etcd snapshot in the state directory before any member changes",
              step=run.snapshot),
        IMAGES,
        Phase("control-planes", "One at a time: out of the LB, certificates renewed, etcd, kube-apiserver, "
                                "kube-controller-manager, kube-scheduler; then its kubelet; back into the LB",
              step=run.control_planes),
        Phase("cluster", "kubeadm-config, kubelet-config, RBAC and the addons, for the new version", children=(
            Phase("upload-config", "kubeadm-config and kubelet-config", step=cp.upload_config),
            Phase("rbac", "Bootstrap-token RBAC and the kubeadm:apiserver-kubelet-client binding",
                  step=cp.bootstrap_token),
            Phase("coredns", "CoreDNS", step=cp.coredns),
            Phase("kube-proxy", "kube-proxy", step=cp.kube_proxy),
        )),
        Phase("workers", "In batches: drain, packages, the kubelet's files, restart, uncordon", step=run.workers),
        Phase("finish", "Every Node reports the target", step=run.finish),
    )


