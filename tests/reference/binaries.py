"""Locate the Kubernetes reference binaries built by ``tests/reference/build.sh`` (kubeboot's bundle binary
builder, kubeboot/bundle/build.sh, plus the tests' refcheck).

The binaries live outside the repository, in ``<cache>/v<version>/bin/<name>``, ``<cache>`` being
:func:`kubeboot.cache.cache_root` ($KUBEBOOT_CACHE, else $KUBEBOOT_REF_CACHE, else /var/cache/kubeboot).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from kubeboot import cache
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES

DEFAULT_VERSION = "1.37.2"
DEFAULT_CACHE_ROOT = str(cache.DEFAULT_CACHE_ROOT)
BUILD_SCRIPT = pathlib.Path(__file__).resolve().parent / "build.sh"

# Everything build.sh knows how to build, in its build order.
NAMES: tuple[str, ...] = (
    "etcd",
    "etcdctl",
    "etcdutl",
    "kubectl",
    "refcheck",
    "kubeadm",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
)


def previous_release(minor: str = DEFAULT_MINOR) -> str:
    """The latest patch (kubeboot.config.versions) of the minor below ``minor``: what an upgrade to ``minor``
    starts from. KeyError when kubeboot knows no such minor."""
    major, m = minor.split(".")[:2]
    return RELEASES[f"{major}.{int(m) - 1}"].latest_patch


#: The release the upgrade tests start from (1.36.3 while the default is 1.37).
PREVIOUS_VERSION = previous_release()
#: What build.sh builds for PREVIOUS_VERSION (tests/setup.sh): a cluster's own binaries and its images' contents.
#: Not refcheck, flanneld or the CNI plugins: version independent, they come from DEFAULT_VERSION's build.
PREVIOUS_NAMES: tuple[str, ...] = (
    "etcd", "etcdctl", "etcdutl", "kubectl", "kubeadm", "kube-apiserver", "kube-controller-manager",
    "kube-scheduler", "kubelet", "kube-proxy", "coredns",
)  # fmt: skip


def cache_root() -> pathlib.Path:
    """The cache root (:func:`kubeboot.cache.cache_root`)."""
    return cache.cache_root()


def bin_dir(version: str = DEFAULT_VERSION) -> pathlib.Path:
    return cache_root() / f"v{version.removeprefix('v')}" / "bin"


def ref_bin(name: str, version: str = DEFAULT_VERSION) -> pathlib.Path | None:
    """Path of a built reference binary, or None when it is not built (or not executable).

    build.sh writes ``v<version>/stamps/<name>`` only after the binary passed its checks, so a
    binary without its stamp (an interrupted or failed rebuild) does not count as built.
    """
    path = bin_dir(version) / name
    stamp = bin_dir(version).parent / "stamps" / name
    if path.is_file() and os.access(path, os.X_OK) and stamp.is_file():
        return path
    return None


def build_command(name: str, version: str = DEFAULT_VERSION) -> str:
    """The command that builds ``name`` for ``version``."""
    cmd = f"tests/reference/build.sh --only {name}"
    if version.removeprefix("v") != DEFAULT_VERSION:
        cmd += f" {version.removeprefix('v')}"
    return cmd


def require_bin(name: str, version: str = DEFAULT_VERSION) -> pathlib.Path:
    """Path of a built reference binary; skips the calling test when it is missing."""
    path = ref_bin(name, version)
    if path is None:
        pytest.skip(
            f"reference binary {name} v{version.removeprefix('v')} not built "
            f"(expected {bin_dir(version) / name}); build it with: {build_command(name, version)}"
        )
    return path
