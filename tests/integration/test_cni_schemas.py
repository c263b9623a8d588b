"""Every object of every CNI plugin kubeboot ships validates against the Kubernetes schema of the target version
(kubernetes_validate, strict), as tests/integration/test_schemas.py does for the static-pod manifests. Calico does
not run on this machine (no images), so this is its only check; flannel also runs in the lab."""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import kubernetes_validate
import pytest

from kubeboot.config.load import parse_inventory
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES
from kubeboot.render import cni
from tests.unit.test_phases import DOC

VERSION = RELEASES[DEFAULT_MINOR].latest_patch
PLUGINS = ("flannel", "calico")
# What a DNS-1123 subdomain object name looks like (kubectl would reject anything else on create).
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
BUILTIN_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "policy/v1", "apiextensions.k8s.io/v1",
                  "batch/v1", "scheduling.k8s.io/v1", "networking.k8s.io/v1", "admissionregistration.k8s.io/v1")


def _objects(plugin: str, **spec: Any) -> list[dict[str, Any]]:
    doc = copy.deepcopy(DOC)
    doc["spec"]["cni"] = {"plugin": plugin}
    doc["spec"].update(spec)
    try:
        return cni.cni_objects(parse_inventory(doc))
    except cni.ManifestNotShipped as e:
        pytest.skip(f"{plugin}: {e.message}")


def _is_builtin(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]) in BUILTIN_GROUPS


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_builtin_object_validates_strictly(plugin: str) -> None:
    objs = _objects(plugin, networking={"podSubnet": "172.30.0.0/16", "serviceSubnet": "10.96.0.0/12"})
    assert objs
    validated = 0
    for obj in objs:
        if not _is_builtin(obj):
            continue
        # CRDs are apiextensions.k8s.io/v1 CustomResourceDefinition objects: the schema covers them too
        kubernetes_validate.validate(obj, VERSION, True)  # raises ValidationError on any problem
        validated += 1
    assert validated == len([o for o in objs if _is_builtin(o)]) > 0


@pytest.mark.parametrize("plugin", PLUGINS)
def test_custom_resources_are_well_formed_instances_of_a_shipped_crd(plugin: str) -> None:
    """kubernetes_validate only knows the built-in kinds: an instance of a CRD's kind (if a plugin ships one)
    cannot be validated by it, so it is checked structurally: its group/version and kind are served by a CRD in
    the same manifest, it has a DNS-1123 name, and a namespace exactly when the CRD is namespaced."""
    objs = _objects(plugin)
    served: dict[tuple[str, str], str] = {}
    for crd in (o for o in objs if o["kind"] == "CustomResourceDefinition"):
        s = crd["spec"]
        for v in s["versions"]:
            if v.get("served", True):
                served[(f"{s['group']}/{v['name']}", s["names"]["kind"])] = s["scope"]
    for obj in objs:
        if _is_builtin(obj):
            continue
        key = (obj["apiVersion"], obj["kind"])
        assert key in served, f"{key} is served by no CRD of the {plugin} manifest"
        assert NAME.match(obj["metadata"]["name"]), obj["metadata"]
        assert ("namespace" in obj["metadata"]) == (served[key] == "Namespaced"), obj["metadata"]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_names_are_unique_and_valid(plugin: str) -> None:
    objs = _objects(plugin)
    keys = [(o["apiVersion"].split("/")[0], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in objs]
    assert len(keys) == len(set(keys))
    assert all(NAME.match(k[3]) for k in keys), keys


def test_flannel_ipv6_still_validates() -> None:
    objs = _objects("flannel")
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    v6 = cni.flannel_objects(copy.deepcopy(objs), ipaddress.ip_network("fd00:10:244::/56"))
    for obj in v6:
        kubernetes_validate.validate(obj, VERSION, True)
    assert next(o for o in v6 if o["kind"] == "ConfigMap")["data"]["net-conf.json"] != cm["data"]["net-conf.json"]


def test_strict_validation_can_fail_on_a_cni_object() -> None:
    ds = copy.deepcopy(next(o for o in _objects("flannel") if o["kind"] == "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecondz"] = 30
    with pytest.raises(kubernetes_validate.ValidationError) as exc:
        kubernetes_validate.validate(ds, VERSION, True)
    assert "periodSecondz" in str(exc.value.message)
