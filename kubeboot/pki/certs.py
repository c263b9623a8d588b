"""Pure core: kubeadm's certificate table and the issue / reuse rules.

Identities, usages, SANs and validity follow kubeadm (cmd/kubeadm/app/phases/certs/certlist.go and
util/pkiutil/pki_helpers.go); docs/kubeadm-versions.md has the source references.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeboot.config.model import ClusterConfig, Host, IPAddress, LoadBalancerMode
from kubeboot.pki.keys import PrivateKey, PublicKey, key_algorithm_of, same_public_key

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH

# kubeadm CertificateBackdate: certificates from the cert list start 5 minutes before "now" so that
# slightly skewed clocks accept them at once.
BACKDATE = timedelta(minutes=5)
# A leaf that expires sooner than this is re-issued on the next run (kubeadm would need `certs renew`).
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class AltNames:
    dns: tuple[str, ...] = ()
    ips: tuple[IPAddress, ...] = ()

    @staticmethod
    def build(dns: Sequence[str], ips: Sequence[IPAddress]) -> AltNames:
        """kubeadm RemoveDuplicateAltNames: DNS names de-duplicated and sorted, IPs de-duplicated in order."""
        seen: list[IPAddress] = []
        for ip in ips:
            if ip not in seen:
                seen.append(ip)
        return AltNames(tuple(sorted(set(dns))), tuple(seen))


@dataclass(frozen=True)
class CASpec:
    id: str  # kubeadm phase name: ca, front-proxy-ca, etcd-ca
    base: str  # file base relative to certsDir
    cn: str


@dataclass(frozen=True)
class LeafSpec:
    id: str  # kubeadm phase name (apiserver, etcd-server, ...)
    base: str  # file base relative to certsDir
    ca: str  # CASpec.id that signs it
    cn: Callable[[Host], str]
    orgs: tuple[str, ...]
    usages: tuple[x509.ObjectIdentifier, ...]
    alt_names: Callable[[ClusterConfig, Host], AltNames] | None = None
    orgs_apply: Callable[[ClusterConfig], bool] | None = None  # None: orgs always apply

    def orgs_for(self, cfg: ClusterConfig) -> tuple[str, ...]:
        return self.orgs if self.orgs_apply is None or self.orgs_apply(cfg) else ()


def _const(value: str) -> Callable[[Host], str]:
    return lambda _host: value


def apiserver_alt_names(cfg: ClusterConfig, host: Host) -> AltNames:
    """pkiutil.GetAPIServerAltNames, plus localhost/127.0.0.1 when node-local proxies reach it on loopback."""
    domain = cfg.networking.dns_domain
    dns = [host.name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]
    ips: list[IPAddress] = [cfg.apiserver_service_ip, host.address]
    ep = cfg.control_plane_endpoint
    if ep.is_ip:
        ips.append(ipaddress.ip_address(ep.host))
    else:
        dns.append(ep.host)
    for san in cfg.certificates.api_server_cert_sans:
        try:
            ips.append(ipaddress.ip_address(san))
        except ValueError:
            dns.append(san)
    if cfg.load_balancer_mode is LoadBalancerMode.NODE_LOCAL:
        # Non-control-plane nodes reach the API through nginx on 127.0.0.1; the certificate they see is
        # this one, so it must be valid for the loopback name they dial.
        dns.append("localhost")
        ips.append(ipaddress.ip_address("127.0.0.1"))
    return AltNames.build(dns, ips)


def etcd_alt_names(cfg: ClusterConfig, host: Host) -> AltNames:
    """pkiutil.GetEtcdAltNames / GetEtcdPeerAltNames: node name, localhost, advertise, 127.0.0.1 and ::1."""
    return AltNames.build(
        [host.name, "localhost"],
        [host.address, ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
    )


CAS: tuple[CASpec, ...] = (
    CASpec("ca", "ca", "kubernetes"),
    CASpec("front-proxy-ca", "front-proxy-ca", "front-proxy-ca"),
    CASpec("etcd-ca", "etcd/ca", "etcd-ca"),
)

# Creation order of `kubeadm init phase certs all` (CAs interleaved there; leaves only here).
LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec("apiserver", "apiserver", "ca", _const("kube-apiserver"), (), (SERVER_AUTH,), apiserver_alt_names),
    # O=kubeadm:cluster-admins from 1.29 to 1.35; from 1.36 no O (kubeadm binds the user to
    # system:kubelet-api-admin instead, so the apiserver's kubelet client is no longer a cluster admin).
    LeafSpec("apiserver-kubelet-client", "apiserver-kubelet-client", "ca", _const("kube-apiserver-kubelet-client"),
             ("kubeadm:cluster-admins",), (CLIENT_AUTH,),
             orgs_apply=lambda cfg: cfg.version.facts.kubelet_client_admin_org),
    LeafSpec("front-proxy-client", "front-proxy-client", "front-proxy-ca", _const("front-proxy-client"), (),
             (CLIENT_AUTH,)),
    # etcd server and peer certs authenticate both ways (peers dial each other), hence both usages.
    LeafSpec("etcd-server", "etcd/server", "etcd-ca", lambda h: h.name, (), (SERVER_AUTH, CLIENT_AUTH),
             etcd_alt_names),
    LeafSpec("etcd-peer", "etcd/peer", "etcd-ca", lambda h: h.name, (), (SERVER_AUTH, CLIENT_AUTH), etcd_alt_names),
    LeafSpec("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca", _const("kube-etcd-healthcheck-client"),
             (), (CLIENT_AUTH,)),
    LeafSpec("apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca", _const("kube-apiserver-etcd-client"), (),
             (CLIENT_AUTH,)),
)


def random_serial() -> int:
    """Uniform in [1, 2^63-1), as pkiutil draws it."""
    return secrets.randbelow(2**63 - 2) + 1


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    # Go >= 1.25 (which builds Kubernetes 1.35+) derives a CA's SKI as the leftmost 160 bits of SHA-256
    # over the subjectPublicKey bit string (RFC 7093 method 1); cryptography's helper would use SHA-1.
    bits = _subject_public_key_bits(public_key)
    return x509.SubjectKeyIdentifier(hashlib.sha256(bits).digest()[:20])


def _subject_public_key_bits(public_key: PublicKey) -> bytes:
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    # Go picks SHA-256 for RSA and P-256, SHA-384 for P-384.
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def _name(cn: str, orgs: Sequence[str]) -> x509.Name:
    # Go's pkix.Name puts O before CN in the RDN sequence.
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=False, encipher_only=False, decipher_only=False,
    )


def issue_ca(cn: str, key: PrivateKey, not_before: datetime, not_after: datetime) -> x509.Certificate:
    """pkiutil.NewSelfSignedCACert: CA:TRUE without pathlen, CN also as DNS SAN, SKI, no AKI."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, ()))
        .issuer_name(_name(cn, ()))
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(True), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    return builder.sign(key, _signature_hash(key))


def issue_leaf(cn: str, orgs: Sequence[str], usages: Sequence[x509.ObjectIdentifier], alt: AltNames | None,
               key: PrivateKey, ca_cert: x509.Certificate, ca_key: PrivateKey, not_before: datetime,
               not_after: datetime) -> x509.Certificate:
    """pkiutil.NewSignedCert: CA:FALSE, digitalSignature+keyEncipherment, the given EKUs, AKI from the CA."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    except x509.ExtensionNotFound:
        pass
    if alt is not None and (alt.dns or alt.ips):
        general: list[x509.GeneralName] = [x509.DNSName(d) for d in alt.dns]
        general += [x509.IPAddress(ip) for ip in alt.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(ca_key, _signature_hash(ca_key))


# --- reading certificates back (reuse decisions) --------------------------------------------------


def subject_cn(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def subject_orgs(cert: x509.Certificate) -> tuple[str, ...]:
    return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


def alt_names_of(cert: x509.Certificate) -> AltNames:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return AltNames()
    return AltNames(
        tuple(sorted(san.get_values_for_type(x509.DNSName))),
        tuple(san.get_values_for_type(x509.IPAddress)),  # type: ignore[arg-type]
    )


def usages_of(cert: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...]:
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if ca_cert's key produced cert's signature (and the issuer name matches)."""
    if cert.issuer != ca_cert.subject:
        return False
    pub = ca_cert.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            assert cert.signature_hash_algorithm is not None
            pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            assert cert.signature_hash_algorithm is not None
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def leaf_problem(cert: x509.Certificate, key: PrivateKey, ca_cert: x509.Certificate, cn: str,
                 orgs: Sequence[str], usages: Sequence[x509.ObjectIdentifier], alt: AltNames | None,
                 algorithm: object, now: datetime) -> str | None:
    """Why an existing leaf cannot be kept (None when it can): the reasons a plan shows for re-issuing."""
    if not same_public_key(cert.public_key(), key.public_key()):  # type: ignore[arg-type]
        return "the key does not match the certificate"
    if not signed_by(cert, ca_cert):
        return "not signed by the current CA"
    if subject_cn(cert) != cn or sorted(subject_orgs(cert)) != sorted(orgs):
        return f"subject changed (want CN={cn}, O={','.join(orgs) or '-'})"
    if set(usages_of(cert)) != set(usages):
        return "extended key usages changed"
    want = alt or AltNames()
    have = alt_names_of(cert)
    if set(have.dns) != set(want.dns) or set(have.ips) != set(want.ips):
        missing = sorted(set(want.dns) - set(have.dns)) + [str(i) for i in want.ips if i not in have.ips]
        extra = sorted(set(have.dns) - set(want.dns)) + [str(i) for i in have.ips if i not in want.ips]
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("no longer wanted " + ", ".join(extra))
        return "SANs changed (" + "; ".join(parts) + ")"
    if key_algorithm_of(key) is not algorithm:
        return f"key algorithm changed (want {getattr(algorithm, 'value', algorithm)})"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d} (within {RENEW_BEFORE.days} days)"
    if cert.not_valid_before_utc > now + BACKDATE:
        return "not valid yet (clock moved backwards?)"
    return None
