"""Image archives (OCI layout and docker-save), the images list, the images phase and kubelet-start planning."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubeboot.config.load import parse_inventory
from kubeboot.errors import ConfigError, ImageArchiveError
from kubeboot.phases.files import plan_files
from kubeboot.phases.images import plan_images
from kubeboot.plan.actions import RunCommand, UploadFile
from kubeboot.plan.archives import ArchiveError, read_archive
from kubeboot.render.images import required_images
from kubeboot.workflows.up import load_image_archives
from tests.unit.test_phases import DOC, Cluster, cl, converged, ctx_for, fresh  # noqa: F401 (fixture)


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _add(t: tarfile.TarFile, path: str, data: bytes) -> None:
    ti = tarfile.TarInfo(path)
    ti.size = len(data)
    t.addfile(ti, io.BytesIO(data))


def oci_archive(refs: list[str], *, drop_layer: bool = False, annotation: str = "io.containerd.image.name") -> bytes:
    """An OCI image layout with one single-layer image per ref (what tests/reference/images.py builds)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        _add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        descs = []
        for ref in refs:
            layer = ref.encode() * 3
            config = json.dumps({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]}}).encode()
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                            "size": len(layer)}]}).encode()
            blobs = [config, manifest] + ([] if drop_layer else [layer])
            for b in blobs:
                _add(t, "blobs/sha256/" + _digest(b)[7:], b)
            descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                          "size": len(manifest), "annotations": {annotation: ref}})
        _add(t, "index.json", json.dumps({"schemaVersion": 2, "manifests": descs}).encode())
    return buf.getvalue()


def docker_archive(tags: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        config = b'{"architecture":"amd64","os":"linux"}'
        _add(t, "abc.json", config)
        _add(t, "l1/layer.tar", b"layer")
        _add(t, "manifest.json", json.dumps([{"Config": "abc.json", "RepoTags": tags,
                                               "Layers": ["l1/layer.tar"]}]).encode())
    return buf.getvalue()


def test_oci_archive_names_and_digests() -> None:
    data = oci_archive(["registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0"])
    a = read_archive("cp.tar", io.BytesIO(data))
    assert a.format == "oci" and a.size == len(data) and a.sha256 == _digest(data)
    assert a.refs == ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0")
    index = json.loads(tarfile.open(fileobj=io.BytesIO(data)).extractfile("index.json").read())  # type: ignore[union-attr]
    assert [i.digest for i in a.images] == [m["digest"] for m in index["manifests"]]
    assert all(i.image_id.startswith("sha256:") for i in a.images)


def test_docker_archive_short_names_normalised_like_containerd() -> None:
    a = read_archive("bb.tar", io.BytesIO(docker_archive(["busybox:1.36", "ghcr.io/x/y:1"])))
    assert a.format == "docker"
    assert a.refs == ("docker.io/library/busybox:1.36", "ghcr.io/x/y:1")
    assert a.images[0].digest == "" and a.images[0].image_id == _digest(b'{"architecture":"amd64","os":"linux"}')


@pytest.mark.parametrize("data, message", [
    (b"this is not a tar file at all" * 100, "not a tar archive"),
    (oci_archive(["registry.k8s.io/pause:3.10.2"], drop_layer=True), "a layer of registry.k8s.io/pause:3.10.2"),
    (oci_archive(["3.10.2"], annotation="org.opencontainers.image.ref.name"), "does not name its image"),
    (docker_archive([]), "has no RepoTags"),
])
def test_not_an_image_archive_says_why(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        read_archive("x.tar", io.BytesIO(data))


def test_plain_tar_without_index_is_refused() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        _add(t, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(ArchiveError, match="neither an OCI image layout"):
        read_archive("x.tar", io.BytesIO(buf.getvalue()))


def test_load_image_archives_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "good.tar").write_bytes(oci_archive(["registry.k8s.io/pause:3.10.2"]))
    (tmp_path / "notes.txt").write_text("ignored: not an archive name")
    assert [a.name for _p, a in load_image_archives(tmp_path, "--images")] == ["good.tar"]
    (tmp_path / "bad.tar").write_bytes(b"\0" * 2048)
    with pytest.raises(ImageArchiveError) as exc:
        load_image_archives(tmp_path, "--images")
    assert str(tmp_path / "bad.tar") in exc.value.message and exc.value.exit_code == 17
    with pytest.raises(ConfigError, match="is not a directory"):
        load_image_archives(tmp_path / "nope", "--images")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no image archives"):
        load_image_archives(empty, "spec.images.archiveDir")


def _with(doc_changes: dict[str, Any]) -> Any:
    doc = copy.deepcopy(DOC)
    doc["spec"].update(doc_changes)
    return parse_inventory(doc)


def test_required_images_follow_kubeadm_and_image_repository() -> None:
    assert required_images(_with({}))[:7] == [
        "registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
        "registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/kube-proxy:v1.37.2",
        "registry.k8s.io/coredns/coredns:v1.14.6", "registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0"]
    # then the CNI plugin's (flannel by default; see tests/unit/test_cni.py)
    assert required_images(_with({}))[7:] == ["ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
                                              "ghcr.io/flannel-io/flannel:v0.28.10"]
    mirror = required_images(_with({"imageRepository": "mirror.local:5000/k8s", "kubernetesVersion": "1.35"}))
    assert mirror[4] == "mirror.local:5000/k8s/coredns:v1.13.1"  # no extra /coredns level off registry.k8s.io
    assert mirror[0] == "mirror.local:5000/k8s/kube-apiserver:v1.35.4" and mirror[5].endswith("pause:3.10.1")


def test_images_field_validated() -> None:
    assert _with({"images": {"archiveDir": "bundle/images"}}).image_archive_dir == "bundle/images"
    with pytest.raises(ConfigError) as exc:
        _with({"images": {"archiveDirs": "x"}})
    assert "spec.images.archiveDirs: unknown field (allowed: archiveDir)" in [str(p) for p in exc.value.problems]


def _archives(tmp_path: Path) -> Any:
    (tmp_path / "cp.tar").write_bytes(oci_archive(["registry.k8s.io/kube-apiserver:v1.37.2",
                                                    "registry.k8s.io/etcd:3.7.0-0"]))
    (tmp_path / "cp-1.36.tar").write_bytes(oci_archive(["registry.k8s.io/kube-scheduler:v1.36.3"]))
    (tmp_path / "node.tar").write_bytes(oci_archive(["registry.k8s.io/pause:3.10.2",
                                                      "registry.k8s.io/kube-proxy:v1.37.2"]))
    return load_image_archives(tmp_path, "--images")


def test_images_phase_imports_only_what_a_node_lacks(cl: Cluster, tmp_path: Path) -> None:  # noqa: F811
    archives = _archives(tmp_path)
    ctx = ctx_for(cl, image_archives=archives)
    cp = plan_images(ctx, cl.host("cp1"))
    uploads = [a for a in cp if isinstance(a, UploadFile)]
    assert [Path(u.local).name for u in uploads] == ["cp-1.36.tar", "cp.tar", "node.tar"]
    assert all(u.path.startswith("/var/cache/kubeboot/images/") and u.mode == 0o600 for u in uploads)
    imports = [a.command for a in cp if isinstance(a, RunCommand)]
    assert all(c.startswith("ctr -n k8s.io images import ") and "rm -f" in c for c in imports)
    # a worker never gets an archive of control-plane-only images, of this release or another (an upgrade's)
    assert [Path(a.local).name for a in plan_images(ctx, cl.host("w1")) if isinstance(a, UploadFile)] == ["node.tar"]
    # everything present by digest: nothing to do (a re-run imports nothing)
    have = {i.ref: i.digest for _p, a in archives for i in a.images}
    done = ctx_for(cl, {"cp1": converged(cl, "cp1", images=have)}, image_archives=archives)
    assert plan_images(done, cl.host("cp1")) == []
    # same name, other digest (a rebuilt image): imported again
    stale = dict(have, **{"registry.k8s.io/pause:3.10.2": "sha256:" + "0" * 64})
    again = ctx_for(cl, {"cp1": converged(cl, "cp1", images=stale)}, image_archives=archives)
    assert [Path(a.local).name for a in plan_images(again, cl.host("cp1")) if isinstance(a, UploadFile)] == \
        ["node.tar"]


def test_docker_archive_present_by_name_and_image_id(cl: Cluster, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "bb.tar").write_bytes(docker_archive(["busybox:1.36"]))
    archives = load_image_archives(tmp_path, "--images")
    image_id = archives[0][1].images[0].image_id
    by_name_only = ctx_for(cl, {"w1": converged(cl, "w1", images={"docker.io/library/busybox:1.36": "sha256:1"})},
                           image_archives=archives)
    assert plan_images(by_name_only, cl.host("w1")) != []
    both = ctx_for(cl, {"w1": converged(cl, "w1", images={"docker.io/library/busybox:1.36": "sha256:1",
                                                           image_id: "sha256:1"})}, image_archives=archives)
    assert plan_images(both, cl.host("w1")) == []


def test_kubelet_started_when_not_running_and_never_restarted_when_nothing_changed(cl: Cluster) -> None:  # noqa: F811
    assert plan_files(ctx_for(cl), cl.host("cp1")) == []
    for state in ("inactive", "activating", "failed"):
        idle = converged(cl, "cp1", services={"containerd": "active", "kubelet": state})
        assert [a.command for a in plan_files(ctx_for(cl, {"cp1": idle}), cl.host("cp1"))] == \
            ["systemctl restart kubelet"]
    # no kubelet binary yet (runtime not run): nothing to start; an LB host has no kubelet at all
    nobin = converged(cl, "w1", services={"kubelet": "inactive"},
                      binaries={k: v for k, v in converged(cl, "w1").binaries.items() if k != "kubelet"})
    assert plan_files(ctx_for(cl, {"w1": nobin}), cl.host("w1")) == []
    assert all("kubelet" not in c for c in
               [a.command for a in plan_files(ctx_for(cl, {"lb1": fresh(cl, "lb1")}), cl.host("lb1"))
                if isinstance(a, RunCommand)])
