"""The apt path for real: a local apt repository (tests/lab/aptrepo.py) served on the lab network,
installed from over SSH into a lab host with a copy-on-write root."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.reference.binaries import ref_bin

from .aptrepo import (
    CNI_BIN,
    CNI_PLUGINS,
    CNI_PLUGINS_VERSION,
    DEBIAN_PACKAGES,
    DISABLED_SOURCES,
    LAB_SOURCES,
    NOT_ON_A_FRESH_HOST,
    AptRepo,
    AptRepoError,
    apt_repo,  # noqa: F401  (fixture)
    build_deb,
    build_or_skip,
    build_repo,
    harness_packages,
    parse_packages_index,
    read_manifest,
    remove_machine_packages,
    serve,
    use_as_mirror,
)
from .fixtures import LabFactory
from .fixtures import lab, lab_factory, lab_requirements  # noqa: F401  (works without -p tests.lab.fixtures)
from .lab import GATEWAY, Lab, _alive

pytest.importorskip("fabric", reason="fabric not installed (pip install fabric)")

pytestmark = pytest.mark.lab(hosts=2, overlay=True)

K8S_VERSION = "1.37.2"
DEB_VERSION = f"{K8S_VERSION}-1.1"
TIMINGS: dict[str, float] = {}


def _machine_dpkg(pkg: str) -> str:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else "not-installed"


def _machine_snapshot() -> dict[str, object]:
    """What installing in a lab host must never change on the machine itself."""
    snap: dict[str, object] = {}
    for path in ("/usr/bin/kubelet", "/usr/bin/kubeadm", "/usr/bin/kubectl", "/usr/bin/containerd", "/usr/sbin/runc",
                 "/usr/lib/systemd/system/kubelet.service", LAB_SOURCES, DISABLED_SOURCES):  # fmt: skip
        try:
            st = os.lstat(path)
            snap[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            snap[path] = None
    for pkg in NOT_ON_A_FRESH_HOST:
        snap[f"dpkg:{pkg}"] = _machine_dpkg(pkg)
    return snap


# ---------------------------------------------------------------------------------------------
# the repository itself (no lab needed)


@pytest.fixture(scope="module")
def built_repo() -> Path:
    t0 = time.monotonic()
    path = build_or_skip(K8S_VERSION)
    TIMINGS["build_repo (as found: cold or warm)"] = time.monotonic() - t0
    return path


def test_packages_index_lists_exactly_the_expected_packages(built_repo: Path) -> None:
    index = parse_packages_index((built_repo / "Packages").read_text())
    manifest = read_manifest(built_repo)
    assert index == {name: m["version"] for name, m in manifest.items()}
    # the harness packages, in the pkgs.k8s.io version form
    harness = {n for n, m in manifest.items() if m["source"] == "harness"}
    expected_harness = {"kubelet", "kubectl", "kubernetes-cni"} | (
        {"kubeadm"} if ref_bin("kubeadm", K8S_VERSION) else set())
    assert harness == expected_harness
    for name in harness - {"kubernetes-cni"}:
        assert index[name] == DEB_VERSION
    assert index["kubernetes-cni"] == f"{CNI_PLUGINS_VERSION}-1.1"
    # Debian's containerd and runc, at the version the machine's apt would pick
    debian = {n for n, m in manifest.items() if m["source"] == "debian"}
    assert set(DEBIAN_PACKAGES) | {"iptables"} <= debian
    for name in debian:
        policy = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True, check=True).stdout
        assert f"Candidate: {index[name]}" in policy
    # nothing else in the directory; Packages.gz and Release agree with Packages
    assert sorted(p.name for p in built_repo.glob("*.deb")) == sorted(m["filename"] for m in manifest.values())
    packages = (built_repo / "Packages").read_bytes()
    assert gzip.decompress((built_repo / "Packages.gz").read_bytes()) == packages
    release = (built_repo / "Release").read_text()
    assert f" {hashlib.sha256(packages).hexdigest()} {len(packages):>16} Packages\n" in release


def test_harness_debs_are_shaped_like_pkgs_k8s_io(built_repo: Path) -> None:
    def field(deb: str, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(built_repo / deb), name], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    def files(deb: str) -> set[str]:
        out = subprocess.run(["dpkg-deb", "-c", str(built_repo / deb)], capture_output=True, text=True, check=True)
        return {line.split()[-1].lstrip(".") for line in out.stdout.splitlines()}

    kubelet = f"kubelet_{DEB_VERSION}_amd64.deb"
    assert field(kubelet, "Package") == "kubelet" and field(kubelet, "Version") == DEB_VERSION
    assert field(kubelet, "Depends") == "iptables (>= 1.4.21), kubernetes-cni (>= 1.1.1), mount, util-linux"
    assert {"/usr/bin/kubelet", "/usr/lib/systemd/system/kubelet.service"} <= files(kubelet)
    # kubernetes-cni: the plugins flannel delegates to, in /opt/cni/bin (not flannel's own: its DaemonSet installs it)
    cni = f"kubernetes-cni_{CNI_PLUGINS_VERSION}-1.1_amd64.deb"
    assert field(cni, "Package") == "kubernetes-cni" and field(cni, "Depends") == ""
    cni_files = {f for f in files(cni) if f.startswith(CNI_BIN + "/") and f != CNI_BIN + "/"}
    assert cni_files == {f"{CNI_BIN}/{p}" for p in ("bridge", "host-local", "loopback", "portmap")}
    assert "/etc/cni/net.d/" in files(cni)
    assert "/usr/bin/kubectl" in files(f"kubectl_{DEB_VERSION}_amd64.deb")
    if ref_bin("kubeadm", K8S_VERSION):
        kubeadm = f"kubeadm_{DEB_VERSION}_amd64.deb"
        assert field(kubeadm, "Depends") == "kubelet (>= 1.37.0), kubectl (>= 1.37.0)"
        assert {"/usr/bin/kubeadm", "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"} <= files(kubeadm)


def test_rebuild_is_cheap_and_deterministic(built_repo: Path, tmp_path: Path) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in built_repo.iterdir() if p.is_file()}
    t0 = time.monotonic()
    build_repo(built_repo, K8S_VERSION)
    TIMINGS["build_repo warm"] = time.monotonic() - t0
    from . import aptrepo

    report = aptrepo.last_build
    assert report.built == [] and report.downloaded == [] and not report.index_written
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in built_repo.iterdir() if p.is_file()}
    assert before == after
    # the same inputs give the same bytes (fixed mtimes, SOURCE_DATE_EPOCH, root:root)
    kubectl = next(p for p in harness_packages(K8S_VERSION) if p.name == "kubectl")
    build_deb(kubectl, tmp_path / "a.deb")
    build_deb(kubectl, tmp_path / "b.deb")
    assert (tmp_path / "a.deb").read_bytes() == (tmp_path / "b.deb").read_bytes()
    assert (tmp_path / "a.deb").read_bytes() == (built_repo / kubectl.filename).read_bytes()


# ---------------------------------------------------------------------------------------------
# installing from it over SSH


@dataclass
class Installed:
    host: str
    update_out: str
    install_out: str
    machine_before: dict[str, object]


@pytest.fixture(scope="module")
def installed(lab: Lab, apt_repo: AptRepo) -> Iterator[Installed]:
    """h1 installs kubelet, kubectl, containerd and runc from the lab repo over SSH, as kubeboot
    would from a mirror."""
    host = "h1"
    machine_before = _machine_snapshot()
    # Harness set-up (nsenter, inside h1 only): the overlay root starts as a copy of the machine,
    # which has containerd, runc and Google Cloud SDK's `kubectl 1:528.0.0-0` -- a fresh Debian 12
    # host has none of them; and the machine's Debian sources are unreachable from the lab, so the
    # lab repo becomes h1's only apt source ("its mirror").
    remove_machine_packages(lab, host)
    assert lab.sh_in(host, "command -v kubelet kubectl containerd runc || true").strip() == ""
    use_as_mirror(lab, host, apt_repo.server)

    with lab.connection(host) as c:
        t0 = time.monotonic()
        update = c.run("apt-get update", hide=True, timeout=120)
        TIMINGS["apt-get update over SSH"] = time.monotonic() - t0
        t0 = time.monotonic()
        install = c.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"kubelet={DEB_VERSION} kubectl containerd runc",
            hide=True,
            timeout=600,
        )
        TIMINGS["apt-get install over SSH"] = time.monotonic() - t0
    yield Installed(host, update.stdout, install.stdout, machine_before)


def test_install_over_ssh_from_the_lab_repo(lab: Lab, apt_repo: AptRepo, installed: Installed) -> None:
    # apt fetched from the lab repo and nowhere else
    assert re.search(rf"^Get:\d+ {re.escape(apt_repo.url.rstrip('/'))} \./ Release ", installed.update_out, re.M)
    assert "deb.debian.org" not in installed.update_out + installed.install_out
    hits = [line for line in installed.update_out.splitlines() if line.startswith(("Get:", "Hit:", "Ign:"))]
    assert hits and all(f" {apt_repo.url.rstrip('/')} ./ " in line for line in hits), hits
    for name in ("kubelet", "kubernetes-cni", "kubectl", "containerd", "runc"):  # kubernetes-cni: kubelet's Depends
        assert f"Unpacking {name} (" in installed.install_out
    log = apt_repo.server.log_path.read_text()
    assert f'"GET /./kubelet_{DEB_VERSION}_amd64.deb HTTP/1.1" 200' in log
    assert "10.200.0.11 - -" in log

    with lab.connection(installed.host) as c:
        versions = dict(
            line.split("\t")
            for line in c.run("dpkg-query -W kubelet kubectl containerd runc", hide=True).stdout.splitlines()
        )
        assert versions == {n: apt_repo.packages[n]["version"] for n in ("kubelet", "kubectl", "containerd", "runc")}
        assert c.run("command -v kubelet", hide=True).stdout.strip() == "/usr/bin/kubelet"
        assert c.run("kubelet --version", hide=True).stdout.strip() == f"Kubernetes v{K8S_VERSION}"
        assert f"v{K8S_VERSION}" in c.run("kubectl version --client", hide=True).stdout
        assert "containerd" in c.run("containerd --version", hide=True).stdout
        assert c.run("runc --version", hide=True).ok
        assert c.run("test -f /usr/lib/systemd/system/kubelet.service", hide=True, warn=True).ok
        # the CNI plugins are where the kubelet's runtime looks (containerd's bin_dir), and they run
        assert c.run(f"ls {CNI_BIN}", hide=True).stdout.split() == sorted(CNI_PLUGINS)
        for plugin in CNI_PLUGINS:
            res = c.run(f"CNI_COMMAND=VERSION {CNI_BIN}/{plugin}", hide=True, warn=True)
            assert res.ok and '"supportedVersions"' in res.stdout, (plugin, res.stdout, res.stderr)
            assert f"CNI {plugin} plugin v{CNI_PLUGINS_VERSION}" in c.run(f"{CNI_BIN}/{plugin} 2>&1 || true",
                                                                          hide=True).stdout
        assert c.run("dpkg-query -W -f='${Version}' kubernetes-cni", hide=True).stdout == \
            apt_repo.packages["kubernetes-cni"]["version"]


def test_only_that_host_changed(lab: Lab, installed: Installed) -> None:
    # the other host still sees the machine's packages (no kubelet)
    assert lab.sh_in("h2", "command -v kubelet || echo none").strip() == "none"
    machine_kubectl = str(installed.machine_before["dpkg:kubectl"]).split(" ")[-1]
    assert lab.sh_in("h2", "dpkg-query -W -f='${Version}' kubectl 2>/dev/null || echo not-installed") == machine_kubectl
    # the machine's root filesystem and dpkg database are untouched
    assert _machine_snapshot() == installed.machine_before


def test_apt_mark_hold(lab: Lab, installed: Installed) -> None:
    with lab.connection(installed.host) as c:
        out = c.run("apt-mark hold kubelet kubectl", hide=True).stdout
        assert "kubelet set on hold." in out and "kubectl set on hold." in out
        assert c.run("apt-mark showhold", hide=True).stdout.split() == ["kubectl", "kubelet"]
        # a held package is not removed or changed behind the operator's back
        r = c.run("apt-get remove -y kubelet", hide=True, warn=True)
        assert r.failed and "Held packages were changed" in r.stderr
        assert c.run("dpkg-query -W -f='${Status}' kubelet", hide=True).stdout == "hold ok installed"
    assert lab.sh_in(installed.host, "test -x /usr/bin/kubelet && echo yes").strip() == "yes"


# ---------------------------------------------------------------------------------------------
# the server process


def test_server_stop_and_lab_teardown(lab_factory: LabFactory, built_repo: Path) -> None:
    small = lab_factory(n=1)
    t0 = time.monotonic()
    first = serve(small, built_repo, port=8081)
    TIMINGS["serve() until GET /Release answers"] = time.monotonic() - t0
    assert first.url == f"http://{GATEWAY}:8081/"
    assert first.sources_line == f"deb [trusted=yes] http://{GATEWAY}:8081/ ./"
    assert first.pid in small.processes()  # lives in the lab's namespaces
    status, body = first.get("Packages")
    assert status == 200 and body == (built_repo / "Packages").read_bytes()
    # reachable from a host over the lab network
    fetch = f"import urllib.request as u; print(u.urlopen('{first.url}Release').status)"
    assert small.run_in("h1", ["python3", "-c", fetch]).stdout.strip() == "200"
    # a lab without the copy-on-write /usr refuses the helpers that would run dpkg
    with pytest.raises(AptRepoError, match="overlay=True"):
        use_as_mirror(small, "h1", first)
    with pytest.raises(AptRepoError, match="overlay=True"):
        remove_machine_packages(small, "h1")
    first.stop()
    assert not _alive(first.pid)
    with pytest.raises(OSError):
        first.get("Release", timeout=0.5)

    # a server the test forgets to stop goes with the lab
    second = serve(small, built_repo, port=8082)
    assert second.running()
    lab_factory.down(small)
    assert not _alive(second.pid)
    second.stop()  # idempotent


def test_report_timings() -> None:
    """Not a check: prints what the module measured (pytest -s, or -rA shows it)."""
    for name, seconds in TIMINGS.items():
        print(f"TIMING {name}: {seconds:.2f} s")
