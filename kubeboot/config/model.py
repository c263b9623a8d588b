"""Pure core: the validated cluster configuration (frozen dataclasses, no I/O).

Built only by config.load.parse_inventory, which validates the raw YAML first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from kubeboot.config.versions import KubernetesVersion

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

API_VERSION = "kubeboot.io/v1alpha1"
KIND = "Cluster"
APISERVER_BIND_PORT = 6443


class Role(str, Enum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    LOAD_BALANCER = "load-balancer"


class LoadBalancerMode(str, Enum):
    EXTERNAL_NGINX = "external-nginx"  # dedicated LB host(s) proxy ENDPOINT:PORT to every API server
    NODE_LOCAL = "node-local"  # nginx on 127.0.0.1:6443 on each non-control-plane node
    NONE = "none"  # the endpoint is provided by the user (cloud LB, DNS, VIP)


class CniPlugin(str, Enum):
    FLANNEL = "flannel"  # the default: runs for real in kubeboot's lab
    CALICO = "calico"  # rendered from the manifest shipped in the package
    NONE = "none"  # the user installs a network (spec.cni.manifests or by hand); nodes stay NotReady until then


@dataclass(frozen=True)
class Cni:
    plugin: CniPlugin = CniPlugin.FLANNEL
    manifests: tuple[str, ...] = ()  # the user's own manifests (files), applied after the plugin, in order


class KeyAlgorithm(str, Enum):
    RSA_2048 = "RSA-2048"
    RSA_3072 = "RSA-3072"
    RSA_4096 = "RSA-4096"
    ECDSA_P256 = "ECDSA-P256"
    ECDSA_P384 = "ECDSA-P384"


CgroupDriver = Literal["systemd", "cgroupfs"]


@dataclass(frozen=True)
class SSHSettings:
    user: str = "root"
    port: int = 22
    key_path: str | None = "~/.ssh/id_ed25519"
    bastion: str | None = None  # "user@host:port" of a jump host
    sudo_password_env: str | None = None  # name of an env var holding the sudo password, never the password


@dataclass(frozen=True)
class Host:
    name: str  # also the Kubernetes node name (lower-case DNS-1123 subdomain)
    address: IPAddress  # advertise address / kubelet node IP / SSH target unless ssh.address is set
    roles: frozenset[Role]
    ssh: SSHSettings
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def is_control_plane(self) -> bool:
        return Role.CONTROL_PLANE in self.roles

    @property
    def is_worker(self) -> bool:
        return Role.WORKER in self.roles

    @property
    def is_load_balancer(self) -> bool:
        return Role.LOAD_BALANCER in self.roles

    @property
    def is_node(self) -> bool:
        """Runs a kubelet (control planes and workers; a pure LB host does not)."""
        return self.is_control_plane or self.is_worker


@dataclass(frozen=True)
class Endpoint:
    host: str  # DNS name or IP literal (no brackets)
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def hostport(self) -> str:
        """host:port with IPv6 literals bracketed, as used in URLs and join commands."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self) -> str:
        return f"https://{self.hostport()}"


@dataclass(frozen=True)
class Networking:
    pod_subnet: IPNetwork
    service_subnet: IPNetwork
    dns_domain: str
    node_cidr_mask_size: int  # kube-controller-manager default: 24 (IPv4), 64 (IPv6)


@dataclass(frozen=True)
class Certificates:
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA_2048
    api_server_cert_sans: tuple[str, ...] = ()
    validity_days: int = 365  # kubeadm CertificateValidityPeriod 8760h
    ca_validity_days: int = 3650  # kubeadm CACertificateValidityPeriod 87600h


@dataclass(frozen=True)
class ContainerRuntime:
    cgroup_driver: CgroupDriver = "systemd"  # also the kubelet's cgroupDriver: the two must always agree
    cri_socket: str = "unix:///var/run/containerd/containerd.sock"
    # containerd CRI restrict_oom_score_adj: needed where the runtime lacks CAP_SYS_RESOURCE (rootless, user
    # namespaces, some nested containers), or runc fails every sandbox trying to lower oom_score_adj.
    restrict_oom_score_adj: bool = False


@dataclass(frozen=True)
class Arg:
    """One kubeadm v1beta4 `extraArgs` entry: rendered `--name=value`; a name may repeat."""

    name: str
    value: str


HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice")


@dataclass(frozen=True)
class HostPathMount:
    """One kubeadm v1beta4 `extraVolumes` entry: a hostPath volume and its mount in the component's container."""

    name: str
    host_path: str
    mount_path: str
    read_only: bool = False
    path_type: str = ""  # a HOST_PATH_TYPES value; "" = no check (kubeadm writes `type: ""` then)


@dataclass(frozen=True)
class ComponentExtras:
    """User additions to one static-pod component (kubeadm ClusterConfiguration apiServer/controllerManager/
    scheduler, etcd.local). etcd has no extraVolumes in kubeadm v1beta4, so it never has any here."""

    extra_args: tuple[Arg, ...] = ()
    extra_volumes: tuple[HostPathMount, ...] = ()


@dataclass(frozen=True)
class ControlPlaneExtras:
    api_server: ComponentExtras = ComponentExtras()
    controller_manager: ComponentExtras = ComponentExtras()
    scheduler: ComponentExtras = ComponentExtras()
    etcd: ComponentExtras = ComponentExtras()


@dataclass(frozen=True)
class Packages:
    """Where kubelet/kubectl come from. Empty: pkgs.k8s.io for the target minor. A mirror or a local
    repository is given as a full apt sources line / an rpm baseurl."""

    apt_repository: str | None = None
    rpm_repository: str | None = None


@dataclass(frozen=True)
class ClusterConfig:
    name: str  # metadata.name: names the state directory
    version: KubernetesVersion
    control_plane_endpoint: Endpoint
    networking: Networking
    load_balancer_mode: LoadBalancerMode
    certificates: Certificates
    runtime: ContainerRuntime
    hosts: tuple[Host, ...]
    image_repository: str = "registry.k8s.io"
    packages: Packages = Packages()
    cluster_name: str = "kubernetes"  # kubeadm ClusterConfiguration.clusterName (kubeconfig cluster name)
    image_archive_dir: str | None = None  # image archives to import into containerd (relative to the inventory)
    components: ControlPlaneExtras = ControlPlaneExtras()
    # spec.kubelet.config: validated KubeletConfiguration v1beta1 fields deep-merged over kubeboot's own (what a
    # KubeletConfiguration document in `kubeadm init --config` does). Not hashed: a plain nested mapping.
    kubelet_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # spec.kubeProxy.config: KubeProxyConfiguration v1alpha1 fields deep-merged over kubeadm's defaults.
    kube_proxy_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    cni: Cni = Cni()
    # spec.kubectl.users: non-root users on the control planes who get the admin kubeconfig (~/.kube/config).
    kubectl_users: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def control_planes(self) -> tuple[Host, ...]:
        """Control planes in inventory order; the first is the init node."""
        return tuple(h for h in self.hosts if h.is_control_plane)

    @property
    def first_control_plane(self) -> Host:
        return self.control_planes[0]

    @property
    def load_balancers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_load_balancer)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def apiserver_service_ip(self) -> IPAddress:
        """First usable address of the service subnet (kubeadm GetAPIServerVirtualIP)."""
        return self.networking.service_subnet[1]

    @property
    def dns_service_ip(self) -> IPAddress:
        """Tenth address of the service subnet (kubeadm GetDNSIP)."""
        return self.networking.service_subnet[10]
