"""Shell (bundle inputs): Kubernetes' own binaries, etcd and the addons' binaries, built from the Go module proxy by
build.sh (beside this file) into the cache, keyed by version:

    <cache>/v<version>/bin/<name>        kubelet, kubectl, kubeadm, kube-*, etcd*, coredns, flanneld, ...
    <cache>/v<version>/cni-bin/<plugin>  bridge, host-local, portmap, loopback, flannel
    <cache>/v<version>/stamps/<name>     written once a binary passed its checks: no stamp, not built

build.sh decides what is up to date (a stamp of versions, Go version and source digests per binary); a run with
nothing to build costs a few seconds (it runs every binary once to check its version).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kubeboot.cache import cache_root
from kubeboot.errors import BundleError

BUILD_SCRIPT = Path(__file__).resolve().with_name("build.sh")

#: Everything a cluster needs that build.sh builds, in its build order (the tests' refcheck is not one of them).
NAMES: tuple[str, ...] = (
    "etcd", "etcdctl", "etcdutl", "kubectl", "kubeadm", "kube-apiserver", "kube-controller-manager",
    "kube-scheduler", "kubelet", "kube-proxy", "coredns", "flanneld", "flannel-install-conf",
    "cni-bridge", "cni-host-local", "cni-portmap", "cni-loopback", "cni-flannel",
)  # fmt: skip

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def find_go() -> str | None:
    """The Go toolchain build.sh uses: $GO, else /usr/local/go/bin/go (the official tarball), else `go` on PATH."""
    for cand in (os.environ.get("GO"), "/usr/local/go/bin/go"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return shutil.which("go")


def version_dir(version: str) -> Path:
    return cache_root() / f"v{version.removeprefix('v')}"


def bin_dir(version: str) -> Path:
    return version_dir(version) / "bin"


def cni_bin_dir(version: str) -> Path:
    """Where build.sh puts the CNI plugins (bridge, host-local, portmap, loopback, flannel)."""
    return version_dir(version) / "cni-bin"


def binary_path(name: str, version: str) -> Path:
    """Where build.sh puts ``name`` (``cni-<plugin>`` lives in the cni-bin dir as ``<plugin>``)."""
    if name.startswith("cni-"):
        return cni_bin_dir(version) / name.removeprefix("cni-")
    return bin_dir(version) / name


def stamp_path(name: str, version: str) -> Path:
    return version_dir(version) / "stamps" / name


def built(name: str, version: str) -> Path | None:
    """The binary if build.sh built and checked it (its stamp exists) and it is executable, else None."""
    path = binary_path(name, version)
    if path.is_file() and os.access(path, os.X_OK) and stamp_path(name, version).is_file():
        return path
    return None


def script_command(names: Iterable[str], version: str) -> str:
    """The build.sh command line that builds ``names`` for ``version``."""
    return f"{BUILD_SCRIPT} --only {','.join(names)} {version.removeprefix('v')}"


@dataclass(frozen=True)
class BinariesResult:
    cached: tuple[str, ...]
    built: tuple[str, ...]
    output: str  # build.sh's whole output (stdout and stderr)


_SUMMARY = re.compile(r"^  (\S+)\s+(cached|built)\s")


def build_binaries(version: str, names: Iterable[str] | None = None, *, go: str | None = None,
                   log: Log = _quiet) -> BinariesResult:
    """Run build.sh for ``names`` (default: all of :data:`NAMES`) of ``version``: builds what is not up to date.
    BundleError with the tail of its output when a build or a check fails."""
    version = version.removeprefix("v")
    wanted = list(names) if names is not None else list(NAMES)
    env = dict(os.environ)
    env.pop("KUBEBOOT_REFCHECK_SRC", None)  # the bundle never builds the tests' helper
    if go:
        env["GO"] = go
    env["KUBEBOOT_CACHE"] = str(cache_root())  # the same root as this process, whatever the variables say
    argv = ["bash", str(BUILD_SCRIPT), "--only", ",".join(wanted), version]
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("==> ") and (": building " in line or ": built in " in line or "FAILED" in line):
                log(line[4:].rstrip("\n"))
    out = "\n".join(lines)
    if proc.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise BundleError(f"building the binaries of v{version} from Go modules failed (build.sh exit "
                          f"{proc.returncode}):\n{tail}",
                          hint=f"run `{' '.join(argv[1:])}` for the whole output; it reuses what was built")
    cached: list[str] = []
    fresh: list[str] = []
    for line in lines:
        m = _SUMMARY.match(line)
        if m and m[1] in wanted:
            (cached if m[2] == "cached" else fresh).append(m[1])
    return BinariesResult(tuple(cached), tuple(fresh), out)
