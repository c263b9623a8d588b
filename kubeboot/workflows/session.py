"""Shell: what a cluster-level step of `kubeboot up` works with — the inventory, the rendered state, the hosts'
facts and connections (through the runner), the API server as the workstation reaches it, and one place that
counts changes and says "would" in a plan and "did" when applying."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client as k8s

from kubeboot.config.model import ClusterConfig, Host, LoadBalancerMode
from kubeboot.etcdapi import EtcdClient
from kubeboot.initnode import api_health
from kubeboot.kube import client as kc
from kubeboot.offline import RenderResult
from kubeboot.phases.base import PhaseContext
from kubeboot.phases.lb import lb_actions
from kubeboot.plan.actions import Action
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import FileState, HostFacts
from kubeboot.render.cluster import KUBELET_CLIENT_PEM, local_api_url
from kubeboot.render.lb import nginx_conf
from kubeboot.render.manifests import etcd_client_url
from kubeboot.render.node import PACKAGE_DROPINS
from kubeboot.runner import RunResult, Runner

KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
SUPER_ADMIN_CONF = "/etc/kubernetes/super-admin.conf"
# Files whose presence decides what the workflow does on a host, gathered with the facts.
# (The static pods' manifests also tell preflight that their ports are held by kubeboot's own components.)
PROBED = (KUBELET_CONF, APISERVER_MANIFEST, ADMIN_CONF, "/etc/kubernetes/manifests/etcd.yaml",
          "/etc/kubernetes/manifests/kube-controller-manager.yaml", "/etc/kubernetes/manifests/kube-scheduler.yaml",
          "/etc/kubernetes/bootstrap-kubelet.conf", "/etc/kubernetes/pki/ca.crt", "/root/.kube/config",
          "/etc/bash_completion.d/kubectl", KUBELET_CLIENT_PEM, *PACKAGE_DROPINS)


def ready(url: str, timeout: float = 3.0) -> bool:
    """The API server at url answers /readyz with 200."""
    return api_health(url, "readyz", timeout)


def has_joined(host: Host, files: Mapping[str, FileState]) -> bool:
    """A node has joined once its kubelet holds a client kubeconfig; a control plane also runs an API
    server manifest. (kubeadm's own preflight refuses to join a node that has either.)"""
    return KUBELET_CONF in files and (not host.is_control_plane or APISERVER_MANIFEST in files)


def ready_control_planes(cfg: ClusterConfig, candidates: Sequence[Host]) -> list[str]:
    """Names of the candidates whose API server is ready, probed in parallel, in inventory order."""
    if not candidates:
        return []
    with ThreadPoolExecutor(max_workers=len(candidates)) as pool:
        ok = list(pool.map(lambda h: ready(local_api_url(h)), candidates))
    return [h.name for h, good in zip(candidates, ok) if good]


def lb_backends(cfg: ClusterConfig, facts: Mapping[str, HostFacts]) -> tuple[str, ...]:
    """The control planes a load balancer may send traffic to: joined ones whose API server is ready now;
    before anything has joined, the first control plane alone (init starts it next)."""
    joined = [h for h in cfg.control_planes if h.name in facts and has_joined(h, facts[h.name].files)]
    return tuple(ready_control_planes(cfg, joined)) or (cfg.first_control_plane.name,)


@dataclass
class Session:
    runner: Runner
    rendered: RenderResult
    path: str  # the phase path being run, for progress lines
    dry_run: bool
    result: RunResult
    planned: list[str] = field(default_factory=list)
    inventory: Path = Path("inventory.yaml")
    admin_retry_forbidden: float = 0.0  # seconds a 403 is retried (kc.retry_forbidden); 0: never
    _admin: k8s.ApiClient | None = None

    @property
    def cfg(self) -> ClusterConfig:
        return self.runner.cfg

    # --- what the hosts say -----------------------------------------------------------------------------

    def has(self, host: Host, path: str) -> bool:
        return path in self.runner.facts[host.name].files

    def joined(self, host: Host) -> bool:
        return has_joined(host, self.runner.facts[host.name].files)

    # --- the API server, as this workstation reaches it -------------------------------------------------

    def api_url(self) -> str:
        """The endpoint; in node-local mode (the endpoint is each node's loopback) a ready control plane."""
        cfg = self.cfg
        if cfg.load_balancer_mode is not LoadBalancerMode.NODE_LOCAL:
            return cfg.control_plane_endpoint.url()
        for h in cfg.control_planes:
            if self.joined(h) and ready(local_api_url(h)):
                return local_api_url(h)
        return local_api_url(cfg.first_control_plane)

    def first_cp_file(self, path: str) -> Artifact:
        name = self.cfg.first_control_plane.name
        return next(a for a in self.rendered.hosts[name] if a.path == path)

    def admin(self) -> k8s.ApiClient:
        """The first control plane's admin.conf (rendered from the state directory) aimed at api_url()."""
        if self._admin is None:
            self._admin = kc.from_kubeconfig_data(self.first_cp_file(ADMIN_CONF).content, self.api_url())
            if self.admin_retry_forbidden:
                self._admin = kc.retry_forbidden(self._admin, self.admin_retry_forbidden)
        return self._admin

    def etcd(self, via: Sequence[Host]) -> EtcdClient:
        """An etcd client on these members' client URLs, with the healthcheck-client identity from the state
        directory (the first control plane's). The caller closes it."""
        pki = self.rendered.pki
        hc = pki.leaves[(self.cfg.first_control_plane.name, "etcd-healthcheck-client")]
        return EtcdClient([etcd_client_url(h) for h in via], pki.cas["etcd-ca"].cert_pem(), hc.cert_pem(),
                          hc.key_pem())

    def super_admin(self) -> k8s.ApiClient:
        return kc.from_kubeconfig_data(self.first_cp_file(SUPER_ADMIN_CONF).content, self.api_url())

    # --- reporting and applying -------------------------------------------------------------------------

    def change(self, host: str | None, what: str) -> None:
        """One change: planned (dry run) or done."""
        self.planned.append(f"{host}: {what}" if host else what)
        self.result.planned.setdefault(self.path, []).append(f"{host}: {what}" if host else what)
        self.result.changes += 1
        self.runner.rep.info(self.path, host, f"would {what}" if self.dry_run else what)

    def info(self, host: str | None, message: str) -> None:
        self.runner.rep.info(self.path, host, message)

    def apply(self, host: Host, actions: Sequence[Action]) -> None:
        """Host actions a step decided on: printed in a plan, executed otherwise."""
        if not actions:
            return
        for act in actions:
            self.planned.append(f"{host.name}: {act.describe()}")
            self.result.planned.setdefault(self.path, []).append(f"{host.name}: {act.describe()}")
        self.result.changes += len(actions)
        if self.dry_run:
            for act in actions:
                self.runner.rep.info(self.path, host.name, f"would {act.describe()}")
            return
        self.runner.apply_actions(host, actions, self.path)

    def point_load_balancers(self, backends: Sequence[str]) -> None:
        """Render nginx with these backends on every host of this run that runs one (LB hosts; in node-local
        mode every non-control-plane node) and reload it where the list changed."""
        for h in self.runner.hosts:
            art = nginx_conf(self.cfg, h, backends)
            if art is None:
                continue
            acts = lb_actions(PhaseContext(self.cfg, {h.name: (art,)}, self.runner.facts, self.runner.options), h)
            if acts:
                self.info(h.name, f"backends now {', '.join(backends)}")
            self.apply(h, acts)

    def start(self) -> None:
        self.runner.rep.phase_start(self.path)

    def done(self, summary: str | None = None) -> None:
        n = len(self.planned)
        text = summary or (f"{n} change(s) planned" if self.dry_run and n else
                           f"{n} change(s)" if n else "no changes")
        self.runner.rep.phase_done(self.path, text)
