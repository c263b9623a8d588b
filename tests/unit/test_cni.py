"""The CNI plugin's objects and images (kubeboot/render/cni.py) and the user's own manifests."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
from typing import Any

import pytest

from kubeboot.config.load import parse_inventory
from kubeboot.config.model import ClusterConfig, CniPlugin
from kubeboot.render import cni
from kubeboot.render.images import kubeadm_images, node_images, required_images
from tests.unit.test_phases import DOC

FLANNEL_IMAGES = ["ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3", "ghcr.io/flannel-io/flannel:v0.28.10"]


def _cfg(**spec: Any) -> ClusterConfig:
    doc = copy.deepcopy(DOC)
    doc["spec"].update(spec)
    return parse_inventory(doc)


def _with_pod_subnet(cfg: ClusterConfig, subnet: str) -> ClusterConfig:
    # The inventory validator wants hosts of the networks' family; the renderer only reads the subnet.
    return dataclasses.replace(cfg, networking=dataclasses.replace(cfg.networking,
                                                                  pod_subnet=ipaddress.ip_network(subnet)))


def _net_conf(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return dict(json.loads(cm["data"]["net-conf.json"]))


def test_flannel_is_the_default_and_is_upstreams_manifest() -> None:
    cfg = _cfg()
    assert cfg.cni.plugin is CniPlugin.FLANNEL
    objs = cni.cni_objects(cfg)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "kube-flannel"), ("ClusterRole", "flannel"), ("ClusterRoleBinding", "flannel"),
        ("ServiceAccount", "flannel"), ("ConfigMap", "kube-flannel-cfg"), ("DaemonSet", "kube-flannel-ds")]
    # the default pod subnet is flannel's own: nothing but the JSON formatting differs from upstream
    assert _net_conf(objs) == {"Network": "10.244.0.0/16", "EnableNFTables": False, "Backend": {"Type": "vxlan"}}
    upstream = cni.shipped_manifest(cni.FLANNEL_MANIFEST)
    assert objs == cni.flannel_objects(upstream, ipaddress.ip_network("10.244.0.0/16"))
    ds = objs[-1]["spec"]["template"]["spec"]
    assert [c["command"] for c in ds["initContainers"]] == [["cp"], ["/opt/bin/install-conf"]]
    assert cni.cni_images(cfg) == FLANNEL_IMAGES


def test_flannel_follows_a_custom_pod_subnet() -> None:
    cfg = _cfg(networking={"podSubnet": "172.30.0.0/16", "serviceSubnet": "10.96.0.0/12"})
    net = _net_conf(cni.cni_objects(cfg))
    assert net["Network"] == "172.30.0.0/16" and net["Backend"] == {"Type": "vxlan"}
    # the CNI config itself is unchanged (delegates to bridge with host-local on the node's podCIDR)
    (cm,) = [o for o in cni.cni_objects(cfg) if o["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["cni-conf.json"])["plugins"][0]["type"] == "flannel"


def test_flannel_ipv6_pod_subnet() -> None:
    cfg = _with_pod_subnet(_cfg(), "fd00:10:244::/56")
    net = _net_conf(cni.cni_objects(cfg))
    assert net == {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56",
                   "EnableNFTables": False, "Backend": {"Type": "vxlan"}}


def test_shipped_manifest_is_a_fresh_copy_each_time() -> None:
    a = cni.shipped_manifest(cni.FLANNEL_MANIFEST)
    a[4]["data"]["net-conf.json"] = "changed"
    assert cni.shipped_manifest(cni.FLANNEL_MANIFEST)[4]["data"]["net-conf.json"] != "changed"


CALICO_LIKE = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      initContainers:
      - {name: install-cni, image: "quay.io/calico/cni:v3.0.0", command: [/opt/cni/bin/install]}
      containers:
      - name: calico-node
        image: quay.io/calico/node:v3.0.0
        env:
        - {name: CALICO_IPV4POOL_IPIP, value: Always}
        # - name: CALICO_IPV4POOL_CIDR
        #   value: "192.168.0.0/16"
        - {name: FELIX_IPV6SUPPORT, value: "false"}
"""


def _calico_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    spec = cni.pod_spec(objects[0])
    assert spec is not None
    return {e["name"]: e["value"] for e in spec["containers"][0]["env"]}


def test_calico_pool_follows_the_pod_subnet() -> None:
    """The substitution on a calico.yaml-shaped DaemonSet (upstream leaves CALICO_IPV4POOL_CIDR commented out)."""
    objs = cni.calico_objects(cni.load_user_manifests([("calico.yaml", CALICO_LIKE)]),
                              ipaddress.ip_network("10.244.0.0/16"))
    assert _calico_env(objs) == {"CALICO_IPV4POOL_IPIP": "Always", "FELIX_IPV6SUPPORT": "false",
                                 "CALICO_IPV4POOL_CIDR": "10.244.0.0/16"}
    assert cni.objects_images(objs) == ["quay.io/calico/cni:v3.0.0", "quay.io/calico/node:v3.0.0"]
    v6 = cni.calico_objects(cni.load_user_manifests([("calico.yaml", CALICO_LIKE)]),
                            ipaddress.ip_network("fd00:10:244::/56"))
    env = _calico_env(v6)
    assert env["CALICO_IPV6POOL_CIDR"] == "fd00:10:244::/56" and env["FELIX_IPV6SUPPORT"] == "true"
    assert env["IP6"] == "autodetect" and env["IP"] == "none" and "CALICO_IPV4POOL_CIDR" not in env


def test_calico_uses_the_shipped_manifest_or_says_it_is_missing() -> None:
    cfg = _cfg(cni={"plugin": "calico"})
    try:
        objs = cni.cni_objects(cfg)
    except cni.ManifestNotShipped as e:
        assert "kubeboot/data/cni/calico.yaml" in e.message and "spec.cni.plugin: none" in str(e.hint)
        return
    assert _calico_env([o for o in objs if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "calico-node"]
                       )["CALICO_IPV4POOL_CIDR"] == str(cfg.networking.pod_subnet)


def test_none_has_no_objects_and_no_images() -> None:
    cfg = _cfg(cni={"plugin": "none"})
    assert cni.cni_objects(cfg) == [] and cni.cni_images(cfg) == []
    assert required_images(cfg) == kubeadm_images(cfg)
    assert node_images(cfg, control_plane=False) == ["registry.k8s.io/kube-proxy:v1.37.2",
                                                     "registry.k8s.io/coredns/coredns:v1.14.6",
                                                     "registry.k8s.io/pause:3.10.2"]


def test_required_and_node_images_include_the_cni_images() -> None:
    cfg = _cfg()
    assert required_images(cfg) == kubeadm_images(cfg) + FLANNEL_IMAGES
    assert node_images(cfg, control_plane=False) == ["registry.k8s.io/kube-proxy:v1.37.2",
                                                     "registry.k8s.io/coredns/coredns:v1.14.6",
                                                     "registry.k8s.io/pause:3.10.2", *FLANNEL_IMAGES]
    cp = node_images(cfg, control_plane=True)
    assert cp[:3] == kubeadm_images(cfg)[:3] and cp[-3:] == [*FLANNEL_IMAGES, "registry.k8s.io/etcd:3.7.0-0"]
    # spec.imageRepository replaces registry.k8s.io for kubeadm's images only
    mirror = _cfg(imageRepository="mirror.local:5000/k8s")
    assert required_images(mirror)[-2:] == FLANNEL_IMAGES
    assert node_images(mirror, control_plane=True)[-1] == "mirror.local:5000/k8s/etcd:3.7.0-0"


# ------------------------------------------------------------------------------------------ user manifests

MULTI = """\
# a comment-only part before the first document
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: apps}, data: {k: v}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: apps}}
---
apiVersion: v1
kind: ConfigMapList
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: apps}}
"""


def test_user_manifests_multi_doc_empty_docs_and_lists() -> None:
    objs = cni.load_user_manifests([("net/a.yaml", MULTI),
                                    ("net/b.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"),
                                    ("net/empty.yaml", "")])
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "apps"), ("ConfigMap", "a"), ("ConfigMap", "b"), ("ConfigMap", "c"), ("Secret", "s")]
    assert objs[1]["data"] == {"k": "v"}
    assert cni.load_user_manifests([]) == []


@pytest.mark.parametrize(("text", "message"), [
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: ConfigMap\nmetadata: {name: x}\n",
     "net/bad.yaml: document 1: not a Kubernetes object (no apiVersion)"),
    ("---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
     "net/bad.yaml: document 1: not a Kubernetes object (no metadata.name)"),  # the leading --- opens document 0
    ("- just\n- a list\n", "net/bad.yaml: document 0: not a Kubernetes object (a YAML list, not a mapping)"),
    ("hello\n", "net/bad.yaml: document 0: not a Kubernetes object (a YAML str, not a mapping)"),
    ("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {kind: Pod}\n",
     "net/bad.yaml: document 0, items[1]: not a Kubernetes object (no apiVersion, metadata.name)"),
    ("apiVersion: v1\nkind: List\nitems: {}\n", "net/bad.yaml: document 0: List has no items list"),
    ("a: [\n", "net/bad.yaml: not valid YAML"),
])
def test_user_manifest_errors_name_the_file_and_document(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        cni.load_user_manifests([("net/ok.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"),
                                 ("net/bad.yaml", text)])
    assert str(exc.value).startswith(message), str(exc.value)
