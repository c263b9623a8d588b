"""Pure core: inventory validation. Every bad inventory names the exact field path and message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kubeboot.config.load import load_inventory_text, parse_inventory
from kubeboot.config.model import KeyAlgorithm, LoadBalancerMode, Role
from kubeboot.errors import ConfigError

BASE: dict[str, Any] = {
    "apiVersion": "kubeboot.io/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "demo"},
    "spec": {
        "kubernetesVersion": "1.37",
        "controlPlaneEndpoint": "lb.example.test:6443",
        "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12", "dnsDomain": "cluster.local"},
        "loadBalancer": {"mode": "external-nginx"},
        "certificates": {"keyAlgorithm": "RSA-2048"},
        "ssh": {"user": "root", "port": 22, "keyPath": "~/.ssh/id_ed25519"},
        "hosts": [
            {"name": "lb1", "address": "10.0.0.10", "roles": ["load-balancer"]},
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "cp2", "address": "10.0.0.12", "roles": ["control-plane"]},
            {"name": "cp3", "address": "10.0.0.13", "roles": ["control-plane"]},
            {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
        ],
    },
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    """Set (or with value=DELETE remove) a dotted path such as spec.hosts.1.address in a copy of BASE."""
    doc = copy.deepcopy(BASE)
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


DELETE = object()


def problems(doc: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_inventory(doc)
    assert info.value.exit_code == 3
    return [str(p) for p in info.value.problems if p.severity == "error"]


def test_base_inventory_is_valid() -> None:
    cfg = parse_inventory(copy.deepcopy(BASE))
    assert [h.name for h in cfg.control_planes] == ["cp1", "cp2", "cp3"]
    assert cfg.version.version == "1.37.2"
    assert cfg.load_balancer_mode is LoadBalancerMode.EXTERNAL_NGINX
    assert cfg.certificates.key_algorithm is KeyAlgorithm.RSA_2048
    assert cfg.host("w1").roles == frozenset({Role.WORKER})
    assert str(cfg.apiserver_service_ip) == "10.96.0.1" and str(cfg.dns_service_ip) == "10.96.0.10"
    assert cfg.warnings == ()


def _node_local_remote_endpoint() -> dict[str, Any]:
    doc = mutate("spec.loadBalancer.mode", "node-local")
    doc["spec"]["hosts"][0] = {"name": "w0", "address": "10.0.0.10", "roles": ["worker"]}
    return doc



BAD: list[tuple[str, dict[str, Any] | Any, str]] = [
    ("unknown top-level key", {**BASE, "specs": {}}, "specs: unknown field (allowed: apiVersion, kind, metadata, spec)"),
    ("wrong apiVersion", {**BASE, "apiVersion": "v1"}, "apiVersion: must be 'kubeboot.io/v1alpha1', got 'v1'"),
    ("wrong kind", {**BASE, "kind": "Pod"}, "kind: must be 'Cluster', got 'Pod'"),
    ("missing metadata.name", mutate("metadata.name", DELETE), "metadata.name: required field is missing"),
    ("bad metadata.name", mutate("metadata.name", "Demo_1"),
     "metadata.name: must be a lower-case DNS-1123 label (a-z, 0-9, '-'), got 'Demo_1'"),
    ("unknown spec key", mutate("spec.podCIDR", "10.0.0.0/8"),
     "spec.podCIDR: unknown field (allowed: apiServer, certificates, clusterName, cni, containerRuntime, "
     "controlPlaneEndpoint, controllerManager, etcd, hosts, imageRepository, images, kubeProxy, kubectl, kubelet, "
     "kubernetesVersion, loadBalancer, networking, packages, scheduler, ssh)"),
    ("unknown host key", mutate("spec.hosts.1.role", "x"),
     "spec.hosts[1].role: unknown field (allowed: address, labels, name, roles, ssh)"),
    ("missing endpoint", mutate("spec.controlPlaneEndpoint", DELETE), "spec.controlPlaneEndpoint: required field is missing"),
    ("endpoint with scheme", mutate("spec.controlPlaneEndpoint", "https://lb.example.test:6443"),
     "spec.controlPlaneEndpoint: expected HOST:PORT without a scheme or path, got 'https://lb.example.test:6443'"),
    ("endpoint bad port", mutate("spec.controlPlaneEndpoint", "lb.example.test:99999"),
     "spec.controlPlaneEndpoint: port must be a number from 1 to 65535, got '99999'"),
    ("host address not an IP", mutate("spec.hosts.3.address", "10.0.0.300"),
     "spec.hosts[3].address: not an IP address: '10.0.0.300'"),
    ("missing host address", mutate("spec.hosts.2.address", DELETE), "spec.hosts[2].address: required field is missing"),
    ("bad pod CIDR", mutate("spec.networking.podSubnet", "10.244.0.0/33"),
     "spec.networking.podSubnet: not a CIDR: '10.244.0.0/33'"),
    ("CIDR with host bits", mutate("spec.networking.serviceSubnet", "10.96.0.1/12"),
     "spec.networking.serviceSubnet: '10.96.0.1/12' has host bits set (did you mean 10.96.0.0/12?)"),
    ("overlapping subnets", mutate("spec.networking.serviceSubnet", "10.244.128.0/20"),
     "spec.networking.serviceSubnet: 10.244.128.0/20 overlaps podSubnet 10.244.0.0/16"),
    ("service subnet too large", mutate("spec.networking.serviceSubnet", "10.64.0.0/10"),
     "spec.networking.serviceSubnet: 10.64.0.0/10 is too large: the prefix must be /12 or longer"),
    ("duplicate host name", mutate("spec.hosts.4.name", "cp2"),
     "spec.hosts[4].name: duplicate host name 'cp2' (also spec.hosts[2])"),
    ("duplicate address", mutate("spec.hosts.4.address", "10.0.0.11"),
     "spec.hosts[4].address: duplicate address 10.0.0.11 (also spec.hosts[1])"),
    ("unknown role", mutate("spec.hosts.4.roles", ["worker", "etcd"]),
     "spec.hosts[4].roles[1]: unknown role 'etcd' (known: control-plane, worker, load-balancer)"),
    ("no roles", mutate("spec.hosts.4.roles", []),
     "spec.hosts[4].roles: must be a non-empty list of control-plane, worker, load-balancer"),
    ("bad key algorithm", mutate("spec.certificates.keyAlgorithm", "DSA-1024"),
     "spec.certificates.keyAlgorithm: must be one of RSA-2048, RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384, "
     "got 'DSA-1024'"),
    ("unsupported version", mutate("spec.kubernetesVersion", "1.29"),
     "spec.kubernetesVersion: unsupported Kubernetes version '1.29': supported minors are 1.35, 1.36, 1.37"),
    ("malformed version", mutate("spec.kubernetesVersion", "latest"),
     "spec.kubernetesVersion: not a Kubernetes version (want 1.MINOR or 1.MINOR.PATCH): 'latest'"),
    ("no control plane", mutate("spec.hosts", [{"name": "lb1", "address": "10.0.0.10", "roles": ["load-balancer"]},
                                               {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]}]),
     "spec.hosts: no host has the control-plane role (at least one is required)"),
    ("external-nginx without LB", mutate("spec.hosts.0", {"name": "w0", "address": "10.0.0.10", "roles": ["worker"]}),
     "spec.loadBalancer.mode: external-nginx needs at least one host with the load-balancer role"),
    ("LB on an API server host at :6443", mutate("spec.hosts.1.roles", ["control-plane", "load-balancer"]),
     "spec.hosts[1].roles: host 'cp1' runs kube-apiserver on :6443, so its load balancer cannot listen there too; "
     "use a dedicated load-balancer host or a different controlPlaneEndpoint port"),
    ("unknown LB mode", mutate("spec.loadBalancer.mode", "haproxy"),
     "spec.loadBalancer.mode: must be one of external-nginx, node-local, none, got 'haproxy'"),
    ("LB host with mode none", mutate("spec.loadBalancer.mode", "none"),
     "spec.hosts[0].roles: the load-balancer role needs spec.loadBalancer.mode external-nginx (mode is none)"),
    ("ssh port out of range", mutate("spec.ssh.port", 70000), "spec.ssh.port: must be between 1 and 65535, got 70000"),
    ("host ssh port not a number", mutate("spec.hosts.2.ssh", {"port": "22a"}),
     "spec.hosts[2].ssh.port: must be an integer, not a string"),
    ("address inside pod subnet", mutate("spec.hosts.4.address", "10.244.3.4"),
     "spec.hosts[4].address: 10.244.3.4 is inside podSubnet 10.244.0.0/16"),
    ("hosts not a list", mutate("spec.hosts", {"cp1": "10.0.0.11"}), "spec.hosts: must be a list, not a mapping"),
    ("bad cert SAN", mutate("spec.certificates.apiServerCertSANs", ["ok.example", "not a name"]),
     "spec.certificates.apiServerCertSANs[1]: not an IP address or DNS name: 'not a name'"),
    ("pod subnet too small for nodes", mutate("spec.networking.podSubnet", "10.244.0.0/23"),
     "spec.networking.podSubnet: 10.244.0.0/23 holds 2 node range(s) of /24, but 4 nodes are listed"),
    ("node-local with a remote endpoint", "node-local-remote",
     "spec.controlPlaneEndpoint: node-local mode needs localhost:6443 or 127.0.0.1:6443, got lb.example.test:6443"),
]



@pytest.mark.parametrize("doc,expected", [(d, e) for _n, d, e in BAD], ids=[n for n, _d, _e in BAD])
def test_bad_inventory_reports_exact_path_and_message(doc: Any, expected: str) -> None:
    if doc == "node-local-remote":
        doc = _node_local_remote_endpoint()
    assert expected in problems(doc)


def test_all_problems_are_reported_at_once() -> None:
    doc = mutate("spec.hosts.3.address", "nope")
    doc["spec"]["networking"]["podSubnet"] = "bad"
    doc["spec"]["certificates"]["keyAlgorithm"] = "RSA-1024"
    doc["spec"]["bogus"] = 1
    found = problems(doc)
    assert "spec.hosts[3].address: not an IP address: 'nope'" in found
    assert "spec.networking.podSubnet: not a CIDR: 'bad'" in found
    assert any(p.startswith("spec.certificates.keyAlgorithm:") for p in found)
    assert any(p.startswith("spec.bogus: unknown field") for p in found)
    assert len(found) == 4


def test_even_control_plane_count_is_a_warning_not_an_error() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["hosts"].append({"name": "cp4", "address": "10.0.0.14", "roles": ["control-plane"]})
    cfg = parse_inventory(doc)
    assert cfg.warnings == ("spec.hosts: 4 control planes: an even etcd member count tolerates no more failures "
                            "than 3; use an odd number",)


def test_invalid_yaml_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory_text("spec:\n  hosts: [\n", source="inv.yaml")
    assert info.value.problems[0].path.startswith("line ")
    assert "not valid YAML" in info.value.problems[0].message


def test_pinned_patch_version_and_v_prefix() -> None:
    assert parse_inventory(mutate("spec.kubernetesVersion", "v1.36.1")).version.tag == "v1.36.1"
    assert parse_inventory(mutate("spec.kubernetesVersion", "1.35")).version.version == "1.35.4"


def test_defaults_fill_optional_sections() -> None:
    doc = copy.deepcopy(BASE)
    for key in ("networking", "loadBalancer", "certificates", "ssh"):
        del doc["spec"][key]
    del doc["spec"]["kubernetesVersion"]
    cfg = parse_inventory(doc)
    assert str(cfg.networking.service_subnet) == "10.96.0.0/12"
    assert str(cfg.networking.pod_subnet) == "10.244.0.0/16"
    assert cfg.version.minor == "1.37"
    assert cfg.hosts[1].ssh.user == "root" and cfg.hosts[1].ssh.port == 22


def test_host_ssh_overrides_cluster_defaults() -> None:
    doc = mutate("spec.hosts.2.ssh", {"user": "admin", "sudoPasswordEnv": "CP2_SUDO"})
    h = parse_inventory(doc).host("cp2")
    assert (h.ssh.user, h.ssh.port, h.ssh.sudo_password_env) == ("admin", 22, "CP2_SUDO")


def test_example_inventory_is_valid(example_text: str) -> None:
    cfg = load_inventory_text(example_text)
    assert len(cfg.control_planes) == 3 and len(cfg.load_balancers) == 1
    assert yaml.safe_load(example_text)["spec"]["kubernetesVersion"] == cfg.version.minor
