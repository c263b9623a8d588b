"""The cgroupfs driver on a real node: kubeboot keeps the kubelet's cgroupDriver and containerd's SystemdCgroup in
lockstep (containerd 1.6 cannot tell the kubelet its driver, so a mismatch would be silent), and the kubelet runs
kubeboot's control plane with pods under /kubepods/... instead of systemd slices. The systemd driver (the
default) is covered by test_real_nodes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.nodes import NODES_ONLY, CP, Cluster, containers, images_dir, node_inventory
from tests.lab.aptrepo import AptRepo, apt_repo, use_as_mirror  # noqa: F401 (fixture)
from tests.lab.common import wait_until
from tests.lab.systemd import SystemdLab
from tests.reference.binaries import ref_bin

pytestmark = [pytest.mark.systemd_lab(hosts=1)]


def test_cgroupfs_control_plane(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path: Path) -> None:
    images, kubectl = images_dir(), ref_bin("kubectl")
    if images is None or kubectl is None:
        pytest.skip("needs the locally built images and kubectl (tests/setup.sh)")
    lab = systemd_lab
    use_as_mirror(lab, CP, apt_repo.server)
    inv = node_inventory(lab, tmp_path / "cluster.yaml", {CP: ["control-plane"]}, apt_repo.sources_line, images,
                         cgroup_driver="cgroupfs")
    c = Cluster(lab, inv, images, tmp_path / "admin.conf", kubectl)
    res = c.kb("up", *NODES_ONLY)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^cgroupDriver: cgroupfs$", lab.sh_in(CP, "cat /var/lib/kubelet/config.yaml"), re.M)
    assert re.search(r"SystemdCgroup = false", lab.sh_in(CP, "cat /etc/containerd/config.toml"))
    comps = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    running = wait_until("the four static pods running", lambda: (r := containers(lab, CP)) and all(
        f"{x}-{CP}/{x}" in r for x in comps) and r, timeout=120, interval=0.5)
    for comp in comps:
        cg = lab.sh_in(CP, f"grep ':memory:' /proc/{running[f'{comp}-{CP}/{comp}']['pid']}/cgroup")
        assert re.search(r":memory:/kubepods/(burstable/)?pod[0-9a-f-]+/[0-9a-f]{64}$", cg.strip()), (comp, cg)
    c.admin.write_bytes((lab.host(CP).rootfs / "etc/kubernetes/admin.conf").read_bytes())
    wait_until("API server ready", lambda: c.kubectl("get", "--raw", "/readyz").returncode == 0, timeout=180,
               interval=1)
