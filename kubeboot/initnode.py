"""Shell: `kubeboot init` on the first control plane itself (or under --rootfs), kubeadm's init sequence:
certs, kubeconfig, etcd, control-plane, kubelet-start, wait-control-plane, upload-config, upload-certs,
mark-control-plane, bootstrap-token, show-join-command.

Existing key material under /etc/kubernetes is reused (a re-run converges instead of re-keying the cluster).
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


from kubeboot import output, state
from kubeboot.apiphases import (
    bootstrap_token_phase,
    join_commands,
    mark_control_plane,
    upload_certs_phase,
    upload_config_phase,
)
from kubeboot.config.load import single_control_plane
from kubeboot.config.model import ClusterConfig
from kubeboot.errors import RemoteCommandError, WaitTimeoutError
from kubeboot.kube import client as kc
from kubeboot.pki.adopt import node_material
from kubeboot.pki.bundle import plan_pki
from kubeboot.pki.keys import KeyGen, generate_key
from kubeboot.pki.tokens import generate_token
from kubeboot.plan.artifact import Artifact
from kubeboot.render.cluster import (KUBELET_CLIENT_PEM, RenderHints, kubelet_kubeconfig, local_api_url,
                                     render_host)

WAIT_TIMEOUT = 240.0  # kubeadm ControlPlaneComponentHealthCheck


class WaitControlPlaneError(WaitTimeoutError):
    pass


def api_health(url: str, check: str = "livez", timeout: float = 5.0) -> bool:
    """The API server at url answers /livez (or /readyz) with 200. Anonymous and unverified, like kubeadm's
    wait: the API server's health, not its identity."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{url}/{check}", context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def systemd_resolved_active(rootfs: Path) -> bool:
    """Whether this machine runs systemd-resolved (kubeadm's isServiceActive); never under --rootfs."""
    import shutil
    import subprocess

    if rootfs != Path("/") or shutil.which("systemctl") is None:
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", "systemd-resolved"], check=False,
                          capture_output=True, timeout=30).returncode == 0


def restart_kubelet() -> str:
    """kubeadm's kubelet-start on the node itself: reload units (the drop-in may be new) and restart the kubelet
    so it reads the files just written. Returns what happened, for the progress line; without systemd the
    kubelet is the user's to start (kubeadm only warns there too)."""
    import shutil
    import subprocess

    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return "no systemd here: start the kubelet yourself"
    subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True, timeout=60)
    res = subprocess.run(["systemctl", "restart", "kubelet"], check=False, capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise RemoteCommandError(f"`systemctl restart kubelet` failed: {res.stderr.strip()}",
                                    hint="is the kubelet package installed? (systemctl status kubelet)")
    return "kubelet (re)started by systemd"


def poll(done: Callable[[], bool], timeout: float, message: str, hint: str) -> None:
    """Check `done` every half second until it holds; WaitControlPlaneError(message) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise WaitControlPlaneError(message, hint=hint)
        time.sleep(0.5)


def wait_for_file(path: Path, timeout: float, what: str) -> None:
    """Until a file exists (the kubelet writes kubelet.conf after its TLS bootstrap), bounded."""
    poll(path.exists, timeout, f"{what}: {path} did not appear within {timeout:.0f}s",
          "check the kubelet: journalctl -u kubelet")


def wait_live(url: str, timeout: float) -> None:
    """Poll the API server's /livez until it answers 200 (kubeadm wait-control-plane), bounded."""
    poll(lambda: api_health(url), timeout, f"the API server at {url} did not become live within {timeout:.0f}s",
          "check the kubelet (journalctl -u kubelet) and the static pods (crictl ps -a)")


@dataclass(frozen=True)
class InitRequest:
    control_plane_endpoint: str
    advertise_address: str
    node_name: str
    kubernetes_version: str = "1.37"
    pod_network_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    dns_domain: str = "cluster.local"
    cert_sans: tuple[str, ...] = ()
    key_algorithm: str = "RSA-2048"
    upload_certs: bool = False
    certificate_key: str | None = None
    rootfs: Path = Path("/")
    wait_timeout: float = WAIT_TIMEOUT


@dataclass
class InitResult:
    written: list[str] = field(default_factory=list)
    worker_join: str = ""
    control_plane_join: str | None = None
    certificate_key: str | None = None


def config_from_flags(req: InitRequest) -> ClusterConfig:
    return single_control_plane(
        name=req.node_name, address=req.advertise_address, endpoint=req.control_plane_endpoint,
        version=req.kubernetes_version,
        networking={"podSubnet": req.pod_network_cidr, "serviceSubnet": req.service_cidr,
                    "dnsDomain": req.dns_domain},
        key_algorithm=req.key_algorithm, cert_sans=list(req.cert_sans), source="init flags")


def _existing_material(root: Path, cfg: ClusterConfig) -> dict[str, bytes]:
    """What is already on the node, in the state layout the PKI core reuses from."""

    def read(path: str) -> bytes | None:
        p = root / path.lstrip("/")
        return p.read_bytes() if p.exists() else None

    return node_material(read, cfg, cfg.first_control_plane)


def _write(root: Path, artifacts: list[Artifact], result: InitResult) -> None:
    result.written += state.write_files_under(root, artifacts)


def init(req: InitRequest, rep: output.Reporter, keygen: KeyGen = generate_key,
         now: datetime | None = None) -> InitResult:
    cfg = config_from_flags(req)
    host = cfg.first_control_plane
    root = req.rootfs
    now = now or datetime.now(timezone.utc)
    result = InitResult()

    rep.phase_start("certs")
    pki, changes = plan_pki(cfg, _existing_material(root, cfg), now, keygen)
    for ch in changes:
        if ch.action != "kept":
            rep.info("certs", host.name, f"{ch.action} {ch.item}" + (f" ({ch.reason})" if ch.reason != "missing" else ""))
    pem, conf = root / KUBELET_CLIENT_PEM.lstrip("/"), root / "etc/kubernetes/kubelet.conf"
    rotated = kubelet_kubeconfig(cfg, pki, host, rotated=True)  # kept once kubelet-finalize wrote it
    hints = RenderHints(systemd_resolved=systemd_resolved_active(root),
                        kubelet_client_rotated=pem.exists() and conf.exists() and conf.read_bytes() == rotated.content)
    artifacts = [a for a in render_host(cfg, pki, generate_token(now), host, hints)
                 if a.path.startswith(("/etc/kubernetes/", "/var/lib/kubelet/"))]
    _write(root, artifacts, result)
    rep.phase_done("certs", f"{len(result.written)} file(s) written under /etc/kubernetes and /var/lib/kubelet")

    rep.phase_start("kubelet-start")
    if root == Path("/"):
        rep.phase_done("kubelet-start", restart_kubelet() + "; it runs the static pods")
    else:
        rep.phase_done("kubelet-start", f"--rootfs {root}: the kubelet is not started by kubeboot")

    rep.phase_start("wait-control-plane")
    local = local_api_url(host)
    wait_live(local, req.wait_timeout)
    rep.phase_done("wait-control-plane", f"API server live at {local}")
    if root == Path("/") and not hints.kubelet_client_rotated and pem.exists():  # kubeadm's kubelet-finalize
        if state.write_files_under(root, [rotated]):
            rep.info("kubelet-finalize", host.name, "kubelet.conf now uses the kubelet's rotated client certificate; "
                                                    + restart_kubelet())

    admin_path = root / "etc/kubernetes/admin.conf"
    admin = kc.from_kubeconfig(admin_path)
    sup = kc.from_kubeconfig(root / "etc/kubernetes/super-admin.conf")
    kc.ensure_admin_binding(admin, sup)
    rep.phase_start("upload-config")
    for name, outcome in upload_config_phase(admin, cfg).items():
        rep.info("upload-config", None, f"{name}: {outcome}")
    rep.phase_done("upload-config", "kubeadm-config and kubelet-config stored")
    if req.upload_certs:
        result.certificate_key = upload_certs_phase(admin, root / "etc/kubernetes/pki", req.certificate_key, now)
        rep.info("upload-certs", None, "stored the shared certificates in kube-system/kubeadm-certs (valid 2h)")
    rep.info("mark-control-plane", host.name, mark_control_plane(admin, host.name, wait=0))
    token = generate_token(now)
    server = cfg.control_plane_endpoint.url()
    ca = pki.cas["ca"].cert_pem()
    bootstrap_token_phase(admin, cfg, server, ca, [token])
    rep.info("bootstrap-token", None, f"created token {token.id} (24h), node-bootstrap RBAC and cluster-info")
    cmds = join_commands(cfg.control_plane_endpoint.hostport(), token, ca, result.certificate_key)
    result.worker_join, result.control_plane_join = cmds.worker, cmds.control_plane
    return result
