"""Pure core: component settings written the way kubeadm users write them — a KubeletConfiguration override
(`spec.kubelet.config`) and static-pod `extraArgs` / `extraVolumes` — validated against tables generated from
Kubernetes itself (kubeboot/config/data/, see tools/gen_component_tables.py).

The tables are package data read once (like the templates); nothing here touches the hosts or the inventory file.
Every finding goes to the caller's problem list with its field path.
"""

from __future__ import annotations

import copy
import difflib
import json
import posixpath
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

from kubeboot.config.model import HOST_PATH_TYPES, Arg, ContainerRuntime, HostPathMount
from kubeboot.config.typenames import typename

KUBELET_TABLE = "kubelet-config-v1beta1.json"
FLAG_TABLE_MINORS = ("1.37",)  # minors with a flag table of their own (flags-<minor>.json)


class Problems(Protocol):
    def error(self, path: str, message: str) -> None: ...

    def warn(self, path: str, message: str) -> None: ...


@lru_cache(maxsize=None)
def _data(name: str) -> dict[str, Any]:
    text = (resources.files("kubeboot.config") / "data" / name).read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def kubelet_fields() -> dict[str, Any]:
    """KubeletConfiguration v1beta1 (k8s.io/kubelet v0.37.2): json name -> type node."""
    fields: dict[str, Any] = _data(KUBELET_TABLE)["fields"]
    return fields


def flag_table(minor: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(the minor whose table is used, component -> flag -> pflag type). Minors without a table of their own
    use the newest one; the caller downgrades unknown-flag errors to warnings then."""
    own = minor if minor in FLAG_TABLE_MINORS else FLAG_TABLE_MINORS[-1]
    try:
        doc = _data(f"flags-{own}.json")
    except FileNotFoundError:  # a source checkout before the table was generated: names go unchecked
        return own, {}
    return own, {k: v for k, v in doc.items() if isinstance(v, dict)}


def _did_you_mean(key: str, known: list[str]) -> str:
    lower = {k.lower(): k for k in known}
    if key.lower() in lower:
        return f" (did you mean {lower[key.lower()]}?)"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# --- KubeletConfiguration ------------------------------------------------------------------------------

# Go time.ParseDuration syntax ("0" alone, or number+unit repeated).
_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$")
# resource.Quantity (apimachinery/pkg/api/resource/quantity.go).
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

# Values the kubelet rejects outright (pkg/kubelet/apis/config/validation, v1.37.2): enums and ranges.
# Paths use "[]" for any list item and "{}" for any map value.
_ENUMS: dict[str, tuple[str, ...]] = {
    "cgroupDriver": ("systemd", "cgroupfs"),
    "authorization.mode": ("Webhook", "AlwaysAllow"),
    "cpuManagerPolicy": ("none", "static"),
    "memoryManagerPolicy": ("None", "Static"),
    "topologyManagerPolicy": ("none", "best-effort", "restricted", "single-numa-node"),
    "topologyManagerScope": ("container", "pod"),
    "hairpinMode": ("promiscuous-bridge", "hairpin-veth", "none"),
    "memorySwap.swapBehavior": ("", "NoSwap", "LimitedSwap"),
    "registerWithTaints[].effect": ("NoSchedule", "PreferNoSchedule", "NoExecute"),
    "logging.format": ("text", "json"),
    "configMapAndSecretChangeDetectionStrategy": ("Get", "Cache", "Watch"),
    "imagePullCredentialsVerificationPolicy": ("NeverVerify", "NeverVerifyPreloadedImages",
                                               "NeverVerifyAllowlistedImages", "AlwaysVerify"),
    "memoryReservationPolicy": ("None", "TieredReservation"),
    "enforceNodeAllocatable[]": ("pods", "system-reserved", "kube-reserved", "system-reserved-compressible",
                                 "kube-reserved-compressible", "none"),
}
_RANGES: dict[str, tuple[int, int]] = {
    "port": (1, 65535), "healthzPort": (1, 65535), "readOnlyPort": (0, 65535),
    "imageGCHighThresholdPercent": (0, 100), "imageGCLowThresholdPercent": (0, 100),
    "iptablesMasqueradeBit": (0, 31), "iptablesDropBit": (0, 31), "oomScoreAdj": (-1000, 1000),
    "nodeLeaseDurationSeconds": (1, 2**31 - 1), "nodeStatusMaxImages": (-1, 2**31 - 1),
    "maxParallelImagePulls": (1, 2**31 - 1), "containerLogMaxWorkers": (1, 2**31 - 1),
    "containerLogMaxFiles": (2, 2**31 - 1),
    **{k: (0, 2**63 - 1) for k in ("maxPods", "podsPerCore", "eventBurst", "eventRecordQPS", "kubeAPIBurst",
                                  "kubeAPIQPS", "registryBurst", "registryPullQPS", "maxOpenFiles")},
}

# Fields kubeboot itself decides. Errors: kubeboot has its own setting for it, or the cluster breaks without
# kubeboot's value. Warnings: kubeadm allows it (with a warning, componentconfigs/kubelet.go Default) and so
# does kubeboot, but kubeboot's files and checks keep assuming its own value.
_KUBELET_OWNED_ERRORS: dict[str, tuple[object, str]] = {  # field -> (kubeboot's value, why)
    "apiVersion": ("kubelet.config.k8s.io/v1beta1", "set by kubeboot"),
    "kind": ("KubeletConfiguration", "set by kubeboot"),
    "staticPodPath": ("/etc/kubernetes/manifests", "kubeboot writes the control-plane static pods to "
                      "/etc/kubernetes/manifests; another path leaves them unstarted"),
    "containerRuntimeEndpoint": (None, "set spec.containerRuntime.criSocket instead (kubeboot writes it to "
                                 "instance-config.yaml on every node, as kubeadm)"),
    "rotateCertificates": (True, "kubeadm and kubeboot always set true: the kubelet's client certificate from TLS "
                           "bootstrap would otherwise expire unrenewed"),
}
_KUBELET_OWNED_WARNINGS: dict[str, str] = {
    "authentication.x509.clientCAFile": "kubeboot places the cluster CA at /etc/kubernetes/pki/ca.crt; this "
                                        "file must exist on every node and contain it, or `kubectl logs/exec` fail",
    "authentication.anonymous.enabled": "anonymous access to the kubelet API (kubeboot's value: false)",
    "authentication.webhook.enabled": "without webhook authentication, service-account tokens cannot reach the "
                                      "kubelet API (kubeboot's value: true)",
    "authorization.mode": "AlwaysAllow lets every authenticated client use the kubelet API (kubeboot's value: "
                          "Webhook)",
    "clusterDNS": "differs from the DNS service IP kubeboot derives from spec.networking.serviceSubnet",
    "clusterDomain": "differs from spec.networking.dnsDomain",
    "healthzBindAddress": "kubeboot and kubeadm check the kubelet at 127.0.0.1:10248",
    "healthzPort": "kubeboot and kubeadm check the kubelet at 127.0.0.1:10248",
    "readOnlyPort": "the read-only port serves pod and node data without authentication",
}
_KUBELET_DEFAULTS_FOR_WARNINGS: dict[str, object] = {
    "authentication.x509.clientCAFile": "/etc/kubernetes/pki/ca.crt",
    "authentication.anonymous.enabled": False, "authentication.webhook.enabled": True,
    "authorization.mode": "Webhook", "healthzBindAddress": "127.0.0.1", "healthzPort": 10248, "readOnlyPort": 0,
}

_INVALID = object()


def _check_value(value: object, t: Mapping[str, Any], path: str, rule: str, p: Problems) -> object:
    """The value normalised for the kubelet's strict decoder, or _INVALID (after reporting why)."""
    kind = t["kind"]
    if value is None:
        p.error(path, "must not be null (leave the field out to keep kubeboot's value)")
        return _INVALID
    if kind == "struct":
        if not isinstance(value, Mapping):
            p.error(path, f"must be a mapping, not {typename(value)}")
            return _INVALID
        return _check_struct(value, t["fields"], path, rule, p)
    if kind == "map":
        if not isinstance(value, Mapping):
            p.error(path, f"must be a mapping, not {typename(value)}")
            return _INVALID
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                p.error(path, f"keys must be strings, found {k!r}")
                continue
            checked = _check_value(v, t["values"], f"{path}.{k}", f"{rule}{{}}", p)
            if checked is not _INVALID:
                out[k] = checked
        return out if len(out) == len(value) else _INVALID
    if kind == "list":
        if not isinstance(value, list):
            p.error(path, f"must be a list, not {typename(value)}")
            return _INVALID
        items = [_check_value(v, t["items"], f"{path}[{i}]", f"{rule}[]", p) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else items
    checked = _check_scalar(value, t, path, p)
    if checked is _INVALID:
        return _INVALID
    if rule in _ENUMS and checked not in _ENUMS[rule]:
        p.error(path, f"must be one of {', '.join(repr(v) for v in _ENUMS[rule])}, got {checked!r}")
        return _INVALID
    if rule in _RANGES and isinstance(checked, (int, float)):
        lo, hi = _RANGES[rule]
        if not lo <= checked <= hi:
            p.error(path, f"must be between {lo} and {hi}, got {checked}" if hi < 2**31 - 1
                    else f"must be at least {lo}, got {checked}")
            return _INVALID
    return checked


def _check_scalar(value: object, t: Mapping[str, Any], path: str, p: Problems) -> object:
    kind = t["kind"]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        p.error(path, f"must be true or false, not {typename(value)}")
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            bits, signed = int(t["bits"]), bool(t["signed"])
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            if lo <= value <= hi:
                return value
            p.error(path, f"{value} does not fit a {t['go']} ({lo}..{hi})")
        else:
            p.error(path, f"must be an integer, not {typename(value)}")
    elif kind == "float":
        if is_number:
            return value
        p.error(path, f"must be a number, not {typename(value)}")
    elif kind == "string":
        if isinstance(value, str):
            return value
        if is_number:
            return str(value)  # YAML `cpu: 1` in a string map: the kubelet's decoder wants "1"
        p.error(path, f"must be a string, not {typename(value)}")
    elif kind in ("duration", "duration-or-int"):
        if isinstance(value, str) and _DURATION.match(value):
            return value
        if kind == "duration-or-int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        p.error(path, f"must be a duration like 10s, 5m or 1h30m, got {value!r}")
    elif kind == "quantity":
        if is_number or isinstance(value, str) and _QUANTITY.match(value):
            return value
        p.error(path, f"must be a quantity like 500m, 1 or 200Mi, got {value!r}")
    elif kind == "time":
        if isinstance(value, str) and _TIME.match(value):
            return value
        p.error(path, f"must be an RFC 3339 time, got {value!r}")
    else:
        p.error(path, f"kubeboot cannot check values of type {t['go']}")
    return _INVALID


def _check_struct(value: Mapping[Any, Any], fields: Mapping[str, Any], path: str, rule: str,
                  p: Problems) -> object:
    out: dict[str, Any] = {}
    ok = True
    for key, v in value.items():
        fp = f"{path}.{key}"
        if not isinstance(key, str) or key not in fields:
            p.error(fp, "unknown field" + (_did_you_mean(key, list(fields)) if isinstance(key, str) else ""))
            ok = False
            continue
        checked = _check_value(v, fields[key], fp, f"{rule}.{key}" if rule else key, p)
        if checked is _INVALID:
            ok = False
        else:
            out[key] = checked
    return out if ok else _INVALID


def _lookup(doc: Mapping[str, Any], dotted: str) -> tuple[bool, object]:
    node: object = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def parse_kubelet_config(raw: object, path: str, runtime: ContainerRuntime, p: Problems) -> dict[str, Any]:
    """Validate spec.kubelet.config; return it normalised (empty when absent or invalid)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.error(path, f"must be a mapping of KubeletConfiguration fields, not {typename(raw)}")
        return {}
    fields = kubelet_fields()
    for key, (ours, why) in _KUBELET_OWNED_ERRORS.items():
        if key == "containerRuntimeEndpoint":
            ours = runtime.cri_socket
        if key in raw and raw[key] != ours:  # restating kubeboot's own value is harmless
            p.error(f"{path}.{key}", f"owned by kubeboot ({ours}): {why}" if ours is not True
                    else f"owned by kubeboot: {why}")
    checked = _check_struct({k: v for k, v in raw.items() if k not in _KUBELET_OWNED_ERRORS}, fields, path, "", p)
    driver = raw.get("cgroupDriver")
    if driver in _ENUMS["cgroupDriver"] and driver != runtime.cgroup_driver:
        # containerd 1.6 has no CRI RuntimeConfig call, so a mismatch would go unnoticed until pods misbehave
        p.error(f"{path}.cgroupDriver", f"{driver!r} disagrees with spec.containerRuntime.cgroupDriver "
                                        f"{runtime.cgroup_driver!r}: the kubelet and containerd must use the same "
                                        f"driver; set it once, in spec.containerRuntime.cgroupDriver")
        return {}
    if checked is _INVALID or not isinstance(checked, dict):
        return {}
    for dotted, why in _KUBELET_OWNED_WARNINGS.items():
        present, v = _lookup(checked, dotted)
        if present and (dotted not in _KUBELET_DEFAULTS_FOR_WARNINGS or v != _KUBELET_DEFAULTS_FOR_WARNINGS[dotted]):
            if dotted in ("clusterDNS", "clusterDomain"):
                continue  # compared with the derived values by the caller, who knows the networking
            p.warn(f"{path}.{dotted}", f"replaces kubeboot's value: {why}")
    return checked


def check_kubelet_derived(config: Mapping[str, Any], path: str, dns_ip: str, dns_domain: str, p: Problems) -> None:
    """Warn where the override replaces a value kubeboot derives from spec.networking (kubeadm warns too)."""
    if "clusterDNS" in config and config["clusterDNS"] != [dns_ip]:
        p.warn(f"{path}.clusterDNS", f"replaces kubeboot's [{dns_ip}] (the DNS service IP from "
                                     f"spec.networking.serviceSubnet); fine for a node-local DNS cache")
    if "clusterDomain" in config and config["clusterDomain"] != dns_domain:
        p.warn(f"{path}.clusterDomain", f"differs from spec.networking.dnsDomain {dns_domain!r}")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, recursively; anything else (lists, scalars) in override replaces base —
    the result kubeadm gets by decoding the user's KubeletConfiguration and defaulting only what is unset."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- extraArgs / extraVolumes ----------------------------------------------------------------------------

# Flags whose value kubeboot derives per node or from a dedicated inventory field: a cluster-wide override
# would be wrong on every other node, or contradict the inventory.
_ARG_ERRORS: dict[str, dict[str, str]] = {
    "kube-apiserver": {
        "advertise-address": "set per node from spec.hosts[].address",
        "secure-port": "kubeboot's probes, load balancer and kubeconfigs use 6443",
        "service-cluster-ip-range": "set spec.networking.serviceSubnet instead",
    },
    "kube-controller-manager": {
        "cluster-cidr": "set spec.networking.podSubnet instead",
        "service-cluster-ip-range": "set spec.networking.serviceSubnet instead",
        "node-cidr-mask-size": "set spec.networking.nodeCIDRMaskSize instead",
        "cluster-name": "set spec.clusterName instead",
    },
    "kube-scheduler": {},
    "etcd": {
        **{f: "set per member from spec.hosts[].address and the control-plane order"
           for f in ("name", "initial-cluster", "initial-cluster-state", "initial-advertise-peer-urls",
                     "advertise-client-urls", "listen-peer-urls", "listen-client-urls")},
    },
}
# Flags kubeboot sets to files, addresses or modes its PKI, kubeconfigs, probes and joins rely on. kubeadm lets
# users override them and so does kubeboot, with a warning.
_ARG_WARNINGS: dict[str, dict[str, str]] = {
    "kube-apiserver": {
        **{f: "kubeboot's PKI files" for f in (
            "client-ca-file", "tls-cert-file", "tls-private-key-file", "kubelet-client-certificate",
            "kubelet-client-key", "service-account-key-file", "service-account-signing-key-file",
            "proxy-client-cert-file", "proxy-client-key-file", "requestheader-client-ca-file", "etcd-cafile",
            "etcd-certfile", "etcd-keyfile")},
        "etcd-servers": "the stacked etcd member on this node",
        "enable-bootstrap-token-auth": "joins authenticate with bootstrap tokens",
        "authorization-mode": "kubeboot's nodes and admins rely on Node,RBAC",
        "service-account-issuer": "derived from spec.networking.dnsDomain",
    },
    "kube-controller-manager": {
        **{f: "kubeboot's PKI files and kubeconfig" for f in (
            "kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig", "client-ca-file",
            "requestheader-client-ca-file", "root-ca-file", "service-account-private-key-file",
            "cluster-signing-cert-file", "cluster-signing-key-file")},
        "controllers": "joins need the bootstrapsigner and tokencleaner controllers",
    },
    "kube-scheduler": {
        **{f: "kubeboot's kubeconfig" for f in ("kubeconfig", "authentication-kubeconfig",
                                                 "authorization-kubeconfig")},
    },
    "etcd": {
        **{f: "kubeboot's etcd PKI files" for f in ("cert-file", "key-file", "trusted-ca-file", "peer-cert-file",
                                                   "peer-key-file", "peer-trusted-ca-file")},
        "data-dir": "kubeboot mounts /var/lib/etcd",
        "client-cert-auth": "kubeboot's etcd clients authenticate with certificates",
        "peer-client-cert-auth": "kubeboot's etcd peers authenticate with certificates",
    },
}
_PFLAG_BOOL = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
_FLAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _arg_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def parse_extra_args(raw: object, path: str, component: str, minor: str, p: Problems) -> tuple[Arg, ...]:
    """kubeadm v1beta4 `extraArgs`: a list of {name, value} (names may repeat; order kept), or, for convenience,
    a mapping name -> value (normalised to the list in mapping order)."""
    if raw is None:
        return ()
    entries: list[tuple[str, object, object]] = []  # (path of the name, name, value)
    if isinstance(raw, Mapping):
        entries = [(f"{path}.{k}", k, v) for k, v in raw.items()]
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            ip = f"{path}[{i}]"
            if not isinstance(item, Mapping):
                p.error(ip, f"must be a mapping {{name: ..., value: ...}}, not {typename(item)}")
                continue
            for key in item:
                if key not in ("name", "value"):
                    p.error(f"{ip}.{key}", "unknown field (allowed: name, value)" + _did_you_mean(str(key),
                                                                                                ["name", "value"]))
            if "name" not in item:
                p.error(f"{ip}.name", "required field is missing")
                continue
            entries.append((f"{ip}.name", item["name"], item.get("value", "")))
    else:
        p.error(path, f"must be a list of {{name, value}} or a mapping of flag names to values, "
                      f"not {typename(raw)}")
        return ()
    used_minor, tables = flag_table(minor)
    known = tables.get(component, {})
    out: list[Arg] = []
    for name_path, name, value in entries:
        vpath = name_path[: -len(".name")] + ".value" if name_path.endswith(".name") else name_path
        if not isinstance(name, str) or not name:
            p.error(name_path, "must be a non-empty flag name")
            continue
        if name.startswith("-"):
            p.error(name_path, f"write the flag name without leading dashes: {name.lstrip('-')!r}")
            continue
        if not _FLAG_NAME.match(name):
            p.error(name_path, f"not a flag name: {name!r}")
            continue
        text = _arg_value(value)
        if text is None:
            p.error(vpath, f"must be a string, not {typename(value)}")
            continue
        if known and name not in known:
            hint = _did_you_mean(name, list(known))
            if used_minor == minor:
                p.error(name_path, f"{component} has no flag --{name}{hint}")
                continue
            p.warn(name_path, f"{component} v{used_minor} has no flag --{name}{hint} (kubeboot has no flag table "
                              f"for v{minor}, so this is not checked)")
        elif known and component != "etcd" and known[name] == "" and text not in _PFLAG_BOOL:
            p.error(vpath, f"--{name} is a boolean flag of {component}: use true or false, got {text!r}")
            continue
        if name in _ARG_ERRORS.get(component, {}):
            p.error(name_path, f"--{name} is set by kubeboot: {_ARG_ERRORS[component][name]}")
            continue
        if name in _ARG_WARNINGS.get(component, {}):
            p.warn(name_path, f"replaces kubeboot's --{name} ({_ARG_WARNINGS[component][name]}); make sure the "
                              f"new value still works on every control plane")
        out.append(Arg(name, text))
    return tuple(out)


_VOLUME_KEYS = ("name", "hostPath", "mountPath", "readOnly", "pathType")


def _abs_path(m: Mapping[str, Any], key: str, ip: str, p: Problems) -> str | None:
    value = m.get(key)
    if value is None:
        p.error(f"{ip}.{key}", "required field is missing")
        return None
    if not isinstance(value, str) or not value:
        p.error(f"{ip}.{key}", f"must be a non-empty string, not {typename(value)}")
        return None
    if not value.startswith("/"):
        p.error(f"{ip}.{key}", f"must be an absolute path, got {value!r}")
        return None
    if ".." in value.split("/"):
        p.error(f"{ip}.{key}", f"must not contain '..', got {value!r}")
        return None
    return posixpath.normpath(value) if key == "hostPath" else value


def parse_extra_volumes(raw: object, path: str, own: Mapping[str, tuple[str, bool]],
                        p: Problems) -> tuple[HostPathMount, ...]:
    """kubeadm v1beta4 `extraVolumes`. `own` is kubeboot's volumes for the component: name -> (mountPath,
    replaceable). Reusing a replaceable name (the CA-certificate directories) replaces that volume, as kubeadm
    does; reusing another name, or mounting over one of kubeboot's mount paths, is an error."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        p.error(path, f"must be a list of {{name, hostPath, mountPath, readOnly, pathType}}, not {typename(raw)}")
        return ()
    own_paths = {mp: name for name, (mp, _r) in own.items()}
    names: dict[str, int] = {}
    mount_paths: dict[str, int] = {}
    out: list[HostPathMount] = []
    for i, item in enumerate(raw):
        ip = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            p.error(ip, f"must be a mapping, not {typename(item)}")
            continue
        ok = True
        for key in item:
            if key not in _VOLUME_KEYS:
                p.error(f"{ip}.{key}", f"unknown field (allowed: {', '.join(_VOLUME_KEYS)})"
                        + _did_you_mean(str(key), list(_VOLUME_KEYS)))
                ok = False
        name = item.get("name")
        if name is None:
            p.error(f"{ip}.name", "required field is missing")
            ok = False
        elif not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 63:
            p.error(f"{ip}.name", f"must be a lower-case DNS-1123 label (a-z, 0-9, '-'), got {name!r}")
            ok = False
        elif name in names:
            p.error(f"{ip}.name", f"duplicate volume name {name!r} (also {path}[{names[name]}])")
            ok = False
        else:
            names[name] = i
        host_path = _abs_path(item, "hostPath", ip, p)
        mount_path = _abs_path(item, "mountPath", ip, p)
        read_only = item.get("readOnly", False)
        if not isinstance(read_only, bool):
            p.error(f"{ip}.readOnly", f"must be true or false, not {typename(read_only)}")
            ok = False
        path_type = item.get("pathType", "")
        if path_type is None:
            path_type = ""
        if path_type not in HOST_PATH_TYPES:
            p.error(f"{ip}.pathType", f"must be one of {', '.join(t for t in HOST_PATH_TYPES if t)} (or empty), "
                                      f"got {path_type!r}")
            ok = False
        if mount_path is not None:
            if mount_path in mount_paths:
                p.error(f"{ip}.mountPath", f"{mount_path} is mounted twice (also {path}[{mount_paths[mount_path]}])")
                ok = False
            else:
                mount_paths[mount_path] = i
            clash = own_paths.get(mount_path)
            if clash is not None and clash != name:
                p.error(f"{ip}.mountPath", f"{mount_path} is already mounted by kubeboot's volume {clash!r}")
                ok = False
        if isinstance(name, str) and name in own:
            own_mount, replaceable = own[name]
            if not replaceable:
                p.error(f"{ip}.name", f"{name!r} is kubeboot's own volume ({own_mount}); choose another name")
                ok = False
            else:
                p.warn(f"{ip}.name", f"replaces kubeboot's volume {name!r} ({own_mount}), as kubeadm does")
        if ok and isinstance(name, str) and host_path is not None and mount_path is not None:
            out.append(HostPathMount(name, host_path, mount_path, bool(read_only), str(path_type)))
    return tuple(out)


def own_volumes(component: str, kcm_flexvolume_dir: bool) -> dict[str, tuple[str, bool]]:
    """kubeboot's hostPath volumes of a component: name -> (mountPath, may a user volume replace it).
    Mirrors render/manifests.py (a unit test keeps the two in step); the CA directories count whether or not a
    host has them, since host facts are not known when the inventory is validated."""
    pki = "/etc/kubernetes/pki"
    ca = {"ca-certs": ("/etc/ssl/certs", True),
          **{d.replace("/", "-")[1:]: (d, True) for d in KNOWN_CA_DIRS}}
    if component == "kube-apiserver":
        return {"k8s-certs": (pki, False), **ca}
    if component == "kube-controller-manager":
        out = {"k8s-certs": (pki, False), **ca, "kubeconfig": ("/etc/kubernetes/controller-manager.conf", False)}
        if kcm_flexvolume_dir:
            out["flexvolume-dir"] = ("/usr/libexec/kubernetes/kubelet-plugins/volume/exec", True)
        return out
    if component == "kube-scheduler":
        return {"kubeconfig": ("/etc/kubernetes/scheduler.conf", False)}
    return {"etcd-data": ("/var/lib/etcd", False), "etcd-certs": ("/etc/kubernetes/pki/etcd", False)}


# kubeadm phases/controlplane/volumes.go caCertsExtraVolumePaths, in its order.
KNOWN_CA_DIRS: tuple[str, ...] = ("/etc/pki/ca-trust", "/etc/pki/tls/certs", "/etc/ca-certificates",
                                  "/usr/share/ca-certificates", "/usr/local/share/ca-certificates")


# KubeProxyConfiguration fields kubeboot derives from the rest of the inventory (kubeadm does the same).
_KUBE_PROXY_OWNED = {
    "clusterCIDR": "derived from spec.networking.podSubnet",
    "clientConnection": "kube-proxy reads the kubeconfig kubeadm's kube-proxy ConfigMap holds",
}

_S: dict[str, Any] = {"go": "string", "kind": "string"}
_B: dict[str, Any] = {"go": "bool", "kind": "bool"}
_I32: dict[str, Any] = {"bits": 32, "go": "int32", "kind": "int", "signed": True}
_D: dict[str, Any] = {"go": "v1.Duration", "kind": "duration"}
_STRS: dict[str, Any] = {"go": "[]string", "items": _S, "kind": "list"}


def _struct(go: str, **fields: dict[str, Any]) -> dict[str, Any]:
    return {"fields": fields, "go": go, "kind": "struct"}


# KubeProxyConfiguration v1alpha1 (k8s.io/kube-proxy v0.37.2 config/v1alpha1/types.go), in the type-node
# shape of the generated kubelet table; `logging` is the same Go type as the kubelet's and is taken from there.
KUBE_PROXY_FIELDS: dict[str, Any] = {
    "featureGates": {"go": "map[string]bool", "kind": "map", "values": _B},
    "clientConnection": _struct("v1alpha1.ClientConnectionConfiguration", kubeconfig=_S, acceptContentTypes=_S,
                                contentType=_S, qps={"go": "float32", "kind": "float"}, burst=_I32),
    "hostnameOverride": _S, "bindAddress": _S, "healthzBindAddress": _S, "metricsBindAddress": _S,
    "bindAddressHardFail": _B, "enableProfiling": _B, "showHiddenMetricsForVersion": _S,
    "mode": {"go": "v1alpha1.ProxyMode", "kind": "string"},
    "iptables": _struct("v1alpha1.KubeProxyIPTablesConfiguration", masqueradeBit=_I32, masqueradeAll=_B,
                        localhostNodePorts=_B, syncPeriod=_D, minSyncPeriod=_D),
    "ipvs": _struct("v1alpha1.KubeProxyIPVSConfiguration", syncPeriod=_D, minSyncPeriod=_D, scheduler=_S,
                    excludeCIDRs=_STRS, strictARP=_B, tcpTimeout=_D, tcpFinTimeout=_D, udpTimeout=_D),
    "nftables": _struct("v1alpha1.KubeProxyNFTablesConfiguration", masqueradeBit=_I32, masqueradeAll=_B,
                        syncPeriod=_D, minSyncPeriod=_D),
    "winkernel": _struct("v1alpha1.KubeProxyWinkernelConfiguration", networkName=_S, sourceVip=_S, enableDSR=_B,
                         rootHnsEndpointName=_S, forwardHealthCheckVip=_B),
    "detectLocalMode": {"go": "v1alpha1.LocalMode", "kind": "string"},
    "detectLocal": _struct("v1alpha1.DetectLocalConfiguration", bridgeInterface=_S, interfaceNamePrefix=_S),
    "clusterCIDR": _S, "nodePortAddresses": _STRS, "oomScoreAdj": _I32,
    "conntrack": _struct("v1alpha1.KubeProxyConntrackConfiguration", maxPerCore=_I32, min=_I32,
                         tcpEstablishedTimeout=_D, tcpCloseWaitTimeout=_D, tcpBeLiberal=_B, udpTimeout=_D,
                         udpStreamTimeout=_D),
    "configSyncPeriod": _D, "portRange": _S, "windowsRunAsService": _B,
}


def kube_proxy_fields() -> dict[str, Any]:
    """KubeProxyConfiguration v1alpha1: json name -> type node (logging from the kubelet table)."""
    return {**KUBE_PROXY_FIELDS, "logging": kubelet_fields()["logging"]}


def parse_kube_proxy_config(raw: object, path: str, p: Problems) -> dict[str, Any]:
    """Validate spec.kubeProxy.config (KubeProxyConfiguration v1alpha1 fields over kubeadm's defaults): unknown
    fields and wrong types are errors with their path; returns the fields (empty when absent or invalid)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.error(path, f"must be a mapping of KubeProxyConfiguration fields, not {typename(raw)}")
        return {}
    rest: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        if key in _KUBE_PROXY_OWNED:
            p.error(f"{path}.{key}", f"owned by kubeboot: {_KUBE_PROXY_OWNED[key]}")
            ok = False
        elif key in ("apiVersion", "kind"):
            p.error(f"{path}.{key}", "give the fields only; kubeboot writes apiVersion and kind")
            ok = False
        else:
            rest[key] = value
    checked = _check_struct(rest, kube_proxy_fields(), path, "", p)
    if not ok or checked is _INVALID or not isinstance(checked, dict):
        return {}
    return checked
