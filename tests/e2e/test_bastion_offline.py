"""kubeboot over real SSH in the lab: hosts reached only through a bastion, and the runtime installed from
packages the user supplies (--offline-packages) on hosts that cannot download anything.

Bastion: inside the lab's controller namespace (the "workstation") iptables refuses SSH to h2/h3, while h1
(the bastion) still reaches them over the lab bridge. With `spec.ssh.bastion: root@<h1>` kubeboot gets
through, the refusing rules count no packet, and h2/h3's sshd logs the login as coming from h1's address.
Without the bastion the same run fails with exit code 8. The lab's ssh_config routes 10.200.0.* through the
controller namespace with a ProxyCommand: kubeboot's SSH transport applies it to the gateway (h1) and opens
the hosts behind it as direct-tcpip channels from h1.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import kubeboot
from tests.lab import Lab
from tests.lab.aptrepo import AptRepo, apt_repo, remove_machine_packages  # noqa: F401 (fixture)

pytestmark = pytest.mark.lab(hosts=3, overlay=True)

OFFLINE_DIR = "/var/cache/kubeboot/packages"
RUNTIME = ("kubelet", "kubectl", "containerd", "runc")


def _inventory(lab: Lab, path: Path, hosts: dict[str, str], bastion: str | None = None) -> Path:
    first = next(iter(hosts))
    ssh: dict[str, object] = {"user": "root", "keyPath": str(lab.key_path)}
    if bastion:
        ssh["bastion"] = bastion
    doc = {
        "apiVersion": "kubeboot.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "e2e-" + path.stem},
        "spec": {
            "kubernetesVersion": "1.37.2",
            "controlPlaneEndpoint": f"{lab.host(first).address}:6443",
            "kubelet": {"config": {"failCgroupV1": False}},  # this machine is cgroup v1 (preflight CgroupsV1)
            "loadBalancer": {"mode": "none"},
            "ssh": ssh,
            "hosts": [{"name": h, "address": str(lab.host(h).address), "roles": [role]} for h, role in hosts.items()],
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- bastion ---------------------------------------------------------------------------------------------


def _ctl(lab: Lab, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", lab.ctl_netns, *argv], check=True, capture_output=True,
                          text=True, timeout=30).stdout


def _reject_counts(lab: Lab, targets: tuple[str, ...]) -> dict[str, int]:
    """Packets that hit the REJECT rule for each target host (workstation -> host:22)."""
    out = _ctl(lab, "iptables", "-w", "-L", "OUTPUT", "-v", "-n", "-x")
    counts = {}
    for h in targets:
        addr = str(lab.host(h).address)
        line = next(ln for ln in out.splitlines() if "REJECT" in ln and f" {addr} " in f" {ln} " and "dpt:22" in ln)
        counts[h] = int(line.split()[0])
    return counts


TARGETS = ("h2", "h3")  # behind the bastion h1


@pytest.fixture(scope="class")
def blocked(lab: Lab) -> Iterator[Lab]:
    """The workstation cannot open SSH to h2/h3 (TCP reset, so failures are quick); h1 is untouched.
    Class-scoped: only TestBastion runs with the block; it is removed before the offline tests."""
    if shutil.which("iptables") is None:
        pytest.skip("iptables is missing on this machine (apt-get install iptables)")
    rules = [["OUTPUT", "-p", "tcp", "-d", str(lab.host(h).address), "--dport", "22", "-j", "REJECT",
              "--reject-with", "tcp-reset"] for h in TARGETS]
    for r in rules:
        _ctl(lab, "iptables", "-w", "-I", *r)
    try:
        yield lab
    finally:
        for r in rules:
            _ctl(lab, "iptables", "-w", "-D", *r)


@pytest.fixture(scope="class")
def direct_run(blocked: Lab, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """The same preflight-only run without a bastion, from the blocked workstation (once per class)."""
    lab = blocked
    inv = _inventory(lab, tmp_path_factory.mktemp("direct") / "direct.yaml", {"h2": "control-plane", "h3": "worker"})
    _ctl(lab, "iptables", "-w", "-Z", "OUTPUT")
    res = kubeboot(lab, inv, "up", "--only", "preflight", "--ignore-preflight-errors=all")
    counts = _reject_counts(lab, TARGETS)
    assert all(n > 0 for n in counts.values()), counts  # the direct attempts really hit the block
    return res


class TestBastion:
    def test_bastion_reaches_hosts_the_workstation_cannot(self, blocked: Lab, tmp_path: Path,
                                                          direct_run: subprocess.CompletedProcess[str]) -> None:
        lab = blocked
        h1 = str(lab.host("h1").address)
        # the set-up itself: workstation -> h2:22 refused, h1 -> h2:22 open, workstation -> h1:22 open
        with pytest.raises(ConnectionRefusedError):
            lab.sock_for("h2").close()
        for h in TARGETS:
            lab.sh_in("h1", f"nc -z -w 3 {lab.host(h).address} 22")
        lab.sock_for("h1").close()

        inv = _inventory(lab, tmp_path / "bastion.yaml", {"h2": "control-plane", "h3": "worker"},
                         bastion=f"root@{h1}")
        logs = {h: lab.host(h).log_path for h in TARGETS}
        offsets = {h: p.stat().st_size for h, p in logs.items()}
        _ctl(lab, "iptables", "-w", "-Z", "OUTPUT")
        res = kubeboot(lab, inv, "up", "--only", "preflight", "--ignore-preflight-errors=all")
        assert res.returncode == 0, res.stderr
        assert "[connect] facts from 2 host(s)" in res.stderr
        assert "[preflight] 2 hosts passed" in res.stderr
        assert _reject_counts(lab, TARGETS) == {"h2": 0, "h3": 0}  # never tried the direct way
        for h, path in logs.items():
            with path.open("rb") as fh:
                fh.seek(offsets[h])
                new = fh.read().decode(errors="replace")
            assert f"Accepted publickey for root from {h1} port" in new, (h, new)
            assert "Accepted publickey for root from 10.200.0.1 port" not in new  # nothing from the workstation

        # without the bastion: the same run cannot connect (exit 8), naming both hosts
        assert direct_run.returncode == 8, direct_run.stderr
        assert "[connect] 2 host(s) failed:" in direct_run.stderr
        for h in TARGETS:
            assert f"{h} (root@{lab.host(h).address}:22)" in direct_run.stderr
    def test_connection_failure_prints_no_traceback(self, direct_run: subprocess.CompletedProcess[str]) -> None:
        assert direct_run.returncode == 8
        assert "Traceback (most recent call last)" not in direct_run.stderr, direct_run.stderr[-3000:]
        assert "Exception (client)" not in direct_run.stderr


# --- offline packages -------------------------------------------------------------------------------------


def _installed(lab: Lab, host: str, name: str) -> bool:
    out = lab.run_in(host, ["dpkg-query", "-W", "-f=${db:Status-Status}", name], check=False).stdout
    return out.strip() == "installed"


def _dep_names(deb: Path) -> list[str]:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Pre-Depends", "Depends"], check=True,
                            capture_output=True, text=True).stdout
    names = []
    for line in fields.splitlines():
        _, _, value = line.partition(":")
        for dep in value.split(","):
            for alt in dep.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if name:
                    names.append(name)
    return names


def offline_dir(lab: Lab, repo: AptRepo, host: str, dest: Path) -> list[str]:
    """kubelet/kubectl/containerd/runc from the lab repo plus every dependency the repo has and `host` lacks."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted: list[str] = []
    todo = list(RUNTIME)
    while todo:
        name = todo.pop(0)
        if name in wanted or name not in repo.packages:
            continue
        if name not in RUNTIME and _installed(lab, host, name):
            continue
        wanted.append(name)
        deb = repo.path / repo.packages[name]["filename"]
        shutil.copy(deb, dest / deb.name)
        todo += _dep_names(deb)
    assert set(RUNTIME) <= set(wanted), (wanted, sorted(repo.packages))
    return sorted(repo.packages[n]["filename"] for n in wanted)


def forget_apt_lists(lab: Lab, host: str) -> None:
    """An air-gapped host that never ran `apt-get update`: apt knows only what is installed."""
    lab.sh_in(host, "find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -delete; rm -f /var/cache/apt/*.bin")


def test_offline_packages_are_uploaded_installed_and_converge(lab: Lab, apt_repo: AptRepo,  # noqa: F811
                                                              tmp_path: Path) -> None:
    host = "h2"
    remove_machine_packages(lab, host)
    forget_apt_lists(lab, host)
    assert lab.sh_in(host, "command -v kubelet containerd runc || true").strip() == ""
    files = offline_dir(lab, apt_repo, host, tmp_path / "debs")
    inv = _inventory(lab, tmp_path / "offline.yaml", {host: "control-plane"})

    res = kubeboot(lab, inv, "up", "--only", "runtime/packages", "--offline-packages", str(tmp_path / "debs"))
    assert res.returncode == 0, res.stderr
    listing = lab.sh_in(host, f"cd {OFFLINE_DIR} && sha256sum * && stat -c '%n %a %U:%G' *")
    for name in files:
        assert f"[runtime/packages] {host}: wrote {OFFLINE_DIR}/{name} (" in res.stderr, name
        digest = apt_repo.packages[name.split("_")[0]]["sha256"]
        assert f"{digest}  {name}" in listing, (name, listing)
        assert f"{name} 644 root:root" in listing
    assert "install the supplied packages (offline)" in res.stderr
    assert lab.sh_in(host, "kubelet --version").strip() == "Kubernetes v1.37.2"
    assert "Client Version: v1.37.2" in lab.sh_in(host, "kubectl version --client")
    versions = lab.sh_in(host, "dpkg-query -W -f='${Package}=${Version}\\n' kubelet kubectl containerd runc")
    for name in RUNTIME:
        assert f"{name}={apt_repo.packages[name]['version']}" in versions, versions
    assert {"kubelet", "kubectl"} <= set(lab.sh_in(host, "apt-mark showhold").split())
    assert lab.sh_in(host, "test -e /etc/apt/sources.list.d/kubernetes.list && echo yes || echo no").strip() == "no"

    again = kubeboot(lab, inv, "up", "--only", "runtime/packages", "--offline-packages", str(tmp_path / "debs"))
    assert again.returncode == 0, again.stderr
    assert "[runtime/packages] no changes" in again.stderr
    assert "no changes: the hosts already match" in again.stderr
    assert "wrote" not in again.stderr and "ran `" not in again.stderr
def test_offline_install_fetches_nothing_on_a_host_with_apt_lists(lab: Lab, apt_repo: AptRepo,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    host = "h3"
    remove_machine_packages(lab, host)
    policy = lab.sh_in(host, "apt-cache policy criu", check=False)
    if "Candidate:" not in policy or "Candidate: (none)" in policy:
        pytest.skip("premise missing: this machine's apt lists do not offer criu (runc's Recommends)")
    offline_dir(lab, apt_repo, host, tmp_path / "debs")
    inv = _inventory(lab, tmp_path / "offline-lists.yaml", {host: "control-plane"})
    res = kubeboot(lab, inv, "up", "--only", "runtime/packages", "--offline-packages", str(tmp_path / "debs"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert lab.sh_in(host, "kubelet --version").strip() == "Kubernetes v1.37.2"
def test_offline_packages_already_on_the_host_are_not_uploaded_again(lab: Lab, apt_repo: AptRepo,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    host = "h1"
    remove_machine_packages(lab, host)
    runc = apt_repo.path / apt_repo.packages["runc"]["filename"]
    debs = tmp_path / "debs"
    debs.mkdir()
    shutil.copy(runc, debs / runc.name)
    with lab.connection(host) as c:
        c.run(f"mkdir -p {OFFLINE_DIR}", hide=True)
        c.put(str(runc), f"{OFFLINE_DIR}/{runc.name}")
        c.run(f"chmod 0644 {OFFLINE_DIR}/{runc.name} && chown root:root {OFFLINE_DIR}/{runc.name}", hide=True)
    inv = _inventory(lab, tmp_path / "reupload.yaml", {host: "control-plane"})
    plan = kubeboot(lab, inv, "plan", "--only", "runtime/packages", "--offline-packages", str(debs))
    assert plan.returncode == 0, plan.stderr
    assert "would run `DEBIAN_FRONTEND=noninteractive apt-get install" in plan.stderr  # containerd is missing
    assert f"would write {OFFLINE_DIR}/{runc.name}" not in plan.stderr
