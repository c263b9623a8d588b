"""Shell: `kubeboot up` / `kubeboot plan` — render from inventory + state, then run the workflow on the hosts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kubeboot import output
from kubeboot.errors import ConfigError, ImageArchiveError, Problem
from kubeboot.offline import RenderResult, render
from kubeboot.phases.base import RunOptions
from kubeboot.phases.workflows import UP
from kubeboot.plan.archives import ArchiveError, ImageArchive, read_archive
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts
from kubeboot.render.cluster import RenderHints, render_cluster
from kubeboot.render.images import required_images
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
    images: Path | None = None  # --images DIR (overrides spec.images.archiveDir)


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


def archive_dir(req: UpRequest, cfg_dir: str | None) -> tuple[Path, str] | None:
    if req.images is not None:
        return req.images, "--images"
    if cfg_dir:
        d = Path(cfg_dir).expanduser()
        return (d if d.is_absolute() else req.inventory.parent / d), "spec.images.archiveDir"
    return None


def up(req: UpRequest, reporter: output.Reporter,
       transports: Mapping[str, Transport] | None = None) -> tuple[RenderResult, RunResult]:
    rendered = render(req.inventory, req.state_dir)
    for w in rendered.config.warnings:
        reporter.warn("config", None, w)
    options = req.options
    where = archive_dir(req, rendered.config.image_archive_dir)
    if where is not None:
        archives = load_image_archives(*where)
        options = replace(options, image_archives=archives)
        have = {ref for _p, a in archives for ref in a.refs}
        missing = [ref for ref in required_images(rendered.config) if ref not in have]
        if missing:
            reporter.warn("images", None, f"{len(missing)} image(s) the cluster needs are in no archive of "
                                          f"{where[0]} (nodes must pull them): {', '.join(missing)}")

    def rerender(facts: Mapping[str, HostFacts]) -> Mapping[str, tuple[Artifact, ...]]:
        per_host = {name: RenderHints(ca_dirs=tuple(sorted(f.dirs))) for name, f in facts.items()}
        return render_cluster(rendered.config, rendered.pki, rendered.token, per_host)

    trace = TraceLog(rendered.state_dir / "trace.log")
    runner = Runner(rendered.config, rendered.hosts, options, req.connect, reporter, trace, transports,
                    rerender)
    try:
        result = runner.run(UP, req.only, req.skip, req.dry_run)
    finally:
        runner.close()
    return rendered, result
