"""Every kubeconfig loads in the real kubectl (built from Kubernetes' Go modules) and its client certificate
verifies against the cluster CA with openssl."""

from __future__ import annotations

import base64
import subprocess

from tests.integration.conftest import Rendered, need
from tests.reference.binaries import require_bin


def kubectl(*args: str) -> str:
    res = subprocess.run([str(require_bin("kubectl")), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_every_kubeconfig_loads_in_kubectl_and_its_cert_verifies(rendered: Rendered, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    for conf in sorted(rendered.root.rglob("etc/kubernetes/*.conf")):
        host = conf.relative_to(rendered.root).parts[0]
        view = kubectl("config", "view", "--kubeconfig", str(conf))
        assert "DATA+OMITTED" in view or "REDACTED" in view  # kubectl hides embedded data by default
        ctx = kubectl("config", "current-context", "--kubeconfig", str(conf)).strip()
        user = kubectl("config", "view", "--kubeconfig", str(conf), "-o", "jsonpath={.users[0].name}")
        assert ctx == f"{user}@kubernetes"
        ca = base64.b64decode(kubectl("config", "view", "--raw", "--kubeconfig", str(conf), "-o",
                                      "jsonpath={.clusters[0].cluster.certificate-authority-data}"))
        assert ca == rendered.path(host, "/etc/kubernetes/pki/ca.crt").read_bytes()
        seen += 1
        if conf.name == "bootstrap-kubelet.conf":
            token = kubectl("config", "view", "--raw", "--kubeconfig", str(conf), "-o",
                            "jsonpath={.users[0].user.token}")
            assert len(token) == 23 and user == "tls-bootstrap-token-user"
            continue
        cert = base64.b64decode(kubectl("config", "view", "--raw", "--kubeconfig", str(conf), "-o",
                                        "jsonpath={.users[0].user.client-certificate-data}"))
        (tmp_path / "client.crt").write_bytes(cert)
        res = subprocess.run([need("openssl"), "verify", "-purpose", "sslclient", "-CAfile",
                              str(rendered.path(host, "/etc/kubernetes/pki/ca.crt")), str(tmp_path / "client.crt")],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and res.stdout.strip().endswith("OK"), (conf, res.stderr)
        subject = subprocess.run([need("openssl"), "x509", "-noout", "-subject", "-in", str(tmp_path / "client.crt")],
                                 capture_output=True, text=True, timeout=30).stdout
        assert f"CN = {user}" in subject
    # 3 control planes x 4 kubeconfigs + super-admin.conf on cp1 + 2 workers' bootstrap-kubelet.conf
    assert seen == 3 * 4 + 1 + 2
