"""Shell: `kubeboot up` / `kubeboot plan` — render from inventory + state, then run the workflow on the hosts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeboot import output
from kubeboot.errors import ConfigError, Problem
from kubeboot.offline import RenderResult, render
from kubeboot.phases.base import RunOptions
from kubeboot.phases.workflows import UP
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts
from kubeboot.render.cluster import RenderHints, render_cluster
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog
from kubeboot.transport.base import Transport


@dataclass(frozen=True)
class UpRequest:
    inventory: Path
    state_dir: Path | None
    only: Sequence[str] = ()
    skip: Sequence[str] = ()
    dry_run: bool = False
    options: RunOptions = RunOptions()
    connect: ConnectOptions = ConnectOptions()


def load_offline_packages(directory: Path) -> tuple[tuple[str, bytes], ...]:
    if not directory.is_dir():
        raise ConfigError([Problem("--offline-packages", f"{directory} is not a directory")], source="flags")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".deb", ".rpm") and p.is_file())
    if not files:
        raise ConfigError([Problem("--offline-packages", f"{directory} holds no .deb or .rpm files")], source="flags")
    return tuple((p.name, p.read_bytes()) for p in files)


def up(req: UpRequest, reporter: output.Reporter,
       transports: Mapping[str, Transport] | None = None) -> tuple[RenderResult, RunResult]:
    rendered = render(req.inventory, req.state_dir)
    for w in rendered.config.warnings:
        reporter.warn("config", None, w)

    def rerender(facts: Mapping[str, HostFacts]) -> Mapping[str, tuple[Artifact, ...]]:
        per_host = {name: RenderHints(ca_dirs=tuple(sorted(f.dirs))) for name, f in facts.items()}
        return render_cluster(rendered.config, rendered.pki, rendered.token, per_host)

    trace = TraceLog(rendered.state_dir / "trace.log")
    runner = Runner(rendered.config, rendered.hosts, req.options, req.connect, reporter, trace, transports,
                    rerender)
    try:
        result = runner.run(UP, req.only, req.skip, req.dry_run)
    finally:
        runner.close()
    return rendered, result
