"""The reference binaries report the version they were built for, and refcheck accepts good and
rejects broken pods, kubelet configurations and kubeconfigs.  Skipped when not built
(tests/reference/build.sh)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import textwrap

import pytest

from tests.reference.binaries import DEFAULT_VERSION, require_bin

pytestmark = pytest.mark.reference

V = DEFAULT_VERSION
ETCD_FOR_DEFAULT_VERSION = "3.7.0"


def run(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --------------------------------------------------------------------------- versions

# name, arguments, a line the output must contain exactly
K8S_VERSIONS = [
    ("kubeadm", ["version", "-o", "short"], f"v{V}"),
    ("kube-apiserver", ["--version"], f"Kubernetes v{V}"),
    ("kube-controller-manager", ["--version"], f"Kubernetes v{V}"),
    ("kube-scheduler", ["--version"], f"Kubernetes v{V}"),
    ("kubelet", ["--version"], f"Kubernetes v{V}"),
    ("kubectl", ["version", "--client"], f"Client Version: v{V}"),
    ("refcheck", ["version"], f"v{V}"),
]


@pytest.mark.parametrize(("name", "args", "line"), K8S_VERSIONS, ids=[n for n, _, _ in K8S_VERSIONS])
def test_kubernetes_binary_reports_version(name: str, args: list[str], line: str) -> None:
    res = run(require_bin(name), *args)
    assert res.returncode == 0, res.stderr
    assert line in res.stdout.splitlines()


def test_kubectl_version_is_stamped_clean() -> None:
    res = run(require_bin("kubectl"), "version", "--client", "-o", "json")
    assert res.returncode == 0, res.stderr
    assert f'"gitVersion": "v{V}"' in res.stdout
    assert '"gitTreeState": "clean"' in res.stdout
    assert '"major": "1"' in res.stdout


def kubeadm_etcd_tag() -> str:
    """The etcd image tag kubeadm deploys for its own version, e.g. '3.7.0-0'."""
    res = run(require_bin("kubeadm"), "config", "images", "list", "--kubernetes-version", f"v{V}")
    assert res.returncode == 0, res.stderr
    tags = re.findall(r"/etcd:(\S+)$", res.stdout, re.MULTILINE)
    assert len(tags) == 1, res.stdout
    return str(tags[0])


ETCD_VERSION_LINES = [
    ("etcd", ["--version"], "etcd Version: "),
    ("etcdctl", ["version"], "etcdctl version: "),
    ("etcdutl", ["version"], "etcdutl version: "),
]


def etcd_version(name: str, args: list[str], prefix: str) -> str:
    res = run(require_bin(name), *args)
    assert res.returncode == 0, res.stderr
    versions = [ln.removeprefix(prefix) for ln in res.stdout.splitlines() if ln.startswith(prefix)]
    assert len(versions) == 1, res.stdout
    return versions[0]


@pytest.mark.parametrize(
    ("name", "args", "prefix"), ETCD_VERSION_LINES, ids=[n for n, _, _ in ETCD_VERSION_LINES]
)
def test_etcd_binary_reports_version(name: str, args: list[str], prefix: str) -> None:
    # kubeadm 1.37's SupportedEtcdVersion map resolves to etcd 3.7.0 for Kubernetes 1.37.
    assert etcd_version(name, args, prefix) == ETCD_FOR_DEFAULT_VERSION


def test_etcd_is_the_version_kubeadm_pins() -> None:
    assert kubeadm_etcd_tag().split("-")[0] == etcd_version(*ETCD_VERSION_LINES[0])


# --------------------------------------------------------------------------- refcheck pod

GOOD_POD = """
    apiVersion: v1
    kind: Pod
    metadata:
      name: kube-scheduler
      namespace: kube-system
      labels: {component: kube-scheduler, tier: control-plane}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      containers:
      - name: kube-scheduler
        image: registry.k8s.io/kube-scheduler:v1.37.2
        command: [kube-scheduler, --kubeconfig=/etc/kubernetes/scheduler.conf]
        volumeMounts:
        - {name: kubeconfig, mountPath: /etc/kubernetes/scheduler.conf, readOnly: true}
      volumes:
      - name: kubeconfig
        hostPath: {path: /etc/kubernetes/scheduler.conf, type: FileOrCreate}
"""


def test_refcheck_accepts_good_static_pod(tmp_path: pathlib.Path) -> None:
    res = run(require_bin("refcheck"), "pod", write(tmp_path, "good.yaml", GOOD_POD))
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, "ok", "")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # unknown field: strict decoding
        (GOOD_POD.replace("image: ", "imagee: "), 'unknown field "spec.containers[0].imagee"'),
        # Kubernetes validation: an invalid container name and a missing image
        (GOOD_POD.replace("- name: kube-scheduler", "- name: Kube_Scheduler"),
         "spec.containers[0].name: Invalid value"),
        (GOOD_POD.replace("image: registry.k8s.io/kube-scheduler:v1.37.2", "imagePullPolicy: Always"),
         "spec.containers[0].image: Required value"),
        # the kubelet refuses static pods that reference API objects
        (GOOD_POD.replace("hostPath: {path: /etc/kubernetes/scheduler.conf, type: FileOrCreate}",
                          "configMap: {name: scheduler}"),
         "static pods may not reference configmaps"),
        (GOOD_POD.replace("kind: Pod", "kind: Deployment"),
         'expected apiVersion v1, kind Pod; got apiVersion "v1", kind "Deployment"'),
    ],
    ids=["unknown-field", "bad-name", "no-image", "configmap", "not-a-pod"],
)
def test_refcheck_rejects_broken_pod(tmp_path: pathlib.Path, broken: str, message: str) -> None:
    assert broken != GOOD_POD
    good = write(tmp_path, "good.yaml", GOOD_POD)
    bad = write(tmp_path, "bad.yaml", broken)
    res = run(require_bin("refcheck"), "pod", good, bad)
    assert res.returncode == 1
    assert message in res.stderr
    errors = res.stderr.splitlines()
    assert errors and all(e.startswith(f"{bad}: ") for e in errors), res.stderr


# ------------------------------------------------------------------ refcheck kubelet-config

GOOD_KUBELET = """
    apiVersion: kubelet.config.k8s.io/v1beta1
    kind: KubeletConfiguration
    cgroupDriver: systemd
    clusterDNS: [10.96.0.10]
    clusterDomain: cluster.local
    staticPodPath: /etc/kubernetes/manifests
    rotateCertificates: true
    authentication:
      anonymous: {enabled: false}
      webhook: {enabled: true}
      x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
    authorization: {mode: Webhook}
"""


def test_refcheck_accepts_good_kubelet_config(tmp_path: pathlib.Path) -> None:
    res = run(require_bin("refcheck"), "kubelet-config", write(tmp_path, "k.yaml", GOOD_KUBELET))
    assert (res.returncode, res.stdout.strip()) == (0, "ok"), res.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("cgroupDriverr: systemd\n", 'unknown field "cgroupDriverr"'),
        ("healthzPort: 70000\n", "healthzPort (--healthz-port) 70000 must be between 1 and 65535"),
        # the kubelet itself panics on this one while defaulting; refcheck reports it
        ("featureGates: {NoSuchGate: true}\n", "unrecognized feature gate: NoSuchGate"),
        ("memorySwap: {swapBehavior: Sideways}\n", 'memorySwap.swapBehavior "Sideways" must be one of'),
    ],
    ids=["unknown-field", "bad-port", "unknown-gate", "bad-swap-behavior"],
)
def test_refcheck_rejects_broken_kubelet_config(tmp_path: pathlib.Path, extra: str, message: str) -> None:
    path = write(tmp_path, "k.yaml", textwrap.dedent(GOOD_KUBELET).lstrip() + extra)
    res = run(require_bin("refcheck"), "kubelet-config", path)
    assert res.returncode == 1
    assert message in res.stderr


# ---------------------------------------------------------------------- refcheck kubeconfig

GOOD_KUBECONFIG = """
    apiVersion: v1
    kind: Config
    clusters:
    - name: kubeboot
      cluster:
        server: https://10.0.0.10:6443
        certificate-authority-data: Y2EK
    users:
    - name: admin
      user: {token: abcdef.0123456789abcdef}
    contexts:
    - name: admin@kubeboot
      context: {cluster: kubeboot, user: admin}
    current-context: admin@kubeboot
"""


def test_refcheck_accepts_good_kubeconfig(tmp_path: pathlib.Path) -> None:
    res = run(require_bin("refcheck"), "kubeconfig", write(tmp_path, "kc", GOOD_KUBECONFIG))
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, "ok", "")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("context: {cluster: kubeboot", "context: {cluster: nowhere",
         'cluster "nowhere" was not found for context "admin@kubeboot"'),
        ("server: https://10.0.0.10:6443", "server: ''", "no server found for cluster"),
        ("current-context: admin@kubeboot", "current-context: other",
         'context was not found for specified context: other'),
    ],
    ids=["missing-cluster", "no-server", "bad-current-context"],
)
def test_refcheck_rejects_broken_kubeconfig(tmp_path: pathlib.Path, old: str, new: str, message: str) -> None:
    assert old in GOOD_KUBECONFIG
    res = run(require_bin("refcheck"), "kubeconfig", write(tmp_path, "kc", GOOD_KUBECONFIG.replace(old, new)))
    assert res.returncode == 1
    assert message in res.stderr
