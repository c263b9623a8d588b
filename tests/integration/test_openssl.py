"""Certificates checked with the real openssl: every chain verifies, and SANs/usages/subjects read back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubeboot.pki.certs import LEAVES
from tests.integration.conftest import Rendered, need

PKI = "/etc/kubernetes/pki"
CA_FILE = {"ca": "ca.crt", "front-proxy-ca": "front-proxy-ca.crt", "etcd-ca": "etcd/ca.crt"}


def openssl(*args: str, stdin: bytes | None = None) -> str:
    res = subprocess.run([need("openssl"), *args], input=stdin, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def x509_text(path: Path) -> str:
    return openssl("x509", "-in", str(path), "-noout", "-subject", "-issuer", "-ext",
                   "subjectAltName,extendedKeyUsage,keyUsage,basicConstraints")


def test_every_chain_verifies_with_openssl(rendered: Rendered) -> None:
    for host in rendered.control_planes:
        for leaf in LEAVES:
            ca = rendered.path(host, f"{PKI}/{CA_FILE[leaf.ca]}")
            crt = rendered.path(host, f"{PKI}/{leaf.base}.crt")
            assert openssl("verify", "-x509_strict", "-CAfile", str(ca), str(crt)).strip() == f"{crt}: OK"
            # the private key belongs to the certificate
            pub_from_key = openssl("pkey", "-in", str(crt.with_suffix(".key")), "-pubout")
            assert pub_from_key == openssl("x509", "-in", str(crt), "-noout", "-pubkey")
        for ca in CA_FILE.values():
            path = rendered.path(host, f"{PKI}/{ca}")
            assert openssl("verify", "-x509_strict", "-CAfile", str(path), str(path)).strip().endswith("OK")


def test_apiserver_sans_and_usages_read_back(rendered: Rendered) -> None:
    text = x509_text(rendered.path("cp2", f"{PKI}/apiserver.crt"))
    assert "subject=CN = kube-apiserver" in text and "issuer=CN = kubernetes" in text
    for san in ("DNS:cp2", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local", "DNS:lb.example.test", "DNS:api.example.test",
                "IP Address:10.96.0.1", "IP Address:10.0.0.12", "IP Address:10.0.0.10"):
        assert san in text
    assert "TLS Web Server Authentication" in text and "Client Authentication" not in text
    assert "Digital Signature, Key Encipherment" in text and "CA:FALSE" in text


@pytest.mark.parametrize("base,subject,eku", [
    ("apiserver-kubelet-client", "subject=CN = kube-apiserver-kubelet-client",
     "TLS Web Client Authentication"),
    ("front-proxy-client", "subject=CN = front-proxy-client", "TLS Web Client Authentication"),
    ("etcd/server", "subject=CN = cp3", "TLS Web Server Authentication, TLS Web Client Authentication"),
    ("etcd/peer", "subject=CN = cp3", "TLS Web Server Authentication, TLS Web Client Authentication"),
    ("etcd/healthcheck-client", "subject=CN = kube-etcd-healthcheck-client", "TLS Web Client Authentication"),
    ("apiserver-etcd-client", "subject=CN = kube-apiserver-etcd-client", "TLS Web Client Authentication"),
])
def test_leaf_subjects_and_usages(rendered: Rendered, base: str, subject: str, eku: str) -> None:
    text = x509_text(rendered.path("cp3", f"{PKI}/{base}.crt"))
    assert subject in text.splitlines()
    assert eku in text


def test_etcd_sans_and_ca_properties(rendered: Rendered) -> None:
    text = x509_text(rendered.path("cp3", f"{PKI}/etcd/peer.crt"))
    for san in ("DNS:cp3", "DNS:localhost", "IP Address:10.0.0.13", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"):
        assert san in text
    ca = x509_text(rendered.path("cp1", f"{PKI}/etcd/ca.crt"))
    assert "CA:TRUE" in ca and "Certificate Sign" in ca and "DNS:etcd-ca" in ca
    dates = openssl("x509", "-in", str(rendered.path("cp1", f"{PKI}/ca.crt")), "-noout", "-startdate", "-enddate")
    start, end = (line.split("=", 1)[1] for line in dates.splitlines())
    assert int(end.split()[-2]) - int(start.split()[-2]) == 10  # ten-year CA


def test_key_formats_match_kubeadm(rendered: Rendered) -> None:
    key = rendered.path("cp1", f"{PKI}/apiserver.key").read_text()
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as client-go keyutil writes
    assert rendered.path("cp1", f"{PKI}/sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    openssl("rsa", "-in", str(rendered.path("cp1", f"{PKI}/sa.key")), "-check", "-noout")


def test_workers_and_lb_hold_no_private_key(rendered: Rendered) -> None:
    for host_dir in rendered.root.iterdir():
        if host_dir.is_dir() and host_dir.name not in rendered.control_planes:
            for f in host_dir.rglob("*"):
                if f.is_file():
                    assert b"PRIVATE KEY" not in f.read_bytes() and not f.name.endswith(".key"), f
