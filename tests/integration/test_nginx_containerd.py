"""The real nginx accepts the rendered load-balancer configs; the real containerd parses its config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE
from tests.integration.conftest import Rendered, need, render_inventory


def nginx_t(conf: Path) -> subprocess.CompletedProcess[str]:
    if not Path("/etc/nginx/modules-enabled/50-mod-stream.conf").exists():
        pytest.skip("libnginx-mod-stream is not installed (run tests/setup.sh)")
    return subprocess.run([need("nginx"), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)


def test_nginx_accepts_external_lb_config(rendered: Rendered) -> None:
    res = nginx_t(rendered.path("lb1", "/etc/nginx/nginx.conf"))
    assert res.returncode == 0 and "syntax is ok" in res.stderr, res.stderr


def test_nginx_accepts_node_local_config(tmp_path: Path) -> None:
    text = (EXAMPLE.read_text().replace("mode: external-nginx", "mode: node-local")
            .replace("lb.example.test:6443", "localhost:6443")
            .replace("roles: [load-balancer]", "roles: [worker]"))
    out = render_inventory(text, tmp_path)
    conf = out.path("lb1", "/etc/nginx/nginx.conf")
    assert "listen 127.0.0.1:6443;" in conf.read_text()
    res = nginx_t(conf)
    assert res.returncode == 0, res.stderr


def test_nginx_rejects_a_broken_config(rendered: Rendered, tmp_path: Path) -> None:
    broken = tmp_path / "nginx.conf"
    broken.write_text(rendered.path("lb1", "/etc/nginx/nginx.conf").read_text().replace("least_conn;", "least_conn"))
    assert nginx_t(broken).returncode != 0


def test_containerd_parses_the_rendered_config(rendered: Rendered) -> None:
    res = subprocess.run([need("containerd"), "--config", str(rendered.path("w1", "/etc/containerd/config.toml")),
                          "config", "dump"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "SystemdCgroup = true" in res.stdout
    assert 'sandbox_image = "registry.k8s.io/pause:3.10.2"' in res.stdout or \
        'sandbox = "registry.k8s.io/pause:3.10.2"' in res.stdout
