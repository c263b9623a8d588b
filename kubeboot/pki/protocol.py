"""Pure core: kubeadm's join protocol primitives — the CA pin, the detached JWS on cluster-info, and the
certificate key that encrypts the shared CA/SA files in the kubeadm-certs Secret.

Sources: cmd/kubeadm/app/util/pubkeypin (pin), k8s.io/cluster-bootstrap token/jws (JWS),
cmd/kubeadm/app/util/crypto + phases/copycerts (AES-256-GCM, nonce prefixed, no associated data).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PIN_RE = re.compile(r"^(?P<kind>[A-Za-z0-9]+):(?P<hex>[0-9a-fA-F]*)$")
CERT_KEY_BYTES = 32
NONCE_BYTES = 12


# --- CA pin (--discovery-token-ca-cert-hash) -------------------------------------------------------

def ca_cert_hash(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo (not of the whole certificate)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def parse_pin(text: str) -> str:
    """Normalise one pin to `sha256:<64 lower-case hex>`; ValueError names what is wrong."""
    m = PIN_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: expected sha256:<hex>")
    if m["kind"].lower() != "sha256":
        raise ValueError(f"{text!r}: unsupported hash type {m['kind']!r} (only sha256)")
    if len(m["hex"]) != 64:
        raise ValueError(f"{text!r}: a sha256 pin has 64 hex digits, got {len(m['hex'])}")
    return "sha256:" + m["hex"].lower()


def pins_match(certs: Iterable[x509.Certificate], pins: Sequence[str]) -> bool:
    """True if any certificate's public key matches any pin (kubeadm pubkeypin.Set.CheckAny)."""
    wanted = {parse_pin(p) for p in pins}
    return any(ca_cert_hash(c) in wanted for c in certs)


# --- detached JWS over cluster-info ----------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached_jws(content: str, token_id: str, token_secret: str) -> str:
    """HS256 JWS of `content` keyed by the token secret, header {"alg":"HS256","kid":<id>}, payload removed."""
    header = _b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    payload = _b64url(content.encode())
    mac = hmac.new(token_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}..{_b64url(mac)}"


def jws_valid(signature: str, content: str, token_id: str, token_secret: str) -> bool:
    return hmac.compare_digest(signature, detached_jws(content, token_id, token_secret))


# --- certificate key and the kubeadm-certs payload -------------------------------------------------

def new_certificate_key() -> str:
    """32 random bytes as 64 lower-case hex characters (kubeadm certs certificate-key)."""
    return secrets.token_hex(CERT_KEY_BYTES)


def parse_certificate_key(text: str) -> bytes:
    t = text.strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", t):
        raise ValueError("the certificate key must be 64 hex characters (32 bytes)")
    return bytes.fromhex(t)


def encrypt(key: bytes, data: bytes, nonce: bytes | None = None) -> bytes:
    """AES-256-GCM, stored as nonce || ciphertext || tag, no associated data (kubeadm util/crypto)."""
    n = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    return n + AESGCM(key).encrypt(n, data, None)


def decrypt(key: bytes, blob: bytes) -> bytes:
    """Inverse of encrypt; ValueError if the key is wrong or the data was altered."""
    if len(blob) < NONCE_BYTES + 16:
        raise ValueError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)
    except InvalidTag:
        raise ValueError("wrong certificate key or corrupted data") from None


# Secret data key -> path relative to certsDir (local etcd). Keys are paths with "/" replaced by "-".
KUBEADM_CERTS_FILES: dict[str, str] = {
    "ca.crt": "ca.crt", "ca.key": "ca.key",
    "front-proxy-ca.crt": "front-proxy-ca.crt", "front-proxy-ca.key": "front-proxy-ca.key",
    "sa.key": "sa.key", "sa.pub": "sa.pub",
    "etcd-ca.crt": "etcd/ca.crt", "etcd-ca.key": "etcd/ca.key",
}


def encrypt_shared_files(key: bytes, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Secret data for kubeadm-certs from {relative path: bytes}; an absent file is uploaded empty, as kubeadm."""
    return {name: (encrypt(key, files[rel]) if rel in files else b"") for name, rel in KUBEADM_CERTS_FILES.items()}


def decrypt_shared_files(key: bytes, data: Mapping[str, bytes]) -> dict[str, bytes]:
    """{relative path: bytes} from kubeadm-certs data; empty values are skipped, unknown keys ignored."""
    out: dict[str, bytes] = {}
    for name, blob in data.items():
        rel = KUBEADM_CERTS_FILES.get(name)
        if rel is not None and blob:
            out[rel] = decrypt(key, blob)
    return out
