"""Shell: `kubeboot join` — kubeadm's join protocol on this node (or under --rootfs).

Order follows kubeadm: validate flags; discovery (JWS + CA pin); for a control plane, download and decrypt
the shared certificates; decide every file; only then write. Nothing is written when any check fails.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml
from kubernetes import client as k8s

from kubeboot import output, state
from kubeboot.config.load import single_control_plane
from kubeboot.config.model import APISERVER_BIND_PORT, ClusterConfig, Host
from kubeboot.errors import CertificateKeyError, ConfigError, JoinError, Problem
from kubeboot.etcdapi import EtcdClient, wait
from kubeboot.kube import client as kc
from kubeboot.kube import objects
from kubeboot.pki.adopt import node_material
from kubeboot.pki.bundle import ClusterPki, plan_pki
from kubeboot.pki.keys import KeyGen, generate_key
from kubeboot.pki.protocol import decrypt_shared_files, parse_certificate_key, parse_pin
from kubeboot.pki.tokens import BootstrapToken, parse_token
from kubeboot.plan.artifact import Artifact
from kubeboot.render import kubeconfig as kcfg
from kubeboot.render import manifests
from kubeboot.render.cluster import local_api_url, render_host
from kubeboot.render.node import (instance_config, kubeadm_flags_env, kubelet_config_file, kubelet_dropin,
                                  with_node_resolver)

BOOTSTRAP_USER = "tls-bootstrap-token-user"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class JoinRequest:
    endpoint: str
    token: str
    pins: tuple[str, ...]
    node_name: str
    rootfs: Path = Path("/")
    control_plane: bool = False
    certificate_key: str | None = None
    advertise_address: str | None = None
    node_ip: str | None = None
    unsafe_skip_ca_verification: bool = False
    discovery_timeout: float = 300.0
    discovery_interval: float = 5.0
    cri_socket: str = "unix:///var/run/containerd/containerd.sock"
    etcd_wait: float = 120.0
    # Where this process reaches the API server when that differs from what discovery found (kubeboot up in
    # node-local mode: the nodes use 127.0.0.1:6443, the workstation a control plane's address).
    api_server: str | None = None
    wait_timeout: float = 240.0


class NodeTarget(Protocol):
    """The node being joined: this machine (`kubeboot join` by hand, or under --rootfs) or a host reached over
    SSH (`kubeboot up`). The protocol is the same; only where files land and how the kubelet starts differ."""

    name: str

    def exists(self, path: str) -> bool: ...

    def read(self, path: str) -> bytes | None:
        """A file's content, None when it does not exist."""
        ...

    def write(self, artifacts: Sequence[Artifact]) -> list[str]:
        """Place the files (skipping identical ones); return the paths written."""
        ...

    def start_kubelet(self) -> str | None:
        """(Re)start the kubelet so it reads the new files; None when kubeboot does not manage it (--rootfs)."""
        ...

    def wait_file(self, path: str, timeout: float, what: str) -> None: ...

    def systemd_resolved(self) -> bool:
        """Whether the node runs systemd-resolved (its kubelet's resolvConf then follows kubeadm's rule)."""
        ...


class LocalNode:
    """This machine's root (or a --rootfs directory)."""

    def __init__(self, rootfs: Path, name: str) -> None:
        self.rootfs = rootfs
        self.name = name

    def exists(self, path: str) -> bool:
        return (self.rootfs / path.lstrip("/")).exists()

    def read(self, path: str) -> bytes | None:
        p = self.rootfs / path.lstrip("/")
        return p.read_bytes() if p.is_file() else None

    def write(self, artifacts: Sequence[Artifact]) -> list[str]:
        return state.write_files_under(self.rootfs, artifacts)

    def start_kubelet(self) -> str | None:
        if self.rootfs != Path("/"):
            return None
        from kubeboot.initnode import restart_kubelet

        return restart_kubelet()

    def systemd_resolved(self) -> bool:
        from kubeboot.initnode import systemd_resolved_active

        return systemd_resolved_active(self.rootfs)

    def wait_file(self, path: str, timeout: float, what: str) -> None:
        from kubeboot.initnode import wait_for_file

        wait_for_file(self.rootfs / path.lstrip("/"), timeout, what)


@dataclass
class JoinResult:
    written: list[str] = field(default_factory=list)
    etcd_member: str | None = None
    notes: list[str] = field(default_factory=list)


def _validate(req: JoinRequest) -> tuple[BootstrapToken, tuple[str, ...], bytes | None]:
    problems: list[Problem] = []
    token: BootstrapToken | None = None
    try:
        token = parse_token(req.token)
    except ValueError as exc:
        problems.append(Problem("--token", str(exc)))
    pins: list[str] = []
    for p in req.pins:
        try:
            pins.append(parse_pin(p))
        except ValueError as exc:
            problems.append(Problem("--discovery-token-ca-cert-hash", str(exc)))
    if not req.pins and not req.unsafe_skip_ca_verification:
        problems.append(Problem("--discovery-token-ca-cert-hash", "required (or, knowingly, "
                                "--discovery-token-unsafe-skip-ca-verification)"))
    if not _NAME.match(req.node_name):
        problems.append(Problem("--node-name", f"must be a lower-case DNS-1123 name, got {req.node_name!r}"))
    key: bytes | None = None
    if req.control_plane:
        if not req.certificate_key:
            problems.append(Problem("--certificate-key", "required with --control-plane (printed by "
                                    "`kubeboot init phase upload-certs --upload-certs`)"))
        else:
            try:
                key = parse_certificate_key(req.certificate_key)
            except ValueError as exc:
                problems.append(Problem("--certificate-key", str(exc)))
        if not req.advertise_address:
            problems.append(Problem("--apiserver-advertise-address", "required with --control-plane"))
    for flag, value in (("--apiserver-advertise-address", req.advertise_address), ("--node-ip", req.node_ip)):
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                problems.append(Problem(flag, f"not an IP address: {value!r}"))
    if problems or token is None:
        raise ConfigError(problems, source="join flags")
    return token, tuple(pins), key


def _cluster_configuration(api: k8s.ApiClient) -> dict[str, Any]:
    cm = k8s.CoreV1Api(api).read_namespaced_config_map("kubeadm-config", "kube-system")
    doc: dict[str, Any] = yaml.safe_load((cm.data or {})["ClusterConfiguration"])
    return doc


def _kubelet_config(api: k8s.ApiClient) -> dict[str, Any]:
    cm = k8s.CoreV1Api(api).read_namespaced_config_map("kubelet-config", "kube-system")
    doc: dict[str, Any] = yaml.safe_load((cm.data or {})["kubelet"])
    return doc


def _days(duration: object) -> int | None:
    """Whole days of a Go duration from kubeadm-config ("1440h0m0s", "8760h"); None when absent or unparseable."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str(duration or ""))
    if not duration or m is None or not any(m.groups()):
        return None
    hours = int(m.group(1) or 0) + int(m.group(2) or 0) / 60 + int(m.group(3) or 0) / 3600
    return max(1, int(hours // 24))


def _inventory_for_this_node(cc: dict[str, Any], req: JoinRequest) -> ClusterConfig:
    """The cluster as kubeadm-config describes it, with this node as its only host (for the PKI/render core)."""
    net = cc.get("networking") or {}
    try:
        return single_control_plane(
            name=req.node_name, address=req.advertise_address,
            endpoint=cc.get("controlPlaneEndpoint") or f"{req.advertise_address}:{APISERVER_BIND_PORT}",
            version=str(cc.get("kubernetesVersion", "")).lstrip("v"),
            networking={"podSubnet": net.get("podSubnet"), "serviceSubnet": net.get("serviceSubnet"),
                        "dnsDomain": net.get("dnsDomain")},
            key_algorithm=cc.get("encryptionAlgorithm") or "RSA-2048",
            cert_sans=list((cc.get("apiServer") or {}).get("certSANs") or []),
            image_repository=cc.get("imageRepository"), cluster_name=cc.get("clusterName"),
            components=objects.components_from_cluster_configuration(cc),
            # kubeadm join issues this node's certificates for the cluster's certificateValidityPeriod
            validity_days=_days(cc.get("certificateValidityPeriod")),
            ca_validity_days=_days(cc.get("caCertificateValidityPeriod")), source="kubeadm-config")
    except ConfigError as exc:
        raise JoinError("the cluster's kubeadm-config cannot be used for this node:\n  " +
                        "\n  ".join(str(p) for p in exc.problems)) from None


def _kubelet_files(req: JoinRequest, kubelet_cfg: dict[str, Any], systemd_resolved: bool) -> list[Artifact]:
    doc = with_node_resolver(dict(kubelet_cfg), systemd_resolved)  # kubeadm's per-node resolvConf rule
    doc["containerRuntimeEndpoint"] = req.cri_socket  # instance-config.yaml merged in, as kubeadm does
    args = {"hostname-override": req.node_name}
    ip = req.node_ip or req.advertise_address
    if ip:
        args["node-ip"] = ip
    # the drop-in too: a kubeboot node has no kubeadm package to ship it, and without it the packaged unit starts
    # the kubelet with no flags at all (no --config, no bootstrap kubeconfig)
    return [kubelet_config_file(doc), instance_config(req.cri_socket), kubeadm_flags_env(args), kubelet_dropin()]


def join(req: JoinRequest, rep: output.Reporter, keygen: KeyGen = generate_key,
         now: datetime | None = None, node: NodeTarget | None = None,
         admin: k8s.ApiClient | None = None) -> JoinResult:
    """Join one node. `node` defaults to this machine (req.rootfs); `admin` is the admin client a control-plane
    join uses for etcd discovery and mark-control-plane (default: the admin.conf it writes)."""
    token, pins, cert_key = _validate(req)
    node = node or LocalNode(req.rootfs, req.node_name)
    rep.phase_start("discovery")
    found = kc.discover(req.endpoint, token, pins, req.unsafe_skip_ca_verification, req.discovery_timeout,
                        req.discovery_interval)
    if req.unsafe_skip_ca_verification:
        rep.warn("discovery", None, "the cluster CA was NOT verified (--discovery-token-unsafe-skip-ca-verification):"
                                    " anyone who knows the token could have impersonated the cluster")
    rep.phase_done("discovery", f"cluster CA verified, API server {found.server}")
    api = kc.token_api(req.api_server or found.server, token, found.ca_pem)
    cc = _cluster_configuration(api)
    cluster_name = str(cc.get("clusterName") or "kubernetes")
    result = JoinResult()
    if not req.control_plane:
        _check_node_not_active(api, req.node_name)
        files = [Artifact("/etc/kubernetes/pki/ca.crt", found.ca_pem, 0o644),
                 Artifact("/etc/kubernetes/bootstrap-kubelet.conf",
                          kcfg.token_kubeconfig(cluster_name, found.server, found.ca_pem, BOOTSTRAP_USER, str(token)),
                          0o600, secret=True)]
        if node.exists("/etc/kubernetes/pki/ca.crt"):
            files = files[1:]  # kubeadm keeps an existing caCertPath
        files += _kubelet_files(req, _kubelet_config(api), node.systemd_resolved())
        result.written += node.write(files)
        rep.info("kubelet-start", req.node_name, f"wrote {len(result.written)} file(s)")
        started = node.start_kubelet()
        if started is not None:
            rep.info("kubelet-start", req.node_name, started)
            rep.phase_start("kubelet-start")
            node.wait_file("/etc/kubernetes/kubelet.conf", req.wait_timeout, "TLS bootstrap")
            rep.phase_done("kubelet-start", "the kubelet performed the TLS bootstrap (kubelet.conf written)")
        else:
            rep.info("kubelet-start", req.node_name, f"--rootfs {req.rootfs}: start the kubelet there; it requests "
                                                     f"its client certificate with the bootstrap token")
        return result
    return _join_control_plane(req, rep, api, cc, cert_key, found.ca_pem, keygen, now, result, node, admin)


def _check_node_not_active(api: k8s.ApiClient, name: str) -> None:
    try:
        node = k8s.CoreV1Api(api).read_node(name)
    except Exception:  # noqa: BLE001 - absent (404) is the normal case
        return
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready" and cond.status == "True":
            raise JoinError(f"a Node named {name!r} already exists and is Ready",
                            hint="choose another --node-name, or remove the old node first")


def _join_control_plane(req: JoinRequest, rep: output.Reporter, api: k8s.ApiClient, cc: dict[str, Any],
                        cert_key: bytes | None, ca_pem: bytes, keygen: KeyGen, now: datetime | None,
                        result: JoinResult, node: NodeTarget, admin: k8s.ApiClient | None) -> JoinResult:
    assert cert_key is not None and req.advertise_address is not None
    rep.phase_start("download-certs")
    try:
        shared = decrypt_shared_files(cert_key, kc.fetch_kubeadm_certs(api))
    except ValueError:
        raise CertificateKeyError(
            "cannot decrypt the uploaded certificates: wrong key or the certificates expired",
            hint="run `kubeboot init phase upload-certs --upload-certs` on a control plane and use the new "
                 "certificate key") from None
    if shared.get("ca.crt") != ca_pem:
        raise JoinError("the downloaded ca.crt is not the CA discovery verified")
    rep.phase_done("download-certs", f"{len(shared)} shared file(s) decrypted")
    cfg = _inventory_for_this_node(cc, req)
    host = cfg.first_control_plane
    stored = {f"pki/{rel}": data for rel, data in shared.items()}
    if node.exists("/etc/kubernetes/pki/apiserver.crt"):
        # a join that stopped halfway left this node's own certificates: the valid ones are kept (kubeadm's "Using
        # the existing certificate and key"), so resuming rewrites nothing that is still right
        stored.update(node_material(node.read, cfg, host, cas=False))
    pki, _changes = plan_pki(cfg, stored, now or datetime.now(timezone.utc), keygen)
    kubelet = _kubelet_files(req, _kubelet_config(api), node.systemd_resolved())  # the cluster's kubelet-config, as kubeadm join uses
    # what kubeadm join writes: /etc/kubernetes (PKI, kubeconfigs, manifests) and the kubelet's files — not the
    # runtime's or the kernel's (containerd, sysctl, modules: the node's own, set up before the join)
    files = [a for a in render_host(cfg, pki, BootstrapToken("000000", "0" * 16, None), host)
             if a.path.startswith("/etc/kubernetes/") and a.path != "/etc/kubernetes/super-admin.conf"
             and not a.path.endswith("/etcd.yaml")] + kubelet
    # every file except the etcd manifest: its --initial-cluster comes from etcd's answer to MemberAdd
    # kubeadm's order: control-plane-prepare (everything but etcd's manifest), kubelet-start, then etcd's
    # learner add: the learner can only catch up (and be promoted) once the kubelet runs its static pod
    result.written += node.write([a for a in files if a.path.startswith("/etc/kubernetes/")])
    rep.info("control-plane-prepare", host.name, f"wrote {len(result.written)} file(s)")
    result.written += node.write([a for a in files if not a.path.startswith("/etc/kubernetes/")])
    started = node.start_kubelet()
    if started is not None:
        rep.info("kubelet-start", host.name, started)
    if admin is None:
        admin = kc.from_kubeconfig(req.rootfs / "etc/kubernetes/admin.conf")
    member = _etcd_join(req, rep, cfg, host, pki, result, node, admin)
    result.etcd_member = member
    if started is not None:
        from kubeboot.apiphases import mark_control_plane
        from kubeboot.initnode import wait_live

        rep.phase_start("wait-control-plane")
        wait_live(local_api_url(host), req.wait_timeout)
        rep.phase_done("wait-control-plane", f"API server live at {local_api_url(host)}")
        rep.phase_start("mark-control-plane")
        rep.phase_done("mark-control-plane", mark_control_plane(admin, host.name))
    else:
        rep.info("wait-control-plane", host.name, f"--rootfs {req.rootfs}: the kubelet runs the new API server; "
                                                  f"not waiting for it")
    return result


def _etcd_endpoints(admin: k8s.ApiClient) -> list[str]:
    """kubeadm reads the etcd pods' advertise-client-urls annotation; without mirror pods (no kubelet yet)
    the API servers' addresses in the `kubernetes` Endpoints are the stacked etcd members' hosts."""
    core = k8s.CoreV1Api(admin)
    pods = core.list_namespaced_pod("kube-system", label_selector="component=etcd,tier=control-plane")
    urls: list[str] = []
    for p in pods.items:
        ann = (p.metadata.annotations if p.metadata else None) or {}
        url = ann.get("kubeadm.kubernetes.io/etcd.advertise-client-urls")
        if url:
            urls.append(str(url))
    if urls:
        return urls
    eps = core.read_namespaced_endpoints("kubernetes", "default")
    out = []
    for subset in eps.subsets or []:
        for addr in subset.addresses or []:
            ip = addr.ip
            out.append(f"https://[{ip}]:2379" if ":" in ip else f"https://{ip}:2379")
    if not out:
        raise JoinError("no etcd member found (no etcd pods and no API server endpoints)")
    return out


def _etcd_join(req: JoinRequest, rep: output.Reporter, cfg: ClusterConfig, host: Host, pki: ClusterPki,
               result: JoinResult, node: NodeTarget, admin: k8s.ApiClient) -> str:
    rep.phase_start("etcd-join")
    endpoints = kc.retry(lambda: _etcd_endpoints(admin), timeout=60)
    hc = pki.leaves[(host.name, "etcd-healthcheck-client")]
    etcd = EtcdClient(endpoints, pki.cas["etcd-ca"].cert_pem(), hc.cert_pem(), hc.key_pem())
    try:
        peer = manifests.etcd_peer_url(host)
        existing = {u: m for m in etcd.members() for u in m.peer_urls}
        if peer in existing:  # a re-run after a partial join: reuse the member (kubeadm does the same)
            me, members = existing[peer], etcd.members()
            state_now = "a learner" if me.learner else "a voting member"
            rep.info("etcd-join", host.name, f"already {state_now} ({me.id:x}) from an earlier join: reused")
        else:
            me, members = wait("etcd member add", lambda: etcd.add_learner(peer))
            rep.info("etcd-join", host.name, f"added as learner {me.id:x}")
        parts = []
        for m in members:
            name = host.name if m.id == me.id else (m.name or f"{m.id:x}")
            parts.append(f"{name}={m.peer_urls[0]}")
        pod = manifests.etcd(cfg, host, initial_cluster=",".join(parts))
        result.written += node.write([Artifact("/etc/kubernetes/manifests/etcd.yaml", manifests.dump(pod), 0o600)])
        if me.learner or not any(m.id == me.id and not m.learner for m in etcd.members()):
            # a learner is promoted once it has caught up; a voting member is left alone
            rep.info("etcd-join", host.name, f"waiting for learner {me.id:x} to catch up")
            wait("etcd member promote", lambda: etcd.promote(me.id), timeout=req.etcd_wait)
        rep.phase_done("etcd-join", f"member {host.name} ({me.id:x}) is a voting member")
        return f"{me.id:x}"
    finally:
        etcd.close()


__all__ = ["JoinRequest", "JoinResult", "join"]
