"""kubeboot.bundle.manifest: a bundle is used whole or not at all; every problem names the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeboot.bundle.manifest import MANIFEST, Entry, Manifest, hash_file, load_bundle, write_manifest
from kubeboot.errors import BundleError


def _bundle(root: Path) -> Manifest:
    files = {"packages/node/kubelet_1.37.2-1.1_amd64.deb": ("package", "node", "kubelet"),
             "packages/lb/nginx_1.22_amd64.deb": ("package", "lb", "nginx"),
             "images/etcd.tar": ("image", "node", "etcd"),
             "bin/kubectl": ("binary", "tools", "kubectl")}
    entries = []
    for i, (rel, (kind, group, name)) in enumerate(files.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"artifact {i} {name}\n".encode() * 100)
        sha, size = hash_file(p)
        entries.append(Entry(rel, kind, group, name, "1.37.2", sha, size))
    m = Manifest("1.37.2", "debian-12", "amd64", "source", "inputs-digest", tuple(entries))
    write_manifest(root, m)
    return m


def test_a_bundle_reads_back_and_sorts_its_artifacts_by_role(tmp_path: Path) -> None:
    m = _bundle(tmp_path)
    b = load_bundle(tmp_path)
    assert b.manifest == Manifest(m.kubernetes_version, m.distribution, m.arch, m.source, m.inputs,
                                  tuple(sorted(m.entries, key=lambda e: e.path)))
    assert b.version == "1.37.2"
    assert [p.name for p in b.packages("node")] == ["kubelet_1.37.2-1.1_amd64.deb"]
    assert [p.name for p in b.packages("lb")] == ["nginx_1.22_amd64.deb"]
    assert b.packages("tools") == []
    assert [p.name for p in b.images()] == ["etcd.tar"]
    assert b.binary("kubectl") == tmp_path / "bin/kubectl" and b.binary("kubeadm") is None
    assert not list(tmp_path.glob(".manifest.*")), "the temporary manifest was left behind"


@pytest.mark.parametrize("damage, named, says", [
    (lambda r: (r / "images/etcd.tar").unlink(), "images/etcd.tar", "missing"),
    (lambda r: (r / "bin/kubectl").write_bytes(b"x"), "bin/kubectl", "bytes, the manifest says"),
    # same size, one byte changed: only the digest shows it
    (lambda r: (r / "packages/lb/nginx_1.22_amd64.deb").write_bytes(
        b"X" + (r / "packages/lb/nginx_1.22_amd64.deb").read_bytes()[1:]), "packages/lb/nginx_1.22_amd64.deb",
     "sha256 differs"),
])
def test_a_missing_or_tampered_artifact_is_refused_by_name(tmp_path: Path, damage, named: str, says: str) -> None:  # type: ignore[no-untyped-def]
    _bundle(tmp_path)
    damage(tmp_path)
    with pytest.raises(BundleError) as err:
        load_bundle(tmp_path)
    assert err.value.exit_code == 27
    assert named in err.value.message and says in err.value.message
    assert "1 artifact(s)" in err.value.message
    assert err.value.hint and "kubeboot bundle build" in err.value.hint
    load_bundle(tmp_path, verify=False)  # reading the manifest alone still works


@pytest.mark.parametrize("edit, says", [
    (lambda d: d.pop("kind"), "not a kubeboot bundle manifest"),
    (lambda d: d.update(artifacts=[]), "artifacts is missing or empty"),
    (lambda d: d["artifacts"][0].update(path="../../etc/passwd"), "not a plain relative path"),
    (lambda d: d["artifacts"][0].update(path="/etc/passwd"), "not a plain relative path"),
    (lambda d: d["artifacts"][1].update(path=d["artifacts"][0]["path"]), "listed twice"),
    (lambda d: d["artifacts"][0].update(sha256="abc"), "64 lowercase hex"),
    (lambda d: d["artifacts"][0].update(size=-1), "non-negative integer"),
    (lambda d: d["artifacts"][0].update(kind="script"), "unknown"),
    (lambda d: d.pop("kubernetesVersion"), "kubernetesVersion is missing"),
])
def test_a_malformed_manifest_is_refused_with_the_field(tmp_path: Path, edit, says: str) -> None:  # type: ignore[no-untyped-def]
    _bundle(tmp_path)
    doc = json.loads((tmp_path / MANIFEST).read_text())
    edit(doc)
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(BundleError) as err:
        load_bundle(tmp_path)
    assert says in err.value.message and MANIFEST in err.value.message


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(BundleError, match="not JSON"):
        load_bundle(tmp_path)


def test_up_refuses_a_bundle_of_another_version_or_a_corrupt_one_before_any_host(tmp_path: Path) -> None:
    from kubeboot.offline import load_inventory
    from kubeboot.phases.base import RunOptions
    from kubeboot.workflows.up import bundle_inputs

    cfg = load_inventory(Path(__file__).parents[2] / "inventory.example.yaml")
    root = tmp_path / "b"
    root.mkdir()
    m = _bundle(root)
    write_manifest(root, Manifest("1.36.3", m.distribution, m.arch, m.source, m.inputs, m.entries))
    with pytest.raises(BundleError) as err:
        bundle_inputs(root, cfg, RunOptions())
    assert "is for Kubernetes 1.36.3" in err.value.message and cfg.version.version in err.value.message
    assert err.value.hint and f"--version {cfg.version.version}" in err.value.hint
    (root / "packages/node/kubelet_1.37.2-1.1_amd64.deb").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="kubelet_1.37.2-1.1_amd64.deb"):  # digests first, then the version
        bundle_inputs(root, cfg, RunOptions())
