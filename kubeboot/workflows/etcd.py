"""Shell: `kubeboot etcd snapshot save` and `kubeboot etcd snapshot restore`, and the snapshot `up` takes before it
rewrites a running etcd member's manifest.

save: from the first healthy member (asked from the workstation, as `status` does), `etcdctl snapshot save` on that
control plane over SSH, the file streamed back and checked (its sha256 against the host's, etcd's own hash), then
FILE and FILE.json (kubeboot.plan.snapshot.SnapshotMeta) written 0600.

restore, read RESTORE in order: upload the checked file to every control plane and check it there; move every
control plane's static-pod manifests aside (the kubelet stops etcd, the API servers, the controller-managers and
schedulers — it keeps running for everything else); on each member `etcdutl snapshot restore` into a fresh data dir
with that member's name and peer URL and the same --initial-cluster everywhere, the old data kept aside; move the
manifests back (the kubelet starts them); wait for every member healthy with one leader and every API server ready.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kubeboot import output, state
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.errors import (
    KubebootError,
    RemoteCommandError,
    SnapshotCorruptError,
    SnapshotMismatchError,
    WaitTimeoutError,
)
from kubeboot.etcdapi import EtcdClient, EtcdError
from kubeboot.offline import RenderResult, load_inventory, render
from kubeboot.phases.base import Phase, RunOptions
from kubeboot.plan import snapshot as sn
from kubeboot.plan.actions import RunCommand, UploadFile
from kubeboot.render.cluster import local_api_url
from kubeboot.render.images import etcd_image
from kubeboot.render.manifests import ETCD_DATA_DIR, MANIFESTS, etcd_client_url, etcd_peer_url
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog, combine, parallel
from kubeboot.transport.base import Transport, close_all
from kubeboot.workflows.session import Session, ready
from kubeboot.workflows.status import connect, credentials

ETCD_MANIFEST = f"{MANIFESTS}/etcd.yaml"
SAVE_TIMEOUT = 300.0


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def ca_sha256(ca_pem: bytes) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(ca_pem).public_bytes(Encoding.DER)).hexdigest()


def default_snapshot_path(state_dir: Path, cfg: ClusterConfig, now: datetime, reason: str = "") -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:40]
    return state_dir / "snapshots" / f"{cfg.name}-{_stamp(now)}{'-' + slug if slug else ''}.db"


def sidecar(db: Path) -> Path:
    return db.with_name(db.name + ".json")


# --- save ------------------------------------------------------------------------------------------------------


def healthy_source(cfg: ClusterConfig, client: EtcdClient) -> Host | None:
    """The first control plane, in inventory order, whose etcd member says it is healthy."""
    cps = cfg.control_planes
    with ThreadPoolExecutor(max_workers=len(cps)) as pool:
        health = list(pool.map(lambda h: client.health(etcd_client_url(h))[0], cps))
    return next((h for h, ok in zip(cps, health) if ok is True), None)


def save_snapshot(cfg: ClusterConfig, transports: Mapping[str, Transport], client: EtcdClient, ca_pem: bytes,
                  dest: Path, reason: str, rep: output.Reporter, phase: str) -> sn.SnapshotMeta:
    """Take a snapshot from a healthy member into dest (+ dest.json). EtcdError when no member is healthy."""
    source = healthy_source(cfg, client)
    if source is None:
        raise EtcdError("no etcd member is healthy: a snapshot needs one",
                        hint="`kubeboot status` shows the members; start the stopped control planes")
    now = datetime.now(timezone.utc)
    remote = f"{sn.NODE_DIR}/snapshot-{_stamp(now)}.db"
    t = transports[source.name]
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = dest.with_name(dest.name + ".part")
    rep.info(phase, source.name, f"etcdctl snapshot save ({reason})")
    try:
        res = t.run(sn.save_script(source, etcd_image(cfg), remote, SAVE_TIMEOUT),
                    display=f"etcdctl snapshot save {remote}", timeout=SAVE_TIMEOUT + 60)
        try:
            out = sn.parse_save_output(res.stdout)
        except sn.SnapshotFormatError as exc:
            raise RemoteCommandError(f"{source.name} [{phase}]: {exc}") from None
        try:
            t.get_file(remote, str(part))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    finally:
        t.run(f"rm -f {shlex.quote(remote)}", check=False, display=f"remove {remote}")
    with part.open("rb") as fh:
        check = sn.check_stream(fh)
    if check.sha256 != out.sha256 or check.etcd_hash is False:
        part.unlink(missing_ok=True)
        raise SnapshotCorruptError(f"{source.name} [{phase}]: the copy of {remote} is damaged (sha256 {check.sha256},"
                                   f" on the host {out.sha256}; etcd hash {'ok' if check.etcd_hash else 'bad'})",
                                   hint="run the command again")
    meta = sn.SnapshotMeta(
        cfg.name, cfg.control_plane_endpoint.hostport(), ca_sha256(ca_pem), cfg.version.version, out.etcd_version,
        out.storage_version, out.cluster_id, out.members, source.name, out.revision, out.total_keys, check.size,
        check.sha256, now.strftime("%Y-%m-%dT%H:%M:%SZ"), reason, dest.name)
    part.rename(dest)
    dest.chmod(0o600)
    state.write_atomic(sidecar(dest), sn.meta_json(meta), 0o600)
    rep.info(phase, source.name, f"wrote {dest} ({check.size} bytes, revision {out.revision}, etcd {out.etcd_version},"
                                 f" cluster {out.cluster_id}, {len(out.members)} member(s)) and {sidecar(dest).name}")
    return meta


@dataclass(frozen=True)
class SaveRequest:
    inventory: Path
    state_dir: Path | None
    out: Path | None
    connect: ConnectOptions = ConnectOptions()


def save(req: SaveRequest, rep: output.Reporter) -> tuple[Path, sn.SnapshotMeta]:
    cfg = load_inventory(req.inventory)
    root = req.state_dir or state.default_state_dir(req.inventory, cfg.name)
    creds = credentials(cfg, root)
    dest = req.out or default_snapshot_path(root, cfg, datetime.now(timezone.utc))
    transports = connect(cfg, root, req.connect)
    client = EtcdClient([etcd_client_url(h) for h in cfg.control_planes], creds.etcd_ca, creds.etcd_cert, creds.etcd_key)
    rep.phase_start("snapshot")
    try:
        meta = save_snapshot(cfg, transports, client, creds.ca, dest, "etcd snapshot save", rep, "snapshot")
    finally:
        client.close()
        close_all(transports.values())
    rep.phase_done("snapshot", f"{dest}")
    return dest, meta


def take_snapshot(s: Session, reason: str) -> Path | None:
    """`up`'s safety net: a snapshot into <state dir>/snapshots/ before a step that restarts etcd members. A
    cluster without a healthy member gets none (a warning): `up` may be what repairs it."""
    cfg = s.cfg
    pki = s.rendered.pki
    dest = default_snapshot_path(s.rendered.state_dir, cfg, datetime.now(timezone.utc), reason)
    client = s.etcd(cfg.control_planes)
    try:
        save_snapshot(cfg, s.runner.transports, client, pki.cas["ca"].cert_pem(), dest, reason, s.runner.rep, s.path)
    except EtcdError as exc:
        s.runner.rep.warn(s.path, None, f"no snapshot taken: {exc.message}")
        return None
    finally:
        client.close()
    return dest


def snapshot_before_etcd_changes(s: Session) -> None:
    """Step of `up` before `files`: when files would rewrite etcd.yaml on a control plane where it already is (so
    the kubelet restarts that member), take a snapshot first. Nothing on a fresh or converged cluster."""
    s.start()
    hosts = []
    for h in s.cfg.control_planes:
        have = s.runner.facts.get(h.name)
        want = next((a for a in s.runner.artifacts.get(h.name, ()) if a.path == ETCD_MANIFEST), None)
        if have is None or want is None or ETCD_MANIFEST not in have.files:
            continue
        if have.files[ETCD_MANIFEST].digest != want.digest:
            hosts.append(h.name)
    if not hosts:
        s.done("no running etcd member's manifest changes")
        return
    reason = f"before up rewrites etcd.yaml on {', '.join(hosts)}"
    if s.dry_run:
        s.change(None, f"take an etcd snapshot into {s.rendered.state_dir / 'snapshots'} ({reason})")
    else:
        dest = take_snapshot(s, reason)
        if dest is not None:
            s.change(None, f"took an etcd snapshot: {dest}")
    s.done()


# --- restore ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreRequest:
    inventory: Path
    state_dir: Path | None
    snapshot: Path
    dry_run: bool = True
    wait_timeout: float = 240.0
    connect: ConnectOptions = ConnectOptions()
    stamp: str = ""  # names the token and the kept data dirs; default: now


def check_file(cfg: ClusterConfig, root: Path, path: Path) -> tuple[sn.FileCheck, sn.SnapshotMeta | None]:
    """Everything that can be checked on the workstation, before any host is touched."""
    if not path.is_file():
        raise SnapshotCorruptError(f"{path}: no such file")
    meta = None
    side = sidecar(path)
    if side.is_file():
        try:
            meta = sn.parse_meta(side.read_bytes())
        except sn.SnapshotFormatError as exc:
            raise SnapshotCorruptError(f"{side}: {exc}", hint="restore needs the metadata `save` wrote") from None
    with path.open("rb") as fh:
        check = sn.check_stream(fh)
    problems = sn.verify(check, meta)
    if problems:
        raise SnapshotCorruptError(f"{path} is not a usable snapshot: " + "; ".join(problems),
                                   hint="nothing was changed; restore another snapshot")
    if meta is not None:
        ours = ca_sha256(credentials(cfg, root).ca)
        if meta.ca_sha256 != ours:
            raise SnapshotMismatchError(
                f"{path} was taken from cluster {meta.cluster!r} ({meta.endpoint}), whose CA is not this cluster's "
                f"(sha256 {meta.ca_sha256[:16]}..., here {ours[:16]}...)",
                hint="nothing was changed; restore a snapshot of this cluster (its CA must match the state directory)")
    return check, meta


def members_of(s: Session) -> list[Host]:
    """The control planes whose etcd runs or ran (its manifest in place, or aside from a restore that stopped)."""
    return [h for h in s.cfg.control_planes
            if s.has(h, ETCD_MANIFEST) or s.has(h, f"{sn.ASIDE}/etcd.yaml")]


def _fan_out(s: Session, hosts: Sequence[Host], acts: Mapping[str, list[RunCommand | UploadFile]]) -> None:
    if s.dry_run:
        for h in hosts:
            s.apply(h, acts[h.name])
        return
    errors = parallel(list(hosts), lambda h: s.apply(h, acts[h.name]), s.runner.connect_opts.concurrency)
    if errors:
        raise combine({hosts[i].name: e for i, e in errors.items()}, s.path)


def restore_workflow(req: RestoreRequest, check: sn.FileCheck, stamp: str, image: str) -> tuple[Phase, ...]:
    remote = f"{sn.NODE_DIR}/restore-{stamp}.db"
    timeout = req.wait_timeout

    def upload(s: Session) -> None:
        s.start()
        hosts = members_of(s)
        if not hosts:
            raise KubebootError("no control plane runs etcd: there is nothing to restore into",
                                hint="`kubeboot up` builds the cluster; restore is for a cluster that exists")
        _fan_out(s, hosts, {h.name: [
            UploadFile(str(req.snapshot), remote, check.size, f"sha256:{check.sha256}", "the snapshot to restore"),
            RunCommand(sn.check_uploaded_script(image, remote, check.sha256), "check the copy before anything stops",
                       display=f"check {remote} (sha256, etcdutl snapshot status)", timeout=120)]
            for h in hosts})
        s.done()

    def stop(s: Session) -> None:
        s.start()
        hosts = members_of(s)
        _fan_out(s, hosts, {h.name: [RunCommand(
            sn.stop_script(timeout), "the kubelet stops the control plane's static pods",
            display=f"move {', '.join(c + '.yaml' for c in sn.COMPONENTS)} to {sn.ASIDE} and wait until they stop",
            timeout=timeout + 30)] for h in hosts})
        s.done()

    def restore_members(s: Session) -> None:
        s.start()
        plan = {m.host: m for m in sn.restore_plan(s.cfg, members_of(s), stamp)}
        hosts = [h for h in s.cfg.control_planes if h.name in plan]
        _fan_out(s, hosts, {h.name: [RunCommand(
            sn.restore_script(plan[h.name], image, remote), f"old data kept in {plan[h.name].backup_dir}",
            display=f"etcdutl snapshot restore --name {h.name} --initial-advertise-peer-urls {plan[h.name].peer_url} "
                    f"--initial-cluster {plan[h.name].initial_cluster} into {ETCD_DATA_DIR}",
            timeout=600)] for h in hosts})
        s.done()

    def start(s: Session) -> None:
        s.start()
        hosts = members_of(s)
        _fan_out(s, hosts, {h.name: [RunCommand(sn.start_script(), "the kubelet starts them again",
                                                display=f"move the manifests back from {sn.ASIDE}")] for h in hosts})
        s.done()

    def verify(s: Session) -> None:
        s.start()
        hosts = members_of(s)
        if s.dry_run:
            s.change(None, f"wait for {len(hosts)} etcd member(s) healthy with one leader and every API server "
                           f"ready ({timeout:.0f}s)")
            s.done()
            return
        s.done(wait_restored(s, hosts, timeout))

    return (
        Phase("upload", "Copy the snapshot to every control plane and check it there", step=upload),
        Phase("stop-control-plane", "Move the static-pod manifests aside: the kubelet stops etcd and the API servers",
              step=stop),
        Phase("restore-members", "etcdutl snapshot restore on every member into a fresh data dir (old one kept)",
              step=restore_members),
        Phase("start-control-plane", "Move the manifests back: the kubelet starts them", step=start),
        Phase("verify", "Every etcd member healthy with one leader, every API server ready", step=verify),
    )


def wait_restored(s: Session, hosts: Sequence[Host], timeout: float) -> str:
    """Poll until the member list is exactly these hosts (names and peer URLs, voters), each /health is true, one
    leader, and every API server answers /readyz."""
    client = s.etcd(hosts)
    want = {(h.name, etcd_peer_url(h)) for h in hosts}
    deadline = time.monotonic() + timeout
    why = "not checked yet"
    try:
        while True:
            try:
                members = client.members_via(etcd_client_url(hosts[0]))
                got = {(m.name, u) for m in members for u in m.peer_urls}
                health = {h.name: client.health(etcd_client_url(h))[0] for h in hosts}
                leaders = {client.status(etcd_client_url(h)) for h in hosts}
                api = {h.name: ready(local_api_url(h)) for h in hosts}
                if got != want or any(m.learner for m in members):
                    why = f"etcd members {sorted(got)}"
                elif not all(v is True for v in health.values()):
                    why = f"etcd health {health}"
                elif len({leader for _me, leader in leaders}) != 1 or 0 in {leader for _me, leader in leaders}:
                    why = "etcd members do not agree on one leader"
                elif not all(api.values()):
                    why = f"API servers not ready: {', '.join(n for n, ok in api.items() if not ok)}"
                else:
                    return (f"{len(hosts)} etcd member(s) healthy, one leader, {len(hosts)} API server(s) ready")
            except EtcdError as exc:
                why = exc.message
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"[{s.path}] the restored control plane is not healthy after {timeout:.0f}s: "
                                       f"{why}", hint="`kubeboot status` shows what is down; the data dirs before the "
                                                      "restore are kept as /var/lib/etcd.before-restore-*")
            time.sleep(2.0)
    finally:
        client.close()


def restore(req: RestoreRequest, rep: output.Reporter) -> RunResult:
    """Plan (dry run) or apply a restore; the file is checked first, before any connection."""
    cfg = load_inventory(req.inventory)
    root = req.state_dir or state.default_state_dir(req.inventory, cfg.name)
    check, meta = check_file(cfg, root, req.snapshot)
    rep.phase_start("check")
    if meta is None:
        rep.warn("check", None, f"no {sidecar(req.snapshot).name}: checked etcd's own hash only")
    else:
        rep.info("check", None, f"{req.snapshot}: sha256 ok, cluster {meta.cluster}, taken {meta.taken} from "
                                f"{meta.source} (etcd {meta.etcd_version}, revision {meta.revision}, {meta.reason})")
    rep.phase_done("check", f"{check.size} bytes")
    rendered: RenderResult = render(req.inventory, req.state_dir)
    stamp = req.stamp or _stamp(datetime.now(timezone.utc))
    workflow = restore_workflow(req, check, stamp, etcd_image(cfg))

    def session(runner: Runner, path: str, dry_run: bool, result: RunResult) -> Session:
        return Session(runner, rendered, path, dry_run, result)

    trace = TraceLog(rendered.state_dir / "trace.log")
    runner = Runner(cfg, {}, RunOptions(), req.connect, rep, trace, session=session,
                    extra_paths=lambda h: [ETCD_MANIFEST, f"{sn.ASIDE}/etcd.yaml"])
    runner.hosts = list(cfg.control_planes)
    try:
        return runner.run(workflow, (), (), req.dry_run)
    finally:
        runner.close()
