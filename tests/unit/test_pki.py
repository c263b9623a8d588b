"""Pure core: the PKI plan — kubeadm identities, reuse across runs, and re-issue only with a reason."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from kubeboot.config.load import parse_inventory
from kubeboot.errors import StateError
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.certs import alt_names_of, signed_by, subject_cn, subject_orgs, usages_of
from kubeboot.pki.keys import private_key_pem
from tests.unit.test_config_validation import BASE

CFG = parse_inventory(copy.deepcopy(BASE))

# (leaf id, CN, O, EKUs, signing CA) straight from kubeadm's certlist.go
EXPECTED = [
    ("apiserver", "kube-apiserver", (), {EKU.SERVER_AUTH}, "ca"),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", (), {EKU.CLIENT_AUTH}, "ca"),  # no O since 1.36
    ("front-proxy-client", "front-proxy-client", (), {EKU.CLIENT_AUTH}, "front-proxy-ca"),
    ("etcd-server", "cp2", (), {EKU.SERVER_AUTH, EKU.CLIENT_AUTH}, "etcd-ca"),
    ("etcd-peer", "cp2", (), {EKU.SERVER_AUTH, EKU.CLIENT_AUTH}, "etcd-ca"),
    ("etcd-healthcheck-client", "kube-etcd-healthcheck-client", (), {EKU.CLIENT_AUTH}, "etcd-ca"),
    ("apiserver-etcd-client", "kube-apiserver-etcd-client", (), {EKU.CLIENT_AUTH}, "etcd-ca"),
]


def test_fresh_plan_issues_kubeadm_identities(keygen, now) -> None:  # type: ignore[no-untyped-def]
    pki, changes = plan_pki(CFG, {}, now, keygen)
    assert {c.item for c in changes if c.scope == "cluster"} == {"ca", "front-proxy-ca", "etcd-ca", "sa"}
    assert all(c.action == "created" for c in changes)
    for leaf_id, cn, orgs, ekus, ca in EXPECTED:
        cert = pki.leaves[("cp2", leaf_id)].cert
        assert subject_cn(cert) == cn and subject_orgs(cert) == orgs, leaf_id
        assert set(usages_of(cert)) == ekus, leaf_id
        assert signed_by(cert, pki.cas[ca].cert), leaf_id
        assert cert.not_valid_before_utc == now - timedelta(minutes=5)
        assert cert.not_valid_after_utc == now + timedelta(days=365)
    for ca in pki.cas.values():
        assert ca.cert.not_valid_after_utc == now + timedelta(days=3650)  # from the start time, as kubeadm
    # every key in one render is distinct (no accidental sharing between CA and leaves)
    pems = [private_key_pem(p.key) for p in [*pki.cas.values(), *pki.leaves.values(), *pki.clients.values()]]
    assert len(set(pems)) == len(pems)


def test_apiserver_and_etcd_sans(keygen, now) -> None:  # type: ignore[no-untyped-def]
    pki, _ = plan_pki(CFG, {}, now, keygen)
    api = alt_names_of(pki.leaves[("cp2", "apiserver")].cert)
    assert api.dns == ("cp2", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", "lb.example.test")
    assert [str(i) for i in api.ips] == ["10.96.0.1", "10.0.0.12"]
    etcd = alt_names_of(pki.leaves[("cp3", "etcd-peer")].cert)
    assert etcd.dns == ("cp3", "localhost")
    assert [str(i) for i in etcd.ips] == ["10.0.0.13", "127.0.0.1", "::1"]


def test_kubeconfig_clients(keygen, now) -> None:  # type: ignore[no-untyped-def]
    pki, _ = plan_pki(CFG, {}, now, keygen)
    assert sorted(f for h, f in pki.clients if h == "cp1") == [
        "admin.conf", "controller-manager.conf", "kubelet.conf", "scheduler.conf", "super-admin.conf"]
    assert ("cp2", "super-admin.conf") not in pki.clients  # break-glass credential only on the init node
    kubelet = pki.clients[("cp3", "kubelet.conf")].cert
    assert subject_cn(kubelet) == "system:node:cp3" and subject_orgs(kubelet) == ("system:nodes",)
    admin = pki.clients[("cp1", "admin.conf")].cert
    assert subject_orgs(admin) == ("kubeadm:cluster-admins",)
    assert subject_orgs(pki.clients[("cp1", "super-admin.conf")].cert) == ("system:masters",)
    # kubeadm gives kubeconfig client certs the CA's NotBefore
    assert admin.not_valid_before_utc == pki.cas["ca"].cert.not_valid_before_utc


def test_second_run_reuses_everything_byte_for_byte(keygen, now) -> None:  # type: ignore[no-untyped-def]
    first, _ = plan_pki(CFG, {}, now, keygen)
    stored = first.to_stored()
    calls = keygen.calls
    second, changes = plan_pki(CFG, stored, now + timedelta(days=3), keygen)
    assert keygen.calls == calls  # no key generated at all
    assert {c.action for c in changes} == {"kept"}
    assert second.to_stored() == stored


def test_new_san_reissues_only_apiserver_certs_and_says_why(keygen, now) -> None:  # type: ignore[no-untyped-def]
    first, _ = plan_pki(CFG, {}, now, keygen)
    doc = copy.deepcopy(BASE)
    doc["spec"]["certificates"]["apiServerCertSANs"] = ["api.example.test"]
    _, changes = plan_pki(parse_inventory(doc), first.to_stored(), now, keygen)
    reissued = [(c.scope, c.item, c.reason) for c in changes if c.action != "kept"]
    assert reissued == [(h, "apiserver", "SANs changed (missing api.example.test)") for h in ("cp1", "cp2", "cp3")]


def test_near_expiry_and_algorithm_change_reissue_leaves_but_never_cas(keygen, now) -> None:  # type: ignore[no-untyped-def]
    first, _ = plan_pki(CFG, {}, now, keygen)
    later = now + timedelta(days=340)
    _, changes = plan_pki(CFG, first.to_stored(), later, keygen)
    assert {c.item for c in changes if c.action == "reissued"} >= {"apiserver", "etcd-peer", "admin.conf"}
    assert all(c.action == "kept" for c in changes if c.scope == "cluster")
    assert any("within 30 days" in c.reason for c in changes)

    doc = copy.deepcopy(BASE)
    doc["spec"]["certificates"]["keyAlgorithm"] = "ECDSA-P256"
    pki, changes = plan_pki(parse_inventory(doc), first.to_stored(), now, keygen)
    assert all(c.action == "kept" for c in changes if c.scope == "cluster")
    assert {c.reason for c in changes if c.scope != "cluster"} == {"key algorithm changed (want ECDSA-P256)"}


def test_ca_cert_without_key_is_refused(keygen, now) -> None:  # type: ignore[no-untyped-def]
    stored = plan_pki(CFG, {}, now, keygen)[0].to_stored()
    del stored["pki/etcd/ca.key"]
    with pytest.raises(StateError) as info:
        plan_pki(CFG, stored, now, keygen)
    assert info.value.exit_code == 4
    assert "pki/etcd/ca.key is missing" in info.value.message


def test_mismatched_ca_key_is_refused(keygen, now) -> None:  # type: ignore[no-untyped-def]
    stored = plan_pki(CFG, {}, now, keygen)[0].to_stored()
    stored["pki/ca.key"] = stored["pki/front-proxy-ca.key"]
    with pytest.raises(StateError, match="ca.key does not belong to pki/ca.crt"):
        plan_pki(CFG, stored, now, keygen)


def test_leaf_signed_by_foreign_ca_is_reissued(keygen, now) -> None:  # type: ignore[no-untyped-def]
    stored = plan_pki(CFG, {}, now, keygen)[0].to_stored()
    other = plan_pki(CFG, {}, now, keygen)[0].to_stored()
    for suffix in (".crt", ".key"):
        stored["hosts/cp1/pki/apiserver" + suffix] = other["hosts/cp1/pki/apiserver" + suffix]
    _, changes = plan_pki(CFG, stored, now, keygen)
    assert [(c.scope, c.item, c.reason) for c in changes if c.action == "reissued"] == [
        ("cp1", "apiserver", "not signed by the current CA")]


def test_ca_extensions_match_go(keygen, now) -> None:  # type: ignore[no-untyped-def]
    pki, _ = plan_pki(CFG, {}, now, keygen)
    ca = pki.cas["ca"].cert
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.digital_signature and ku.key_encipherment
    assert ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["kubernetes"]
    leaf = pki.leaves[("cp1", "apiserver")].cert
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest and len(ski.digest) == 20


def test_apiserver_kubelet_client_org_follows_the_version(keygen, now) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(BASE)
    doc["spec"]["kubernetesVersion"] = "1.35"
    old, _ = plan_pki(parse_inventory(doc), {}, now, keygen)
    assert subject_orgs(old.leaves[("cp1", "apiserver-kubelet-client")].cert) == ("kubeadm:cluster-admins",)
    # upgrading the target to 1.37 re-issues it without the O, as kubeadm 1.36+ would issue it
    _, changes = plan_pki(CFG, old.to_stored(), now, keygen)
    assert [(c.scope, c.item) for c in changes if c.action == "reissued"] == [
        (h, "apiserver-kubelet-client") for h in ("cp1", "cp2", "cp3")]
