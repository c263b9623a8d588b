"""Pure core: the four static-pod manifests, field for field as kubeadm writes them.

Sources (kubeadm at the target tag): phases/controlplane/manifests.go (flags), phases/controlplane/volumes.go,
util/staticpod/utils.go (pod skeleton, probes), phases/etcd/local.go (etcd flags, volumes, probes).
kubeadm marshals a v1.Pod through sigs.k8s.io/yaml, which sorts keys; we dump with sorted keys too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from kubeboot.config import components
from kubeboot.config.model import APISERVER_BIND_PORT, Arg, ClusterConfig, ComponentExtras, Host, HostPathMount
from kubeboot.render.images import component_image, etcd_image

PKI = "/etc/kubernetes/pki"
MANIFESTS = "/etc/kubernetes/manifests"
# The control plane's static pods, in kubeadm's order on a node: etcd first (the API server talks to its local
# member), then the API server, then its clients.
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ETCD_DATA_DIR = "/var/lib/etcd"
PROBE_PORT = "probe-port"
# ControlPlaneComponentHealthCheck (4m) / startup period (10s), rounded up.
STARTUP_FAILURE_THRESHOLD = math.ceil(240 / 10)
# kubeadm's caCertsExtraVolumePaths are mounted only where they exist; without facts we assume a
# Debian/Ubuntu host, which has these three. Facts from the host replace this default.
DEFAULT_CA_DIRS: tuple[str, ...] = ("/etc/ca-certificates", "/usr/share/ca-certificates",
                                    "/usr/local/share/ca-certificates")
KNOWN_CA_DIRS = components.KNOWN_CA_DIRS


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _flags(binary: str, args: dict[str, str], extra: Sequence[Arg] = ()) -> list[str]:
    """kubeadm ArgumentsToCommand: kubeboot's `--name=value` sorted by name, minus every name the user overrides,
    then the user's extraArgs in their order (a name may repeat), after the binary name."""
    overridden = {a.name for a in extra}
    return ([binary] + [f"--{k}={args[k]}" for k in sorted(args) if k not in overridden]
            + [f"--{a.name}={a.value}" for a in extra])


def _probe(host: str, path: str, scheme: str, initial: int, failure: int, period: int) -> dict[str, Any]:
    get = {"host": host, "path": path, "port": PROBE_PORT, "scheme": scheme}
    if not host:
        del get["host"]  # omitempty: the kubelet probes the pod IP (= the node's, hostNetwork)
    probe: dict[str, Any] = {
        "failureThreshold": failure,
        "httpGet": get,
        "periodSeconds": period,
        "timeoutSeconds": 15,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def _probes(host: str, scheme: str, live: str, ready: str | None, startup: str) -> dict[str, Any]:
    out = {
        "livenessProbe": _probe(host, live, scheme, 10, 8, 10),
        "startupProbe": _probe(host, startup, scheme, 10, STARTUP_FAILURE_THRESHOLD, 10),
    }
    if ready is not None:
        out["readinessProbe"] = _probe(host, ready, scheme, 0, 3, 1)
    return out


def _volume(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"hostPath": {"path": path, "type": kind}, "name": name}


def _hostpath(name: str, path: str, kind: str, read_only: bool) -> HostPathMount:
    """One of kubeboot's own volumes: mounted at the same path inside the container."""
    return HostPathMount(name, path, path, read_only, kind)


def _with_extras(volumes: Sequence[HostPathMount], extras: ComponentExtras) -> list[HostPathMount]:
    """kubeadm AddExtraHostPathMounts: volumes are keyed by name, so a user volume named like one of kubeboot's
    replaces it (validation allows that only for the CA-certificate directories)."""
    by_name = {v.name: v for v in volumes}
    for v in extras.extra_volumes:
        by_name[v.name] = v
    return list(by_name.values())


def _mount(name: str, path: str, read_only: bool) -> dict[str, Any]:
    m: dict[str, Any] = {"mountPath": path, "name": name}
    if read_only:
        m["readOnly"] = True
    return m


def _pod(name: str, image: str, command: list[str], port: int, cpu: str, probes: dict[str, Any],
         volumes: Sequence[HostPathMount], annotations: dict[str, str] | None,
         memory: str | None = None, sort_mounts: bool = True) -> dict[str, Any]:
    """staticpod.ComponentPod: kube-system, component/tier labels, hostNetwork, system-node-critical.
    Volumes are sorted by name (VolumeMapToSlice); mounts too, except etcd's, which kubeadm lists as written."""
    requests: dict[str, str] = {"cpu": cpu}
    if memory:
        requests["memory"] = memory
    ordered = sorted(volumes, key=lambda v: v.name)
    mounts = ordered if sort_mounts else list(volumes)
    container: dict[str, Any] = {
        "command": command,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "name": name,
        "ports": [{"containerPort": port, "name": PROBE_PORT, "protocol": "TCP"}],
        "resources": {"requests": requests},
        "volumeMounts": [_mount(v.name, v.mount_path, v.read_only) for v in mounts],
        **probes,
    }
    metadata: dict[str, Any] = {
        "labels": {"component": name, "tier": "control-plane"},
        "name": name,
        "namespace": "kube-system",
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [container],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [_volume(v.name, v.host_path, v.path_type) for v in ordered],
        },
        "status": {},  # kubeadm marshals the empty PodStatus
    }


class _Dumper(yaml.SafeDumper):
    """sigs.k8s.io/yaml writes an empty string as "" (an extra volume without pathType has `type: ""`)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if value == "":
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> bytes:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False).encode()


def _ca_volumes(ca_dirs: Sequence[str]) -> list[HostPathMount]:
    vols = [_hostpath("k8s-certs", PKI, "DirectoryOrCreate", True),
            _hostpath("ca-certs", "/etc/ssl/certs", "DirectoryOrCreate", True)]
    for path in KNOWN_CA_DIRS:
        if path in ca_dirs:
            vols.append(_hostpath(path.replace("/", "-")[1:], path, "DirectoryOrCreate", True))
    return vols


def _last(extra: Sequence[Arg], name: str) -> str | None:
    """kubeadm GetArgValue(args, name, -1): the last value given for a flag."""
    values = [a.value for a in extra if a.name == name]
    return values[-1] if values else None


def _probe_address(extras: ComponentExtras) -> str:
    """kubeadm Get{ControllerManager,Scheduler}ProbeAddress: the user's --bind-address, none for a wildcard."""
    addr = _last(extras.extra_args, "bind-address")
    if addr is None:
        return "127.0.0.1"
    return "" if addr in ("0.0.0.0", "::") else addr


def _etcd_probe(extras: ComponentExtras, loopback: str) -> tuple[str, int, str]:
    """kubeadm GetEtcdProbeEndpoint: host, port and scheme of the first --listen-metrics-urls URL."""
    value = _last(extras.extra_args, "listen-metrics-urls")
    if value is None:
        return loopback, 2381, "HTTP"
    try:
        url = urlsplit(value.split(",")[0])
        port = url.port
    except ValueError:
        return loopback, 2381, "HTTP"
    return url.hostname or loopback, port or 2381, "HTTPS" if url.scheme == "https" else "HTTP"


def apiserver(cfg: ClusterConfig, host: Host, ca_dirs: Sequence[str] = DEFAULT_CA_DIRS) -> dict[str, Any]:
    adv = str(host.address)
    loopback = "::1" if host.address.version == 6 else "127.0.0.1"
    args = {
        "advertise-address": adv,
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": f"{PKI}/ca.crt",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": f"{PKI}/etcd/ca.crt",
        "etcd-certfile": f"{PKI}/apiserver-etcd-client.crt",
        "etcd-keyfile": f"{PKI}/apiserver-etcd-client.key",
        "etcd-servers": f"https://{_bracket(loopback)}:2379",
        "kubelet-client-certificate": f"{PKI}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{PKI}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{PKI}/front-proxy-client.crt",
        "proxy-client-key-file": f"{PKI}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(APISERVER_BIND_PORT),
        "service-account-issuer": f"https://kubernetes.default.svc.{cfg.networking.dns_domain}",
        "service-account-key-file": f"{PKI}/sa.pub",
        "service-account-signing-key-file": f"{PKI}/sa.key",
        "service-cluster-ip-range": str(cfg.networking.service_subnet),
        "tls-cert-file": f"{PKI}/apiserver.crt",
        "tls-private-key-file": f"{PKI}/apiserver.key",
    }
    extras = cfg.components.api_server
    if any(a.name == "authorization-config" for a in extras.extra_args):
        del args["authorization-mode"]  # kubeadm: structured authorization replaces the mode flag altogether
    return _pod(
        "kube-apiserver", component_image(cfg, "kube-apiserver"), _flags("kube-apiserver", args, extras.extra_args),
        APISERVER_BIND_PORT, "250m", _probes(adv, "HTTPS", "/livez", "/readyz", "/livez"),
        _with_extras(_ca_volumes(ca_dirs), extras),
        {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": f"{_bracket(adv)}:{APISERVER_BIND_PORT}"},
    )


def controller_manager(cfg: ClusterConfig, host: Host, ca_dirs: Sequence[str] = DEFAULT_CA_DIRS) -> dict[str, Any]:
    kubeconfig = "/etc/kubernetes/controller-manager.conf"
    args = {
        "allocate-node-cidrs": "true",
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": "127.0.0.1",
        "client-ca-file": f"{PKI}/ca.crt",
        "cluster-cidr": str(cfg.networking.pod_subnet),
        "cluster-name": cfg.cluster_name,
        "cluster-signing-cert-file": f"{PKI}/ca.crt",
        "cluster-signing-key-file": f"{PKI}/ca.key",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": kubeconfig,
        "leader-elect": "true",
        "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "root-ca-file": f"{PKI}/ca.crt",
        "service-account-private-key-file": f"{PKI}/sa.key",
        "service-cluster-ip-range": str(cfg.networking.service_subnet),
        "use-service-account-credentials": "true",
    }
    default_mask = 24 if cfg.networking.pod_subnet.version == 4 else 64
    if cfg.networking.node_cidr_mask_size != default_mask:
        args["node-cidr-mask-size"] = str(cfg.networking.node_cidr_mask_size)
    volumes = _ca_volumes(ca_dirs) + [_hostpath("kubeconfig", kubeconfig, "FileOrCreate", True)]
    if cfg.version.facts.kcm_flexvolume_dir:
        volumes.append(_hostpath("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
                                 "DirectoryOrCreate", False))
    extras = cfg.components.controller_manager
    return _pod(
        "kube-controller-manager", component_image(cfg, "kube-controller-manager"),
        _flags("kube-controller-manager", args, extras.extra_args), 10257, "200m",
        _probes(_probe_address(extras), "HTTPS", "/healthz", None, "/healthz"), _with_extras(volumes, extras), None,
    )


def scheduler(cfg: ClusterConfig, host: Host) -> dict[str, Any]:
    kubeconfig = "/etc/kubernetes/scheduler.conf"
    args = {
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": "127.0.0.1",
        "kubeconfig": kubeconfig,
        "leader-elect": "true",
    }
    extras = cfg.components.scheduler
    return _pod(
        "kube-scheduler", component_image(cfg, "kube-scheduler"), _flags("kube-scheduler", args, extras.extra_args), 10259,
        "100m", _probes(_probe_address(extras), "HTTPS", "/livez", "/readyz", "/livez"),
        _with_extras([_hostpath("kubeconfig", kubeconfig, "FileOrCreate", True)], extras), None,
    )


def etcd_peer_url(host: Host) -> str:
    return f"https://{_bracket(str(host.address))}:2380"


def etcd_client_url(host: Host) -> str:
    """The member's client URL on its advertise address (what a workstation or another host dials)."""
    return f"https://{_bracket(str(host.address))}:2379"


def etcd(cfg: ClusterConfig, host: Host, initial_cluster: str | None = None) -> dict[str, Any]:
    """Stacked etcd. Members join in inventory order, as `kubeadm join --control-plane` adds them: the first
    starts a new cluster alone; member N lists members 1..N with --initial-cluster-state=existing.
    A live join passes the member list etcd returned from MemberAdd as initial_cluster."""
    adv = _bracket(str(host.address))
    loopback = "::1" if host.address.version == 6 else "127.0.0.1"
    cps = cfg.control_planes
    index = [h.name for h in cps].index(host.name) if host in cps else 0
    args = {
        "advertise-client-urls": f"https://{adv}:2379",
        "cert-file": f"{PKI}/etcd/server.crt",
        "client-cert-auth": "true",
        "data-dir": ETCD_DATA_DIR,
        "feature-gates": "InitialCorruptCheck=true",
        "initial-advertise-peer-urls": etcd_peer_url(host),
        "initial-cluster": ",".join(f"{h.name}={etcd_peer_url(h)}" for h in cps[: index + 1]),
        "key-file": f"{PKI}/etcd/server.key",
        "listen-client-urls": f"https://{_bracket(loopback)}:2379,https://{adv}:2379",
        "listen-metrics-urls": f"http://{_bracket(loopback)}:2381",
        "listen-peer-urls": etcd_peer_url(host),
        "name": host.name,
        "peer-cert-file": f"{PKI}/etcd/peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": f"{PKI}/etcd/peer.key",
        "peer-trusted-ca-file": f"{PKI}/etcd/ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": f"{PKI}/etcd/ca.crt",
        "watch-progress-notify-interval": "5s",
    }
    if initial_cluster is not None:
        args["initial-cluster"] = initial_cluster
    if index > 0 or initial_cluster is not None:
        args["initial-cluster-state"] = "existing"
    image = etcd_image(cfg)
    probe_host, probe_port, probe_scheme = _etcd_probe(cfg.components.etcd, loopback)
    return _pod(
        "etcd", image, _flags("etcd", args, cfg.components.etcd.extra_args), probe_port, "100m",
        _probes(probe_host, probe_scheme, "/livez", "/readyz", "/readyz"),
        [_hostpath("etcd-data", ETCD_DATA_DIR, "DirectoryOrCreate", False),
         _hostpath("etcd-certs", f"{PKI}/etcd", "DirectoryOrCreate", False)],
        {"kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{adv}:2379"},
        memory="100Mi", sort_mounts=False,
    )
