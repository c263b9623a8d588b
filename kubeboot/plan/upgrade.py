"""Pure core of `kubeboot upgrade`: which version each node runs (read from its static pod manifests and its
kubelet), whether the target is an upgrade kubeadm would allow (one minor at a time, never down, the kubelet skew
policy), and what changes on each host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from kubeboot.config.versions import KubernetesVersion
from kubeboot.errors import VersionSkewError
from kubeboot.render.images import split_ref
from kubeboot.render.manifests import MANIFESTS, STATIC_PODS

COMPONENTS = STATIC_PODS  # upgraded in this order, one after the other
# the kubelet skew policy: a kubelet may be up to three minors older than the API server, never newer
KUBELET_SKEW = 3

Version = tuple[int, int, int]


def manifest_path(component: str) -> str:
    return f"{MANIFESTS}/{component}.yaml"


def parse_version(text: str) -> Version | None:
    """"v1.37.2", "1.37.2", "Kubernetes v1.37.2", "3.6.8-0" -> (1, 37, 2); None when there is no x.y.z."""
    word = text.strip().split()[-1] if text.strip() else ""
    core = word.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def show(v: Version) -> str:
    return f"v{v[0]}.{v[1]}.{v[2]}"


def manifest_image(data: bytes | None, component: str) -> str | None:
    """The image of the component's container in a static pod manifest (None: no manifest, or not readable)."""
    if data is None:
        return None
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return None
    containers = (doc or {}).get("spec", {}).get("containers") or [] if isinstance(doc, dict) else []
    for c in containers:
        if isinstance(c, dict) and c.get("name") == component and isinstance(c.get("image"), str):
            return str(c["image"])
    return None


def image_tag(image: str | None) -> str | None:
    return None if image is None else split_ref(image)[1]


@dataclass(frozen=True)
class NodeVersions:
    """What one node runs now."""

    name: str
    control_plane: bool
    images: Mapping[str, str | None]  # component -> image its manifest names (control planes)
    kubelet: Version | None  # the kubelet binary's version (`kubelet --version`)

    @property
    def control_plane_version(self) -> Version | None:
        """The API server's version: what kubeadm calls the control plane's version."""
        tag = image_tag(self.images.get("kube-apiserver"))
        return parse_version(tag) if tag else None


@dataclass(frozen=True)
class HostChange:
    name: str
    control_plane: bool
    components: tuple[str, ...]  # manifests whose image changes, in COMPONENTS order
    kubelet_from: Version | None  # None: the kubelet is already at the target

    @property
    def nothing(self) -> bool:
        return not self.components and self.kubelet_from is None

    def describe(self, target: KubernetesVersion, wanted: Mapping[str, str]) -> str:
        parts = []
        if self.components:
            parts.append(", ".join(f"{c} -> {image_tag(wanted[c])}" for c in self.components))
        if self.kubelet_from is not None:
            parts.append(f"kubelet {show(self.kubelet_from)} -> {target.tag}")
        return "; ".join(parts) or f"already at {target.tag}"


@dataclass(frozen=True)
class UpgradePlan:
    source: Version  # the oldest control plane's version (the target when nothing is left to do)
    target: KubernetesVersion
    hosts: tuple[HostChange, ...]  # nodes in inventory order

    @property
    def control_planes(self) -> tuple[HostChange, ...]:
        return tuple(h for h in self.hosts if h.control_plane)

    @property
    def workers(self) -> tuple[HostChange, ...]:
        return tuple(h for h in self.hosts if not h.control_plane)

    @property
    def nothing(self) -> bool:
        return all(h.nothing for h in self.hosts)


def plan_upgrade(target: KubernetesVersion, nodes: Sequence[NodeVersions], wanted: Mapping[str, str]) -> UpgradePlan:
    """Check the skew rules and decide what changes where. `wanted`: component -> the target's image. Raises
    VersionSkewError naming the hosts when kubeadm would refuse the upgrade."""
    tv = parse_version(target.version)
    assert tv is not None
    cps = [n for n in nodes if n.control_plane]
    missing = [n.name for n in cps if n.control_plane_version is None]
    if missing:
        raise VersionSkewError(f"{', '.join(missing)}: no kube-apiserver manifest with a versioned image: not a "
                               f"running control plane", hint="run `kubeboot up` first; upgrade changes a cluster "
                                                              "that runs")
    cp_versions = {n.name: n.control_plane_version for n in cps}
    newer = {name: v for name, v in cp_versions.items() if v is not None and v > tv}
    if newer:
        raise VersionSkewError(
            f"{', '.join(f'{k} runs {show(v)}' for k, v in newer.items())}: newer than {target.tag}; kubeboot does "
            f"not downgrade", hint=f"set spec.kubernetesVersion to {show(max(newer.values()))} (or newer) instead")
    older = sorted({v for v in cp_versions.values() if v is not None and v < tv})
    if len(older) > 1:
        raise VersionSkewError(f"the control planes run {', '.join(show(v) for v in older)}: more than one version "
                               f"before {target.tag}", hint=f"upgrade them to {show(older[-1])} first")
    source = older[0] if older else tv
    if tv[1] - source[1] > 1:
        raise VersionSkewError(f"the control planes run {show(source)}: {target.tag} is {tv[1] - source[1]} minor "
                               f"versions newer; kubeadm upgrades one minor version at a time",
                               hint=f"upgrade to the newest 1.{source[1] + 1} first "
                                    f"(kubeboot upgrade --to 1.{source[1] + 1})")
    problems = []
    for n in nodes:
        if n.kubelet is None:
            problems.append(f"{n.name}: no kubelet (not a node of this cluster yet: run `kubeboot up` first)")
        elif n.kubelet > tv:
            problems.append(f"{n.name}: kubelet {show(n.kubelet)} is newer than {target.tag}")
        elif tv[1] - n.kubelet[1] > KUBELET_SKEW:
            problems.append(f"{n.name}: kubelet {show(n.kubelet)} is more than {KUBELET_SKEW} minor versions older "
                            f"than {target.tag} (the kubelet skew policy)")
    if problems:
        raise VersionSkewError("the kubelets do not allow this upgrade:\n  " + "\n  ".join(problems),
                               hint="bring these nodes to the control planes' version first")
    out = []
    for n in nodes:
        comps = tuple(c for c in COMPONENTS if n.control_plane and n.images.get(c) != wanted[c])
        kubelet_from = n.kubelet if n.kubelet is not None and n.kubelet != tv else None
        out.append(HostChange(n.name, n.control_plane, comps, kubelet_from))
    return UpgradePlan(source, target, tuple(out))


def version_mismatch(target: KubernetesVersion, nodes: Sequence[NodeVersions]) -> tuple[str, Version] | None:
    """For `up`: which control planes run another version than the inventory's, and the newest one they run (None
    when all run it, or nothing runs yet). `up` converges a cluster at one version; changing the version is
    `kubeboot upgrade`'s job, one control plane at a time."""
    tv = parse_version(target.version)
    other = {n.name: v for n in nodes if n.control_plane and (v := n.control_plane_version) is not None and v != tv}
    if not other:
        return None
    return ", ".join(f"{k} runs {show(v)}" for k, v in other.items()), max(other.values())
