"""The lab apt repository with two Kubernetes releases (tests/lab/aptrepo.py ``build_repo(..., also=...)`` and the
``apt_versions`` marker): what an upgrade test installs from, first the previous release, then the default one,
from one sources line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from tests.reference.binaries import DEFAULT_VERSION, PREVIOUS_VERSION, cache_root, ref_bin

from . import aptrepo
from .aptrepo import (
    CNI_PLUGINS_VERSION,
    AptRepo,
    apt_repo,  # noqa: F401  (fixture)
    build_or_skip,
    build_repo,
    deb_version,
    default_repo_dir,
    parse_packages_index,
    parse_packages_versions,
    read_manifest,
    remove_machine_packages,
    use_as_mirror,
)
from .fixtures import lab, lab_factory, lab_requirements  # noqa: F401  (works without -p tests.lab.fixtures)
from .lab import Lab

if TYPE_CHECKING:
    from .fabric_conn import LabConnection

pytest.importorskip("fabric", reason="fabric not installed (pip install fabric)")

NEW, OLD = DEFAULT_VERSION, PREVIOUS_VERSION
K8S = ("kubelet", "kubectl", "kubeadm")

pytestmark = [pytest.mark.lab(hosts=1, overlay=True), pytest.mark.apt_versions(NEW, OLD)]


def _harness(version: str) -> set[str]:
    """The harness packages built for ``version`` (kubeadm only when its reference binary is)."""
    return {"kubelet", "kubectl"} | ({"kubeadm"} if ref_bin("kubeadm", version) else set())


# ---------------------------------------------------------------------------------------------
# the repository itself (no lab needed)


def test_versions_name_the_directory_and_are_not_repeated() -> None:
    assert default_repo_dir(NEW) == cache_root() / "aptrepo" / f"v{NEW}"
    assert default_repo_dir(NEW, (OLD,)) == cache_root() / "aptrepo" / f"v{NEW}+v{OLD}"
    assert default_repo_dir(f"v{NEW}", (f"v{OLD}",)) == default_repo_dir(NEW, (OLD,))
    with pytest.raises(ValueError, match="given twice"):
        default_repo_dir(NEW, (f"v{NEW}",))


def test_packages_versions_lists_a_package_at_each_version() -> None:
    text = ("Package: kubelet\nVersion: 1.37.2-1.1\n\nPackage: kubelet\nVersion: 1.36.3-1.1\n\n"
            "Package: runc\nVersion: 1\n")
    assert parse_packages_versions(text) == {"kubelet": ["1.37.2-1.1", "1.36.3-1.1"], "runc": ["1"]}


@pytest.fixture(scope="module")
def two_versions() -> Path:
    return build_or_skip(NEW, also=(OLD,))


def test_packages_index_lists_both_releases_and_the_rest_once(two_versions: Path) -> None:
    index = parse_packages_versions((two_versions / "Packages").read_text())
    primary, old = read_manifest(two_versions), read_manifest(two_versions, OLD)
    assert read_manifest(two_versions, NEW) == primary
    assert set(old) == _harness(OLD) and {m["version"] for m in old.values()} == {deb_version(OLD)}
    for name in _harness(NEW) | _harness(OLD):
        assert sorted(index[name]) == sorted(m[name]["version"] for m in (primary, old) if name in m)
    # kubernetes-cni (the primary release's) and the Debian packages once each
    assert {n for n, vs in index.items() if len(vs) > 1} == _harness(NEW) & _harness(OLD)
    assert index["kubernetes-cni"] == [f"{CNI_PLUGINS_VERSION}-1.1"]
    assert {n: vs[0] for n, vs in index.items() if n not in K8S} == {
        n: m["version"] for n, m in primary.items() if n not in K8S}
    # the directory holds exactly the manifest's .debs
    files = [m["filename"] for m in (*primary.values(), *old.values())]
    assert sorted(p.name for p in two_versions.glob("*.deb")) == sorted(files)
    doc = json.loads((two_versions / "manifest.json").read_text())
    assert doc["k8s_version"] == NEW and set(doc["also"]) == {OLD}


def test_each_release_deb_carries_its_own_binary(two_versions: Path, tmp_path: Path) -> None:
    for version in (NEW, OLD):
        deb = two_versions / read_manifest(two_versions, version)["kubelet"]["filename"]
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        kubelet = tmp_path / f"kubelet-{version}"
        kubelet.write_bytes(subprocess.run(["tar", "-xO", "./usr/bin/kubelet"], input=tar, capture_output=True,
                                           check=True).stdout)
        kubelet.chmod(0o755)
        assert subprocess.run([str(kubelet), "--version"], capture_output=True, text=True).stdout.strip() == \
            f"Kubernetes v{version}"


def test_a_second_build_does_nothing_and_stamps_do_not_collide(two_versions: Path) -> None:
    before = {p.name: p.read_bytes() for p in two_versions.iterdir() if p.is_file()}
    build_repo(two_versions, NEW, also=(OLD,))
    report = aptrepo.last_build
    assert report.built == [] and report.downloaded == [] and not report.index_written
    assert {p.name: p.read_bytes() for p in two_versions.iterdir() if p.is_file()} == before
    stamps = {p.name for p in (two_versions / ".stamps").iterdir()}
    assert {f"{n}.json" for n in _harness(NEW)} | {f"{n}_{deb_version(OLD)}.json" for n in _harness(OLD)} <= stamps


def test_the_single_release_repository_keeps_its_form() -> None:
    """Existing callers (build_repo(dest, version), the unmarked apt_repo fixture) see what they saw before."""
    single = build_or_skip(NEW)
    assert single == default_repo_dir(NEW)
    doc = json.loads((single / "manifest.json").read_text())
    assert set(doc) == {"k8s_version", "packages"}
    index = parse_packages_index((single / "Packages").read_text())  # raises on a package listed twice
    assert index == {n: m["version"] for n, m in read_manifest(single).items()}


# ---------------------------------------------------------------------------------------------
# installing one release, then the other, from one source


def _installed(c: LabConnection, names: tuple[str, ...]) -> dict[str, str]:
    out = c.run("dpkg-query -W " + " ".join(names), hide=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def host(lab: Lab, apt_repo: AptRepo) -> Iterator[str]:
    """h1 with the two-release repo as its only apt source and none of the machine's Kubernetes packages."""
    remove_machine_packages(lab, "h1")
    use_as_mirror(lab, "h1", apt_repo.server)
    yield "h1"


def test_the_fixture_serves_both_releases(apt_repo: AptRepo) -> None:
    assert apt_repo.versions == (NEW, OLD)
    assert apt_repo.path == default_repo_dir(NEW, (OLD,))
    assert apt_repo.packages == read_manifest(apt_repo.path) and apt_repo.deb_version == deb_version(NEW)
    assert set(apt_repo.also) == {OLD} and set(apt_repo.also[OLD]) == _harness(OLD)


def test_install_the_previous_release_then_upgrade_from_one_source(lab: Lab, apt_repo: AptRepo, host: str) -> None:
    names = tuple(sorted(_harness(NEW) & _harness(OLD)))
    with lab.connection(host) as c:
        c.run("apt-get update", hide=True, timeout=120)
        madison = c.run("apt-cache madison kubelet", hide=True).stdout
        for version in (NEW, OLD):
            assert f"kubelet | {deb_version(version)} | {apt_repo.url.rstrip('/')} ./ Packages" in madison, madison
        install = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        c.run(install + " ".join(f"{n}={deb_version(OLD)}" for n in names), hide=True, timeout=600)
        assert _installed(c, names) == {n: deb_version(OLD) for n in names}
        assert c.run("kubelet --version", hide=True).stdout.strip() == f"Kubernetes v{OLD}"
        c.run(install + " ".join(f"{n}={deb_version(NEW)}" for n in names), hide=True, timeout=600)
        assert _installed(c, names) == {n: deb_version(NEW) for n in names}
        assert c.run("kubelet --version", hide=True).stdout.strip() == f"Kubernetes v{NEW}"
        assert c.run("dpkg-query -W -f='${Version}' kubernetes-cni", hide=True).stdout == f"{CNI_PLUGINS_VERSION}-1.1"
