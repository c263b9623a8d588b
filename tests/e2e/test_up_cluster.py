"""`kubeboot up` end to end: the recipe's HA cluster on systemd lab hosts, air-gapped, every part real.

One module-scoped cluster: h1 load balancer (nginx, external-nginx mode), h2-h4 control planes, h5-h6 workers;
h7 and h8 start outside the inventory (a worker added by a later `up`, a worker joined by the real `kubeadm`).
kubeboot runs as a user runs it on a workstation, inside the lab's controller namespace (it reaches the hosts'
SSH, the endpoint and the control planes there), with the packages from the lab's apt mirror and the images
from the archives built on this machine. Tests run in file order and build on each other.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.nodes import BB, Cluster, containers, images_dir, node_inventory, unit
from tests.lab.aptrepo import AptRepo, apt_repo, use_as_mirror  # noqa: F401 (fixture)
from tests.lab.common import wait_until
from tests.lab.systemd import SystemdLab
from tests.reference.binaries import ref_bin

pytestmark = [pytest.mark.systemd_lab(hosts=8)]

LB, CPS, WORKERS = "h1", ("h2", "h3", "h4"), ("h5", "h6")
LATE_WORKER, KUBEADM_WORKER = "h7", "h8"
# kube-proxy in a lab host cannot set the VM's global conntrack sysctls (usernetes and kind do the same)
KUBE_PROXY = {"conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}}
MANAGED = ("/etc/nginx/nginx.conf", "/etc/containerd/config.toml", "/var/lib/kubelet/config.yaml",
           "/var/lib/kubelet/kubeadm-flags.env", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/admin.conf",
           "/etc/kubernetes/manifests/etcd.yaml", "/etc/kubernetes/manifests/kube-apiserver.yaml",
           "/etc/kubernetes/pki/apiserver.crt", "/root/.kube/config", "/home/kbuser/.kube/config",
           "/etc/bash_completion.d/kubectl", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")


def ha_inventory(lab: SystemdLab, path: Path, sources: str, images: Path, workers: tuple[str, ...] = WORKERS,
                 **spec: Any) -> Path:
    hosts = {LB: ["load-balancer"], **{h: ["control-plane"] for h in CPS}, **{h: ["worker"] for h in workers}}
    return node_inventory(lab, path, hosts, sources, images, controlPlaneEndpoint=f"{lab.host(LB).address}:6443",
                          loadBalancer={"mode": "external-nginx"}, kubeProxy={"config": KUBE_PROXY},
                          kubectl={"users": ["kbuser"]}, **spec)


def build_ha(lab: SystemdLab, apt_repo: AptRepo, d: Path, workers: tuple[str, ...] = WORKERS,
             images: Path | None = None, **spec: Any) -> Cluster:
    """`kubeboot up` of the recipe's cluster (h1 LB, h2-h4 control planes, the workers) and the admin kubeconfig.
    `images`: the archive directory (default: this version's locally built images)."""
    images = images or images_dir()
    kubectl = ref_bin("kubectl")
    if images is None or kubectl is None:
        pytest.skip("no locally built images or kubectl: tests/setup.sh builds them")
    for h in lab.hosts:
        use_as_mirror(lab, h.name, apt_repo.server)
    inv = ha_inventory(lab, d / "cluster.yaml", apt_repo.sources_line, images, workers=workers, **spec)
    c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
    c.first_up = c.kb("up", netns=True)
    (d / "up.log").write_text(c.first_up.stdout + c.first_up.stderr)
    assert c.first_up.returncode == 0, c.first_up.stderr[-6000:]
    got = c.kb("kubeconfig", "-i", str(inv), "-o", str(c.admin))
    assert got.returncode == 0, got.stderr
    return c


@pytest.fixture(scope="module")
def ha(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return build_ha(systemd_lab, apt_repo, tmp_path_factory.mktemp("ha"))


def sources(c: Cluster) -> str:
    line: str = yaml.safe_load(c.inv.read_text())["spec"]["packages"]["aptRepository"]
    return line


def ready_nodes(c: Cluster) -> dict[str, bool]:
    out = {}
    for n in c.kubectl_json("get", "nodes")["items"]:
        out[n["metadata"]["name"]] = any(x["type"] == "Ready" and x["status"] == "True"
                                         for x in n["status"]["conditions"])
    return out


def in_ctl(c: Cluster, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", c.lab.ctl_netns, *argv], capture_output=True, text=True,
                          timeout=timeout)


def etcd_members(c: Cluster, via: str) -> list[dict[str, Any]]:
    pki = c.lab.host(via).rootfs / "etc/kubernetes/pki/etcd"
    etcdctl = ref_bin("etcdctl")
    assert etcdctl is not None
    res = in_ctl(c, str(etcdctl), f"--endpoints=https://{c.lab.host(via).address}:2379", f"--cacert={pki}/ca.crt",
                 f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key", "member", "list",
                 "-w", "json")
    assert res.returncode == 0, res.stderr
    members: list[dict[str, Any]] = json.loads(res.stdout)["members"]
    return members


# --- the cluster ----------------------------------------------------------------------------------------

def test_up_builds_the_recipes_ha_cluster(ha: Cluster) -> None:
    nodes = ready_nodes(ha)
    assert nodes == {h: True for h in (*CPS, *WORKERS)}, nodes  # through the LB, with `kubeboot kubeconfig`
    members = etcd_members(ha, "h2")
    assert sorted(m["name"] for m in members) == list(CPS)
    assert not any(m.get("isLearner") for m in members)  # learners were promoted: 3 voting members
    log = ha.first_up.stderr if ha.first_up else ""
    assert "[summary]" in log and "time per phase:" in log
    # the bootstrap token and the certificate keys never reach the output or the trace log
    state = ha.inv.parent / ".kubeboot" / "nodes"
    secret = (state / "tokens" / "bootstrap").read_text().split()[0].split(".")[1]
    trace = (state / "trace.log").read_text()
    assert secret not in log + ha.first_up.stdout and secret not in trace  # type: ignore[union-attr]
    assert not re.search(r"\b[0-9a-f]{64}\b", log + trace) and "PRIVATE KEY" not in log + trace
    for phase in ("load-balancer", "init/addons/coredns", "join-control-planes", "join-workers", "cni", "kubectl"):
        assert f"[{phase}]" in log, phase


def test_each_api_server_serves_its_own_certificate(ha: Cluster) -> None:
    serials = set()
    for h in CPS:
        addr = str(ha.lab.host(h).address)
        res = in_ctl(ha, "sh", "-c", f"openssl s_client -connect {addr}:6443 </dev/null 2>/dev/null | "
                                     f"openssl x509 -noout -serial -ext subjectAltName")
        assert res.returncode == 0, res.stderr
        assert f"IP Address:{addr}" in res.stdout and f"IP Address:{ha.lab.host(LB).address}" in res.stdout
        serials.add(res.stdout.splitlines()[0])
        key = (ha.lab.host(h).rootfs / "etc/kubernetes/pki/apiserver.key")
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(serials) == 3
    for w in WORKERS:  # workers hold the CA certificate, never a CA key
        pki = ha.lab.host(w).rootfs / "etc/kubernetes/pki"
        assert sorted(p.name for p in pki.iterdir()) == ["ca.crt"]


def test_kube_system_runs_kubeadms_addons_and_flannel(ha: Cluster) -> None:
    def system_pods() -> list[dict[str, Any]]:
        pods = ha.kubectl_json("get", "pods", "-A")["items"]
        return [p for p in pods if p["metadata"]["namespace"] in ("kube-system", "kube-flannel")]

    def ready(p: dict[str, Any]) -> bool:  # Running is not enough: a crash-looping CoreDNS is Running too
        return p["status"]["phase"] == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))

    def running() -> list[dict[str, Any]] | None:
        pods = system_pods()
        return pods if all(ready(p) for p in pods) else None

    try:  # up waits for the nodes; the Deployments' pods may still be starting when it returns
        system = wait_until("every kube-system pod Running and Ready", running, timeout=180, interval=2)
    except Exception:
        stuck = [p for p in system_pods() if not ready(p)]
        why = {h: ha.sh(h, "journalctl -u containerd -u kubelet --no-pager | grep -iE 'sandbox|cni' | tail -5; true")
               for h in {p["spec"].get("nodeName") for p in stuck} if h}
        raise AssertionError(f"{[p['metadata']['name'] for p in stuck]}: {why}") from None
    for prefix in ("coredns-", "kube-proxy-", "kube-flannel-ds-", "etcd-h2", "kube-apiserver-h4"):
        assert any(p["metadata"]["name"].startswith(prefix) for p in system), prefix
    assert ha.kubectl_json("get", "configmap", "-n", "kube-system", "kubeadm-config")["data"]["ClusterConfiguration"]
    assert ha.kubectl_json("get", "daemonset", "-n", "kube-system", "kube-proxy")["status"]["numberReady"] == 5
    svc = ha.kubectl_json("get", "service", "-n", "kube-system", "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"


def test_kubectl_for_root_and_a_named_user_on_every_control_plane(ha: Cluster) -> None:
    for h in CPS:
        root = ha.lab.host(h).rootfs
        admin = (root / "etc/kubernetes/admin.conf").read_bytes()
        for path, owner in (("root/.kube/config", "root"), ("home/kbuser/.kube/config", "kbuser")):
            st = ha.sh(h, f"stat -c '%a %U' /{path}").split()
            assert st == ["600", owner] and (root / path).read_bytes() == admin, (h, path)
        assert "kubectl" in ha.sh(h, "grep -c __start_kubectl /etc/bash_completion.d/kubectl && echo kubectl")
        out = ha.sh(h, "su - kbuser -c 'kubectl get nodes -o name'")
        assert out.count("node/") == 5, out


# --- what the recipe's users do with it -----------------------------------------------------------------

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor,
         labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: %(image)s
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def web_pods(c: Cluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = c.kubectl_json("get", "pods", "-l", "app=web")["items"]
    return [p for p in pods if p["metadata"].get("deletionTimestamp") is None]


def ready_web(c: Cluster, n: int) -> list[dict[str, Any]] | None:
    pods = web_pods(c)
    ok = [p for p in pods if any(x["type"] == "Ready" and x["status"] == "True"
                                 for x in p["status"].get("conditions", []))]
    return ok if len(ok) == n == len(pods) else None


def endpoints(c: Cluster) -> int:
    eps = c.kubectl_json("get", "endpoints", "web")
    return sum(len(s.get("addresses", [])) for s in eps.get("subsets") or [])


def test_a_deployment_answers_by_dns_name_from_another_node(ha: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB % {"image": BB})
    res = ha.kubectl("apply", "-f", str(manifest))
    assert res.returncode == 0, res.stderr
    pods = wait_until("3 web pods ready", lambda: ready_web(ha, 3), timeout=180, interval=1)
    assert {p["spec"]["nodeName"] for p in pods} == set(WORKERS)  # spread over the workers
    # busybox's nslookup asks CoreDNS; nc, not wget: Debian's static busybox wget crashes in its libc lookups
    script = ("for i in $(seq 30); do out=$(nslookup web.default.svc.cluster.local 2>&1); "
              "ip=$(echo \"$out\" | awk '/^Address/ {a=$NF} END {print a}'); echo \"resolved $ip\"; "
              "[ -n \"$ip\" ] || echo \"$out\" | sed 's/^/resolved nslookup: /'; "
              "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$ip\" 80 | tail -n 1; done")
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default"},
              "spec": {"nodeName": WORKERS[0], "restartPolicy": "Never",
                       "containers": [{"name": "c", "image": BB, "imagePullPolicy": "Never",
                                       "command": ["sh", "-c", script]}]}}
    client_text = yaml.safe_dump(client)
    (tmp_path / "client.yaml").write_text(client_text)
    assert ha.kubectl("apply", "-f", str(tmp_path / "client.yaml")).returncode == 0
    wait_until("client finished", lambda: ha.kubectl_json("get", "pod", "client")["status"]["phase"]
               in ("Succeeded", "Failed"), timeout=120, interval=1)
    logs = ha.kubectl("logs", "client").stdout.split("\n")
    svc_ip = ha.kubectl_json("get", "service", "web")["spec"]["clusterIP"]
    if f"resolved {svc_ip}" not in logs:  # diagnostics: CoreDNS, then the Service path on that node
        dns = ha.kubectl("logs", "-n", "kube-system", "-l", "k8s-app=kube-dns", "--tail=5", "--prefix").stdout
        rules = ha.sh(WORKERS[0], "iptables-save 2>&1 | grep -E 'kube-dns|KUBE-SVC' | head -20; true")
        raise AssertionError(f"{logs[:6]}\ncoredns: {dns[-3000:]}\nrules: {rules}")
    answers = {ln for ln in logs if ln and not ln.startswith("resolved")}
    other = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] != WORKERS[0]}
    assert answers <= {p["metadata"]["name"] for p in pods} and answers & other, answers
    ha.kubectl("delete", "pod", "client", "--wait=false")


def test_a_deleted_pod_is_replaced_scaling_and_drain(ha: Cluster) -> None:
    victim = web_pods(ha)[0]["metadata"]["name"]
    assert ha.kubectl("delete", "pod", victim, "--wait=false").returncode == 0
    pods = wait_until("a replacement", lambda: (p := ready_web(ha, 3)) and
                      victim not in {x["metadata"]["name"] for x in p} and p, timeout=120, interval=1)
    assert len(pods) == 3
    assert ha.kubectl("scale", "deployment", "web", "--replicas=5").returncode == 0
    wait_until("5 endpoints", lambda: endpoints(ha) == 5, timeout=120, interval=1)
    # drain needs room: the topology spread must allow one worker to hold all
    ha.kubectl("patch", "deployment", "web", "--type=json",
               "-p", '[{"op": "remove", "path": "/spec/template/spec/topologySpreadConstraints"}]')
    wait_until("rolled out", lambda: ready_web(ha, 5), timeout=120, interval=1)
    drain = ha.kubectl("drain", WORKERS[1], "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
    assert drain.returncode == 0, drain.stderr
    moved = wait_until("pods moved", lambda: ready_web(ha, 5), timeout=120, interval=1)
    assert {p["spec"]["nodeName"] for p in moved} == {WORKERS[0]}
    assert ha.kubectl("uncordon", WORKERS[1]).returncode == 0


# --- converging --------------------------------------------------------------------------------------

def snapshot(c: Cluster, hosts: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for h in hosts:
        files = c.sh(h, "for f in " + " ".join(MANAGED) + "; do [ -f $f ] && echo \"$f $(sha256sum < $f | "
                        "cut -c1-16) $(stat -c %Y $f)\"; done; true")
        units = {u: unit(c.lab, h, u)[1:] for u in ("containerd", "kubelet", "nginx")}
        out[h] = (files, units, {k: v["id"] for k, v in containers(c.lab, h).items()})
    return out


def test_a_second_up_changes_and_restarts_nothing(ha: Cluster) -> None:
    hosts = (LB, *CPS, *WORKERS)
    before = snapshot(ha, hosts)
    again = ha.kb("up", netns=True)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "no changes: the hosts already match" in again.stderr, again.stderr[-4000:]
    assert snapshot(ha, hosts) == before
    plan = ha.kb("plan", netns=True)
    assert plan.returncode == 0 and "plan: no changes" in plan.stderr, plan.stderr[-3000:]


def test_a_host_added_later_joins_alone(ha: Cluster) -> None:
    hosts = (LB, *CPS, *WORKERS)
    before = snapshot(ha, hosts)
    bigger = ha_inventory(ha.lab, ha.inv.parent / "bigger.yaml", sources(ha), ha.images,
                          workers=(*WORKERS, LATE_WORKER))
    plan = ha.kb("plan", inv=bigger, netns=True)
    assert plan.returncode == 0, plan.stderr
    planned = [ln for ln in plan.stderr.splitlines() if "would" in ln]
    assert planned and all(f"] {LATE_WORKER}:" in ln for ln in planned), planned
    # the state directory's bootstrap token has expired meanwhile (24h): up makes and uploads a new one
    token_file = ha.inv.parent / ".kubeboot" / "nodes" / "tokens" / "bootstrap"
    old = token_file.read_text().split()[0]
    token_file.write_text(f"{old} 2020-01-01T00:00:00Z\n")
    res = ha.kb("up", inv=bigger, netns=True)
    assert res.returncode == 0, res.stderr[-4000:]
    new = token_file.read_text().split()[0]
    assert new.split(".")[0] != old.split(".")[0]
    assert f"create kube-system/secret/bootstrap-token-{new.split('.')[0]}" in res.stderr
    assert ready_nodes(ha).get(LATE_WORKER) is True
    assert snapshot(ha, hosts) == before  # nothing else was touched


def test_a_worker_joined_by_the_real_kubeadm_beside_kubeboots_nodes(ha: Cluster) -> None:
    h = KUBEADM_WORKER
    prep = ha_inventory(ha.lab, ha.inv.parent / "prep.yaml", sources(ha), ha.images,
                        workers=(*WORKERS, LATE_WORKER, h))
    res = ha.kb("up", "--skip-phases", "join-workers,cni,kubectl", inv=prep, netns=True)
    assert res.returncode == 0, res.stderr[-4000:]
    ha.sh(h, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubeadm >/dev/null")
    cmd = ha.kb("token", "create", "--kubeconfig", str(ha.admin), "--print-join-command", netns=True)
    assert cmd.returncode == 0, cmd.stderr
    line = cmd.stdout.strip().replace("kubeboot join", "kubeadm join", 1)
    out = ha.lab.run_in(h, ["sh", "-c", f"{line} --node-name {h} --ignore-preflight-errors=all"], timeout=300,
                        check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wait_until(f"{h} Ready", lambda: ready_nodes(ha).get(h), timeout=180, interval=2)
    again = ha.kb("up", inv=prep, netns=True)  # kubeboot sees a joined node and leaves it alone
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{h}: join" not in again.stderr


def test_kubeadm_upgrade_plan_reads_a_kubeboot_control_plane(ha: Cluster) -> None:
    """A kubeboot cluster stays a kubeadm cluster: the real kubeadm on a control plane reads kubeadm-config, runs its
    cluster health checks and plans (the target version given, so it asks no release server)."""
    cp = CPS[1]
    ha.sh(cp, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubeadm >/dev/null")
    out = ha.lab.run_in(cp, ["kubeadm", "upgrade", "plan", "v1.37.2"], timeout=180, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert 'Reading configuration from the "kubeadm-config" ConfigMap' in text
    assert "[upgrade/versions] Cluster version: 1.37.2" in text and "Target version: v1.37.2" in text
    assert "error" not in text.lower() and "WARNING" not in text, text


# --- failover, as the recipe states it ----------------------------------------------------------------

def test_failover_one_master_down_then_two_then_recovery(ha: Cluster) -> None:
    assert ha.kubectl("create", "configmap", "before-failure", "--from-literal=k=v").returncode == 0
    ha.lab.stop_kubelet_and_pods(CPS[0])  # every control-plane process of h2 and its kubelet stop
    try:
        wait_until("reads and writes through the LB", lambda: ha.kubectl(
            "create", "configmap", f"w-{time.monotonic_ns()}", "--from-literal=k=v").returncode == 0,
            timeout=60, interval=1)
        assert ha.kubectl("get", "nodes").returncode == 0
        ha.lab.stop_kubelet_and_pods(CPS[1])  # quorum lost: 1 of 3 etcd members
        t0 = time.monotonic()
        res = ha.kb("token", "create", "--kubeconfig", str(ha.admin), netns=True)
        took = time.monotonic() - t0
        assert res.returncode != 0 and "error:" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert took < 120, took  # an answer, not a hang
    finally:
        for h in CPS[:2]:
            ha.lab.start_unit(h, "kubelet")
    def all_ready() -> bool:  # right after a restart an API server may refuse (RBAC cache not synced yet)
        try:
            return all(ready_nodes(ha).values())
        except AssertionError:
            return False

    wait_until("all nodes Ready again", all_ready, timeout=300, interval=2)
    got = wait_until("the key written before the failure", lambda: ha.kubectl_json(
        "get", "configmap", "before-failure", check=False), timeout=60, interval=1)
    assert got["data"] == {"k": "v"}
    assert sorted(m["name"] for m in etcd_members(ha, CPS[2])) == list(CPS)
    assert ha.kubectl("create", "configmap", "after-recovery", "--from-literal=k=v").returncode == 0

