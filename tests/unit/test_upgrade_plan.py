"""The pure part of `kubeboot upgrade` (kubeboot.plan.upgrade): versions read from real rendered manifests, the
skew rules kubeadm applies, what changes per host; and `up`'s refusal to change a cluster's version."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubeboot.config.load import load_inventory_text, parse_inventory
from kubeboot.config.versions import resolve_version
from kubeboot.errors import ConfigError, VersionSkewError
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.tokens import generate_token
from kubeboot.plan.upgrade import (
    COMPONENTS,
    NodeVersions,
    manifest_image,
    manifest_path,
    parse_version,
    plan_upgrade,
    version_mismatch,
)
from kubeboot.render.cluster import render_cluster
from kubeboot.render.images import component_image, etcd_image
from tests.unit.test_config_validation import BASE

OLD, NEW = resolve_version("1.36"), resolve_version("1.37")


def cfg_at(version: str) -> Any:
    doc = copy.deepcopy(BASE)
    doc["spec"]["kubernetesVersion"] = version
    return parse_inventory(doc)


def wanted(version: str) -> dict[str, str]:
    cfg = cfg_at(version)
    return {c: etcd_image(cfg) if c == "etcd" else component_image(cfg, c) for c in COMPONENTS}


def running(version: str, keygen, now) -> list[NodeVersions]:  # type: ignore[no-untyped-def]
    """What each control plane of a cluster rendered at `version` runs, read back from its manifests."""
    cfg = cfg_at(version)
    pki, _ = plan_pki(cfg, {}, now, keygen)
    hosts = render_cluster(cfg, pki, generate_token(now))
    out = []
    for h in cfg.hosts:
        if not h.is_node:
            continue
        files = {a.path: a.content for a in hosts[h.name]}
        images = {c: manifest_image(files.get(manifest_path(c)), c) for c in COMPONENTS} if h.is_control_plane else {}
        out.append(NodeVersions(h.name, h.is_control_plane, images, parse_version(cfg.version.version)))
    return out


def test_versions_are_read_from_rendered_manifests(keygen, now) -> None:  # type: ignore[no-untyped-def]
    nodes = running("1.36", keygen, now)
    cp1 = next(n for n in nodes if n.name == "cp1")
    assert cp1.control_plane_version == (1, 36, 3)
    assert cp1.images == wanted("1.36")
    assert cp1.images["etcd"] == "registry.k8s.io/etcd:3.6.8-0"
    assert parse_version("Kubernetes v1.37.2") == (1, 37, 2) and parse_version("3.7.0-0") == (3, 7, 0)
    assert parse_version("garbage") is None and manifest_image(b"{not yaml", "etcd") is None


def test_one_minor_up_changes_every_component_and_kubelet(keygen, now) -> None:  # type: ignore[no-untyped-def]
    plan = plan_upgrade(NEW, running("1.36", keygen, now), wanted("1.37"))
    assert plan.source == (1, 36, 3)
    assert [h.name for h in plan.control_planes] == ["cp1", "cp2", "cp3"]
    assert all(h.components == COMPONENTS and h.kubelet_from == (1, 36, 3) for h in plan.control_planes)
    assert [(h.name, h.components, h.kubelet_from) for h in plan.workers] == [("w1", (), (1, 36, 3))]
    cp1 = plan.control_planes[0]
    assert cp1.describe(NEW, wanted("1.37")).startswith("etcd -> 3.7.0-0, kube-apiserver -> v1.37.2")
    assert cp1.describe(NEW, wanted("1.37")).endswith("kubelet v1.36.3 -> v1.37.2")


def test_an_upgraded_cluster_is_nothing_to_do(keygen, now) -> None:  # type: ignore[no-untyped-def]
    plan = plan_upgrade(NEW, running("1.37", keygen, now), wanted("1.37"))
    assert plan.nothing and plan.source == (1, 37, 2)


def test_a_stopped_upgrade_continues(keygen, now) -> None:  # type: ignore[no-untyped-def]
    """cp1 done, cp2 halfway (etcd new, the rest old, kubelet old): what is left, and only that."""
    old, new = running("1.36", keygen, now), running("1.37", keygen, now)
    cp2 = next(n for n in old if n.name == "cp2")
    half = NodeVersions("cp2", True, {**cp2.images, "etcd": wanted("1.37")["etcd"]}, (1, 36, 3))
    nodes = [new[0], half, *old[2:]]
    plan = plan_upgrade(NEW, nodes, wanted("1.37"))
    by = {h.name: h for h in plan.hosts}
    assert by["cp1"].nothing
    assert by["cp2"].components == ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    assert by["cp3"].components == COMPONENTS and by["w1"].kubelet_from == (1, 36, 3)
    assert plan.source == (1, 36, 3)


def test_refusals(keygen, now) -> None:  # type: ignore[no-untyped-def]
    old = running("1.36", keygen, now)
    with pytest.raises(VersionSkewError, match="newer than v1.36.3; kubeboot does not downgrade"):
        plan_upgrade(OLD, running("1.37", keygen, now), wanted("1.36"))
    with pytest.raises(VersionSkewError, match="2 minor versions newer; kubeadm upgrades one minor version at a time"):
        plan_upgrade(NEW, running("1.35", keygen, now), wanted("1.37"))
    mixed = [running("1.35", keygen, now)[0], *old[1:]]
    with pytest.raises(VersionSkewError, match="more than one version before"):
        plan_upgrade(NEW, mixed, wanted("1.37"))
    newer_kubelet = [*old[:-1], NodeVersions("w1", False, {}, (1, 38, 0))]
    with pytest.raises(VersionSkewError, match="w1: kubelet v1.38.0 is newer than v1.37.2"):
        plan_upgrade(NEW, newer_kubelet, wanted("1.37"))
    ancient = [*old[:-1], NodeVersions("w1", False, {}, (1, 33, 0))]
    with pytest.raises(VersionSkewError, match="more than 3 minor versions older"):
        plan_upgrade(NEW, ancient, wanted("1.37"))
    not_running = [NodeVersions("cp1", True, {c: None for c in COMPONENTS}, (1, 36, 3)), *old[1:]]
    with pytest.raises(VersionSkewError, match="cp1: no kube-apiserver manifest"):
        plan_upgrade(NEW, not_running, wanted("1.37"))


def test_up_refuses_another_version_than_the_control_planes_run(keygen, now) -> None:  # type: ignore[no-untyped-def]
    assert version_mismatch(OLD, running("1.36", keygen, now)) is None
    assert version_mismatch(NEW, running("1.36", keygen, now)) == (
        "cp1 runs v1.36.3, cp2 runs v1.36.3, cp3 runs v1.36.3", (1, 36, 3))
    fresh = [NodeVersions("cp1", True, {c: None for c in COMPONENTS}, None)]
    assert version_mismatch(NEW, fresh) is None  # nothing runs yet: a new cluster


def test_the_version_override_is_validated_like_the_inventory_field() -> None:
    import yaml

    text = yaml.safe_dump(BASE)
    assert load_inventory_text(text, version="1.36.3").version == resolve_version("1.36.3")
    with pytest.raises(ConfigError, match="supported minors"):
        load_inventory_text(text, version="1.99")
