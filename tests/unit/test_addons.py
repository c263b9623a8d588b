"""Pure core: the CoreDNS and kube-proxy addon objects (render/addons.py) and spec.kubeProxy.config validation.
The objects as a whole are compared with the real kubeadm in tests/integration/test_addons_kubeadm.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubeboot.config.load import parse_inventory
from kubeboot.render.addons import (
    HASH_ANNOTATION,
    coredns_objects,
    go_duration,
    go_yaml,
    kube_proxy_configuration,
    kube_proxy_objects,
)
from tests.unit.test_components import inventory, problems

SERVER = "https://lb.example.test:6443"


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind]
    return obj


def test_coredns_order_names_and_dns_ip() -> None:
    cfg = parse_inventory(inventory(networking={"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.112.0.0/16",
                                                "dnsDomain": "corp.internal"}))
    objs = coredns_objects(cfg)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ConfigMap", "coredns"), ("ClusterRole", "system:coredns"), ("ClusterRoleBinding", "system:coredns"),
        ("ServiceAccount", "coredns"), ("Deployment", "coredns"), ("Service", "kube-dns")]
    assert by_kind(objs, "Service")["spec"]["clusterIP"] == "10.112.0.10"  # the 10th address, as kubeadm GetDNSIP
    corefile = by_kind(objs, "ConfigMap")["data"]["Corefile"]
    assert "kubernetes corp.internal in-addr.arpa ip6.arpa {" in corefile
    assert "disable success corp.internal\n" in corefile and "disable denial corp.internal\n" in corefile


def test_images_follow_the_repository() -> None:
    cfg = parse_inventory(inventory())
    dep = by_kind(coredns_objects(cfg), "Deployment")
    ds = by_kind(kube_proxy_objects(cfg, SERVER), "DaemonSet")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/coredns/coredns:v1.14.6"
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/kube-proxy:v1.37.2"
    mirror = parse_inventory(inventory(imageRepository="mirror.test/k8s"))
    dep = by_kind(coredns_objects(mirror), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "mirror.test/k8s/coredns:v1.14.6"


def test_labels_selectors_and_scheduling() -> None:
    cfg = parse_inventory(inventory())
    dep = by_kind(coredns_objects(cfg), "Deployment")
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"] == \
        {"k8s-app": "kube-dns"}
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["priorityClassName"] == "system-cluster-critical"
    assert {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane"} in pod["tolerations"]
    objs = kube_proxy_objects(cfg, SERVER)
    ds = by_kind(objs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"] == {"k8s-app": "kube-proxy"}
    assert spec["priorityClassName"] == "system-node-critical" and spec["hostNetwork"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["containers"][0]["command"] == ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                                "--hostname-override=$(NODE_NAME)"]
    assert by_kind(objs, "ConfigMap")["metadata"]["labels"] == {"app": "kube-proxy"}
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ConfigMap", "kube-proxy"), ("DaemonSet", "kube-proxy"), ("ServiceAccount", "kube-proxy"),
        ("ClusterRoleBinding", "kubeadm:node-proxier"), ("Role", "kube-proxy"), ("RoleBinding", "kube-proxy")]


def test_kube_proxy_kubeconfig_server_and_config() -> None:
    cfg = parse_inventory(inventory())
    cm = by_kind(kube_proxy_objects(cfg, "https://[fd00::1]:6443"), "ConfigMap")
    kubeconfig = yaml.safe_load(cm["data"]["kubeconfig.conf"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:6443"
    conf = yaml.safe_load(cm["data"]["config.conf"])
    assert conf == json.loads(json.dumps(kube_proxy_configuration(cfg)))
    assert conf["clusterCIDR"] == "10.244.0.0/16" and conf["bindAddress"] == "0.0.0.0" and conf["mode"] == "iptables"
    assert conf["clientConnection"]["kubeconfig"] == "/var/lib/kube-proxy/kubeconfig.conf"
    assert not cm["data"]["config.conf"].endswith("\n")  # kubeadm's `|-` block
    assert HASH_ANNOTATION in cm["metadata"]["annotations"]


def test_ipv6_init_node_binds_kube_proxy_to_the_v6_wildcard() -> None:
    cfg = parse_inventory(inventory(
        networking={"podSubnet": "fd00:244::/56", "serviceSubnet": "fd00:96::/112", "dnsDomain": "cluster.local"},
        controlPlaneEndpoint="[fd00:10::11]:6443", loadBalancer={"mode": "none"},
        hosts=[{"name": "cp1", "address": "fd00:10::11", "roles": ["control-plane"]}]))
    assert kube_proxy_configuration(cfg)["bindAddress"] == "::"
    assert by_kind(coredns_objects(cfg), "Service")["spec"]["clusterIP"] == "fd00:96::a"


LAB = {"conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}}


def test_user_override_is_deep_merged_and_unsigned() -> None:
    cfg = parse_inventory(inventory(kubeProxy={"config": {**LAB, "mode": "nftables",
                                                          "iptables": {"syncPeriod": "1h"}}}))
    conf = kube_proxy_configuration(cfg)
    assert conf["conntrack"] == {"maxPerCore": 0, "min": None, "tcpBeLiberal": False, "tcpCloseWaitTimeout": "0s",
                                 "tcpEstablishedTimeout": "0s", "udpStreamTimeout": "0s", "udpTimeout": "0s"}
    assert conf["mode"] == "nftables"
    assert conf["iptables"]["syncPeriod"] == "1h0m0s" and conf["iptables"]["minSyncPeriod"] == "0s"
    assert conf["clusterCIDR"] == "10.244.0.0/16"  # kubeadm's own values stay next to the user's
    text = by_kind(kube_proxy_objects(cfg, SERVER), "ConfigMap")
    assert "maxPerCore: 0\n" in text["data"]["config.conf"]
    assert "annotations" not in text["metadata"]  # kubeadm signs only the config it generated itself


def test_kubeadm_defaults_apply_where_the_user_left_a_field_empty() -> None:
    cfg = parse_inventory(inventory(kubeProxy={"config": {"mode": "", "bindAddress": "",
                                                          "windowsRunAsService": False, "featureGates": {}}}))
    conf = kube_proxy_configuration(cfg)
    assert conf["mode"] == "iptables" and conf["bindAddress"] == "0.0.0.0"
    assert "windowsRunAsService" not in conf and "featureGates" not in conf  # json omitempty


@pytest.mark.parametrize("text,expected", [
    ("0", "0s"), ("0s", "0s"), ("1h", "1h0m0s"), ("90s", "1m30s"), ("1500ms", "1.5s"), ("250us", "250µs"),
    ("1.5h", "1h30m0s"), ("100ns", "100ns"), ("-2m", "-2m0s"), ("24h0m0s", "24h0m0s"), ("1h1s", "1h0m1s")])
def test_go_duration(text: str, expected: str) -> None:
    assert go_duration(text) == expected


@pytest.mark.parametrize("value,expected", [
    ("", '""'), ("0", '"0"'), ("true", '"true"'), ("y", '"y"'), ("null", '"null"'), ("1.5", '"1.5"'),
    ("0s", "0s"), ("0.0.0.0", "0.0.0.0"), ("10.244.0.0/16", "10.244.0.0/16"), (None, "null"), (False, "false"),
    (3.0, "3"), (1, "1")])
def test_go_yaml_scalars(value: object, expected: str) -> None:
    assert go_yaml({"k": value}) == f"k: {expected}\n"


def test_go_yaml_key_order_puts_non_letters_first_and_numbers_numerically() -> None:
    assert [line.split(":")[0] for line in go_yaml({"b": 1, "a10": 1, "a9": 1, "A": 1, "_x": 1}).splitlines()] == \
        ["_x", "A", "a9", "a10", "b"]
    assert go_yaml({"b": 1, "a10": 1, "a9": 1, "a_": 1}).splitlines() == ["a_: 1", "a9: 1", "a10: 1", "b: 1"]


# --- spec.kubeProxy.config validation ------------------------------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    ({"conntrack": {"maxPercore": 0}}, "spec.kubeProxy.config.conntrack.maxPercore: unknown field "
                                       "(did you mean maxPerCore?)"),
    ({"modes": "ipvs"}, "spec.kubeProxy.config.modes: unknown field (did you mean mode?)"),
    ({"conntrack": {"maxPerCore": "lots"}}, "spec.kubeProxy.config.conntrack.maxPerCore: must be an integer"),
    ({"iptables": {"syncPeriod": "soon"}}, "spec.kubeProxy.config.iptables.syncPeriod: must be a duration"),
    ({"nodePortAddresses": "primary"}, "spec.kubeProxy.config.nodePortAddresses: must be a list"),
    ({"featureGates": {"X": "yes please"}}, "spec.kubeProxy.config.featureGates.X: must be true or false"),
    ({"logging": {"verbosity": -1}}, "spec.kubeProxy.config.logging.verbosity: -1 does not fit"),
    ({"clusterCIDR": "10.0.0.0/8"}, "spec.kubeProxy.config.clusterCIDR: owned by kubeboot"),
    ({"clientConnection": {"qps": 5}}, "spec.kubeProxy.config.clientConnection: owned by kubeboot"),
    ({"kind": "KubeProxyConfiguration"}, "spec.kubeProxy.config.kind: give the fields only"),
    ([1], "spec.kubeProxy.config: must be a mapping of KubeProxyConfiguration fields"),
])
def test_bad_kube_proxy_override(override: Any, expected: str) -> None:
    found = problems(inventory(kubeProxy={"config": override}))
    assert any(p.startswith(expected) for p in found), found


def test_every_kube_proxy_field_kubeadm_marshals_is_accepted() -> None:
    cfg = parse_inventory(inventory())
    default = kube_proxy_configuration(cfg)
    fields = {k: v for k, v in default.items()
              if k not in ("apiVersion", "kind", "clusterCIDR", "clientConnection")}
    # null pointers are "leave it out" in an override; every other value kubeadm writes reads back as valid
    fields = json.loads(json.dumps(fields), object_hook=lambda d: {k: v for k, v in d.items() if v is not None})
    assert kube_proxy_configuration(parse_inventory(inventory(kubeProxy={"config": fields}))) == default
