"""Pure core: per-node files — kubelet configuration and flags, the systemd drop-in, containerd, kernel settings.

kubelet defaults follow kubeadm componentconfigs/kubelet.go (Default); the flags file follows
phases/kubelet/flags.go; instance-config.yaml follows phases/kubelet/config.go (NodeLocalCRISocket).
"""

from __future__ import annotations

from typing import Any


from kubeboot.config.components import deep_merge
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.plan.artifact import Artifact
from kubeboot.render.addons import go_yaml
from kubeboot.render.images import pause_image
from kubeboot.render.templates import render_template

KUBELET_DIR = "/var/lib/kubelet"
KUBELET_BINARY = "/usr/bin/kubelet"
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
KUBELET_RESOLV_CONF = "/etc/resolv.conf"  # the kubelet's own default


# What kubeadm writes for the KubeletConfiguration fields left unset: it marshals the typed v1beta1 struct, and
# encoding/json's omitempty never omits a struct (metav1.Duration, LoggingConfiguration, ...), so these appear with
# zero values in config.yaml and in the kubelet-config ConfigMap (seen from the real kubeadm 1.37.2 init and join).
# The kubelet defaults a zero value as if unset, so they change nothing but bytes: the bytes a kubeadm node has.
KUBEADM_ZERO_FIELDS: dict[str, Any] = {
    "authentication": {"webhook": {"cacheTTL": "0s"}},
    "authorization": {"webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
    "cpuManagerReconcilePeriod": "0s",
    "crashLoopBackOff": {},
    "evictionPressureTransitionPeriod": "0s",
    "fileCheckFrequency": "0s",
    "httpCheckFrequency": "0s",
    "imageMaximumGCAge": "0s",
    "imageMinimumGCAge": "0s",
    "logging": {"flushFrequency": 0, "options": {"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}},
                "verbosity": 0},
    "memorySwap": {},
    "nodeStatusReportFrequency": "0s",
    "nodeStatusUpdateFrequency": "0s",
    "runtimeRequestTimeout": "0s",
    "shutdownGracePeriod": "0s",
    "shutdownGracePeriodCriticalPods": "0s",
    "streamingConnectionIdleTimeout": "0s",
    "syncFrequency": "0s",
    "volumeStatsAggPeriod": "0s",
}


def kubelet_config(cfg: ClusterConfig) -> dict[str, Any]:
    """The cluster-wide KubeletConfiguration (what kubeadm stores in the kubelet-config ConfigMap): kubeboot's
    defaults with spec.kubelet.config deep-merged over them (validated, so it never touches what kubeboot owns).
    cgroupDriver comes from spec.containerRuntime, the same value containerd's SystemdCgroup is rendered from."""
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": cfg.runtime.cgroup_driver,
        "clusterDNS": [str(cfg.dns_service_ip)],
        "clusterDomain": cfg.networking.dns_domain,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "rotateCertificates": True,
        "staticPodPath": "/etc/kubernetes/manifests",
    }
    doc = deep_merge(KUBEADM_ZERO_FIELDS, doc)
    return deep_merge(doc, cfg.kubelet_config) if cfg.kubelet_config else doc


def with_node_resolver(doc: dict[str, Any], systemd_resolved: bool) -> dict[str, Any]:
    """kubeadm's per-node mutation of the kubelet configuration (componentconfigs kubelet_unix.go,
    mutateResolverConfig), applied when config.yaml is written on a node, never to the kubelet-config ConfigMap:
    with systemd-resolved active and resolvConf unset, resolvConf is systemd-resolved's upstream list — the
    stub 127.0.0.53 in /etc/resolv.conf would make CoreDNS forward to itself and crash on a detected loop."""
    if systemd_resolved and "resolvConf" not in doc:
        return {**doc, "resolvConf": SYSTEMD_RESOLV_CONF}
    return doc


def effective_resolv_conf(cfg: ClusterConfig, systemd_resolved: bool) -> str:
    """The resolver file a node's kubelet gives pods with dnsPolicy Default (CoreDNS among them); "" = none."""
    value = with_node_resolver(kubelet_config(cfg), systemd_resolved).get("resolvConf", KUBELET_RESOLV_CONF)
    return str(value)


def kubelet_node_config(cfg: ClusterConfig, systemd_resolved: bool = False) -> dict[str, Any]:
    """config.yaml on a node: the cluster config with instance-config.yaml merged in, as kubeadm writes it."""
    doc = with_node_resolver(kubelet_config(cfg), systemd_resolved)
    if cfg.version.facts.node_local_cri_socket:
        doc["containerRuntimeEndpoint"] = cfg.runtime.cri_socket
    return doc


def kubeadm_flags_env(args: dict[str, str]) -> Artifact:
    """/var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS, `--name=value` sorted by name (kubeadm flags.go)."""
    line = " ".join(f"--{k}={args[k]}" for k in sorted(args))
    return Artifact(f"{KUBELET_DIR}/kubeadm-flags.env", f'KUBELET_KUBEADM_ARGS="{line}"\n'.encode(), 0o644)


def instance_config(cri_socket: str) -> Artifact:
    """/var/lib/kubelet/instance-config.yaml, verbatim as kubeadm's WriteInstanceConfigToDisk (Go %q quoting)."""
    return Artifact(f"{KUBELET_DIR}/instance-config.yaml", f'containerRuntimeEndpoint: "{cri_socket}"\n'.encode(),
                    0o644)


def kubelet_config_file(doc: dict[str, Any]) -> Artifact:
    """config.yaml as kubeadm writes it (its marshaller's key order and quoting)."""
    return Artifact(f"{KUBELET_DIR}/config.yaml", go_yaml(doc).encode(), 0o644)


def kubelet_dropin() -> Artifact:
    """The systemd drop-in that makes the packaged kubelet.service read kubeadm's files (what the kubeadm package
    ships; kubeboot nodes have no kubeadm package, so kubeboot writes it)."""
    return Artifact("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
                    render_template("10-kubeadm.conf.j2", kubelet_path=KUBELET_BINARY), 0o644)


def kubeadm_flags(cfg: ClusterConfig, host: Host) -> Artifact:
    """kubeboot always passes --node-ip (the inventory address) so that a node with several interfaces
    (Vagrant's shared NAT 10.0.2.15, cloud VMs) registers the address the cluster uses, and
    --hostname-override so the node name is the inventory name whatever the OS hostname is."""
    args = {"hostname-override": host.name, "node-ip": str(host.address)}
    if not cfg.version.facts.node_local_cri_socket:
        args["container-runtime-endpoint"] = cfg.runtime.cri_socket
    return kubeadm_flags_env(args)


# where the kubeadm package (deb and rpm) installs its kubelet drop-in
PACKAGE_DROPINS = ("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                   "/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")


def node_artifacts(cfg: ClusterConfig, host: Host, systemd_resolved: bool = False,
                   package_dropin: bool = False) -> list[Artifact]:
    """`systemd_resolved`: the systemd-resolved service is active on the host (kubeadm's resolvConf rule).
    `package_dropin`: the kubeadm package's drop-in starts this node's kubelet and kubeboot's is not there (a node
    set up with kubeadm): it is the same drop-in, so kubeboot adds no copy in /etc (and restarts nothing for it)."""
    facts = cfg.version.facts
    sandbox = pause_image(cfg)
    out = [
        kubelet_config_file(kubelet_node_config(cfg, systemd_resolved)),
        kubeadm_flags(cfg, host),
        *([] if package_dropin else [kubelet_dropin()]),
        Artifact("/etc/containerd/config.toml",
                 render_template("containerd-config.toml.j2", version=cfg.version.version, sandbox_image=sandbox,
                                 cgroup_driver=cfg.runtime.cgroup_driver,
                                 restrict_oom_score_adj=cfg.runtime.restrict_oom_score_adj), 0o644),
        Artifact("/etc/crictl.yaml", render_template("crictl.yaml.j2", cri_socket=cfg.runtime.cri_socket), 0o644),
        Artifact("/etc/sysctl.d/99-kubernetes.conf",
                 render_template("sysctl-kubernetes.conf.j2", ipv6=host.address.version == 6), 0o644),
        Artifact("/etc/modules-load.d/kubernetes.conf", render_template("modules-kubernetes.conf.j2"), 0o644),
    ]
    if facts.node_local_cri_socket:
        out.append(instance_config(cfg.runtime.cri_socket))
    return out
