"""Shared by the real-node tests and bench/nodes.py: a kubeboot cluster on systemd lab hosts (tests/lab/systemd.py),
air-gapped (packages from the lab apt mirror, images from locally built archives), driven through the kubeboot
CLI exactly as a user runs it on a workstation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import proxy_only_ssh_config
from tests.lab.systemd import SystemdLab

CP, WORKER = "h1", "h2"
SERVICES = ("containerd", "kubelet")
BB = "kbs.local/busybox:1.35"


# The node-level part of `up` (these modules test real nodes, not the cluster workflow: tests/e2e/test_up_cluster.py
# does): up to the first control plane's files and kubelet; the API phases are run by hand where needed.
NODES_ONLY = ("--skip-phases", "init,join-control-planes,join-workers,cni,kubectl")

NEEDED_IMAGES = ("pause", "busybox", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def images_dir() -> Path | None:
    """The locally built image archives (tests/reference/images.py), if every image these tests run is there."""
    from tests.reference.images import images_dir as built, read_images_json

    d = built()
    if d is None:
        return None
    have = {i.name for i in read_images_json(d) if (d / i.file).is_file()}
    return d if set(NEEDED_IMAGES) <= have else None


def prebuilt() -> tuple[Path, Path] | None:
    """The image archives and the reference kubectl the benchmarks need (tests/setup.sh builds them)."""
    from tests.reference.binaries import ref_bin

    images, kubectl = images_dir(), ref_bin("kubectl")
    return None if images is None or kubectl is None else (images, kubectl)


def bench_inputs() -> tuple[Path, Path, Path] | None:
    """What the benchmarks under bench/ run from: the image archives, the reference kubectl and the lab apt
    repository (built if needed); None, after saying what is missing, before tests/setup.sh has run."""
    from tests.lab.aptrepo import build_repo, default_repo_dir

    built = prebuilt()
    if built is None:
        print("needs tests/setup.sh first (images and reference binaries)")
        return None
    return built[0], built[1], build_repo(default_repo_dir())


@dataclass
class Cluster:
    lab: SystemdLab
    inv: Path
    images: Path
    admin: Path  # h1's admin.conf, copied to the workstation
    kubectl_bin: Path
    first_up: subprocess.CompletedProcess[str] | None = None
    join: subprocess.CompletedProcess[str] | None = None

    def kb(self, *args: str, inv: Path | None = None, netns: bool = False) -> subprocess.CompletedProcess[str]:
        """The kubeboot CLI as a user runs it on the workstation (SSH through the lab's controller netns; API
        calls from inside it when netns=True)."""
        cmd = [sys.executable, "-m", "kubeboot.cli", *args]
        if inv is not None or args[0] in ("up", "plan"):
            cmd[4:4] = ["-i", str(inv or self.inv), "--known-hosts", str(self.lab.known_hosts),
                        "--ssh-config", str(proxy_only_ssh_config(self.lab))]
        if netns:
            cmd = ["ip", "netns", "exec", self.lab.ctl_netns, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                              cwd=self.inv.parent, env={**os.environ, "PYTHONPATH": str(Path.cwd())})

    def kubectl_json(self, *args: str, check: bool = True) -> Any:
        res = subprocess.run(["ip", "netns", "exec", self.lab.ctl_netns, str(self.kubectl_bin), "--kubeconfig",
                              str(self.admin), *args, "-o", "json"], capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr}")
        return json.loads(res.stdout) if res.returncode == 0 else None

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.lab.ctl_netns, str(self.kubectl_bin), "--kubeconfig",
                               str(self.admin), *args], capture_output=True, text=True, timeout=60)

    def sh(self, host: str, script: str) -> str:
        return self.lab.sh_in(host, script)


def node_inventory(lab: SystemdLab, path: Path, hosts: dict[str, list[str]], sources_line: str, images: Path,
               cgroup_driver: str = "systemd", **spec: Any) -> Path:
    doc = {
        "apiVersion": "kubeboot.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "nodes"},
        "spec": {
            "controlPlaneEndpoint": f"{lab.host(CP).address}:6443",
            "loadBalancer": {"mode": "none"},
            "ssh": {"user": "root", "keyPath": str(lab.key_path)},
            "packages": {"aptRepository": sources_line},
            "images": {"archiveDir": str(images)},
            # this machine is cgroup v1 (the kubelet refuses it by default since 1.35) and its root lacks
            # CAP_SYS_RESOURCE (runc cannot lower oom_score_adj): both are product settings, set like a user would
            "kubelet": {"config": {"failCgroupV1": False}},
            "containerRuntime": {"restrictOOMScoreAdj": True, "cgroupDriver": cgroup_driver},
            "hosts": [{"name": n, "address": str(lab.host(n).address), "roles": r} for n, r in hosts.items()],
            **spec,
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def unit(lab: SystemdLab, host: str, name: str) -> tuple[str, str, str]:
    st = lab.unit_state(host, name)
    return st["ActiveState"], st["MainPID"], st["ActiveEnterTimestamp"]


def containers(lab: SystemdLab, host: str) -> dict[str, dict[str, str]]:
    """Running CRI containers on a host, by container name label (from containerd itself, not the API)."""
    out = lab.sh_in(host, "ctr -n k8s.io containers ls -q | while read c; do "
                          "s=$(ctr -n k8s.io tasks ls | awk -v c=$c '$1==c {print $3\" \"$2}'); "
                          "[ -n \"$s\" ] && echo \"$c $s $(ctr -n k8s.io c info $c | "
                          "grep -o '\"io.kubernetes.container.name\": \"[^\"]*\"' | cut -d'\"' -f4) $(ctr -n k8s.io c info $c"
                          " | grep -o '\"io.kubernetes.pod.name\": \"[^\"]*\"' | cut -d'\"' -f4)\"; done; true")
    result: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == "RUNNING" and parts[3] != "POD":
            result[f"{parts[4]}/{parts[3]}"] = {"id": parts[0], "pid": parts[2]}
    return result
