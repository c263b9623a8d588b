"""Pure core: which host gets which file, with which mode and content — and nothing it should not have."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from kubeboot.config.load import parse_inventory
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.tokens import generate_token
from kubeboot.render.cluster import render_cluster
from tests.unit.test_config_validation import BASE


def _render(doc, keygen, now):  # type: ignore[no-untyped-def]
    cfg = parse_inventory(doc)
    pki, _ = plan_pki(cfg, {}, now, keygen)
    return cfg, render_cluster(cfg, pki, generate_token(now))


def _by_path(arts):  # type: ignore[no-untyped-def]
    return {a.path: a for a in arts}


def test_file_sets_per_role(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _, hosts = _render(copy.deepcopy(BASE), keygen, now)
    assert [a.path for a in hosts["lb1"]] == ["/etc/nginx/nginx.conf"]
    cp1, cp2, w1 = _by_path(hosts["cp1"]), _by_path(hosts["cp2"]), _by_path(hosts["w1"])
    assert "/etc/kubernetes/super-admin.conf" in cp1 and "/etc/kubernetes/super-admin.conf" not in cp2
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert cp2[f"/etc/kubernetes/manifests/{name}.yaml"].mode == 0o600
    assert set(w1) == {
        "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/bootstrap-kubelet.conf", "/var/lib/kubelet/config.yaml",
        "/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/instance-config.yaml", "/etc/crictl.yaml",
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "/etc/containerd/config.toml",
        "/etc/sysctl.d/99-kubernetes.conf", "/etc/modules-load.d/kubernetes.conf"}


def test_no_private_key_outside_control_planes_and_secrets_are_0600(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _, hosts = _render(copy.deepcopy(BASE), keygen, now)
    for host, arts in hosts.items():
        for a in arts:
            has_key = b"PRIVATE KEY" in a.content or b"client-key-data" in a.content
            if host not in ("cp1", "cp2", "cp3"):
                assert not has_key, f"{host}:{a.path} carries a private key"
            if has_key or a.path.endswith(".key") or a.path.endswith(".conf") and "/etc/kubernetes/" in a.path:
                assert a.mode == 0o600 and (a.secret or a.path.endswith("sa.pub")), a.path


def test_kubeconfig_servers(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _, hosts = _render(copy.deepcopy(BASE), keygen, now)

    def server(host: str, file: str) -> str:
        doc = yaml.safe_load(_by_path(hosts[host])[f"/etc/kubernetes/{file}"].content)
        return str(doc["clusters"][0]["cluster"]["server"])

    assert server("cp1", "admin.conf") == "https://lb.example.test:6443"
    assert server("cp2", "controller-manager.conf") == "https://10.0.0.12:6443"
    assert server("cp1", "kubelet.conf") == "https://10.0.0.11:6443"  # kubeadm init: the local API server
    assert server("cp3", "kubelet.conf") == "https://10.0.0.13:6443"  # joined node: ControlPlaneKubeletLocalMode
    assert server("w1", "bootstrap-kubelet.conf") == "https://lb.example.test:6443"
    boot = yaml.safe_load(_by_path(hosts["w1"])["/etc/kubernetes/bootstrap-kubelet.conf"].content)
    assert boot["users"][0]["name"] == "tls-bootstrap-token-user"
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", boot["users"][0]["user"]["token"])
    assert boot["current-context"] == "tls-bootstrap-token-user@kubernetes"


def test_etcd_members_join_in_inventory_order(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _, hosts = _render(copy.deepcopy(BASE), keygen, now)

    def flags(host: str) -> dict[str, str]:
        pod = yaml.safe_load(_by_path(hosts[host])["/etc/kubernetes/manifests/etcd.yaml"].content)
        cmd = pod["spec"]["containers"][0]["command"]
        names = [c[2:].split("=", 1)[0] for c in cmd[1:]]
        assert cmd[0] == "etcd" and names == sorted(names)  # kubeadm sorts flags by name
        return dict(c[2:].split("=", 1) for c in cmd[1:])

    assert flags("cp1")["initial-cluster"] == "cp1=https://10.0.0.11:2380"
    assert "initial-cluster-state" not in flags("cp1")
    assert flags("cp3")["initial-cluster"] == ("cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,"
                                               "cp3=https://10.0.0.13:2380")
    assert flags("cp3")["initial-cluster-state"] == "existing"


def test_version_specific_output(keygen, now) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(BASE)
    doc["spec"]["kubernetesVersion"] = "1.35"
    _, old = _render(doc, keygen, now)
    _, new = _render(copy.deepcopy(BASE), keygen, now)
    kcm_old = _by_path(old["cp1"])["/etc/kubernetes/manifests/kube-controller-manager.yaml"].content
    kcm_new = _by_path(new["cp1"])["/etc/kubernetes/manifests/kube-controller-manager.yaml"].content
    assert b"flexvolume-dir" in kcm_old and b"flexvolume-dir" not in kcm_new
    assert b"registry.k8s.io/kube-controller-manager:v1.35.4" in kcm_old
    etcd_new = _by_path(new["cp1"])["/etc/kubernetes/manifests/etcd.yaml"].content
    assert b"registry.k8s.io/etcd:3.7.0-0" in etcd_new
    assert b'sandbox_image = "registry.k8s.io/pause:3.10.2"' in _by_path(new["w1"])["/etc/containerd/config.toml"].content


def test_node_local_mode_puts_a_loopback_proxy_on_workers_only(keygen, now) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(BASE)
    doc["spec"]["loadBalancer"]["mode"] = "node-local"
    doc["spec"]["controlPlaneEndpoint"] = "localhost:6443"
    doc["spec"]["hosts"][0] = {"name": "w0", "address": "10.0.0.10", "roles": ["worker"]}
    _, hosts = _render(doc, keygen, now)
    conf = _by_path(hosts["w0"])["/etc/nginx/nginx.conf"].content.decode()
    assert "listen 127.0.0.1:6443;" in conf and "server 10.0.0.13:6443" in conf
    assert "/etc/nginx/nginx.conf" not in _by_path(hosts["cp1"])


def test_pure_core_never_imports_the_shell() -> None:
    """STYLE: config/, pki/, render/, plan/ never import fabric, click, transport or output."""
    root = Path(__file__).resolve().parents[2] / "kubeboot"
    forbidden = re.compile(r"^\s*(from|import)\s+(fabric|click|invoke|paramiko|kubeboot\.transport|kubeboot\.output"
                           r"|kubeboot\.cli|kubeboot\.state|kubeboot\.offline)\b", re.M)
    offenders = [str(p.relative_to(root)) for layer in ("config", "pki", "render", "plan")
                 for p in (root / layer).rglob("*.py") if forbidden.search(p.read_text())]
    assert offenders == []


def test_first_control_plane_kubelet_conf_follows_kubelet_finalize(keygen, now) -> None:  # type: ignore[no-untyped-def]
    """kubeadm init embeds the node's client certificate; kubelet-finalize then points kubelet.conf at the kubelet's
    rotated certificate, in client-go's key order (clientcmd.WriteToFile)."""
    from kubeboot.render.cluster import KUBELET_CLIENT_PEM, RenderHints, render_host

    cfg = parse_inventory(copy.deepcopy(BASE))
    pki, _ = plan_pki(cfg, {}, now, keygen)
    token = generate_token(now)
    embedded = _by_path(render_host(cfg, pki, token, cfg.host("cp1")))["/etc/kubernetes/kubelet.conf"].content
    assert b"client-certificate-data" in embedded
    arts = render_host(cfg, pki, token, cfg.host("cp1"), RenderHints(kubelet_client_rotated=True))
    rotated = _by_path(arts)["/etc/kubernetes/kubelet.conf"]
    assert rotated.mode == 0o600
    doc = yaml.safe_load(rotated.content)
    assert doc["users"] == [{"name": "system:node:cp1", "user": {"client-certificate": KUBELET_CLIENT_PEM,
                                                                  "client-key": KUBELET_CLIENT_PEM}}]
    assert doc["clusters"] == yaml.safe_load(embedded)["clusters"] and b"PRIVATE KEY" not in rotated.content
    assert rotated.content.endswith(b"    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n")
