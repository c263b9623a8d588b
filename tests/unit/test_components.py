"""Pure core: spec.kubelet.config, spec.containerRuntime (cgroup driver, restrictOOMScoreAdj) and the static-pod
extraArgs / extraVolumes — validation with exact paths and messages, and what they render to."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from kubeboot.config.components import kubelet_fields
from kubeboot.config.load import parse_inventory
from kubeboot.config.model import ClusterConfig
from kubeboot.errors import ConfigError
from kubeboot.kube.objects import kubelet_config_map
from kubeboot.render.node import kubelet_config, node_artifacts
from tests.unit.test_config_validation import BASE


def inventory(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_inventory(doc)
    assert info.value.exit_code == 3
    return [str(p) for p in info.value.problems if p.severity == "error"]


def warnings(doc: dict[str, Any]) -> list[str]:
    return list(parse_inventory(doc).warnings)


def node_file(cfg: ClusterConfig, host: str, path: str) -> str:
    arts = {a.path: a for a in node_artifacts(cfg, cfg.host(host))}
    return arts[path].content.decode()


# --- spec.kubelet.config ----------------------------------------------------------------------------------

LAB_KUBELET = {"failCgroupV1": False, "maxPods": 200, "evictionHard": {"memory.available": "200Mi"},
               "systemReserved": {"cpu": "500m", "memory": 1073741824}, "featureGates": {"NodeSwap": True},
               "registerWithTaints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}],
               "authentication": {"webhook": {"cacheTTL": "30s"}}, "logging": {"flushFrequency": 0}}


def test_kubelet_override_is_deep_merged_into_config_yaml_and_the_configmap() -> None:
    cfg = parse_inventory(inventory(kubelet={"config": LAB_KUBELET}))
    on_disk = yaml.safe_load(node_file(cfg, "w1", "/var/lib/kubelet/config.yaml"))
    assert on_disk["failCgroupV1"] is False and on_disk["maxPods"] == 200
    assert on_disk["evictionHard"] == {"memory.available": "200Mi"}
    assert on_disk["systemReserved"] == {"cpu": "500m", "memory": "1073741824"}  # numbers become strings
    # nested structs merge field by field: kubeboot's webhook.enabled and x509 stay next to the user's cacheTTL
    assert on_disk["authentication"] == {"anonymous": {"enabled": False},
                                         "webhook": {"cacheTTL": "30s", "enabled": True},
                                         "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}}
    assert on_disk["containerRuntimeEndpoint"] == "unix:///var/run/containerd/containerd.sock"
    assert on_disk["staticPodPath"] == "/etc/kubernetes/manifests" and on_disk["rotateCertificates"] is True
    cm = kubelet_config_map(kubelet_config(cfg))
    shared = yaml.safe_load(cm["data"]["kubelet"])
    assert shared == {**on_disk, "containerRuntimeEndpoint": ""}  # what `kubeadm join` / `kubeboot join` download


def test_no_kubelet_override_renders_kubeboots_defaults_only() -> None:
    plain = kubelet_config(parse_inventory(inventory()))
    assert plain == kubelet_config(parse_inventory(inventory(kubelet={"config": {}})))
    assert "failCgroupV1" not in plain


def test_restating_kubeboot_owned_values_is_accepted() -> None:
    cfg = parse_inventory(inventory(kubelet={"config": {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "staticPodPath": "/etc/kubernetes/manifests", "rotateCertificates": True, "cgroupDriver": "systemd"}}))
    assert kubelet_config(cfg) == kubelet_config(parse_inventory(inventory()))


P = "spec.kubelet.config"
KUBELET_CASES = [
    ("unknown field with a suggestion", {"maxPodz": 10}, f"{P}.maxPodz: unknown field (did you mean maxPods?)"),
    ("unknown field, case only", {"MaxPods": 10}, f"{P}.MaxPods: unknown field (did you mean maxPods?)"),
    ("unknown nested field", {"authentication": {"x509": {"clientCaFile": "/x"}}},
     f"{P}.authentication.x509.clientCaFile: unknown field (did you mean clientCAFile?)"),
    ("unknown field in a list item", {"registerWithTaints": [{"key": "a", "effect": "NoSchedule", "efect": 1}]},
     f"{P}.registerWithTaints[0].efect: unknown field (did you mean effect?)"),
    ("int as string", {"maxPods": "200"}, f"{P}.maxPods: must be an integer, not a string"),
    ("int32 overflow", {"maxPods": 2**31}, f"{P}.maxPods: 2147483648 does not fit a int32 (-2147483648..2147483647)"),
    ("bool as string", {"failCgroupV1": "false"}, f"{P}.failCgroupV1: must be true or false, not a string"),
    ("string as bool", {"resolvConf": True}, f"{P}.resolvConf: must be a string, not a boolean"),
    ("duration", {"syncFrequency": "1 minute"},
     f"{P}.syncFrequency: must be a duration like 10s, 5m or 1h30m, got '1 minute'"),
    ("duration as int", {"evictionPressureTransitionPeriod": 30},
     f"{P}.evictionPressureTransitionPeriod: must be a duration like 10s, 5m or 1h30m, got 30"),
    ("map as list", {"evictionHard": ["memory.available<200Mi"]}, f"{P}.evictionHard: must be a mapping, not a list"),
    ("map value type", {"featureGates": {"NodeSwap": "yes"}},
     f"{P}.featureGates.NodeSwap: must be true or false, not a string"),
    ("list as string", {"clusterDNS": "10.96.0.10"}, f"{P}.clusterDNS: must be a list, not a string"),
    ("quantity", {"reservedMemory": [{"numaNode": 0, "limits": {"memory": "1 GB"}}]},
     f"{P}.reservedMemory[0].limits.memory: must be a quantity like 500m, 1 or 200Mi, got '1 GB'"),
    ("null", {"maxPods": None}, f"{P}.maxPods: must not be null (leave the field out to keep kubeboot's value)"),
    ("cgroupDriver value", {"cgroupDriver": "cgroupv2"},
     f"{P}.cgroupDriver: must be one of 'systemd', 'cgroupfs', got 'cgroupv2'"),
    ("cgroupDriver disagrees", {"cgroupDriver": "cgroupfs"},
     f"{P}.cgroupDriver: 'cgroupfs' disagrees with spec.containerRuntime.cgroupDriver 'systemd': the kubelet and "
     f"containerd must use the same driver; set it once, in spec.containerRuntime.cgroupDriver"),
    ("enum in a list item", {"registerWithTaints": [{"key": "a", "effect": "NoSchedul"}]},
     f"{P}.registerWithTaints[0].effect: must be one of 'NoSchedule', 'PreferNoSchedule', 'NoExecute', "
     f"got 'NoSchedul'"),
    ("range", {"imageGCHighThresholdPercent": 101}, f"{P}.imageGCHighThresholdPercent: must be between 0 and 100, "
                                                    f"got 101"),
    ("negative", {"maxPods": -1}, f"{P}.maxPods: must be at least 0, got -1"),
    ("staticPodPath", {"staticPodPath": "/etc/k8s/pods"},
     f"{P}.staticPodPath: owned by kubeboot (/etc/kubernetes/manifests): kubeboot writes the control-plane static "
     f"pods to /etc/kubernetes/manifests; another path leaves them unstarted"),
    ("containerRuntimeEndpoint", {"containerRuntimeEndpoint": "unix:///run/crio/crio.sock"},
     f"{P}.containerRuntimeEndpoint: owned by kubeboot (unix:///var/run/containerd/containerd.sock): set "
     f"spec.containerRuntime.criSocket instead (kubeboot writes it to instance-config.yaml on every node, as kubeadm)"),
    ("rotateCertificates", {"rotateCertificates": False},
     f"{P}.rotateCertificates: owned by kubeboot: kubeadm and kubeboot always set true: the kubelet's client "
     f"certificate from TLS bootstrap would otherwise expire unrenewed"),
    ("apiVersion", {"apiVersion": "kubelet.config.k8s.io/v1"},
     f"{P}.apiVersion: owned by kubeboot (kubelet.config.k8s.io/v1beta1): set by kubeboot"),
    ("not a mapping", ["failCgroupV1: false"],
     f"{P}: must be a mapping of KubeletConfiguration fields, not a list"),
]


@pytest.mark.parametrize("override,expected", [c[1:] for c in KUBELET_CASES], ids=[c[0] for c in KUBELET_CASES])
def test_bad_kubelet_override(override: Any, expected: str) -> None:
    assert problems(inventory(kubelet={"config": override})) == [expected]


def test_unknown_key_under_spec_kubelet() -> None:
    assert problems(inventory(kubelet={"configs": {}})) == ["spec.kubelet.configs: unknown field (allowed: config)"]


def test_kubelet_overrides_of_kubeadm_defaults_warn() -> None:
    warned = warnings(inventory(kubelet={"config": {
        "authorization": {"mode": "AlwaysAllow"}, "clusterDNS": ["169.254.20.10"], "readOnlyPort": 10255,
        "authentication": {"x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}}}}))
    assert warned == [
        "spec.kubelet.config.authorization.mode: replaces kubeboot's value: AlwaysAllow lets every authenticated "
        "client use the kubelet API (kubeboot's value: Webhook)",
        "spec.kubelet.config.readOnlyPort: replaces kubeboot's value: the read-only port serves pod and node data "
        "without authentication",
        "spec.kubelet.config.clusterDNS: replaces kubeboot's [10.96.0.10] (the DNS service IP from "
        "spec.networking.serviceSubnet); fine for a node-local DNS cache",
    ]


def test_kubelet_table_is_the_generated_v1beta1_type() -> None:
    fields = kubelet_fields()
    assert fields["failCgroupV1"] == {"go": "bool", "kind": "bool"}
    assert fields["evictionHard"]["kind"] == "map" and fields["evictionHard"]["values"]["kind"] == "string"
    assert fields["authentication"]["fields"]["x509"]["fields"]["clientCAFile"]["kind"] == "string"
    assert "apiVersion" not in fields and "kind" not in fields


# --- spec.containerRuntime ------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_kubelet_and_containerd_always_use_the_same_cgroup_driver(driver: str) -> None:
    cfg = parse_inventory(inventory(containerRuntime={"cgroupDriver": driver}))
    assert yaml.safe_load(node_file(cfg, "cp1", "/var/lib/kubelet/config.yaml"))["cgroupDriver"] == driver
    toml = node_file(cfg, "cp1", "/etc/containerd/config.toml")
    assert f"SystemdCgroup = {'true' if driver == 'systemd' else 'false'}" in toml
    assert yaml.safe_load(kubelet_config_map(kubelet_config(cfg))["data"]["kubelet"])["cgroupDriver"] == driver


def test_cgroupfs_kubelet_override_agrees_with_the_runtime() -> None:
    cfg = parse_inventory(inventory(containerRuntime={"cgroupDriver": "cgroupfs"},
                                    kubelet={"config": {"cgroupDriver": "cgroupfs"}}))
    assert kubelet_config(cfg)["cgroupDriver"] == "cgroupfs"


def test_restrict_oom_score_adj_and_the_sandbox_image() -> None:
    plain = node_file(parse_inventory(inventory()), "w1", "/etc/containerd/config.toml")
    assert "restrict_oom_score_adj" not in plain
    assert 'sandbox_image = "registry.k8s.io/pause:3.10.2"' in plain
    cfg = parse_inventory(inventory(containerRuntime={"restrictOOMScoreAdj": True}))
    toml = node_file(cfg, "w1", "/etc/containerd/config.toml")
    cri = toml.split('[plugins."io.containerd.grpc.v1.cri"]', 1)[1].split("[plugins.", 1)[0]
    assert "restrict_oom_score_adj = true" in cri  # in the CRI plugin section itself, not a sub-table


def test_restrict_oom_score_adj_must_be_a_boolean() -> None:
    assert problems(inventory(containerRuntime={"restrictOOMScoreAdj": "yes"})) == [
        "spec.containerRuntime.restrictOOMScoreAdj: must be true or false, not a string"]


def test_kubelet_config_stays_json_serialisable() -> None:
    cfg = parse_inventory(inventory(kubelet={"config": LAB_KUBELET}))
    json.dumps(kubelet_config(cfg))
