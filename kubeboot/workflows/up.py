"""Shell: `kubeboot up` / `kubeboot plan` — the manual kubeadm HA recipe as one workflow.

Read UP beside the recipe: check and prepare every host, install the runtime and the images, put the load
balancer in front of the API servers, start the first control plane and do what `kubeadm init` does after
that, join the other control planes one at a time and the workers in parallel, install the pod network, and
set up kubectl. Each phase plans from facts and applies only differences, so a second run changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubeboot import output, state
from kubeboot.bundle.manifest import Bundle, load_bundle
from kubeboot.errors import BundleError, ConfigError, ImageArchiveError, Problem, VersionSkewError
from kubeboot.offline import RenderResult, load_inventory, render
from kubeboot.phases.base import RunOptions
from kubeboot.phases.files import DROP_IN, FILES
from kubeboot.phases.images import IMAGES
from kubeboot.phases.kubectl import KUBECTL
from kubeboot.phases.lb import LOAD_BALANCER
from kubeboot.phases.prepare import PREPARE
from kubeboot.phases.runtime import RUNTIME
from kubeboot.phases.base import Phase
from kubeboot.phases.workflows import PREFLIGHT
from kubeboot.workflows import controlplane as cp
from kubeboot.workflows.certs import warn_expiring
from kubeboot.workflows.etcd import snapshot_before_etcd_changes
from kubeboot.workflows.network import cni
from kubeboot.workflows.session import KUBELET_CONF, PROBED, Session, lb_backends
from kubeboot.workflows.workers import join_workers
from kubeboot.plan.archives import ArchiveError, ImageArchive, read_archive
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts
from kubeboot.render.cluster import KUBELET_CLIENT_PEM, RenderHints, kubelet_kubeconfig, render_cluster
from kubeboot.render.images import required_images
from kubeboot.render.node import PACKAGE_DROPINS
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog, ssh_transports
from kubeboot.config.model import ClusterConfig
from kubeboot.transport.base import Transport, close_all
from kubeboot.plan.upgrade import parse_version, show, version_mismatch
from kubeboot.workflows.adopt import adopt_existing, running_versions


INIT = Phase("init", "The first control plane, then what kubeadm init does once its API server runs", children=(
    Phase("wait-control-plane", "Wait for the API server through the endpoint; admin.conf becomes cluster admin",
          step=cp.wait_control_plane),
    Phase("kubelet-finalize", "kubelet.conf points at the kubelet's rotated client certificate",
          step=cp.kubelet_finalize),
    Phase("upload-config", "Store kubeadm-config and kubelet-config in kube-system", step=cp.upload_config),
    Phase("bootstrap-token", "The bootstrap token, node-bootstrap RBAC and cluster-info", step=cp.bootstrap_token),
    Phase("mark-control-plane", "Label and taint the first control plane's Node", step=cp.mark_first_control_plane),
    Phase("addons", "kubeadm's addons, with kubeadm's objects", children=(
        Phase("coredns", "CoreDNS: Deployment, Service kube-dns, RBAC, Corefile", step=cp.coredns),
        Phase("kube-proxy", "kube-proxy: DaemonSet, its ConfigMap and RBAC", step=cp.kube_proxy),
    )),
))
JOIN_CONTROL_PLANES = Phase("join-control-planes", "Further control planes, one at a time, with kubeadm's join "
                                                   "protocol; each joins the LB once ready",
                            step=cp.join_control_planes)
JOIN_WORKERS = Phase("join-workers", "Workers in parallel: token discovery, TLS bootstrap by the kubelet",
                     step=join_workers)
CNI = Phase("cni", "The pod network (flannel by default) and the user's manifests; nodes become Ready",
            step=lambda s: cni(s, s.inventory))

# before `files` restarts a running etcd member (its manifest changed), a snapshot in <state dir>/snapshots/
ETCD_SNAPSHOT = Phase("etcd-snapshot", "Snapshot etcd before files rewrites a running member's manifest",
                      step=snapshot_before_etcd_changes)

UP: tuple[Phase, ...] = (PREFLIGHT, PREPARE, RUNTIME, IMAGES, LOAD_BALANCER, ETCD_SNAPSHOT, FILES, INIT,
                         JOIN_CONTROL_PLANES, JOIN_WORKERS, CNI, KUBECTL)


@dataclass(frozen=True)
class UpRequest:
    inventory: Path
    state_dir: Path | None
    only: Sequence[str] = ()
    skip: Sequence[str] = ()
    dry_run: bool = False
    options: RunOptions = RunOptions()
    connect: ConnectOptions = ConnectOptions()
    images: Path | None = None  # --images DIR (overrides spec.images.archiveDir)
    bundle: Path | None = None  # --bundle DIR: packages and images only from this offline bundle


def load_offline_packages(directory: Path) -> tuple[tuple[str, bytes], ...]:
    if not directory.is_dir():
        raise ConfigError([Problem("--offline-packages", f"{directory} is not a directory")], source="flags")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".deb", ".rpm") and p.is_file())
    if not files:
        raise ConfigError([Problem("--offline-packages", f"{directory} holds no .deb or .rpm files")], source="flags")
    return tuple((p.name, p.read_bytes()) for p in files)


ARCHIVE_SUFFIXES = (".tar", ".oci", ".tar.gz", ".tgz")


def load_image_archives(directory: Path, source: str) -> tuple[tuple[str, ImageArchive], ...]:
    """Every archive in DIR, parsed before any host is touched: a file that is not an image archive is an
    error naming it (exit 17), not a failed import on every node later."""
    if not directory.is_dir():
        raise ConfigError([Problem(source, f"{directory} is not a directory")], source="flags")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))
    if not files:
        raise ConfigError([Problem(source, f"{directory} holds no image archives "
                                           f"({', '.join(ARCHIVE_SUFFIXES)})")], source="flags")
    return read_image_archives(files)


def read_image_archives(files: Sequence[Path]) -> tuple[tuple[str, ImageArchive], ...]:
    out = []
    for path in files:
        try:
            with path.open("rb") as fh:
                out.append((str(path.resolve()), read_archive(path.name, fh)))
        except ArchiveError as exc:
            raise ImageArchiveError(f"{path}: not an image archive containerd can import: {exc}",
                                    hint="export images with `ctr images export`, `docker save` or `skopeo copy "
                                         "... oci-archive:FILE`, or remove the file from the directory") from None
        except OSError as exc:
            raise ImageArchiveError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return tuple(out)


@dataclass(frozen=True)
class BundleInputs:
    """What `up --bundle DIR` installs, read and digest-checked whole before any host is touched."""

    bundle: Bundle
    options: RunOptions  # with the bundle's node and lb packages and image archives


def bundle_inputs(directory: Path, cfg: ClusterConfig, options: RunOptions) -> BundleInputs:
    """Every artifact's sha256 against the manifest (a missing or changed one is named, exit 27), the bundle's
    version against the inventory's, then the node and load-balancer packages and the image archives in memory."""
    b = load_bundle(directory)
    if b.version != cfg.version.version:
        raise BundleError(f"bundle {directory} is for Kubernetes {b.version}; the inventory asks for "
                          f"{cfg.version.version} (spec.kubernetesVersion)",
                          hint=f"build one with `kubeboot bundle build --from-source --version {cfg.version.version} "
                               f"-o DIR`, or set spec.kubernetesVersion to {b.version}")
    node = b.packages("node")
    if not node:
        raise BundleError(f"bundle {directory} holds no node packages (packages/node)",
                          hint="build it again with `kubeboot bundle build`")
    opts = replace(options, offline_packages=tuple((p.name, p.read_bytes()) for p in node),
                   lb_packages=tuple((p.name, p.read_bytes()) for p in b.packages("lb")),
                   packages_distribution=b.manifest.distribution,
                   image_archives=read_image_archives(b.images("node")))
    return BundleInputs(b, opts)


def archive_dir(images: Path | None, inventory: Path, cfg_dir: str | None) -> tuple[Path, str] | None:
    """Where the image archives are: --images DIR, else spec.images.archiveDir (relative to the inventory)."""
    if images is not None:
        return images, "--images"
    if cfg_dir:
        d = Path(cfg_dir).expanduser()
        return (d if d.is_absolute() else inventory.parent / d), "spec.images.archiveDir"
    return None


def up(req: UpRequest, reporter: output.Reporter,
       transports: Mapping[str, Transport] | None = None) -> tuple[RenderResult, RunResult]:
    # before the PKI is decided: the nodes may already be a cluster (adopt it) or another cluster (refuse)
    cfg0 = load_inventory(req.inventory)
    # an offline bundle is checked whole (every digest) before any host is touched
    bundled = bundle_inputs(req.bundle, cfg0, req.options) if req.bundle is not None else None
    root = req.state_dir or state.default_state_dir(req.inventory, cfg0.name)
    trace = TraceLog(root / "trace.log")
    conns = dict(transports) if transports is not None else ssh_transports(cfg0, req.connect, trace)
    try:
        read = adopt_existing(cfg0, root, conns, reporter, req.connect.concurrency)
        other = version_mismatch(cfg0.version, running_versions(cfg0, read))
        if other is not None:
            which, newest = other
            v = show(newest).removeprefix("v")
            ahead = parse_version(cfg0.version.version)
            hint = (f"set spec.kubernetesVersion to {v} (kubeboot does not downgrade)" if ahead and newest > ahead else
                    f"to upgrade: kubeboot upgrade -i {req.inventory} --to {cfg0.version.version}; to keep the cluster "
                    f"where it is: set spec.kubernetesVersion to {v}")
            raise VersionSkewError(f"the inventory asks for {cfg0.version.tag} but {which}: `up` keeps a cluster at "
                                   f"its version and does not change it", hint=hint)
    except BaseException:
        if transports is None:
            close_all(conns.values())
        raise
    rendered = render(req.inventory, req.state_dir)
    for w in rendered.config.warnings:
        reporter.warn("config", None, w)
    options = bundled.options if bundled is not None else req.options
    where = ((bundled.bundle.images_dir, "--bundle") if bundled is not None else
             archive_dir(req.images, req.inventory, rendered.config.image_archive_dir))
    if where is not None:
        if bundled is None:
            options = replace(options, image_archives=load_image_archives(*where))
        have = {ref for _p, a in options.image_archives for ref in a.refs}
        missing = [ref for ref in required_images(rendered.config) if ref not in have]
        if missing:
            reporter.warn("images", None, f"{len(missing)} image(s) the cluster needs are in no archive of "
                                          f"{where[0]} (nodes must pull them): {', '.join(missing)}")

    cfg = rendered.config

    def rerender(facts: Mapping[str, HostFacts]) -> Mapping[str, tuple[Artifact, ...]]:
        return placed_by_up(cfg, render_for_hosts(rendered, facts))

    def session(runner: Runner, path: str, dry_run: bool, result: RunResult) -> Session:
        s = Session(runner, rendered, path, dry_run, result)
        s.inventory = req.inventory
        return s

    runner = Runner(cfg, placed_by_up(cfg, rendered.hosts), options, req.connect, reporter, trace, conns,
                    rerender, session, lambda h: PROBED)
    try:
        result = runner.run(UP, req.only, req.skip, req.dry_run)
        # every run, plan or not: a certificate a control plane holds that expires within 90 days is a warning
        warn_expiring(cfg, runner.transports, reporter, req.connect.concurrency)
        if not req.dry_run:
            summary(runner, rendered, req, result, reporter)
    finally:
        runner.close()
    return rendered, result


def render_for_hosts(rendered: RenderResult, facts: Mapping[str, HostFacts]) -> dict[str, tuple[Artifact, ...]]:
    """Every host's files as its facts shape them: the CA directories its distribution has (mounted into the
    static pods), the LB backends that are ready, systemd-resolved, a first control plane's kubelet.conf in the form
    it has, and no kubelet drop-in of kubeboot's where the kubeadm package's runs the kubelet."""
    cfg = rendered.config

    def finalized(name: str, f: HostFacts) -> bool:
        """The host's kubelet.conf already points at the rotated certificate (kubeadm's kubelet-finalize ran, or
        init's kubelet-finalize step): keep that form. An embedded one is converted by that step, not by files."""
        have = f.files.get(KUBELET_CONF)
        return (KUBELET_CLIENT_PEM in f.files and have is not None and cfg.host(name).is_control_plane
                and have.digest == kubelet_kubeconfig(cfg, rendered.pki, cfg.host(name), rotated=True).digest)

    backends = lb_backends(cfg, facts)
    per_host = {name: RenderHints(ca_dirs=tuple(sorted(f.dirs)), lb_backends=backends,
                                  systemd_resolved=f.systemd_resolved,
                                  kubelet_client_rotated=finalized(name, f),
                                  package_dropin=DROP_IN not in f.files and
                                  any(p in f.files for p in PACKAGE_DROPINS))
                for name, f in facts.items()}
    return render_cluster(cfg, rendered.pki, rendered.token, per_host)


def placed_by_up(cfg: ClusterConfig, full: Mapping[str, tuple[Artifact, ...]]) -> dict[str, tuple[Artifact, ...]]:
    """What the files and load-balancer phases place: everything for the first control plane; on every other
    node only its node files. Their certificates, kubeconfigs and manifests come from joining, as when a
    person runs `kubeadm join`; a worker's bootstrap kubeconfig too."""
    first = cfg.first_control_plane.name
    out = {}
    for name, arts in full.items():
        host = cfg.host(name)
        if name != first and host.is_node:
            arts = tuple(a for a in arts if not a.path.startswith("/etc/kubernetes/"))
        out[name] = arts
    return out


def summary(runner: Runner, rendered: RenderResult, req: UpRequest, result: RunResult,
            reporter: output.Reporter) -> None:
    """Nodes with roles, versions and readiness (when the API answers), the endpoint, where a kubeconfig comes
    from, and the time each phase took."""
    cfg = rendered.config
    s = Session(runner, rendered, "summary", False, RunResult())
    lines = [f"endpoint {cfg.control_plane_endpoint.url()} ({cfg.load_balancer_mode.value})"]
    try:
        from kubernetes import client as k8s

        if cp.api_reachable(s):
            node: Any
            for node in k8s.CoreV1Api(s.admin()).list_node().items:
                labels = node.metadata.labels or {}
                roles = ",".join(sorted(k.split("/", 1)[1] for k in labels
                                        if k.startswith("node-role.kubernetes.io/"))) or "worker"
                ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
                lines.append(f"node {node.metadata.name:<16} {roles:<14} {node.status.node_info.kubelet_version:<10} "
                             f"{'Ready' if ready else 'NotReady'}")
    except Exception as exc:  # noqa: BLE001 - the summary never turns a finished run into a failure
        lines.append(f"nodes: cannot list ({type(exc).__name__})")
    lines.append(f"kubeconfig: kubeboot kubeconfig -i {req.inventory} -o admin.conf (on the control planes: "
                 f"/root/.kube/config" + (f", and for {', '.join(cfg.kubectl_users)}" if cfg.kubectl_users else "")
                 + ")")
    lines.append("time per phase: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    for line in lines:
        reporter.info("summary", None, line)
