"""Pure core of `kubeboot sandbox`: which hosts a sandbox has, the inventory kubeboot runs against them, and the
memory they need. No processes, no files."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from kubeboot.config.model import LoadBalancerMode
from kubeboot.errors import ConfigError, Problem

LB_MODES = (LoadBalancerMode.EXTERNAL_NGINX.value, LoadBalancerMode.NODE_LOCAL.value)
MAX_CONTROL_PLANES = 7
MAX_WORKERS = 200  # a /24 holds 253 hosts; memory is checked separately
DEFAULT_SUBNET = "10.200.0.0/24"
# What every sandbox host is: a container sharing this machine's kernel. Settings a user would set for such hosts:
#  - the kubelet refuses cgroup v1 since 1.35 unless failCgroupV1 is false (only set on a cgroup v1 machine);
#  - runc cannot lower oom_score_adj without CAP_SYS_RESOURCE in the machine's root user namespace;
#  - kube-proxy must not write the machine-global conntrack sysctls (0 = leave them as they are).
KUBE_PROXY_CONNTRACK = {"conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}}


@dataclass(frozen=True)
class Shape:
    control_planes: int = 3
    workers: int = 2
    lb: str = LoadBalancerMode.EXTERNAL_NGINX.value
    version: str = ""
    subnet: str = DEFAULT_SUBNET

    def problems(self) -> list[Problem]:
        out = []
        if not 1 <= self.control_planes <= MAX_CONTROL_PLANES:
            out.append(Problem("--control-planes", f"{self.control_planes}: between 1 and {MAX_CONTROL_PLANES}"))
        elif self.control_planes % 2 == 0:
            out.append(Problem("--control-planes", f"{self.control_planes}: an even number of etcd members "
                                                   f"tolerates no more failures than one fewer; use an odd number"))
        if not 0 <= self.workers <= MAX_WORKERS:
            out.append(Problem("--workers", f"{self.workers}: between 0 and {MAX_WORKERS}"))
        if self.lb not in LB_MODES:
            out.append(Problem("--lb", f"{self.lb!r}: one of {', '.join(LB_MODES)}"))
        try:
            net = ipaddress.ip_network(self.subnet, strict=True)
        except ValueError as exc:
            out.append(Problem("--subnet", f"{self.subnet!r}: {exc}"))
        else:
            if net.version != 4 or net.prefixlen != 24 or not net.is_private:
                out.append(Problem("--subnet", f"{self.subnet}: a private IPv4 /24 (e.g. {DEFAULT_SUBNET})"))
        return out

    def check(self) -> None:
        bad = self.problems()
        if bad:
            raise ConfigError(bad, source="flags")

    @property
    def load_balancers(self) -> int:
        """Hosts of their own running nginx: one in external-nginx mode, none in node-local mode."""
        return 1 if self.lb == LoadBalancerMode.EXTERNAL_NGINX.value else 0

    def hosts(self) -> list[tuple[str, str]]:
        """(name, role) in the order their addresses are given: the load balancer, control planes, workers."""
        return [*(("lb1", "load-balancer") for _ in range(self.load_balancers)), *((f"cp{i}", "control-plane") for i in range(1, self.control_planes + 1)),
                *((f"w{i}", "worker") for i in range(1, self.workers + 1))]

    def names(self) -> list[str]:
        return [n for n, _r in self.hosts()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shape:
        return cls(int(d["control_planes"]), int(d["workers"]), str(d["lb"]), str(d["version"]), str(d["subnet"]))


def inventory(shape: Shape, name: str, addresses: dict[str, str], key_path: str, cgroup_v1: bool) -> dict[str, Any]:
    """The inventory a user would write for these hosts (the sandbox writes it beside its state and runs the real
    `kubeboot up` with it)."""
    roles = dict(shape.hosts())
    external = shape.lb == LoadBalancerMode.EXTERNAL_NGINX.value
    kubelet: dict[str, Any] = {"config": {"failCgroupV1": False}} if cgroup_v1 else {}
    spec: dict[str, Any] = {
        "kubernetesVersion": shape.version,
        "controlPlaneEndpoint": f"{addresses['lb1']}:6443" if external else "localhost:6443",
        "loadBalancer": {"mode": shape.lb},
        **({"kubelet": kubelet} if kubelet else {}),
        "containerRuntime": {"restrictOOMScoreAdj": True},
        "kubeProxy": {"config": KUBE_PROXY_CONNTRACK},
        "ssh": {"user": "root", "keyPath": key_path},
        "hosts": [{"name": n, "address": addresses[n], "roles": [roles[n]]} for n in shape.names()],
    }
    return {"apiVersion": "kubeboot.io/v1alpha1", "kind": "Cluster", "metadata": {"name": name}, "spec": spec}
