"""Shell: `kubeboot status` — read only, the recipe of a health check:

1. every host, one round trip each, in parallel: units, the runtime's running containers, certificates, nginx.conf
   (an unreachable host becomes its row, "unreachable: <reason>");
2. etcd from this workstation with the healthcheck-client certificate kept in the state directory: the member
   list and each member's /health;
3. each control plane's API server /readyz, and the kube-system mirror pods through the endpoint when an API
   server answers (short timeouts: never a hang);
4. the verdict (kubeboot.plan.status): healthy, degraded or quorum lost.

Nothing is written on any host; keys stay on the hosts and in the state directory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubeboot import state
from kubeboot.config.model import ClusterConfig, Host, LoadBalancerMode
from kubeboot.errors import (
    AuthenticationError,
    ClusterDegradedError,
    HostConnectionError,
    HostKeyError,
    KubebootError,
    QuorumLostError,
    StateError,
    SudoError,
)
from kubeboot.etcdapi import EtcdClient, EtcdError
from kubeboot.offline import load_inventory
from kubeboot.plan import status as st
from kubeboot.render.cluster import local_api_url
from kubeboot.render.manifests import etcd_client_url
from kubeboot.runner import ConnectOptions, TraceLog, ssh_transports
from kubeboot.transport.base import Transport, close_all

PROBE_TIMEOUT = 3.0  # seconds for each etcd and API server question


@dataclass(frozen=True)
class Credentials:
    """What the workstation authenticates with, read from the state directory (never written)."""

    ca: bytes
    admin_cert: bytes
    admin_key: bytes
    etcd_ca: bytes
    etcd_cert: bytes
    etcd_key: bytes


def credentials(cfg: ClusterConfig, root: Path) -> Credentials:
    stored = state.read_state(root)
    first = cfg.first_control_plane.name
    try:
        etcd_host = next(h.name for h in cfg.control_planes
                         if f"hosts/{h.name}/pki/etcd/healthcheck-client.key" in stored)
        return Credentials(stored["pki/ca.crt"], stored[f"hosts/{first}/clients/admin.crt"],
                           stored[f"hosts/{first}/clients/admin.key"], stored["pki/etcd/ca.crt"],
                           stored[f"hosts/{etcd_host}/pki/etcd/healthcheck-client.crt"],
                           stored[f"hosts/{etcd_host}/pki/etcd/healthcheck-client.key"])
    except (KeyError, StopIteration):
        raise StateError(f"no cluster state in {root} (the CA, admin and etcd client certificates `up` keeps)",
                         hint="run `kubeboot up -i INVENTORY` first, or pass the --state-dir it used") from None


def connect(cfg: ClusterConfig, root: Path, opts: ConnectOptions) -> dict[str, Transport]:
    return ssh_transports(cfg, opts, TraceLog(root / "trace.log"))


def read_hosts(hosts: Sequence[Host], transports: Mapping[str, Transport], concurrency: int,
               containers: bool = True) -> dict[str, st.HostReading]:
    """The status script on every host in parallel; a host that cannot be read is a reading with its error."""
    def one(h: Host) -> st.HostReading:
        try:
            res = transports[h.name].run(st.status_script(h.is_control_plane, containers=containers),
                                         display="read status", timeout=60)
            return st.parse_status(res.stdout)
        except (HostConnectionError, AuthenticationError, HostKeyError, SudoError) as exc:
            return st.HostReading(error=f"unreachable: {_reason(h, exc)}")
        except KubebootError as exc:  # reached, but the read-only script failed
            return st.HostReading(error=f"cannot read: {_reason(h, exc)}")
        except Exception as exc:  # noqa: BLE001 - one host's failure is its row, never the whole report
            return st.HostReading(error=f"unreachable: {type(exc).__name__}: {exc}")

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(hosts)))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(one, hosts)))


def _reason(h: Host, exc: KubebootError) -> str:
    return exc.message.splitlines()[0].removeprefix(f"{h.name}: ")


def read_etcd(cfg: ClusterConfig, creds: Credentials) -> st.EtcdReading:
    cps = cfg.control_planes
    client = EtcdClient([etcd_client_url(h) for h in cps], creds.etcd_ca, creds.etcd_cert, creds.etcd_key)
    def probe(h: Host) -> tuple[tuple[bool | None, str], bool]:
        ep = etcd_client_url(h)
        healthy, reason = client.health(ep, PROBE_TIMEOUT)
        try:
            me, leader = client.status(ep, PROBE_TIMEOUT)
        except EtcdError:
            return (healthy, reason), False
        if healthy is not True and leader == 0:  # up, but without a leader: the quorum is gone
            healthy, reason = False, reason if healthy is False else "no leader"
        elif healthy is None:  # up and has a leader, yet /health did not answer in time
            healthy, reason = False, f"/health: {reason}"
        return (healthy, reason), leader != 0 and leader == me

    try:
        with ThreadPoolExecutor(max_workers=len(cps)) as pool:
            probed = dict(zip((h.name for h in cps), pool.map(probe, cps)))
        health = {name: p[0] for name, p in probed.items()}
        leaders = {name: p[1] for name, p in probed.items()}
        errors = []
        order = {True: 0, False: 1, None: 2}  # healthy members first; an unanswered /health may still list
        for h in sorted(cps, key=lambda h: order[health[h.name][0]]):
            try:
                ms = client.members_via(etcd_client_url(h), PROBE_TIMEOUT)
                members = tuple(st.EtcdMember(m.id, m.name, m.peer_urls, m.learner) for m in ms)
                return st.EtcdReading(members, "", health, leaders)
            except EtcdError as exc:
                errors.append(exc.message)
        return st.EtcdReading(None, "; ".join(errors) or "no etcd member answered", health, leaders)
    finally:
        client.close()


def read_api(cfg: ClusterConfig, creds: Credentials) -> tuple[dict[str, bool], dict[str, st.MirrorPod] | None]:
    """/readyz of every control plane, and the kube-system mirror pods through the endpoint (node-local mode: a
    ready control plane), or None when no API server answered in time."""
    from kubeboot.workflows.session import ready

    cps = cfg.control_planes
    with ThreadPoolExecutor(max_workers=len(cps)) as pool:
        readiness = dict(zip((h.name for h in cps), pool.map(lambda h: ready(local_api_url(h), PROBE_TIMEOUT), cps)))
    if cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL:
        url = next((local_api_url(h) for h in cps if readiness[h.name]), None)
    else:
        url = cfg.control_plane_endpoint.url()
    if url is None:
        return readiness, None
    return readiness, _mirror_pods(url, creds)


def _mirror_pods(url: str, creds: Credentials) -> dict[str, st.MirrorPod] | None:
    from kubernetes import client as k8s
    from kubernetes import config as kconfig

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "status",
           "clusters": [{"name": "c", "cluster": {"server": url, "certificate-authority-data": b64(creds.ca)}}],
           "users": [{"name": "u", "user": {"client-certificate-data": b64(creds.admin_cert),
                                            "client-key-data": b64(creds.admin_key)}}],
           "contexts": [{"name": "status", "context": {"cluster": "c", "user": "u"}}]}
    try:
        conf = k8s.Configuration()
        kconfig.load_kube_config_from_dict(doc, client_configuration=conf)  # type: ignore[no-untyped-call]
        conf.retries = False  # one try: a silent API server is reported, not retried
        api = k8s.ApiClient(conf)
        pods: Any = k8s.CoreV1Api(api).list_namespaced_pod(
            "kube-system", _request_timeout=(PROBE_TIMEOUT, PROBE_TIMEOUT * 2))
    except Exception:  # noqa: BLE001 - no answer (quorum lost, LB down): the report says so
        return None
    out = {}
    for p in pods.items:
        if "kubernetes.io/config.mirror" not in (p.metadata.annotations or {}):
            continue
        is_ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        out[p.metadata.name] = st.MirrorPod(p.status.phase or "Unknown", is_ready)
    return out


def status(inventory: Path, state_dir: Path | None, opts: ConnectOptions) -> st.StatusReport:
    """Gather everything in parallel (hosts, etcd, API servers) and return the verdict."""
    cfg = load_inventory(inventory)
    root = state_dir or state.default_state_dir(inventory, cfg.name)
    creds = credentials(cfg, root)
    transports = connect(cfg, root, opts)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            hosts: Future[dict[str, st.HostReading]] = pool.submit(read_hosts, cfg.hosts, transports,
                                                                   opts.concurrency)
            etcd = pool.submit(read_etcd, cfg, creds)
            api = pool.submit(read_api, cfg, creds)
            readiness, mirrors = api.result()
            return st.verdict(cfg, hosts.result(), etcd.result(), readiness, mirrors, datetime.now(timezone.utc))
    finally:
        close_all(transports.values())


def exit_error(report: st.StatusReport) -> KubebootError | None:
    """The typed error a non-healthy report ends with (its exit code is the contract scripts rely on)."""
    bad = [row.host.name for row in report.hosts if row.problems]
    if report.state is st.ClusterState.QUORUM_LOST:
        q = report.quorum
        return QuorumLostError(f"etcd quorum lost: {q.healthy} of {q.voting} voting members healthy "
                               f"(hosts with problems: {', '.join(bad) or 'none'})",
                               hint="start the stopped control planes (their kubelet runs etcd); a majority of "
                                    "etcd members must be up before the API answers")
    if report.state is st.ClusterState.DEGRADED:
        return ClusterDegradedError(f"cluster degraded: {len(bad)} host(s) with problems: {', '.join(bad)}",
                                    hint="see the problems listed per host above")
    return None
