"""Pure core: private keys in kubeadm's algorithms and PEM encodings.

kubeadm writes RSA keys as PKCS#1 ("RSA PRIVATE KEY"), EC keys as SEC1 ("EC PRIVATE KEY") and sa.pub as a
PKIX "PUBLIC KEY" (client-go keyutil, kubeadm pkiutil.EncodePublicKeyPEM). We do the same byte-for-byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kubeboot.config.model import KeyAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
KeyGen = Callable[[KeyAlgorithm], PrivateKey]


def generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """A fresh key for kubeadm's encryptionAlgorithm value (the default KeyGen)."""
    if algorithm is KeyAlgorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_3072: 3072, KeyAlgorithm.RSA_4096: 4096}[algorithm]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_algorithm_of(key: PrivateKey | PublicKey) -> KeyAlgorithm | None:
    """The algorithm a key belongs to, or None if kubeadm has no name for it."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return {2048: KeyAlgorithm.RSA_2048, 3072: KeyAlgorithm.RSA_3072, 4096: KeyAlgorithm.RSA_4096}.get(
            key.key_size
        )
    if isinstance(key.curve, ec.SECP256R1):
        return KeyAlgorithm.ECDSA_P256
    if isinstance(key.curve, ec.SECP384R1):
        return KeyAlgorithm.ECDSA_P384
    return None


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#1 for RSA, SEC1 for EC ("TraditionalOpenSSL"), unencrypted, as kubeadm writes them."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse a PEM private key; ValueError if it is not an RSA or EC key."""
    # OpenSSL's RSA consistency check (primality of p and q) costs ~50 ms per key and dominated re-runs;
    # every key kubeboot loads is also checked against its certificate's public key before use.
    key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("only RSA and ECDSA private keys are supported")
    return key


def public_key_fingerprint(key: PublicKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: the form of kubeadm's CA pin (pubkeypin)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    return public_key_fingerprint(a) == public_key_fingerprint(b)
