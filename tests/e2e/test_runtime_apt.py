"""The runtime phase installs containerd, kubelet and kubectl through apt, for real, from a local mirror
served on the lab network (tests/lab/aptrepo.py), into hosts with a copy-on-write root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import kubeboot
from tests.lab import Lab
from tests.lab.aptrepo import AptRepo, apt_repo, remove_machine_packages, use_as_mirror  # noqa: F401 (fixture)

pytestmark = pytest.mark.lab(hosts=2, overlay=True)


def _inventory(lab: Lab, repo: AptRepo, path: Path) -> Path:
    import yaml

    doc = {
        "apiVersion": "kubeboot.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "apt"},
        "spec": {
            "kubernetesVersion": "1.37.2",
            "controlPlaneEndpoint": f"{lab.host('h1').address}:6443",
            "kubelet": {"config": {"failCgroupV1": False}},  # this machine is cgroup v1 (preflight CgroupsV1)
            "loadBalancer": {"mode": "none"},
            "packages": {"aptRepository": repo.server.sources_line},
            "ssh": {"user": "root", "keyPath": str(lab.key_path)},
            "hosts": [{"name": "h1", "address": str(lab.host("h1").address), "roles": ["control-plane"]},
                      {"name": "h2", "address": str(lab.host("h2").address), "roles": ["worker"]}],
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_runtime_packages_install_pinned_and_held_from_the_mirror(lab: Lab, apt_repo: AptRepo,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    machine_kubelet = shutil.which("kubelet")
    for h in ("h1", "h2"):
        remove_machine_packages(lab, h)  # the overlay starts as a copy of this machine: make it a fresh host
        use_as_mirror(lab, h, apt_repo.server)
    inv = _inventory(lab, apt_repo, tmp_path / "inv.yaml")

    plan = kubeboot(lab, inv, "plan", "--only", "runtime/packages")
    assert plan.returncode == 0, plan.stderr
    assert "would run `DEBIAN_FRONTEND=noninteractive apt-get" in plan.stderr
    assert "kubelet=1.37.2-1.1" in plan.stderr

    res = kubeboot(lab, inv, "up", "--only", "runtime/packages")
    assert res.returncode == 0, res.stderr
    for h in ("h1", "h2"):
        assert lab.sh_in(h, "kubelet --version").strip() == "Kubernetes v1.37.2"
        assert "v1.37.2" in lab.sh_in(h, "kubectl version --client")
        versions = lab.sh_in(h, "dpkg-query -W -f='${Package}=${Version}\\n' kubelet kubectl containerd runc")
        assert "kubelet=1.37.2-1.1" in versions and "kubectl=1.37.2-1.1" in versions
        assert "containerd=" in versions and "runc=" in versions
        assert set(lab.sh_in(h, "apt-mark showhold").split()) >= {"kubelet", "kubectl"}
        assert apt_repo.server.sources_line in lab.sh_in(h, "cat /etc/apt/sources.list.d/kubernetes.list")

    again = kubeboot(lab, inv, "up", "--only", "runtime/packages")
    assert again.returncode == 0, again.stderr
    assert "no changes: the hosts already match" in again.stderr
    assert shutil.which("kubelet") == machine_kubelet  # the machine itself was not touched
