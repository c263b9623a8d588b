"""Manifests validate against the Kubernetes schema of the target version, and with Kubernetes' own
validation code (refcheck, built from the same Go modules); the kubelet config parses as the kubelet does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import kubernetes_validate
import pytest
import yaml

from kubeboot.config.versions import DEFAULT_MINOR, RELEASES
from tests.conftest import EXAMPLE
from tests.integration.conftest import Rendered, render_inventory
from tests.reference.binaries import require_bin

# Component settings as a kubeadm user writes them: extraArgs (a repeated flag, an override of a kubeboot
# default, the mapping form), extraVolumes (with and without pathType, read-only) and a KubeletConfiguration
# override. The rendered files must still pass the schema and Kubernetes' own validation.
EXTRAS = {
    "apiServer": {
        "extraArgs": [{"name": "audit-log-path", "value": "/var/log/kubernetes/audit/audit.log"},
                      {"name": "audit-policy-file", "value": "/etc/kubernetes/audit-policy.yaml"},
                      {"name": "enable-admission-plugins", "value": "NodeRestriction,PodNodeSelector"},
                      {"name": "tls-cipher-suites", "value": "TLS_AES_128_GCM_SHA256"},
                      {"name": "tls-cipher-suites", "value": "TLS_AES_256_GCM_SHA384"}],
        "extraVolumes": [{"name": "audit-log", "hostPath": "/var/log/kubernetes/audit",
                          "mountPath": "/var/log/kubernetes/audit", "pathType": "DirectoryOrCreate"},
                         {"name": "audit-policy", "hostPath": "/etc/kubernetes/audit-policy.yaml",
                          "mountPath": "/etc/kubernetes/audit-policy.yaml", "readOnly": True}],
    },
    "controllerManager": {"extraArgs": {"terminated-pod-gc-threshold": 100}},
    "scheduler": {"extraArgs": [{"name": "v", "value": "2"}],
                  "extraVolumes": [{"name": "sched-config", "hostPath": "/etc/kubernetes/scheduler",
                                    "mountPath": "/etc/kubernetes/scheduler", "readOnly": True,
                                    "pathType": "DirectoryOrCreate"}]},
    "etcd": {"extraArgs": [{"name": "quota-backend-bytes", "value": "8589934592"}]},
    "kubelet": {"config": {"failCgroupV1": False, "maxPods": 200, "evictionHard": {"memory.available": "200Mi"},
                           "systemReserved": {"cpu": "500m", "memory": "512Mi"}, "kubeReserved": {"cpu": 1},
                           "registerWithTaints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}],
                           "serializeImagePulls": False, "maxParallelImagePulls": 5,
                           "authentication": {"webhook": {"cacheTTL": "30s"}}}},
}


@pytest.fixture(scope="module")
def rendered_extras(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].update(EXTRAS)
    yield render_inventory(yaml.safe_dump(doc), tmp_path_factory.mktemp("render-extras"))

MANIFESTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def test_manifests_validate_against_the_target_schema_strictly(rendered: Rendered) -> None:
    version = RELEASES[DEFAULT_MINOR].latest_patch
    for host in rendered.control_planes:
        for name in MANIFESTS:
            doc = yaml.safe_load(rendered.path(host, f"/etc/kubernetes/manifests/{name}.yaml").read_text())
            kubernetes_validate.validate(doc, version, True)  # raises ValidationError on any problem


def test_schema_validation_can_fail(rendered: Rendered) -> None:
    doc = yaml.safe_load(rendered.path("cp1", "/etc/kubernetes/manifests/etcd.yaml").read_text())
    doc["spec"]["containers"][0]["livenessProbe"]["periodSecondz"] = 10
    try:
        kubernetes_validate.validate(doc, RELEASES[DEFAULT_MINOR].latest_patch, True)
    except kubernetes_validate.ValidationError as exc:
        assert "periodSecondz" in str(exc.message)
    else:  # pragma: no cover
        raise AssertionError("a misspelt field passed strict validation")


def refcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(require_bin("refcheck")), *args], capture_output=True, text=True, timeout=60)


def test_manifests_pass_kubernetes_own_pod_validation(rendered: Rendered) -> None:
    files = [str(rendered.path(h, f"/etc/kubernetes/manifests/{n}.yaml")) for h in rendered.control_planes
             for n in MANIFESTS]
    res = refcheck("pod", *files)
    assert res.returncode == 0, res.stdout + res.stderr


def test_kubelet_config_parses_and_validates_as_the_kubelet_does(rendered: Rendered) -> None:
    for host in ("cp1", "w1"):
        res = refcheck("kubelet-config", str(rendered.path(host, "/var/lib/kubelet/config.yaml")))
        assert res.returncode == 0, res.stdout + res.stderr


def test_refcheck_rejects_a_broken_kubelet_config(rendered: Rendered, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.yaml"
    text = rendered.path("w1", "/var/lib/kubelet/config.yaml").read_text()
    bad.write_text(text.replace("healthzPort: 10248", "healthzPort: 70000"))
    res = refcheck("kubelet-config", str(bad))
    assert res.returncode != 0 and "healthzPort" in res.stdout + res.stderr


def test_extras_pass_the_schema_and_kubernetes_own_validation(rendered_extras: Rendered) -> None:
    files = []
    for host in rendered_extras.control_planes:
        for name in MANIFESTS:
            path = rendered_extras.path(host, f"/etc/kubernetes/manifests/{name}.yaml")
            kubernetes_validate.validate(yaml.safe_load(path.read_text()), RELEASES[DEFAULT_MINOR].latest_patch, True)
            files.append(str(path))
    api = yaml.safe_load(rendered_extras.path("cp1", "/etc/kubernetes/manifests/kube-apiserver.yaml").read_text())
    assert "--tls-cipher-suites=TLS_AES_256_GCM_SHA384" in api["spec"]["containers"][0]["command"]
    res = refcheck("pod", *files)
    assert res.returncode == 0, res.stdout + res.stderr


def test_kubelet_override_parses_and_validates_as_the_kubelet_does(rendered_extras: Rendered) -> None:
    for host in ("cp1", "w1"):
        path = rendered_extras.path(host, "/var/lib/kubelet/config.yaml")
        assert yaml.safe_load(path.read_text())["failCgroupV1"] is False
        res = refcheck("kubelet-config", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
