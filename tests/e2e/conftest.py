"""Helpers for end-to-end runs of kubeboot against the namespaced SSH lab (tests/lab)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.lab import Lab

MANAGED = ("/etc/kubernetes", "/var/lib/kubelet", "/etc/containerd", "/etc/nginx/nginx.conf", "/etc/sysctl.d",
           "/etc/modules-load.d", "/etc/systemd/system/kubelet.service.d", "/etc/crictl.yaml")
# h1 is the load balancer, h2-h4 control planes, h5 a worker (when the lab has 5 hosts).
ROLES = {"h1": ["load-balancer"], "h2": ["control-plane"], "h3": ["control-plane"], "h4": ["control-plane"],
         "h5": ["worker"]}


def inventory(lab: Lab, path: Path, hosts: int = 5, **spec_overrides: object) -> Path:
    doc = {
        "apiVersion": "kubeboot.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "lab"},
        "spec": {
            "controlPlaneEndpoint": f"{lab.host('h1').address}:6443",
            "kubelet": {"config": {"failCgroupV1": False}},  # this machine is cgroup v1 (preflight CgroupsV1)
            "ssh": {"user": "root", "keyPath": str(lab.key_path)},
            "hosts": [{"name": f"h{i}", "address": str(lab.host(f"h{i}").address), "roles": ROLES[f"h{i}"]}
                      for i in range(1, hosts + 1)],
            **spec_overrides,
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def proxy_only_ssh_config(lab: Lab) -> Path:
    """An OpenSSH client config that only routes into the lab (ProxyCommand through its controller
    namespace): users, keys and host-key policy all come from kubeboot's own settings."""
    path = lab.dir / "kubeboot-ssh_config"
    if not path.exists():
        path.write_text(f"Host 10.200.0.*\n    ProxyCommand {lab.proxy_command()}\n")
    return path


def kubeboot(lab: Lab, inv: Path, *args: str, known_hosts: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kubeboot.cli", *args[:1], "-i", str(inv),
           "--known-hosts", str(known_hosts or lab.known_hosts), "--ssh-config", str(proxy_only_ssh_config(lab)),
           *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, cwd=inv.parent)


def snapshot(lab: Lab, host: str) -> dict[str, str]:
    """path -> 'sha256 mode mtime' for every kubeboot-managed file on a host, read without SSH."""
    paths = " ".join(MANAGED)
    out = lab.sh_in(host, f"find {paths} -type f -printf '%p %m %T@\\n' 2>/dev/null | sort; true")
    result: dict[str, str] = {}
    for line in out.splitlines():
        path, mode, mtime = line.rsplit(" ", 2)
        digest = lab.sh_in(host, f"sha256sum {path}").split()[0]
        result[path] = f"{digest} {mode} {mtime}"
    return result
