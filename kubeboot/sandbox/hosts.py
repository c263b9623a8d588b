"""Sandbox hosts whose PID 1 is real systemd, booted with systemd-nspawn, reachable over real SSH (shell).

One code path for ``kubeboot sandbox`` and the test suite's systemd lab (tests/lab/systemd.py subclasses
:class:`SystemdHosts` with its prefix, directory and fault helpers).  A host is a Debian bookworm system
(:mod:`kubeboot.sandbox.rootfs`) booted by systemd, with journald, logind, dbus and ``ssh.service``, into which
kubeboot installs containerd and the kubelet and manages them as units.

Per host ``<host>`` of set ``<name>`` (``P`` = ``<netns_prefix><name>-``; the why of each point, measured on this
machine kind, is in tests/lab/README.md and notes/systemd-lab-hosts.md):

* network namespace ``P<host>`` (``eth0`` on the bridge in ``Pctl``);
* root = overlayfs (upper in ``<dir>/hosts/<host>``) over the shared, cached base; own machine-id,
  hostname, SSH host key, /etc/hosts listing every host;
* its own cgroup ``P<host>`` below the launching process's cgroup in *every* hierarchy;
* a supervisor (:mod:`kubeboot.sandbox.launch`) that runs ``systemd-nspawn --register=no --keep-unit
  --capability=all --system-call-filter=@keyring`` with the cgroup/sysctl PID-1 wrapper and relaunches
  it after ``systemctl reboot``;
* a plain directory bind-mounted at /var/lib/containerd (overlay-on-overlay breaks the snapshotter; ~1 GB of
  images on a control plane: ``dir`` must be on disk, not tmpfs), /dev/kmsg read-only (the kubelet's OOM
  watcher), optional extra read-only binds.

Nothing is created in the machine's own network namespace.  :func:`teardown` removes a set from its name, prefix
and directory alone (its state file, or a scan when that is gone; also when every process of it was SIGKILLed);
:func:`leftovers` lists anything that remains.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, Sequence

from . import cgroups, rootfs
from .checks import machine_problems, subnet_in_use
from .client import BaseHost, HostsClient
from .net import netns_names, netns_pids, ns_inode, link_inode, ip_batch, resolv_conf
from .system import (
    SAFE_ENV,
    SandboxError,
    alive,
    ancestors,
    all_pids,
    children,
    cmdline,
    comm,
    gen_ed25519,
    mkdir,
    mounts_under,
    run,
    write,
)

#: Where ``kubeboot sandbox`` keeps its sets: ``/var/lib/kubeboot/sandbox/<name>`` (on disk: containerd images).
SANDBOX_ROOT = "/var/lib/kubeboot/sandbox/"
SANDBOX_NETNS_PREFIX = "kbsb-"
SANDBOX_SUBNET = "10.210.0.0/24"
LAUNCHER = Path(__file__).with_name("launch.py")
NSPAWN = "systemd-nspawn"
NSPAWN_RUN_DIR = Path("/run/systemd/nspawn")
#: A node's workloads stop, the host stays up: the kubelet is stopped and every CRI task killed (static pods
#: included; nothing restarts them until the kubelet starts again).  Also run before poweroff, else each pod scope
#: waits out its 90 s stop timeout (pods' PID 1 often ignores SIGTERM; kubelet-in-systemd-hosts.md §3g).
STOP_KUBELET_AND_PODS = (
    "systemctl stop kubelet.service 2>/dev/null; "
    "if command -v ctr >/dev/null 2>&1 && systemctl -q is-active containerd.service; then "
    "for ns in $(ctr namespaces ls -q 2>/dev/null); do "
    "for t in $(ctr -n \"$ns\" tasks ls -q 2>/dev/null); do ctr -n \"$ns\" tasks kill -s KILL \"$t\" 2>/dev/null; "
    "done; done; fi"
)
PREPARE_POWEROFF = STOP_KUBELET_AND_PODS + "; systemctl poweroff --no-block"


@dataclass
class SystemdHost(BaseHost):
    """A systemd host.  ``init_pid`` is its PID 1 (systemd) seen from the machine; it changes on reboot."""

    machine: str = ""
    #: the host's cgroup directory in every hierarchy (absolute; removed at teardown)
    cgroups: list[str] = field(default_factory=list)
    #: nspawn's lock file for this root (``/run/systemd/nspawn/locks/inode-<dev>:<ino>``); left behind
    #: when nspawn is killed
    nspawn_lock: str = ""

    @property
    def hostdir(self) -> Path:
        return Path(self.root)

    @property
    def rootfs(self) -> Path:
        """The merged overlay the host boots from (mounted while the host is up)."""
        return self.hostdir / "root"

    @property
    def containerd_dir(self) -> Path:
        """Bind-mounted at /var/lib/containerd inside the host."""
        return self.hostdir / "containerd"

    @property
    def log_path(self) -> Path:
        """The host's console (systemd's boot messages) and the supervisor's lines."""
        return self.hostdir / "console.log"


class SystemdHosts(HostsClient):
    """N systemd hosts behind the controller namespace: ``SystemdHosts("demo", names=["lb1", "cp1", "w1"],
    state_dir="/var/lib/kubeboot/sandbox/demo", netns_prefix="kbsb-", subnet="10.210.0.0/24").up()``.

    ``with SystemdHosts(...) as hosts: ...`` starts and always tears down; ``SystemdHosts.open(dir)`` re-opens a
    set another process started.  ``ro_binds`` = ``[(source on the machine, target in every host)]``, read-only
    (e.g. an images directory).  ``users``: base users besides root whose authorized_keys get the key (test
    convenience; the others are locked)."""

    kind = "systemd"
    what = "sandbox"
    cli = "kubeboot sandbox"
    dir_prefix = SANDBOX_ROOT
    netns_prefix = SANDBOX_NETNS_PREFIX
    default_subnet = SANDBOX_SUBNET
    host_class = SystemdHost
    state_keys = ("kind", "name", "n", "ephemeral", "owner_pid", "ready", "ctl_netns", "netns_prefix", "subnet",
                  "base", "ro_binds", "users", "key", "known_hosts", "ssh_config", "proxy_command", "hosts")  # fmt: skip
    #: every namespace of the host's PID 1, its root and working directory
    nsenter_flags = ("-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w")

    def __init__(
        self,
        name: str = "default",
        n: int = 3,
        ro_binds: Sequence[tuple[str, str]] = (),
        ephemeral: bool = False,
        *,
        names: Sequence[str] | None = None,
        state_dir: Path | str | None = None,
        netns_prefix: str | None = None,
        subnet: str | None = None,
        users: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, n, ephemeral, names=names, state_dir=state_dir, netns_prefix=netns_prefix,
                         subnet=subnet, users=users)  # fmt: skip
        for src, dst in ro_binds:
            if not os.path.isabs(src) or not os.path.isabs(dst) or ":" in src + dst:
                raise ValueError(f"ro_binds: absolute paths without ':' expected, not {src!r} -> {dst!r}")
        self.ro_binds = [(str(s), str(d)) for s, d in ro_binds]
        self.hosts: list[SystemdHost] = []
        self.base = ""
        #: True once up() finished (every host running and answering SSH)
        self.ready = False
        #: the supervisors this process started (reaped at teardown)
        self._launchers: dict[str, subprocess.Popen[bytes]] = {}
        #: seconds per phase of the last up() (benchmarks)
        self.timings: dict[str, float] = {}

    # aptrepo's use_as_mirror/remove_machine_packages (tests) need a private /usr: every host has one
    overlay = True

    def host(self, ref: str | int | BaseHost) -> SystemdHost:
        """A host by object, name (``"cp1"``), address or 1-based index."""
        h = super().host(ref)
        assert isinstance(h, SystemdHost)
        return h

    def down_hint(self) -> str:
        return f"`{self.cli} down --name {self.name}`" if " " in self.cli else super().down_hint()

    # -- state ---------------------------------------------------------------------------------
    def _kind_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "ready": self.ready, "base": self.base, "ro_binds": self.ro_binds}

    @classmethod
    def _from_state(cls, name: str, state: dict[str, Any]) -> Self:
        ro_binds = [(str(b[0]), str(b[1])) for b in state.get("ro_binds", [])]
        lab = cls(name, state.get("n", 1), ro_binds, state.get("ephemeral", False), **cls._init_kwargs(state))
        lab.base = state.get("base", "")
        lab.ready = bool(state.get("ready", False))
        return lab

    # -- up ----------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> Self:
        """Build (or reuse) the base, start every host, wait until each is ``running`` with 0 failed
        units and answers SSH.  On any error everything started is torn down again."""
        return self._start(timeout, machine_problems())

    def _abort(self) -> None:
        self.down(graceful=False)

    def _up(self, timeout: float) -> None:
        t0 = time.monotonic()
        try:
            base = rootfs.ensure_base()
        except rootfs.RootfsError as e:
            raise SandboxError(str(e)) from e
        self.base = str(base.root)
        self.timings["base"] = base.seconds
        mkdir(self.dir.parent, 0o755)
        mkdir(self.dir, 0o755)
        self.hosts = [SystemdHost(**fields, machine=fields["netns"]) for fields in self._host_fields()]
        self._save()  # early, so that `down` finds whatever a crash leaves behind
        t1 = time.monotonic()
        self._make_network()
        pub = self._make_key()
        etc_hosts = self._etc_hosts()
        hierarchies = cgroups.hierarchies()
        for h in self.hosts:
            self._prepare_host(h, pub, etc_hosts, hierarchies)
            self._save()  # its mount, cgroups and nspawn lock, for a teardown after a crash
        self._write_client_files()
        self._save()
        self.timings["prepare"] = time.monotonic() - t1
        t2 = time.monotonic()
        for h in self.hosts:
            self._launch(h)
        self._save()  # the supervisors' PIDs
        deadline = t0 + timeout
        for h in self.hosts:
            self.wait_booted(h, max(1.0, deadline - time.monotonic()))
        self.ready = True
        self._save()
        self.timings["boot"] = time.monotonic() - t2

    def _prepare_host(
        self, h: SystemdHost, pub: str, etc_hosts: str, hierarchies: list[cgroups.Hierarchy]
    ) -> None:
        """Overlay root with the host's identity written into it, containerd dir, cgroups."""
        hostdir = mkdir(h.hostdir, 0o700)
        for d in ("upper", "work"):
            mkdir(hostdir / d, 0o755)
        mkdir(h.rootfs, 0o755)
        mkdir(h.containerd_dir, 0o711)
        if os.path.ismount(h.rootfs):  # never stack a second overlay (then rm -rf would go through)
            raise SandboxError(f"{h.rootfs} is already mounted")
        run(["mount", "-t", "overlay", f"{h.machine}-root", "-o",
             f"lowerdir={self.base},upperdir={hostdir / 'upper'},workdir={hostdir / 'work'}", str(h.rootfs)])  # fmt: skip
        root = h.rootfs
        st = os.stat(root)
        h.nspawn_lock = str(NSPAWN_RUN_DIR / "locks" / f"inode-{st.st_dev}:{st.st_ino}")
        h.machine_id = secrets.token_hex(16)
        write(root / "etc/machine-id", h.machine_id + "\n", 0o444)
        write(root / "etc/hostname", h.name + "\n")
        write(root / "etc/hosts", etc_hosts)
        write(root / "etc/resolv.conf", resolv_conf(self.gateway))
        priv, key_pub = gen_ed25519(f"root@{h.name}")
        h.host_key = key_pub.rsplit(" ", 1)[0]
        write(root / "etc/ssh/ssh_host_ed25519_key", priv, 0o600)
        write(root / "etc/ssh/ssh_host_ed25519_key.pub", key_pub + "\n")
        write(root / "root/.ssh/authorized_keys", pub + "\n", 0o600)
        for user in self.users:
            uid = rootfs.USER_IDS[user]
            write(root / "home" / user / ".ssh/authorized_keys", pub + "\n", 0o600, uid, uid)
        if set(rootfs.USER_IDS) - set(self.users):
            rootfs.lock_users(root, self.users)
        h.cgroups = [cgroups.make(hier, h.machine) for hier in hierarchies]

    def _nspawn_argv(self, h: SystemdHost) -> list[str]:
        argv = [
            NSPAWN, "--quiet", "-D", str(h.rootfs), f"--machine={h.machine}", f"--hostname={h.name}",
            # no host systemd/D-Bus to register with or get a scope from: stay in our own cgroup
            "--register=no", "--keep-unit", "--private-users=no",
            f"--network-namespace-path=/run/netns/{h.netns}",
            # CAP_NET_ADMIN (runc brings up lo in a container's netns) is not in nspawn's default set;
            # runc joins a session keyring, which nspawn's seccomp filter blocks
            "--capability=all", "--system-call-filter=@keyring",
            "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=passive",
            "--kill-signal=SIGRTMIN+3",
            f"--bind={h.containerd_dir}:/var/lib/containerd", "--bind-ro=/dev/kmsg",
        ]  # fmt: skip
        argv += [f"--bind-ro={src}:{dst}" for src, dst in self.ro_binds]
        return argv + [rootfs.INIT_PATH]

    def _launch(self, h: SystemdHost) -> None:
        spec = {
            "machine": h.machine,
            "cgroups": h.cgroups,
            "argv": self._nspawn_argv(h),
            # /proc/sys/net writable (per network namespace: ip_forward, bridge-nf ...), the rest read-only
            "env": {**SAFE_ENV, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
        }
        spec_path = h.hostdir / "launch.json"
        write(spec_path, json.dumps(spec, indent=2) + "\n", 0o600)
        with open(h.log_path, "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=SAFE_ENV, cwd="/", start_new_session=True,
            )  # fmt: skip
        self._launchers[h.name] = p
        h.launcher_pid = p.pid
        h.init_pid = 0

    # -- processes -------------------------------------------------------------------------------
    def _launcher_alive(self, h: SystemdHost) -> bool:
        p = self._launchers.get(h.name)
        if p is not None:
            return p.poll() is None
        return bool(h.launcher_pid) and alive(h.launcher_pid) and str(LAUNCHER) in cmdline(h.launcher_pid)

    def pid1(self, host: str | int | BaseHost) -> int:
        """The host's PID 1 as seen from the machine, 0 when it is not running (found afresh:
        nspawn's child inside the host's network namespace; changes with every boot)."""
        h = self.host(host)
        if not self._launcher_alive(h):
            return 0
        want = ns_inode(f"/run/netns/{h.netns}")
        for nspawn in children(h.launcher_pid):
            for c in children(nspawn):
                if want is not None and link_inode(c, "net") == want and alive(c):
                    return c
        return 0

    def _host_alive(self, h: BaseHost) -> bool:
        assert isinstance(h, SystemdHost)
        return self._launcher_alive(h)

    def problems(self) -> list[str]:
        """Why this set is not whole (empty: every host runs): hosts not running, an ``up`` that never finished
        (its process died, e.g. SIGKILLed mid-up)."""
        out = []
        if not self.ready and not alive(self.owner_pid):
            out.append(f"its up (process {self.owner_pid}) died before the hosts were ready")
        out += [f"{h.name} is not running" for h in self.hosts if not self.pid1(h)]
        if not self.hosts:
            out.append("no hosts")
        return out

    # -- waiting ---------------------------------------------------------------------------------
    def wait_booted(self, host: str | int | BaseHost, timeout: float = 60.0) -> float:
        """Wait until the host's systemd reports ``running`` (boot finished, 0 failed units) and sshd
        answers; return the seconds waited.  ``degraded`` is an error naming the failed units."""
        h = self.host(host)
        t0 = time.monotonic()
        deadline = t0 + timeout
        state = ""
        while True:
            if not self._launcher_alive(h):
                raise SandboxError(f"{h.name}: the host stopped while booting: {self._log_tail(h)}")
            pid = self.pid1(h)
            if pid and comm(pid) == "systemd":
                h.init_pid = pid
                left = max(1, int(deadline - time.monotonic()))
                # --wait blocks until start-up finished; before systemd's private socket exists it fails
                # at once ("offline"/"unknown"), so this loop polls only until then
                p = self.run_in(h, ["timeout", str(left), "systemctl", "is-system-running", "--wait"], check=False,
                                timeout=left + 5)  # fmt: skip
                state = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr.strip()
                if state == "running":
                    break
                if state == "degraded":
                    failed = self.run_in(h, ["systemctl", "--failed", "--plain", "--no-legend"], check=False)
                    units = ", ".join(line.split()[0] for line in failed.stdout.splitlines() if line.strip())
                    raise SandboxError(f"{h.name}: boot finished degraded; failed units: {units or '?'}")
            if time.monotonic() > deadline:
                raise SandboxError(f"{h.name}: not running after {timeout}s (state {state!r}): {self._log_tail(h)}")
            time.sleep(0.05)
        self.wait_for_ssh(h, max(1.0, deadline - time.monotonic()))
        return time.monotonic() - t0

    # -- inside a host -------------------------------------------------------------------------
    def _running_pid1(self, h: BaseHost) -> int:
        # run_in is not confined like the host's own processes (no seccomp filter, all capabilities):
        # test what a host can do over SSH or ``systemd-run``
        assert isinstance(h, SystemdHost)
        pid = h.init_pid if h.init_pid and alive(h.init_pid) and self._launcher_alive(h) else self.pid1(h)
        if pid:
            h.init_pid = pid
        return pid

    # -- power ---------------------------------------------------------------------------------
    def reboot(self, host: str | int | BaseHost, timeout: float = 60.0) -> float:
        """``systemctl reboot`` inside the host; returns once it is back (new PID 1 ``running``, sshd
        answering), in seconds.  Its disk (overlay, /var/lib/containerd) persists, like a machine's."""
        h = self.host(host)
        t0 = time.monotonic()
        old = self.pid1(h)
        self.run_in(h, ["systemctl", "reboot"])
        deadline = t0 + timeout
        while alive(old) or self.pid1(h) in (0, old):
            if not self._launcher_alive(h):
                raise SandboxError(f"{h.name}: did not come back from reboot: {self._log_tail(h)}")
            if time.monotonic() > deadline:
                raise SandboxError(f"{h.name}: no new boot after {timeout}s: {self._log_tail(h)}")
            time.sleep(0.02)
        self.wait_booted(h, max(1.0, deadline - time.monotonic()))
        self._save_if_owner()
        return time.monotonic() - t0

    def poweroff(self, host: str | int | BaseHost, timeout: float = 30.0) -> None:
        """Shut the host down (its disk stays; :meth:`start` boots it again).  Stops the kubelet and
        kills CRI tasks first; SIGKILLs the host's PID 1 (never nspawn alone: that orphans the host)
        if it is not down after ``timeout``."""
        _stop_hosts(self, [self.host(host)], timeout)

    def start(self, host: str | int | BaseHost, timeout: float = 60.0) -> float:
        """Boot a powered-off host again; returns the seconds to ``running`` + SSH."""
        h = self.host(host)
        if self._launcher_alive(h):
            raise SandboxError(f"{h.name} is running")
        self._launch(h)
        took = self.wait_booted(h, timeout)
        self._save_if_owner()
        return took

    # -- measurements ----------------------------------------------------------------------------
    def memory_bytes(self, host: str | int | BaseHost) -> int:
        """The host's memory-cgroup charge (its processes + page cache; includes its supervisor)."""
        h = self.host(host)
        for d in h.cgroups:
            for f in ("memory.usage_in_bytes", "memory.current"):
                p = Path(d, f)
                if p.exists():
                    return int(p.read_text())
        raise SandboxError(f"{h.name}: no memory cgroup")

    # -- teardown ------------------------------------------------------------------------------
    def down(self, timeout: float = 30.0, graceful: bool = True) -> None:
        """Stop every host (gracefully unless told not to), then remove everything the set made:
        processes, mounts, cgroups in every hierarchy, namespaces, nspawn's lock files, the directory.
        Idempotent; works from any process (state file)."""
        teardown_hosts(self, timeout=timeout, graceful=graceful)
        self._launchers.clear()

    def leftovers(self) -> list[str]:
        """Everything of this set still on the machine (empty after a clean teardown): namespaces, mounts,
        cgroups in any hierarchy, processes, nspawn files, the directory."""
        return leftovers_of(self)

    @classmethod
    def open_or_remains(cls, state_dir: Path | str, name: str) -> Self:
        """:meth:`open`, or, when the state file is gone (a half-removed set), an object naming the set's
        directory and namespace prefix, enough for :func:`teardown_hosts` and :func:`leftovers_of` to find its remains."""
        try:
            return cls.open(state_dir)
        except SandboxError:
            return cls(name, 1, state_dir=state_dir)

    @classmethod
    def find_stale(cls, parent: Path | str | None = None, netns_prefix: str | None = None,
                   subdir: str = "") -> dict[str, list[str]]:  # fmt: skip
        """Sets of this kind (state in ``<parent>/<name>/<subdir>``, or ``<dir_prefix><name>``) that are not whole, with why
        (:meth:`problems`; "no state file" for bare namespaces).  Tear one down with
        ``teardown_hosts(cls.open_or_remains(dir, name), graceful=False)``."""
        out: dict[str, list[str]] = {}
        for name in cls.list_labs(parent, netns_prefix):
            state_dir = Path(parent, name, subdir) if parent is not None else Path(f"{cls.dir_prefix}{name}")
            try:
                hosts = cls.open(state_dir)
            except SandboxError:
                out[name] = ["no state file (namespaces or files of a half-removed set)"]
                continue
            if problems := hosts.problems():
                out[name] = problems
        return out


def _stop_hosts(lab: SystemdHosts, hosts: Sequence[SystemdHost], timeout: float, graceful: bool = True) -> None:
    """Power hosts off in parallel; SIGKILL the PID 1 of any still up after ``timeout``.  Returns when
    every supervisor has exited."""
    running = [h for h in hosts if lab._launcher_alive(h)]
    for h in running:
        cgroups.thaw(h.cgroups)
    if graceful:
        procs = []
        for h in running:
            pid = lab.pid1(h)
            if pid:
                procs.append(subprocess.Popen(
                    ["nsenter", "-t", str(pid), *lab.nsenter_flags, "--", "sh", "-c", PREPARE_POWEROFF],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SAFE_ENV,
                ))  # fmt: skip
        for p in procs:
            try:
                p.wait(timeout=max(0.1, timeout / 2))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    deadline = time.monotonic() + (timeout if graceful else 0)
    killed: set[str] = set()
    while True:
        up = [h for h in running if lab._launcher_alive(h)]
        if not up:
            break
        if time.monotonic() > deadline:
            for h in up:
                # SIGKILL to the host's PID 1 kills its whole PID namespace; nspawn then exits by itself
                pid = lab.pid1(h)
                if pid and h.name not in killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    killed.add(h.name)
                elif not pid and time.monotonic() > deadline + 10:
                    _kill_launcher(h)
            if time.monotonic() > deadline + 20:
                raise SandboxError(f"{lab.what} {lab.name}: hosts survive SIGKILL: {[h.name for h in up]}")
        for h in up:
            launcher = lab._launchers.get(h.name)
            if launcher is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    launcher.wait(timeout=0.02)
        time.sleep(0.02)
    for h in running:
        h.init_pid = 0


def _kill_launcher(h: SystemdHost) -> None:
    """Last resort for a supervisor whose host is gone: its nspawn, then itself (checked by cmdline)."""
    if h.launcher_pid and str(LAUNCHER) in cmdline(h.launcher_pid):
        for c in children(h.launcher_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(h.launcher_pid, signal.SIGKILL)


def _ours(prefix: str, name: str) -> bool:
    """``name`` is ``<prefix><word>`` with no ``-`` in the word (a host or ``ctl`` of exactly this set)."""
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    return bool(rest) and "-" not in rest


def _our_cgroups(lab: SystemdHosts) -> list[str]:
    """The hosts' cgroups from the state file and any other cgroup named like one of this set's hosts (made
    before a crash kept it out of the state file)."""
    found = cgroups.find(lambda d: _ours(lab.ns_prefix, d))
    return sorted({*(d for h in lab.hosts for d in h.cgroups), *found})


def _our_nspawn_files(lab: SystemdHosts) -> list[Path]:
    """nspawn's per-machine files under /run/systemd/nspawn (outlive the hosts: /run is not a tmpfs on this
    machine kind): the propagation dir of each machine name and the lock of each root.  nspawn removes them
    itself when it exits normally; not when it is killed."""
    out = []
    for sub in ("propagate", "unix-export"):
        with contextlib.suppress(OSError):
            out += [NSPAWN_RUN_DIR / sub / m for m in os.listdir(NSPAWN_RUN_DIR / sub) if _ours(lab.ns_prefix, m)]
    out += [Path(h.nspawn_lock) for h in lab.hosts if h.nspawn_lock and os.path.lexists(h.nspawn_lock)]
    return out


def _kill_all(what: str, find: Any, lab: SystemdHosts, timeout: float = 10.0) -> None:
    """SIGKILL every process ``find()`` returns (not us or our ancestors) until none is left."""
    mine = ancestors()
    deadline = time.monotonic() + timeout
    while pids := [p for p in find() if p not in mine and alive(p)]:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in lab._launchers.values():
            with contextlib.suppress(Exception):
                p.poll()
        if time.monotonic() > deadline:
            raise SandboxError(f"{lab.what} {lab.name}: processes in its {what} survive SIGKILL: {pids}")
        time.sleep(0.02)


def teardown_hosts(lab: SystemdHosts, hosts: Sequence[SystemdHost] | None = None, timeout: float = 30.0,
                   graceful: bool = True) -> list[str]:  # fmt: skip
    """Remove everything of the set ``lab`` (from :meth:`SystemdHosts.open` or :meth:`~SystemdHosts.open_or_remains`
    after a crash): hosts powered off (``graceful``) or killed, then every process left in the hosts' cgroups or
    namespaces (a supervisor SIGKILLed mid-up leaves its nspawn and host running), mounts, cgroups, nspawn's
    files, namespaces, the directory.  ``hosts``: only those (their mounts and cgroups; namespaces and the
    directory stay).  Returns what was removed (for reports)."""
    only = hosts is not None
    hs = list(hosts) if hosts is not None else lab.hosts
    removed: list[str] = []
    _stop_hosts(lab, hs, timeout, graceful)
    dirs = [d for h in hs for d in h.cgroups] if only else _our_cgroups(lab)
    cgroups.thaw(d for top in dirs for d, _, _ in os.walk(top))
    _kill_all("cgroups", lambda: cgroups.pids_in(dirs), lab)
    if not only:
        # whatever else sits in the namespaces: an apt repo server in the ctl netns, nsenter'd stragglers
        inodes = {i for i in (ns_inode(f"/run/netns/{ns}") for ns in netns_names(lab.ns_prefix)) if i is not None}
        _kill_all("namespaces", lambda: netns_pids(inodes), lab)
    for p in lab._launchers.values():
        with contextlib.suppress(Exception):
            p.wait(timeout=5)
    for h in hs:
        while os.path.ismount(h.rootfs):
            if run(["umount", str(h.rootfs)], check=False).returncode != 0:
                run(["umount", "-l", str(h.rootfs)])
            removed.append(f"mount {h.rootfs}")
    for d in dirs:
        if os.path.isdir(d):
            cgroups.remove(d)
            removed.append(f"cgroup {d}")
    if only:
        return removed
    for f in _our_nspawn_files(lab):
        if f.is_dir() and not f.is_symlink():
            with contextlib.suppress(OSError):
                f.rmdir()
        else:
            f.unlink(missing_ok=True)
        removed.append(str(f))
    names = netns_names(lab.ns_prefix)
    ip_batch([f"netns del {ns}" for ns in names], force=True)
    removed += [f"netns {ns}" for ns in names]
    if lab.dir.exists():
        for m in sorted(mounts_under(lab.dir), key=lambda m: m.count("/"), reverse=True):
            if run(["umount", m], check=False).returncode != 0:
                run(["umount", "-l", m], check=False)
            removed.append(f"mount {m}")
        if mounted := mounts_under(lab.dir):
            raise SandboxError(f"{lab.what} {lab.name}: still mounted, not removing {lab.dir}: {mounted}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(lab.dir)], env=SAFE_ENV, check=True)
        removed.append(str(lab.dir))
    return removed


def leftovers_of(lab: SystemdHosts) -> list[str]:
    """Everything of the set ``lab`` still on the machine (empty after a clean teardown): namespaces, mounts,
    cgroups in any hierarchy, processes, nspawn files, the directory.  Open the set before its teardown (the
    state file goes with it)."""
    out = [f"netns {ns}" for ns in netns_names(lab.ns_prefix)]
    out += [f"mount {m}" for m in mounts_under(lab.dir)]
    out += [f"cgroup {d}" for d in cgroups.find(lambda d: _ours(lab.ns_prefix, d))]
    machines = [f"--machine={h.machine} " for h in lab.hosts]
    for pid in all_pids():
        cmd = cmdline(pid)
        if f"{lab.dir}/" in cmd or any(m in cmd for m in machines):
            out.append(f"process {pid}: {cmd[:120]}")
    out += [f"nspawn file {p}" for p in _our_nspawn_files(lab)]
    if lab.dir.exists():
        out.append(f"dir {lab.dir}")
    return out


# ---------------------------------------------------------------------------------------------
# by name, prefix and directory (what `kubeboot sandbox` keeps): no object needed


def attach(name: str, netns_prefix: str, state_dir: Path | str) -> SystemdHosts | None:
    """The set in ``state_dir`` (its state file), None when there is none."""
    try:
        hosts = SystemdHosts.open(state_dir)
    except SandboxError:
        return None
    if hosts.name != name or hosts.netns_prefix != netns_prefix:
        raise SandboxError(f"{state_dir} holds {hosts.netns_prefix}{hosts.name}, not {netns_prefix}{name}")
    return hosts


def running(hosts: SystemdHosts) -> bool:
    """Every host runs and the ``up`` that made them finished (or is still running)."""
    return not hosts.problems()


def host_running(hosts: SystemdHosts, host: str | int | BaseHost) -> bool:
    return hosts.pid1(host) > 0


def teardown(name: str, netns_prefix: str, state_dir: Path | str, timeout: float = 30.0,
             graceful: bool = True) -> list[str]:  # fmt: skip
    """Remove everything of set ``name`` (namespaces ``<netns_prefix><name>-*``, directory ``state_dir``): from
    its state file, or, when that is gone, from what a scan finds.  Works after every process of the set was
    SIGKILLed (supervisors, nspawn, the ``up`` that made it).  Returns what was removed."""
    hosts = attach(name, netns_prefix, state_dir)
    if hosts is None:
        hosts = SystemdHosts(name, 1, state_dir=state_dir, netns_prefix=netns_prefix)
    return teardown_hosts(hosts, timeout=timeout, graceful=graceful)


def leftovers(name: str, netns_prefix: str, state_dir: Path | str,
              hosts: Sequence[SystemdHost] = ()) -> list[str]:  # fmt: skip
    """Anything of set ``name`` still on the machine: namespaces, mounts, cgroups, processes, nspawn files, the
    directory (nspawn's per-root lock files only for ``hosts``, or those of the state file while it exists)."""
    lab = attach(name, netns_prefix, state_dir)
    if lab is None:
        lab = SystemdHosts(name, max(1, len(hosts)), state_dir=state_dir, netns_prefix=netns_prefix)
        lab.hosts = list(hosts)
    return leftovers_of(lab)


def subnet_uses(subnet: str, exclude: str | None = None, root: Path | str = SANDBOX_ROOT) -> list[str]:
    """What already uses ``subnet``: an address or route of the machine's own network namespace, or another
    sandbox below ``root`` (its state file ``<root>/<name>/lab.json`` or ``<root>/<name>/hosts/lab.json``), but
    not sandbox ``exclude``.  Test labs are not counted (their namespaces never meet a sandbox's)."""
    top = Path(root)
    files = [p for pattern in ("*/lab.json", "*/hosts/lab.json") for p in top.glob(pattern)]
    files = [p for p in files if exclude is None or p.relative_to(top).parts[0] != exclude]
    return subnet_in_use(subnet, files)


def prerequisites() -> list[str]:
    """Everything that keeps this machine from running sandbox hosts (:func:`~.checks.machine_problems`)."""
    return machine_problems()
