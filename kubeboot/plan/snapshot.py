"""Pure core of `kubeboot etcd snapshot save|restore`: the metadata written beside a snapshot, the checks a file
must pass before a restore touches anything, and the shell scripts that run on the control planes.

A snapshot is two files on the workstation: FILE (etcd's own `etcdctl snapshot save` output: a bbolt database
followed by the sha256 of everything before it) and FILE.json (SnapshotMeta: kind EtcdSnapshot). Neither the
scripts nor the metadata ever carry a private key; the snapshot itself holds the cluster's Secrets, so both files
are written 0600.

The nodes have no etcdctl: the scripts copy etcdctl and etcdutl out of the etcd image containerd already holds for
the static pod (`ctr images mount`, read only; the binaries are static), run them on the host and remove them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

from kubeboot.config.model import ClusterConfig, Host
from kubeboot.render.manifests import ETCD_DATA_DIR, MANIFESTS, STATIC_PODS, etcd_peer_url

API_VERSION = "kubeboot.io/v1alpha1"
KIND = "EtcdSnapshot"
# The control plane's static pods, moved here while a restore runs (the kubelet stops them; moved back, it starts
# them). A fixed name, so a restore that stopped halfway finds them on a re-run.
ASIDE = "/etc/kubernetes/manifests.kubeboot-restore"
COMPONENTS = STATIC_PODS
ETCD_PKI = "/etc/kubernetes/pki/etcd"
NODE_DIR = "/var/lib/kubeboot/etcd"  # snapshots on a control plane while they are saved or restored
# etcd's advice for restoring a cluster that clients watch (etcdutl snapshot restore --help): raise the revision
# past anything a watcher has seen and mark it compacted, so every informer (kubelets, controllers) relists
# instead of trusting a revision that now means something else.
BUMP_REVISION = 1_000_000_000
HASH_SIZE = 32


class SnapshotFormatError(ValueError):
    """The metadata document is not an EtcdSnapshot kubeboot can read."""


@dataclass(frozen=True)
class SnapshotMember:
    name: str
    id: str  # hex, as etcdctl prints it
    peer_urls: tuple[str, ...]
    learner: bool


@dataclass(frozen=True)
class SnapshotMeta:
    """What FILE.json records about FILE: where it came from, what it holds, how to check it."""

    cluster: str  # the inventory's metadata.name
    endpoint: str  # spec.controlPlaneEndpoint
    ca_sha256: str  # sha256 of the cluster CA certificate (DER): the cluster's identity across etcd restores
    kubernetes_version: str
    etcd_version: str  # the server's version (etcdctl endpoint status)
    storage_version: str  # the database's (etcdutl snapshot status)
    etcd_cluster_id: str  # hex
    members: tuple[SnapshotMember, ...]
    source: str  # the control plane it was taken from
    revision: int
    total_keys: int
    size: int  # bytes of FILE
    sha256: str  # of FILE, hex
    taken: str  # RFC 3339 UTC
    reason: str  # "etcd snapshot save", or why `up` took it
    file: str  # FILE's name when it was written


def meta_json(meta: SnapshotMeta) -> bytes:
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
    for k, v in asdict(meta).items():
        doc[_camel(k)] = v
    doc["members"] = [{_camel(k): (list(v) if isinstance(v, tuple) else v) for k, v in asdict(m).items()}
                      for m in meta.members]
    return (json.dumps(doc, indent=2) + "\n").encode()


def parse_meta(data: bytes) -> SnapshotMeta:
    """FILE.json back; SnapshotFormatError naming what is wrong."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SnapshotFormatError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise SnapshotFormatError(f"not a {API_VERSION} {KIND} document")
    try:
        members = tuple(SnapshotMember(str(m["name"]), str(m["id"]), tuple(str(u) for u in m["peerUrls"]),
                                       bool(m["learner"])) for m in doc["members"])
        meta = SnapshotMeta(
            str(doc["cluster"]), str(doc["endpoint"]), str(doc["caSha256"]), str(doc["kubernetesVersion"]),
            str(doc["etcdVersion"]), str(doc["storageVersion"]), str(doc["etcdClusterId"]), members,
            str(doc["source"]), int(doc["revision"]), int(doc["totalKeys"]), int(doc["size"]), str(doc["sha256"]),
            str(doc["taken"]), str(doc["reason"]), str(doc["file"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotFormatError(f"missing or malformed field: {exc}") from None
    if not re.fullmatch(r"[0-9a-f]{64}", meta.sha256):
        raise SnapshotFormatError(f"sha256 is not 64 hex digits: {meta.sha256!r}")
    return meta


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


# --- checking a file ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    size: int
    sha256: str  # of the whole file, hex
    etcd_hash: bool | None  # etcd's appended sha256 matches (None: the file carries none)


def check_stream(fh: IO[bytes], chunk: int = 1 << 20) -> FileCheck:
    """One pass over a snapshot: its sha256, and etcd's own integrity hash — `etcdctl snapshot save` appends the
    sha256 of the database when the database is a whole number of 512-byte pages, and `etcdutl snapshot restore`
    refuses a file where it does not match (etcd server/storage/backend snapshot format)."""
    whole = hashlib.sha256()
    body = hashlib.sha256()
    tail = b""
    size = 0
    while True:
        data = fh.read(chunk)
        if not data:
            break
        whole.update(data)
        size += len(data)
        buf = tail + data
        body.update(buf[:-HASH_SIZE] if len(buf) > HASH_SIZE else b"")
        tail = buf[-HASH_SIZE:]
    if size % 512 != HASH_SIZE:
        return FileCheck(size, whole.hexdigest(), None)
    return FileCheck(size, whole.hexdigest(), body.digest() == tail)


def verify(check: FileCheck, meta: SnapshotMeta | None) -> list[str]:
    """Why the file must not be restored (empty: it may be)."""
    problems = []
    if meta is not None and (check.sha256 != meta.sha256 or check.size != meta.size):
        problems.append(f"sha256 {check.sha256} ({check.size} bytes) differs from the recorded {meta.sha256} "
                        f"({meta.size} bytes)")
    if check.etcd_hash is False:
        problems.append("etcd's integrity hash at the end of the file does not match its content")
    if check.etcd_hash is None and meta is None:
        problems.append("no integrity hash at its end (not written by `etcdctl snapshot save`) and no metadata file")
    return problems


# --- scripts run on the control planes ---------------------------------------------------------------------


def _running_check(names: Sequence[str]) -> str:
    """A shell function `running` that prints the names of these processes that run on the host (comm is cut to
    15 characters: kube-controller-manager is 'kube-controller')."""
    comms = " ".join(n[:15] for n in names)
    return ("running() { for f in /proc/[0-9]*/comm; do read -r c < \"$f\" 2>/dev/null || continue; "
            f"for n in {comms}; do [ \"$c\" = \"$n\" ] && echo \"$c\"; done; done | sort -u; }}")


def tools_prelude(image: str) -> str:
    """Shell that puts etcdctl and etcdutl from the etcd image into $T (removed on exit). The image is the one the
    host's etcd manifest names (also when moved aside by a restore), else `image`."""
    q = shlex.quote
    return f"""set -eu
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin"
IMG=$(sed -n 's/^ *image: *//p' {MANIFESTS}/etcd.yaml {ASIDE}/etcd.yaml 2>/dev/null | head -n1 | tr -d "\\"'")
[ -n "$IMG" ] || IMG={q(image)}
mkdir -p -m 0700 {NODE_DIR}
T=$(mktemp -d {NODE_DIR}/tools.XXXXXX)
cleanup() {{ ctr -n k8s.io images unmount --rm "$T/mnt" >/dev/null 2>&1 || true; rm -rf "$T"; }}
trap cleanup EXIT
mkdir "$T/mnt"
ctr -n k8s.io images mount "$IMG" "$T/mnt" >/dev/null || {{ echo "cannot mount the etcd image $IMG" >&2; exit 1; }}
cp "$T/mnt/usr/local/bin/etcdctl" "$T/mnt/usr/local/bin/etcdutl" "$T/"
ctr -n k8s.io images unmount --rm "$T/mnt" >/dev/null
"""


def _url_host(host: Host) -> str:
    ip = str(host.address)
    return f"[{ip}]" if ":" in ip else ip


SECTION = "@@kubeboot-snapshot "


def save_script(host: Host, image: str, remote: str, timeout: float) -> str:
    """On the source control plane: the member's status and the member list, `etcdctl snapshot save` to
    `remote` (0600), then etcdutl's view of the file and its sha256, each after a SECTION line."""
    q = shlex.quote
    ep = f"https://{_url_host(host)}:2379"
    return tools_prelude(image) + f"""E="$T/etcdctl --endpoints={ep} --cacert={ETCD_PKI}/ca.crt \
--cert={ETCD_PKI}/healthcheck-client.crt --key={ETCD_PKI}/healthcheck-client.key --command-timeout={int(timeout)}s"
echo "{SECTION}status"; $E endpoint status -w json
echo; echo "{SECTION}members"; $E member list -w json
rm -f {q(remote)}
(umask 077 && $E snapshot save {q(remote)} >/dev/null)
echo; echo "{SECTION}snapshot"; "$T/etcdutl" snapshot status {q(remote)} -w json
echo; echo "{SECTION}sha256"; sha256sum {q(remote)} | cut -d' ' -f1
"""


@dataclass(frozen=True)
class SaveOutput:
    etcd_version: str
    cluster_id: str
    members: tuple[SnapshotMember, ...]
    revision: int
    total_keys: int
    storage_version: str
    sha256: str


def parse_save_output(stdout: str) -> SaveOutput:
    sections: dict[str, str] = {}
    name = None
    for line in stdout.splitlines():
        if line.startswith(SECTION):
            name = line[len(SECTION):].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    try:
        status = json.loads(sections["status"])
        status = status[0] if isinstance(status, list) else status
        members = json.loads(sections["members"])
        snap = json.loads(sections["snapshot"])
        out = SaveOutput(
            str(status["Status"]["version"]), f"{int(status['Status']['header']['cluster_id']):x}",
            tuple(SnapshotMember(str(m.get("name", "")), f"{int(m['ID']):x}", tuple(m.get("peerURLs", [])),
                                 bool(m.get("isLearner"))) for m in members.get("members", [])),
            int(snap["revision"]), int(snap["totalKey"]), str(snap.get("version", "")),
            sections["sha256"].strip())
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SnapshotFormatError(f"unexpected output from etcdctl/etcdutl: {exc}") from None
    if not re.fullmatch(r"[0-9a-f]{64}", out.sha256):
        raise SnapshotFormatError(f"unexpected sha256sum output: {out.sha256!r}")
    return out


def check_uploaded_script(image: str, remote: str, sha256: str) -> str:
    """On each control plane before anything stops: the uploaded copy is the file checked on the workstation, and
    etcdutl (the version that will restore it) can read it."""
    q = shlex.quote
    return tools_prelude(image) + f"""got=$(sha256sum {q(remote)} | cut -d' ' -f1)
[ "$got" = {sha256} ] || {{ echo "the uploaded copy has sha256 $got, not {sha256}" >&2; exit 1; }}
"$T/etcdutl" snapshot status {q(remote)} -w json >/dev/null
"""


def stop_script(timeout: float) -> str:
    """Move the control plane's static-pod manifests aside and wait until the kubelet has stopped them (no etcd,
    API server, controller-manager or scheduler process left on the host)."""
    moves = "; ".join(f"[ ! -e {MANIFESTS}/{c}.yaml ] || mv -f {MANIFESTS}/{c}.yaml {ASIDE}/{c}.yaml"
                      for c in COMPONENTS)
    return f"""set -eu
{_running_check(COMPONENTS)}
mkdir -p -m 0700 {ASIDE}
{moves}
i=0
while [ -n "$(running)" ]; do
  i=$((i+1))
  if [ $i -gt {int(timeout)} ]; then
    echo "still running after {int(timeout)}s: $(running | tr '\\n' ' ')(the kubelet stops a static pod whose \
manifest is gone: is it running?)" >&2
    exit 1
  fi
  sleep 1
done
"""


@dataclass(frozen=True)
class MemberRestore:
    """One member's `etcdutl snapshot restore`: the same --initial-cluster and token on every member, its own
    --name and peer URL, as etcd's multi-member restore recipe (and the manifests kubeboot renders) name them."""

    host: str
    name: str
    peer_url: str
    initial_cluster: str
    token: str
    data_dir: str  # the fresh data dir etcdutl writes
    backup_dir: str  # where the old data dir's content is kept


def restore_plan(cfg: ClusterConfig, members: Sequence[Host], stamp: str) -> list[MemberRestore]:
    """Every member of the restored cluster, in inventory order; stamp (e.g. 20260130T120000Z) names the token and
    the directories."""
    order = [h for h in cfg.control_planes if h in members]
    initial = ",".join(f"{h.name}={etcd_peer_url(h)}" for h in order)
    return [MemberRestore(h.name, h.name, etcd_peer_url(h), initial, f"kubeboot-restore-{stamp}",
                          f"{ETCD_DATA_DIR}.restore-{stamp}", f"{ETCD_DATA_DIR}.before-restore-{stamp}")
            for h in order]


def restore_command(m: MemberRestore, snapshot: str) -> list[str]:
    return ["etcdutl", "snapshot", "restore", snapshot, "--name", m.name, "--initial-cluster", m.initial_cluster,
            "--initial-cluster-token", m.token, "--initial-advertise-peer-urls", m.peer_url,
            "--data-dir", m.data_dir, "--bump-revision", str(BUMP_REVISION), "--mark-compacted"]


def restore_script(m: MemberRestore, image: str, snapshot: str) -> str:
    """Refuse while etcd runs; restore into a fresh directory; keep the old data dir's content in backup_dir;
    put the restored member directory in place. /var/lib/etcd itself stays (it may be a mount point)."""
    q = shlex.quote
    cmd = " ".join(q(a) for a in restore_command(m, snapshot)[1:])
    data = ETCD_DATA_DIR
    return tools_prelude(image) + f"""{_running_check(("etcd",))}
if [ -n "$(running)" ]; then echo "etcd is still running: its manifest must be aside first" >&2; exit 1; fi
rm -rf {q(m.data_dir)}
"$T/etcdutl" {cmd} >/dev/null
mkdir -p -m 0700 {q(m.backup_dir)} {data}
find {data} -mindepth 1 -maxdepth 1 -exec mv {{}} {q(m.backup_dir)}/ \\;
mv {q(m.data_dir)}/member {data}/member
rmdir {q(m.data_dir)}
chmod 0700 {data}
rm -f {q(snapshot)}
"""


def start_script() -> str:
    """Move the manifests back; the kubelet starts the static pods again."""
    return f"""set -eu
if [ -d {ASIDE} ]; then
  for f in {ASIDE}/*.yaml; do [ -e "$f" ] || continue; mv -n "$f" {MANIFESTS}/; done
  rmdir {ASIDE} 2>/dev/null || true
fi
"""
