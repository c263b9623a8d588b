"""Shell: the control-plane steps of `kubeboot up` — what `kubeadm init` does once the first API server runs
(wait, kubeadm-config and kubelet-config, bootstrap token with its RBAC and cluster-info, mark-control-plane,
the CoreDNS and kube-proxy addons), then further control planes joined one at a time with kubeadm's protocol,
each added to the load balancer only once its API server is ready."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client as k8s

from kubeboot.apiphases import control_plane_patch, mark_control_plane, upload_shared_files
from kubeboot.config.model import Host, LoadBalancerMode
from kubeboot.errors import KubebootError, WaitTimeoutError
from kubeboot.initnode import poll, wait_live
from kubeboot.join import JoinRequest, join
from kubeboot.kube import client as kc
from kubeboot.kube import objects
from kubeboot.pki.protocol import KUBEADM_CERTS_FILES, ca_cert_hash
from kubeboot.plan.actions import RunCommand, file_actions
from kubeboot.render.cluster import KUBELET_CLIENT_PEM, kubelet_kubeconfig, local_api_url
from kubeboot.render.node import kubelet_config
from kubeboot.workflows.nodes import RemoteNode
from kubeboot.workflows.session import Session, lb_backends, ready

Obj = dict[str, Any]


# --- applying API objects, planned or for real ------------------------------------------------------------

def api_reachable(s: Session) -> bool:
    return ready(s.api_url())


def apply_objects(s: Session, objs: Sequence[Mapping[str, Any]], server_side: bool = False) -> None:
    """Create or update each object; report only those that change. In a plan against a cluster whose API is
    not up yet (a fresh cluster), every object is a planned creation."""
    up = not s.dry_run or api_reachable(s)
    api = kc.Objects(s.admin()) if up else None
    for obj in objs:
        if server_side and "resourceVersion" in obj["metadata"]:  # an apply patch must not pin a version
            obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
        name = f"{obj['kind'].lower()}/{obj['metadata']['name']}"
        ns = obj["metadata"].get("namespace")
        where = f"{ns}/{name}" if ns else name
        if api is None:
            s.change(None, f"create {where}")
            continue
        if server_side:
            outcome = _retry_new_kinds(_server_apply(api, obj, s.dry_run))
        elif s.dry_run:
            outcome = {"create": "created", "update": "updated"}.get(api.would_apply(obj), "unchanged")
        else:
            outcome = api.apply(obj)
        if outcome != "unchanged":
            s.change(None, f"{_verb(outcome)} {where}")


def _server_apply(api: kc.Objects, obj: Mapping[str, Any], dry_run: bool) -> Callable[[], str]:
    return lambda: api.server_apply(obj, dry_run=dry_run)


def _verb(outcome: str) -> str:
    return {"created": "create", "updated": "update", "configured": "configure"}.get(outcome, outcome)


def _retry_new_kinds(fn: Callable[[], str], timeout: float = 60.0) -> str:
    """A custom resource right after its CRD: the kind is unknown until the CRD is established."""
    return kc.retry(fn, timeout=timeout, interval=1.0,
                    retry_on=lambda e: type(e).__name__ in ("ResourceNotFoundError", "NotFoundError")
                    or getattr(e, "status", None) == 404)


# --- init: the first control plane ----------------------------------------------------------------------

def wait_control_plane(s: Session) -> None:
    s.start()
    url = s.api_url()
    if s.dry_run:
        if not ready(url):
            s.change(None, f"wait for the API server at {url}, then make admin.conf a cluster admin")
        s.done()
        return
    wait_live(url, s.runner.options.wait_timeout)
    outcome = kc.ensure_admin_binding(s.admin(), s.super_admin())
    if outcome != "unchanged":
        s.change(None, f"{outcome} clusterrolebinding/kubeadm:cluster-admins (admin.conf's group)")
    kc.wait_cluster_admin(s.admin())
    s.done(f"API server ready at {url}" + (f"; {len(s.planned)} change(s)" if s.planned else ""))


def kubelet_finalize(s: Session) -> None:
    """kubeadm init's kubelet-finalize: once the first control plane's kubelet keeps its client certificate in
    kubelet-client-current.pem (rotation on), kubelet.conf points at that file instead of embedding the
    certificate `init` wrote (which would never be renewed), and the kubelet restarts to read it."""
    s.start()
    host = s.cfg.first_control_plane
    if KUBELET_CLIENT_PEM not in s.runner.facts[host.name].files:  # a kubelet started in this run: look again
        s.runner.gather([host])
    facts = s.runner.facts[host.name]
    if KUBELET_CLIENT_PEM in facts.files:
        writes = file_actions((kubelet_kubeconfig(s.cfg, s.rendered.pki, host, rotated=True),), facts)
        if writes:
            s.apply(host, [*writes, RunCommand("systemctl restart kubelet", "kubelet.conf now uses the kubelet's "
                                                                            "rotated client certificate")])
    s.done()


def upload_config(s: Session) -> None:
    s.start()
    apply_objects(s, [objects.kubeadm_config(s.cfg), objects.kubelet_config_map(kubelet_config(s.cfg))])
    s.done()


def bootstrap_token(s: Session) -> None:
    """The state directory's bootstrap token (what workers' bootstrap-kubelet.conf carries), node-bootstrap
    RBAC, and cluster-info (created only when absent: joined control planes' JWS signatures live in it)."""
    s.start()
    cfg, ca = s.cfg, s.rendered.pki.cas["ca"].cert_pem()
    objs: list[Mapping[str, Any]] = [objects.token_secret(s.rendered.token,
                                                          description=objects.INIT_TOKEN_DESCRIPTION)]
    objs += objects.bootstrap_rbac(cfg)
    apply_objects(s, objs)
    info = objects.cluster_info(cfg.control_plane_endpoint.url(), ca)
    if s.dry_run and not api_reachable(s):
        s.change(None, "create kube-public/configmap/cluster-info")
    elif kc.Objects(s.admin()).get(info) is None:
        if not s.dry_run:
            kc.Objects(s.admin()).apply(info)
        s.change(None, "create kube-public/configmap/cluster-info")
    s.done()


def _marked(api: k8s.ApiClient, name: str) -> bool:
    try:
        node = k8s.CoreV1Api(api).read_node(name)
    except Exception:  # noqa: BLE001 - not registered yet
        return False
    return not control_plane_patch(node)


def mark_first_control_plane(s: Session) -> None:
    s.start()
    name = s.cfg.first_control_plane.name
    if s.dry_run:
        if not api_reachable(s) or not _marked(s.admin(), name):
            s.change(name, "label and taint the Node as a control plane")
    elif not _marked(s.admin(), name):
        s.change(name, mark_control_plane(s.admin(), name))
    s.done()


def coredns(s: Session) -> None:
    from kubeboot.render.addons import coredns_objects

    s.start()
    apply_objects(s, coredns_objects(s.cfg), server_side=True)
    s.done()


def kube_proxy(s: Session) -> None:
    from kubeboot.render.addons import kube_proxy_objects

    s.start()
    apply_objects(s, kube_proxy_objects(s.cfg, s.cfg.control_plane_endpoint.url()), server_side=True)
    s.done()


# --- joins -----------------------------------------------------------------------------------------------

def discovery_endpoint(s: Session) -> str:
    """Where joins read cluster-info: the endpoint, or (node-local: the endpoint is each node's loopback) a
    ready control plane."""
    if s.cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL:
        return s.api_url().removeprefix("https://")
    return s.cfg.control_plane_endpoint.hostport()


def join_request(s: Session, host: Host, **kw: Any) -> JoinRequest:
    ca = s.rendered.pki.cas["ca"].cert
    node_local = s.cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL
    return JoinRequest(endpoint=discovery_endpoint(s), token=str(s.rendered.token), pins=(ca_cert_hash(ca),),
                       node_name=host.name, node_ip=str(host.address), cri_socket=s.cfg.runtime.cri_socket,
                       api_server=s.api_url() if node_local else None, discovery_timeout=60.0,
                       discovery_interval=2.0, wait_timeout=s.runner.options.wait_timeout, **kw)


def shared_files(s: Session) -> dict[str, bytes]:
    """The files kubeadm-certs carries, from the state directory (as rendered for the first control plane)."""
    have = {a.path: a.content for a in s.rendered.hosts[s.cfg.first_control_plane.name]}
    return {rel: have[f"/etc/kubernetes/pki/{rel}"] for rel in KUBEADM_CERTS_FILES.values()
            if f"/etc/kubernetes/pki/{rel}" in have}


def refresh_load_balancer(s: Session) -> None:
    """Re-render nginx on every host that holds one with the control planes that are ready now; reload where
    the backend list changed."""
    s.point_load_balancers(lb_backends(s.cfg, s.runner.facts))


def wait_ready(host: Host, timeout: float) -> None:
    url = local_api_url(host)
    poll(lambda: ready(url), timeout,
         f"{host.name} [join-control-planes]: its API server at {url} is not ready after {timeout:.0f}s; it was "
         f"NOT added to the load balancer",
         f"check {host.name}: journalctl -u kubelet, crictl ps -a")


def join_control_planes(s: Session) -> None:
    """One at a time, in inventory order: etcd gains one learner at a time and promotes it before the next.
    A control plane whose join stopped halfway (its files are there, its API server is not ready) is resumed:
    every step of the join is idempotent, and only a ready API server is added to the load balancer."""
    s.start()
    cfg = s.cfg
    timeout = s.runner.options.wait_timeout
    for h in cfg.control_planes[1:]:
        # ready also means a voting etcd member: an API server whose local member is still a learner (which
        # rejects writes and linearizable reads) cannot finish its start-up hooks, so /readyz fails
        resume = s.joined(h)
        if resume and ready(local_api_url(h)):
            continue
        what = (f"resume the join (its files are there but its API server at {local_api_url(h)} is not ready)"
                if resume else "join as a control plane (fresh certificate key, etcd learner then voter)")
        if s.dry_run:
            s.change(h.name, f"{what}, then add it to the load balancer")
            continue
        if resume:
            s.info(h.name, what)
        key = upload_shared_files(s.admin(), shared_files(s))
        s.info(h.name, "uploaded the shared certificates with a fresh certificate key (kubeadm-certs, 2h)")
        node = RemoteNode(h.name, s.runner.transports[h.name], s.runner.facts[h.name].files,
                          s.runner.facts[h.name].systemd_resolved)
        try:
            join(join_request(s, h, control_plane=True, certificate_key=key, advertise_address=str(h.address)),
                 s.runner.rep, node=node, admin=s.admin())
            wait_ready(h, timeout)
        except KubebootError as exc:
            msg = exc.message if exc.message.startswith(h.name) else f"{h.name} [join-control-planes]: {exc.message}"
            if isinstance(exc, WaitTimeoutError) and "load balancer" not in msg:
                msg += "; it was NOT added to the load balancer"
            hint = exc.hint if exc.hint and h.name in exc.hint else f"on {h.name}: {exc.hint or 'see above'}"
            raise type(exc)(msg, hint=f"{hint}; then run again: the join resumes") from None
        s.change(h.name, "joined as a control plane; its API server is ready" if not resume else
                         "join resumed and finished; its API server is ready")
        s.runner.gather([h])
        refresh_load_balancer(s)
    # a control plane that became ready by itself after the load-balancer phase picked its backends (a kubelet
    # restarting an API server whose fault was fixed meanwhile) enters the LB in this run, not the next
    refresh_load_balancer(s)
    s.done()
