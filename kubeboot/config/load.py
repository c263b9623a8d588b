"""Pure core: turn raw inventory YAML into a validated ClusterConfig, reporting every problem at once.

No SSH and no disk access beyond reading the inventory text the caller hands in. Each problem names its
field path (`spec.hosts[3].address`) so a user can fix them all in one edit.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import yaml

from kubeboot.config.model import (
    API_VERSION,
    APISERVER_BIND_PORT,
    KIND,
    Certificates,
    Cni,
    CniPlugin,
    ClusterConfig,
    ComponentExtras,
    ContainerRuntime,
    ControlPlaneExtras,
    Endpoint,
    Host,
    IPAddress,
    IPNetwork,
    KeyAlgorithm,
    LoadBalancerMode,
    Networking,
    Packages,
    Role,
    SSHSettings,
)
from kubeboot.config.components import (
    check_kubelet_derived,
    own_volumes,
    parse_extra_args,
    parse_extra_volumes,
    parse_kube_proxy_config,
    parse_kubelet_config,
)
from kubeboot.config.typenames import typename
from kubeboot.config.versions import DEFAULT_MINOR, KubernetesVersion, resolve_version
from kubeboot.errors import ConfigError, Problem

T = TypeVar("T")

# RFC 1123 label / subdomain, as Kubernetes validates node and object names.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_WILDCARD_DNS = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TOP_KEYS = {"apiVersion", "kind", "metadata", "spec"}
_METADATA_KEYS = {"name"}
_SPEC_KEYS = {
    "kubernetesVersion",
    "controlPlaneEndpoint",
    "networking",
    "loadBalancer",
    "certificates",
    "ssh",
    "hosts",
    "containerRuntime",
    "imageRepository",
    "clusterName",
    "packages",
    "images",
    "kubelet",
    "apiServer",
    "controllerManager",
    "scheduler",
    "etcd",
    "kubeProxy",
    "cni",
    "kubectl",
}
_PACKAGES_KEYS = {"aptRepository", "rpmRepository"}
_IMAGES_KEYS = {"archiveDir"}
_NETWORKING_KEYS = {"podSubnet", "serviceSubnet", "dnsDomain", "nodeCIDRMaskSize"}
_LB_KEYS = {"mode"}
_CERT_KEYS = {"keyAlgorithm", "apiServerCertSANs", "validityDays", "caValidityDays"}
_SSH_KEYS = {"user", "port", "keyPath", "bastion", "sudoPasswordEnv"}
_HOST_KEYS = {"name", "address", "roles", "ssh", "labels"}
_RUNTIME_KEYS = {"cgroupDriver", "criSocket", "restrictOOMScoreAdj"}
_KUBELET_KEYS = {"config"}
_KUBE_PROXY_KEYS = {"config"}
_CNI_KEYS = {"plugin", "manifests"}
_KUBECTL_KEYS = {"users"}
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# spec key -> (component, allowed keys): kubeadm ClusterConfiguration v1beta4 shapes (etcd: etcd.local's).
_COMPONENT_SPECS = {
    "apiServer": ("kube-apiserver", {"extraArgs", "extraVolumes"}),
    "controllerManager": ("kube-controller-manager", {"extraArgs", "extraVolumes"}),
    "scheduler": ("kube-scheduler", {"extraArgs", "extraVolumes"}),
    "etcd": ("etcd", {"extraArgs"}),
}

DEFAULT_POD_SUBNET = "10.244.0.0/16"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"
DEFAULT_DNS_DOMAIN = "cluster.local"


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message, "error"))

    def warn(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message, "warning"))

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.items)


def load_inventory_text(text: str, source: str = "inventory", version: str | None = None) -> ClusterConfig:
    """Parse YAML text and validate it; raise ConfigError listing every problem. `version` stands for
    spec.kubernetesVersion (`kubeboot upgrade --to`), validated like it."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(where, f"not valid YAML: {problem}")], source=source) from None
    if version is not None and isinstance(raw, dict) and isinstance(raw.get("spec"), dict):
        raw["spec"]["kubernetesVersion"] = version
    return parse_inventory(raw, source)


def parse_inventory(raw: object, source: str = "inventory") -> ClusterConfig:
    """Validate a decoded inventory document and build the ClusterConfig."""
    p = _Problems()
    cfg = _parse(raw, p)
    if p.has_errors or cfg is None:
        raise ConfigError(p.items, source=source)
    return replace(cfg, warnings=tuple(str(w) for w in p.items if w.severity == "warning"))


def single_control_plane(*, name: str, address: str | None, endpoint: str, version: str,
                         networking: Mapping[str, str | None], key_algorithm: str, cert_sans: list[str],
                         image_repository: str | None = None, cluster_name: str | None = None,
                         components: Mapping[str, Any] | None = None, validity_days: int | None = None,
                         ca_validity_days: int | None = None, source: str) -> ClusterConfig:
    """A validated cluster whose only host is this control plane: what `init` and `join --control-plane` feed
    the PKI and render core on the node (from flags, or from the cluster's kubeadm-config)."""
    certificates: dict[str, Any] = {"keyAlgorithm": key_algorithm, "apiServerCertSANs": cert_sans}
    if validity_days is not None:
        certificates["validityDays"] = validity_days
    if ca_validity_days is not None:
        certificates["caValidityDays"] = ca_validity_days
    spec: dict[str, Any] = {
        "kubernetesVersion": version, "controlPlaneEndpoint": endpoint, "loadBalancer": {"mode": "none"},
        "networking": {k: v for k, v in networking.items() if v},
        "certificates": certificates,
        "hosts": [{"name": name, "address": address, "roles": ["control-plane"]}],
    }
    if image_repository:
        spec["imageRepository"] = image_repository
    if cluster_name:
        spec["clusterName"] = cluster_name
    for key, value in (components or {}).items():
        if key in _COMPONENT_SPECS and value:
            spec[key] = value  # extraArgs/extraVolumes from the cluster's kubeadm-config
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "node"}, "spec": spec}
    return parse_inventory(doc, source=source)


# --- small typed readers -------------------------------------------------------------------------


def _mapping(value: object, path: str, p: _Problems, allowed: set[str]) -> Mapping[str, Any] | None:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        p.error(path, f"must be a mapping, not {_typename(value)}")
        return None
    for key in value:
        if not isinstance(key, str):
            p.error(path, f"keys must be strings, found {key!r}")
        elif key not in allowed:
            p.error(_join(path, key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def _typename(value: object) -> str:
    # Unlike the component settings, the inventory's own fields name a float by its Python type
    # ("must be an integer, not float"); kept so their messages do not change.
    return type(value).__name__ if isinstance(value, float) else typename(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(m: Mapping[str, Any], key: str, path: str, p: _Problems, *, required: bool = False,
            default: str | None = None) -> str | None:
    fp = _join(path, key)
    if key not in m or m[key] is None:
        if required:
            p.error(fp, "required field is missing")
        return default
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        p.error(fp, f"must be a string, not {_typename(value)}")
        return None
    text = str(value).strip()
    if not text:
        if required:
            p.error(fp, "must not be empty")
            return None
        return default
    return text


def _int(m: Mapping[str, Any], key: str, path: str, p: _Problems, default: int, lo: int, hi: int) -> int:
    fp = _join(path, key)
    if key not in m or m[key] is None:
        return default
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int):
        p.error(fp, f"must be an integer, not {_typename(value)}")
        return default
    if not lo <= value <= hi:
        p.error(fp, f"must be between {lo} and {hi}, got {value}")
        return default
    return value


def _enum(m: Mapping[str, Any], key: str, path: str, p: _Problems, choices: Callable[[str], T],
          names: list[str], default: T) -> T:
    text = _string(m, key, path, p)
    if text is None:
        return default
    try:
        return choices(text)
    except ValueError:
        p.error(_join(path, key), f"must be one of {', '.join(names)}, got {text!r}")
        return default


def _network(text: str | None, path: str, p: _Problems) -> IPNetwork | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            p.error(path, f"not a CIDR: {text!r}")
        else:
            p.error(path, f"{text!r} has host bits set (did you mean {ipaddress.ip_network(text, strict=False)}?)")
        return None


# --- sections --------------------------------------------------------------------------------------


def _parse(raw: object, p: _Problems) -> ClusterConfig | None:
    top = _mapping(raw, "", p, _TOP_KEYS)
    if top is None:
        return None
    if raw is None:
        p.error("(document)", "the inventory is empty")
        return None
    api_version = _string(top, "apiVersion", "", p, required=True)
    if api_version is not None and api_version != API_VERSION:
        p.error("apiVersion", f"must be {API_VERSION!r}, got {api_version!r}")
    kind = _string(top, "kind", "", p, required=True)
    if kind is not None and kind != KIND:
        p.error("kind", f"must be {KIND!r}, got {kind!r}")

    name = "kubeboot"
    meta = _mapping(top.get("metadata"), "metadata", p, _METADATA_KEYS)
    if "metadata" not in top:
        p.error("metadata", "required field is missing")
    elif meta is not None:
        n = _string(meta, "name", "metadata", p, required=True)
        if n is not None:
            if not _DNS1123_LABEL.match(n) or len(n) > 63:
                p.error("metadata.name", f"must be a lower-case DNS-1123 label (a-z, 0-9, '-'), got {n!r}")
            else:
                name = n

    if "spec" not in top:
        p.error("spec", "required field is missing")
        return None
    spec = _mapping(top.get("spec"), "spec", p, _SPEC_KEYS)
    if spec is None:
        return None

    version = _parse_version(spec, p)
    endpoint = _parse_endpoint(spec, p)
    networking = _parse_networking(spec, p)
    lb_mode = _parse_lb_mode(spec, p)
    certificates = _parse_certificates(spec, p)
    runtime = _parse_runtime(spec, p)
    default_ssh = _parse_ssh(spec.get("ssh"), "spec.ssh", p, SSHSettings())
    hosts = _parse_hosts(spec, default_ssh, p)
    image_repository = _string(spec, "imageRepository", "spec", p, default="registry.k8s.io") or "registry.k8s.io"
    if not re.match(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$", image_repository):
        p.error("spec.imageRepository", f"not an image repository: {image_repository!r}")
    packages = _parse_packages(spec, p)
    images = _mapping(spec.get("images"), "spec.images", p, _IMAGES_KEYS)
    image_archive_dir = _string(images, "archiveDir", "spec.images", p) if images is not None else None
    if image_archive_dir == "":
        p.error("spec.images.archiveDir", "must name a directory of image archives (.tar)")
    cluster_name = _string(spec, "clusterName", "spec", p, default="kubernetes") or "kubernetes"
    if not _DNS1123_SUBDOMAIN.match(cluster_name):
        p.error("spec.clusterName", f"must be a lower-case DNS-1123 subdomain, got {cluster_name!r}")

    kubelet = _mapping(spec.get("kubelet"), "spec.kubelet", p, _KUBELET_KEYS)
    kubelet_config = parse_kubelet_config(kubelet.get("config") if kubelet else None, "spec.kubelet.config", runtime,
                                          p)
    components = _parse_components(spec, version, p)
    kube_proxy = _mapping(spec.get("kubeProxy"), "spec.kubeProxy", p, _KUBE_PROXY_KEYS)
    kube_proxy_config = parse_kube_proxy_config(kube_proxy.get("config") if kube_proxy else None,
                                                "spec.kubeProxy.config", p)
    cni = _parse_cni(spec, p)
    kubectl_users = _parse_kubectl(spec, p)

    if version is None or endpoint is None or networking is None or hosts is None:
        return None
    check_kubelet_derived(kubelet_config, "spec.kubelet.config", str(networking.service_subnet[10]),
                          networking.dns_domain, p)
    _check_cluster(hosts, endpoint, networking, lb_mode, p)
    return ClusterConfig(
        name=name,
        version=version,
        control_plane_endpoint=endpoint,
        networking=networking,
        load_balancer_mode=lb_mode,
        certificates=certificates,
        runtime=runtime,
        hosts=tuple(hosts),
        image_repository=image_repository,
        packages=packages,
        cluster_name=cluster_name,
        image_archive_dir=image_archive_dir or None,
        components=components,
        kubelet_config=kubelet_config,
        kube_proxy_config=kube_proxy_config,
        cni=cni,
        kubectl_users=kubectl_users,
    )


def _parse_cni(spec: Mapping[str, Any], p: _Problems) -> Cni:
    m = _mapping(spec.get("cni"), "spec.cni", p, _CNI_KEYS)
    if m is None:
        return Cni()
    plugin = _enum(m, "plugin", "spec.cni", p, CniPlugin, [x.value for x in CniPlugin], CniPlugin.FLANNEL)
    raw = m.get("manifests", [])
    files: list[str] = []
    if not isinstance(raw, list):
        p.error("spec.cni.manifests", f"must be a list of manifest files, not {_typename(raw)}")
    else:
        for i, item in enumerate(raw):
            if not isinstance(item, str) or not item.strip():
                p.error(f"spec.cni.manifests[{i}]", "must be the path of a manifest file (YAML)")
            else:
                files.append(item)
    return Cni(plugin, tuple(files))


def _parse_kubectl(spec: Mapping[str, Any], p: _Problems) -> tuple[str, ...]:
    m = _mapping(spec.get("kubectl"), "spec.kubectl", p, _KUBECTL_KEYS)
    if m is None:
        return ()
    raw = m.get("users", [])
    if not isinstance(raw, list):
        p.error("spec.kubectl.users", f"must be a list of user names, not {_typename(raw)}")
        return ()
    out: list[str] = []
    for i, u in enumerate(raw):
        if not isinstance(u, str) or not _USER_NAME.match(u):
            p.error(f"spec.kubectl.users[{i}]", f"not a Linux user name: {u!r}")
        elif u == "root":
            p.error(f"spec.kubectl.users[{i}]", "root always gets /root/.kube/config on the control planes; "
                                               "list only non-root users")
        elif u in out:
            p.error(f"spec.kubectl.users[{i}]", f"{u!r} is listed twice")
        else:
            out.append(u)
    return tuple(out)


def _parse_version(spec: Mapping[str, Any], p: _Problems) -> KubernetesVersion | None:
    text = _string(spec, "kubernetesVersion", "spec", p, default=DEFAULT_MINOR)
    if text is None:
        return None
    try:
        return resolve_version(text)
    except ValueError as exc:
        p.error("spec.kubernetesVersion", str(exc))
        return None


def _parse_endpoint(spec: Mapping[str, Any], p: _Problems) -> Endpoint | None:
    path = "spec.controlPlaneEndpoint"
    text = _string(spec, "controlPlaneEndpoint", "spec", p, required=True)
    if text is None:
        return None
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            p.error(path, f"unbalanced '[' in {text!r}")
            return None
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                p.error(path, f"expected HOST:PORT, got {text!r}")
                return None
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif "://" in text or "/" in text:
        p.error(path, f"expected HOST:PORT without a scheme or path, got {text!r}")
        return None
    port = APISERVER_BIND_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            p.error(path, f"port must be a number from 1 to 65535, got {port_text!r}")
            return None
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _DNS1123_SUBDOMAIN.match(host.lower()) or len(host) > 253:
            p.error(path, f"host must be an IP address or a DNS name, got {host!r}")
            return None
        host = host.lower()
    return Endpoint(host, port)


def _parse_networking(spec: Mapping[str, Any], p: _Problems) -> Networking | None:
    path = "spec.networking"
    m = _mapping(spec.get("networking"), path, p, _NETWORKING_KEYS)
    if m is None:
        return None
    pod = _network(_string(m, "podSubnet", path, p, default=DEFAULT_POD_SUBNET), f"{path}.podSubnet", p)
    svc = _network(_string(m, "serviceSubnet", path, p, default=DEFAULT_SERVICE_SUBNET), f"{path}.serviceSubnet", p)
    domain = _string(m, "dnsDomain", path, p, default=DEFAULT_DNS_DOMAIN) or DEFAULT_DNS_DOMAIN
    if not _DNS1123_SUBDOMAIN.match(domain):
        p.error(f"{path}.dnsDomain", f"must be a lower-case DNS-1123 subdomain, got {domain!r}")
    mask_default = 24 if pod is None or pod.version == 4 else 64
    mask = _int(m, "nodeCIDRMaskSize", path, p, mask_default, 8, 128)
    if pod is None or svc is None:
        return None
    ok = True
    if pod.version != svc.version:
        p.error(f"{path}.serviceSubnet", f"IPv{svc.version} but podSubnet is IPv{pod.version}; dual-stack is not supported")
        ok = False
    elif pod.overlaps(svc):
        p.error(f"{path}.serviceSubnet", f"{svc} overlaps podSubnet {pod}")
        ok = False
    # kube-apiserver refuses service ranges wider than 20 bits (IPv4 /12) or 16 bits (IPv6 /108).
    max_bits = 20 if svc.version == 4 else 16
    if svc.max_prefixlen - svc.prefixlen > max_bits:
        p.error(f"{path}.serviceSubnet", f"{svc} is too large: the prefix must be /{svc.max_prefixlen - max_bits} or longer")
        ok = False
    if svc.num_addresses < 16:
        p.error(f"{path}.serviceSubnet", f"{svc} is too small: it needs room for the API server (.1) and DNS (.10) IPs")
        ok = False
    if pod.version == 4 and mask > 32 or pod.version == 6 and mask > 128:
        p.error(f"{path}.nodeCIDRMaskSize", f"{mask} is longer than an IPv{pod.version} address")
        ok = False
    elif mask < pod.prefixlen:
        p.error(f"{path}.podSubnet", f"{pod} is smaller than one node's range /{mask} (nodeCIDRMaskSize)")
        ok = False
    if not ok:
        return None
    return Networking(pod, svc, domain, mask)


def _parse_lb_mode(spec: Mapping[str, Any], p: _Problems) -> LoadBalancerMode:
    path = "spec.loadBalancer"
    m = _mapping(spec.get("loadBalancer"), path, p, _LB_KEYS)
    if m is None:
        return LoadBalancerMode.EXTERNAL_NGINX
    return _enum(m, "mode", path, p, LoadBalancerMode, [x.value for x in LoadBalancerMode],
                 LoadBalancerMode.EXTERNAL_NGINX)


def _parse_certificates(spec: Mapping[str, Any], p: _Problems) -> Certificates:
    path = "spec.certificates"
    m = _mapping(spec.get("certificates"), path, p, _CERT_KEYS)
    if m is None:
        return Certificates()
    alg = _enum(m, "keyAlgorithm", path, p, KeyAlgorithm, [x.value for x in KeyAlgorithm], KeyAlgorithm.RSA_2048)
    sans: list[str] = []
    raw_sans = m.get("apiServerCertSANs")
    if raw_sans is not None:
        if not isinstance(raw_sans, list):
            p.error(f"{path}.apiServerCertSANs", f"must be a list, not {_typename(raw_sans)}")
        else:
            for i, entry in enumerate(raw_sans):
                fp = f"{path}.apiServerCertSANs[{i}]"
                if not isinstance(entry, str) or not entry.strip():
                    p.error(fp, "must be a non-empty string")
                    continue
                san = entry.strip().lower()  # kubeadm lower-cases certSANs
                if not _is_ip(san) and not _DNS1123_SUBDOMAIN.match(san) and not _WILDCARD_DNS.match(san):
                    p.error(fp, f"not an IP address or DNS name: {entry!r}")
                    continue
                sans.append(san)
    validity = _int(m, "validityDays", path, p, 365, 1, 3650)
    ca_validity = _int(m, "caValidityDays", path, p, 3650, 1, 36500)
    if ca_validity < validity:
        p.error(f"{path}.caValidityDays", f"{ca_validity} is shorter than validityDays {validity}")
    return Certificates(alg, tuple(sans), validity, ca_validity)


def _parse_packages(spec: Mapping[str, Any], p: _Problems) -> Packages:
    path = "spec.packages"
    m = _mapping(spec.get("packages"), path, p, _PACKAGES_KEYS)
    if m is None:
        return Packages()
    apt = _string(m, "aptRepository", path, p)
    if apt is not None and not re.match(r"^deb (\[[^\]]*\] )?(https?|file)://\S+ \S+( \S+)*$", apt):
        p.error(f"{path}.aptRepository", f"expected an apt sources line 'deb [options] URL SUITE [COMPONENTS]', "
                                         f"got {apt!r}")
    rpm = _string(m, "rpmRepository", path, p)
    if rpm is not None and not re.match(r"^(https?|file)://\S+/$", rpm):
        p.error(f"{path}.rpmRepository", f"expected a repository base URL ending in '/', got {rpm!r}")
    return Packages(apt, rpm)


def _parse_runtime(spec: Mapping[str, Any], p: _Problems) -> ContainerRuntime:
    path = "spec.containerRuntime"
    m = _mapping(spec.get("containerRuntime"), path, p, _RUNTIME_KEYS)
    if m is None:
        return ContainerRuntime()
    driver = _string(m, "cgroupDriver", path, p, default="systemd")
    if driver not in ("systemd", "cgroupfs"):
        p.error(f"{path}.cgroupDriver", f"must be one of systemd, cgroupfs, got {driver!r}")
        driver = "systemd"
    socket = _string(m, "criSocket", path, p, default=ContainerRuntime.cri_socket) or ContainerRuntime.cri_socket
    if socket.startswith("/"):
        socket = "unix://" + socket  # kubeadm prepends the scheme too
    if not socket.startswith("unix:///"):
        p.error(f"{path}.criSocket", f"must be a unix:// socket URL, got {socket!r}")
    restrict = m.get("restrictOOMScoreAdj", False)
    if not isinstance(restrict, bool):
        p.error(f"{path}.restrictOOMScoreAdj", f"must be true or false, not {_typename(restrict)}")
        restrict = False
    return ContainerRuntime("systemd" if driver == "systemd" else "cgroupfs", socket, restrict)


def _parse_components(spec: Mapping[str, Any], version: KubernetesVersion | None, p: _Problems) -> ControlPlaneExtras:
    """spec.apiServer / controllerManager / scheduler / etcd: extraArgs and extraVolumes, kubeadm v1beta4 shapes."""
    minor = version.minor if version is not None else DEFAULT_MINOR
    flexvolume = version.facts.kcm_flexvolume_dir if version is not None else False
    out: dict[str, ComponentExtras] = {}
    for key, (component, allowed) in _COMPONENT_SPECS.items():
        path = f"spec.{key}"
        m = _mapping(spec.get(key), path, p, allowed)
        if m is None:
            out[key] = ComponentExtras()
            continue
        args = parse_extra_args(m.get("extraArgs"), f"{path}.extraArgs", component, minor, p)
        volumes = parse_extra_volumes(m.get("extraVolumes"), f"{path}.extraVolumes",
                                      own_volumes(component, flexvolume), p)
        out[key] = ComponentExtras(args, volumes)
    return ControlPlaneExtras(out["apiServer"], out["controllerManager"], out["scheduler"], out["etcd"])


def _parse_ssh(raw: object, path: str, p: _Problems, base: SSHSettings) -> SSHSettings:
    m = _mapping(raw, path, p, _SSH_KEYS)
    if m is None:
        return base
    user = _string(m, "user", path, p, default=base.user) or base.user
    if not re.match(r"^[a-z_][a-z0-9_.-]*\$?$", user):
        p.error(f"{path}.user", f"not a valid user name: {user!r}")
    port = _int(m, "port", path, p, base.port, 1, 65535)
    if "keyPath" in m and m["keyPath"] is None:
        key_path = None  # explicit null: no key file of kubeboot's own; the --ssh-config IdentityFile or the agent
    else:
        key_path = _string(m, "keyPath", path, p, default=base.key_path)
    bastion = _string(m, "bastion", path, p, default=base.bastion)
    if bastion is not None and not re.match(r"^([a-z_][a-z0-9_.-]*@)?[A-Za-z0-9.:\[\]-]+(:\d+)?$", bastion):
        p.error(f"{path}.bastion", f"expected [USER@]HOST[:PORT], got {bastion!r}")
    sudo_env = _string(m, "sudoPasswordEnv", path, p, default=base.sudo_password_env)
    if sudo_env is not None and not _ENV_NAME.match(sudo_env):
        p.error(f"{path}.sudoPasswordEnv", f"must name an environment variable, got {sudo_env!r}")
    return SSHSettings(user, port, key_path, bastion, sudo_env)


def _parse_hosts(spec: Mapping[str, Any], default_ssh: SSHSettings, p: _Problems) -> list[Host] | None:
    path = "spec.hosts"
    raw = spec.get("hosts")
    if raw is None:
        p.error(path, "required field is missing")
        return None
    if not isinstance(raw, list):
        p.error(path, f"must be a list, not {_typename(raw)}")
        return None
    if not raw:
        p.error(path, "must list at least one host")
        return None
    hosts: list[Host] = []
    seen_names: dict[str, int] = {}
    seen_addresses: dict[IPAddress, int] = {}
    complete = True
    for i, entry in enumerate(raw):
        hp = f"{path}[{i}]"
        m = _mapping(entry, hp, p, _HOST_KEYS)
        if m is None:
            complete = False
            continue
        name = _string(m, "name", hp, p, required=True)
        if name is not None:
            if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 63:
                p.error(f"{hp}.name", f"must be a lower-case DNS-1123 name (a-z, 0-9, '-', '.'), got {name!r}")
                name = None
            elif name in seen_names:
                p.error(f"{hp}.name", f"duplicate host name {name!r} (also spec.hosts[{seen_names[name]}])")
            else:
                seen_names[name] = i
        address: IPAddress | None = None
        addr_text = _string(m, "address", hp, p, required=True)
        if addr_text is not None:
            try:
                address = ipaddress.ip_address(addr_text)
            except ValueError:
                p.error(f"{hp}.address", f"not an IP address: {addr_text!r}")
            else:
                if address.is_unspecified or address.is_multicast or address.is_loopback:
                    p.error(f"{hp}.address", f"{address} cannot be a node address (unspecified, loopback or multicast)")
                    address = None
                elif address in seen_addresses:
                    p.error(f"{hp}.address", f"duplicate address {address} (also spec.hosts[{seen_addresses[address]}])")
                else:
                    seen_addresses[address] = i
        roles = _parse_roles(m.get("roles"), f"{hp}.roles", p)
        ssh = _parse_ssh(m.get("ssh"), f"{hp}.ssh", p, default_ssh)
        labels = _parse_labels(m.get("labels"), f"{hp}.labels", p)
        if name is None or address is None or roles is None:
            complete = False
            continue
        hosts.append(Host(name, address, roles, ssh, labels))
    return hosts if complete else None


def _parse_roles(raw: object, path: str, p: _Problems) -> frozenset[Role] | None:
    names = [r.value for r in Role]
    if raw is None:
        p.error(path, f"required field is missing (one or more of {', '.join(names)})")
        return None
    if not isinstance(raw, list) or not raw:
        p.error(path, f"must be a non-empty list of {', '.join(names)}")
        return None
    roles: set[Role] = set()
    ok = True
    for j, r in enumerate(raw):
        try:
            role = Role(r)
        except ValueError:
            p.error(f"{path}[{j}]", f"unknown role {r!r} (known: {', '.join(names)})")
            ok = False
            continue
        if role in roles:
            p.error(f"{path}[{j}]", f"role {r!r} is listed twice")
        roles.add(role)
    return frozenset(roles) if ok else None


def _parse_labels(raw: object, path: str, p: _Problems) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        p.error(path, f"must be a mapping, not {_typename(raw)}")
        return ()
    out: list[tuple[str, str]] = []
    for k, v in raw.items():
        value = "" if v is None else str(v)
        if not isinstance(k, str) or not _LABEL_KEY.match(k):
            p.error(f"{path}.{k}", "not a valid Kubernetes label key")
        elif not _LABEL_VALUE.match(value):
            p.error(f"{path}.{k}", f"not a valid Kubernetes label value: {value!r}")
        else:
            out.append((k, value))
    return tuple(sorted(out))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_cluster(hosts: list[Host], endpoint: Endpoint, net: Networking, mode: LoadBalancerMode,
                   p: _Problems) -> None:
    """Cross-field rules: roles, load-balancer layout, address families and subnet capacity."""
    cps = [i for i, h in enumerate(hosts) if h.is_control_plane]
    lbs = [i for i, h in enumerate(hosts) if h.is_load_balancer]
    if not cps:
        p.error("spec.hosts", "no host has the control-plane role (at least one is required)")
    elif len(cps) % 2 == 0:
        p.warn("spec.hosts", f"{len(cps)} control planes: an even etcd member count tolerates no more failures "
                             f"than {len(cps) - 1}; use an odd number")
    if mode is LoadBalancerMode.EXTERNAL_NGINX and not lbs:
        p.error("spec.loadBalancer.mode", "external-nginx needs at least one host with the load-balancer role")
    if mode is not LoadBalancerMode.EXTERNAL_NGINX:
        for i in lbs:
            p.error(f"spec.hosts[{i}].roles", f"the load-balancer role needs spec.loadBalancer.mode external-nginx "
                                              f"(mode is {mode.value})")
    for i in lbs:
        h = hosts[i]
        if h.is_control_plane and endpoint.port == APISERVER_BIND_PORT:
            p.error(f"spec.hosts[{i}].roles", f"host {h.name!r} runs kube-apiserver on :{APISERVER_BIND_PORT}, so its "
                                              f"load balancer cannot listen there too; use a dedicated load-balancer "
                                              f"host or a different controlPlaneEndpoint port")
    if mode is LoadBalancerMode.EXTERNAL_NGINX and lbs and endpoint.is_ip:
        lb_ips = {str(hosts[i].address) for i in lbs}
        if endpoint.host not in lb_ips:
            p.warn("spec.controlPlaneEndpoint", f"{endpoint.host} is not the address of a load-balancer host "
                                                f"(fine for a VIP in front of them)")
    if mode is LoadBalancerMode.NODE_LOCAL and (endpoint.host not in ("localhost", "127.0.0.1")
                                                or endpoint.port != APISERVER_BIND_PORT):
        # Every node dials the endpoint on loopback: control planes reach their own API server there and
        # the other nodes their local nginx, so the one endpoint works everywhere.
        p.error("spec.controlPlaneEndpoint", f"node-local mode needs localhost:{APISERVER_BIND_PORT} or "
                                             f"127.0.0.1:{APISERVER_BIND_PORT}, got {endpoint.hostport()}")
    for i, h in enumerate(hosts):
        if h.address.version != net.pod_subnet.version:
            p.error(f"spec.hosts[{i}].address", f"IPv{h.address.version} but the cluster networks are "
                                                f"IPv{net.pod_subnet.version}")
        elif h.address in net.pod_subnet:
            p.error(f"spec.hosts[{i}].address", f"{h.address} is inside podSubnet {net.pod_subnet}")
        elif h.address in net.service_subnet:
            p.error(f"spec.hosts[{i}].address", f"{h.address} is inside serviceSubnet {net.service_subnet}")
        if not h.is_node and h.labels:
            p.error(f"spec.hosts[{i}].labels", "labels apply to Kubernetes nodes; this host has no "
                                               "control-plane or worker role")
    nodes = sum(1 for h in hosts if h.is_node)
    capacity = 2 ** (net.node_cidr_mask_size - net.pod_subnet.prefixlen)
    if nodes > capacity:
        p.error("spec.networking.podSubnet", f"{net.pod_subnet} holds {capacity} node range(s) of "
                                              f"/{net.node_cidr_mask_size}, but {nodes} nodes are listed")
