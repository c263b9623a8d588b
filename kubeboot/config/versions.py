"""Pure core: the Kubernetes versions kubeboot supports and the facts kubeadm pins for each.

Every value here was read from kubeadm's source at the listed tag (cmd/kubeadm/app/constants/constants.go,
cmd/kubeadm/app/features/features.go); docs/kubeadm-versions.md records where and how they differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseFacts:
    """What kubeadm of one minor release deploys by default."""

    minor: str  # "1.37"
    latest_patch: str  # newest patch the Go module proxy served when this table was written
    etcd_image_tag: str  # SupportedEtcdVersion[minor] (or the map's nearest end), e.g. "3.7.0-0"
    pause_tag: str  # PauseVersion
    coredns_tag: str  # CoreDNSVersion
    # NodeLocalCRISocket: the CRI endpoint moves from kubeadm-flags.env into
    # /var/lib/kubelet/instance-config.yaml (beta/on in 1.35, GA from 1.36).
    node_local_cri_socket: bool = True
    # ControlPlaneKubeletLocalMode: a control plane's kubelet.conf points at its own API server.
    kubelet_local_mode: bool = True
    # kube-controller-manager mounts the flexvolume plugin dir (dropped from kubeadm in 1.36).
    kcm_flexvolume_dir: bool = False
    # apiserver-kubelet-client carries O=kubeadm:cluster-admins up to 1.35; from 1.36 it has no O and kubeadm
    # binds the user to system:kubelet-api-admin instead (ClusterRoleBinding kubeadm:apiserver-kubelet-client).
    kubelet_client_admin_org: bool = False

    @property
    def etcd_version(self) -> str:
        """The etcd release behind the image tag ("3.7.0-0" -> "3.7.0")."""
        return self.etcd_image_tag.split("-", 1)[0]

    @property
    def etcd_minor(self) -> tuple[int, int]:
        major, minor = self.etcd_version.split(".")[:2]
        return int(major), int(minor)


RELEASES: dict[str, ReleaseFacts] = {
    f.minor: f
    for f in (
        ReleaseFacts("1.35", "1.35.4", "3.6.6-0", "3.10.1", "v1.13.1", kcm_flexvolume_dir=True,
                     kubelet_client_admin_org=True),
        ReleaseFacts("1.36", "1.36.3", "3.6.8-0", "3.10.2", "v1.14.2"),
        ReleaseFacts("1.37", "1.37.2", "3.7.0-0", "3.10.2", "v1.14.6"),
    )
}

DEFAULT_MINOR = "1.37"
SUPPORTED_MINORS = tuple(sorted(RELEASES, key=lambda m: tuple(int(x) for x in m.split("."))))

_VERSION_RE = re.compile(r"^v?(?P<major>1)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?$")


@dataclass(frozen=True)
class KubernetesVersion:
    """A resolved target version: full patch version plus the release facts of its minor."""

    version: str  # "1.37.2" (no leading v)
    facts: ReleaseFacts

    @property
    def tag(self) -> str:
        """Image tag and kubeadm-style version string, e.g. "v1.37.2"."""
        return f"v{self.version}"

    @property
    def minor(self) -> str:
        return self.facts.minor


def resolve_version(text: str) -> KubernetesVersion:
    """Resolve "1.37" (newest known patch) or "1.37.1"/"v1.37.1" (pinned); ValueError if unsupported."""
    m = _VERSION_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a Kubernetes version (want 1.MINOR or 1.MINOR.PATCH): {text!r}")
    minor = f"{m['major']}.{int(m['minor'])}"
    facts = RELEASES.get(minor)
    if facts is None:
        raise ValueError(
            f"unsupported Kubernetes version {text!r}: supported minors are {', '.join(SUPPORTED_MINORS)}"
        )
    version = facts.latest_patch if m["patch"] is None else f"{minor}.{int(m['patch'])}"
    return KubernetesVersion(version, facts)
