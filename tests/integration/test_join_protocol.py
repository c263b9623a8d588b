"""kubeadm's join protocol, kubeboot side, against a real control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler from kubeboot's rendered manifests) and the real kubeadm.

Every kubeboot command runs as the real CLI inside the workstation namespace, so exit codes and output are
what a user sees. Interop runs the real kubeadm v1.37.2 against the same API server.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Rendered, render_inventory
from tests.reference.binaries import ref_bin, require_bin
from tests.reference.controlplane import Network, StaticPodRunner, prerequisites, wait_for

pytestmark = pytest.mark.reference

CP1, CP2, W1 = "10.200.7.11", "10.200.7.12", "10.200.7.21"
EP = f"{CP1}:6443"
INVENTORY = f"""\
apiVersion: kubeboot.io/v1alpha1
kind: Cluster
metadata: {{name: jointest}}
spec:
  kubernetesVersion: "1.37"
  controlPlaneEndpoint: {EP}
  loadBalancer: {{mode: none}}
  hosts:
    - {{name: cp1, address: {CP1}, roles: [control-plane]}}
    - {{name: w1, address: {W1}, roles: [worker]}}
"""
SHARED = ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub", "etcd/ca.crt",
          "etcd/ca.key")


class Cluster:
    def __init__(self, tmp: Path, tree: Rendered, net: Network, cp1: StaticPodRunner) -> None:
        self.tmp, self.tree, self.net, self.cp1 = tmp, tree, net, cp1

    def conf(self, name: str) -> str:
        return str(self.tree.path("cp1", f"/etc/kubernetes/{name}"))

    def kubeboot(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.net.run("ctl", [sys.executable, "-m", "kubeboot.cli", *args], timeout=timeout)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = self.kubeboot(*args)
        assert res.returncode == 0, f"kubeboot {' '.join(args)} -> {res.returncode}\n{res.stderr}\n{self.cp1.logs()}"
        return res

    def upload_certs(self) -> str:
        """`kubeboot init phase upload-certs` with cp1's admin.conf and PKI; returns the printed key."""
        return self.ok("init", "phase", "upload-certs", "--upload-certs", "--kubeconfig", self.conf("admin.conf"),
                       "--cert-dir", str(self.tree.path("cp1", "/etc/kubernetes/pki"))).stdout.strip()

    def kubectl(self, *args: str) -> str:
        res = self.cp1.kubectl(*args, kubeconfig="admin.conf")
        assert res.returncode == 0, res.stderr
        return res.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problems = prerequisites()
    if problems:
        pytest.skip("real control plane not possible here: " + "; ".join(problems))
    tmp = tmp_path_factory.mktemp("join")
    tree = render_inventory(INVENTORY, tmp / "render")
    (tmp / "inventory.yaml").write_text(INVENTORY)
    with Network({"cp1": CP1, "cp2": CP2, "w1": W1}) as net:
        with StaticPodRunner(net, tree.root, "cp1", tmp / "cp1") as cp1:
            cp1.start_all()
            c = Cluster(tmp, tree, net, cp1)
            c.ok("init", "phase", "bootstrap-token", "--kubeconfig", c.conf("admin.conf"),
                 "--super-admin-kubeconfig", c.conf("super-admin.conf"))
            c.ok("init", "phase", "upload-config", "--kubeconfig", c.conf("admin.conf"), "-i",
                 str(tmp / "inventory.yaml"))
            yield c


def nothing_written(root: Path) -> bool:
    return not root.exists() or not any(root.rglob("*"))


def _join_command(c: Cluster) -> tuple[str, str]:
    out = c.ok("token", "create", "--print-join-command", "--kubeconfig", c.conf("admin.conf")).stdout.strip()
    m = re.fullmatch(rf"kubeboot join {re.escape(EP)} --token (\S+) --discovery-token-ca-cert-hash (sha256:[0-9a-f]{{64}})",
                     out)
    assert m, out
    return m[1], m[2]


def test_bootstrap_objects_and_a_second_run_changes_nothing(cluster: Cluster) -> None:
    res = cluster.ok("init", "phase", "bootstrap-token", "--kubeconfig", cluster.conf("admin.conf"))
    assert "0 object(s) created or updated" in res.stderr
    for kind, name in (("clusterrolebinding", "kubeadm:kubelet-bootstrap"), ("clusterrolebinding", "kubeadm:get-nodes"),
                       ("clusterrolebinding", "kubeadm:node-autoapprove-bootstrap"),
                       ("clusterrolebinding", "kubeadm:node-autoapprove-certificate-rotation"),
                       ("clusterrolebinding", "kubeadm:cluster-admins"),
                       ("clusterrolebinding", "kubeadm:apiserver-kubelet-client")):
        assert name in cluster.kubectl("get", kind, name, "-o", "name")
    for ns, name in (("kube-public", "kubeadm:bootstrap-signer-clusterinfo"), ("kube-system", "kubeadm:kubelet-config"),
                     ("kube-system", "kubeadm:nodes-kubeadm-config")):
        assert name in cluster.kubectl("get", "rolebinding", "-n", ns, name, "-o", "name")
    cc = yaml.safe_load(yaml.safe_load(cluster.kubectl("get", "cm", "-n", "kube-system", "kubeadm-config", "-o",
                                                       "yaml"))["data"]["ClusterConfiguration"])
    assert cc["controlPlaneEndpoint"] == EP and cc["kubernetesVersion"] == "v1.37.2"


def test_signed_cluster_info_is_accepted_and_a_worker_gets_its_files(cluster: Cluster) -> None:
    token, pin = _join_command(cluster)
    listed = cluster.ok("token", "list", "--kubeconfig", cluster.conf("admin.conf")).stdout
    assert token.split(".")[0] in listed and token.split(".")[1] not in listed  # ids only, never secrets
    root = cluster.tmp / "w1-root"
    res = cluster.ok("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--node-name", "w1",
                     "--node-ip", W1, "--rootfs", str(root), "--discovery-timeout", "60")
    assert token.split(".")[1] not in res.stderr + res.stdout
    boot = yaml.safe_load((root / "etc/kubernetes/bootstrap-kubelet.conf").read_text())
    assert boot["clusters"][0]["cluster"]["server"] == f"https://{EP}"
    assert boot["users"][0] == {"name": "tls-bootstrap-token-user", "user": {"token": token}}
    assert (root / "etc/kubernetes/pki/ca.crt").read_bytes() == cluster.tree.path("cp1", "/etc/kubernetes/pki/ca.crt") \
        .read_bytes()
    kubelet = yaml.safe_load((root / "var/lib/kubelet/config.yaml").read_text())
    assert kubelet["clusterDNS"] == ["10.96.0.10"] and kubelet["containerRuntimeEndpoint"].startswith("unix://")
    assert "--node-ip=10.200.7.21" in (root / "var/lib/kubelet/kubeadm-flags.env").read_text()
    assert not list(root.rglob("*.key"))  # never a private key on a worker


@pytest.mark.parametrize("case", ["wrong-pin", "wrong-secret", "unknown-token", "malformed", "unreachable",
                                  "no-pin"])
def test_bad_join_inputs_fail_with_their_own_exit_code_and_write_nothing(cluster: Cluster, case: str) -> None:
    token, pin = _join_command(cluster)
    tid, secret = token.split(".")
    args = {"wrong-pin": (EP, token, "sha256:" + "ab" * 32), "wrong-secret": (EP, f"{tid}.{'x' * 16}", pin),
            "unknown-token": (EP, f"zzzzzz.{secret}", pin), "malformed": (EP, "not-a-token", pin),
            "unreachable": ("10.200.7.99:6443", token, pin), "no-pin": (EP, token, None)}[case]
    expected = {"wrong-pin": (14, "does not match --discovery-token-ca-cert-hash"),
                "wrong-secret": (13, "signature does not match token"),
                "unknown-token": (13, "no signature for token zzzzzz"),
                "malformed": (3, "--token: the token must have the form"),
                "unreachable": (12, "cannot reach https://10.200.7.99:6443"),
                "no-pin": (3, "--discovery-token-ca-cert-hash: required")}[case]
    root = cluster.tmp / f"bad-{case}"
    argv = ["join", args[0], "--token", args[1], "--node-name", "w9", "--rootfs", str(root),
            "--discovery-timeout", "8"]
    if args[2]:
        argv += ["--discovery-token-ca-cert-hash", args[2]]
    res = cluster.kubeboot(*argv)
    assert (res.returncode, expected[1] in res.stderr) == (expected[0], True), res.stderr
    assert secret not in res.stderr + res.stdout
    assert nothing_written(root)


def test_worker_tls_bootstrap_csr_is_approved_and_signed(cluster: Cluster, tmp_path: Path) -> None:
    """What the kubelet does with bootstrap-kubelet.conf: a node-client CSR, auto-approved by the
    controller-manager (node-autoapprove-bootstrap) and signed with the cluster CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    token, pin = _join_command(cluster)
    root = tmp_path / "w2"
    cluster.ok("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--node-name", "w2",
               "--rootfs", str(root))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:w2")])).sign(key, hashes.SHA256())
    import base64
    obj = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"generateName": "node-csr-"},
           "spec": {"request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                    "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                    "usages": ["digital signature", "client auth"]}}
    (tmp_path / "csr.yaml").write_text(yaml.safe_dump(obj))
    kubectl = str(require_bin("kubectl"))
    boot = str(root / "etc/kubernetes/bootstrap-kubelet.conf")
    made = cluster.net.run("ctl", [kubectl, "--kubeconfig", boot, "create", "-f", str(tmp_path / "csr.yaml"),
                                   "-o", "jsonpath={.metadata.name}"])
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    pem: list[bytes] = []

    def signed() -> bool:
        res = cluster.net.run("ctl", [kubectl, "--kubeconfig", boot, "get", "csr", name, "-o",
                                      "jsonpath={.status.certificate}"])
        if res.returncode == 0 and res.stdout.strip():
            pem.append(base64.b64decode(res.stdout.strip()))
            return True
        return False

    wait_for(signed, 60, "the CSR to be approved and signed", interval=0.5, details=cluster.cp1.logs)
    cert = x509.load_pem_x509_certificate(pem[0])
    (tmp_path / "w2.crt").write_bytes(pem[0])
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(root / "etc/kubernetes/pki/ca.crt"),
                             str(tmp_path / "w2.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert cert.subject.rfc4514_string() == "CN=system:node:w2,O=system:nodes"
    # the certificate works: the API server authenticates it as the node
    (tmp_path / "w2.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                                        serialization.NoEncryption()))
    whoami = cluster.net.run("ctl", [kubectl, f"--server=https://{EP}",
                                     f"--certificate-authority={root}/etc/kubernetes/pki/ca.crt",
                                     f"--client-certificate={tmp_path}/w2.crt", f"--client-key={tmp_path}/w2.key",
                                     "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
    assert whoami.returncode == 0 and whoami.stdout == "system:node:w2", whoami.stderr


def _in_private_mounts(c: Cluster, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a shell script in the workstation namespace with a private /etc/kubernetes (tmpfs), so the real
    kubeadm writes nowhere on this machine."""
    return c.net.run("ctl", ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                             "mount -t tmpfs kbtest /etc/kubernetes 2>/dev/null || "
                             "{ mkdir -p /etc/kubernetes && mount -t tmpfs kbtest /etc/kubernetes; }\n" + script],
                     timeout=timeout)


def test_kubeadm_downloads_the_certificates_kubeboot_uploaded(cluster: Cluster) -> None:
    kubeadm = str(require_bin("kubeadm"))
    pki = cluster.tree.path("cp1", "/etc/kubernetes/pki")
    res = cluster.ok("init", "phase", "upload-certs", "--upload-certs", "--kubeconfig", cluster.conf("admin.conf"),
                     "--cert-dir", str(pki))
    key = res.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key) and key not in res.stderr
    token, pin = _join_command(cluster)
    cfg = cluster.tmp / "kubeadm-join.yaml"
    cfg.write_text(f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken: {{token: {token}, apiServerEndpoint: "{EP}", caCertHashes: ["{pin}"]}}
nodeRegistration: {{name: cp2}}
controlPlane:
  certificateKey: {key}
  localAPIEndpoint: {{advertiseAddress: {CP2}, bindPort: 6443}}
""")
    script = (f"{kubeadm} join phase control-plane-prepare download-certs --config {cfg} >&2\n"
              "cd /etc/kubernetes/pki && sha256sum " + " ".join(SHARED))
    out = _in_private_mounts(cluster, script)
    assert out.returncode == 0, out.stderr
    got = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines()}
    want = {rel: hashlib.sha256((pki / rel).read_bytes()).hexdigest() for rel in SHARED}
    assert got == want  # byte-identical to the originals


def test_kubeboot_downloads_the_certificates_kubeadm_uploaded(cluster: Cluster) -> None:
    kubeadm = str(require_bin("kubeadm"))
    key = cluster.ok("certs", "certificate-key").stdout.strip()
    src = cluster.tree.path("cp1", "/etc/kubernetes")
    cfg = cluster.tmp / "kubeadm-upload.yaml"
    cfg.write_text(f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
certificateKey: {key}
localAPIEndpoint: {{advertiseAddress: {CP1}, bindPort: 6443}}
nodeRegistration: {{name: cp1}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
controlPlaneEndpoint: {EP}
""")
    script = (f"cp -a {src}/. /etc/kubernetes/\n"
              f"{kubeadm} init phase upload-certs --upload-certs --config {cfg} --kubeconfig /etc/kubernetes/admin.conf")
    out = _in_private_mounts(cluster, script)
    assert out.returncode == 0, out.stderr
    probe = (
        "import sys, hashlib\n"
        "from pathlib import Path\n"
        "from kubeboot.kube import client as kc\n"
        "from kubeboot.pki.protocol import decrypt_shared_files, parse_certificate_key\n"
        f"api = kc.from_kubeconfig(Path({cluster.conf('admin.conf')!r}))\n"
        f"files = decrypt_shared_files(parse_certificate_key({key!r}), kc.fetch_kubeadm_certs(api))\n"
        "for rel in sorted(files): print(rel, hashlib.sha256(files[rel]).hexdigest())\n")
    res = cluster.net.run("ctl", [sys.executable, "-c", probe])
    assert res.returncode == 0, res.stderr
    got = dict(line.split() for line in res.stdout.splitlines())
    pki = src / "pki"
    assert got == {rel: hashlib.sha256((pki / rel).read_bytes()).hexdigest() for rel in SHARED}


def test_wrong_certificate_key_is_refused_before_anything_is_written(cluster: Cluster) -> None:
    cluster.upload_certs()
    token, pin = _join_command(cluster)
    wrong = cluster.ok("certs", "certificate-key").stdout.strip()
    root = cluster.tmp / "cp-wrong-key"
    res = cluster.kubeboot("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--control-plane",
                           "--certificate-key", wrong, "--apiserver-advertise-address", CP2, "--node-name", "cp9",
                           "--rootfs", str(root))
    assert res.returncode == 16 and "wrong key or the certificates expired" in res.stderr, res.stderr
    assert "kubeboot init phase upload-certs --upload-certs" in res.stderr
    assert nothing_written(root)


def test_deleted_token_is_rejected_and_unsafe_discovery_warns(cluster: Cluster) -> None:
    token, pin = _join_command(cluster)
    tid = token.split(".")[0]
    res = cluster.ok("token", "delete", tid, "--kubeconfig", cluster.conf("admin.conf"))
    assert f"bootstrap token {tid} deleted" in res.stdout
    assert tid not in cluster.ok("token", "list", "--kubeconfig", cluster.conf("admin.conf")).stdout
    gone = cluster.kubeboot("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--node-name", "w8",
                            "--rootfs", str(cluster.tmp / "w8"), "--discovery-timeout", "8")
    assert gone.returncode == 13 and f"no signature for token {tid}" in gone.stderr, gone.stderr

    token, _pin = _join_command(cluster)
    root = cluster.tmp / "w7"
    res = cluster.ok("join", EP, "--token", token, "--discovery-token-unsafe-skip-ca-verification", "--node-name",
                     "w7", "--rootfs", str(root), "--discovery-timeout", "60")
    assert "the cluster CA was NOT verified" in res.stderr
    assert (root / "etc/kubernetes/bootstrap-kubelet.conf").exists()


def test_expired_or_deleted_kubeadm_certs_exit_15_and_write_nothing(cluster: Cluster) -> None:
    key = cluster.upload_certs()
    # what the garbage collector does when the 2-hour proxy token expires
    cluster.kubectl("delete", "secret", "-n", "kube-system", "kubeadm-certs")
    token, pin = _join_command(cluster)
    root = cluster.tmp / "cp-expired"
    res = cluster.kubeboot("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--control-plane",
                           "--certificate-key", key, "--apiserver-advertise-address", CP2, "--node-name", "cp8",
                           "--rootfs", str(root))
    assert res.returncode == 15 and "kubeadm-certs Secret is gone" in res.stderr, res.stderr
    assert "upload-certs --upload-certs" in res.stderr
    assert nothing_written(root)



def test_the_real_kubelet_completes_tls_bootstrap_with_the_joined_files(cluster: Cluster, tmp_path: Path) -> None:
    """The real kubelet v1.37.2, started with the files `kubeboot join` wrote (and a real containerd for its CRI
    check), gets its client certificate: CSR approved by the controller-manager, kubelet-client-current.pem."""
    import shutil

    from cryptography import x509

    if shutil.which("containerd") is None:
        pytest.skip("containerd is not installed (run tests/setup.sh)")
    kubelet = str(require_bin("kubelet"))
    token, pin = _join_command(cluster)
    root = tmp_path / "w3"
    cluster.ok("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--node-name", "w3",
               "--node-ip", W1, "--rootfs", str(root))
    # containerd in the node's namespace, private state, so the kubelet's CRI check passes
    ctrd = tmp_path / "ctrd"
    ctrd.mkdir()
    (ctrd / "config.toml").write_text('version = 2\n')
    sock = ctrd / "containerd.sock"
    procs = [subprocess.Popen(cluster.net.argv("w1", ["containerd", "--config", str(ctrd / "config.toml"), "--root",
                                                      str(ctrd / "root"), "--state", str(ctrd / "state"),
                                                      "--address", str(sock)]),
                              stdout=(tmp_path / "containerd.log").open("wb"), stderr=subprocess.STDOUT)]
    try:
        wait_for(sock.exists, 30, "containerd's socket", interval=0.2)
        cfg = yaml.safe_load((root / "var/lib/kubelet/config.yaml").read_text())
        # only what ties the config to this machine's paths, plus cgroup v1 (this sandbox) and containerd's socket
        cfg["authentication"]["x509"]["clientCAFile"] = str(root / "etc/kubernetes/pki/ca.crt")
        cfg["staticPodPath"] = str(root / "etc/kubernetes/manifests")
        cfg["containerRuntimeEndpoint"] = f"unix://{sock}"
        cfg["cgroupDriver"] = "cgroupfs"
        cfg["failCgroupV1"] = False
        cfg["cgroupsPerQOS"] = False  # it shares this machine's cgroups: create none
        cfg["enforceNodeAllocatable"] = []
        (tmp_path / "kubelet.yaml").write_text(yaml.safe_dump(cfg))
        pki = root / "var/lib/kubelet/pki"
        # nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts the kubelet needs
        procs.append(subprocess.Popen([
            "nsenter", f"--net=/var/run/netns/{cluster.net.ns('w1')}", kubelet, f"--bootstrap-kubeconfig={root}/etc/kubernetes/bootstrap-kubelet.conf",
            f"--kubeconfig={root}/etc/kubernetes/kubelet.conf", f"--config={tmp_path}/kubelet.yaml",
            f"--cert-dir={pki}", f"--root-dir={root}/var/lib/kubelet", "--hostname-override=w3",
            f"--node-ip={W1}"], stdout=(tmp_path / "kubelet.log").open("wb"), stderr=subprocess.STDOUT))
        current = pki / "kubelet-client-current.pem"
        wait_for(current.exists, 60, "the kubelet's client certificate", interval=0.2,
                 details=lambda: (tmp_path / "kubelet.log").read_text(errors="replace")[-3000:])
        cert = x509.load_pem_x509_certificate(current.read_bytes())
        assert cert.subject.rfc4514_string() == "CN=system:node:w3,O=system:nodes"
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(root / "etc/kubernetes/pki/ca.crt"),
                                 str(current)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
        kubeconfig = yaml.safe_load((root / "etc/kubernetes/kubelet.conf").read_text())
        assert kubeconfig["users"][0]["user"]["client-certificate"] == str(current)
        csrs = cluster.kubectl("get", "csr", "-o", "jsonpath={range .items[*]}{.spec.username} "
                                                   "{.status.conditions[0].type}{\"\\n\"}{end}")
        assert f"system:bootstrap:{token.split('.')[0]} Approved" in csrs
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait(timeout=10)
        # the kubelet bind-mounts its root dir onto itself (to make it shared); leave no mount behind
        subprocess.run(["umount", "-R", f"{root}/var/lib/kubelet"], capture_output=True, check=False)

# Last: it grows etcd to two members (and shrinks it back afterwards).
def test_control_plane_join_adds_an_etcd_learner_promotes_it_and_serves_its_own_cert(cluster: Cluster) -> None:
    key = cluster.upload_certs()
    token, pin = _join_command(cluster)
    root = cluster.tree.root / "cp2"  # the StaticPodRunner reads <tree>/<host>/etc/kubernetes
    # the kubelet's part: start etcd as soon as the join writes its manifest (the join waits to promote it)
    started = threading.Event()
    runners: list[StaticPodRunner] = []

    def pseudo_kubelet() -> None:
        manifest = root / "etc/kubernetes/manifests/etcd.yaml"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not manifest.exists():
            time.sleep(0.1)
        if manifest.exists():
            runners.append(StaticPodRunner(cluster.net, cluster.tree.root, "cp2", cluster.tmp / "cp2"))
            runners[0].start("etcd", wait=False)
            started.set()

    t = threading.Thread(target=pseudo_kubelet, daemon=True)
    t.start()
    try:
        res = cluster.kubeboot("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin, "--control-plane",
                               "--certificate-key", key, "--apiserver-advertise-address", CP2, "--node-name", "cp2",
                               "--rootfs", str(root), timeout=300)
        assert started.is_set(), res.stderr
        runner = runners[0]
        assert res.returncode == 0, res.stderr + runner.logs() + cluster.cp1.logs()
        assert "added as learner" in res.stderr and "is a voting member" in res.stderr
        etcd = yaml.safe_load((root / "etc/kubernetes/manifests/etcd.yaml").read_text())
        flags = dict(a[2:].split("=", 1) for a in etcd["spec"]["containers"][0]["command"][1:])
        assert flags["initial-cluster-state"] == "existing"
        assert set(flags["initial-cluster"].split(",")) == {f"cp1=https://{CP1}:2380", f"cp2=https://{CP2}:2380"}
        etcdctl = str(require_bin("etcdctl"))
        pki = root / "etc/kubernetes/pki/etcd"
        members = cluster.net.run("ctl", [etcdctl, f"--endpoints=https://{CP1}:2379", f"--cacert={pki}/ca.crt",
                                          f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key",
                                          "member", "list"])
        lines = [ln for ln in members.stdout.splitlines() if ln.strip()]
        assert len(lines) == 2 and all(ln.endswith("false") for ln in lines), members.stdout  # both voters
        runner.wait_ready("etcd", timeout=60)
        runner.start("kube-apiserver")
        served = cluster.net.run("ctl", ["sh", "-c", f"echo | openssl s_client -connect {CP2}:6443 -CAfile "
                                                     f"{root}/etc/kubernetes/pki/ca.crt -verify_ip {CP2} 2>/dev/null "
                                                     f"| openssl x509 -noout -fingerprint -sha256"])
        own = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                              str(root / "etc/kubernetes/pki/apiserver.crt")], capture_output=True, text=True)
        assert served.stdout.strip() and served.stdout.strip() == own.stdout.strip()
        assert (root / "etc/kubernetes/pki/ca.key").read_bytes() == \
            cluster.tree.path("cp1", "/etc/kubernetes/pki/ca.key").read_bytes()
        assert not (root / "etc/kubernetes/super-admin.conf").exists()
        # the same join again (what `up` does to resume a control plane whose join stopped halfway): the voting
        # member is reused, not added twice, and every certificate, kubeconfig and manifest is kept as it is
        before = {p: p.read_bytes() for p in (root / "etc/kubernetes").rglob("*") if p.is_file()}
        again = cluster.kubeboot("join", EP, "--token", token, "--discovery-token-ca-cert-hash", pin,
                                 "--control-plane", "--certificate-key", cluster.upload_certs(),
                                 "--apiserver-advertise-address", CP2, "--node-name", "cp2", "--rootfs", str(root),
                                 timeout=300)
        assert again.returncode == 0, again.stderr
        assert "already a voting member" in again.stderr and "added as learner" not in again.stderr, again.stderr
        assert "[control-plane-prepare] cp2: wrote 0 file(s)" in again.stderr, again.stderr
        assert {p: p.read_bytes() for p in (root / "etc/kubernetes").rglob("*") if p.is_file()} == before
        assert len([ln for ln in cluster.net.run("ctl", [etcdctl, f"--endpoints=https://{CP1}:2379",
                                                         f"--cacert={pki}/ca.crt",
                                                         f"--cert={pki}/healthcheck-client.crt",
                                                         f"--key={pki}/healthcheck-client.key", "member",
                                                         "list"]).stdout.splitlines() if ln.strip()]) == 2
    finally:
        t.join(timeout=5)
        _remove_member(cluster, root, CP2)  # two voters with one stopped would leave etcd without quorum
        for r in runners:
            r.stop_all()


def _remove_member(cluster: Cluster, root: Path, address: str) -> None:
    etcdctl, pki = ref_bin("etcdctl"), root / "etc/kubernetes/pki/etcd"
    if etcdctl is None or not (pki / "healthcheck-client.crt").exists():
        return
    base = [str(etcdctl), f"--endpoints=https://{CP1}:2379", f"--cacert={pki}/ca.crt",
            f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key"]
    for line in cluster.net.run("ctl", [*base, "member", "list"]).stdout.splitlines():
        if f"https://{address}:2380" in line:
            cluster.net.run("ctl", [*base, "member", "remove", line.split(",")[0]])
