"""Shell: click commands only. The one place where errors become messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from kubeboot import __version__, output
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES, SUPPORTED_MINORS
from kubeboot.errors import ConfigError, KubebootError


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (secrets are still redacted in output).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """kubeboot: kubeadm-compatible, highly available Kubernetes clusters on SSH-reachable Linux hosts.

    Exit codes: 0 ok, 1 internal, 2 usage, 3 invalid inventory/flags, 4 inconsistent state directory,
    5 preflight, 6 remote command, 7 hosts failed, 8 connection, 9 authentication, 10 host key, 11 sudo,
    12 join/discovery.
    """
    ctx.meta["kubeboot.debug"] = debug


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
        click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
                     default=Path("~/.ssh/known_hosts").expanduser(), show_default=True,
                     help="Host keys are verified against this file."),
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Trust host keys seen for the first time and record them (changed keys are still refused)."),
        click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                     help="An OpenSSH client config to honour (ProxyCommand, ...)."),
        click.option("--disable-firewall", is_flag=True, help="Disable firewalld/ufw instead of opening ports."),
        click.option("--offline-packages", type=click.Path(path_type=Path, file_okay=False),
                     help="Install containerd/kubelet/kubectl from the .deb/.rpm files in this directory."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _do_up(inventory: Path, state_dir: Path | None, dry_run: bool, only: tuple[str, ...], skip_phases: str | None,
           ignore_preflight_errors: str | None, concurrency: int, known_hosts: Path, accept_new_host_keys: bool,
           ssh_config: Path | None, disable_firewall: bool, offline_packages: Path | None) -> None:
    from kubeboot.phases.base import RunOptions
    from kubeboot.runner import ConnectOptions
    from kubeboot.up import UpRequest, load_offline_packages, up

    options = RunOptions(
        ignore_preflight_errors=frozenset(x.lower() for x in _csv(ignore_preflight_errors)),
        disable_firewall=disable_firewall,
        offline_packages=load_offline_packages(offline_packages) if offline_packages else (),
    )
    req = UpRequest(inventory, state_dir, tuple(only), tuple(_csv(skip_phases)), dry_run, options,
                    ConnectOptions(known_hosts.expanduser(), accept_new_host_keys, ssh_config, concurrency))
    rep = output.Reporter()
    _rendered, result = up(req, rep)
    if dry_run:
        planned = sum(len(v) for v in result.planned.values())
        rep.done(f"plan: {planned} change(s); nothing was changed" if planned else "plan: no changes")
    else:
        rep.done(f"{result.changes} change(s) applied" if result.changes else "no changes: the hosts already match")


@main.command()
def phases() -> None:
    """List the phases of `up` with their paths (for --only and --skip-phases)."""
    from kubeboot.phases.workflows import UP, describe

    output.result(describe(UP))


@main.command()
@_inventory
@_state_dir
@click.option("--dry-run", is_flag=True, help="Connect and gather facts, print the plan, change nothing.")
@_run_options
def up(**kw: object) -> None:
    """Bring every host in the inventory to the desired state (preflight, prepare, runtime, files)."""
    _do_up(**kw)  # type: ignore[arg-type]


@main.command()
@_inventory
@_state_dir
@_run_options
def plan(**kw: object) -> None:
    """Show, per host and phase, the files kubeboot would write (diffs for non-secret files) and the commands
    it would run. Connects and reads; changes nothing. Same as `up --dry-run`."""
    _do_up(dry_run=True, **kw)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    main()
