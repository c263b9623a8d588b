"""Pure core: the container images a cluster of the target version needs (kubeadm's `config images list`).

Order and naming follow kubeadm's GetControlPlaneImages: kube-apiserver, kube-controller-manager,
kube-scheduler, kube-proxy, CoreDNS, pause, etcd. CoreDNS lives one level deeper (`<repo>/coredns/coredns`)
only when the repository is exactly registry.k8s.io, as kubeadm does. The CNI plugin's images follow kubeadm's
list (kubeadm installs no network; kubeboot does, see render/cni.py): they keep their own registry, as
spec.imageRepository only replaces registry.k8s.io for kubeadm's images.
"""

from __future__ import annotations

import re

from kubeboot.config.model import ClusterConfig
from kubeboot.render.cni import cni_images

DEFAULT_REPOSITORY = "registry.k8s.io"


def _tag(version: str) -> str:
    """kubeadm replaces every character outside [-A-Za-z0-9_.] of kubernetesVersion with `_`."""
    return re.sub(r"[^-A-Za-z0-9_.]", "_", version)


def split_ref(ref: str) -> tuple[str, str | None]:
    """"registry.k8s.io/etcd:3.7.0-0" -> ("registry.k8s.io/etcd", "3.7.0-0"); no tag (a registry port is not one):
    (ref, None)."""
    if ":" not in ref.rsplit("/", 1)[-1]:
        return ref, None
    repo, tag = ref.rsplit(":", 1)
    return repo, tag


def component_image(cfg: ClusterConfig, component: str) -> str:
    return f"{cfg.image_repository}/{component}:{_tag(cfg.version.tag)}"


def coredns_image(cfg: ClusterConfig) -> str:
    repo = cfg.image_repository
    if repo == DEFAULT_REPOSITORY:
        repo = f"{repo}/coredns"
    return f"{repo}/coredns:{cfg.version.facts.coredns_tag}"


def pause_image(cfg: ClusterConfig) -> str:
    return f"{cfg.image_repository}/pause:{cfg.version.facts.pause_tag}"


def etcd_image(cfg: ClusterConfig) -> str:
    return f"{cfg.image_repository}/etcd:{cfg.version.facts.etcd_image_tag}"


def kubeadm_images(cfg: ClusterConfig) -> list[str]:
    """Every image kubeadm would pull for this cluster, in kubeadm's order."""
    return [component_image(cfg, c) for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                              "kube-proxy")] + [coredns_image(cfg), pause_image(cfg), etcd_image(cfg)]


def required_images(cfg: ClusterConfig) -> list[str]:
    """Every image the cluster runs: kubeadm's list (in kubeadm's order), then the CNI plugin's."""
    return kubeadm_images(cfg) + [i for i in cni_images(cfg) if i not in kubeadm_images(cfg)]


def node_images(cfg: ClusterConfig, control_plane: bool) -> list[str]:
    """What one node runs: every node needs pause, kube-proxy, the CNI plugin's images (a DaemonSet on every
    node) and (where scheduled) CoreDNS; control planes also the four static pods' images."""
    common = [component_image(cfg, "kube-proxy"), coredns_image(cfg), pause_image(cfg)] + cni_images(cfg)
    if not control_plane:
        return common
    return [component_image(cfg, c) for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")] + \
        common + [etcd_image(cfg)]
