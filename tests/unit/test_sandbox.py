"""kubeboot sandbox, pure parts: the hosts of a shape, the inventory the sandbox writes (accepted by kubeboot's own
loader), flag refusals, and the machine checks' messages (platform, root and memory faked here; the real refusals
run as CLI calls in tests/e2e/test_sandbox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubeboot.config.load import load_inventory_text
from kubeboot.errors import ConfigError
from kubeboot.sandbox.shape import Shape, inventory
from kubeboot.workflows import sandbox as sb


def test_the_default_shape_is_the_recipe_lb_three_control_planes_two_workers() -> None:
    s = Shape(version="1.37.2")
    assert s.hosts() == [("lb1", "load-balancer"), ("cp1", "control-plane"), ("cp2", "control-plane"),
                         ("cp3", "control-plane"), ("w1", "worker"), ("w2", "worker")]
    assert Shape(1, 1, "node-local", "1.37.2").names() == ["cp1", "w1"]  # no LB host in node-local mode
    assert Shape.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("lb, endpoint", [("external-nginx", "10.200.0.11:6443"), ("node-local", "localhost:6443")])
def test_the_inventory_is_valid_and_names_every_host(lb: str, endpoint: str) -> None:
    s = Shape(3, 2, lb, "1.37.2")
    addrs = {n: f"10.200.0.{11 + i}" for i, n in enumerate(s.names())}
    doc = inventory(s, "sandbox", addrs, "/var/lib/kubeboot/sandbox/sandbox/hosts/keys/id_ed25519", cgroup_v1=True)
    cfg = load_inventory_text(yaml.safe_dump(doc), source="sandbox")
    assert cfg.control_plane_endpoint.hostport() == endpoint
    assert [(h.name, str(h.address)) for h in cfg.hosts] == list(addrs.items())
    assert cfg.kubelet_config.get("failCgroupV1") is False
    no_v1 = inventory(s, "sandbox", addrs, "/k", cgroup_v1=False)
    assert "kubelet" not in no_v1["spec"]


@pytest.mark.parametrize("shape, field, says", [
    (Shape(2, 2, "external-nginx", "1.37.2"), "--control-planes", "odd number"),
    (Shape(9, 2, "external-nginx", "1.37.2"), "--control-planes", "between 1 and 7"),
    (Shape(3, -1, "external-nginx", "1.37.2"), "--workers", "between 0 and 200"),
    (Shape(3, 2, "haproxy", "1.37.2"), "--lb", "one of external-nginx, node-local"),
    (Shape(3, 2, "external-nginx", "1.37.2", "10.200.0.0/16"), "--subnet", "a private IPv4 /24"),
    (Shape(3, 2, "external-nginx", "1.37.2", "8.8.8.0/24"), "--subnet", "a private IPv4 /24"),
    (Shape(3, 2, "external-nginx", "1.37.2", "10.200.0.1/24"), "--subnet", "host bits set"),
])
def test_bad_flags_are_refused_with_the_flag(shape: Shape, field: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        shape.check()
    assert err.value.exit_code == 3
    (p,) = err.value.problems
    assert p.path == field and says in p.message


def test_memory_is_checked_for_the_whole_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeboot.sandbox import checks

    monkeypatch.setattr(checks, "machine_problems", lambda probe=True: [])
    monkeypatch.setattr(checks, "memory_available", lambda meminfo=None: 8 << 30)
    assert sb.machine_problems(Shape(version="1.37.2")) == []
    (msg,) = sb.machine_problems(Shape(3, 40, "external-nginx", "1.37.2"))
    assert "not enough memory: 3 control plane(s), 40 worker(s), 1 load balancer(s)" in msg
    monkeypatch.setattr(checks, "machine_problems", lambda probe=True: ["not root"])
    assert sb.machine_problems(Shape(version="1.37.2")) == ["not root"]


def test_the_default_bundle_is_cached_by_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEBOOT_CACHE", str(tmp_path))
    assert sb.default_bundle_dir("1.37.2") == tmp_path / "bundles" / "v1.37.2"
