"""Pure core: kubeadm's check-expiration list and tables, the status script's output parsed, and the health
verdict (healthy / degraded / quorum lost) from gathered data."""

from __future__ import annotations

import base64
import copy
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from kubeboot.config.load import parse_inventory
from kubeboot.pki import expiry
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.tokens import generate_token
from kubeboot.plan import status as st
from kubeboot.render.cluster import render_cluster
from tests.unit.test_config_validation import BASE

CFG = parse_inventory(copy.deepcopy(BASE))  # lb1, cp1-cp3, w1


@pytest.fixture
def cluster(keygen, now):  # type: ignore[no-untyped-def]
    pki, _ = plan_pki(CFG, {}, now, keygen)
    return render_cluster(CFG, pki, generate_token(now))


def node_files(arts) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """What the status script sends for a control plane: certificate blocks, the kubeconfigs' client certs."""
    by_path = {a.path: a.content for a in arts}
    out = {}
    for item in (*expiry.CERTIFICATES, *expiry.AUTHORITIES):
        if item.path not in by_path:
            continue
        if item.kubeconfig:
            user = yaml.safe_load(by_path[item.path])["users"][0]["user"]
            out[item.path] = user["client-certificate-data"].encode()
        else:
            out[item.path] = by_path[item.path]
    return out


def test_the_list_is_kubeadms() -> None:
    assert [(i.name, i.ca) for i in expiry.CERTIFICATES] == [
        ("admin.conf", "ca"), ("apiserver", "ca"), ("apiserver-etcd-client", "etcd-ca"),
        ("apiserver-kubelet-client", "ca"), ("controller-manager.conf", "ca"), ("etcd-healthcheck-client", "etcd-ca"),
        ("etcd-peer", "etcd-ca"), ("etcd-server", "etcd-ca"), ("front-proxy-client", "front-proxy-ca"),
        ("scheduler.conf", "ca"), ("super-admin.conf", "ca")]
    assert [i.name for i in expiry.AUTHORITIES] == ["ca", "etcd-ca", "front-proxy-ca"]
    assert dict(expiry.CA_KEYS) == {"ca": "/etc/kubernetes/pki/ca.key",
                                    "front-proxy-ca": "/etc/kubernetes/pki/front-proxy-ca.key"}


@pytest.mark.parametrize("delta,text", [
    (timedelta(seconds=-5), "<invalid>"), (timedelta(seconds=-1), "0s"), (timedelta(seconds=0), "0s"),
    (timedelta(seconds=59), "59s"), (timedelta(minutes=59, seconds=59), "59m"), (timedelta(hours=23), "23h"),
    (timedelta(days=1), "1d"), (timedelta(days=364, hours=23), "364d"), (timedelta(days=365), "1y"),
    (timedelta(days=3650) - timedelta(minutes=5), "9y"), (timedelta(days=3650), "10y"),
])
def test_residual_time_is_short_human_duration(delta: timedelta, text: str) -> None:
    assert expiry.short_human_duration(delta) == text


def test_tables_on_the_first_and_a_joined_control_plane(cluster, now) -> None:  # type: ignore[no-untyped-def]
    files = node_files(cluster["cp1"])
    certs, cas = expiry.check(files, frozenset(expiry.CA_KEYS.values()))
    assert all(r.not_after == now + timedelta(days=365) and not r.externally_managed for r in certs)
    assert {r.name: r.not_after for r in cas} == {n: now + timedelta(days=3650) for n in ("ca", "etcd-ca",
                                                                                         "front-proxy-ca")}
    later = now + timedelta(hours=1)
    text = expiry.render_tables(certs, cas, later)
    lines = text.split("\n")
    exp = (now + timedelta(days=365)).strftime("%b %d, %Y %H:%M UTC")
    # kubeadm's tabwriter: widest cell + 3; the last column is "%-8v"
    assert lines[0] == "CERTIFICATE                EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   " \
                       "EXTERNALLY MANAGED"
    assert lines[1] == f"admin.conf                 {exp}   364d            ca                      no      "
    assert lines[3] == f"apiserver-etcd-client      {exp}   364d            etcd-ca                 no      "
    assert lines[12] == ""
    assert lines[13] == "CERTIFICATE AUTHORITY   EXPIRES                  RESIDUAL TIME   EXTERNALLY MANAGED"
    assert lines[14].startswith("ca                      ") and lines[14].endswith("   9y              no      ")
    assert len(lines) == 17
    # a joined control plane has no super-admin.conf: kubeadm's !MISSING! row (and it widens the first column)
    certs2, _ = expiry.check(node_files(cluster["cp2"]), frozenset(expiry.CA_KEYS.values()))
    text2 = expiry.render_tables(certs2, cas, later).split("\n")
    assert text2[11] == "!MISSING! super-admin.conf" + " " * (3 + 25 + 16 + 24)  # empty cells keep their widths
    assert text2[1].startswith("admin.conf" + " " * 19 + exp)


def test_a_ca_without_its_key_is_externally_managed_except_etcd(cluster) -> None:  # type: ignore[no-untyped-def]
    certs, cas = expiry.check(node_files(cluster["cp1"]), frozenset())
    ext = {r.name: r.externally_managed for r in (*certs, *cas)}
    assert ext["ca"] and ext["front-proxy-ca"] and ext["admin.conf"] and ext["front-proxy-client"]
    assert not ext["etcd-ca"] and not ext["etcd-server"]  # kubeadm: the etcd CA is never "external"


def test_expiring_and_earliest(cluster, now) -> None:  # type: ignore[no-untyped-def]
    certs, cas = expiry.check(node_files(cluster["cp1"]), frozenset(expiry.CA_KEYS.values()))
    assert expiry.expiring([*certs, *cas], now) == []
    soon = expiry.expiring([*certs, *cas], now + timedelta(days=300))
    assert {r.name for r in soon} == {r.name for r in certs}
    e = expiry.earliest([*certs, *cas])
    assert e is not None and e.not_after == now + timedelta(days=365)


def test_the_script_sends_certificates_never_keys(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real script, run by sh below a directory holding cp1's files: certificate blocks and the kubeconfigs'
    client-certificate-data come back; no private key does."""
    for a in cluster["cp1"]:
        p = tmp_path / a.path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(a.content)
    key = next(a.content for a in cluster["cp1"] if a.path == "/etc/kubernetes/pki/apiserver.key")
    # a PEM that holds a key beside the certificate (as the kubelet's rotated client cert does)
    crt = tmp_path / "etc/kubernetes/pki/apiserver.crt"
    crt.write_bytes(key + crt.read_bytes())
    out = subprocess.run(["sh", "-c", st.status_script(True, root=str(tmp_path))], capture_output=True, text=True,
                         check=True).stdout
    assert "PRIVATE KEY" not in out and "client-key-data" not in out
    assert "PRIVATE KEY" not in base64.b64decode("".join(out.split("@@kubeboot cert /etc/kubernetes/pki/apiserver.crt\n"
                                                               )[1].split("\n")[0])).decode()
    r = st.parse_status(out)
    assert r.error is None and r.clock > 0
    assert set(r.certs) == {i.path for i in (*expiry.CERTIFICATES, *expiry.AUTHORITIES)}
    assert r.keys == frozenset(expiry.CA_KEYS.values())
    certs, cas = expiry.check(r.certs, r.keys)
    assert all(x.not_after is not None for x in (*certs, *cas))
    for dumped in r.certs.values():
        assert b"PRIVATE" not in base64.b64decode(dumped)
    cert = expiry.first_certificate(r.certs["/etc/kubernetes/admin.conf"])
    assert cert.subject.rfc4514_string().startswith("CN=kubernetes-admin")
    assert serialization.Encoding.PEM  # the certificate parsed from base64 PEM


SAMPLE = """@@kubeboot clock
1767225600.123
@@kubeboot services
containerd=active
kubelet=inactive
nginx=inactive
@@kubeboot containers
a1 io.kubernetes.container.name:etcd io.kubernetes.pod.name:etcd-cp1 io.kubernetes.pod.namespace:kube-system
a2 io.kubernetes.container.name:POD io.kubernetes.pod.name:etcd-cp1 io.kubernetes.pod.namespace:kube-system
a3 io.kubernetes.container.name:kube-apiserver io.kubernetes.pod.name:kube-apiserver-cp1 \
io.kubernetes.pod.namespace:kube-system io.kubernetes.pod.name:ignored
@@kubeboot keys
/etc/kubernetes/pki/ca.key
@@kubeboot nginx
stream {
    upstream kube_apiserver {
        least_conn;
        server 10.0.0.11:6443 max_fails=3 fail_timeout=10s;
        server 10.0.0.12:6443;
    }
    server {
        listen 6443;
        proxy_pass kube_apiserver;
    }
}
@@kubeboot end
"""


def test_parse_status_output() -> None:
    r = st.parse_status(SAMPLE)
    assert r.clock == pytest.approx(1767225600.123)
    assert r.services == {"containerd": "active", "kubelet": "inactive", "nginx": "inactive"}
    assert r.containers == (st.Container("kube-system", "etcd-cp1", "etcd"),
                            st.Container("kube-system", "kube-apiserver-cp1", "kube-apiserver"))
    assert r.keys == frozenset({"/etc/kubernetes/pki/ca.key"})
    assert st.nginx_backends(r.nginx_conf or "") == ("10.0.0.11:6443", "10.0.0.12:6443")
    with pytest.raises(ValueError):
        st.parse_status("@@kubeboot clock\n1\n")  # truncated: no end marker


# --- the verdict ----------------------------------------------------------------------------------------------

MEMBERS = tuple(st.EtcdMember(i + 1, f"cp{i + 1}", (f"https://10.0.0.1{i + 1}:2380",), False) for i in range(3))


def healthy_readings(cluster, now) -> dict[str, st.HostReading]:  # type: ignore[no-untyped-def]
    out = {}
    now = now + timedelta(hours=1)  # the hosts' clocks, an hour after the certificates were issued
    for h in CFG.hosts:
        if h.is_control_plane:
            out[h.name] = st.HostReading(
                clock=now.timestamp(), services={"containerd": "active", "kubelet": "active"},
                containers=tuple(st.Container("kube-system", f"{c}-{h.name}", c) for c in st.STATIC_PODS),
                certs=node_files(cluster[h.name]), keys=frozenset(expiry.CA_KEYS.values()))
        elif h.is_node:
            out[h.name] = st.HostReading(clock=now.timestamp(), services={"containerd": "active",
                                                                          "kubelet": "active"},
                                         certs={st.CA_CERT: next(a.content for a in cluster["cp1"]
                                                                 if a.path == st.CA_CERT)})
        else:
            out[h.name] = st.HostReading(clock=now.timestamp(), services={"nginx": "active"},
                                         nginx_conf=next(a.content for a in cluster["lb1"]).decode())
    return out


def etcd_ok(down: tuple[str, ...] = ()) -> st.EtcdReading:
    health = {f"cp{i}": ((None, "connection refused") if f"cp{i}" in down else (True, "")) for i in (1, 2, 3)}
    return st.EtcdReading(MEMBERS, health=health, leader={"cp3": True})


def test_healthy(cluster, now) -> None:  # type: ignore[no-untyped-def]
    ready = {f"cp{i}": True for i in (1, 2, 3)}
    mirrors = {f"{c}-cp{i}": st.MirrorPod("Running", True) for c in st.STATIC_PODS for i in (1, 2, 3)}
    rep = st.verdict(CFG, healthy_readings(cluster, now), etcd_ok(), ready, mirrors, now)
    assert rep.state is st.ClusterState.HEALTHY and rep.quorum == st.Quorum(3, 3)
    assert [row.problems for row in rep.hosts] == [()] * 5
    doc = st.as_json(rep)
    assert doc["cluster"]["state"] == "healthy" and doc["cluster"]["quorum"] == {  # type: ignore[index]
        "votingMembers": 3, "healthy": 3, "ok": True}
    lb = doc["hosts"][0]  # type: ignore[index]
    assert [b["up"] for b in lb["loadBalancer"]["backends"]] == [True, True, True]
    cp3 = doc["hosts"][3]  # type: ignore[index]
    assert cp3["etcd"] == {"member": "voter", "id": "3", "health": "healthy", "reason": "", "leader": True}
    assert cp3["staticPods"]["etcd"] == {"running": True, "mirrorPod": {"phase": "Running", "ready": True}}
    assert cp3["earliestCertificate"]["residual"] == "364d"
    text = "\n".join(st.render_text(rep))
    assert "cluster demo: healthy (etcd quorum ok: 3 of 3 voting members healthy" in text


def test_one_control_plane_down_is_degraded(cluster, now) -> None:  # type: ignore[no-untyped-def]
    readings = healthy_readings(cluster, now)
    readings["cp1"] = st.HostReading(clock=now.timestamp(), services={"containerd": "active",
                                                                      "kubelet": "inactive"},
                                     certs=readings["cp1"].certs, keys=readings["cp1"].keys)
    ready = {"cp1": False, "cp2": True, "cp3": True}
    rep = st.verdict(CFG, readings, etcd_ok(down=("cp1",)), ready, None, now)
    assert rep.state is st.ClusterState.DEGRADED and rep.quorum == st.Quorum(3, 2) and rep.quorum.ok
    cp1 = rep.hosts[1]
    assert cp1.problems == ("kubelet inactive", "etcd not running", "kube-apiserver not running",
                            "kube-controller-manager not running", "kube-scheduler not running",
                            "etcd member unreachable: connection refused", "API server not ready")
    assert rep.hosts[0].problems == ("LB backend cp1 (10.0.0.11:6443) down",)
    summary = next(line for line in st.render_text(rep) if line.startswith("cluster demo:"))
    assert not rep.api_answered and "the API server did not answer" in summary


def test_two_down_is_quorum_lost_and_an_unreachable_host_is_a_row(cluster, now) -> None:  # type: ignore[no-untyped-def]
    readings = healthy_readings(cluster, now)
    readings["cp1"] = st.HostReading(error="unreachable: connection refused")
    readings["cp2"] = st.HostReading(error="unreachable: timed out")
    # the survivor answers but has no leader
    etcd = st.EtcdReading(MEMBERS, health={"cp1": (None, "refused"), "cp2": (None, "timed out"),
                                           "cp3": (False, "RAFT NO LEADER")})
    rep = st.verdict(CFG, readings, etcd, {"cp3": False}, None, now)
    assert rep.state is st.ClusterState.QUORUM_LOST and rep.quorum == st.Quorum(3, 0)
    assert rep.hosts[1].problems == ("unreachable: connection refused",) and not rep.hosts[1].reachable
    assert "etcd member unhealthy: RAFT NO LEADER" in rep.hosts[3].problems
    assert "etcd quorum LOST: 0 of 3" in "\n".join(st.render_text(rep))
    # no member answered at all: the inventory's control planes count
    rep2 = st.verdict(CFG, readings, st.EtcdReading(None, "no member answered"), {}, None, now)
    assert rep2.state is st.ClusterState.QUORUM_LOST and rep2.quorum == st.Quorum(3, 0)


def test_certificates_near_expiry_warn_and_expired_degrade(cluster, now) -> None:  # type: ignore[no-untyped-def]
    ready = {f"cp{i}": True for i in (1, 2, 3)}
    soon = now + timedelta(days=300)
    readings = {k: st.HostReading(**{**v.__dict__, "clock": soon.timestamp()})
                for k, v in healthy_readings(cluster, now).items()}
    rep = st.verdict(CFG, readings, etcd_ok(), ready, None, now)
    assert rep.state is st.ClusterState.HEALTHY
    assert "certificate apiserver expires in 65d" in rep.hosts[1].warnings
    late = datetime(2100, 1, 1, tzinfo=timezone.utc)
    readings = {k: st.HostReading(**{**v.__dict__, "clock": late.timestamp()}) for k, v in readings.items()}
    rep = st.verdict(CFG, readings, etcd_ok(), ready, None, now)
    assert rep.state is st.ClusterState.DEGRADED
    assert any(p.startswith("certificate apiserver expired") for p in rep.hosts[2].problems)
