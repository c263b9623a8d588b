"""Pure core: spec.kubelet.config, spec.containerRuntime (cgroup driver, restrictOOMScoreAdj) and the static-pod
extraArgs / extraVolumes — validation with exact paths and messages, and what they render to."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeboot.config.components import kubelet_fields
from kubeboot.config.load import parse_inventory
from kubeboot.config.model import ClusterConfig
from kubeboot.errors import ConfigError
from kubeboot.kube.objects import kubelet_config_map
from kubeboot.render.node import effective_resolv_conf, kubelet_config, node_artifacts
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


def test_systemd_resolved_points_config_yaml_at_its_upstream_list_never_the_configmap() -> None:
    """kubeadm's mutateResolverConfig: per node, when config.yaml is written; the user's value always wins."""
    cfg = parse_inventory(inventory())
    plain = yaml.safe_load(node_file(cfg, "w1", "/var/lib/kubelet/config.yaml"))
    arts = {a.path: a for a in node_artifacts(cfg, cfg.host("w1"), systemd_resolved=True)}
    resolved = yaml.safe_load(arts["/var/lib/kubelet/config.yaml"].content)
    assert "resolvConf" not in plain and resolved.pop("resolvConf") == "/run/systemd/resolve/resolv.conf"
    assert resolved == plain
    assert "resolvConf" not in yaml.safe_load(kubelet_config_map(kubelet_config(cfg))["data"]["kubelet"])
    own = parse_inventory(inventory(kubelet={"config": {"resolvConf": "/etc/upstream.conf"}}))
    arts = {a.path: a for a in node_artifacts(own, own.host("w1"), systemd_resolved=True)}
    assert yaml.safe_load(arts["/var/lib/kubelet/config.yaml"].content)["resolvConf"] == "/etc/upstream.conf"
    assert effective_resolv_conf(cfg, False) == "/etc/resolv.conf"
    assert effective_resolv_conf(cfg, True) == "/run/systemd/resolve/resolv.conf"
    assert effective_resolv_conf(own, True) == "/etc/upstream.conf"


def test_a_join_writes_the_same_config_yaml_as_up_with_systemd_resolved() -> None:
    """join builds config.yaml from the kubelet-config ConfigMap; with the same rule it matches up's file."""
    from kubeboot.join import JoinRequest, _kubelet_files

    cfg = parse_inventory(inventory())
    req = JoinRequest(endpoint="10.0.0.10:6443", token="abcdef.0123456789abcdef", pins=(), node_name="w1",
                      cri_socket=cfg.runtime.cri_socket)
    for resolved in (False, True):
        joined = {a.path: a for a in _kubelet_files(req, kubelet_config(cfg), resolved)}
        placed = {a.path: a for a in node_artifacts(cfg, cfg.host("w1"), systemd_resolved=resolved)}
        path = "/var/lib/kubelet/config.yaml"
        assert joined[path].content == placed[path].content, resolved

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


# --- extraArgs / extraVolumes ---------------------------------------------------------------------------------

from kubeboot.config.components import own_volumes  # noqa: E402
from kubeboot.config.load import single_control_plane  # noqa: E402
from kubeboot.kube.objects import cluster_configuration, components_from_cluster_configuration  # noqa: E402
from kubeboot.render import manifests  # noqa: E402

# The flag tables are generated from the reference binaries (tools/gen_component_tables.py flags).
needs_flags = pytest.mark.skipif(not Path(__file__).resolve().parents[2].joinpath(
    "kubeboot/config/data/flags-1.37.json").exists(), reason="kubeboot/config/data/flags-1.37.json not generated yet")
FLAG_CASES = {"unknown apiserver flag", "unknown flag with a suggestion", "unknown etcd flag, mapping form",
              "scheduler flag on the controller-manager", "boolean flag"}

EXTRAS = {
    "apiServer": {
        "extraArgs": [{"name": "audit-log-path", "value": "/var/log/kubernetes/audit.log"},
                      {"name": "enable-admission-plugins", "value": "NodeRestriction,PodNodeSelector"},
                      {"name": "audit-log-maxage", "value": 30},
                      {"name": "tls-cipher-suites", "value": "TLS_AES_128_GCM_SHA256"},
                      {"name": "tls-cipher-suites", "value": "TLS_AES_256_GCM_SHA384"}],
        "extraVolumes": [{"name": "audit-log", "hostPath": "/var/log/kubernetes", "mountPath": "/var/log/kubernetes",
                          "pathType": "DirectoryOrCreate"},
                         {"name": "audit-policy", "hostPath": "/etc/kubernetes/audit-policy.yaml",
                          "mountPath": "/etc/kubernetes/audit-policy.yaml", "readOnly": True}],
    },
    "controllerManager": {"extraArgs": {"terminated-pod-gc-threshold": 100, "profiling": False}},
    "scheduler": {"extraArgs": [{"name": "v", "value": "2"}],
                  "extraVolumes": [{"name": "sched-config", "hostPath": "/etc/kubernetes/sched",
                                    "mountPath": "/etc/kubernetes/sched", "readOnly": True,
                                    "pathType": "Directory"}]},
    "etcd": {"extraArgs": [{"name": "quota-backend-bytes", "value": "8589934592"},
                           {"name": "snapshot-count", "value": "5000"}]},
}


def _pods(cfg: ClusterConfig, host: str = "cp2") -> dict[str, dict[str, Any]]:
    h = cfg.host(host)
    return {"kube-apiserver": manifests.apiserver(cfg, h),
            "kube-controller-manager": manifests.controller_manager(cfg, h),
            "kube-scheduler": manifests.scheduler(cfg, h), "etcd": manifests.etcd(cfg, h)}


def test_extra_args_follow_kubeadm_arguments_to_command() -> None:
    """kubeboot's flags sorted, minus the overridden names, then the user's in their order (repeats kept)."""
    plain, extra = _pods(parse_inventory(inventory())), _pods(parse_inventory(inventory(**EXTRAS)))
    base = plain["kube-apiserver"]["spec"]["containers"][0]["command"]
    cmd = extra["kube-apiserver"]["spec"]["containers"][0]["command"]
    assert cmd == [c for c in base if not c.startswith("--enable-admission-plugins=")] + [
        "--audit-log-path=/var/log/kubernetes/audit.log", "--enable-admission-plugins=NodeRestriction,PodNodeSelector",
        "--audit-log-maxage=30", "--tls-cipher-suites=TLS_AES_128_GCM_SHA256",
        "--tls-cipher-suites=TLS_AES_256_GCM_SHA384"]
    kcm = extra["kube-controller-manager"]["spec"]["containers"][0]["command"]
    assert kcm[-2:] == ["--terminated-pod-gc-threshold=100", "--profiling=false"]  # mapping form, YAML scalars
    etcd_base = plain["etcd"]["spec"]["containers"][0]["command"]
    etcd_cmd = extra["etcd"]["spec"]["containers"][0]["command"]
    assert etcd_cmd == [c for c in etcd_base if not c.startswith("--snapshot-count=")] + [
        "--quota-backend-bytes=8589934592", "--snapshot-count=5000"]
    assert "--initial-cluster-state=existing" in etcd_cmd  # cp2 still joins as member 2


def test_authorization_config_replaces_the_authorization_mode_flag() -> None:
    cfg = parse_inventory(inventory(apiServer={"extraArgs": [
        {"name": "authorization-config", "value": "/etc/kubernetes/authz.yaml"}]}))
    cmd = _pods(cfg)["kube-apiserver"]["spec"]["containers"][0]["command"]
    assert not any(c.startswith("--authorization-mode") for c in cmd)
    assert cmd[-1] == "--authorization-config=/etc/kubernetes/authz.yaml"


def test_extra_volumes_are_sorted_in_with_kubeboots_and_mounted() -> None:
    pods = _pods(parse_inventory(inventory(**EXTRAS)))
    api = pods["kube-apiserver"]["spec"]
    assert [v["name"] for v in api["volumes"]] == [
        "audit-log", "audit-policy", "ca-certs", "etc-ca-certificates", "k8s-certs", "usr-local-share-ca-certificates",
        "usr-share-ca-certificates"]
    vols = {v["name"]: v for v in api["volumes"]}
    mounts = {m["name"]: m for m in api["containers"][0]["volumeMounts"]}
    assert vols["audit-log"] == {"hostPath": {"path": "/var/log/kubernetes", "type": "DirectoryOrCreate"},
                                 "name": "audit-log"}
    assert mounts["audit-log"] == {"mountPath": "/var/log/kubernetes", "name": "audit-log"}  # read-write: no key
    assert vols["audit-policy"]["hostPath"] == {"path": "/etc/kubernetes/audit-policy.yaml", "type": ""}
    assert mounts["audit-policy"] == {"mountPath": "/etc/kubernetes/audit-policy.yaml", "name": "audit-policy",
                                      "readOnly": True}
    # no pathType: kubeadm marshals the empty HostPathType as type: "" (sigs.k8s.io/yaml quoting)
    assert b'    name: audit-policy\n' in manifests.dump(pods["kube-apiserver"])
    assert b'      type: ""\n' in manifests.dump(pods["kube-apiserver"])
    sched = pods["kube-scheduler"]["spec"]
    assert [v["name"] for v in sched["volumes"]] == ["kubeconfig", "sched-config"]
    assert pods["kube-controller-manager"]["spec"]["volumes"] == _pods(parse_inventory(inventory()))[
        "kube-controller-manager"]["spec"]["volumes"]


def test_a_volume_named_like_a_ca_directory_replaces_it_as_kubeadm_does() -> None:
    doc = inventory(apiServer={"extraVolumes": [{"name": "ca-certs", "hostPath": "/etc/pki/tls/certs",
                                                 "mountPath": "/etc/ssl/certs", "readOnly": True,
                                                 "pathType": "DirectoryOrCreate"}]})
    assert warnings(doc) == ["spec.apiServer.extraVolumes[0].name: replaces kubeboot's volume 'ca-certs' "
                             "(/etc/ssl/certs), as kubeadm does"]
    api = _pods(parse_inventory(doc))["kube-apiserver"]["spec"]
    assert {v["name"]: v["hostPath"]["path"] for v in api["volumes"]}["ca-certs"] == "/etc/pki/tls/certs"
    assert [m["mountPath"] for m in api["containers"][0]["volumeMounts"]].count("/etc/ssl/certs") == 1


def test_own_volume_table_matches_the_rendered_pods() -> None:
    for minor in ("1.35", "1.37"):
        cfg = parse_inventory(inventory(kubernetesVersion=minor))
        for component, pod in _pods(cfg, "cp1").items():
            rendered = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
            table = own_volumes(component, cfg.version.facts.kcm_flexvolume_dir)
            assert {n: mp for n, (mp, _r) in table.items() if n in rendered} == rendered, component
            assert set(rendered) <= set(table)


def test_cluster_configuration_carries_the_extras_and_a_joining_node_gets_them_back() -> None:
    cfg = parse_inventory(inventory(**EXTRAS))
    cc = cluster_configuration(cfg)
    assert cc["apiServer"]["extraArgs"][2] == {"name": "audit-log-maxage", "value": "30"}
    assert cc["apiServer"]["extraVolumes"] == [
        {"hostPath": "/var/log/kubernetes", "mountPath": "/var/log/kubernetes", "name": "audit-log",
         "pathType": "DirectoryOrCreate"},
        {"hostPath": "/etc/kubernetes/audit-policy.yaml", "mountPath": "/etc/kubernetes/audit-policy.yaml",
         "name": "audit-policy", "readOnly": True}]
    assert cc["controllerManager"] == {"extraArgs": [{"name": "terminated-pod-gc-threshold", "value": "100"},
                                                     {"name": "profiling", "value": "false"}]}
    assert cc["etcd"] == {"local": {"dataDir": "/var/lib/etcd", "extraArgs": [
        {"name": "quota-backend-bytes", "value": "8589934592"}, {"name": "snapshot-count", "value": "5000"}]}}
    joined = single_control_plane(name="cp9", address="10.0.0.19", endpoint="lb.example.test:6443", version="1.37.2",
                                  networking={}, key_algorithm="RSA-2048", cert_sans=[],
                                  components=components_from_cluster_configuration(yaml.safe_load(yaml.safe_dump(cc))),
                                  source="kubeadm-config")
    assert joined.components == cfg.components
    plain = cluster_configuration(parse_inventory(inventory()))
    assert plain["apiServer"] == {} and plain["controllerManager"] == {} and plain["scheduler"] == {}
    assert plain["etcd"] == {"local": {"dataDir": "/var/lib/etcd"}}


A = "spec.apiServer.extraArgs"
V = "spec.apiServer.extraVolumes"
VOL = {"name": "x", "hostPath": "/srv/x", "mountPath": "/srv/x"}
EXTRA_CASES = [
    ("unknown apiserver flag", {"apiServer": {"extraArgs": [{"name": "foo-bar", "value": "1"}]}},
     f"{A}[0].name: kube-apiserver has no flag --foo-bar"),
    ("unknown flag with a suggestion", {"apiServer": {"extraArgs": [{"name": "audit-log-pth", "value": "/x"}]}},
     f"{A}[0].name: kube-apiserver has no flag --audit-log-pth (did you mean audit-log-path?)"),
    ("unknown etcd flag, mapping form", {"etcd": {"extraArgs": {"quota-backend": "1"}}},
     "spec.etcd.extraArgs.quota-backend: etcd has no flag --quota-backend (did you mean quota-backend-bytes?)"),
    ("scheduler flag on the controller-manager",
     {"controllerManager": {"extraArgs": {"percentage-of-nodes-to-score": "50"}}},
     "spec.controllerManager.extraArgs.percentage-of-nodes-to-score: kube-controller-manager has no flag "
     "--percentage-of-nodes-to-score"),
    ("leading dashes", {"apiServer": {"extraArgs": [{"name": "--v", "value": "2"}]}},
     f"{A}[0].name: write the flag name without leading dashes: 'v'"),
    ("missing name", {"apiServer": {"extraArgs": [{"value": "2"}]}}, f"{A}[0].name: required field is missing"),
    ("unknown arg key", {"apiServer": {"extraArgs": [{"name": "v", "value": "2", "mergeMethod": "append"}]}},
     f"{A}[0].mergeMethod: unknown field (allowed: name, value)"),
    ("value not a scalar", {"apiServer": {"extraArgs": [{"name": "v", "value": [2]}]}},
     f"{A}[0].value: must be a string, not a list"),
    ("extraArgs not a list", {"apiServer": {"extraArgs": "--v=2"}},
     f"{A}: must be a list of {{name, value}} or a mapping of flag names to values, not a string"),
    ("boolean flag", {"apiServer": {"extraArgs": [{"name": "profiling", "value": "no"}]}},
     f"{A}[0].value: --profiling is a boolean flag of kube-apiserver: use true or false, got 'no'"),
    ("per-node flag", {"apiServer": {"extraArgs": [{"name": "advertise-address", "value": "10.0.0.11"}]}},
     f"{A}[0].name: --advertise-address is set by kubeboot: set per node from spec.hosts[].address"),
    ("inventory-owned flag", {"controllerManager": {"extraArgs": {"cluster-cidr": "10.1.0.0/16"}}},
     "spec.controllerManager.extraArgs.cluster-cidr: --cluster-cidr is set by kubeboot: set "
     "spec.networking.podSubnet instead"),
    ("etcd member name", {"etcd": {"extraArgs": [{"name": "name", "value": "etcd0"}]}},
     "spec.etcd.extraArgs[0].name: --name is set by kubeboot: set per member from spec.hosts[].address and the "
     "control-plane order"),
    ("etcd has no extraVolumes", {"etcd": {"extraVolumes": [VOL]}},
     "spec.etcd.extraVolumes: unknown field (allowed: extraArgs)"),
    ("volume: missing fields", {"apiServer": {"extraVolumes": [{"name": "x"}]}},
     f"{V}[0].hostPath: required field is missing", f"{V}[0].mountPath: required field is missing"),
    ("volume: relative path", {"apiServer": {"extraVolumes": [{**VOL, "hostPath": "srv/x"}]}},
     f"{V}[0].hostPath: must be an absolute path, got 'srv/x'"),
    ("volume: dot-dot", {"apiServer": {"extraVolumes": [{**VOL, "mountPath": "/srv/../etc"}]}},
     f"{V}[0].mountPath: must not contain '..', got '/srv/../etc'"),
    ("volume: bad pathType", {"apiServer": {"extraVolumes": [{**VOL, "pathType": "Dir"}]}},
     f"{V}[0].pathType: must be one of DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, "
     f"BlockDevice (or empty), got 'Dir'"),
    ("volume: readOnly", {"apiServer": {"extraVolumes": [{**VOL, "readOnly": "yes"}]}},
     f"{V}[0].readOnly: must be true or false, not a string"),
    ("volume: bad name", {"apiServer": {"extraVolumes": [{**VOL, "name": "Audit_Log"}]}},
     f"{V}[0].name: must be a lower-case DNS-1123 label (a-z, 0-9, '-'), got 'Audit_Log'"),
    ("volume: unknown key", {"apiServer": {"extraVolumes": [{**VOL, "hostpath": "/x"}]}},
     f"{V}[0].hostpath: unknown field (allowed: name, hostPath, mountPath, readOnly, pathType) "
     f"(did you mean hostPath?)"),
    ("volume: duplicate name", {"apiServer": {"extraVolumes": [VOL, {**VOL, "mountPath": "/srv/y"}]}},
     f"{V}[1].name: duplicate volume name 'x' (also {V}[0])"),
    ("volume: duplicate mountPath", {"apiServer": {"extraVolumes": [VOL, {**VOL, "name": "y"}]}},
     f"{V}[1].mountPath: /srv/x is mounted twice (also {V}[0])"),
    ("volume: mountPath clash", {"apiServer": {"extraVolumes": [{**VOL, "mountPath": "/etc/kubernetes/pki"}]}},
     f"{V}[0].mountPath: /etc/kubernetes/pki is already mounted by kubeboot's volume 'k8s-certs'"),
    ("volume: own name", {"scheduler": {"extraVolumes": [{**VOL, "name": "kubeconfig"}]}},
     "spec.scheduler.extraVolumes[0].name: 'kubeconfig' is kubeboot's own volume (/etc/kubernetes/scheduler.conf); "
     "choose another name"),
]


@pytest.mark.parametrize("spec,expected", [pytest.param(c[1], list(c[2:]), id=str(c[0]),
                                                          marks=[needs_flags] if c[0] in FLAG_CASES else [])
                                             for c in EXTRA_CASES])
def test_bad_extra_args_and_volumes(spec: dict[str, Any], expected: list[str]) -> None:
    assert problems(inventory(**spec)) == expected


def test_overriding_a_kubeboot_managed_flag_warns() -> None:
    assert warnings(inventory(etcd={"extraArgs": {"data-dir": "/data/etcd"}})) == [
        "spec.etcd.extraArgs.data-dir: replaces kubeboot's --data-dir (kubeboot mounts /var/lib/etcd); make sure the "
        "new value still works on every control plane"]


@needs_flags
def test_older_minors_check_flag_names_against_the_newest_table_as_warnings() -> None:
    doc = inventory(kubernetesVersion="1.35", apiServer={"extraArgs": {"foo-bar": "1"}})
    assert warnings(doc) == ["spec.apiServer.extraArgs.foo-bar: kube-apiserver v1.37 has no flag --foo-bar "
                             "(kubeboot has no flag table for v1.35, so this is not checked)"]
    cmd = _pods(parse_inventory(doc))["kube-apiserver"]["spec"]["containers"][0]["command"]
    assert cmd[-1] == "--foo-bar=1"


def test_probes_follow_bind_address_and_listen_metrics_urls_as_in_kubeadm() -> None:
    cfg = parse_inventory(inventory(controllerManager={"extraArgs": {"bind-address": "0.0.0.0"}},
                                    scheduler={"extraArgs": {"bind-address": "10.0.0.12"}},
                                    etcd={"extraArgs": {"listen-metrics-urls": "https://127.0.0.1:2382,http://[::1]:9"}}))
    pods = _pods(cfg)
    kcm = pods["kube-controller-manager"]["spec"]["containers"][0]
    assert kcm["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probe-port", "scheme": "HTTPS"}
    sched = pods["kube-scheduler"]["spec"]["containers"][0]
    assert sched["readinessProbe"]["httpGet"]["host"] == "10.0.0.12"
    etcd = pods["etcd"]["spec"]["containers"][0]
    assert etcd["startupProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": "probe-port",
                                               "scheme": "HTTPS"}
    assert etcd["ports"] == [{"containerPort": 2382, "name": "probe-port", "protocol": "TCP"}]


@needs_flags
def test_every_flag_kubeboot_renders_is_in_the_flag_table() -> None:
    """The generated tables agree with the manifests: kubeboot's own flags are all known to the 1.37 binaries."""
    from kubeboot.config.components import flag_table

    _minor, tables = flag_table("1.37")
    cfg = parse_inventory(inventory(networking={"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                                                "nodeCIDRMaskSize": 25}))
    for component, pod in _pods(cfg).items():
        names = {c[2:].split("=", 1)[0] for c in pod["spec"]["containers"][0]["command"][1:]}
        assert names - set(tables[component]) == set(), component
