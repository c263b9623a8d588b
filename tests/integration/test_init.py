"""`kubeboot init` on a node (under --rootfs), with the control plane started from the manifests it writes by
a pseudo-kubelet, then a worker joining with the command init printed. A second init converges."""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reference.binaries import ref_bin
from tests.reference.controlplane import Network, StaticPodRunner, prerequisites

pytestmark = pytest.mark.reference
CP1, W1 = "10.200.7.11", "10.200.7.21"
MANIFESTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@pytest.fixture
def net() -> Iterator[Network]:
    problems = prerequisites()
    if problems:
        pytest.skip("real control plane not possible here: " + "; ".join(problems))
    with Network({"cp1": CP1, "w1": W1}) as n:
        yield n


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_prints_join_commands_that_work_and_a_rerun_converges(net: Network, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    root = tree / "cp1"
    runners: list[StaticPodRunner] = []

    def pseudo_kubelet() -> None:  # starts the static pods once init has written all four manifests
        mdir = root / "etc/kubernetes/manifests"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all((mdir / f"{m}.yaml").exists() for m in MANIFESTS):
            time.sleep(0.1)
        runners.append(StaticPodRunner(net, tree, "cp1", tmp_path / "run-cp1"))
        runners[0].start_all()

    t = threading.Thread(target=pseudo_kubelet, daemon=True)
    t.start()
    argv = [sys.executable, "-m", "kubeboot.cli", "init", "--control-plane-endpoint", f"{CP1}:6443",
            "--apiserver-advertise-address", CP1, "--node-name", "cp1", "--upload-certs", "--rootfs", str(root),
            "--wait-timeout", "120"]
    try:
        res = net.run("ctl", argv, timeout=300)
        t.join(timeout=60)
        assert res.returncode == 0, res.stderr + (runners[0].logs() if runners else "")
        lines = res.stdout.strip().splitlines()
        assert len(lines) == 2, res.stdout
        worker = re.fullmatch(rf"kubeboot join {CP1}:6443 --token (\S+) --discovery-token-ca-cert-hash (sha256:\w+)",
                              lines[0])
        assert worker, lines[0]
        assert lines[1].startswith(lines[0] + " --control-plane --certificate-key ")
        assert worker[1].split(".")[1] not in res.stderr  # the secret appears only in the join commands
        assert (root / "etc/kubernetes/super-admin.conf").exists()

        join = net.run("ctl", [sys.executable, "-m", "kubeboot.cli", *lines[0].split()[1:], "--node-name", "w1",
                               "--rootfs", str(tmp_path / "w1"), "--discovery-timeout", "60"], timeout=120)
        assert join.returncode == 0, join.stderr
        assert (tmp_path / "w1/etc/kubernetes/bootstrap-kubelet.conf").exists()

        # the kubelet would register the Node; create it so the re-run's mark-control-plane has one to mark
        kubectl = runners[0].kubectl
        node = '{"apiVersion":"v1","kind":"Node","metadata":{"name":"cp1"}}'
        made = net.run("ctl", [str(ref_bin("kubectl")), f"--kubeconfig={root}/etc/kubernetes/super-admin.conf",
                               "create", "-f", "-"], input=node)
        assert made.returncode == 0, made.stderr
        before = _digests(root)
        again = net.run("ctl", argv, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "0 file(s) written" in again.stderr and "created" not in again.stderr.split("[wait-control-plane]")[0]
        assert _digests(root) == before  # no file changed: the PKI and every kubeconfig were reused
        labels = kubectl("get", "node", "cp1", "-o", "jsonpath={.metadata.labels}", kubeconfig="admin.conf").stdout
        taints = kubectl("get", "node", "cp1", "-o", "jsonpath={.spec.taints}", kubeconfig="admin.conf").stdout
        assert "node-role.kubernetes.io/control-plane" in labels
        assert "node.kubernetes.io/exclude-from-external-load-balancers" in labels
        assert '"effect":"NoSchedule"' in taints and '"key":"node-role.kubernetes.io/control-plane"' in taints
    finally:
        for r in runners:
            r.stop_all()
