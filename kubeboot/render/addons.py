"""Pure core: the objects `kubeadm init` creates for its two essential addons, CoreDNS and kube-proxy.

Sources (kubeadm v1.37.2): phases/addons/dns/{dns.go,manifests.go}, phases/addons/proxy/{proxy.go,manifests.go},
componentconfigs/kubeproxy.go (Default), componentconfigs/checksums.go (SignConfigMap). Objects are plain dicts,
field for field what kubeadm sends to the API server (its typed objects as JSON), minus the empty `status`
the Go serializer adds and the server ignores on create; lists are in kubeadm's order of creation.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import yaml

from kubeboot.config.components import deep_merge, kube_proxy_fields
from kubeboot.config.model import ClusterConfig
from kubeboot.render.images import component_image, coredns_image

NAMESPACE = "kube-system"
CONTROL_PLANE_TAINT_KEY = "node-role.kubernetes.io/control-plane"
COREDNS_REPLICAS = 2  # kubeadm's coreDNSReplicas; on a re-run kubeadm keeps the replicas already deployed
KUBE_PROXY_CONFIG_KEY = "config.conf"
KUBE_PROXY_KUBECONFIG = "/var/lib/kube-proxy/kubeconfig.conf"
BOOTSTRAP_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
HASH_ANNOTATION = "kubeadm.kubernetes.io/component-config.hash"
_RBAC = "rbac.authorization.k8s.io"


def _meta(name: str, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta.update(extra)
    return meta


# --- CoreDNS ----------------------------------------------------------------------------------------------

def corefile(dns_domain: str) -> str:
    """kubeadm's Corefile. The cache block keeps CoreDNS from caching answers for the cluster domain (the
    kubernetes plugin answers those itself, and a cached NXDOMAIN would outlive a new Service)."""
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n"
        "       lameduck 5s\n"
        "    }\n"
        "    ready\n"
        f"    kubernetes {dns_domain} in-addr.arpa ip6.arpa {{\n"
        "       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n"
        "       ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n"
        "       max_concurrent 1000\n"
        "    }\n"
        "    cache 30 {\n"
        f"       disable success {dns_domain}\n"
        f"       disable denial {dns_domain}\n"
        "    }\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def _coredns_deployment(cfg: ClusterConfig) -> dict[str, Any]:
    labels = {"k8s-app": "kube-dns"}
    container = {
        "args": ["-conf", "/etc/coredns/Corefile"],
        "image": coredns_image(cfg),
        "imagePullPolicy": "IfNotPresent",
        "livenessProbe": {
            "failureThreshold": 5,
            "httpGet": {"path": "/health", "port": "liveness-probe", "scheme": "HTTP"},
            "initialDelaySeconds": 60,
            "successThreshold": 1,
            "timeoutSeconds": 5,
        },
        "name": "coredns",
        "ports": [
            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
            {"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"},
            {"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "readiness-probe", "scheme": "HTTP"}},
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"mountPath": "/etc/coredns", "name": "config-volume", "readOnly": True}],
    }
    # Two replicas spread over nodes where possible; they tolerate the control-plane taint so that DNS comes
    # up on a cluster that has no workers yet. dnsPolicy Default: CoreDNS resolves upstream via the node.
    anti_affinity = {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "podAffinityTerm": {
            "labelSelector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]},
            "topologyKey": "kubernetes.io/hostname",
        },
        "weight": 100,
    }]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("coredns", labels=dict(labels)),
        "spec": {
            "replicas": COREDNS_REPLICAS,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 1}, "type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "affinity": {"podAntiAffinity": anti_affinity},
                    "containers": [container],
                    "dnsPolicy": "Default",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"effect": "NoSchedule", "key": CONTROL_PLANE_TAINT_KEY},
                    ],
                    "volumes": [{"configMap": {"items": [{"key": "Corefile", "path": "Corefile"}],
                                               "name": "coredns"},
                                 "name": "config-volume"}],
                },
            },
        },
    }


def _dns_service(cfg: ClusterConfig) -> dict[str, Any]:
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
             {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        # resourceVersion "0": kubeadm's way to let a later Update of the Service pass validation; a create
        # accepts it (0 means "unset" to the storage layer).
        "metadata": _meta("kube-dns", annotations={"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
                          labels={"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                  "kubernetes.io/name": "CoreDNS"},
                          resourceVersion="0"),
        "spec": {"clusterIP": str(cfg.dns_service_ip), "ports": ports, "selector": {"k8s-app": "kube-dns"}},
    }


def coredns_objects(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """kubeadm's CoreDNS addon, in the order kubeadm creates it: ConfigMap coredns, ClusterRole and
    ClusterRoleBinding system:coredns, ServiceAccount coredns, Deployment coredns, Service kube-dns."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("coredns"),
         "data": {"Corefile": corefile(cfg.networking.dns_domain)}},
        {"apiVersion": f"{_RBAC}/v1", "kind": "ClusterRole", "metadata": _meta("system:coredns", False),
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": f"{_RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": _meta("system:coredns", False),
         "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("coredns")},
        _coredns_deployment(cfg),
        _dns_service(cfg),
    ]


# --- kube-proxy -------------------------------------------------------------------------------------------

# What kubeadm marshals for a KubeProxyConfiguration nobody set a field of: kubeadm registers no kube-proxy
# defaulting functions, so every field is Go's zero value (pointers null, durations 0s) except the few
# kubeadm's Default() fills in (kube_proxy_configuration). `omitempty` fields that are empty are absent.
_KUBE_PROXY_ZERO: dict[str, Any] = {
    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
    "kind": "KubeProxyConfiguration",
    "bindAddress": "",
    "bindAddressHardFail": False,
    "clientConnection": {"acceptContentTypes": "", "burst": 0, "contentType": "", "kubeconfig": "", "qps": 0},
    "clusterCIDR": "",
    "configSyncPeriod": "0s",
    "conntrack": {"maxPerCore": None, "min": None, "tcpBeLiberal": False, "tcpCloseWaitTimeout": None,
                  "tcpEstablishedTimeout": None, "udpStreamTimeout": "0s", "udpTimeout": "0s"},
    "detectLocal": {"bridgeInterface": "", "interfaceNamePrefix": ""},
    "detectLocalMode": "",
    "enableProfiling": False,
    "healthzBindAddress": "",
    "hostnameOverride": "",
    "iptables": {"localhostNodePorts": None, "masqueradeAll": False, "masqueradeBit": None, "minSyncPeriod": "0s",
                 "syncPeriod": "0s"},
    "ipvs": {"excludeCIDRs": None, "minSyncPeriod": "0s", "scheduler": "", "strictARP": False, "syncPeriod": "0s",
             "tcpFinTimeout": "0s", "tcpTimeout": "0s", "udpTimeout": "0s"},
    "logging": {"flushFrequency": 0, "options": {"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}},
                "verbosity": 0},
    "metricsBindAddress": "",
    "mode": "",
    "nftables": {"masqueradeAll": False, "masqueradeBit": None, "minSyncPeriod": "0s", "syncPeriod": "0s"},
    "nodePortAddresses": None,
    "oomScoreAdj": None,
    "portRange": "",
    "showHiddenMetricsForVersion": "",
    "winkernel": {"enableDSR": False, "forwardHealthCheckVip": False, "networkName": "", "rootHnsEndpointName": "",
                  "sourceVip": ""},
}
# json `omitempty` fields: Go leaves them out when empty, even if the user wrote them.
_OMITEMPTY = ("featureGates", "windowsRunAsService", "logging.format", "logging.vmodule",
              "logging.options.text.splitStream", "logging.options.json.splitStream")

_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}


def go_duration(text: str) -> str:
    """A duration as Go's time.Duration prints it after parsing (metav1.Duration round trip): "1h" ->
    "1h0m0s", "90s" -> "1m30s", "1500ms" -> "1.5s". ValueError when Go would not parse it."""
    s = text
    sign = ""
    if s[:1] in "+-":
        sign, s = ("-" if s[0] == "-" else ""), s[1:]
    if s == "0":
        return "0s"
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or not (m[1] or m[2]):
            raise ValueError(f"invalid duration {text!r}")
        total += Fraction(f"{m[1] or 0}.{m[2] or 0}") * _UNIT_NS[m[3]]
        pos = m.end()
    ns = int(total)
    if ns == 0:
        return "0s"
    if ns < 10**3:
        return f"{sign}{ns}ns"
    if ns < 10**6:
        return f"{sign}{_frac(ns, 3)}µs"
    if ns < 10**9:
        return f"{sign}{_frac(ns, 6)}ms"
    secs, frac = divmod(ns, 10**9)
    out = f"{_trim(secs % 60, frac, 9)}s"
    minutes = secs // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        if minutes // 60:
            out = f"{minutes // 60}h{out}"
    return sign + out


def _frac(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    return _trim(whole, frac, digits)


def _trim(whole: int, frac: int, digits: int) -> str:
    tail = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def _canonical(value: Any, t: Mapping[str, Any]) -> Any:
    """A validated user value as kubeadm marshals it after decoding it into the Go type."""
    kind = t["kind"]
    if kind == "struct" and isinstance(value, Mapping):
        return {k: _canonical(v, t["fields"][k]) if k in t["fields"] else v for k, v in value.items()}
    if kind == "map" and isinstance(value, Mapping):
        return {k: _canonical(v, t["values"]) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_canonical(v, t["items"]) for v in value]
    if kind in ("duration", "duration-or-int") and isinstance(value, str):
        return go_duration(value)
    if kind == "quantity" and not isinstance(value, str):
        return str(value)
    return value


def _drop_empty_omitempty(doc: dict[str, Any]) -> None:
    for dotted in _OMITEMPTY:
        *parents, last = dotted.split(".")
        node: Any = doc
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] in (None, False, "", {}, [], 0):
            del node[last]


def kube_proxy_configuration(cfg: ClusterConfig) -> dict[str, Any]:
    """The KubeProxyConfiguration kubeadm stores in config.conf: Go zero values, spec.kubeProxy.config over them,
    then kubeadm's Default(): bindAddress 0.0.0.0 (:: when the init node's address is IPv6), clusterCIDR the pod
    subnet, clientConnection.kubeconfig the ConfigMap's kubeconfig.conf, mode iptables — each only when unset."""
    user = _canonical(dict(cfg.kube_proxy_config), {"kind": "struct", "fields": kube_proxy_fields()})
    doc = deep_merge(_KUBE_PROXY_ZERO, user)
    if not doc["bindAddress"]:
        doc["bindAddress"] = "::" if cfg.first_control_plane.address.version == 6 else "0.0.0.0"
    if not doc["clusterCIDR"]:
        doc["clusterCIDR"] = str(cfg.networking.pod_subnet)
    if not doc["clientConnection"]["kubeconfig"]:
        doc["clientConnection"]["kubeconfig"] = KUBE_PROXY_KUBECONFIG
    if not doc["mode"]:
        doc["mode"] = "iptables"
    _drop_empty_omitempty(doc)
    return doc


def kube_proxy_kubeconfig(server: str) -> str:
    """kubeconfig.conf: kube-proxy authenticates with its ServiceAccount token, trusting the cluster CA the
    ServiceAccount volume carries."""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- cluster:\n"
        "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
        f"    server: {server}\n"
        "  name: default\n"
        "contexts:\n"
        "- context:\n"
        "    cluster: default\n"
        "    namespace: default\n"
        "    user: default\n"
        "  name: default\n"
        "current-context: default\n"
        "users:\n"
        "- name: default\n"
        "  user:\n"
        "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"
    )


def config_map_hash(data: Mapping[str, str]) -> str:
    """kubeadm ChecksumForConfigMap: sha256 over the values in key order."""
    h = hashlib.sha256()
    for key in sorted(data):
        h.update(data[key].encode())
    return f"sha256:{h.hexdigest()}"


def _kube_proxy_config_map(cfg: ClusterConfig, server: str) -> dict[str, Any]:
    # kubeadm puts the marshalled config into a `|-` block: the data value has no final newline.
    data = {KUBE_PROXY_CONFIG_KEY: go_yaml(kube_proxy_configuration(cfg)).rstrip("\n"),
            "kubeconfig.conf": kube_proxy_kubeconfig(server)}
    meta = _meta("kube-proxy", labels={"app": "kube-proxy"})
    if not cfg.kube_proxy_config:
        # kubeadm signs the config it generated itself; `kubeadm upgrade` regenerates a signed config but keeps
        # one the user supplied (a KubeProxyConfiguration document, here spec.kubeProxy.config).
        meta["annotations"] = {HASH_ANNOTATION: config_map_hash(data)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _kube_proxy_daemonset(cfg: ClusterConfig) -> dict[str, Any]:
    labels = {"k8s-app": "kube-proxy"}
    container = {
        "command": ["/usr/local/bin/kube-proxy", f"--config=/var/lib/kube-proxy/{KUBE_PROXY_CONFIG_KEY}",
                    "--hostname-override=$(NODE_NAME)"],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "image": component_image(cfg, "kube-proxy"),
        "imagePullPolicy": "IfNotPresent",
        "name": "kube-proxy",
        "resources": {},  # the Go type's empty ResourceRequirements, as kubeadm sends it
        "securityContext": {"privileged": True},
        # xtables.lock is shared with every other iptables user on the node (kubelet, CNI plugins).
        "volumeMounts": [{"mountPath": "/var/lib/kube-proxy", "name": "kube-proxy"},
                         {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
                         {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta("kube-proxy", labels=dict(labels)),
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [container],
                    "hostNetwork": True,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "kube-proxy",
                    "tolerations": [{"operator": "Exists"}],  # every node, whatever its taints
                    "volumes": [
                        {"configMap": {"name": "kube-proxy"}, "name": "kube-proxy"},
                        {"hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}, "name": "xtables-lock"},
                        {"hostPath": {"path": "/lib/modules"}, "name": "lib-modules"},
                    ],
                },
            },
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


def kube_proxy_objects(cfg: ClusterConfig, server: str) -> list[dict[str, Any]]:
    """kubeadm's kube-proxy addon, in the order kubeadm creates it: ConfigMap kube-proxy (config.conf and a
    kubeconfig.conf whose server is `server`, the control-plane endpoint URL), DaemonSet kube-proxy,
    ServiceAccount kube-proxy, ClusterRoleBinding kubeadm:node-proxier, Role and RoleBinding kube-proxy."""
    return [
        _kube_proxy_config_map(cfg, server),
        _kube_proxy_daemonset(cfg),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("kube-proxy")},
        {"apiVersion": f"{_RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": _meta("kubeadm:node-proxier", False),
         "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": "system:node-proxier"},
         "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": NAMESPACE}]},
        # Joining nodes read the kube-proxy ConfigMap with their bootstrap token (kubeadm join's preflight).
        {"apiVersion": f"{_RBAC}/v1", "kind": "Role", "metadata": _meta("kube-proxy"),
         "rules": [{"apiGroups": [""], "resourceNames": ["kube-proxy"], "resources": ["configmaps"],
                    "verbs": ["get"]}]},
        {"apiVersion": f"{_RBAC}/v1", "kind": "RoleBinding", "metadata": _meta("kube-proxy"),
         "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": "kube-proxy"},
         "subjects": [{"kind": "Group", "name": BOOTSTRAP_TOKEN_GROUP}]},
    ]


# --- YAML as sigs.k8s.io/yaml writes it --------------------------------------------------------------------

def _go_key_less(a: str, b: str) -> int:
    """go-yaml v2's map key order (keyList.Less): non-letters before letters, digit runs compared as numbers."""
    ar, br = list(a), list(b)
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            continue
        al, bl = ar[i].isalpha(), br[i].isalpha()
        if al and bl:
            return -1 if ar[i] < br[i] else 1
        if al or bl:
            return -1 if bl else 1
        an = bn = 0
        if ar[i] == "0" or br[i] == "0":
            j = i - 1
            while j >= 0 and ar[j].isdigit():
                if ar[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and ar[ai].isdigit():
            an, ai = an * 10 + int(ar[ai]), ai + 1
        bi = i
        while bi < len(br) and br[bi].isdigit():
            bn, bi = bn * 10 + int(br[bi]), bi + 1
        if an != bn:
            return -1 if an < bn else 1
        if ai != bi:
            return -1 if ai < bi else 1
        return -1 if ar[i] < br[i] else 1
    return (len(ar) > len(br)) - (len(ar) < len(br))


class _GoDumper(yaml.SafeDumper):
    """Scalars styled as go-yaml v2 styles them: a string that would read back as another type is
    double-quoted ("", "0", "true"), multi-line strings are literal blocks."""


_resolve: Callable[..., str] = yaml.SafeDumper.resolve  # untyped in the stubs
_GO_EXTRA_BOOLS = {"y", "Y", "n", "N"}  # YAML 1.1 booleans go-yaml knows and PyYAML's resolver does not


def _go_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    implicit = _resolve(dumper, yaml.ScalarNode, value, (True, False))
    if value in _GO_EXTRA_BOOLS or implicit != "tag:yaml.org,2002:str":
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _go_float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    # The value went through JSON first: an integral float is written as an integer and read back as one.
    if value.is_integer() and abs(value) < 1e21:
        return dumper.represent_int(int(value))
    return dumper.represent_scalar("tag:yaml.org,2002:float", repr(value))


_GoDumper.add_representer(str, _go_str)
_GoDumper.add_representer(float, _go_float)


def _go_order(value: Any) -> Any:
    if isinstance(value, Mapping):
        keys = sorted((str(k) for k in value), key=functools.cmp_to_key(_go_key_less))
        return {k: _go_order(value[k]) for k in keys}
    if isinstance(value, list):
        return [_go_order(v) for v in value]
    return value


def go_yaml(doc: Mapping[str, Any]) -> str:
    """`doc` as kubeadm's marshaller (JSON, then sigs.k8s.io/yaml JSONToYAML) writes it."""
    return yaml.dump(_go_order(copy.deepcopy(dict(doc))), Dumper=_GoDumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=2**31 - 1)
