"""Shell: click commands only. The one place where errors become messages and exit codes."""

from __future__ import annotations

import sys
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


if __name__ == "__main__":  # pragma: no cover
    main()
