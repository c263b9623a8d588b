"""Shell: click commands only. The one place where errors become messages and exit codes."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING
from dataclasses import replace
from pathlib import Path

import click

from kubeboot import __version__, output
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES, SUPPORTED_MINORS
from kubeboot.errors import ConfigError, KubebootError, Problem

if TYPE_CHECKING:
    from kubeboot.runner import ConnectOptions


class _Group(click.Group):
    """Turn KubebootError into a short message and its exit code; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KubebootError as exc:
            if ctx.meta.get("kubeboot.debug"):
                raise
            if isinstance(exc, ConfigError):
                for p in exc.problems:
                    if p.severity == "warning":
                        output.error(f"warning: {p}")
            output.error(exc.message, exc.hint)
            sys.exit(exc.exit_code)
        except Exception as exc:
            import urllib3

            if isinstance(exc, urllib3.exceptions.HTTPError) and not ctx.meta.get("kubeboot.debug"):
                # no answer at all (connection reset, TLS cut, timeout): e.g. the API servers lost etcd quorum
                reason = getattr(exc, "reason", None) or exc
                output.error(f"the API server did not answer: {type(reason).__name__}: {str(reason)[:200]}",
                             "check the control plane: its API servers, etcd quorum (a majority of control "
                             "planes up), the load balancer")
                sys.exit(6)
            # the API server's own refusals (403, 404, 409, ...) from the kubernetes client: one short line
            status = getattr(exc, "status", None)
            if ctx.meta.get("kubeboot.debug") or not isinstance(status, int) or not hasattr(exc, "reason"):
                raise
            output.error(f"the API server answered {status} {getattr(exc, 'reason', '')}: {_api_message(exc)}",
                         "check the credentials (--kubeconfig) and that the control plane is healthy")
            sys.exit(6)


def _api_message(exc: Exception) -> str:
    import json

    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")()
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body or exc)[:300]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (secrets are still redacted in output).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """kubeboot: kubeadm-compatible, highly available Kubernetes clusters on SSH-reachable Linux hosts.

    Exit codes: 0 ok, 1 internal, 2 usage, 3 invalid inventory/flags, 4 inconsistent state directory,
    5 preflight, 6 remote command, 7 hosts failed, 8 connection, 9 authentication, 10 host key, 11 sudo,
    12 join endpoint unreachable, 13 bootstrap token rejected, 14 CA pin mismatch, 15 kubeadm-certs missing or
    expired, 16 wrong certificate key, 17 not an image archive, 18 a component not healthy in time (--wait-timeout),
    19 status: degraded, 20 status: etcd quorum lost, 21 reset/remove-node: quorum at risk, 22 etcd snapshot file
    corrupt, 23 etcd snapshot of another cluster.
    """
    ctx.meta["kubeboot.debug"] = debug
    import logging

    # paramiko logs handshake failures with tracebacks through logging's last-resort handler; kubeboot reports
    # them itself (with --debug the library's own detail is shown too).
    logging.getLogger("paramiko").setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)


@main.command()
def version() -> None:
    """Print kubeboot's version and the Kubernetes versions it deploys."""
    latest = RELEASES[DEFAULT_MINOR].latest_patch
    output.result(f"kubeboot {__version__}")
    output.result(f"kubernetes: default {latest}; supported minors {', '.join(SUPPORTED_MINORS)}")


_inventory = click.option("-i", "--inventory", "inventory", required=True,
                          type=click.Path(path_type=Path, dir_okay=False),
                          help="Cluster inventory YAML (see inventory.example.yaml).")
_state_dir = click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
                          help="Where CA keys, the sa key and tokens are kept. Default: .kubeboot/<cluster name>/ "
                               "next to the inventory.")


@main.command()
@_inventory
def validate(inventory: Path) -> None:
    """Check an inventory and report every problem at once (exit 3 if any); touches nothing."""
    from kubeboot.offline import load_inventory

    cfg = load_inventory(inventory)
    for w in cfg.warnings:
        output.error(f"warning: {w}")
    output.result(f"{inventory}: valid ({len(cfg.hosts)} hosts, {len(cfg.control_planes)} control planes, "
                  f"Kubernetes {cfg.version.version})")


@main.command()
@_inventory
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory to write DIR/<host>/<absolute path> into (replaced if kubeboot wrote it before).")
@_state_dir
def render(inventory: Path, out: Path, state_dir: Path | None) -> None:
    """Write every file kubeboot would place on every host, with its intended mode, without connecting.

    Key material is created once and kept in the state directory; running again reuses it, so the output
    only changes where the inventory did.
    """
    from kubeboot.offline import render as do_render
    from kubeboot.offline import write_tree

    rep = output.Reporter()
    rep.phase_start("render")
    result = do_render(inventory, state_dir)
    for w in result.config.warnings:
        rep.warn("config", None, w)
    for ch in result.pki_changes:
        if ch.action != "kept":
            rep.info("certs", None if ch.scope == "cluster" else ch.scope,
                     f"{ch.action} {ch.item}" + (f" ({ch.reason})" if ch.reason and ch.reason != "missing" else ""))
    kept = sum(1 for ch in result.pki_changes if ch.action == "kept")
    rep.info("certs", None, f"{kept} certificate(s)/key(s) reused from {result.state_dir}")
    if result.token_created:
        rep.info("token", None, "created a bootstrap token for worker bootstrap-kubelet.conf (valid 24h)")
    count = write_tree(out, result.hosts)
    for host, arts in result.hosts.items():
        rep.info("render", host, f"{len(arts)} files")
    rep.phase_done("render", f"wrote {count} files for {len(result.hosts)} hosts to {out} "
                             f"(key generation {result.seconds_keys:.2f}s)")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# how every connecting command verifies host keys and honours an OpenSSH client config
_HOST_KEYS_AND_SSH_CONFIG = (
    click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
                 default=Path("~/.ssh/known_hosts").expanduser(), show_default=True,
                 help="Host keys are verified against this file."),
    click.option("--accept-new-host-keys", is_flag=True,
                 help="Trust host keys seen for the first time and record them (changed keys are still refused)."),
    click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                 help="An OpenSSH client config to honour (ProxyCommand, ProxyJump hosts, ...). "
                      "Default: ~/.ssh/config when it exists."),
)


def _run_options(f: Callable[..., None]) -> Callable[..., None]:
    opts = [
        click.option("--only", "only", multiple=True, metavar="PATH",
                     help="Run only this phase path (repeatable), e.g. files or prepare/swap; "
                          "`kubeboot phases` lists them."),
        click.option("--skip-phases", default=None, metavar="A,B", help="Comma-separated phase paths to skip."),
        click.option("--ignore-preflight-errors", default=None, metavar="NAME,...",
                     help="Downgrade these preflight checks to warnings (names as printed, or 'all')."),
        click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 256),
                     help="Hosts worked on at once."),
        *_HOST_KEYS_AND_SSH_CONFIG,
        click.option("--disable-firewall", is_flag=True, help="Disable firewalld/ufw instead of opening ports."),
        click.option("--offline-packages", type=click.Path(path_type=Path, file_okay=False),
                     help="Install containerd/kubelet/kubectl from the .deb/.rpm files in this directory."),
        click.option("--bundle", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Install packages and images only from this offline bundle (`kubeboot bundle build`); "
                          "every artifact's digest is checked before any host is touched. Replaces "
                          "--offline-packages and --images."),
        click.option("--images", "images", type=click.Path(path_type=Path, file_okay=False),
                     help="Import the image archives (OCI layout or docker-save .tar) in this directory into every "
                          "node's containerd, only where an image is missing (air-gapped installs). "
                          "Overrides spec.images.archiveDir."),
        click.option("--wait-timeout", default=240.0, show_default=True, type=click.FloatRange(1.0),
                     help="Seconds each API server gets to become ready (the first, then each joining control "
                          "plane) and each joining kubelet to get its client certificate; past it, the run stops "
                          "with exit 18 naming the host (a re-run resumes)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _do_up(inventory: Path, state_dir: Path | None, dry_run: bool, only: tuple[str, ...], skip_phases: str | None,
           ignore_preflight_errors: str | None, concurrency: int, known_hosts: Path, accept_new_host_keys: bool,
           ssh_config: Path | None, disable_firewall: bool, offline_packages: Path | None,
           images: Path | None, wait_timeout: float, bundle: Path | None = None) -> None:
    from kubeboot.phases.base import RunOptions
    from kubeboot.workflows.up import UpRequest, load_offline_packages, up

    if bundle is not None and (offline_packages is not None or images is not None):
        clash = "--offline-packages" if offline_packages is not None else "--images"
        raise ConfigError([Problem(clash, "cannot be combined with --bundle (the bundle carries the packages and "
                                          "the images)")], source="flags")

    options = RunOptions(
        ignore_preflight_errors=frozenset(x.lower() for x in _csv(ignore_preflight_errors)),
        disable_firewall=disable_firewall,
        offline_packages=load_offline_packages(offline_packages) if offline_packages else (),
        wait_timeout=wait_timeout,
    )
    req = UpRequest(inventory, state_dir, tuple(only), tuple(_csv(skip_phases)), dry_run, options,
                    _connect(concurrency, known_hosts, accept_new_host_keys, ssh_config), images, bundle)
    rep = output.Reporter()
    _rendered, result = up(req, rep)
    if dry_run:
        planned = sum(len(v) for v in result.planned.values())
        rep.done(f"plan: {planned} change(s); nothing was changed" if planned else "plan: no changes")
    else:
        rep.done(f"{result.changes} change(s) applied" if result.changes else "no changes: the hosts already match")


@main.group()
def images() -> None:
    """Container images the cluster needs (kubeadm's `config images list`)."""


@images.command("list")
@_inventory
def images_list(inventory: Path) -> None:
    """Print every image the inventory's Kubernetes version needs, honouring spec.imageRepository."""
    from kubeboot.offline import load_inventory
    from kubeboot.render.images import required_images

    for ref in required_images(load_inventory(inventory)):
        output.result(ref)


@main.group()
def bundle() -> None:
    """Offline bundles: every package, image archive and binary a cluster of one version needs, with digests."""


@bundle.command("build")
@click.option("--version", "k8s_version", metavar="VERSION",
              help=f"Kubernetes version (1.MINOR or 1.MINOR.PATCH; supported minors {', '.join(SUPPORTED_MINORS)}). "
                   f"Default: {RELEASES[DEFAULT_MINOR].latest_patch}.")
@click.option("-o", "--output", "out", default=None, type=click.Path(path_type=Path, file_okay=False),
              help="Bundle directory (new, empty, or an earlier bundle: only what changed is copied). Default: "
                   "<cache>/bundles/v<VERSION>, where `kubeboot sandbox up` looks for one.")
@click.option("--from-source", is_flag=True,
              help="Build every artifact from the Go module proxy and this machine's apt sources (cached by version).")
def bundle_build(k8s_version: str | None, out: Path | None, from_source: bool) -> None:
    """Build the offline bundle of a Kubernetes version into DIR: packages for nodes, load balancers and tools,
    every image archive, kubectl, and manifest.json (written last) with each artifact's sha256."""
    from kubeboot.bundle.build import BuildRequest, build, summary, target_version
    from kubeboot.bundle.manifest import default_dir as default_bundle_dir

    if out is None:
        out = default_bundle_dir(target_version(k8s_version))
    rep = output.Reporter()
    rep.done(summary(build(BuildRequest(out, k8s_version, from_source), rep)))


@bundle.command("verify")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def bundle_verify(directory: Path) -> None:
    """Check that every artifact DIRECTORY's manifest lists is there with its sha256 (exit 27 naming each one
    that is not)."""
    from kubeboot.bundle.manifest import GROUPS, load_bundle

    b = load_bundle(directory, verify=True)
    m = b.manifest
    output.result(f"bundle {directory}: Kubernetes v{m.kubernetes_version} for {m.distribution}/{m.arch} from "
                  f"{m.source}: {len(m.entries)} artifacts, {m.total_bytes() / 2**20:.0f} MiB, every sha256 verified")
    for g in GROUPS:
        es = [e for e in m.entries if e.group == g]
        kinds = ", ".join(f"{k}: {sum(e.kind == k for e in es)}" for k in ("package", "image", "binary")
                          if any(e.kind == k for e in es))
        output.result(f"  {g:<6} {sum(e.size for e in es) / 2**20:7.1f} MiB  {kinds or 'empty'}")


@main.command()
def phases() -> None:
    """List the phases of `up` with their paths (for --only and --skip-phases)."""
    from kubeboot.phases.workflows import describe
    from kubeboot.workflows.up import UP

    output.result(describe(UP))


def _connect_options(f: Callable[..., None]) -> Callable[..., None]:
    """SSH flags and -o of the read-only commands (status, certs check-expiration)."""
    f = click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="text for people; json for scripts (a stable document, see README).")(f)
    return _ssh_options(f)


def _ssh_options(f: Callable[..., None]) -> Callable[..., None]:
    """How to reach the hosts (every command that connects without being `up`)."""
    opts = [
        click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 256),
                     help="Hosts worked on at once."),
        *_HOST_KEYS_AND_SSH_CONFIG,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _connect(concurrency: int, known_hosts: Path, accept_new_host_keys: bool, ssh_config: Path | None
             ) -> ConnectOptions:
    from kubeboot.runner import ConnectOptions, _default_ssh_config

    return ConnectOptions(known_hosts.expanduser(), accept_new_host_keys, ssh_config or _default_ssh_config(),
                          concurrency)


@main.command()
@_inventory
@_state_dir
@_connect_options
def status(inventory: Path, state_dir: Path | None, fmt: str, **connect: object) -> None:
    """Health of every host and of the cluster: reachable, containerd and kubelet, static pods (the runtime's
    containers and their mirror pods), etcd members and quorum, API servers, earliest certificate expiry, load-balancer
    backends. Reads only. Exit 0 healthy, 19 degraded, 20 etcd quorum lost."""
    import json

    from kubeboot.plan.status import as_json, render_text
    from kubeboot.workflows.status import exit_error
    from kubeboot.workflows.status import status as do_status

    report = do_status(inventory, state_dir, _connect(**connect))  # type: ignore[arg-type]
    if fmt == "json":
        output.result(json.dumps(as_json(report), indent=2))
    else:
        for line in render_text(report):
            output.result(line)
    err = exit_error(report)
    if err is not None:
        raise err


@main.command()
@_inventory
@_state_dir
@click.option("--hosts", default=None, metavar="A,B", help="Reset only these hosts (default: every node).")
@click.option("--force", is_flag=True, help="Leave etcd even when the remaining members would lose quorum.")
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation after the plan.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@_ssh_options
def reset(inventory: Path, state_dir: Path | None, hosts: str | None, force: bool, yes: bool, dry_run: bool,
          **connect: object) -> None:
    """Undo `up` on hosts, as kubeadm reset does: out of the load balancers, out of etcd (quorum-checked), kubelet
    stopped, containers, /etc/kubernetes, /var/lib/kubelet, /var/lib/etcd, CNI state and iptables/IPVS rules removed
    (default policies set to ACCEPT first, so SSH stays up). Packages, containerd and images stay. Plans first."""
    from kubeboot.workflows.reset import ResetRequest

    req = ResetRequest(inventory, state_dir, tuple(_csv(hosts)), force=force, dry_run=True,
                       connect=_connect(**connect))  # type: ignore[arg-type]
    _reset(req, yes, dry_run, "reset")


@main.command("remove-node")
@click.argument("name")
@_inventory
@_state_dir
@click.option("--drain-timeout", default=300.0, show_default=True, type=click.FloatRange(0.0),
              help="Seconds the pods get to be evicted (PodDisruptionBudgets respected).")
@click.option("--force", is_flag=True, help="Remove a control plane even when etcd would lose quorum.")
@click.option("--unreachable", is_flag=True,
              help="NAME is gone (dead, powered off, unreachable): do not connect to it, drain it or reset it; take it "
                   "out of etcd, every load balancer and the API only.")
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation after the plan.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@_ssh_options
def remove_node(name: str, inventory: Path, state_dir: Path | None, drain_timeout: float, force: bool,
                unreachable: bool, yes: bool, dry_run: bool, **connect: object) -> None:
    """Take NAME out of the cluster: drain it, take its API server out of every load balancer and its member out of
    etcd (a control plane; refused with exit 21 when quorum would be lost), reset the host, delete its Node. Then
    remove it from the inventory, or the next `up` joins it again. A host that is gone: --unreachable."""
    from kubeboot.workflows.reset import ResetRequest

    req = ResetRequest(inventory, state_dir, (name,), force=force, dry_run=True, drain_timeout=drain_timeout,
                       unreachable=unreachable, connect=_connect(**connect))  # type: ignore[arg-type]
    _reset(req, yes, dry_run, "remove-node")
    if not dry_run:
        output.result(f"{name} is out of the cluster: remove it from {inventory}, or the next `kubeboot up` joins it "
                      f"again")


def _reset(req: object, yes: bool, dry_run: bool, verb: str) -> None:
    """Plan, confirm, apply (reset and remove-node)."""
    from kubeboot.workflows.reset import ResetRequest
    from kubeboot.workflows.reset import reset as do_reset

    assert isinstance(req, ResetRequest)
    rep = output.Reporter()
    planned = do_reset(req, rep)
    count = sum(len(v) for v in planned.planned.values())
    if not count:
        rep.done(f"no changes: nothing to {verb.replace('-', ' ')}")
        return
    if dry_run:
        rep.done(f"plan: {count} change(s); nothing was changed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise KubebootError(f"{verb} needs a confirmation and there is no terminal to ask",
                                hint="read the plan above and pass --yes")
        click.confirm(f"{verb}: apply these {count} change(s)?", abort=True, err=True)
    result = do_reset(replace(req, dry_run=False), rep)
    rep.done(f"{result.changes} change(s) applied")


@main.group()
def etcd() -> None:
    """The cluster's etcd (stacked on the control planes)."""


@etcd.group()
def snapshot() -> None:
    """Save etcd to this workstation; restore every member from such a file."""


@snapshot.command("save")
@_inventory
@_state_dir
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the snapshot here (and FILE.json beside it). Default: <state dir>/snapshots/<cluster>-<time>.db")
@_ssh_options
def etcd_snapshot_save(inventory: Path, state_dir: Path | None, out: Path | None, **connect: object) -> None:
    """`etcdctl snapshot save` on a healthy member, streamed over SSH to FILE (0600: it holds the Secrets), with
    FILE.json recording the etcd version, cluster ID, members, revision, cluster, time and sha256."""
    from kubeboot.workflows.etcd import SaveRequest, save

    rep = output.Reporter()
    dest, meta = save(SaveRequest(inventory, state_dir, out, _connect(**connect)), rep)  # type: ignore[arg-type]
    rep.done(f"snapshot {dest}: revision {meta.revision}, {meta.size} bytes, sha256 {meta.sha256[:16]}...")


@snapshot.command("restore")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@_inventory
@_state_dir
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation after the plan.")
@click.option("--dry-run", is_flag=True, help="Check the file, print the plan and stop.")
@click.option("--wait-timeout", default=240.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds the static pods get to stop, and the restored members and API servers to be healthy.")
@_ssh_options
def etcd_snapshot_restore(file: Path, inventory: Path, state_dir: Path | None, yes: bool, dry_run: bool,
                          wait_timeout: float, **connect: object) -> None:
    """Put every etcd member back to FILE: check it (sha256, etcd's hash, this cluster's CA), upload it, stop the
    control planes' static pods, restore each member's data dir (old one kept as /var/lib/etcd.before-restore-TIME),
    start them, wait until etcd and every API server are healthy. Everything written after the snapshot is lost."""
    from datetime import datetime, timezone

    from kubeboot.workflows.etcd import RestoreRequest
    from kubeboot.workflows.etcd import restore as do_restore

    req = RestoreRequest(inventory, state_dir, file, True, wait_timeout, _connect(**connect),  # type: ignore[arg-type]
                         datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    rep = output.Reporter()
    planned = do_restore(req, rep)
    count = sum(len(v) for v in planned.planned.values())
    if dry_run:
        rep.done(f"plan: {count} change(s); nothing was changed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise KubebootError("restore needs a confirmation and there is no terminal to ask",
                                hint="read the plan above and pass --yes")
        click.confirm(f"restore: stop the control planes and replace etcd's data with {file}?", abort=True, err=True)
    result = do_restore(replace(req, dry_run=False), rep)
    rep.done(f"etcd restored from {file} ({result.changes} change(s))")


@main.command()
@_inventory
@_state_dir
@click.option("--to", "to", required=True, metavar="VERSION",
              help="The version to upgrade to: 1.MINOR (its newest patch) or 1.MINOR.PATCH; one minor at a time.")
@click.option("--dry-run", is_flag=True, help="Print the plan per host (versions, skew checks), change nothing.")
@click.option("--images", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of image archives (overrides spec.images.archiveDir).")
@click.option("--wait-timeout", default=300.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds a restarted component or kubelet gets to come back.")
@click.option("--drain-timeout", default=300.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds a drain waits for evictions (PodDisruptionBudgets respected).")
@click.option("--worker-batch", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Workers upgraded at the same time.")
@click.option("--force", is_flag=True, help="Upgrade although the cluster is not healthy.")
@_ssh_options
def upgrade(inventory: Path, state_dir: Path | None, to: str, dry_run: bool, images: Path | None,
            wait_timeout: float, drain_timeout: float, worker_batch: int, force: bool, **connect: object) -> None:
    """Upgrade the cluster to --to, as kubeadm's upgrade recipe does, with the API answering through the load
    balancer: an etcd snapshot, then one control plane at a time (certificates renewed, etcd, API server,
    controller-manager, scheduler, then its kubelet with drain/uncordon), the cluster's configuration and addons,
    then the workers in batches. A run that stopped continues; on an upgraded cluster it changes nothing. Then set
    spec.kubernetesVersion in the inventory."""
    from kubeboot.workflows.upgrade import UpgradeRequest
    from kubeboot.workflows.upgrade import upgrade as do_upgrade

    rep = output.Reporter()
    req = UpgradeRequest(inventory, state_dir, to, dry_run, _connect(**connect), images,  # type: ignore[arg-type]
                         wait_timeout, drain_timeout, worker_batch, force)
    result = do_upgrade(req, rep)
    planned = sum(len(v) for v in result.planned.values())
    if dry_run:
        rep.done(f"plan: {planned} change(s); nothing was changed")
    else:
        rep.done(f"{result.changes} change(s) applied" if result.changes else "no changes: the cluster runs the "
                                                                             "target already")


@main.command()
@_inventory
@_state_dir
@click.option("--dry-run", is_flag=True, help="Connect and gather facts, print the plan, change nothing.")
@_run_options
def up(**kw: object) -> None:
    """Build or converge the whole cluster: preflight, prepare, runtime, images, load balancer, files, init, control
    plane joins (one at a time), worker joins, CNI, kubectl. A re-run changes only what differs (`kubeboot phases`)."""
    _do_up(**kw)  # type: ignore[arg-type]


@main.command()
@_inventory
@_state_dir
@_run_options
def plan(**kw: object) -> None:
    """Show, per host and phase, the files kubeboot would write (diffs for non-secret files) and the commands
    it would run. Connects and reads; changes nothing. Same as `up --dry-run`."""
    _do_up(dry_run=True, **kw)  # type: ignore[arg-type]


@main.command("kubeconfig")
@_inventory
@_state_dir
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write it to FILE (mode 0600) instead of printing it.")
def kubeconfig_cmd(inventory: Path, state_dir: Path | None, out: Path | None) -> None:
    """The cluster's admin kubeconfig for this workstation (from the state directory `up` keeps)."""
    from kubeboot.workflows.kubeconfig import admin_kubeconfig, write_kubeconfig

    data = admin_kubeconfig(inventory, state_dir)
    if out is None:
        output.secret_result(data.decode().rstrip("\n"))  # asked for: it holds the admin client key
        return
    write_kubeconfig(out, data)
    output.Reporter().info("kubeconfig", None, f"wrote {out} (0600); try: kubectl --kubeconfig {out} get nodes")


_kubeconfig = click.option("--kubeconfig", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                           default=Path("/etc/kubernetes/admin.conf"), show_default=True,
                           help="Credentials for the API server (a control plane's admin.conf).")


@main.group()
def token() -> None:
    """Manage bootstrap tokens (kubeadm-compatible: bootstrap-token-<id> Secrets in kube-system)."""


@token.command("create")
@_kubeconfig
@click.option("--ttl", default="24h", show_default=True, help="Lifetime (e.g. 24h, 90m); 0 never expires.")
@click.option("--description", default="", help="Shown by `token list`.")
@click.option("--print-join-command", is_flag=True, help="Print the full `kubeboot join` command for a worker.")
def token_create(kubeconfig: Path, ttl: str, description: str, print_join_command: bool) -> None:
    """Create a bootstrap token and print it (the one place, with init, where a token is shown)."""
    from kubeboot.apiphases import join_commands, kubeconfig_server_and_ca, parse_ttl
    from kubeboot.kube import client as kc
    from kubeboot.pki.tokens import generate_token

    tok = generate_token(kc.now_utc(), parse_ttl(ttl))
    kc.create_token(kc.from_kubeconfig(kubeconfig), tok, description)
    if print_join_command:
        server, ca = kubeconfig_server_and_ca(kubeconfig)
        output.secret_result(join_commands(server.removeprefix("https://"), tok, ca, None).worker)
    else:
        output.secret_result(str(tok))


@token.command("list")
@_kubeconfig
def token_list(kubeconfig: Path) -> None:
    """List bootstrap tokens by id (secrets are never shown)."""
    from kubeboot.kube import client as kc

    output.result(f"{'TOKEN ID':<9} {'EXPIRES':<21} {'USAGES':<30} {'GROUPS':<50} DESCRIPTION")
    for t in kc.list_tokens(kc.from_kubeconfig(kubeconfig)):
        output.result(f"{t.id:<9} {t.expires:<21} {','.join(t.usages) or '-':<30} {','.join(t.groups) or '-':<50} "
                      f"{t.description}")


@token.command("delete")
@_kubeconfig
@click.argument("tokens", nargs=-1, required=True)
def token_delete(kubeconfig: Path, tokens: tuple[str, ...]) -> None:
    """Delete tokens given by id or as id.secret."""
    from kubeboot.kube import client as kc

    api = kc.from_kubeconfig(kubeconfig)
    for t in tokens:
        tid = t.split(".", 1)[0]
        if not re.fullmatch(r"[a-z0-9]{6}", tid):
            raise ConfigError([Problem("TOKEN", f"{tid!r} is not a token id ([a-z0-9]{{6}})")], source="arguments")
        output.result(f"bootstrap token {tid} " + ("deleted" if kc.delete_token(api, tid) else "did not exist"))


@main.group()
def certs() -> None:
    """Certificate helpers."""


@certs.command("check-expiration")
@_inventory
@_state_dir
@_connect_options
def certs_check_expiration(inventory: Path, state_dir: Path | None, fmt: str, **connect: object) -> None:
    """kubeadm's `certs check-expiration` on every control plane, read over SSH: each certificate and kubeconfig, when
    it expires, the residual time by the host's clock, its CA, whether it is externally managed (CA key absent)."""
    import json

    from kubeboot.errors import HostConnectionError
    from kubeboot.pki.expiry import render_tables
    from kubeboot.workflows.certs import as_json, check_expiration

    rows = check_expiration(inventory, state_dir, _connect(**connect))  # type: ignore[arg-type]
    if fmt == "json":
        output.result(json.dumps(as_json(rows), indent=2))
    else:
        for r in rows:
            where = f"[check-expiration] {r.host.name} ({r.host.address})"
            if r.error is not None or r.now is None:
                output.result(f"{where}: {r.error}\n")
                continue
            output.result(f"{where}, host clock {r.now.strftime('%Y-%m-%d %H:%M UTC')}:")
            output.result(render_tables(r.certificates, r.authorities, r.now) + "\n")
    failed = [f"{r.host.name}: {r.error}" for r in rows if r.error is not None]
    if failed:
        raise HostConnectionError(f"{len(failed)} control plane(s) could not be read:\n  " + "\n  ".join(failed))


@certs.command("renew")
@click.argument("names", nargs=-1, required=True)
@_inventory
@_state_dir
@click.option("--dry-run", is_flag=True, help="Print what would be renewed and restarted; change nothing.")
@click.option("--wait-timeout", default=240.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds each restarted component gets to come back.")
@_ssh_options
def certs_renew(names: tuple[str, ...], inventory: Path, state_dir: Path | None, dry_run: bool, wait_timeout: float,
                **connect: object) -> None:
    """Renew `all` or the NAMEd certificates (kubeadm's names: apiserver, etcd-server, admin.conf, ...) from the
    existing CAs on every control plane, one at a time: its API server leaves the load balancer while it restarts,
    exactly the static pods that read a renewed file are restarted, and it rejoins once ready."""
    from kubeboot.workflows.renew import RenewRequest, renew

    rep = output.Reporter()
    result = renew(RenewRequest(inventory, state_dir, names, dry_run, _connect(**connect),  # type: ignore[arg-type]
                                wait_timeout), rep)
    planned = sum(len(v) for v in result.planned.values())
    rep.done(f"plan: {planned} change(s); nothing was changed" if dry_run else f"{result.changes} change(s) applied")


@certs.command("certificate-key")
def certs_certificate_key() -> None:
    """Print a new random certificate key (64 hex characters) for upload-certs / join --control-plane."""
    from kubeboot.pki.protocol import new_certificate_key

    output.secret_result(new_certificate_key())


@main.group(invoke_without_command=True)
@click.option("--control-plane-endpoint", default=None, metavar="HOST:PORT",
              help="The stable endpoint (load balancer) every kubeconfig and join uses.")
@click.option("--apiserver-advertise-address", default=None, help="This node's address.")
@click.option("--node-name", default=None, help="Node name (default: this host's name, lower-cased).")
@click.option("--kubernetes-version", default="1.37", show_default=True)
@click.option("--pod-network-cidr", default="10.244.0.0/16", show_default=True)
@click.option("--service-cidr", default="10.96.0.0/12", show_default=True)
@click.option("--apiserver-cert-extra-sans", default=None, metavar="A,B", help="Extra SANs for the API server.")
@click.option("--upload-certs", is_flag=True, help="Store the shared certificates for control-plane joins (2h).")
@click.option("--certificate-key", default=None, help="Key for --upload-certs (default: a new one).")
@click.option("--rootfs", type=click.Path(path_type=Path, file_okay=False), default=Path("/"), show_default=True,
              help="Write the node's files below this directory instead of / (the kubelet is then not started).")
@click.option("--wait-timeout", default=240.0, show_default=True, help="Seconds to wait for the API server.")
@click.pass_context
def init(ctx: click.Context, control_plane_endpoint: str | None, apiserver_advertise_address: str | None,
         node_name: str | None, kubernetes_version: str, pod_network_cidr: str, service_cidr: str,
         apiserver_cert_extra_sans: str | None, upload_certs: bool, certificate_key: str | None, rootfs: Path,
         wait_timeout: float) -> None:
    """Initialise the first control plane on this node (kubeadm init); `init phase ...` runs single phases.

    Prints the `kubeboot join` commands for workers and (with --upload-certs) control planes.
    """
    if ctx.invoked_subcommand is not None:
        return
    import socket

    from kubeboot.initnode import InitRequest
    from kubeboot.initnode import init as do_init

    problems = []
    if not control_plane_endpoint:
        problems.append(Problem("--control-plane-endpoint", "required (HOST:PORT of the load balancer)"))
    if not apiserver_advertise_address:
        problems.append(Problem("--apiserver-advertise-address", "required"))
    if problems:
        raise ConfigError(problems, source="init flags")
    assert control_plane_endpoint and apiserver_advertise_address
    req = InitRequest(control_plane_endpoint, apiserver_advertise_address,
                      (node_name or socket.gethostname()).lower(), kubernetes_version, pod_network_cidr,
                      service_cidr, "cluster.local", tuple(_csv(apiserver_cert_extra_sans)), "RSA-2048",
                      upload_certs, certificate_key, rootfs, wait_timeout)
    rep = output.Reporter()
    result = do_init(req, rep)
    rep.done(f"control plane initialised ({len(result.written)} file(s) written)")
    output.error("Join workers with:")
    output.secret_result(result.worker_join)
    if result.control_plane_join:
        output.error("Join control planes (the certificate key expires in 2 hours) with:")
        output.secret_result(result.control_plane_join)


@init.group("phase")
def init_phase() -> None:
    """Run one phase of init against the API server."""


@init_phase.command("upload-certs")
@_kubeconfig
@click.option("--upload-certs", "do_upload", is_flag=True, required=True,
              help="Upload the shared certificates (required, as with kubeadm).")
@click.option("--certificate-key", default=None, help="Key to encrypt with (default: a new one, printed).")
@click.option("--cert-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/etc/kubernetes/pki"),
              show_default=True)
def init_phase_upload_certs(kubeconfig: Path, do_upload: bool, certificate_key: str | None, cert_dir: Path) -> None:
    """Encrypt the CA, front-proxy CA, etcd CA and sa keys into the kubeadm-certs Secret (2-hour lifetime)."""
    from kubeboot.apiphases import upload_certs_phase
    from kubeboot.kube import client as kc

    if not do_upload:
        raise ConfigError([Problem("--upload-certs", "required")], source="flags")
    key = upload_certs_phase(kc.from_kubeconfig(kubeconfig), cert_dir, certificate_key)
    output.error("[upload-certs] stored the certificates in Secret kube-system/kubeadm-certs; key (valid 2h):")
    output.secret_result(key)


@init_phase.command("bootstrap-token")
@_kubeconfig
@click.option("--super-admin-kubeconfig", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("/etc/kubernetes/super-admin.conf"), show_default=True,
              help="Used once to create the kubeadm:cluster-admins binding if admin.conf is still forbidden.")
@click.option("--print-join-command", is_flag=True, help="Create a token too and print the worker join command.")
def init_phase_bootstrap_token(kubeconfig: Path, super_admin_kubeconfig: Path, print_join_command: bool) -> None:
    """Create the node-bootstrap RBAC, cluster-info (and its anonymous read) and, optionally, a token."""
    from kubeboot.apiphases import bootstrap_token_phase, join_commands, kubeconfig_server_and_ca
    from kubeboot.kube import client as kc
    from kubeboot.pki.tokens import generate_token

    admin = kc.from_kubeconfig(kubeconfig)
    sup = kc.from_kubeconfig(super_admin_kubeconfig) if super_admin_kubeconfig.exists() else None
    kc.ensure_admin_binding(admin, sup)
    server, ca = kubeconfig_server_and_ca(kubeconfig)
    tokens = [generate_token(kc.now_utc())] if print_join_command else []
    result = bootstrap_token_phase(admin, None, server, ca, tokens)
    changed = [k for k, v in result.items() if v != "unchanged"]
    output.error(f"[bootstrap-token] {len(changed)} object(s) created or updated, "
                 f"{len(result) - len(changed)} unchanged")
    if tokens:
        output.secret_result(join_commands(server.removeprefix("https://"), tokens[0], ca, None).worker)


@init_phase.command("upload-config")
@_kubeconfig
@_inventory
def init_phase_upload_config(kubeconfig: Path, inventory: Path) -> None:
    """Store the ClusterConfiguration (kubeadm-config) and KubeletConfiguration (kubelet-config) that joining
    nodes read, with the RBAC that lets them."""
    from kubeboot.apiphases import upload_config_phase
    from kubeboot.kube import client as kc
    from kubeboot.offline import load_inventory

    result = upload_config_phase(kc.from_kubeconfig(kubeconfig), load_inventory(inventory))
    for name, outcome in result.items():
        output.error(f"[upload-config] {name}: {outcome}")


@main.command()
@click.argument("endpoint")
@click.option("--token", "token_text", required=True, help="Bootstrap token id.secret (for discovery and TLS bootstrap).")
@click.option("--discovery-token-ca-cert-hash", "pins", multiple=True,
              help="sha256:<hex> pin of the cluster CA's public key (repeatable: any may match).")
@click.option("--discovery-token-unsafe-skip-ca-verification", "unsafe", is_flag=True,
              help="Trust the CA found in cluster-info without a pin (unsafe: the token alone authenticates it).")
@click.option("--control-plane", is_flag=True, help="Join as a control plane (needs --certificate-key).")
@click.option("--certificate-key", default=None, help="Key printed by init / upload-certs (64 hex).")
@click.option("--apiserver-advertise-address", default=None, help="This control plane's address.")
@click.option("--node-name", default=None, help="Node name (default: this host's name, lower-cased).")
@click.option("--node-ip", default=None, help="Address the kubelet registers (--node-ip).")
@click.option("--rootfs", type=click.Path(path_type=Path, file_okay=False), default=Path("/"), show_default=True,
              help="Write the node's files below this directory instead of / .")
@click.option("--discovery-timeout", default=300.0, show_default=True, help="Seconds to wait for discovery.")
def join(endpoint: str, token_text: str, pins: tuple[str, ...], unsafe: bool, control_plane: bool,
         certificate_key: str | None, apiserver_advertise_address: str | None, node_name: str | None,
         node_ip: str | None, rootfs: Path, discovery_timeout: float) -> None:
    """Join this node to a cluster with kubeadm's protocol (token discovery, CA pin, certificate key)."""
    import socket

    from kubeboot.join import JoinRequest
    from kubeboot.join import join as do_join

    req = JoinRequest(endpoint, token_text, pins, (node_name or socket.gethostname()).lower(), rootfs,
                      control_plane, certificate_key, apiserver_advertise_address, node_ip, unsafe,
                      discovery_timeout, min(5.0, discovery_timeout / 4))
    rep = output.Reporter()
    result = do_join(req, rep)
    rep.done(f"joined as {'control plane' if control_plane else 'worker'}: {len(result.written)} file(s) written"
             + (f", etcd member {result.etcd_member}" if result.etcd_member else ""))


_sandbox_name = click.option("--name", default="sandbox", show_default=True, metavar="NAME",
                             help="Which sandbox (several can run side by side, each on its own subnet).")


@main.group()
def sandbox() -> None:
    """A real HA cluster on this Linux machine: systemd hosts on a private bridge, built by `kubeboot up` over SSH
    (as root; nothing is added to the machine's own network)."""


@sandbox.command("up")
@_sandbox_name
@click.option("--control-planes", default=3, show_default=True, type=int, help="Control planes (odd, 1-7).")
@click.option("--workers", default=2, show_default=True, type=int, help="Workers (0-200; memory permitting).")
@click.option("--lb", default="external-nginx", show_default=True, type=click.Choice(["external-nginx", "node-local"]),
              help="An nginx host in front of the API servers, or nginx on 127.0.0.1 on every worker.")
@click.option("--version", "version", default=None, metavar="V",
              help="Kubernetes version (default: the bundle's, else kubeboot's default).")
@click.option("--bundle", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Offline bundle to install from (default: the one `kubeboot bundle build` caches for the "
                   "version).")
@click.option("--subnet", default="10.200.0.0/24", show_default=True, metavar="CIDR",
              help="The hosts' private /24 (it only exists inside the sandbox's namespaces).")
@click.option("--wait-timeout", default=240.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds each API server and kubelet get to become ready (kubeboot up --wait-timeout).")
def sandbox_up(name: str, control_planes: int, workers: int, lb: str, version: str | None, bundle: Path | None,
               subnet: str, wait_timeout: float) -> None:
    """Create the sandbox's hosts and build the cluster on them; a second run changes nothing."""
    from kubeboot.bundle.manifest import read_manifest
    from kubeboot.bundle.build import target_version
    from kubeboot.sandbox.shape import Shape
    from kubeboot.workflows import sandbox as sb

    if version is None and bundle is not None:
        version = read_manifest(bundle).kubernetes_version
    shape = Shape(control_planes, workers, lb, target_version(version), subnet)
    rep = output.Reporter()
    run = sb.up(sb.UpRequest(name, shape, bundle, wait_timeout), rep)
    output.result(sb.nodes_table(run))
    output.result(sb.how_to_reach(run))
    rep.done(f"sandbox {name!r} is up: {shape.control_planes} control planes, {shape.workers} workers")


@sandbox.command("status")
@_sandbox_name
def sandbox_status(name: str) -> None:
    """The sandbox's hosts and `kubeboot status` of its cluster (exit 19/20 as kubeboot status)."""
    from kubeboot.workflows import sandbox as sb

    raise SystemExit(sb.status(name, output.Reporter()))


@sandbox.command("ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_sandbox_name
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def sandbox_ssh(name: str, node: str, command: tuple[str, ...]) -> None:
    """Log in to a sandbox host as root (or run COMMAND there), host key verified."""
    from kubeboot.workflows import sandbox as sb

    sb.exec_ssh(name, node, command)


@sandbox.command("kubectl", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_sandbox_name
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sandbox_kubectl(name: str, args: tuple[str, ...]) -> None:
    """kubectl against the sandbox's cluster as its admin, e.g. `kubeboot sandbox kubectl get pods -A`."""
    from kubeboot.workflows import sandbox as sb

    sb.exec_kubectl(name, args)


@sandbox.command("down")
@_sandbox_name
def sandbox_down(name: str) -> None:
    """Stop and remove every host and everything the sandbox made (namespaces, mounts, cgroups, files); also
    cleans up a sandbox whose processes were killed."""
    from kubeboot.workflows import sandbox as sb

    rep = output.Reporter()
    left = sb.down(name, rep)
    if left:
        raise KubebootError(f"sandbox {name!r}: could not remove: {'; '.join(left)}",
                            hint="run `kubeboot sandbox down` again; if it stays, remove these by hand")
    rep.done(f"sandbox {name!r} removed: no namespaces, mounts, cgroups, processes or files left")


if __name__ == "__main__":  # pragma: no cover
    main()
