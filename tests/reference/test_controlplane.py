"""A real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) started from kubeboot's
rendered static-pod manifests, PKI and kubeconfigs — see tests/reference/controlplane.py for the harness.

One control plane (cp1 = 10.200.7.11, also the controlPlaneEndpoint, load balancer mode none) and one worker
(w1 = 10.200.7.21, whose namespace is empty: only its rendered bootstrap kubeconfig is used, from ctl).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.integration.conftest import Rendered, render_inventory
from tests.reference.binaries import ref_bin
from tests.reference.controlplane import (ControlPlaneError, Network, StaticPodRunner, clean_stale, prerequisites,
                                          wait_for)

pytestmark = pytest.mark.reference

CP1, W1 = "10.200.7.11", "10.200.7.21"
INVENTORY = f"""\
apiVersion: kubeboot.io/v1alpha1
kind: Cluster
metadata:
  name: cptest
spec:
  kubernetesVersion: "1.37"
  controlPlaneEndpoint: {CP1}:6443
  loadBalancer:
    mode: none
  hosts:
    - {{name: cp1, address: {CP1}, roles: [control-plane]}}
    - {{name: w1, address: {W1}, roles: [worker]}}
"""
PKI = "/etc/kubernetes/pki"
SUPER = "super-admin.conf"


class ControlPlane:
    def __init__(self, tree: Rendered, net: Network, cp1: StaticPodRunner, seconds: float) -> None:
        self.tree, self.net, self.cp1, self.seconds = tree, net, cp1, seconds

    def file(self, host: str, path: str) -> Path:
        return self.tree.path(host, path)

    def k(self, *args: str, kubeconfig: str = SUPER) -> str:
        """kubectl that must succeed; a failure carries kubectl's stderr and every component's log tail."""
        res = self.cp1.kubectl(*args, kubeconfig=kubeconfig)
        self.cp1.check(res.returncode == 0, f"kubectl {' '.join(args)} ({kubeconfig}) exited {res.returncode}: "
                                            f"{res.stdout}{res.stderr}")
        return res.stdout

    def k_apply(self, obj: dict[str, object]) -> None:
        res = self.net.run("ctl", [*self._kubectl_prefix(SUPER), "apply", "-f", "-"], input=json.dumps(obj))
        self.cp1.check(res.returncode == 0, f"kubectl apply {obj.get('kind')}: {res.stdout}{res.stderr}")

    def _kubectl_prefix(self, kubeconfig: str) -> list[str]:
        return [str(ref_bin("kubectl")), f"--kubeconfig={self.file('cp1', '/etc/kubernetes/' + kubeconfig)}",
                f"--cache-dir={self.cp1.workdir / 'kubectl-cache'}", "--request-timeout=20s"]

    def eventually(self, cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
        wait_for(cond, timeout, what, interval=0.3, details=self.cp1.logs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    problems = prerequisites()
    if problems:
        pytest.skip("real control plane not possible here: " + "; ".join(problems))
    tmp = tmp_path_factory.mktemp("controlplane")
    tree = render_inventory(INVENTORY, tmp / "render")
    assert tree.control_planes == ("cp1",) and tree.workers == ("w1",)
    t0 = time.monotonic()
    with Network({"cp1": CP1, "w1": W1}) as net:
        t_net = time.monotonic() - t0
        with StaticPodRunner(net, tree.root, "cp1", tmp / "cp1") as cp1:
            cp1.start_all()
            seconds = time.monotonic() - t0
            report = (f"control plane from rendered manifests ready in {seconds:.1f}s (network {t_net:.2f}s, "
                      + ", ".join(f"{n} {s:.1f}s" for n, s in cp1.timings.items()) + ")")
            _report(request, report)
            yield ControlPlane(tree, net, cp1, seconds)
            t1 = time.monotonic()
        _report(request, f"graceful stop of all components and network teardown {time.monotonic() - t1:.1f}s")


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal even while output is captured (the timings are part of what this test shows)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None:
        return
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        tr.write_line(f"\n[controlplane] {line}")


def test_components_run_the_manifests_commands(cluster: ControlPlane) -> None:
    cp1 = cluster.cp1
    assert list(cp1.components) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    for name, comp in cp1.components.items():
        assert cp1.running(name), cp1.logs()
        pod = yaml.safe_load(cluster.file("cp1", f"/etc/kubernetes/manifests/{name}.yaml").read_text())
        command = pod["spec"]["containers"][0]["command"]
        # same flags in the same order, only the binary and the host paths differ
        assert command[0] == name and Path(comp.argv[0]) == ref_bin(name)
        assert len(comp.argv) == len(command)
        for rendered, ran in zip(command[1:], comp.argv[1:]):
            expected = (rendered.replace("=/etc/kubernetes/", f"={cluster.tree.root}/cp1/etc/kubernetes/")
                        .replace("=/var/lib/etcd", f"={cp1.workdir}/var/lib/etcd"))
            assert ran == expected
    probes = {name: comp.probe.url if comp.probe else None for name, comp in cp1.components.items()}
    assert probes == {"etcd": "http://127.0.0.1:2381/readyz", "kube-apiserver": f"https://{CP1}:6443/readyz",
                      "kube-controller-manager": "https://127.0.0.1:10257/healthz",
                      "kube-scheduler": "https://127.0.0.1:10259/readyz"}
    assert cluster.k("get", "--raw", "/readyz") == "ok"
    assert cluster.seconds < 90


def test_apiserver_serves_kubeboots_certificate(cluster: ControlPlane) -> None:
    ca = cluster.file("cp1", f"{PKI}/ca.crt")

    def s_client(cafile: Path) -> subprocess.CompletedProcess[str]:
        return cluster.net.run("ctl", ["openssl", "s_client", "-connect", f"{CP1}:6443", "-CAfile", str(cafile),
                                       "-verify_return_error", "-verify_ip", CP1, "-showcerts"], input="", timeout=30)

    res = s_client(ca)
    assert res.returncode == 0 and "Verify return code: 0 (ok)" in res.stdout, res.stdout + res.stderr
    leaf = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", res.stdout, re.S)
    assert leaf is not None, res.stdout
    served = x509.load_pem_x509_certificate(leaf[0].encode())
    rendered = x509.load_pem_x509_certificate(cluster.file("cp1", f"{PKI}/apiserver.crt").read_bytes())
    assert served.fingerprint(hashes.SHA256()) == rendered.fingerprint(hashes.SHA256())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    ips = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    assert {"cp1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"} <= names
    assert {CP1, "10.96.0.1"} <= ips
    # the check is real: another CA of the same tree does not validate the served chain
    wrong = s_client(cluster.file("cp1", f"{PKI}/front-proxy-ca.crt"))
    assert wrong.returncode != 0 and "Verify return code: 0 (ok)" not in wrong.stdout


def test_admin_conf_is_forbidden_until_kubeadm_cluster_admins_binding(cluster: ControlPlane) -> None:
    assert "kubeadm:cluster-admins" not in cluster.k("get", "clusterrolebinding", "-o", "name")
    denied = cluster.cp1.kubectl("get", "namespaces")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and 'User "kubernetes-admin"' in denied.stderr, denied.stderr
    who = json.loads(cluster.k("auth", "whoami", "-o", "json", kubeconfig="admin.conf"))["status"]["userInfo"]
    assert who["username"] == "kubernetes-admin" and "kubeadm:cluster-admins" in who["groups"]
    # what kubeadm init does with super-admin.conf (group system:masters)
    cluster.k("create", "clusterrolebinding", "kubeadm:cluster-admins", "--clusterrole=cluster-admin",
              "--group=kubeadm:cluster-admins")
    cluster.eventually(lambda: cluster.cp1.kubectl("get", "namespaces").returncode == 0,
                       "admin.conf allowed after the binding")
    assert "kube-system" in cluster.k("get", "namespaces", "-o", "name", kubeconfig="admin.conf")


def test_controller_manager_and_scheduler_hold_leader_leases(cluster: ControlPlane) -> None:
    def holders() -> dict[str, str]:
        res = cluster.cp1.kubectl("get", "lease", "-n", "kube-system", "kube-controller-manager", "kube-scheduler",
                                  "-o", "json", kubeconfig=SUPER)
        if res.returncode != 0:
            return {}
        return {i["metadata"]["name"]: i["spec"].get("holderIdentity", "") for i in json.loads(res.stdout)["items"]}

    cluster.eventually(lambda: all(holders().get(n) for n in ("kube-controller-manager", "kube-scheduler")),
                       "kcm and scheduler leader leases")
    # the component API: stop the scheduler, start it again from the same manifest; it takes the lease back
    before = holders()["kube-scheduler"]
    cluster.cp1.stop("kube-scheduler")  # graceful: releases the lease (ReleaseOnCancel)
    assert not cluster.cp1.running("kube-scheduler")
    cluster.cp1.start("kube-scheduler")
    cluster.eventually(lambda: holders().get("kube-scheduler", before) not in ("", before),
                       "the restarted scheduler holds the lease", timeout=45)


def test_controller_manager_runs_bootstrapsigner_and_tokencleaner(cluster: ControlPlane) -> None:
    kcm = cluster.cp1.components["kube-controller-manager"]
    assert "--controllers=*,bootstrapsigner,tokencleaner" in kcm.argv
    # kubeboot's own bootstrap token, from the worker's rendered bootstrap-kubelet.conf
    boot = yaml.safe_load(cluster.file("w1", "/etc/kubernetes/bootstrap-kubelet.conf").read_text())
    token = boot["users"][0]["user"]["token"]
    token_id, token_secret = token.split(".")
    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.k_apply({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                     "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
                     "stringData": {"token-id": token_id, "token-secret": token_secret, "expiration": expires,
                                    "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                                    "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}})
    # bootstrap token authentication (--enable-bootstrap-token-auth) accepts the worker's kubeconfig
    who = json.loads(cluster.k("auth", "whoami", "-o", "json",
                               kubeconfig=str(cluster.file("w1", "/etc/kubernetes/bootstrap-kubelet.conf"))))
    assert who["status"]["userInfo"]["username"] == f"system:bootstrap:{token_id}"
    assert "system:bootstrappers:kubeadm:default-node-token" in who["status"]["userInfo"]["groups"]

    # bootstrapsigner: signs kube-public/cluster-info with every signing token (what `kubeadm join` verifies)
    admin = yaml.safe_load(cluster.file("cp1", "/etc/kubernetes/admin.conf").read_text())
    info = yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"], "contexts": [],
                           "users": [], "preferences": {}})
    cluster.k_apply({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "cluster-info", "namespace": "kube-public"}, "data": {"kubeconfig": info}})

    def jws() -> str:
        res = cluster.cp1.kubectl("get", "configmap", "-n", "kube-public", "cluster-info", "-o", "json",
                                  kubeconfig=SUPER)
        return json.loads(res.stdout)["data"].get(f"jws-kubeconfig-{token_id}", "") if res.returncode == 0 else ""

    cluster.eventually(lambda: bool(jws()), "bootstrapsigner to sign cluster-info")
    header, empty, signature = jws().split(".")
    assert empty == "" and json.loads(_b64d(header)) == {"alg": "HS256", "kid": token_id}
    mac = hmac.new(token_secret.encode(), f"{header}.{_b64e(info.encode())}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(_b64d(signature), mac)

    # tokencleaner: deletes an expired bootstrap token secret
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.k_apply({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                     "metadata": {"name": "bootstrap-token-expird", "namespace": "kube-system"},
                     "stringData": {"token-id": "expird", "token-secret": "0123456789abcdef", "expiration": past,
                                    "usage-bootstrap-authentication": "true"}})
    cluster.eventually(lambda: cluster.cp1.kubectl("get", "secret", "-n", "kube-system", "bootstrap-token-expird",
                                                   kubeconfig=SUPER).returncode != 0,
                       "tokencleaner to delete the expired token")


def test_service_account_token_wiring(cluster: ControlPlane) -> None:
    """sa.key signs (apiserver --service-account-signing-key-file), sa.pub verifies (--service-account-key-file);
    the controller-manager publishes the rendered ca.crt (--root-ca-file) into every namespace."""
    cluster.k("create", "serviceaccount", "tester", "-n", "default")
    token = cluster.k("create", "token", "tester", "-n", "default", "--duration=10m").strip()
    head_b64, claims_b64, sig_b64 = token.split(".")
    head, claims = json.loads(_b64d(head_b64)), json.loads(_b64d(claims_b64))
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == "system:serviceaccount:default:tester"
    pub = serialization.load_pem_public_key(cluster.file("cp1", f"{PKI}/sa.pub").read_bytes())
    signed, sig = f"{head_b64}.{claims_b64}".encode(), _b64d(sig_b64)
    if isinstance(pub, rsa.RSAPublicKey):
        assert head["alg"] == "RS256"
        pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey) and head["alg"] in ("ES256", "ES384")
        n = len(sig) // 2
        der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
        pub.verify(der, signed, ec.ECDSA(hashes.SHA256() if head["alg"] == "ES256" else hashes.SHA384()))

    # the token authenticates against the apiserver (a kubeconfig with only the token: no client certificate)
    admin = yaml.safe_load(cluster.file("cp1", "/etc/kubernetes/admin.conf").read_text())
    sa_conf = cluster.cp1.workdir / "sa-tester.conf"
    sa_conf.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": admin["clusters"][0]["name"], "user": "tester"}}],
        "current-context": "t"}))
    sa_conf.chmod(0o600)
    who = json.loads(cluster.k("auth", "whoami", "-o", "json", kubeconfig=str(sa_conf)))
    assert who["status"]["userInfo"]["username"] == "system:serviceaccount:default:tester"
    denied = cluster.cp1.kubectl("get", "secrets", "-n", "kube-system", kubeconfig=str(sa_conf))
    assert denied.returncode != 0 and "Forbidden" in denied.stderr  # authenticated, but RBAC gives it nothing

    def root_ca() -> str:
        res = cluster.cp1.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "default", "-o",
                                  "jsonpath={.data.ca\\.crt}", kubeconfig=SUPER)
        return res.stdout if res.returncode == 0 else ""

    cluster.eventually(lambda: bool(root_ca()), "kube-root-ca.crt published in default")
    assert root_ca().strip() == cluster.file("cp1", f"{PKI}/ca.crt").read_text().strip()


def test_failures_carry_component_logs(cluster: ControlPlane) -> None:
    with pytest.raises(ControlPlaneError) as err:
        cluster.cp1.check(False, "deliberate")
    text = str(err.value)
    for name in cluster.cp1.components:
        assert f"cp1/{name} (running)" in text


def test_early_exit_fails_fast_with_the_log(cluster: ControlPlane, tmp_path: Path) -> None:
    """A component that exits before its probe passes fails the start at once, with its log in the message
    (run in w1's namespace, which holds nothing else)."""
    pod = yaml.safe_load(cluster.file("cp1", "/etc/kubernetes/manifests/etcd.yaml").read_text())
    pod["spec"]["containers"][0]["command"].append("--no-such-flag=1")
    manifests = tmp_path / "tree/w1/etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(yaml.safe_dump(pod))
    runner = StaticPodRunner(cluster.net, tmp_path / "tree", "w1", tmp_path / "w1")
    t0 = time.monotonic()
    with runner, pytest.raises(ControlPlaneError) as err:
        runner.start("etcd", timeout=30)
    assert time.monotonic() - t0 < 10
    assert "w1/etcd exited" in str(err.value) and "no-such-flag" in str(err.value)


def test_unmapped_host_path_is_refused(tmp_path: Path) -> None:
    """A flag naming a host path the harness does not remap must not silently read this machine's file."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kube-scheduler"},
           "spec": {"containers": [{"name": "kube-scheduler",
                                    "command": ["kube-scheduler", "--config=/etc/kubernetes/scheduler.yaml",
                                                "--tls-cert-file=/var/lib/kubelet/pki/x.crt"]}]}}
    manifests = tmp_path / "tree/h/etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-scheduler.yaml").write_text(yaml.safe_dump(pod))
    net = Network({"h": "10.200.7.99"})  # never entered: nothing is created
    with pytest.raises(ControlPlaneError, match=r"--tls-cert-file: host path /var/lib/kubelet/pki/x.crt has no"):
        StaticPodRunner(net, tmp_path / "tree", "h", tmp_path / "h", binaries={"kube-scheduler": Path("/bin/true")})


def test_stale_namespaces_of_a_killed_run_are_cleaned(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    script = (
        "import subprocess, sys, time\n"
        "from tests.reference.controlplane import Network\n"
        "net = Network({'a': '10.200.7.31'}); net.up()\n"
        "p = subprocess.Popen(net.argv('a', ['sleep', '300']), start_new_session=True)\n"
        "print(net.ns('a'), net.ns('ctl'), p.pid, flush=True)\n"
        "time.sleep(300)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None
        ns_a, ns_ctl, sleeper = child.stdout.readline().split()
    finally:
        child.kill()  # a run killed without teardown: namespaces and the process in them stay behind
        child.wait(timeout=10)
    assert ns_a in _netns() and ns_ctl in _netns() and _alive(int(sleeper))
    clean_stale()  # (a concurrent session's clean_stale may have been first: then they are gone already)
    assert ns_a not in _netns() and ns_ctl not in _netns()
    wait_for(lambda: not _alive(int(sleeper)), 10, "the leftover process to be killed")


def _netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
