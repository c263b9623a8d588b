"""Real nodes: kubeboot drives real systemd, containerd and the kubelet in systemd lab hosts, air-gapped.

One module-scoped cluster on a 2-host systemd lab (tests/lab/systemd.py), hosts that reach nothing but the lab:
* `kubeboot up --images DIR` on h1 (a single control plane): preflight passes (Systemd included), containerd,
  kubelet and kubectl come from the lab's apt mirror, every image from the archives built locally
  (tests/reference/images.py), the kubelet started by systemd runs kubeboot's four static pods;
* the API phases from the workstation (bootstrap-token, upload-config) and `kubeboot join` for h2 (a worker),
  whose kubelet, started by systemd, completes the TLS bootstrap and registers NotReady (no CNI yet);
* static-pod behaviour on that real kubelet (restart, edit, delete, mirror pods, API server down);
* a second `up` that changes, imports and restarts nothing (MainPID / ActiveEnterTimestamp unchanged);
* bad inputs (a file that is not an image archive, an unknown kubelet field, a flag a component lacks) refused
  before any host is touched.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.nodes import NODES_ONLY, BB, CP, SERVICES, WORKER, Cluster, containers, images_dir, node_inventory, unit
from tests.lab.aptrepo import AptRepo, apt_repo, use_as_mirror  # noqa: F401 (fixture)
from tests.lab.common import wait_until
from tests.lab.systemd import SystemdLab
from tests.reference.binaries import ref_bin

pytestmark = [pytest.mark.systemd_lab(hosts=2)]


@pytest.fixture(scope="module")
def cluster(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    images = images_dir()
    if images is None:
        pytest.skip("no locally built images: run `python3 -m tests.reference.images` (tests/setup.sh does)")
    kubectl = ref_bin("kubectl")
    if kubectl is None:
        pytest.skip("no reference kubectl: tests/reference/build.sh --only kubectl")
    lab = systemd_lab
    for h in (CP, WORKER):
        use_as_mirror(lab, h, apt_repo.server)  # the lab mirror is the hosts' only package source
    d = tmp_path_factory.mktemp("nodes")
    inv = node_inventory(lab, d / "cluster.yaml", {CP: ["control-plane"]}, apt_repo.sources_line, images)
    c = Cluster(lab, inv, images, d / "admin.conf", kubectl)
    c.first_up = c.kb("up", *NODES_ONLY)
    assert c.first_up.returncode == 0, c.first_up.stdout + c.first_up.stderr
    (d / "up.log").write_text(c.first_up.stdout + c.first_up.stderr)
    c.admin.write_bytes((lab.host(CP).rootfs / "etc/kubernetes/admin.conf").read_bytes())
    (d / "super-admin.conf").write_bytes((lab.host(CP).rootfs / "etc/kubernetes/super-admin.conf").read_bytes())
    return c


# --- the control plane ---------------------------------------------------------------------------------


def test_hosts_reach_nothing_but_the_lab(cluster: Cluster) -> None:
    """Air-gapped: no route anywhere but the lab bridge, so every image came from the archives."""
    routes = cluster.sh(CP, "ip -4 route")
    assert re.search(r"^default via 10\.200\.0\.1 ", routes, re.M)
    code = cluster.sh(CP, "timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.1/443' 2>/dev/null; echo $?").strip()
    assert code != "0"
    assert "images" in cluster.first_up.stdout + cluster.first_up.stderr


def test_services_enabled_and_started_by_systemd(cluster: Cluster) -> None:
    lab = cluster.lab
    for name in SERVICES:
        st = lab.unit_state(CP, name)
        assert st["ActiveState"] == "active", (name, st)
        assert lab.sh_in(CP, f"systemctl is-enabled {name}").strip() == "enabled"
    # the kubelet runs with kubeboot's drop-in (the packaged unit carries no flags of its own)
    assert "10-kubeadm.conf" in lab.sh_in(CP, "systemctl show -p DropInPaths --value kubelet")
    cmdline = lab.sh_in(CP, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value kubelet)/cmdline")
    assert "--config=/var/lib/kubelet/config.yaml" in cmdline and "--node-ip=10.200.0.11" in cmdline
    assert "--kubeconfig=/etc/kubernetes/kubelet.conf" in cmdline
    out = cluster.first_up.stdout + cluster.first_up.stderr
    # Debian's containerd starts on install, so kubeboot's config change restarts it; the kubelet (enabled, waiting
    # for its config) is started once its files are in place, after a daemon-reload for the new drop-in
    assert "ran `systemctl restart containerd`: /etc/containerd/config.toml changed" in out
    assert "ran `systemctl enable kubelet`" in out
    assert out.index("ran `systemctl daemon-reload`") < out.index("ran `systemctl restart kubelet`: the kubelet is not")
    assert "Systemd" not in out  # the preflight check passed: systemd is PID 1
    assert "warning CgroupsV1: the host uses cgroup v1" in out  # read from the host; allowed by the override


def test_kubelet_runs_kubeboots_static_pods_from_the_archives(cluster: Cluster) -> None:
    running = containers(cluster.lab, CP)
    for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"{comp}-{CP}/{comp}" in running, sorted(running)
    # systemd cgroup driver (the default), kubelet and containerd agreeing: pods are systemd slices and scopes
    cg = cluster.sh(CP, f"grep ':memory:' /proc/{running[f'kube-apiserver-{CP}/kube-apiserver']['pid']}/cgroup")
    assert re.search(r":memory:/kubepods\.slice/kubepods-burstable\.slice/kubepods-burstable-pod[0-9a-f_]+\.slice/"
                     r"cri-containerd-[0-9a-f]{64}\.scope$", cg.strip()), cg
    # no pull ever happened: every image in containerd came from an archive kubeboot imported
    refs = cluster.sh(CP, "ctr -n k8s.io images ls -q")
    for ref in ("registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/etcd:3.7.0-0",
                "registry.k8s.io/pause:3.10.2"):
        assert ref in refs.split()
    assert "Pulling image" not in cluster.sh(CP, "journalctl -u kubelet --no-pager | grep -c 'Pulling image' || true")


def test_api_phases_and_mirror_pods_running_with_admin_conf(cluster: Cluster) -> None:
    sup = cluster.inv.parent / "super-admin.conf"
    boot = cluster.kb("init", "phase", "bootstrap-token", "--kubeconfig", str(cluster.admin),
                      "--super-admin-kubeconfig", str(sup), "--print-join-command", netns=True)
    assert boot.returncode == 0, boot.stderr
    cfg = cluster.kb("init", "phase", "upload-config", "--kubeconfig", str(cluster.admin), "-i", str(cluster.inv),
                     netns=True)
    assert cfg.returncode == 0, cfg.stderr
    (cluster.inv.parent / "join.txt").write_text(boot.stdout)

    def four_running() -> bool:
        pods = cluster.kubectl_json("get", "pods", "-n", "kube-system", check=False)
        if not pods:
            return False
        names = {p["metadata"]["name"]: p for p in pods["items"]}
        want = [f"{c}-{CP}" for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")]
        return all(n in names and names[n]["status"].get("phase") == "Running" and all(
            s.get("ready") for s in names[n]["status"].get("containerStatuses", [])) for n in want)

    wait_until("the four mirror pods Running and ready", four_running, timeout=180, interval=1)
    pod = cluster.kubectl_json("get", "pod", "-n", "kube-system", f"kube-apiserver-{CP}")
    assert pod["metadata"]["annotations"]["kubernetes.io/config.source"] == "file"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Node"  # a mirror pod, owned by its node
    node = cluster.kubectl_json("get", "node", CP)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"


# --- a worker joined with `kubeboot join` ----------------------------------------------------------------


def test_worker_joined_by_kubeboot_join_completes_tls_bootstrap(cluster: Cluster) -> None:
    lab = cluster.lab
    join_line = (cluster.inv.parent / "join.txt").read_text().strip().splitlines()[-1]
    # the runtime (containerd, kubelet) and images on h2 through `up`, as the recipe installs them before a join
    sources = yaml.safe_load(cluster.inv.read_text())["spec"]["packages"]["aptRepository"]
    allhosts = node_inventory(lab, cluster.inv.parent / "all.yaml", {CP: ["control-plane"], WORKER: ["worker"]},
                              sources, cluster.images)
    prep = cluster.kb("up", "--only", "preflight", "--only", "prepare", "--only", "runtime", "--only", "images",
                      inv=allhosts)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    args = shlex.split(join_line)[2:]  # drop "kubeboot join"
    root = lab.host(WORKER).rootfs
    cluster.join = cluster.kb("join", *args, "--node-name", WORKER, "--node-ip", str(lab.host(WORKER).address),
                              "--rootfs", str(root), netns=True)
    assert cluster.join.returncode == 0, cluster.join.stderr
    assert not (root / "etc/kubernetes/pki/ca.key").exists()  # a worker never receives a CA key
    with lab.connection(WORKER) as conn:  # the recipe's kubelet-start, by hand on the node
        conn.run("systemctl daemon-reload && systemctl restart kubelet", hide=True)
    try:
        wait_until("h2's kubelet.conf after the TLS bootstrap",
                   lambda: (root / "etc/kubernetes/kubelet.conf").exists(), timeout=120, interval=0.5)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{cluster.join.stdout}{cluster.join.stderr}\n" + lab.sh_in(
            WORKER, "systemctl status kubelet --no-pager | head -20; journalctl -u kubelet --no-pager | tail -30; "
                    "ls -la /etc/kubernetes /var/lib/kubelet; cat /var/lib/kubelet/kubeadm-flags.env")) from None
    pem = lab.sh_in(WORKER, "openssl x509 -noout -subject -issuer -in /var/lib/kubelet/pki/kubelet-client-current.pem"
                            " 2>/dev/null || cat /var/lib/kubelet/pki/kubelet-client-current.pem | head -1")
    assert "system:node:h2" in pem or "BEGIN CERTIFICATE" in pem

    def registered() -> Any:
        return cluster.kubectl_json("get", "node", WORKER, check=False)

    node = wait_until("node h2 registered", registered, timeout=120, interval=1)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")

    def not_ready_for_cni() -> Any:
        n = registered()
        r = next((c for c in (n or {}).get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
        return r if r and r["status"] == "False" and "cni" in r.get("message", "").lower() else None

    ready = wait_until("h2 NotReady because no CNI exists yet", not_ready_for_cni, timeout=120, interval=1)
    assert ready["reason"] == "KubeletNotReady"
    assert "NetworkPluginNotReady" in ready["message"] or "network plugin" in ready["message"].lower(), ready


# --- static pods on the real kubelet ---------------------------------------------------------------------


BB_POD = """apiVersion: v1
kind: Pod
metadata:
  name: bb
  namespace: default
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: sleeper
    image: {image}
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo started {marker}; trap 'exit 0' TERM; while :; do sleep 1; done"]
"""
MANIFEST = "/etc/kubernetes/manifests/bb.yaml"


def _write_manifest(c: Cluster, marker: str) -> None:
    c.lab.sh_in(CP, f"cat > {MANIFEST}.tmp <<'EOF'\n{BB_POD.format(image=BB, marker=marker)}EOF\n"
                    f"mv {MANIFEST}.tmp {MANIFEST}")


def _mirror(c: Cluster) -> Any:
    return c.kubectl_json("get", "pod", "-n", "default", f"bb-{CP}", check=False)


def _bb(c: Cluster) -> dict[str, str] | None:
    return containers(c.lab, CP).get(f"bb-{CP}/sleeper")


def _settled(c: Cluster) -> dict[str, str] | None:
    """bb's running container once the kubelet has reported that very container in the mirror pod: a container
    caught before that may still be replaced by the kubelet's own first syncs of a new static pod."""
    b, m = _bb(c), _mirror(c)
    statuses = (m or {}).get("status", {}).get("containerStatuses") or [{}]
    return b if b and statuses[0].get("containerID") == f"containerd://{b['id']}" and \
        "running" in statuses[0].get("state", {}) else None


def _kill(c: Cluster, pid: str) -> None:
    out = c.lab.sh_in(CP, f"kill -9 {pid} 2>&1 && echo killed || {{ echo FAILED; ctr -n k8s.io tasks ls; "
                          f"ps -eo pid,ppid,args | grep -v ' \\[' | tail -30; journalctl -u kubelet --no-pager | "
                          f"grep -i 'bb' | tail -20; }}")
    assert out.strip() == "killed", out


def test_static_pod_lifecycle_on_the_real_kubelet(cluster: Cluster) -> None:
    c = cluster
    _write_manifest(c, "v1")
    first = wait_until("static pod bb running, reported in its mirror pod", lambda: _settled(c), timeout=90,
                       interval=0.3)
    mirror = _mirror(c)
    assert mirror["metadata"]["name"] == f"bb-{CP}" and mirror["spec"]["nodeName"] == CP

    # killing the container: the kubelet starts a new one, the restart count grows
    _kill(c, first["pid"])
    second = wait_until("bb restarted", lambda: (b := _bb(c)) and b["id"] != first["id"] and b, timeout=60,
                        interval=0.3)
    wait_until("restartCount 1 in the mirror pod", lambda: (m := _mirror(c)) and
               m["status"]["containerStatuses"][0]["restartCount"] >= 1, timeout=60, interval=0.5)

    # the mirror pod is read-only for the node's work: deleting it through the API does not stop the static pod
    uid = mirror["metadata"]["uid"]
    assert c.kubectl("delete", "pod", "-n", "default", f"bb-{CP}", "--wait=false").returncode == 0
    # the kubelet notices at its next sync of the pod (syncFrequency, 1 min by default) and recreates it
    wait_until("the mirror pod back (new object)", lambda: (m := _mirror(c)) and m["metadata"]["uid"] != uid
               and not m["metadata"].get("deletionTimestamp"), timeout=180, interval=0.5)
    assert _bb(c) == second  # same container, never restarted

    # changing the mirror pod's image through the API changes nothing the kubelet runs: even the next restart of
    # the container uses the image from the file
    patch = c.kubectl("patch", "pod", "-n", "default", f"bb-{CP}", "--type=json", "-p",
                      json.dumps([{"op": "replace", "path": "/spec/containers/0/image",
                                   "value": "registry.k8s.io/pause:3.10.2"}]))
    assert _bb(c) == second
    _kill(c, second["pid"])
    after = wait_until("bb restarted after the patch", lambda: (b := _bb(c)) and b["id"] != second["id"] and b,
                       timeout=60, interval=0.3)
    assert BB in c.lab.sh_in(CP, f"ctr -n k8s.io c info {after['id']} | grep -m1 '\"Image\"'"), patch.stderr
    second = after

    # editing the file recreates the pod with the change
    _write_manifest(c, "v2")
    wait_until("bb recreated from the edited file", lambda: "started v2" in c.lab.sh_in(
        CP, "cat /var/log/pods/default_bb-h1_*/sleeper/*.log 2>/dev/null; true"), timeout=120, interval=0.5)
    third = _bb(c)
    assert third is not None and third["id"] != second["id"]

    # deleting the file removes the pod, and its mirror
    c.lab.sh_in(CP, f"rm {MANIFEST}")
    wait_until("bb stopped", lambda: _bb(c) is None, timeout=120, interval=0.5)
    wait_until("mirror pod gone", lambda: _mirror(c) is None, timeout=60, interval=0.5)


def test_with_the_api_server_down_the_kubelet_keeps_and_restarts_static_pods(cluster: Cluster) -> None:
    c = cluster
    _write_manifest(c, "offline")
    bb = wait_until("bb running, reported in its mirror pod", lambda: _settled(c), timeout=90, interval=0.3)
    etcd_before = containers(c.lab, CP)[f"etcd-{CP}/etcd"]
    c.lab.sh_in(CP, "mv /etc/kubernetes/manifests/kube-apiserver.yaml /root/kube-apiserver.yaml")
    try:
        wait_until("the API server stopped", lambda: f"kube-apiserver-{CP}/kube-apiserver" not in
                   containers(c.lab, CP), timeout=120, interval=0.5)
        _kill(c, bb["pid"])
        wait_until("bb restarted without an API server", lambda: (b := _bb(c)) and b["id"] != bb["id"],
                   timeout=60, interval=0.3)
        assert containers(c.lab, CP)[f"etcd-{CP}/etcd"] == etcd_before  # the others kept running
    finally:
        c.lab.sh_in(CP, "mv /root/kube-apiserver.yaml /etc/kubernetes/manifests/kube-apiserver.yaml")
        c.lab.sh_in(CP, f"rm -f {MANIFEST}")
    wait_until("the API server back", lambda: c.kubectl("get", "--raw", "/readyz").returncode == 0, timeout=180,
               interval=1)


# --- re-run and bad inputs ---------------------------------------------------------------------------------


def test_second_up_changes_imports_and_restarts_nothing(cluster: Cluster) -> None:
    lab = cluster.lab
    before = {name: unit(lab, CP, name) for name in SERVICES}
    again = cluster.kb("up", *NODES_ONLY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no changes: the hosts already match" in again.stdout + again.stderr
    assert "import" not in again.stdout and "uploaded" not in again.stdout + again.stderr
    assert {name: unit(lab, CP, name) for name in SERVICES} == before


def test_a_changed_input_restarts_exactly_the_service_that_reads_it(cluster: Cluster, tmp_path: Path) -> None:
    lab = cluster.lab
    doc = yaml.safe_load(cluster.inv.read_text())
    doc["spec"]["kubelet"]["config"]["maxPods"] = 150
    changed = cluster.inv.parent / "maxpods.yaml"
    changed.write_text(yaml.safe_dump(doc))
    before = {name: unit(lab, CP, name) for name in SERVICES}
    res = cluster.kb("up", *NODES_ONLY, inv=changed)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "/var/lib/kubelet/config.yaml" in out and "systemctl restart kubelet" in out
    after = {name: unit(lab, CP, name) for name in SERVICES}
    assert after["containerd"] == before["containerd"]
    assert after["kubelet"][0] == "active" and after["kubelet"][1] != before["kubelet"][1]
    assert "maxPods: 150" in lab.sh_in(CP, "cat /var/lib/kubelet/config.yaml")
    back = cluster.kb("up", *NODES_ONLY)  # and back: one more restart, then quiet again
    assert back.returncode == 0 and "maxPods" not in lab.sh_in(CP, "cat /var/lib/kubelet/config.yaml")
    wait_until("the API server ready again", lambda: cluster.kubectl("get", "--raw", "/readyz").returncode == 0,
               timeout=180, interval=1)


def _snapshot(lab: SystemdLab) -> dict[str, str]:
    return {h: lab.sh_in(h, "find /etc/kubernetes /var/lib/kubelet /etc/containerd -type f -printf '%p %T@\\n' "
                            "2>/dev/null | sort; ctr -n k8s.io images ls -q 2>/dev/null | sort; true")
            for h in (CP, WORKER)}


@pytest.mark.parametrize("case", ["not-an-archive", "kubelet-unknown-field", "unknown-extra-arg"])
def test_bad_input_is_refused_before_any_host_is_touched(cluster: Cluster, case: str,
                                                         tmp_path: Path) -> None:
    lab = cluster.lab
    doc = yaml.safe_load(cluster.inv.read_text())
    if case == "not-an-archive":
        bad = tmp_path / "images"
        bad.mkdir()
        (bad / "kube-apiserver.tar").write_bytes(b"PK\x03\x04 a zip, not a tar" * 64)
        doc["spec"]["images"]["archiveDir"] = str(bad)
        expect_code, expect = 17, f"{bad / 'kube-apiserver.tar'}: not an image archive"
    elif case == "kubelet-unknown-field":
        doc["spec"]["kubelet"]["config"]["maxPodz"] = 10
        expect_code, expect = 3, "spec.kubelet.config.maxPodz"
    else:
        doc["spec"]["apiServer"] = {"extraArgs": [{"name": "no-such-flag", "value": "1"}]}
        expect_code, expect = 3, "no-such-flag"
    inv = tmp_path / "cluster.yaml"
    inv.write_text(yaml.safe_dump(doc))
    before = _snapshot(lab)
    res = cluster.kb("up", *NODES_ONLY, "--state-dir", str(cluster.inv.parent / ".kubeboot" / "nodes"), inv=inv)
    assert res.returncode == expect_code, res.stdout + res.stderr
    assert expect in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert _snapshot(lab) == before
