"""Manifests validate against the Kubernetes schema of the target version, and with Kubernetes' own
validation code (refcheck, built from the same Go modules); the kubelet config parses as the kubelet does."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import yaml

from kubeboot.config.versions import DEFAULT_MINOR, RELEASES
from tests.integration.conftest import Rendered
from tests.reference.binaries import require_bin

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
