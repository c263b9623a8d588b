"""Shell: the pod network — the CNI plugin's objects (flannel by default) and the user's own manifests, applied
with the admin credentials; then, unless there is no network yet, every joined node is awaited Ready."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client as k8s

from kubeboot.config.model import CniPlugin
from kubeboot.errors import ConfigError, KubebootError, Problem
from kubeboot.workflows.controlplane import apply_objects
from kubeboot.workflows.session import Session

NODES_READY_TIMEOUT = 300.0


class NodesNotReadyError(KubebootError):
    exit_code = 6


def user_manifests(inventory: Path, files: tuple[str, ...]) -> list[dict[str, object]]:
    from kubeboot.render.cni import load_user_manifests

    texts = []
    for i, name in enumerate(files):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else inventory.parent / path
        try:
            texts.append((str(path), path.read_text()))
        except OSError as exc:
            raise ConfigError([Problem(f"spec.cni.manifests[{i}]", f"cannot read {path}: {exc.strerror}")],
                              source=str(inventory)) from None
    try:
        return load_user_manifests(texts)
    except ValueError as exc:
        raise ConfigError([Problem("spec.cni.manifests", str(exc))], source=str(inventory)) from None


def not_ready(api: k8s.ApiClient, names: list[str]) -> list[str]:
    ready = set()
    for node in k8s.CoreV1Api(api).list_node().items:
        for c in (node.status.conditions if node.status else None) or []:
            if c.type == "Ready" and c.status == "True" and node.metadata is not None:
                ready.add(node.metadata.name)
    return [n for n in names if n not in ready]


def cni(s: Session, inventory: Path) -> None:
    from kubeboot.render.cni import cni_objects

    s.start()
    objs = cni_objects(s.cfg) + user_manifests(inventory, s.cfg.cni.manifests)
    apply_objects(s, objs, server_side=True)
    if s.dry_run or (s.cfg.cni.plugin is CniPlugin.NONE and not s.cfg.cni.manifests):
        s.done()
        return
    names = [h.name for h in s.cfg.hosts if h.is_node and s.joined(h)]
    deadline = time.monotonic() + NODES_READY_TIMEOUT
    while waiting := not_ready(s.admin(), names):
        if time.monotonic() > deadline:
            raise NodesNotReadyError(f"[{s.path}] node(s) not Ready after {NODES_READY_TIMEOUT:.0f}s: "
                                     f"{', '.join(waiting)}",
                                     hint="kubectl -n kube-system get pods -o wide; journalctl -u kubelet on them")
        time.sleep(2.0)
    n = len(s.planned)
    s.done(f"{len(names)} node(s) Ready" + (f"; {n} change(s)" if n else "; no changes"))
