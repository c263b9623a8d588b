"""Pure core: the pod network (CNI) a cluster runs, as Kubernetes objects to apply, and the user's own manifests.

The plugins' manifests are the upstream ones, shipped as package data (kubeboot/data/cni/) and parsed here; only
the fields that must follow the inventory are changed, on the parsed objects (never by editing YAML text):

* flannel: net-conf.json's pod network (``Network``, or ``IPv6Network`` with ``EnableIPv4: false`` for an IPv6
  pod subnet). flanneld with ``--kube-subnet-mgr`` takes each node's range from ``node.spec.podCIDR`` (allocated
  by kube-controller-manager from the same subnet), so the per-node size needs no flannel setting.
* calico: ``CALICO_IPV4POOL_CIDR`` (or ``CALICO_IPV6POOL_CIDR`` with IPv6 enabled) of the calico-node container,
  the default IP pool calico-node creates on first start.

Nothing here reads the inventory's files: callers pass the user's manifests as (display path, text).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from kubeboot.config.model import ClusterConfig, CniPlugin, IPNetwork
from kubeboot.errors import KubebootError

FLANNEL_MANIFEST = "flannel.yaml"
CALICO_MANIFEST = "calico.yaml"
FLANNEL_CONFIGMAP = "kube-flannel-cfg"
CALICO_NODE = "calico-node"

Obj = dict[str, Any]

# Kinds whose spec holds a pod template at spec.template (CronJob's is one level deeper: handled apart).
_POD_TEMPLATE_KINDS = ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job", "ReplicationController")


class ManifestNotShipped(KubebootError):
    """A plugin's manifest is not in this installation's package data."""


@lru_cache(maxsize=None)
def _shipped_text(name: str) -> str:
    path = resources.files("kubeboot") / "data" / "cni" / name
    if not path.is_file():
        raise ManifestNotShipped(f"kubeboot/data/cni/{name} is not part of this kubeboot installation",
                                 hint="install the plugin yourself: spec.cni.plugin: none and spec.cni.manifests")
    return path.read_text()


def shipped_manifest(name: str) -> list[Obj]:
    """The objects of one shipped manifest, in file order (a fresh copy on every call: callers may change them)."""
    return copy.deepcopy(list(_parse_shipped(name)))


@lru_cache(maxsize=None)
def _parse_shipped(name: str) -> tuple[Obj, ...]:
    return tuple(load_user_manifests([(f"kubeboot/data/cni/{name}", _shipped_text(name))]))


def cni_objects(cfg: ClusterConfig) -> list[Obj]:
    """The plugin's objects for this cluster, in apply order (the manifest's order); [] for plugin none."""
    plugin = cfg.cni.plugin
    if plugin is CniPlugin.FLANNEL:
        return flannel_objects(shipped_manifest(FLANNEL_MANIFEST), cfg.networking.pod_subnet)
    if plugin is CniPlugin.CALICO:
        return calico_objects(shipped_manifest(CALICO_MANIFEST), cfg.networking.pod_subnet)
    return []


def cni_images(cfg: ClusterConfig) -> list[str]:
    """Every image the plugin's pods run (init containers included), first use first, without repeats."""
    return objects_images(cni_objects(cfg))


def objects_images(objects: Sequence[Obj]) -> list[str]:
    seen: dict[str, None] = {}
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for key in ("initContainers", "containers"):
            for c in spec.get(key) or ():
                seen.setdefault(str(c["image"]), None)
    return list(seen)


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec an object runs (a workload's template, a Pod's own spec), or None."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return dict(spec)
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in _POD_TEMPLATE_KINDS:
        return None
    inner = (spec.get("template") or {}).get("spec")
    return inner if isinstance(inner, dict) else None


# ------------------------------------------------------------------------------------------------- flannel

def flannel_objects(objects: list[Obj], pod_subnet: IPNetwork) -> list[Obj]:
    """kube-flannel.yml's objects with net-conf.json naming ``pod_subnet`` (changes ``objects`` in place)."""
    cm = _find(objects, "ConfigMap", FLANNEL_CONFIGMAP)
    net = json.loads(cm["data"]["net-conf.json"])
    if isinstance(pod_subnet, ipaddress.IPv6Network):
        # flannel's IPv6-only form: IPv4 off (it is on unless told), the network under IPv6Network.
        net.pop("Network", None)
        net = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": str(pod_subnet), **net}
    else:
        net["Network"] = str(pod_subnet)
    cm["data"]["net-conf.json"] = json.dumps(net, indent=2) + "\n"
    return objects


# -------------------------------------------------------------------------------------------------- calico

def calico_objects(objects: list[Obj], pod_subnet: IPNetwork) -> list[Obj]:
    """calico.yaml's objects with calico-node's default IP pool set to ``pod_subnet`` (changes ``objects`` in
    place). The upstream manifest leaves CALICO_IPV4POOL_CIDR commented out (calico-node then guesses
    192.168.0.0/16, which must match kube-controller-manager's --cluster-cidr)."""
    ds = _find(objects, "DaemonSet", CALICO_NODE)
    spec = pod_spec(ds)
    assert spec is not None
    (container,) = [c for c in spec["containers"] if c.get("name") == CALICO_NODE]
    env: list[Obj] = container.setdefault("env", [])
    if isinstance(pod_subnet, ipaddress.IPv6Network):
        settings = {"CALICO_IPV6POOL_CIDR": str(pod_subnet), "IP6": "autodetect", "FELIX_IPV6SUPPORT": "true",
                    "IP": "none"}
    else:
        settings = {"CALICO_IPV4POOL_CIDR": str(pod_subnet)}
    for name, value in settings.items():
        _set_env(env, name, value)
    return objects


def _set_env(env: list[Obj], name: str, value: str) -> None:
    for item in env:
        if item.get("name") == name:
            item.clear()
            item.update({"name": name, "value": value})
            return
    env.append({"name": name, "value": value})


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise ValueError(f"the manifest has no {kind} {name}")


# ------------------------------------------------------------------------------------------- user manifests

def load_user_manifests(paths: Sequence[tuple[str, str]]) -> list[Obj]:
    """Objects of the given manifests (display path, YAML text), in file and document order: empty documents
    skipped, ``List`` kinds flattened into their items. A document that is not YAML or not a Kubernetes object
    (apiVersion, kind and metadata.name) raises ValueError naming the file and the document's index (from 0)."""
    out: list[Obj] = []
    for display, text in paths:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise ValueError(f"{display}: not valid YAML: {e}") from e
        index = 0
        for doc in docs:
            if doc is None:  # an empty document (a leading or doubled `---`, a comment-only part)
                index += 1
                continue
            out.extend(_objects(doc, f"{display}: document {index}"))
            index += 1
    return out


def _objects(doc: Any, where: str) -> Iterator[Obj]:
    if isinstance(doc, dict) and _is_list(doc):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ValueError(f"{where}: {doc.get('kind')} has no items list")
        for i, item in enumerate(items):
            yield _check(item, f"{where}, items[{i}]")
        return
    yield _check(doc, where)


def _is_list(doc: Obj) -> bool:
    """kubectl's rule: kind List (v1), or any *List kind carrying items (e.g. ConfigMapList)."""
    kind = doc.get("kind")
    return isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and "items" in doc))


def _check(doc: Any, where: str) -> Obj:
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: not a Kubernetes object (a YAML {type(doc).__name__}, not a mapping)")
    missing = [f for f in ("apiVersion", "kind") if not (isinstance(doc.get(f), str) and doc[f])]
    meta = doc.get("metadata")
    if not (isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]):
        missing.append("metadata.name")
    if missing:
        raise ValueError(f"{where}: not a Kubernetes object (no {', '.join(missing)})")
    return doc
