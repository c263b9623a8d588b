"""Pure core: `kubeboot status` — what to read on each host (one script, one round trip), how to parse it, and
the verdict from everything gathered (hosts, etcd, API servers, load balancers).

The shell runs `status_script()` on every host, asks etcd and the API servers, and hands the results to
`verdict()`; `render_text()` and `as_json()` show the report. Nothing here touches SSH, the terminal or the disk.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kubeboot.config.model import ClusterConfig, Host, LoadBalancerMode
from kubeboot.pki import expiry
from kubeboot.plan.facts import MARK, parse_sections
from kubeboot.render.manifests import STATIC_PODS

SERVICES = ("containerd", "kubelet", "nginx")
NGINX_CONF = "/etc/nginx/nginx.conf"
CA_CERT = f"{expiry.CERTS_DIR}/ca.crt"
API_VERSION = "kubeboot.io/v1alpha1"


class ClusterState(str, enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    QUORUM_LOST = "quorum-lost"


# --- on the host --------------------------------------------------------------------------------------------

def status_script(control_plane: bool, root: str = "", containers: bool = True) -> str:
    """One POSIX sh script, read-only: the clock, unit states, running CRI containers (containerd's own view,
    like `crictl ps`: nodes have no crictl), certificate bytes (only the certificate blocks of PEM files and the
    client-certificate-data of kubeconfigs: private keys never leave the host), which CA keys exist, nginx.conf.
    Files are read below `root` (tests); sections are named by the path on the node. `containers=False` skips
    asking containerd (certificates only)."""
    pems = expiry.pem_paths() if control_plane else (CA_CERT,)
    confs = expiry.kubeconfig_paths() if control_plane else ()
    keys = tuple(expiry.CA_KEYS.values()) if control_plane else ()
    q = shlex.quote
    cert_lines = "\n".join(
        f"[ -f {q(root + p)} ] && {{ m 'cert {p}'; sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p'"
        f" {q(root + p)} | base64 | tr -d '\\n'; echo; }}" for p in pems)
    conf_lines = "\n".join(
        f"[ -f {q(root + p)} ] && {{ m 'cert {p}'; awk '$1==\"client-certificate-data:\" {{print $2; exit}}' "
        f"{q(root + p)}; }}" for p in confs)
    labels = r'"io\.kubernetes\.(container\.name|pod\.name|pod\.namespace)": "[^"]*"'
    return f"""export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
m() {{ echo "{MARK}$1"; }}
m clock; date +%s.%N
m services; if [ -d /run/systemd/system ]; then for s in {' '.join(SERVICES)}; do echo "$s=$(systemctl is-active $s 2>/dev/null || true)"; done; fi
m containers; if {'true' if containers else 'false'} && command -v ctr >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then for c in $(timeout 10 ctr -n k8s.io tasks ls 2>/dev/null | awk 'NR>1 && $3=="RUNNING" {{print $1}}'); do echo "$c $(timeout 10 ctr -n k8s.io containers info "$c" 2>/dev/null | grep -oE '{labels}' | tr -d '" ' | tr '\\n' ' ')"; done; fi
{cert_lines}
{conf_lines}
m keys; for f in {' '.join(q(k) for k in keys)}; do [ -f "{root}$f" ] && echo "$f"; done
m nginx; [ -f {q(root + NGINX_CONF)} ] && cat {q(root + NGINX_CONF)}
m end
"""


@dataclass(frozen=True)
class Container:
    namespace: str
    pod: str
    name: str


@dataclass(frozen=True)
class HostReading:
    """What one host said (or why it could not be asked)."""

    error: str | None = None  # "unreachable: <reason>"
    clock: float = 0.0
    services: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()
    certs: Mapping[str, bytes] = field(default_factory=dict)  # path -> certificate bytes
    keys: frozenset[str] = frozenset()
    nginx_conf: str | None = None


def parse_status(output: str) -> HostReading:
    s = parse_sections(output)
    services = {}
    for line in s.get("services", []):
        name, _, state = line.partition("=")
        services[name] = state or "unknown"
    containers = []
    for line in s.get("containers", []):
        labels: dict[str, str] = {}
        for word in line.split()[1:]:
            key, _, value = word.partition(":")
            labels.setdefault(key, value)
        name = labels.get("io.kubernetes.container.name", "")
        if name and name != "POD":
            containers.append(Container(labels.get("io.kubernetes.pod.namespace", ""),
                                        labels.get("io.kubernetes.pod.name", ""), name))
    certs = {k.removeprefix("cert ").strip(): "".join(v).encode() for k, v in s.items() if k.startswith("cert ")}
    clock = (s.get("clock") or ["0"])[0]
    return HostReading(
        clock=float(clock) if re.fullmatch(r"[0-9.]+", clock) else 0.0,
        services=services,
        containers=tuple(containers),
        certs={k: v for k, v in certs.items() if v},
        keys=frozenset(s.get("keys", [])),
        nginx_conf="\n".join(s["nginx"]) if s.get("nginx") else None,
    )


_SERVER = re.compile(r"^\s*server\s+([^\s;{]+)[^;{]*;", re.M)


def nginx_backends(conf: str) -> tuple[str, ...]:
    """`server HOST:PORT ...;` lines of nginx.conf's upstream blocks, in order."""
    return tuple(_SERVER.findall(conf))


# --- elsewhere ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EtcdMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    learner: bool


@dataclass(frozen=True)
class EtcdReading:
    """etcd as the workstation sees it: the member list (None: no member answered) and each control plane's
    client endpoint: healthy (True/False) with a reason, or unreachable (None)."""

    members: tuple[EtcdMember, ...] | None
    list_error: str = ""
    health: Mapping[str, tuple[bool | None, str]] = field(default_factory=dict)  # host -> (healthy, reason)
    leader: Mapping[str, bool] = field(default_factory=dict)  # host -> is the leader


@dataclass(frozen=True)
class MirrorPod:
    phase: str
    ready: bool


# --- the verdict --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    address: str
    host: str | None  # the control plane it names
    up: bool


@dataclass(frozen=True)
class HostStatus:
    host: Host
    reachable: bool
    error: str | None
    services: Mapping[str, str]
    static_pods: Mapping[str, tuple[bool, MirrorPod | None]]  # component -> (container running, mirror pod)
    etcd: Mapping[str, object]
    api_ready: bool | None
    certificates: tuple[expiry.Expiry, ...]
    now: datetime | None
    backends: tuple[Backend, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Quorum:
    voting: int
    healthy: int

    @property
    def ok(self) -> bool:
        return self.healthy > self.voting / 2


@dataclass(frozen=True)
class StatusReport:
    cluster: str
    endpoint: str
    state: ClusterState
    quorum: Quorum
    hosts: tuple[HostStatus, ...]
    api_answered: bool
    etcd_error: str
    generated: datetime


def _member_of(host: Host, members: Sequence[EtcdMember]) -> EtcdMember | None:
    addr = str(host.address)
    wanted = (f"https://{addr}:2380", f"https://[{addr}]:2380")
    for m in members:
        if m.name == host.name or any(u in wanted for u in m.peer_urls):
            return m
    return None


def _backend_host(cfg: ClusterConfig, address: str) -> str | None:
    hostpart = address.rsplit(":", 1)[0].strip("[]")
    for h in cfg.control_planes:
        if str(h.address) == hostpart or h.name == hostpart:
            return h.name
    return None


def _has_lb(cfg: ClusterConfig, host: Host) -> bool:
    if cfg.load_balancer_mode is LoadBalancerMode.EXTERNAL_NGINX:
        return host.is_load_balancer
    if cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL:
        return host.is_node and not host.is_control_plane
    return False


def verdict(cfg: ClusterConfig, readings: Mapping[str, HostReading], etcd: EtcdReading,
            ready: Mapping[str, bool], mirrors: Mapping[str, MirrorPod] | None, generated: datetime) -> StatusReport:
    """The report: per host what is up and what is not, and the cluster's state — quorum lost when no more than
    half of etcd's voting members are healthy, degraded when anything else is wrong, healthy otherwise.
    `ready` maps control planes to their API server's /readyz; `mirrors` the kube-system mirror pods by name
    (None: the API server did not answer)."""
    rows: list[HostStatus] = []
    members = etcd.members
    for h in cfg.hosts:
        r = readings.get(h.name, HostReading(error="not asked"))
        problems: list[str] = []
        warnings: list[str] = []
        if r.error is not None:
            problems.append(r.error)
            rows.append(HostStatus(h, False, r.error, {}, {}, {}, ready.get(h.name) if h.is_control_plane else None,
                                   (), None, (), tuple(problems), ()))
            continue
        now = datetime.fromtimestamp(r.clock, timezone.utc) if r.clock else generated
        services = {s: r.services.get(s, "unknown") for s in SERVICES
                    if s != "nginx" or _has_lb(cfg, h)}
        if h.is_node:
            for s in ("containerd", "kubelet"):
                if services.get(s) != "active":
                    problems.append(f"{s} {services.get(s) or 'unknown'}")
        else:
            services.pop("containerd", None)
            services.pop("kubelet", None)
        if _has_lb(cfg, h) and services.get("nginx") != "active":
            problems.append(f"nginx {services.get('nginx') or 'unknown'}")
        pods: dict[str, tuple[bool, MirrorPod | None]] = {}
        etcd_row: dict[str, object] = {}
        certs: tuple[expiry.Expiry, ...] = ()
        if h.is_control_plane:
            for comp in STATIC_PODS:
                pod = f"{comp}-{h.name}"
                running = any(c.namespace == "kube-system" and c.pod == pod and c.name == comp for c in r.containers)
                pods[comp] = (running, None if mirrors is None else mirrors.get(pod))
                if not running:
                    problems.append(f"{comp} not running")
            member = _member_of(h, members) if members is not None else None
            healthy, reason = etcd.health.get(h.name, (None, "not asked"))
            etcd_row = {"member": None if members is None else ("learner" if member and member.learner else
                                                                 "voter" if member else "none"),
                        "id": f"{member.id:x}" if member else None,
                        "health": "healthy" if healthy else "unreachable" if healthy is None else "unhealthy",
                        "reason": reason, "leader": bool(etcd.leader.get(h.name))}
            if members is not None and member is None:
                problems.append("etcd: not a member of the cluster")
            if not healthy:
                problems.append(f"etcd member {etcd_row['health']}" + (f": {reason}" if reason else ""))
            if not ready.get(h.name):
                problems.append("API server not ready")
            cert_rows, ca_rows = expiry.check(r.certs, r.keys)
            certs = cert_rows + ca_rows
            for e in certs:
                if e.not_after is None:
                    if e.name != "super-admin.conf":  # kubeadm writes it on the first control plane only
                        problems.append(f"certificate {e.name} {e.problem}")
                elif e.not_after <= now:
                    problems.append(f"certificate {e.name} expired {expiry.expires_text(e.not_after)}")
                elif e.not_after - now < expiry.WARN_WITHIN:
                    warnings.append(f"certificate {e.name} expires in "
                                    f"{expiry.short_human_duration(e.not_after - now)}")
        elif h.is_node:
            try:  # a worker holds the cluster CA's certificate, never its key
                ca = expiry.first_certificate(r.certs[CA_CERT])
                certs = (expiry.Expiry("ca", None, ca.not_valid_after_utc),)
            except KeyError:
                problems.append(f"no {CA_CERT} (not joined)")
            except ValueError as exc:
                problems.append(f"{CA_CERT} unreadable: {exc}")
        backends: list[Backend] = []
        if _has_lb(cfg, h):
            if r.nginx_conf is None:
                problems.append(f"no {NGINX_CONF}")
            for addr in nginx_backends(r.nginx_conf or ""):
                name = _backend_host(cfg, addr)
                up = bool(name and ready.get(name))
                backends.append(Backend(addr, name, up))
                if not up:
                    problems.append(f"LB backend {name or addr} ({addr}) down")
            listed = {b.host for b in backends}
            for cp in cfg.control_planes:
                if cp.name not in listed and ready.get(cp.name):
                    warnings.append(f"control plane {cp.name} is ready but not an LB backend (run `kubeboot up`)")
        rows.append(HostStatus(h, True, None, services, pods, etcd_row,
                               ready.get(h.name) if h.is_control_plane else None, certs, now, tuple(backends),
                               tuple(problems), tuple(warnings)))
    if members is not None:
        voting = [m for m in members if not m.learner]
        by_member = {(_member_of(h, voting) or EtcdMember(-1, "", (), False)).id: h.name for h in cfg.control_planes}
        n_healthy = sum(1 for m in voting if etcd.health.get(by_member.get(m.id, ""), (None, ""))[0])
        quorum = Quorum(len(voting), n_healthy)
    else:  # no member answered at all: the inventory's control planes are the members we know of
        quorum = Quorum(len(cfg.control_planes), 0)
    if not quorum.ok:
        state = ClusterState.QUORUM_LOST
    elif any(row.problems for row in rows):
        state = ClusterState.DEGRADED
    else:
        state = ClusterState.HEALTHY
    return StatusReport(cfg.name, cfg.control_plane_endpoint.url(), state, quorum, tuple(rows), mirrors is not None,
                        etcd.list_error, generated)


# --- showing it -----------------------------------------------------------------------------------------------

def _roles(h: Host) -> str:
    return ",".join(sorted(r.value for r in h.roles))


def _earliest(row: HostStatus) -> str:
    e = expiry.earliest(row.certificates)
    if e is None or e.not_after is None or row.now is None:
        return "-"
    return f"{expiry.short_human_duration(e.not_after - row.now)} ({e.name})"


def render_text(report: StatusReport) -> list[str]:
    """A table of hosts, then the cluster line, then every problem and warning by host."""
    lines = ["HOST\tROLES\tREACHABLE\tCONTAINERD\tKUBELET\tSTATIC PODS\tETCD\tAPI\tEARLIEST CERT\tLB BACKENDS"]
    for row in report.hosts:
        h = row.host
        if not row.reachable:
            lines.append(f"{h.name}\t{_roles(h)}\tno\t-\t-\t-\t-\t"
                         f"{'-' if row.api_ready is None else 'ready' if row.api_ready else 'not ready'}\t-\t-")
            continue
        pods = (f"{sum(1 for ok, _m in row.static_pods.values() if ok)}/{len(row.static_pods)} running"
                if row.static_pods else "-")
        etcd = "-"
        if row.etcd:
            etcd = f"{row.etcd['member'] or '?'}, {row.etcd['health']}" + (", leader" if row.etcd["leader"] else "")
        lb = (f"{sum(1 for b in row.backends if b.up)}/{len(row.backends)} up" if row.backends else "-")
        api = "-" if row.api_ready is None else "ready" if row.api_ready else "not ready"
        lines.append(f"{h.name}\t{_roles(h)}\tyes\t{row.services.get('containerd', '-')}\t"
                     f"{row.services.get('kubelet', '-')}\t{pods}\t{etcd}\t{api}\t{_earliest(row)}\t{lb}")
    out = [_align(lines)]
    q = report.quorum
    quorum = f"etcd quorum {'ok' if q.ok else 'LOST'}: {q.healthy} of {q.voting} voting members healthy"
    out.append("")
    out.append(f"cluster {report.cluster}: {report.state.value} ({quorum}; endpoint {report.endpoint}"
               + ("" if report.api_answered else "; the API server did not answer") + ")")
    for row in report.hosts:
        for p in row.problems:
            out.append(f"  {row.host.name}: {p}")
        for w in row.warnings:
            out.append(f"  {row.host.name}: warning: {w}")
    return out


def _align(lines: Sequence[str]) -> str:
    return expiry.tabwrite(lines, minwidth=0, padding=2)


def as_json(report: StatusReport) -> dict[str, object]:
    """The `-o json` document (documented in README: "kubeboot status -o json")."""
    hosts: list[dict[str, object]] = []
    for row in report.hosts:
        h = row.host
        d: dict[str, object] = {"name": h.name, "address": str(h.address), "roles": sorted(r.value for r in h.roles),
                                "reachable": row.reachable}
        if row.error is not None:
            d["error"] = row.error
        d["services"] = dict(row.services)
        if h.is_control_plane:
            d["staticPods"] = {comp: {"running": ok, "mirrorPod": None if m is None else
                                      {"phase": m.phase, "ready": m.ready}}
                               for comp, (ok, m) in row.static_pods.items()}
            d["etcd"] = dict(row.etcd) if row.etcd else None
            d["apiServerReady"] = bool(row.api_ready)
        e = expiry.earliest(row.certificates)
        d["earliestCertificate"] = None if e is None or row.now is None else expiry.as_json([e], row.now)[0]
        if row.backends:
            d["loadBalancer"] = {"backends": [{"address": b.address, "host": b.host, "up": b.up}
                                              for b in row.backends]}
        d["problems"] = list(row.problems)
        d["warnings"] = list(row.warnings)
        hosts.append(d)
    q = report.quorum
    return {
        "apiVersion": API_VERSION, "kind": "ClusterStatus",
        "cluster": {"name": report.cluster, "endpoint": report.endpoint, "state": report.state.value,
                    "quorum": {"votingMembers": q.voting, "healthy": q.healthy, "ok": q.ok},
                    "apiServerAnswered": report.api_answered,
                    "generated": report.generated.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "hosts": hosts,
    }
