"""Shell (local disk only): `kubeboot render` — inventory + state in, per-host file tree + updated state out."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kubeboot import state
from kubeboot.config.load import load_inventory_text
from kubeboot.config.model import ClusterConfig, KeyAlgorithm
from kubeboot.errors import ConfigError, KubebootError, Problem
from kubeboot.pki.bundle import ClusterPki, PkiChange, plan_pki
from kubeboot.pki.tokens import BootstrapToken
from kubeboot.pki.keys import KeyGen, PrivateKey, generate_key
from kubeboot.plan.artifact import Artifact
from kubeboot.render.cluster import render_cluster

RENDER_MARKER = ".kubeboot-render"


def load_inventory(path: Path, version: str | None = None) -> ClusterConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "inventory file not found")], source=str(path)) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read inventory: {exc.strerror}")], source=str(path)) from None
    return load_inventory_text(text, source=str(path), version=version)


@dataclass(frozen=True)
class RenderResult:
    config: ClusterConfig
    hosts: dict[str, tuple[Artifact, ...]]
    pki: ClusterPki
    token: BootstrapToken
    pki_changes: list[PkiChange]
    token_created: bool
    state_dir: Path
    state_written: list[str]
    seconds_keys: float
    seconds_total: float


def render(inventory: Path, state_dir: Path | None, now: datetime | None = None,
           keygen: KeyGen = generate_key, renew: Callable[[ClusterConfig], Collection[str]] | None = None,
           version: str | None = None) -> RenderResult:
    """Decide every host's files; persist new key material to the state directory. `renew` names state entries
    (e.g. ``hosts/cp1/pki/apiserver``) to issue anew from the existing CAs (`kubeboot certs renew`). `version`
    stands for spec.kubernetesVersion (`kubeboot upgrade --to`)."""
    t0 = time.perf_counter()
    cfg = load_inventory(inventory, version)
    root = state_dir or state.default_state_dir(inventory, cfg.name)
    now = now or datetime.now(timezone.utc)
    stored = state.read_state(root)
    if renew is not None:
        again = set(renew(cfg))
        stored = {rel: data for rel, data in stored.items() if rel.rsplit(".", 1)[0] not in again}
    key_seconds = 0.0

    def timed_keygen(alg: KeyAlgorithm) -> PrivateKey:
        nonlocal key_seconds
        k0 = time.perf_counter()
        key = keygen(alg)
        key_seconds += time.perf_counter() - k0
        return key

    pki, changes = plan_pki(cfg, stored, now, timed_keygen)
    token, token_created = state.plan_token(stored, now)
    hosts = render_cluster(cfg, pki, token)
    new_state = {**stored, **pki.to_stored(), **state.token_entry(token)}
    written = state.write_state(root, new_state, state.read_state(root) if renew is not None else stored)
    return RenderResult(cfg, hosts, pki, token, changes, token_created, root, written, key_seconds, time.perf_counter() - t0)


def write_tree(out: Path, hosts: dict[str, tuple[Artifact, ...]]) -> int:
    """Write DIR/<host>/<absolute path>. DIR must be empty, absent, or a previous render (it is replaced)."""
    if out.exists():
        if not out.is_dir():
            raise KubebootError(f"output {out} exists and is not a directory", hint="choose another -o DIR")
        entries = [p for p in out.iterdir()]
        if entries and not (out / RENDER_MARKER).exists():
            raise KubebootError(f"output directory {out} is not empty and was not written by kubeboot render",
                                hint="choose an empty or new directory; kubeboot will not overwrite it")
        for entry in entries:
            if entry.name != RENDER_MARKER:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for host, artifacts in hosts.items():
        base = out / host
        base.mkdir(mode=0o755, exist_ok=True)
        for art in artifacts:
            target = base / art.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            state.write_atomic(target, art.content, art.mode)
            count += 1
    (out / RENDER_MARKER).write_text("written by kubeboot render; the whole directory is replaced on each run\n")
    return count
