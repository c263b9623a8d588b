"""Pure core: join protocol primitives against kubeadm's own test vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from kubeboot.pki.protocol import (
    KUBEADM_CERTS_FILES,
    ca_cert_hash,
    decrypt,
    decrypt_shared_files,
    detached_jws,
    encrypt,
    encrypt_shared_files,
    jws_valid,
    new_certificate_key,
    parse_certificate_key,
    parse_pin,
    pins_match,
)

# k8s.io/cluster-bootstrap token/jws/jws_test.go
CONTENT = "Hello from the other side. I must have called a thousand times."
JWS_VECTORS = [
    (CONTENT, "joshua", "my voice is my passcode",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"),
    ("", "joshua", "my voice is my passcode",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"),
    (CONTENT, "joshua", "",
     "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"),
]

# The test vector of kubeadm's cmd/kubeadm/app/util/pubkeypin (testdata/test-cert.pem and expectedHash).
PIN_CERT = Path(__file__).parent / "data" / "pubkeypin-test-cert.pem"
PIN = "sha256:345959acb2c3b2feb87d281961c893f62a314207ef02599f1cc4a5fb255480b3"


@pytest.mark.parametrize("content,kid,secret,expected", JWS_VECTORS)
def test_jws_vectors_from_cluster_bootstrap(content: str, kid: str, secret: str, expected: str) -> None:
    assert detached_jws(content, kid, secret) == expected
    assert jws_valid(expected, content, kid, secret)
    assert not jws_valid(expected, content + " ", kid, secret)
    assert not jws_valid(expected, content, kid, secret + "x")


def test_pin_vector_from_kubeadm() -> None:
    cert = x509.load_pem_x509_certificate(PIN_CERT.read_bytes())
    assert ca_cert_hash(cert) == PIN
    assert pins_match([cert], ["sha256:" + "0" * 64, PIN])


def test_pin_matching_rules(keygen, now) -> None:  # type: ignore[no-untyped-def]
    from copy import deepcopy

    from kubeboot.config.load import parse_inventory
    from kubeboot.pki.bundle import plan_pki
    from tests.unit.test_config_validation import BASE

    pki, _ = plan_pki(parse_inventory(deepcopy(BASE)), {}, now, keygen)
    ca = pki.cas["ca"].cert
    pin = ca_cert_hash(ca)
    assert pin.startswith("sha256:") and len(pin) == 71
    assert pins_match([ca], [pin.upper().replace("SHA256", "sha256")])
    assert pins_match([pki.cas["etcd-ca"].cert, ca], ["sha256:" + "0" * 64, pin])
    assert not pins_match([pki.cas["etcd-ca"].cert], [pin])


@pytest.mark.parametrize("bad,why", [("md5:abcd", "unsupported hash type"), ("sha256:abc", "64 hex digits"),
                                     ("345959acb2c3", "expected sha256:<hex>")])
def test_bad_pins(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_pin(bad)


def test_certificate_key_round_trip_and_wrong_key() -> None:
    key_hex = new_certificate_key()
    assert len(key_hex) == 64 and key_hex == key_hex.lower()
    key = parse_certificate_key(key_hex)
    blob = encrypt(key, b"secret pem")
    assert len(blob) == 12 + len(b"secret pem") + 16
    assert decrypt(key, blob) == b"secret pem"
    with pytest.raises(ValueError, match="wrong certificate key"):
        decrypt(parse_certificate_key(new_certificate_key()), blob)
    with pytest.raises(ValueError, match="64 hex"):
        parse_certificate_key("xyz")


def test_aes_gcm_layout_matches_go_seal() -> None:
    """Go's gcm.Seal(nonce, nonce, data, nil) = nonce || ciphertext || tag: fixed nonce gives a fixed blob."""
    key = bytes(range(32))
    nonce = bytes(12)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert encrypt(key, b"abc", nonce) == nonce + AESGCM(key).encrypt(nonce, b"abc", None)


def test_shared_files_payload_names_and_empty_values() -> None:
    key = parse_certificate_key(new_certificate_key())
    files = {rel: f"data of {rel}".encode() for rel in KUBEADM_CERTS_FILES.values() if rel != "ca.key"}
    data = encrypt_shared_files(key, files)
    assert sorted(data) == sorted(["ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key",
                                   "sa.pub", "etcd-ca.crt", "etcd-ca.key"])
    assert data["ca.key"] == b""  # absent on disk -> uploaded empty, skipped on download
    assert decrypt_shared_files(key, data) == files
