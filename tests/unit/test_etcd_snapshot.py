"""Pure parts of `kubeboot etcd snapshot save|restore`: the metadata document, the checks a file must pass before a
restore touches anything (its sha256, etcd's own hash), each member's restore command, the scripts' safety order,
and the exit codes of a corrupt file and of another cluster's snapshot (nothing is connected to)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kubeboot.cli import main
from kubeboot.config.load import parse_inventory
from kubeboot.errors import SnapshotCorruptError, SnapshotMismatchError
from kubeboot.offline import render
from kubeboot.plan import snapshot as sn
from kubeboot.workflows.etcd import ca_sha256, check_file, sidecar
from tests.conftest import KeyPool
from tests.unit.test_phases import DOC

CFG = parse_inventory(copy.deepcopy(DOC))  # lb1, cp1-cp3 (10.0.0.11-13), w1

META = sn.SnapshotMeta(
    "phases", "10.0.0.10:6443", "ab" * 32, "1.37.2", "3.7.0", "3.7.0", "69bc4e77a91e5c7f",
    (sn.SnapshotMember("cp1", "f0a0d996bbe29057", ("https://10.0.0.11:2380",), False),
     sn.SnapshotMember("cp2", "864a19b2b65fc38e", ("https://10.0.0.12:2380",), True)),
    "cp1", 901, 468, 0, "0" * 64, "2026-11-30T17:41:54Z", "etcd snapshot save", "s1.db")


def etcd_file(pages: int = 3, fill: bytes = b"x") -> bytes:
    """What `etcdctl snapshot save` writes: whole 512-byte pages, then the sha256 of them."""
    db = (fill * 512 * pages)[: 512 * pages]
    return db + hashlib.sha256(db).digest()


# --- metadata ---------------------------------------------------------------------------------------------------


def test_metadata_round_trips_with_stable_field_names() -> None:
    data = sn.meta_json(META)
    doc = json.loads(data)
    assert doc["apiVersion"] == "kubeboot.io/v1alpha1" and doc["kind"] == "EtcdSnapshot"
    assert list(doc)[2:] == ["cluster", "endpoint", "caSha256", "kubernetesVersion", "etcdVersion", "storageVersion",
                             "etcdClusterId", "members", "source", "revision", "totalKeys", "size", "sha256", "taken",
                             "reason", "file"]
    assert doc["members"][1] == {"name": "cp2", "id": "864a19b2b65fc38e", "peerUrls": ["https://10.0.0.12:2380"],
                                 "learner": True}
    assert sn.parse_meta(data) == META


@pytest.mark.parametrize("doc,why", [
    (b"{", "not JSON"),
    (b'{"kind": "Cluster", "apiVersion": "kubeboot.io/v1alpha1"}', "not a kubeboot.io/v1alpha1 EtcdSnapshot"),
    (json.dumps({"kind": "EtcdSnapshot", "apiVersion": "kubeboot.io/v1alpha1"}).encode(), "missing or malformed"),
])
def test_unreadable_metadata_is_named(doc: bytes, why: str) -> None:
    with pytest.raises(sn.SnapshotFormatError, match=why):
        sn.parse_meta(doc)


def test_a_sha256_that_is_not_64_hex_digits_is_refused() -> None:
    bad = json.loads(sn.meta_json(META))
    bad["sha256"] = "xyz"
    with pytest.raises(sn.SnapshotFormatError, match="sha256"):
        sn.parse_meta(json.dumps(bad).encode())


# --- checking a file --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 31, 32, 33, 512, 1 << 20])
def test_check_stream_finds_etcds_hash_across_chunk_boundaries(chunk: int) -> None:
    data = etcd_file()
    got = sn.check_stream(io.BytesIO(data), chunk)
    assert got == sn.FileCheck(len(data), hashlib.sha256(data).hexdigest(), True)
    flipped = bytearray(data)
    flipped[700] ^= 1
    assert sn.check_stream(io.BytesIO(bytes(flipped)), chunk).etcd_hash is False
    assert sn.check_stream(io.BytesIO(data[:-32]), chunk).etcd_hash is None  # a bare db file carries no hash


def test_verify_against_the_metadata() -> None:
    data = etcd_file()
    check = sn.check_stream(io.BytesIO(data))
    meta = replace(META, sha256=check.sha256, size=check.size)
    assert sn.verify(check, meta) == []
    assert sn.verify(check, None) == []  # etcd's own hash still vouches for the content
    truncated = sn.check_stream(io.BytesIO(data[:-100]))
    assert "differs from the recorded" in sn.verify(truncated, meta)[0]
    other = sn.check_stream(io.BytesIO(etcd_file(fill=b"y")))
    assert sn.verify(other, meta) == [f"sha256 {other.sha256} ({other.size} bytes) differs from the recorded "
                                      f"{check.sha256} ({check.size} bytes)"]
    bare = sn.check_stream(io.BytesIO(data[:-32]))
    assert sn.verify(bare, None) == ["no integrity hash at its end (not written by `etcdctl snapshot save`) and no "
                                     "metadata file"]


# --- what runs on the control planes -----------------------------------------------------------------------------


def test_restore_plan_names_every_member_with_its_peer_url() -> None:
    cps = CFG.control_planes
    plan = sn.restore_plan(CFG, list(reversed(cps)), "20260130T120000Z")  # inventory order, whatever the input
    initial = "cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380"
    assert [(m.host, m.name, m.peer_url) for m in plan] == [
        ("cp1", "cp1", "https://10.0.0.11:2380"), ("cp2", "cp2", "https://10.0.0.12:2380"),
        ("cp3", "cp3", "https://10.0.0.13:2380")]
    assert {m.initial_cluster for m in plan} == {initial}
    assert {m.token for m in plan} == {"kubeboot-restore-20260130T120000Z"}
    assert sn.restore_command(plan[1], "/var/lib/kubeboot/etcd/restore.db") == [
        "etcdutl", "snapshot", "restore", "/var/lib/kubeboot/etcd/restore.db", "--name", "cp2",
        "--initial-cluster", initial, "--initial-cluster-token", "kubeboot-restore-20260130T120000Z",
        "--initial-advertise-peer-urls", "https://10.0.0.12:2380", "--data-dir", "/var/lib/etcd.restore-20260130T120000Z",
        "--bump-revision", "1000000000", "--mark-compacted"]
    assert plan[0].backup_dir == "/var/lib/etcd.before-restore-20260130T120000Z"
    # a control plane that has not joined yet is not a member of the restored cluster
    two = sn.restore_plan(CFG, cps[:2], "s")
    assert [m.name for m in two] == ["cp1", "cp2"] and "cp3" not in two[0].initial_cluster


def test_the_scripts_are_valid_sh_and_refuse_to_swap_under_a_running_etcd() -> None:
    m = sn.restore_plan(CFG, CFG.control_planes, "s")[0]
    restore = sn.restore_script(m, "registry.k8s.io/etcd:3.7.0-0", "/var/lib/kubeboot/etcd/r.db")
    scripts = [restore, sn.stop_script(240), sn.start_script(),
               sn.save_script(CFG.host("cp1"), "registry.k8s.io/etcd:3.7.0-0", "/var/lib/kubeboot/etcd/s.db", 60),
               sn.check_uploaded_script("registry.k8s.io/etcd:3.7.0-0", "/r.db", "0" * 64)]
    for script in scripts:
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0, script
        assert "PRIVATE KEY" not in script
    for script in (restore, scripts[3], scripts[4]):  # the etcd image is mounted read only, and its snapshot removed
        assert "images mount \"$IMG\"" in script and "images unmount --rm" in script
    order = [restore.index(s) for s in ("still running", '"$T/etcdutl" snapshot restore', "-exec mv {}",
                                        "/member /var/lib/etcd/member")]
    assert order == sorted(order)
    assert "mv /var/lib/etcd " not in restore and "rm -rf /var/lib/etcd\n" not in restore  # may be a mount point
    stop = sn.stop_script(240)
    for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"mv -f /etc/kubernetes/manifests/{c}.yaml /etc/kubernetes/manifests.kubeboot-restore/{c}.yaml" in stop
    assert "kube-controller " in stop  # /proc/PID/comm is cut to 15 characters


def test_the_running_check_sees_processes_by_comm() -> None:
    # the shell function on this machine's /proc: this test's own shell is 'sh'; nothing has the other name
    script = sn._running_check(("sh", "kb-no-such-process")) + "\nrunning"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.split()
    assert out == ["sh"]


SAVE_OUTPUT = """@@kubeboot-snapshot status
[{"Endpoint":"https://10.0.0.11:2379","Status":{"header":{"cluster_id":7619050945449450623,"member_id":1,"revision":835,\
"raft_term":2},"version":"3.7.0","dbSize":1855488,"leader":1}}]

@@kubeboot-snapshot members
{"header":{"cluster_id":7619050945449450623},"members":[{"ID":2913034947964731583,"name":"cp3","peerURLs":\
["https://10.0.0.13:2380"]},{"ID":17339097806796918871,"name":"cp1","peerURLs":["https://10.0.0.11:2380"],\
"isLearner":true}]}

@@kubeboot-snapshot snapshot
{"hash":3192010894,"revision":835,"totalKey":468,"totalSize":1855488,"version":"3.7.0"}

@@kubeboot-snapshot sha256
2f0238ae0fdb24dbe6baad56f65a025eab6771499f8d3bf2d7d0e78901971ae2
"""


def test_parse_save_output() -> None:
    out = sn.parse_save_output(SAVE_OUTPUT)
    assert out == sn.SaveOutput(
        "3.7.0", "69bc4e77a91e5c7f",
        (sn.SnapshotMember("cp3", "286d2dd9ebbc80bf", ("https://10.0.0.13:2380",), False),
         sn.SnapshotMember("cp1", "f0a0d996bbe29057", ("https://10.0.0.11:2380",), True)),
        835, 468, "3.7.0", "2f0238ae0fdb24dbe6baad56f65a025eab6771499f8d3bf2d7d0e78901971ae2")
    with pytest.raises(sn.SnapshotFormatError):
        sn.parse_save_output(SAVE_OUTPUT.replace("@@kubeboot-snapshot snapshot", "@@kubeboot-snapshot other"))


# --- before anything is touched: exit 22 and 23 -----------------------------------------------------------------


def write_snapshot(path: Path, data: bytes, ca_pem_sha: str) -> None:
    path.write_bytes(data)
    sidecar(path).write_bytes(sn.meta_json(replace(META, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                                   ca_sha256=ca_pem_sha)))


def test_a_corrupt_file_is_exit_22_before_any_connection(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(copy.deepcopy(DOC)))  # its hosts do not exist: any connection would fail (8)
    snap = tmp_path / "s.db"
    write_snapshot(snap, etcd_file(), "ab" * 32)
    data = bytearray(snap.read_bytes())
    data[10] ^= 1
    snap.write_bytes(bytes(data))  # changed after it was saved
    res = CliRunner().invoke(main, ["etcd", "snapshot", "restore", str(snap), "-i", str(inv), "--yes"])
    assert res.exit_code == SnapshotCorruptError.exit_code == 22, res.output
    assert "is not a usable snapshot: sha256" in res.output and "nothing was changed" in res.output
    assert not (tmp_path / ".kubeboot").exists()  # not even a state directory was created
    sidecar(snap).write_text("{")
    res = CliRunner().invoke(main, ["etcd", "snapshot", "restore", str(snap), "-i", str(inv), "--yes"])
    assert res.exit_code == 22 and "s.db.json: not JSON" in res.output, res.output


def test_another_clusters_snapshot_is_exit_23(tmp_path: Path, keygen: KeyPool) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(copy.deepcopy(DOC)))
    rendered = render(inv, None, keygen=keygen)
    ours = ca_sha256(rendered.pki.cas["ca"].cert_pem())
    snap = tmp_path / "s.db"
    write_snapshot(snap, etcd_file(), ours)
    check, meta = check_file(rendered.config, rendered.state_dir, snap)
    assert meta is not None and meta.ca_sha256 == ours and check.etcd_hash is True
    write_snapshot(snap, etcd_file(), "cd" * 32)
    with pytest.raises(SnapshotMismatchError) as err:
        check_file(rendered.config, rendered.state_dir, snap)
    assert err.value.exit_code == 23 and "whose CA is not this cluster's" in err.value.message


# --- up's etcd-snapshot phase -----------------------------------------------------------------------------------


def _up_session(facts: dict[str, object], tmp_path: Path):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from kubeboot import output
    from kubeboot.plan.artifact import Artifact
    from kubeboot.runner import RunResult
    from kubeboot.workflows.session import Session

    want = {h.name: (Artifact("/etc/kubernetes/manifests/etcd.yaml", f"etcd of {h.name}".encode(), 0o600),)
            for h in CFG.control_planes}
    runner = SimpleNamespace(cfg=CFG, facts=facts, artifacts=want, rep=output.Reporter(io.StringIO()))
    rendered = SimpleNamespace(state_dir=tmp_path)
    return Session(runner, rendered, "etcd-snapshot", True, RunResult()), want  # type: ignore[arg-type]


def test_up_snapshots_only_before_a_running_members_manifest_changes(tmp_path: Path) -> None:
    from kubeboot.plan.facts import FileState, HostFacts
    from kubeboot.workflows.etcd import snapshot_before_etcd_changes

    def facts(digests: dict[str, str]) -> dict[str, object]:
        return {h.name: HostFacts(files={"/etc/kubernetes/manifests/etcd.yaml": FileState(digests[h.name], 0o600,
                                                                                          "root", "root")}
                                  if h.name in digests else {}) for h in CFG.hosts}

    s, want = _up_session(facts({}), tmp_path)  # a fresh cluster: no member runs yet
    snapshot_before_etcd_changes(s)
    assert s.planned == []
    same = {h: want[h][0].digest for h in ("cp1", "cp2", "cp3")}
    s, _ = _up_session(facts(same), tmp_path)  # converged
    snapshot_before_etcd_changes(s)
    assert s.planned == []
    s, _ = _up_session(facts({**same, "cp2": "sha256:" + "0" * 64}), tmp_path)
    snapshot_before_etcd_changes(s)
    assert s.planned == [f"take an etcd snapshot into {tmp_path / 'snapshots'} (before up rewrites etcd.yaml on cp2)"]
