"""`kubeboot up` without a load-balancer host (node-local mode), with the endpoint given as a DNS name
(`localhost`, resolved on every node), reached the way the Vagrantfile's users reach their VMs: a client config
in the exact format `vagrant ssh-config` prints, the `vagrant` user with passwordless sudo, no key in the
inventory, and host keys accepted explicitly on first contact (the config's StrictHostKeyChecking no is not
honoured: kubeboot verifies host keys unless told otherwise).

h1 and h2 are control planes (each node's own API server), h3 a worker whose kubelet, kube-proxy and flannel
reach the API through nginx on 127.0.0.1:6443, a host service installed before the node joins.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.nodes import Cluster, images_dir, node_inventory, unit
from tests.lab.aptrepo import AptRepo, apt_repo, use_as_mirror  # noqa: F401 (fixture)
from tests.lab.systemd import SystemdLab
from tests.lab.vagrant import VAGRANT_USER, add_vagrant_user, vagrant_key, vagrant_ssh_config
from tests.reference.binaries import ref_bin

pytestmark = [pytest.mark.systemd_lab(hosts=3)]
CPS, WORKER = ("h1", "h2"), "h3"


def vagrant_up(c: Cluster, ssh_config: Path, known_hosts: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """kubeboot as the README's Vagrant section runs it, from the workstation (the lab's controller netns)."""
    cmd = ["ip", "netns", "exec", c.lab.ctl_netns, sys.executable, "-m", "kubeboot.cli", "up", "-i", str(c.inv),
           "--ssh-config", str(ssh_config), "--known-hosts", str(known_hosts), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          cwd=c.inv.parent, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


@pytest.fixture(scope="module")
def nl(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    images, kubectl = images_dir(), ref_bin("kubectl")
    if images is None or kubectl is None:
        pytest.skip("no locally built images or kubectl: tests/setup.sh builds them")
    lab = systemd_lab
    d = tmp_path_factory.mktemp("nodelocal")
    for h in (*CPS, WORKER):
        use_as_mirror(lab, h, apt_repo.server)
        add_vagrant_user(lab, h)
    inv = node_inventory(lab, d / "cluster.yaml", {"h1": ["control-plane"], "h2": ["control-plane"],
                                                   WORKER: ["worker"]}, apt_repo.sources_line, images,
                         controlPlaneEndpoint="localhost:6443", loadBalancer={"mode": "node-local"},
                         kubeProxy={"config": {"conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                                                             "tcpCloseWaitTimeout": "0s"}}})
    doc = yaml.safe_load(inv.read_text())
    doc["spec"]["ssh"] = {"user": VAGRANT_USER, "keyPath": None}  # as inventory.vagrant.yaml
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    ssh_config = d / "ssh-config"  # `vagrant ssh-config > .vagrant/ssh-config`
    ssh_config.write_text(vagrant_ssh_config(lab, [*CPS, WORKER], vagrant_key(lab)))
    c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
    known = d / "known_hosts"
    refused = vagrant_up(c, ssh_config, known)
    assert refused.returncode == 10, refused.stderr[-2000:]  # unknown host keys: refused without the flag
    c.first_up = vagrant_up(c, ssh_config, known, "--accept-new-host-keys")
    (d / "up.log").write_text(c.first_up.stderr)
    assert c.first_up.returncode == 0, c.first_up.stderr[-6000:]
    got = c.kb("kubeconfig", "-i", str(inv), "-o", str(c.admin))
    assert got.returncode == 0, got.stderr
    c.join = vagrant_up(c, ssh_config, known)  # the second run: keys now known, nothing to change
    return c


def test_node_local_cluster_is_ready_through_each_nodes_proxy(nl: Cluster) -> None:
    nodes = nl.kubectl_json("get", "nodes")["items"]
    ready = {n["metadata"]["name"]: any(x["type"] == "Ready" and x["status"] == "True"
                                        for x in n["status"]["conditions"]) for n in nodes}
    assert ready == {"h1": True, "h2": True, "h3": True}
    worker = nl.lab.host(WORKER).rootfs
    conf = yaml.safe_load((worker / "etc/kubernetes/kubelet.conf").read_text())
    assert conf["clusters"][0]["cluster"]["server"] == "https://localhost:6443"
    nginx = (worker / "etc/nginx/nginx.conf").read_text()
    assert "listen 127.0.0.1:6443;" in nginx
    assert all(f"{nl.lab.host(h).address}:6443" in nginx for h in CPS)
    assert unit(nl.lab, WORKER, "nginx")[0] == "active"
    for h in CPS:  # a control plane uses its own API server and has no proxy
        assert not (nl.lab.host(h).rootfs / "etc/nginx/nginx.conf").exists()
    # the workstation's kubeconfig points at a control plane, not at its own loopback
    admin = yaml.safe_load(nl.admin.read_text())
    assert admin["clusters"][0]["cluster"]["server"] == f"https://{nl.lab.host('h1').address}:6443"


def test_the_vagrant_path_converges(nl: Cluster) -> None:
    assert nl.join is not None and nl.join.returncode == 0, nl.join.stderr[-3000:] if nl.join else ""
    assert "no changes: the hosts already match" in nl.join.stderr, nl.join.stderr[-3000:]
    flags = (nl.lab.host(WORKER).rootfs / "var/lib/kubelet/kubeadm-flags.env").read_text()
    assert f"--node-ip={nl.lab.host(WORKER).address}" in flags  # the private-network address, not NAT's
