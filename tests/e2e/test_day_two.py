"""Day two on a real cluster: `kubeboot upgrade` from the previous minor, `kubeboot status` (healthy, one control
plane down, etcd quorum lost, recovery), `kubeboot certs check-expiration` and `renew`, etcd snapshot and restore,
remove-node and reset, and the warning every `up` prints about certificates that expire soon.

One module-scoped cluster built like tests/e2e/test_up_cluster.py's (h1 load balancer, h2-h4 control planes, h5 a
worker), with certificates issued for 60 days (`spec.certificates.validityDays`): real certificates with a short
life, so `up` has something to warn about and check-expiration's dates are checked against the files on the hosts.
It is built at the previous release (PREVIOUS_VERSION, 1.36) and upgraded to the default one by the first day-two
test, as an operator's cluster is: every later test runs on an upgraded cluster. Tests run in file order and build
on each other.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.e2e.conftest import proxy_only_ssh_config
from tests.e2e.nodes import Cluster, containers, unit
from tests.e2e.test_up_cluster import CPS, LB, build_ha
from tests.lab.aptrepo import AptRepo, apt_repo  # noqa: F401 (fixture)
from tests.lab.common import wait_until
from tests.lab.systemd import SystemdLab
from tests.reference.binaries import DEFAULT_VERSION, PREVIOUS_VERSION
from tests.reference.images import upgrade_images_dir

pytestmark = [pytest.mark.systemd_lab(hosts=5), pytest.mark.apt_versions(DEFAULT_VERSION, PREVIOUS_VERSION)]

WORKER = "h5"
VALIDITY_DAYS = 60
DEGRADED, QUORUM_LOST = 19, 20


@pytest.fixture(scope="module")
def cluster(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    images = upgrade_images_dir(PREVIOUS_VERSION, DEFAULT_VERSION)
    if images is None:
        pytest.skip(f"no image archives of {PREVIOUS_VERSION} and {DEFAULT_VERSION}: tests/setup.sh builds them")
    return build_ha(systemd_lab, apt_repo, tmp_path_factory.mktemp("day2"), workers=(WORKER,), images=images,
                    kubernetesVersion=PREVIOUS_VERSION, certificates={"validityDays": VALIDITY_DAYS})


def kb(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """A read-only kubeboot command from the workstation (inside the lab's controller namespace)."""
    return c.kb(*args, "-i", str(c.inv), "--known-hosts", str(c.lab.known_hosts),
                "--ssh-config", str(proxy_only_ssh_config(c.lab)), netns=True)


def status(c: Cluster) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    res = kb(c, "status", "-o", "json")
    took = time.monotonic() - t0
    assert "Traceback" not in res.stderr, res.stderr
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout), took


def hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in doc["hosts"]}


def test_up_warns_about_certificates_expiring_within_90_days(cluster: Cluster) -> None:
    assert cluster.first_up is not None
    warnings = [ln for ln in cluster.first_up.stderr.splitlines() if ln.startswith("[certs] ") and "WARNING" in ln]
    assert {ln.split()[1].rstrip(":") for ln in warnings} == set(CPS), warnings
    first = next(ln for ln in warnings if ln.startswith(f"[certs] {CPS[0]}:"))
    assert f"expire within 90 days, the first in {VALIDITY_DAYS - 1}d" in first, first
    assert "admin.conf" in first and "apiserver" in first and "etcd-ca" not in first, first


def _images(c: Cluster, host: str) -> dict[str, str]:
    """The image each static pod manifest on the host names (read from its disk, not through kubeboot)."""
    out = {}
    for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        doc = yaml.safe_load((c.lab.host(host).rootfs / f"etc/kubernetes/manifests/{comp}.yaml").read_text())
        out[comp] = doc["spec"]["containers"][0]["image"]
    return out


def _kubelets(c: Cluster) -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
            for n in c.kubectl_json("get", "nodes")["items"]}


def test_upgrade_to_the_next_minor_keeps_the_api_answering(cluster: Cluster) -> None:
    c = cluster
    old, new = f"v{PREVIOUS_VERSION}", f"v{DEFAULT_VERSION}"
    assert set(_kubelets(c).values()) == {old}
    cas = {h: (c.lab.host(h).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes() for h in CPS}
    serials = {h: _serial(c, h, "apiserver.crt") for h in CPS}
    plan = kb(c, "upgrade", "--to", DEFAULT_VERSION, "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"would upgrade: etcd -> 3.7.0-0, kube-apiserver -> {new}" in plan.stderr, plan.stderr[-3000:]
    assert set(_kubelets(c).values()) == {old}  # a plan changes nothing
    with Poller(c) as poll:
        res = kb(c, "upgrade", "--to", DEFAULT_VERSION)
    (c.inv.parent / "upgrade.log").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, res.stderr[-6000:]
    assert poll.ok > 0 and poll.worst <= 1, (poll.worst, poll.errors[:5])  # no outage through the LB
    assert _kubelets(c) == {h: new for h in (*CPS, WORKER)}
    for h in CPS:
        assert _images(c, h) == {"etcd": "registry.k8s.io/etcd:3.7.0-0",
                                 **{comp: f"registry.k8s.io/{comp}:{new}" for comp in
                                    ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}}
        assert (c.lab.host(h).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes() == cas[h]
        assert _serial(c, h, "apiserver.crt") != serials[h]  # renewed, as kubeadm upgrade does
        assert f"Kubernetes {new}" in c.sh(h, "kubelet --version")
        assert c.sh(h, "apt-mark showhold").split() == ["kubectl", "kubelet"]
    ds = c.kubectl_json("get", "daemonset", "-n", "kube-system", "kube-proxy")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.k8s.io/kube-proxy:{new}"
    dep = c.kubectl_json("get", "deployment", "-n", "kube-system", "coredns")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/coredns/coredns:v1.14.6"
    cc = yaml.safe_load(c.kubectl_json("get", "configmap", "-n", "kube-system", "kubeadm-config")["data"]
                        ["ClusterConfiguration"])
    assert cc["kubernetesVersion"] == new
    c.kubectl_json("get", "clusterrolebinding", "kubeadm:apiserver-kubelet-client")
    nodes = c.kubectl_json("get", "nodes")["items"]
    assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]  # every node uncordoned
    assert all(n["metadata"].get("annotations", {}).get("kubeboot.io/cordoned-by") is None for n in nodes)
    snaps = list((c.inv.parent / ".kubeboot" / "nodes" / "snapshots").glob(f"*before-upgrade-to-{new.replace('.', '-')}*.db"))
    assert len(snaps) == 1, snaps
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    # kubectl logs and exec: the API server reaches the kubelets as kube-apiserver-kubelet-client
    etcd_pod = f"etcd-{CPS[0]}"
    logs = c.kubectl("logs", "-n", "kube-system", etcd_pod, "--tail=1")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    ex = c.kubectl("exec", "-n", "kube-system", etcd_pod, "--", "etcd", "--version")
    assert ex.returncode == 0 and "etcd Version: 3.7.0" in ex.stdout, ex.stdout + ex.stderr
    # a second run is a no-op: no file, no container, no kubelet changes
    before = {h: unit(c.lab, h, "kubelet") for h in (*CPS, WORKER)}
    pods = {h: containers(c.lab, h) for h in CPS}
    again = kb(c, "upgrade", "--to", DEFAULT_VERSION)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[done] no changes" in again.stderr, again.stderr[-3000:]
    assert {h: unit(c.lab, h, "kubelet") for h in (*CPS, WORKER)} == before
    assert {h: containers(c.lab, h) for h in CPS} == pods
    # `up` with the inventory still at the old version refuses (exit 26), and is fine once it says the new one
    stale = c.kb("up", netns=True)
    assert stale.returncode == 26, stale.stderr[-2000:]
    assert f"runs {new}" in stale.stderr and f"set spec.kubernetesVersion to {DEFAULT_VERSION}" in stale.stderr, \
        stale.stderr[-2000:]
    doc = yaml.safe_load(c.inv.read_text())
    doc["spec"]["kubernetesVersion"] = DEFAULT_VERSION
    c.inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    converged = c.kb("up", netns=True)
    assert converged.returncode == 0, converged.stderr[-3000:]
    assert {h: unit(c.lab, h, "kubelet") for h in (*CPS, WORKER)} == before


def test_status_of_a_healthy_cluster(cluster: Cluster) -> None:
    marker = "/run/kubeboot-status-marker"
    for h in (LB, *CPS, WORKER):
        cluster.sh(h, f"touch {marker}")
    def mirrored(doc: dict[str, Any]) -> bool:  # a just-joined control plane's mirror pods may still be on their way
        return all(p["mirrorPod"] is not None for cp in CPS for p in hosts(doc)[cp]["staticPods"].values())

    code, doc, took = wait_until("status healthy, every mirror pod there",
                                 lambda: (r := status(cluster))[0] == 0 and mirrored(r[1]) and r, timeout=90,
                                 interval=2)
    assert doc["kind"] == "ClusterStatus" and doc["cluster"]["state"] == "healthy"
    assert doc["cluster"]["quorum"] == {"votingMembers": 3, "healthy": 3, "ok": True}
    assert doc["cluster"]["apiServerAnswered"] is True
    by = hosts(doc)
    assert list(by) == [LB, *CPS, WORKER]
    assert all(h["reachable"] and h["problems"] == [] for h in by.values())
    leaders = 0
    for cp in CPS:
        row = by[cp]
        assert row["services"] == {"containerd": "active", "kubelet": "active"}
        assert row["apiServerReady"] is True
        for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            pod = row["staticPods"][comp]
            assert pod["running"] is True and pod["mirrorPod"]["phase"] == "Running", (cp, comp, pod)
        assert row["etcd"]["member"] == "voter" and row["etcd"]["health"] == "healthy", row["etcd"]
        leaders += row["etcd"]["leader"]
    assert leaders == 1
    assert by[CPS[0]]["earliestCertificate"]["residual"] == f"{VALIDITY_DAYS - 1}d"
    backends = by[LB]["loadBalancer"]["backends"]
    assert [(b["host"], b["up"]) for b in backends] == [(cp, True) for cp in CPS]
    assert by[LB]["services"] == {"nginx": "active"}
    assert by[WORKER]["services"] == {"containerd": "active", "kubelet": "active"}
    assert by[WORKER]["earliestCertificate"]["name"] == "ca"
    # the text view says the same; nothing was written on any host (/etc), no key reached the trace log
    text = kb(cluster, "status")
    assert text.returncode == 0, text.stderr
    assert "cluster nodes: healthy (etcd quorum ok: 3 of 3 voting members healthy" in text.stdout, text.stdout
    for h in (LB, *CPS, WORKER):
        assert cluster.sh(h, f"find /etc -newer {marker} -print; rm -f {marker}").strip() == "", h
    trace = (cluster.inv.parent / ".kubeboot" / "nodes" / "trace.log").read_text()
    assert "read status" in trace and "PRIVATE KEY" not in trace and "client-key-data" not in trace
    assert took < 90, took  # a bound against a hang, not a speed goal (bench/ measures speed)


def test_one_control_plane_down_is_degraded(cluster: Cluster) -> None:
    down = CPS[0]
    cluster.lab.stop_kubelet_and_pods(down)
    code, doc, took = status(cluster)
    assert code == DEGRADED, doc
    assert doc["cluster"]["state"] == "degraded"
    assert doc["cluster"]["quorum"] == {"votingMembers": 3, "healthy": 2, "ok": True}
    row = hosts(doc)[down]
    assert row["reachable"] and row["services"] == {"containerd": "active", "kubelet": "inactive"}
    assert {c: p["running"] for c, p in row["staticPods"].items()} == {
        "etcd": False, "kube-apiserver": False, "kube-controller-manager": False, "kube-scheduler": False}
    assert row["etcd"]["member"] == "voter" and row["etcd"]["health"] == "unreachable"
    assert row["apiServerReady"] is False
    assert row["problems"][:2] == ["kubelet inactive", "etcd not running"], row["problems"]
    assert [(b["host"], b["up"]) for b in hosts(doc)[LB]["loadBalancer"]["backends"]] == [
        (CPS[0], False), (CPS[1], True), (CPS[2], True)]
    assert all(hosts(doc)[h]["problems"] == [] for h in (*CPS[1:], WORKER))
    assert took < 90, took  # a bound against a hang, not a speed goal (bench/ measures speed)
    text = kb(cluster, "status")
    assert text.returncode == DEGRADED and f"{down}: kubelet inactive" in text.stdout, text.stdout
    assert "error: cluster degraded: 2 host(s) with problems: h1, h2" in text.stderr, text.stderr


def test_two_control_planes_down_is_quorum_lost(cluster: Cluster) -> None:
    cluster.lab.stop_kubelet_and_pods(CPS[1])
    # the survivor notices it has no leader within an election timeout
    code, doc, took = wait_until("quorum lost reported", lambda: (r := status(cluster))[0] == QUORUM_LOST and r,
                                 timeout=30, interval=1)
    assert doc["cluster"]["state"] == "quorum-lost"
    assert doc["cluster"]["quorum"] == {"votingMembers": 3, "healthy": 0, "ok": False}
    survivor = hosts(doc)[CPS[2]]
    assert survivor["staticPods"]["etcd"]["running"] is True
    assert survivor["etcd"]["health"] == "unhealthy", survivor["etcd"]
    assert took < 90, took  # an answer, not a hang, with every API server unable to serve (not a speed goal)


def test_control_planes_started_again_are_healthy(cluster: Cluster) -> None:
    for h in CPS[:2]:
        cluster.lab.start_unit(h, "kubelet")
    code, doc, _took = wait_until("status healthy again", lambda: (r := status(cluster))[0] == 0 and r,
                                  timeout=240, interval=3)
    assert doc["cluster"]["quorum"] == {"votingMembers": 3, "healthy": 3, "ok": True}


def test_an_unreachable_host_is_a_row(cluster: Cluster) -> None:
    cluster.lab.stop_sshd(WORKER, drop_sessions=True)
    try:
        code, doc, took = status(cluster)
    finally:
        cluster.lab.start_sshd(WORKER)
    assert code == DEGRADED and doc["cluster"]["quorum"]["ok"] is True
    row = hosts(doc)[WORKER]
    assert row["reachable"] is False and row["error"].startswith("unreachable: "), row
    assert row["problems"] == [row["error"]]
    assert all(h["problems"] == [] for name, h in hosts(doc).items() if name != WORKER)
    assert took < 120, took  # the transport's three SSH connection attempts (the lab's ProxyCommand), not a hang


def _on_host(c: Cluster, host: str, item: dict[str, Any]) -> datetime | None:
    """The certificate's notAfter read straight from the host's disk (not through kubeboot)."""
    root = c.lab.host(host).rootfs
    name = item["name"]
    if name.endswith(".conf"):
        path = root / "etc/kubernetes" / name
        if not path.exists():
            return None
        pem = __import__("base64").b64decode(yaml.safe_load(path.read_text())["users"][0]["user"]
                                             ["client-certificate-data"])
    else:
        base = {"etcd-healthcheck-client": "etcd/healthcheck-client", "etcd-peer": "etcd/peer",
                "etcd-server": "etcd/server", "etcd-ca": "etcd/ca"}.get(name, name)
        path = root / "etc/kubernetes/pki" / f"{base}.crt"
        if not path.exists():
            return None
        pem = path.read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def test_certs_check_expiration_dates(cluster: Cluster) -> None:
    res = kb(cluster, "certs", "check-expiration", "-o", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [cp["name"] for cp in doc["controlPlanes"]] == list(CPS)
    for cp in doc["controlPlanes"]:
        clock = datetime.fromisoformat(cp["hostClock"].replace("Z", "+00:00"))
        assert abs(clock - datetime.now(timezone.utc)) < timedelta(minutes=2)
        names = [r["name"] for r in cp["certificates"]]
        assert names == ["admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
                         "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
                         "front-proxy-client", "scheduler.conf", "super-admin.conf"]
        for r in (*cp["certificates"], *cp["certificateAuthorities"]):
            want = _on_host(cluster, cp["name"], r)
            if want is None:
                assert r["expires"] is None and r["problem"] == "missing", (cp["name"], r)
                continue
            assert r["expires"] == want.strftime("%Y-%m-%dT%H:%M:%SZ"), (cp["name"], r)
            assert abs(r["residualSeconds"] - (want - clock).total_seconds()) <= 1, (cp["name"], r)
            assert r["externallyManaged"] is False
        cas = {r["name"]: r["residual"] for r in cp["certificateAuthorities"]}
        assert cas == {"ca": "9y", "etcd-ca": "9y", "front-proxy-ca": "9y"}
        leaves = {r["name"]: r.get("residual") for r in cp["certificates"]}
        assert set(leaves.values()) <= {f"{VALIDITY_DAYS - 1}d", None}, (cp["name"], leaves)
    # super-admin.conf exists on the first control plane only, as kubeadm writes it
    missing = {cp["name"] for cp in doc["controlPlanes"] for r in cp["certificates"] if r["expires"] is None}
    assert missing == set(CPS[1:])
    # kubeadm's table; a CA whose key is not on the host is externally managed (and what it signed)
    key = "/etc/kubernetes/pki/front-proxy-ca.key"
    cluster.sh(CPS[2], f"mv {key} {key}.away")
    try:
        text = kb(cluster, "certs", "check-expiration")
    finally:
        cluster.sh(CPS[2], f"mv {key}.away {key}")
    assert text.returncode == 0, text.stderr
    blocks = text.stdout.split("[check-expiration] ")[1:]
    assert [b.split()[0] for b in blocks] == list(CPS)
    first = blocks[0].splitlines()
    assert first[1].split() == ["CERTIFICATE", "EXPIRES", "RESIDUAL", "TIME", "CERTIFICATE", "AUTHORITY",
                                "EXTERNALLY", "MANAGED"]
    apiserver = next(ln for ln in first if ln.startswith("apiserver "))
    want = _on_host(cluster, CPS[0], {"name": "apiserver"})
    assert want is not None and want.strftime("%b %d, %Y %H:%M UTC") in apiserver
    assert apiserver.split()[-3:] == [f"{VALIDITY_DAYS - 1}d", "ca", "no"], apiserver
    assert any(ln.startswith("!MISSING! super-admin.conf") for ln in blocks[1].splitlines())
    third = blocks[2].splitlines()
    assert next(ln for ln in third if ln.startswith("front-proxy-client ")).split()[-1] == "yes"
    assert next(ln for ln in third if ln.startswith("front-proxy-ca ")).split()[-1] == "yes"
    assert next(ln for ln in third if ln.startswith("apiserver ")).split()[-1] == "no"


# --- etcd snapshot save and restore (last: it puts the whole cluster back to the snapshot) ----------------------


def _configmaps(c: Cluster) -> set[str] | None:
    """The default namespace's ConfigMaps through the LB; None while the API does not answer."""
    doc = c.kubectl_json("get", "configmaps", "-n", "default", check=False)
    return None if doc is None else {i["metadata"]["name"] for i in doc["items"]}


def _etcd_kept(c: Cluster, host: str) -> list[str]:
    root = c.lab.host(host).rootfs
    return sorted(p.name for p in (root / "var/lib").iterdir() if p.name.startswith("etcd.before-restore-"))


def test_etcd_snapshot_save_then_restore_drops_what_came_after(cluster: Cluster, tmp_path: Path) -> None:
    import hashlib

    before, marker = "kubeboot-before-snapshot", "kubeboot-after-snapshot"
    made = cluster.kubectl("create", "configmap", before, "-n", "default", "--from-literal=k=v")
    assert made.returncode == 0, made.stderr
    deployments = {d["metadata"]["name"] for d in cluster.kubectl_json("get", "deployments", "-n", "kube-system")
                   ["items"]}
    assert "coredns" in deployments

    snap = tmp_path / "cluster.db"
    t0 = time.monotonic()
    saved = kb(cluster, "etcd", "snapshot", "save", "-o", str(snap))
    save_seconds = time.monotonic() - t0
    assert saved.returncode == 0, saved.stderr
    meta = json.loads((tmp_path / "cluster.db.json").read_text())
    data = snap.read_bytes()
    assert meta["kind"] == "EtcdSnapshot" and meta["cluster"] == "nodes" and meta["source"] in CPS
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["size"] == len(data)
    assert meta["etcdVersion"].startswith("3.") and meta["revision"] > 0 and meta["totalKeys"] > 0
    assert {(m["name"], tuple(m["peerUrls"])) for m in meta["members"]} == {
        (h, (f"https://{cluster.lab.host(h).address}:2380",)) for h in CPS}
    assert {oct(p.stat().st_mode & 0o777) for p in (snap, tmp_path / "cluster.db.json")} == {"0o600"}
    trace = (cluster.inv.parent / ".kubeboot" / "nodes" / "trace.log").read_text()
    assert "PRIVATE KEY" not in trace + saved.stdout + saved.stderr + json.dumps(meta)
    for h in CPS:  # nothing left behind on the source: no snapshot copy, no mounted image
        assert not list((cluster.lab.host(h).rootfs / "var/lib/kubeboot/etcd").glob("*")), h
    assert save_seconds < 120, save_seconds  # a bound against a hang (~8 s on an idle machine)

    made = cluster.kubectl("create", "configmap", marker, "-n", "default", "--from-literal=k=v")
    assert made.returncode == 0, made.stderr
    assert {before, marker} <= (_configmaps(cluster) or set())

    # a damaged copy: exit 22, nothing touched (the manifests stay, no data dir is kept aside)
    bad = tmp_path / "bad.db"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    (tmp_path / "bad.db.json").write_text((tmp_path / "cluster.db.json").read_text())
    refused = kb(cluster, "etcd", "snapshot", "restore", str(bad), "--yes")
    assert refused.returncode == 22, refused.stderr
    assert "is not a usable snapshot" in refused.stderr and "Traceback" not in refused.stderr
    # no terminal and no --yes: the plan, then a refusal
    unconfirmed = kb(cluster, "etcd", "snapshot", "restore", str(snap))
    assert unconfirmed.returncode == 1 and "no terminal to ask" in unconfirmed.stderr, unconfirmed.stderr
    assert "[restore-members] h2: would run `etcdutl snapshot restore --name h2" in unconfirmed.stderr
    for h in CPS:
        assert (cluster.lab.host(h).rootfs / "etc/kubernetes/manifests/etcd.yaml").is_file(), h
        assert _etcd_kept(cluster, h) == [], h
    assert marker in (_configmaps(cluster) or set())

    restored = kb(cluster, "etcd", "snapshot", "restore", str(snap), "--yes", "--wait-timeout", "300")
    (tmp_path / "restore.log").write_text(restored.stdout + restored.stderr)
    assert restored.returncode == 0, restored.stderr[-4000:]
    assert "[verify] 3 etcd member(s) healthy, one leader, 3 API server(s) ready" in restored.stderr, restored.stderr

    # through the LB: the marker is gone, everything from before the snapshot is there
    names = wait_until("configmaps readable through the LB", lambda: _configmaps(cluster), timeout=60, interval=1)
    assert cluster.kubectl("get", "nodes").returncode == 0
    assert before in names and marker not in names, names
    assert {d["metadata"]["name"] for d in cluster.kubectl_json("get", "deployments", "-n", "kube-system")
            ["items"]} == deployments
    assert {n["metadata"]["name"] for n in cluster.kubectl_json("get", "nodes")["items"]} == {*CPS, WORKER}
    for h in CPS:
        assert len(_etcd_kept(cluster, h)) == 1, h  # the data before the restore, kept aside
        assert not (cluster.lab.host(h).rootfs / "etc/kubernetes/manifests.kubeboot-restore").exists(), h
    # a healthy cluster for whatever runs next: every member healthy, one leader, nodes Ready
    code, doc, _took = wait_until("status healthy after the restore", lambda: (r := status(cluster))[0] == 0 and r,
                                  timeout=240, interval=3)
    assert doc["cluster"]["quorum"] == {"votingMembers": 3, "healthy": 3, "ok": True}
    assert sum(hosts(doc)[h]["etcd"]["leader"] for h in CPS) == 1


# --- certs renew, remove-node, reset ------------------------------------------------------------------------

def _serial(c: Cluster, host: str, rel: str) -> int:
    return x509.load_pem_x509_certificate((c.lab.host(host).rootfs / "etc/kubernetes/pki" / rel).read_bytes()
                                          ).serial_number


class Poller:
    """A client reading through the load balancer in a loop (kubectl get --raw /readyz), counting the longest run of
    consecutive failures: one failed request a retry would hide is tolerated, two in a row are an outage."""

    def __init__(self, c: Cluster) -> None:
        self.c, self.stop, self.ok, self.worst = c, threading.Event(), 0, 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        streak = 0
        while not self.stop.is_set():
            res = self.c.kubectl("get", "--raw", "/readyz", "--request-timeout=5s")
            if res.returncode == 0:
                self.ok, streak = self.ok + 1, 0
            else:
                streak += 1
                self.worst = max(self.worst, streak)
                self.errors.append(res.stderr.strip()[-200:])
            self.stop.wait(0.3)

    def __enter__(self) -> "Poller":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_certs_renew_all_keeps_the_api_answering_through_the_lb(cluster: Cluster) -> None:
    c = cluster
    before = {h: _serial(c, h, "apiserver.crt") for h in CPS}
    cas = {h: (c.lab.host(h).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes() for h in CPS}
    with Poller(c) as poll:
        res = kb(c, "certs", "renew", "all")
    assert res.returncode == 0, res.stderr[-3000:]
    assert poll.ok > 0 and poll.worst <= 1, (poll.worst, poll.errors[:5])
    after = {h: _serial(c, h, "apiserver.crt") for h in CPS}
    assert all(after[h] != before[h] for h in CPS), (before, after)
    assert {h: (c.lab.host(h).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes() for h in CPS} == cas  # same CAs
    for h in CPS:  # signed by that CA, and each API server serves its renewed certificate
        cert = x509.load_pem_x509_certificate((c.lab.host(h).rootfs / "etc/kubernetes/pki/apiserver.crt").read_bytes())
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(cas[h]))
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    res = kb(c, "certs", "check-expiration", "-o", "json")
    assert res.returncode == 0, res.stderr
    days = {item["name"]: item["residual"] for cp in json.loads(res.stdout)["controlPlanes"]
            for item in cp["certificates"] if item.get("expires")}
    assert days["apiserver"] == f"{VALIDITY_DAYS - 1}d" or days["apiserver"] == f"{VALIDITY_DAYS}d", days


def test_remove_node_refuses_to_break_quorum_then_removes_a_control_plane(cluster: Cluster) -> None:
    c = cluster
    gone, down = CPS[2], CPS[1]
    c.lab.stop_kubelet_and_pods(down)  # with h3 stopped, removing h4 would leave 1 healthy of 2 voters
    nginx = (c.lab.host(LB).rootfs / "etc/nginx/nginx.conf").read_bytes()
    try:
        refused = kb(c, "remove-node", gone, "--yes")
        assert refused.returncode == 21, refused.stderr[-2000:]
        assert f"removing {gone} would leave 1 healthy of 2 voting etcd member(s)" in refused.stderr, refused.stderr
        assert f"safe order: start {down} again" in refused.stderr, refused.stderr
        assert (c.lab.host(gone).rootfs / "etc/kubernetes/admin.conf").exists()  # nothing was touched:
        assert (c.lab.host(LB).rootfs / "etc/nginx/nginx.conf").read_bytes() == nginx  # the check comes first
        node = c.kubectl_json("get", "node", gone)
        assert not node["spec"].get("unschedulable"), node["spec"]  # not even cordoned
    finally:
        c.lab.start_unit(down, "kubelet")
    wait_until("status healthy again", lambda: status(c)[0] == 0, timeout=240, interval=3)
    res = kb(c, "remove-node", gone, "--yes")
    assert res.returncode == 0, res.stderr[-3000:]
    code, doc, _took = wait_until("two healthy members", lambda: (r := status(c))[1]["cluster"]["quorum"]["healthy"] == 2
                                  and r, timeout=120, interval=2)
    assert doc["cluster"]["quorum"] == {"votingMembers": 2, "healthy": 2, "ok": True}, doc["cluster"]
    addr = str(c.lab.host(gone).address)
    assert addr not in (c.lab.host(LB).rootfs / "etc/nginx/nginx.conf").read_text()  # no backend for it anywhere
    assert gone not in {n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]}
    assert c.sh(gone, "ls -A /etc/kubernetes /var/lib/etcd | grep -v ':$' | grep -c . || true").strip() == "0"


def test_reset_of_a_worker_leaves_nothing_and_up_joins_it_again(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    res = kb(c, "reset", "--hosts", WORKER)  # no terminal, no --yes: refused after the plan
    assert res.returncode != 0 and "pass --yes" in res.stderr, res.stderr[-2000:]
    assert (c.lab.host(WORKER).rootfs / "etc/kubernetes/kubelet.conf").exists()
    res = kb(c, "reset", "--hosts", WORKER, "--yes")
    assert res.returncode == 0, res.stderr[-3000:]
    left = c.sh(WORKER, "ls -A /etc/kubernetes /var/lib/kubelet /etc/cni/net.d /var/lib/cni 2>/dev/null | "
                        "grep -v ':$' | grep -c .; iptables-save | grep -cE '^:(KUBE|FLANNEL)-'; "
                        "ctr -n k8s.io containers ls -q | wc -l; ls /sys/class/net | grep -cE '^(cni0|flannel)'; "
                        "systemctl is-active kubelet; true").split()
    assert left == ["0", "0", "0", "0", "inactive"], left
    assert kb(c, "reset", "--hosts", WORKER, "--yes").stderr.rstrip().splitlines()[-1].startswith(
        "[done] no changes: nothing to reset")
    # the inventory without the removed control plane, as remove-node told the user to write it
    doc = yaml.safe_load(c.inv.read_text())
    doc["spec"]["hosts"] = [h for h in doc["spec"]["hosts"] if h["name"] != CPS[2]]
    smaller = c.inv.parent / "after-remove.yaml"
    smaller.write_text(yaml.safe_dump(doc, sort_keys=False))
    again = c.kb("up", inv=smaller, netns=True)
    assert again.returncode == 0, again.stderr[-3000:]
    nodes = {n["metadata"]["name"]: any(x["type"] == "Ready" and x["status"] == "True" for x in n["status"]["conditions"])
             for n in c.kubectl_json("get", "nodes")["items"]}
    assert nodes == {CPS[0]: True, CPS[1]: True, WORKER: True}, nodes


def test_remove_node_of_a_host_that_is_gone(cluster: Cluster) -> None:
    """A worker that died (its kubelet and pods stopped, sshd down, open sessions cut): remove-node cannot reset it
    and says how to go on; --unreachable takes it out of the API without connecting to it, and the rest of the
    cluster is untouched."""
    c = cluster
    smaller = c.inv.parent / "after-remove.yaml"  # the inventory the previous test wrote (h4 removed)
    c.lab.stop_kubelet_and_pods(WORKER)
    c.lab.stop_sshd(WORKER, drop_sessions=True)
    try:
        res = c.kb("remove-node", WORKER, "--yes", "-i", str(smaller), "--known-hosts", str(c.lab.known_hosts),
                   "--ssh-config", str(proxy_only_ssh_config(c.lab)), netns=True)
        assert res.returncode == 8, res.stderr[-2000:]
        assert f"kubeboot remove-node {WORKER} --unreachable" in res.stderr, res.stderr[-2000:]
        assert WORKER in {n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]}  # untouched
        res = c.kb("remove-node", WORKER, "--unreachable", "--yes", "-i", str(smaller), "--known-hosts",
                   str(c.lab.known_hosts), "--ssh-config", str(proxy_only_ssh_config(c.lab)), netns=True)
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"{WORKER} is out of the cluster" in res.stdout, res.stdout
        assert WORKER not in {n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]}
        # the pod garbage collector deletes what was bound to the deleted Node
        wait_until(f"no pod bound to {WORKER}", lambda: not c.kubectl_json(
            "get", "pods", "-A", "--field-selector", f"spec.nodeName={WORKER}")["items"], timeout=120, interval=2)
        code, doc, _took = status(c)
        assert doc["cluster"]["quorum"] == {"votingMembers": 2, "healthy": 2, "ok": True}, doc["cluster"]
    finally:
        c.lab.start_sshd(WORKER)
