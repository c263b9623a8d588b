"""Adopting an existing cluster's PKI (kubeboot.pki.adopt) and the read script that fetches it (workflows/adopt)."""

from __future__ import annotations

import copy
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from kubeboot.config.load import parse_inventory
from kubeboot.errors import AdoptError, ForeignClusterError
from kubeboot.pki.adopt import CA_CERT, adopt, check_same_ca, control_plane_paths, kubeconfig_client
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.tokens import generate_token
from kubeboot.render.cluster import render_cluster
from kubeboot.workflows.adopt import parse_read, read_script
from tests.unit.test_config_validation import BASE

CFG = parse_inventory(copy.deepcopy(BASE))  # lb1, cp1-cp3, w1


def cluster_files(keygen, now):  # type: ignore[no-untyped-def]
    """What the control planes of a cluster hold: every file kubeboot places on them (kubeadm's layout)."""
    pki, _ = plan_pki(CFG, {}, now, keygen)
    hosts = render_cluster(CFG, pki, generate_token(now))
    files = {name: {a.path: a.content for a in arts} for name, arts in hosts.items()}
    return pki, files


def test_adopting_what_the_control_planes_hold_keeps_every_certificate(keygen, now) -> None:  # type: ignore[no-untyped-def]
    pki, files = cluster_files(keygen, now)
    got = adopt(CFG, {h.name: files[h.name] for h in CFG.control_planes})
    assert got is not None and got.source == "cp1"
    assert got.entries == pki.to_stored()  # CAs, sa pair, every leaf and client certificate of every control plane
    calls = keygen.calls
    again, changes = plan_pki(CFG, got.entries, now + timedelta(days=1), keygen)
    assert keygen.calls == calls and {c.action for c in changes} == {"kept"}
    assert again.to_stored() == pki.to_stored()


def test_a_control_plane_missing_files_gets_only_what_it_has(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _pki, files = cluster_files(keygen, now)
    cps = {h.name: dict(files[h.name]) for h in CFG.control_planes}
    del cps["cp1"]["/etc/kubernetes/pki/ca.key"]  # the CA key from the next control plane that has it
    cps["cp3"] = {}  # not joined yet: nothing from it
    got = adopt(CFG, cps)
    assert got is not None and got.source == "cp2"
    assert got.per_host == {"cp1": 12, "cp2": 11}  # 7 leaves + 5 (cp1, super-admin too) / 4 kubeconfigs
    assert not any(k.startswith("hosts/cp3/") for k in got.entries)


def test_no_ca_anywhere_is_a_new_cluster(keygen, now) -> None:  # type: ignore[no-untyped-def]
    assert adopt(CFG, {h.name: {} for h in CFG.control_planes}) is None


def test_control_planes_of_two_clusters_are_refused(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _p1, a = cluster_files(keygen, now)
    _p2, b = cluster_files(keygen, now)
    with pytest.raises(ForeignClusterError) as err:
        adopt(CFG, {"cp1": a["cp1"], "cp2": b["cp2"], "cp3": a["cp3"]})
    assert err.value.exit_code == 24 and "cp1" in err.value.message and "cp2" in err.value.message
    assert "PRIVATE KEY" not in err.value.message


def test_an_external_ca_is_refused(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _pki, files = cluster_files(keygen, now)
    cps = {h.name: {p: c for p, c in files[h.name].items() if p != "/etc/kubernetes/pki/ca.key"}
           for h in CFG.control_planes}
    with pytest.raises(AdoptError) as err:
        adopt(CFG, cps)
    assert err.value.exit_code == 25 and "external CA" in err.value.message


def test_a_missing_sa_key_is_refused(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _pki, files = cluster_files(keygen, now)
    cps = {h.name: {p: c for p, c in files[h.name].items() if p != "/etc/kubernetes/pki/sa.key"}
           for h in CFG.control_planes}
    with pytest.raises(AdoptError, match="sa.key"):
        adopt(CFG, cps)


def test_state_ca_against_the_nodes(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _p1, a = cluster_files(keygen, now)
    _p2, b = cluster_files(keygen, now)
    mine = a["cp1"][CA_CERT]
    check_same_ca(mine, {"cp1": mine, "w1": mine, "cp3": None})  # same CA, or nothing yet: fine
    with pytest.raises(ForeignClusterError) as err:
        check_same_ca(mine, {"cp1": mine, "w1": b["w1"][CA_CERT]})
    assert err.value.message.startswith("w1: /etc/kubernetes/pki/ca.crt is another cluster's CA")
    assert "--state-dir" in (err.value.hint or "")


def test_kubeconfig_client_reads_embedded_data_only(keygen, now) -> None:  # type: ignore[no-untyped-def]
    _pki, files = cluster_files(keygen, now)
    crt, key = kubeconfig_client(files["cp1"]["/etc/kubernetes/admin.conf"]) or (b"", b"")
    assert crt.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in key
    rotated = b"""apiVersion: v1
clusters: [{cluster: {server: 'https://10.0.0.11:6443'}, name: kubernetes}]
contexts: [{context: {cluster: kubernetes, user: 'system:node:cp1'}, name: 'system:node:cp1@kubernetes'}]
current-context: 'system:node:cp1@kubernetes'
kind: Config
users: [{name: 'system:node:cp1', user: {client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem,
  client-key: /var/lib/kubelet/pki/kubelet-client-current.pem}}]
"""
    assert kubeconfig_client(rotated) is None
    assert kubeconfig_client(b"not: [a kubeconfig") is None


def test_read_script_round_trip_in_a_real_shell(tmp_path: Path) -> None:
    present = tmp_path / "etc" / "ca.crt"
    present.parent.mkdir()
    present.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" * 40)  # > one base64 line
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    spaced = tmp_path / "with space"
    spaced.write_bytes(b"\x00\xffbinary")
    paths = [str(present), str(tmp_path / "absent"), str(empty), str(spaced)]
    out = subprocess.run(["sh", "-c", read_script(paths)], capture_output=True, text=True, check=True).stdout
    assert parse_read(out) == {str(present): present.read_bytes(), str(tmp_path / "absent"): None,
                               str(empty): b"", str(spaced): b"\x00\xffbinary"}


def test_every_file_adoption_reads_is_a_control_plane_file() -> None:
    paths = control_plane_paths()
    assert len(paths) == len(set(paths)) and all(p.startswith("/etc/kubernetes/") for p in paths)
    assert "/etc/kubernetes/pki/etcd/ca.key" in paths and "/etc/kubernetes/super-admin.conf" in paths
