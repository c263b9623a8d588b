"""kubeboot's addon objects (render/addons.py) against the real kubeadm v1.37.2: object for object, in order.

`kubeadm init --dry-run` prints every object it would send to the API server ("[dryrun] Would perform action
CREATE ... Attached object:" followed by the object as YAML). Skipping every phase that talks to the API server
except `addon` leaves exactly the CoreDNS and kube-proxy objects. The certs, kubeconfig and manifest phases still
run, but in dry-run mode they write only into KUBEADM_INIT_DRYRUN_DIR, which is the test's tmp directory.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeboot.config.load import parse_inventory
from kubeboot.config.model import ClusterConfig
from kubeboot.render.addons import coredns_objects, go_yaml, kube_proxy_configuration, kube_proxy_objects
from tests.reference.binaries import require_bin
from tests.unit.test_config_validation import BASE

pytestmark = pytest.mark.reference

SKIP_PHASES = "preflight,upload-config,upload-certs,mark-control-plane,bootstrap-token,kubelet-finalize," \
              "show-join-command"

# The lab's override: conntrack sysctls cannot be written from an unprivileged network namespace.
LAB_PROXY = {"conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}}
# More of the type's corners: durations kubeadm re-prints in Go's form, pointers, lists, maps, logging.
RICH_PROXY = {"mode": "nftables", "nodePortAddresses": ["primary"], "featureGates": {"NFTablesProxyMode": True},
              "iptables": {"syncPeriod": "1h", "minSyncPeriod": "1500ms", "masqueradeBit": 14},
              "conntrack": {"maxPerCore": 0, "min": 131072, "tcpEstablishedTimeout": "24h0m0s",
                            "tcpCloseWaitTimeout": "90s", "udpTimeout": "250us"},
              "logging": {"verbosity": 4, "flushFrequency": "5s"}, "metricsBindAddress": "0.0.0.0:10249",
              "oomScoreAdj": -999, "detectLocalMode": "NodeCIDR", "windowsRunAsService": False,
              "hostnameOverride": "true"}


def _inventory(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(copy.deepcopy(spec))
    return doc


IPV6_HOSTS = [{"name": "cp1", "address": "fd00:10::11", "roles": ["control-plane"]},
              {"name": "w1", "address": "fd00:10::21", "roles": ["worker"]}]

CASES = {
    "defaults": _inventory(),
    "custom-networking": _inventory(
        networking={"podSubnet": "172.16.0.0/14", "serviceSubnet": "10.112.0.0/16", "dnsDomain": "corp.internal"},
        imageRepository="registry.example.test:5000/k8s", controlPlaneEndpoint="10.0.0.10:8443"),
    "ipv6": _inventory(
        networking={"podSubnet": "fd00:244::/56", "serviceSubnet": "fd00:96::/112", "dnsDomain": "cluster.local"},
        controlPlaneEndpoint="[fd00:10::11]:6443", loadBalancer={"mode": "none"}, hosts=IPV6_HOSTS),
    "lab-override": _inventory(kubeProxy={"config": LAB_PROXY}),
    "rich-override": _inventory(kubeProxy={"config": RICH_PROXY}),
}


def _kubeadm_config(cfg: ClusterConfig, user_proxy: dict[str, Any] | None) -> str:
    cp = cfg.first_control_plane
    docs: list[dict[str, Any]] = [
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "localAPIEndpoint": {"advertiseAddress": str(cp.address), "bindPort": 6443},
         "nodeRegistration": {"name": cp.name}},
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
         "kubernetesVersion": cfg.version.tag, "imageRepository": cfg.image_repository,
         "controlPlaneEndpoint": cfg.control_plane_endpoint.hostport(),
         "networking": {"podSubnet": str(cfg.networking.pod_subnet),
                        "serviceSubnet": str(cfg.networking.service_subnet),
                        "dnsDomain": cfg.networking.dns_domain}},
    ]
    if user_proxy:  # spec.kubeProxy.config is what a KubeProxyConfiguration document gives kubeadm
        docs.append({"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                     **user_proxy})
    return yaml.safe_dump_all(docs, sort_keys=False)


def _created_objects(stdout: str) -> list[dict[str, Any]]:
    """The objects of kubeadm's "[dryrun] Would perform action CREATE" lines, in order. Each object's YAML runs
    up to the next line that starts with "[" (no top-level YAML line of these objects does)."""
    out: list[dict[str, Any]] = []
    lines = stdout.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("[dryrun] Would perform action CREATE"):
            assert lines[i + 1] == "[dryrun] Attached object:", lines[i + 1]
            i += 2
            start = i
            while i < len(lines) and not lines[i].startswith("["):
                i += 1
            obj = yaml.safe_load("\n".join(lines[start:i]))
            # The Go types serialise an empty `status` (Deployment {}, Service {loadBalancer: {}}, DaemonSet with
            # zero counters); the API server owns status and ignores it on create, so kubeboot sends none.
            obj.pop("status", None)
            out.append(obj)
        else:
            i += 1
    return out


def _run_kubeadm(cfg: ClusterConfig, user_proxy: dict[str, Any] | None, tmp: Path) -> list[dict[str, Any]]:
    kubeadm = require_bin("kubeadm")
    config = tmp / "kubeadm.yaml"
    config.write_text(_kubeadm_config(cfg, user_proxy))
    dry = tmp / "dryrun"
    dry.mkdir()
    # kubeadm appends the *_proxy variables of its own environment to kube-proxy's container env; kubeboot
    # does not (its environment is not the nodes'), so kubeadm runs without them here.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["KUBEADM_INIT_DRYRUN_DIR"] = str(dry)
    res = subprocess.run([str(kubeadm), "init", "--dry-run", "--config", str(config), f"--skip-phases={SKIP_PHASES}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "[addons] Applied essential addon: kube-proxy" in res.stdout, res.stdout[-2000:]
    return _created_objects(res.stdout)


@pytest.mark.parametrize("case", list(CASES))
def test_addon_objects_are_kubeadms(case: str, tmp_path: Path) -> None:
    raw = CASES[case]
    cfg = parse_inventory(raw)
    theirs = _run_kubeadm(cfg, raw["spec"].get("kubeProxy", {}).get("config"), tmp_path)
    ours = coredns_objects(cfg) + kube_proxy_objects(cfg, cfg.control_plane_endpoint.url())
    assert [(o["kind"], o["metadata"]["name"]) for o in ours] == \
        [(o["kind"], o["metadata"]["name"]) for o in theirs]
    for mine, real in zip(ours, theirs):
        assert mine == real, f"{real['kind']} {real['metadata']['name']}"
    # config.conf byte for byte (the hash annotation, when kubeadm signs the ConfigMap, covers it too)
    assert ours[6]["data"]["config.conf"] == theirs[6]["data"]["config.conf"]
    assert ours[6]["data"]["config.conf"] == go_yaml(kube_proxy_configuration(cfg)).rstrip("\n")
