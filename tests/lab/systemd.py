"""A lab of N hosts whose PID 1 is real systemd, booted with systemd-nspawn, reachable over real SSH.

Same client surface as the light :class:`~tests.lab.lab.Lab` (:class:`~tests.lab.common.LabClient`:
addresses ``10.200.0.11..`` on a bridge inside a controller namespace, the same users and key, strict
known_hosts), so tests and kubeboot can use either.  What differs is the host: a Debian bookworm
system (tests/lab/rootfs.py) booted by systemd, with journald, logind, dbus and ``ssh.service``, into
which kubeboot installs containerd and the kubelet from the lab apt mirror and manages them as units.

Per host ``hN`` (see ``tests/lab/README.md`` for the why of each point, measured on this machine kind):

* network namespace ``kbs-<lab>-hN`` (``eth0`` on the bridge in ``kbs-<lab>-ctl``);
* root = overlayfs (upper in ``<lab dir>/hosts/hN``) over the shared, cached base; own machine-id,
  hostname, SSH host key, /etc/hosts listing every lab host;
* its own cgroup ``kbs-<lab>-hN`` below the launching process's cgroup in *every* hierarchy;
* a supervisor (``_nspawn_launch.py``) that runs ``systemd-nspawn --register=no --keep-unit
  --capability=all --system-call-filter=@keyring`` with the cgroup/sysctl PID-1 wrapper and relaunches
  it after ``systemctl reboot``;
* a plain directory bind-mounted at /var/lib/containerd (overlay-on-overlay breaks the snapshotter),
  /dev/kmsg read-only (the kubelet's OOM watcher), optional extra read-only binds.

Nothing is created in the root network namespace; everything is named ``kbs-<lab>-...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Self, Sequence

from . import rootfs
from .common import (
    RESOLV_CONF,
    SAFE_ENV,
    USER_IDS,
    BaseHost,
    LabClient,
    LabError,
    alive,
    all_pids,
    children,
    comm,
    gen_ed25519,
    ip_batch,
    lab_netns_names,
    link_inode,
    mkdir,
    netns_pids,
    ns_inode,
    run,
    write,
)

LAB_DIR_PREFIX = "/tmp/kubeboot-systemd-lab-"
NETNS_PREFIX = "kbs-"
LAUNCHER = Path(__file__).with_name("_nspawn_launch.py")
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
#: ``systemctl show`` properties :meth:`SystemdLab.unit_state` returns.
UNIT_PROPERTIES = ("ActiveState", "SubState", "MainPID", "ActiveEnterTimestamp", "NRestarts")


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
        """The merged overlay the host boots from (mounted while the lab is up)."""
        return self.hostdir / "root"

    @property
    def containerd_dir(self) -> Path:
        """Bind-mounted at /var/lib/containerd inside the host."""
        return self.hostdir / "containerd"

    @property
    def log_path(self) -> Path:
        """The host's console (systemd's boot messages) and the supervisor's lines."""
        return self.hostdir / "console.log"


# ---------------------------------------------------------------------------------------------
# cgroups


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the path of this process's cgroup in it."""

    mount: str
    path: str
    controllers: str  # "memory", "name=systemd", "" for cgroup2

    def dir_for(self, leaf: str) -> str:
        return os.path.join(self.mount, self.path.lstrip("/"), leaf)


def cgroup_hierarchies(pid: int | str = "self") -> list[Hierarchy]:
    """Every hierarchy ``pid`` belongs to, with its mount point.

    ``/proc/<pid>/cgroup`` is read once, before anything moves: read line by line while the process
    moves, the file is regenerated and the reads shift (systemd-lab-hosts.md §6.5)."""
    snapshot = Path(f"/proc/{pid}/cgroup").read_text()
    mounts: list[tuple[str, str, set[str]]] = []  # (mount point, fstype, super options)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(" "), post.split(" ")
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2") and fields[3] == "/":
            mounts.append((fields[4], tail[0], set(tail[2].split(","))))
    out = []
    for line in snapshot.splitlines():
        hid, controllers, path = line.split(":", 2)
        if hid == "0":
            found = [m for m, fs, _ in mounts if fs == "cgroup2"]
        else:
            want = set(controllers.split(","))
            found = [m for m, fs, opts in mounts if fs == "cgroup" and want <= opts]
        if found:
            out.append(Hierarchy(found[0], path, controllers))
    return out


def make_cgroup(h: Hierarchy, leaf: str) -> str:
    d = h.dir_for(leaf)
    os.makedirs(d, exist_ok=True)
    cpus = os.path.join(d, "cpuset.cpus")
    if os.path.exists(cpus) and not Path(cpus).read_text().strip():
        # a new v1 cpuset is empty: nothing can run in it until it gets the parent's cpus and mems
        parent = os.path.dirname(d)
        for f in ("cpuset.cpus", "cpuset.mems"):
            Path(d, f).write_text(Path(parent, f).read_text())
    return d


def remove_cgroup(d: str, timeout: float = 5.0) -> None:
    """rmdir ``d`` and everything below it, deepest first (a cgroup is removed with rmdir only,
    and only once it has no processes; those just killed may take a moment to leave)."""
    deadline = time.monotonic() + timeout
    while os.path.isdir(d):
        busy = []
        for dirpath, _, _ in sorted(os.walk(d), key=lambda t: t[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                busy.append(f"{dirpath}: {e.strerror}")
        if not busy:
            return
        if time.monotonic() > deadline:
            raise LabError(f"cgroup not removable after {timeout}s: {'; '.join(busy[:3])}")
        time.sleep(0.02)


def cgroup_probe() -> str | None:
    """Why hosts cannot get their own cgroup in every hierarchy here (None: they can).  Moves a
    ``sleep`` into a probe cgroup in each hierarchy and back out."""
    leaf = f"{NETNS_PREFIX}probe-{os.getpid()}"
    hierarchies = cgroup_hierarchies()
    if not hierarchies:
        return "no cgroup hierarchy is mounted"
    made: list[str] = []
    p = subprocess.Popen(["sleep", "30"], env=SAFE_ENV)
    try:
        for h in hierarchies:
            d = make_cgroup(h, leaf)
            made.append(d)
            Path(d, "cgroup.procs").write_text(str(p.pid))
        got = Path(f"/proc/{p.pid}/cgroup").read_text()
        if got.count(leaf) != len(hierarchies):
            return f"a process moved into {leaf} is not there in every hierarchy: {got!r}"
    except OSError as e:
        return f"cannot create or enter a cgroup ({e})"
    finally:
        p.kill()
        p.wait()
        for d in reversed(made):
            with contextlib.suppress(LabError):
                remove_cgroup(d)
    return None


# ---------------------------------------------------------------------------------------------
# capabilities


def prerequisites() -> list[str]:
    """Reasons a systemd lab cannot run here (empty list: it can), each with its fix."""
    problems = []
    if os.geteuid() != 0:
        return ["the systemd lab needs root (namespaces, overlay mounts, cgroups, systemd-nspawn)"]
    if shutil.which(NSPAWN, path=SAFE_ENV["PATH"]) is None:
        problems.append("systemd-nspawn is missing (apt-get install --no-install-recommends systemd-container)")
    for tool in ("ip", "nsenter", "mount"):
        if shutil.which(tool, path=SAFE_ENV["PATH"]) is None:
            problems.append(f"`{tool}` is missing (apt-get install iproute2 util-linux mount)")
    if rootfs.cached() is None and shutil.which("debootstrap", path=SAFE_ENV["PATH"]) is None:
        problems.append("no base rootfs and no debootstrap to build it "
                        "(apt-get install --no-install-recommends debootstrap; python -m tests.lab.rootfs)")  # fmt: skip
    filesystems = Path("/proc/filesystems").read_text().split()
    if "overlay" not in filesystems and run(["modprobe", "overlay"], check=False).returncode != 0:
        problems.append("overlayfs is not available (modprobe overlay)")
    reason = cgroup_probe()
    if reason:
        problems.append(f"cgroup layout unusable: {reason}")
    return problems


# ---------------------------------------------------------------------------------------------
# the lab


class SystemdLab(LabClient):
    """N systemd hosts ``h1..hN`` = ``10.200.0.11..`` behind the controller namespace.

    ``with SystemdLab("demo", 3) as lab: ...`` starts and always tears down; ``SystemdLab.attach(name)``
    re-opens a lab another process started.  ``ro_binds`` = ``[(source on the machine, target in
    every host)]``, read-only (e.g. an images directory)."""

    kind = "systemd"
    what = "systemd lab"
    cli = "tests.lab.systemd"
    dir_prefix = LAB_DIR_PREFIX
    netns_prefix = NETNS_PREFIX
    host_class = SystemdHost
    state_keys = ("kind", "name", "n", "ephemeral", "owner_pid", "ctl_netns", "base", "ro_binds", "key",
                  "known_hosts", "ssh_config", "proxy_command", "hosts")  # fmt: skip
    #: every namespace of the host's PID 1, its root and working directory
    nsenter_flags = ("-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w")

    def __init__(
        self, name: str = "default", n: int = 3, ro_binds: Sequence[tuple[str, str]] = (), ephemeral: bool = False
    ) -> None:
        super().__init__(name, n, ephemeral)
        for src, dst in ro_binds:
            if not os.path.isabs(src) or not os.path.isabs(dst) or ":" in src + dst:
                raise ValueError(f"ro_binds: absolute paths without ':' expected, not {src!r} -> {dst!r}")
        self.ro_binds = [(str(s), str(d)) for s, d in ro_binds]
        self.hosts: list[SystemdHost] = []
        self.base = ""
        #: the supervisors this process started (reaped at teardown)
        self._launchers: dict[str, subprocess.Popen[bytes]] = {}
        #: seconds per phase of the last up() (benchmarks)
        self.timings: dict[str, float] = {}

    # light-lab compatibility: aptrepo's use_as_mirror/remove_machine_packages need a private /usr
    overlay = True

    def host(self, ref: str | int | BaseHost) -> SystemdHost:
        """A host by object, name (``"h2"``), address or 1-based index."""
        h = super().host(ref)
        assert isinstance(h, SystemdHost)
        return h

    # -- state ---------------------------------------------------------------------------------
    def _kind_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "ro_binds": self.ro_binds}

    @classmethod
    def _from_state(cls, name: str, state: dict[str, Any]) -> Self:
        lab = cls(name, state["n"], [tuple(b) for b in state["ro_binds"]], state.get("ephemeral", False))
        lab.base = state.get("base", "")
        return lab

    # -- up ----------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> Self:
        """Build (or reuse) the base, start every host, wait until each is ``running`` with 0 failed
        units and answers SSH.  On any error everything started is torn down again."""
        return self._start(timeout, prerequisites())

    def _abort(self) -> None:
        self.down(graceful=False)

    def _up(self, timeout: float) -> None:
        t0 = time.monotonic()
        try:
            base = rootfs.ensure_base()
        except rootfs.RootfsError as e:
            raise LabError(str(e)) from e
        self.base = str(base.root)
        self.timings["base"] = base.seconds
        mkdir(self.dir, 0o755)
        self.hosts = [SystemdHost(**fields, machine=fields["netns"]) for fields in self._host_fields()]
        self._save()  # early, so that `down` finds whatever a crash leaves behind
        t1 = time.monotonic()
        self._make_network()
        pub = self._make_key()
        etc_hosts = self._etc_hosts()
        hierarchies = cgroup_hierarchies()
        for h in self.hosts:
            self._prepare_host(h, pub, etc_hosts, hierarchies)
        self._write_client_files()
        self._save()
        self.timings["prepare"] = time.monotonic() - t1
        t2 = time.monotonic()
        for h in self.hosts:
            self._launch(h)
        deadline = t0 + timeout
        for h in self.hosts:
            self.wait_booted(h, max(1.0, deadline - time.monotonic()))
        self._save()
        self.timings["boot"] = time.monotonic() - t2

    def _prepare_host(self, h: SystemdHost, pub: str, etc_hosts: str, hierarchies: list[Hierarchy]) -> None:
        """Overlay root with the host's identity written into it, containerd dir, cgroups."""
        hostdir = mkdir(h.hostdir, 0o700)
        for d in ("upper", "work"):
            mkdir(hostdir / d, 0o755)
        mkdir(h.rootfs, 0o755)
        mkdir(h.containerd_dir, 0o711)
        if os.path.ismount(h.rootfs):  # never stack a second overlay (then rm -rf would go through)
            raise LabError(f"{h.rootfs} is already mounted")
        run(["mount", "-t", "overlay", f"{h.machine}-root", "-o",
             f"lowerdir={self.base},upperdir={hostdir / 'upper'},workdir={hostdir / 'work'}", str(h.rootfs)])  # fmt: skip
        root = h.rootfs
        st = os.stat(root)
        h.nspawn_lock = str(NSPAWN_RUN_DIR / "locks" / f"inode-{st.st_dev}:{st.st_ino}")
        h.machine_id = secrets.token_hex(16)
        write(root / "etc/machine-id", h.machine_id + "\n", 0o444)
        write(root / "etc/hostname", h.name + "\n")
        write(root / "etc/hosts", etc_hosts)
        write(root / "etc/resolv.conf", RESOLV_CONF)
        priv, key_pub = gen_ed25519(f"root@{h.name}")
        h.host_key = key_pub.rsplit(" ", 1)[0]
        write(root / "etc/ssh/ssh_host_ed25519_key", priv, 0o600)
        write(root / "etc/ssh/ssh_host_ed25519_key.pub", key_pub + "\n")
        write(root / "root/.ssh/authorized_keys", pub + "\n", 0o600)
        for user, uid in USER_IDS.items():
            write(root / "home" / user / ".ssh/authorized_keys", pub + "\n", 0o600, uid, uid)
        h.cgroups = [make_cgroup(hier, h.machine) for hier in hierarchies]

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
        return bool(h.launcher_pid) and alive(h.launcher_pid) and str(LAUNCHER) in _cmdline(h.launcher_pid)

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
                raise LabError(f"{h.name}: the host stopped while booting: {self._log_tail(h)}")
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
                    raise LabError(f"{h.name}: boot finished degraded; failed units: {units or '?'}")
            if time.monotonic() > deadline:
                raise LabError(f"{h.name}: not running after {timeout}s (state {state!r}): {self._log_tail(h)}")
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

    # -- units and faults ------------------------------------------------------------------------
    def unit_state(self, host: str | int | BaseHost, unit: str) -> dict[str, str]:
        """``systemctl show`` of ActiveState, SubState, MainPID, ActiveEnterTimestamp, NRestarts."""
        out = self.run_in(host, ["systemctl", "show", "-p", ",".join(UNIT_PROPERTIES), "--", unit]).stdout
        state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {k: state.get(k, "") for k in UNIT_PROPERTIES}

    def wait_unit(
        self,
        host: str | int | BaseHost,
        unit: str,
        cond: Callable[[dict[str, str]], bool],
        timeout: float = 30.0,
        what: str = "condition",
    ) -> dict[str, str]:
        """Poll :meth:`unit_state` until ``cond(state)``; return that state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_state(host, unit)
            if cond(state):
                return state
            if time.monotonic() > deadline:
                raise LabError(f"{self.host(host).name}: {unit}: {what} not met after {timeout}s: {state}")
            time.sleep(0.05)

    def start_unit(self, host: str | int | BaseHost, unit: str) -> None:
        self.run_in(host, ["systemctl", "start", "--", unit])

    def stop_unit(self, host: str | int | BaseHost, unit: str) -> None:
        """``systemctl stop`` (returns once the unit is stopped)."""
        self.run_in(host, ["systemctl", "stop", "--", unit])

    def stop_kubelet_and_pods(self, host: str | int | BaseHost) -> None:
        """Stop the kubelet and kill every CRI task (a control plane's static pods with them); SSH, containerd and
        the rest of the host keep running.  ``start_unit(host, "kubelet")`` brings the pods back."""
        self.run_in(host, ["sh", "-c", STOP_KUBELET_AND_PODS])

    def kill_main_pid(self, host: str | int | BaseHost, unit: str, sig: int = signal.SIGKILL) -> int:
        """Kill the unit's main process with ``sig`` from inside the host, as a crash or the OOM killer
        would (systemd then applies the unit's ``Restart=``).  Returns the old MainPID."""
        state = self.unit_state(host, unit)
        pid = int(state["MainPID"] or 0)
        if pid <= 0:
            raise LabError(f"{self.host(host).name}: {unit} has no main process ({state})")
        self.run_in(host, ["kill", "-s", signal.Signals(sig).name.removeprefix("SIG"), str(pid)])
        return pid

    def sshd_running(self, host: str | int | BaseHost) -> bool:
        return self.port_open(host, self.host(host).port)

    def stop_sshd(self, host: str | int | BaseHost, drop_sessions: bool = False, timeout: float = 10.0) -> None:
        """``systemctl stop ssh``: new connections are refused, open sessions survive (KillMode=process),
        as on a real host.  ``drop_sessions`` also kills every remaining sshd (a host going down)."""
        h = self.host(host)
        self.stop_unit(h, "ssh.service")
        if drop_sessions:
            pidns = link_inode(self.pid1(h), "pid")
            for pid in all_pids():
                if link_inode(pid, "pid") == pidns and comm(pid) == "sshd":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.wait_port_closed(h, h.port, timeout)

    def start_sshd(self, host: str | int | BaseHost, timeout: float = 10.0) -> None:
        h = self.host(host)
        self.start_unit(h, "ssh.service")
        self.wait_for_ssh(h, timeout)

    def freeze(self, host: str | int | BaseHost, timeout: float = 10.0) -> None:
        """Hang the host: freeze its cgroup (every process, the supervisor too).  TCP connects still
        succeed (the kernel answers), nothing replies.  Undo with :meth:`thaw`."""
        self._freezer(host, True, timeout)

    def thaw(self, host: str | int | BaseHost, timeout: float = 10.0) -> None:
        self._freezer(host, False, timeout)

    def _freezer(self, host: str | int | BaseHost, frozen: bool, timeout: float) -> None:
        h = self.host(host)
        v1 = [d for d in h.cgroups if os.path.exists(os.path.join(d, "freezer.state"))]
        if v1:
            state = Path(v1[0], "freezer.state")
            want = "FROZEN" if frozen else "THAWED"
            state.write_text(want)
            deadline = time.monotonic() + timeout
            while state.read_text().strip() != want:
                if time.monotonic() > deadline:
                    raise LabError(f"{h.name}: freezer state {state.read_text().strip()}, wanted {want}")
                time.sleep(0.01)
            return
        v2 = [d for d in h.cgroups if os.path.exists(os.path.join(d, "cgroup.freeze"))]
        if not v2:
            raise LabError(f"{h.name}: no freezer in any of its cgroups")
        Path(v2[0], "cgroup.freeze").write_text("1" if frozen else "0")

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
                raise LabError(f"{h.name}: did not come back from reboot: {self._log_tail(h)}")
            if time.monotonic() > deadline:
                raise LabError(f"{h.name}: no new boot after {timeout}s: {self._log_tail(h)}")
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
            raise LabError(f"{h.name} is running")
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
        raise LabError(f"{h.name}: no memory cgroup")

    # -- teardown ------------------------------------------------------------------------------
    def down(self, timeout: float = 30.0, graceful: bool = True) -> None:
        """Stop every host (gracefully unless told not to), then remove everything the lab made:
        processes, mounts, cgroups in every hierarchy, namespaces, nspawn's lock files, the lab dir.
        Idempotent; works from any process (state file)."""
        teardown(self.name, self.hosts, timeout=timeout, graceful=graceful, lab=self)
        self._launchers.clear()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_hosts(lab: SystemdLab, hosts: Sequence[SystemdHost], timeout: float, graceful: bool = True) -> None:
    """Power hosts off in parallel; SIGKILL the PID 1 of any still up after ``timeout``.  Returns when
    every supervisor has exited."""
    running = [h for h in hosts if lab._launcher_alive(h)]
    for h in running:  # a frozen process neither shuts down nor dies of SIGKILL until thawed
        for d in h.cgroups:
            state = Path(d, "freezer.state")
            with contextlib.suppress(OSError):
                if state.exists() and state.read_text().strip() != "THAWED":
                    state.write_text("THAWED")
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
                raise LabError(f"lab {lab.name}: hosts survive SIGKILL: {[h.name for h in up]}")
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
    if h.launcher_pid and str(LAUNCHER) in _cmdline(h.launcher_pid):
        for c in children(h.launcher_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(h.launcher_pid, signal.SIGKILL)


def _our_nspawn_files(hosts: Sequence[SystemdHost]) -> list[Path]:
    """nspawn's per-machine files under /run/systemd/nspawn (outlive the lab: /run is not a tmpfs on
    this machine): the propagation dir of each machine name and the lock of each root.  nspawn
    removes them itself when it exits normally; not when it is killed."""
    out = []
    for h in hosts:
        for p in (NSPAWN_RUN_DIR / "propagate" / h.machine, NSPAWN_RUN_DIR / "unix-export" / h.machine):
            if p.exists() or p.is_symlink():
                out.append(p)
        if h.nspawn_lock and os.path.lexists(h.nspawn_lock):
            out.append(Path(h.nspawn_lock))
    return out


def teardown(
    name: str,
    hosts: Sequence[SystemdHost] = (),
    timeout: float = 30.0,
    graceful: bool = True,
    lab: SystemdLab | None = None,
) -> list[str]:
    """Remove everything of systemd lab ``name``; returns what was removed (for reports)."""
    if lab is None:
        try:
            lab = SystemdLab.attach(name)
        except LabError:
            lab = SystemdLab(name)
    hosts = list(hosts) or lab.hosts
    removed: list[str] = []
    _stop_hosts(lab, hosts, timeout, graceful)
    prefix = f"{NETNS_PREFIX}{name}-"
    # whatever else sits in the lab's namespaces: an apt repo server in the ctl netns, nsenter'd stragglers
    deadline = time.monotonic() + 10
    inodes = {i for i in (ns_inode(f"/run/netns/{ns}") for ns in lab_netns_names(prefix)) if i is not None}
    while pids := netns_pids(inodes):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in lab._launchers.values():
            with contextlib.suppress(Exception):
                p.poll()
        if time.monotonic() > deadline:
            raise LabError(f"lab {name}: processes survive SIGKILL: {pids}")
        time.sleep(0.02)
    for p in lab._launchers.values():
        with contextlib.suppress(Exception):
            p.wait(timeout=5)
    for h in hosts:
        while os.path.ismount(h.rootfs):
            if run(["umount", str(h.rootfs)], check=False).returncode != 0:
                run(["umount", "-l", str(h.rootfs)])
            removed.append(f"mount {h.rootfs}")
        for d in h.cgroups:
            if os.path.isdir(d):
                remove_cgroup(d)
                removed.append(f"cgroup {d}")
    for f in _our_nspawn_files(hosts):
        if f.is_dir() and not f.is_symlink():
            with contextlib.suppress(OSError):
                f.rmdir()
        else:
            f.unlink(missing_ok=True)
        removed.append(str(f))
    names = lab_netns_names(prefix)
    ip_batch([f"netns del {ns}" for ns in names], force=True)
    removed += [f"netns {ns}" for ns in names]
    lab_dir = Path(f"{LAB_DIR_PREFIX}{name}")
    if lab_dir.exists():
        mounted = [m for m in _mounts() if m == str(lab_dir) or m.startswith(f"{lab_dir}/")]
        if mounted:
            raise LabError(f"lab {name}: still mounted, not removing {lab_dir}: {mounted}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(lab_dir)], env=SAFE_ENV, check=True)
        removed.append(str(lab_dir))
    return removed


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def leftovers(name: str, hosts: Sequence[SystemdHost]) -> list[str]:
    """Everything of lab ``name`` still on the machine (empty after a clean teardown): namespaces,
    mounts, cgroups in any hierarchy, processes, nspawn files, the lab dir."""
    prefix = f"{NETNS_PREFIX}{name}-"
    out = [f"netns {ns}" for ns in lab_netns_names(prefix)]
    lab_dir = f"{LAB_DIR_PREFIX}{name}"
    out += [f"mount {m}" for m in _mounts() if m.startswith(lab_dir)]
    for hier in cgroup_hierarchies():
        for dirpath, dirnames, _ in os.walk(hier.mount):
            out += [f"cgroup {dirpath}/{d}" for d in dirnames if d.startswith(prefix)]
            dirnames[:] = [d for d in dirnames if not d.startswith(prefix)]
    for pid in all_pids():
        cmd = _cmdline(pid)
        if f"{lab_dir}/" in cmd or any(f"--machine={h.machine} " in cmd for h in hosts):
            out.append(f"process {pid}: {cmd[:120]}")
    out += [f"nspawn file {p}" for p in _our_nspawn_files(hosts)]
    if os.path.exists(lab_dir):
        out.append(f"dir {lab_dir}")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.lab.systemd up N [--name LAB] | down [--name LAB | --all] | status``"""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.lab.systemd", description="kubeboot systemd lab hosts")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start N systemd hosts")
    p_up.add_argument("n", type=int, nargs="?", default=3)
    p_up.add_argument("--name", default="default")
    p_up.add_argument("--bind-ro", action="append", default=[], metavar="SRC:DST")
    p_up.add_argument("--timeout", type=float, default=120.0)
    p_down = sub.add_parser("down", help="stop the hosts, remove everything the lab made")
    p_down.add_argument("--name", default="default")
    p_down.add_argument("--all", action="store_true")
    p_down.add_argument("--kill", action="store_true", help="SIGKILL the hosts instead of powering them off")
    sub.add_parser("status", help="list systemd labs and hosts")
    args = ap.parse_args(argv)
    if args.cmd == "up":
        binds = [tuple(b.split(":", 1)) for b in args.bind_ro]
        t0 = time.monotonic()
        try:
            lab = SystemdLab(args.name, args.n, [(s, d) for s, d in binds]).up(timeout=args.timeout)
        except (LabError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"systemd lab {lab.name}: {len(lab.hosts)} hosts running in {time.monotonic() - t0:.2f}s")
        for h in lab.hosts:
            print(f"  {h.name}  {h.address}  netns {h.netns}  PID 1 {h.init_pid}  root {h.rootfs}")
        print(f"ssh:   ssh -F {lab.ssh_config} h1")
        print(f"down:  python -m tests.lab.systemd down --name {lab.name}")
        return 0
    if args.cmd == "down":
        for name in SystemdLab.list_labs() if args.all else [args.name]:
            t0 = time.monotonic()
            teardown(name, graceful=not args.kill)
            print(f"systemd lab {name}: down in {time.monotonic() - t0:.2f}s")
        return 0
    for name in SystemdLab.list_labs():
        try:
            lab = SystemdLab.attach(name)
        except LabError:
            print(f"systemd lab {name}: no state file (stale namespaces?)")
            continue
        print(f"systemd lab {name}: {lab.dir} (owner {lab.owner_pid})")
        for h in lab.hosts:
            pid = lab.pid1(h)
            print(f"  {h.name}  {h.address}  PID 1 {pid or '-'}  {'running' if pid else 'DOWN'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

