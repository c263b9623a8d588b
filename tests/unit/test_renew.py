"""`kubeboot certs renew`'s pure parts: kubeadm's names, which state entries are issued anew, which host files are
written, which static pods restart — and that renewing through the state directory gives new serials from the same
CAs while everything else stays byte-identical."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from kubeboot.errors import ConfigError
from kubeboot.offline import render
from kubeboot.workflows.renew import RENEWABLE, chosen_names, host_paths, restarts, state_entries
from tests.conftest import KeyPool
from tests.unit.test_config_validation import BASE


def test_names_are_kubeadms_and_all_means_every_one() -> None:
    assert chosen_names(["all"]) == sorted(RENEWABLE) and len(RENEWABLE) == 11  # kubeadm certs renew's list
    assert chosen_names(["apiserver", "apiserver"]) == ["apiserver"]
    with pytest.raises(ConfigError) as info:
        chosen_names(["apiserver", "kubelet.conf"])  # the kubelet rotates its own client certificate
    assert "not a certificate kubeadm renews: kubelet.conf" in str(info.value.problems[0])


def test_files_and_restarts_follow_what_each_component_reads() -> None:
    assert host_paths(["etcd-peer", "scheduler.conf"]) == {
        "/etc/kubernetes/pki/etcd/peer.crt": "etcd-peer", "/etc/kubernetes/pki/etcd/peer.key": "etcd-peer",
        "/etc/kubernetes/scheduler.conf": "scheduler.conf"}
    assert restarts(["admin.conf", "super-admin.conf", "etcd-healthcheck-client"]) == []
    assert restarts(["scheduler.conf", "apiserver", "etcd-server"]) == ["etcd", "kube-apiserver", "kube-scheduler"]
    assert restarts(sorted(RENEWABLE)) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]


def _serials(hosts: dict[str, tuple], host: str) -> dict[str, int]:  # type: ignore[type-arg]
    out = {}
    for a in hosts[host]:
        if a.path.endswith(".crt") and "/pki/" in a.path:
            out[a.path] = x509.load_pem_x509_certificate(a.content).serial_number
        elif a.path.endswith(".conf") and b"client-certificate-data" in a.content:
            import base64
            data = yaml.safe_load(a.content)["users"][0]["user"]["client-certificate-data"]
            out[a.path] = x509.load_pem_x509_certificate(base64.b64decode(data)).serial_number
    return out


def test_renewing_through_the_state_directory(tmp_path: Path, keygen: KeyPool) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(copy.deepcopy(BASE)))
    first = render(inv, None, keygen=keygen)
    cps = [h.name for h in first.config.control_planes]
    assert state_entries(first.config, ["apiserver", "admin.conf"]) == {
        *(f"hosts/{cp}/pki/apiserver" for cp in cps), *(f"hosts/{cp}/clients/admin" for cp in cps)}
    before = {cp: _serials(first.hosts, cp) for cp in cps}
    again = render(inv, None, keygen=keygen)  # without renew: nothing changes
    assert {cp: _serials(again.hosts, cp) for cp in cps} == before
    renewed = render(inv, None, keygen=keygen, renew=lambda cfg: state_entries(cfg, ["apiserver", "admin.conf"]))
    for cp in cps:
        after = _serials(renewed.hosts, cp)
        changed = {p for p in after if after[p] != before[cp][p]}
        assert changed == {"/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/admin.conf"}, (cp, changed)
    for ca in ("ca", "etcd-ca", "front-proxy-ca"):  # the same CAs sign them
        assert renewed.pki.cas[ca].cert_pem() == first.pki.cas[ca].cert_pem()
    # persisted: the next render (an `up`) keeps the renewed ones
    kept = render(inv, None, keygen=keygen)
    assert {cp: _serials(kept.hosts, cp) for cp in cps} == {cp: _serials(renewed.hosts, cp) for cp in cps}
