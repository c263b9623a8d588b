"""A lab of N simulated hosts on this machine, reachable over real SSH.

Each host is a network namespace on a private bridge plus its own mount, UTS, IPC and PID
namespaces, running a real OpenSSH ``sshd`` on :22.  The bridge lives inside a controller
namespace (``kbl-<lab>-ctl``), so the root namespace gets no address or route of the lab;
code in the root namespace reaches the hosts through :meth:`Lab.sock_for` (a socket created
inside the controller namespace) or the ProxyCommand :meth:`Lab.proxy_command`.

See ``tests/lab/README.md`` for the layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, Sequence

# re-exported: tests, aptrepo and fixtures import these from here
from .common import CLONE_NEWNET as CLONE_NEWNET
from .common import GATEWAY as GATEWAY
from .common import KBUSER as KBUSER
from .common import KBUSER_PASSWORD as KBUSER_PASSWORD
from .common import MAX_HOSTS as MAX_HOSTS
from .common import NOSUDO_PASSWORD as NOSUDO_PASSWORD
from .common import NOSUDO_USER as NOSUDO_USER
from .common import PASSWORD_HASHES as PASSWORD_HASHES
from .common import PREFIX_LEN as PREFIX_LEN
from .common import RESOLV_CONF
from .common import SAFE_ENV as SAFE_ENV
from .common import SSH_PORT as SSH_PORT
from .common import SUBNET as SUBNET
from .common import USER_IDS as USER_IDS
from .common import BaseHost as BaseHost
from .common import LabClient as LabClient
from .common import LabError as LabError
from .common import host_address as host_address
from .common import lab_netns_names as lab_netns_names
from .common import netns_pids as netns_pids
from .common import netns_socket as netns_socket
from .common import valid_lab_name as valid_lab_name
from .common import alive
from .common import comm as _comm
from .common import all_pids as _all_pids
from .common import ancestors as _ancestors
from .common import gen_ed25519 as _gen_ed25519
from .common import ip_batch as _ip_batch
from .common import link_inode as _link_inode
from .common import mkdir as _mkdir
from .common import ns_inode as _ns_inode
from .common import run as _run
from .common import write as _write

LAB_DIR_PREFIX = "/tmp/kubeboot-lab-"
NETNS_PREFIX = "kbl-"
_PASSWORD_HASHES = PASSWORD_HASHES
_alive = alive  # imported from here by fixtures and tests
_USER_IDS = USER_IDS

#: Directories every host has privately (bind mounts of ``<lab>/hosts/<h>/<key>``).
PRIVATE_DIRS = (
    "/etc/kubernetes",
    "/etc/nginx",
    "/var/lib/etcd",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/log",
    "/root",
    "/home",
    "/tmp",
)
#: Trees that are copy-on-write overlays of the machine's (always: private files can be
#: created there without touching the real filesystem).
BASE_OVERLAYS = ("/etc", "/var/lib")
#: Extra copy-on-write trees with ``overlay=True`` (package installs with dpkg).
FULL_OVERLAYS = ("/usr", "/opt", "/srv", "/var/cache", "/var/spool", "/var/mail", "/var/backups")
#: Inside every host: the host's harness area (``<lab>/hosts/<h>/harness``), root only.
HARNESS_MOUNT = "/run/kubeboot-lab"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

HOSTINIT = Path(__file__).with_name("_hostinit.py")


def key_of(path: str) -> str:
    """``/etc/kubernetes`` -> ``etc-kubernetes`` (directory name inside the host dir)."""
    return path.strip("/").replace("/", "-")


@dataclass
class Host(BaseHost):
    """A light host (namespaces + sshd under a Python init)."""

    masked_dirs: list[str] = field(default_factory=list)

    def dir(self, path: str) -> Path:
        """Where the host's private ``path`` (one of PRIVATE_DIRS) lives on the real filesystem."""
        if path not in PRIVATE_DIRS:
            raise ValueError(f"{path} is not a private bind-mounted dir ({', '.join(PRIVATE_DIRS)})")
        return Path(self.root) / key_of(path)

    @property
    def harness_dir(self) -> Path:
        return Path(self.root) / "harness"

    @property
    def log_path(self) -> Path:
        return Path(self.root) / "host.log"


# ---------------------------------------------------------------------------------------------
# low-level helpers


def _cgroup_mounts() -> list[dict[str, str]]:
    """The machine's cgroup mounts, to be recreated inside hosts (pitfall: fresh sysfs)."""
    for src in ("/proc/1/mountinfo", "/proc/self/mountinfo"):
        try:
            with open(src) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        out = []
        for line in lines:
            pre, _, post = line.partition(" - ")
            fields = pre.split(" ")
            target, options = fields[4], fields[5]
            fstype, source, sup = (post.split(" ") + ["", "", ""])[:3]
            if target.startswith("/sys/fs/cgroup") and fstype in ("tmpfs", "cgroup", "cgroup2"):
                out.append({"target": target, "fstype": fstype, "source": source, "options": options, "super": sup})
        if out:
            return out
    return []


def _copy_dir_skeleton(src: Path, dst: Path) -> None:
    """Copy only the directories (modes, owners) of ``src`` -- e.g. /var/log without the logs."""
    for dirpath, dirnames, _ in os.walk(src):
        for d in dirnames:
            s = Path(dirpath) / d
            if s.is_symlink():
                continue
            t = dst / s.relative_to(src)
            st = s.stat()
            t.mkdir(exist_ok=True)
            os.chmod(t, st.st_mode & 0o7777)
            os.chown(t, st.st_uid, st.st_gid)


def prerequisites() -> list[str]:
    """Reasons the lab cannot run here (empty list: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network/mount/PID namespaces, bind mounts)")
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool, path=SAFE_ENV["PATH"]) is None:
            problems.append(f"`{tool}` is missing (apt-get install iproute2 util-linux mount)")
    if not Path("/usr/sbin/sshd").exists():
        problems.append("/usr/sbin/sshd is missing (apt-get install openssh-server)")
    if not problems:
        probe = f"{NETNS_PREFIX}probe-{os.getpid()}"
        p = _run(["ip", "netns", "add", probe], check=False)
        if p.returncode != 0:
            problems.append(f"`ip netns add` does not work here: {p.stderr.strip()}")
        else:
            _run(["ip", "netns", "del", probe], check=False)
    return problems


# ---------------------------------------------------------------------------------------------
# the lab


class Lab(LabClient):
    """N hosts ``h1..hN`` = ``10.200.0.11..`` behind the controller namespace.

    ``with Lab("demo", 5) as lab: ...`` starts and always tears down.  ``Lab.attach(name)``
    re-opens a running lab from its state file (another process started it).
    """

    what = "lab"
    cli = "tests.lab"
    dir_prefix = LAB_DIR_PREFIX
    netns_prefix = NETNS_PREFIX
    host_class = Host
    state_keys = ("name", "n", "overlay", "tmpfs", "ephemeral", "owner_pid", "ctl_netns", "gateway", "key",
                  "known_hosts", "ssh_config", "proxy_command", "hosts")  # fmt: skip
    nsenter_flags = ("--net", "--mount", "--uts", "--ipc", "--pid")

    def __init__(
        self, name: str = "default", n: int = 5, overlay: bool = False, ephemeral: bool = False, tmpfs: bool = True
    ) -> None:
        super().__init__(name, n, ephemeral)
        self.overlay = overlay
        #: lab dir on its own tmpfs (default): the disk here needs ~1 ms per mkdir/unlink, which made
        #: up/down 2x slower; ``tmpfs=False`` keeps host files on disk (large data)
        self.tmpfs = tmpfs
        self.hosts: list[Host] = []
        self._launchers: list[subprocess.Popen[bytes]] = []

    def host(self, ref: str | int | BaseHost) -> Host:
        """A host by object, name (``"h2"``), address or 1-based index."""
        h = super().host(ref)
        assert isinstance(h, Host)
        return h

    # -- state -----------------------------------------------------------------------------
    def _kind_state(self) -> dict[str, Any]:
        return {"overlay": self.overlay, "tmpfs": self.tmpfs, "gateway": GATEWAY}

    @classmethod
    def _from_state(cls, name: str, state: dict[str, Any]) -> Self:
        return cls(name, state["n"], state["overlay"], state.get("ephemeral", False), state.get("tmpfs", True))

    # -- up ---------------------------------------------------------------------------------
    def up(self, timeout: float = 30.0) -> Self:
        """Create namespaces, files and sshds; return when every sshd sends its banner."""
        return self._start(timeout, prerequisites())

    def _up(self, timeout: float) -> None:
        _mkdir(self.dir, 0o755)
        if self.tmpfs:
            _run(["mount", "-t", "tmpfs", "-o", "mode=755,size=50%", "kubeboot-lab", str(self.dir)])
        self.hosts = [Host(**fields) for fields in self._host_fields()]
        self._save()  # early, so that `down` finds whatever a crash leaves behind
        self._make_network()
        pub = self._make_key()
        cgroups = _cgroup_mounts()
        etc_hosts = self._etc_hosts()
        for h in self.hosts:
            self._prepare_host(h, pub, etc_hosts, cgroups)
        for h in self.hosts:
            self._launch(h)
        self._find_inits()
        self._write_client_files()
        self._save()
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            self.wait_for_ssh(h, max(0.1, deadline - time.monotonic()))

    def _prepare_host(self, h: Host, workstation_pub: str, etc_hosts: str, cgroups: list[dict[str, str]]) -> None:
        root = _mkdir(Path(h.root), 0o755)
        for d in PRIVATE_DIRS:
            _mkdir(h.dir(d), 0o700 if d in ("/root", "/var/lib/etcd") else 0o755)
        os.chmod(h.dir("/tmp"), 0o1777)
        _mkdir(h.harness_dir, 0o700)
        if Path("/etc/nginx").is_dir():
            shutil.copytree("/etc/nginx", h.dir("/etc/nginx"), symlinks=True, dirs_exist_ok=True)
        _copy_dir_skeleton(Path("/var/log"), h.dir("/var/log"))
        overlays = []
        for tree in BASE_OVERLAYS + (FULL_OVERLAYS if self.overlay else ()):
            if not Path(tree).is_dir() or Path(tree).is_symlink():
                continue
            base = root / "overlay" / key_of(tree)
            st = os.stat(tree)
            upper = _mkdir(base / "upper", st.st_mode & 0o7777, st.st_uid, st.st_gid)
            _mkdir(base / "work", 0o700)
            overlays.append({"target": tree, "upper": str(upper), "work": str(base / "work")})
        etc = root / "overlay" / "etc" / "upper"

        # identity
        h.machine_id = secrets.token_hex(16)
        _write(etc / "hostname", h.name + "\n")
        _write(etc / "machine-id", h.machine_id + "\n", 0o444)
        _write(etc / "hosts", etc_hosts)
        _write(etc / "resolv.conf", RESOLV_CONF)  # DNS never leaves the lab (sudo's hostname: /etc/hosts)

        # sshd with a per-host host key
        priv, pub = _gen_ed25519(f"root@{h.name}")
        h.host_key = pub.rsplit(" ", 1)[0]
        _write(etc / "ssh" / "ssh_host_ed25519_key", priv, 0o600)
        _write(etc / "ssh" / "ssh_host_ed25519_key.pub", pub + "\n")
        _write(etc / "ssh" / "sshd_config", SSHD_CONFIG)

        # users: root + kbuser (password sudo) + nosudo, each with the workstation key
        self._write_users(etc)
        _mkdir(h.dir("/root") / ".ssh", 0o700)
        _write(h.dir("/root") / ".ssh" / "authorized_keys", workstation_pub + "\n", 0o600)
        for skel in Path("/etc/skel").glob(".*"):
            if skel.is_file():
                shutil.copy2(skel, h.dir("/root") / skel.name)
        for user, uid in _USER_IDS.items():
            home = _mkdir(h.dir("/home") / user, 0o755, uid, uid)
            for skel in Path("/etc/skel").glob(".*"):
                if skel.is_file():
                    _write(home / skel.name, skel.read_bytes(), 0o644, uid, uid)
            _mkdir(home / ".ssh", 0o700, uid, uid)
            _write(home / ".ssh" / "authorized_keys", workstation_pub + "\n", 0o600, uid, uid)

        binds = [{"source": str(h.dir(d)), "target": d} for d in PRIVATE_DIRS]
        spec = {
            "hostname": h.name,
            "log": str(h.log_path),
            "cgroups": cgroups,
            "overlays": overlays,
            "binds": binds,
            "harness": {"source": str(h.harness_dir), "target": HARNESS_MOUNT},
        }
        _write(root / "spec.json", json.dumps(spec, indent=2) + "\n", 0o600)

    @staticmethod
    def _write_users(etc: Path) -> None:
        passwd = Path("/etc/passwd").read_text()
        group_lines = Path("/etc/group").read_text().splitlines()
        shadow = Path("/etc/shadow").read_text()
        gshadow_lines = Path("/etc/gshadow").read_text().splitlines() if Path("/etc/gshadow").exists() else []

        def add_member(lines: list[str], grp: str, user: str) -> list[str]:
            out = []
            for line in lines:
                parts = line.split(":")
                if parts[0] == grp and len(parts) >= 4:
                    members = [m for m in parts[3].split(",") if m]
                    parts[3] = ",".join(members + [user])
                    line = ":".join(parts)
                out.append(line)
            return out

        for user, uid in _USER_IDS.items():
            passwd += f"{user}:x:{uid}:{uid}:kubeboot lab user:/home/{user}:/bin/bash\n"
            shadow += f"{user}:{_PASSWORD_HASHES[user]}:19000:0:99999:7:::\n"
            group_lines.append(f"{user}:x:{uid}:")
            gshadow_lines.append(f"{user}:!::")
        group_lines = add_member(group_lines, "sudo", KBUSER)
        gshadow_lines = add_member(gshadow_lines, "sudo", KBUSER)
        shadow_gid = next((int(g.split(":")[2]) for g in group_lines if g.startswith("shadow:")), 0)
        _write(etc / "passwd", passwd)
        _write(etc / "group", "\n".join(group_lines) + "\n")
        _write(etc / "shadow", shadow, 0o640, 0, shadow_gid)
        _write(etc / "gshadow", "\n".join(gshadow_lines) + "\n", 0o640, 0, shadow_gid)
        _write(
            etc / "sudoers.d" / "kubeboot-lab",
            f'Defaults env_keep += "FAKETIME LD_PRELOAD"\n{KBUSER} ALL=(ALL:ALL) ALL\n',
            0o440,
        )

    def _launch(self, h: Host) -> None:
        argv = [
            "ip", "netns", "exec", h.netns,
            "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--mount-proc", "--propagation", "private",
            "--", sys.executable, "-I", "-S", str(HOSTINIT), str(Path(h.root) / "spec.json"),
        ]  # fmt: skip
        with open(h.log_path, "ab") as log:
            p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=SAFE_ENV, start_new_session=True
            )
        self._launchers.append(p)
        h.launcher_pid = p.pid

    def _find_inits(self, timeout: float = 10.0) -> None:
        """The host's PID 1 is the only child of the `unshare --fork` launcher."""
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while True:
                try:
                    kids = Path(f"/proc/{h.launcher_pid}/task/{h.launcher_pid}/children").read_text().split()
                except OSError:
                    kids = []
                if kids:
                    h.init_pid = int(kids[0])
                    break
                if not _alive(h.launcher_pid):
                    raise LabError(f"{h.name}: launcher died: {self._log_tail(h)}")
                if time.monotonic() > deadline:
                    raise LabError(f"{h.name}: no init process after {timeout}s")
                time.sleep(0.005)

    def _running_pid1(self, h: BaseHost) -> int:
        return h.init_pid if h.init_pid and _alive(h.init_pid) else 0

    # -- per-host fault injection ----------------------------------------------------------------
    def sshd_running(self, host: str | int | Host) -> bool:
        return self.port_open(host, SSH_PORT)

    def stop_sshd(self, host: str | int | Host, drop_sessions: bool = False, timeout: float = 10.0) -> None:
        """Stop ``host``'s sshd listener (new connections are refused).  ``drop_sessions`` also
        kills every sshd session process, so open connections break too (a host going down)."""
        h = self.host(host)
        os.kill(h.init_pid, signal.SIGUSR1)  # the host's init stops the listener itself
        self.wait_port_closed(h, SSH_PORT, timeout)
        if drop_sessions:  # then what is left of sshd in the host: the sessions
            pidns = _link_inode(h.init_pid, "pid")
            for pid in _all_pids():
                if pid != h.init_pid and _link_inode(pid, "pid") == pidns and _comm(pid) == "sshd":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def start_sshd(self, host: str | int | Host, timeout: float = 10.0) -> None:
        h = self.host(host)
        os.kill(h.init_pid, signal.SIGUSR2)
        self.wait_for_ssh(h, timeout)

    def freeze(self, host: str | int | Host) -> None:
        """Hang the host: SIGSTOP every process in it.  TCP connects still succeed (the kernel
        answers), but nothing replies -- SSH banner/command timeouts.  Undo with :meth:`thaw`."""
        self._signal_host(host, signal.SIGSTOP)

    def thaw(self, host: str | int | Host) -> None:
        self._signal_host(host, signal.SIGCONT)

    def _signal_host(self, host: str | int | Host, sig: int) -> None:
        h = self.host(host)
        pidns = _link_inode(h.init_pid, "pid")
        for pid in _all_pids():
            if _link_inode(pid, "pid") == pidns:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def set_hostname(self, host: str | int | Host, hostname: str) -> None:
        """Change the host's hostname (kernel UTS name and /etc/hostname), e.g. to duplicate another's."""
        self.run_in(host, ["sh", "-c", 'hostname "$1" && printf "%s\\n" "$1" > /etc/hostname', "sh", hostname])

    def set_machine_id(self, host: str | int | Host, machine_id: str) -> None:
        """Overwrite /etc/machine-id inside the host (e.g. with another host's id)."""
        self.run_in(host, ["sh", "-c", 'printf "%s\\n" "$1" > /etc/machine-id', "sh", machine_id])

    def enable_fake_swap(self, host: str | int | Host, size_kib: int = 1048572) -> None:
        """Make /proc/swaps show an active swap file (what kubeadm's preflight reads).  Only
        /proc/swaps is faked: /proc/meminfo and `free` still show the machine's swap."""
        h = self.host(host)
        self.disable_fake_swap(h)
        _write(
            h.harness_dir / "swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
            f"/swapfile                               file\t\t{size_kib}\t\t0\t\t-2\n",
        )
        self.run_in(h, ["mount", "--bind", f"{HARNESS_MOUNT}/swaps", "/proc/swaps"])

    def disable_fake_swap(self, host: str | int | Host) -> None:
        self.run_in(host, ["sh", "-c", "while umount /proc/swaps 2>/dev/null; do :; done"], check=False)

    def occupy_port(self, host: str | int | Host, port: int, address: str = "0.0.0.0", timeout: float = 5.0) -> int:
        """Start a TCP listener on ``address:port`` inside the host; return its PID (in the host)."""
        out = self.sh_in(
            host,
            f"nc -lk -s {address} -p {port} >/dev/null 2>&1 </dev/null & echo $!",
        )
        pid = int(out.strip())
        deadline = time.monotonic() + timeout
        while port not in self.listening_ports(host):
            if time.monotonic() > deadline:
                raise LabError(f"{self.host(host).name}: nothing listens on :{port} after {timeout}s")
            time.sleep(0.01)
        return pid

    def release_port(self, host: str | int | Host, pid: int) -> None:
        self.run_in(host, ["kill", str(pid)], check=False)

    def listening_ports(self, host: str | int | Host) -> set[int]:
        """TCP ports in LISTEN state in the host's network namespace (from /proc/<pid>/net/tcp*)."""
        h = self.host(host)
        ports = set()
        for f in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{h.init_pid}/net/{f}").read_text().splitlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A":
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        return ports

    def hide_binary(self, host: str | int | Host, name: str) -> list[str]:
        """Make ``name`` disappear from every PATH directory of the host (copy-on-write overlay over
        each directory holding it, then delete it there).  Returns the directories changed."""
        h = self.host(host)
        dirs = self.sh_in(
            h,
            f'n={shlex.quote(name)}; for d in $(echo "$PATH" | tr : " "); do [ -e "$d/$n" ] || [ -L "$d/$n" ] '
            '&& readlink -f "$d"; done | sort -u',
            check=False,
        ).split()
        for d in dirs:
            if d not in h.masked_dirs:
                base = h.harness_dir / "masks" / key_of(d)
                _mkdir(base / "upper", os.stat(d).st_mode & 0o7777)
                _mkdir(base / "work", 0o700)
                inside = f"{HARNESS_MOUNT}/masks/{key_of(d)}"
                self.run_in(
                    h,
                    ["mount", "-t", "overlay", "kblab-mask", "-o",
                     f"lowerdir={d},upperdir={inside}/upper,workdir={inside}/work", d],
                )  # fmt: skip
                h.masked_dirs.append(d)
            self.run_in(h, ["rm", "-f", f"{d}/{name}"])
        self._save_if_owner()
        return dirs

    def restore_binaries(self, host: str | int | Host) -> None:
        """Undo every :meth:`hide_binary` on the host."""
        h = self.host(host)
        for d in reversed(h.masked_dirs):
            self.run_in(h, ["umount", "-l", d], check=False)
            shutil.rmtree(h.harness_dir / "masks" / key_of(d), ignore_errors=True)
        h.masked_dirs.clear()
        self._save_if_owner()

    def set_clock_offset(self, host: str | int | Host, seconds: int) -> None:
        """Shift the wall clock seen by SSH sessions on ``host`` by ``seconds`` (libfaketime).

        Sessions get ``LD_PRELOAD=libfaketime FAKETIME=+Ns`` through ``~/.ssh/environment`` of root,
        kbuser and nosudo (sshd has ``PermitUserEnvironment LD_PRELOAD,FAKETIME``), and sudo keeps
        both.  Takes effect for new connections.  Not affected: static binaries (Go: etcd,
        kubelet), the kernel (file mtimes, TLS in the kernel), :meth:`run_in`.  A host-wide
        /etc/ld.so.preload is not possible: libfaketime kills sshd's seccomp-sandboxed pre-auth
        child (SIGSYS on unlink)."""
        if not Path(FAKETIME_LIB).exists():
            raise LabError(f"{FAKETIME_LIB} missing (apt-get install libfaketime)")
        self._set_session_env(host, f"LD_PRELOAD={FAKETIME_LIB}\nFAKETIME={seconds:+d}s\n")

    def clear_clock_offset(self, host: str | int | Host) -> None:
        self._set_session_env(host, "")

    def _set_session_env(self, host: str | int | Host, content: str) -> None:
        h = self.host(host)
        for home, uid in [("/root", 0)] + [(f"/home/{u}", i) for u, i in _USER_IDS.items()]:
            base = h.dir("/root") if home == "/root" else h.dir("/home") / home.rsplit("/", 1)[1]
            _write(base / ".ssh" / "environment", content, 0o600, uid, uid)

    # -- teardown ------------------------------------------------------------------------------
    def processes(self) -> list[int]:
        """Every live process in one of the lab's network or PID namespaces."""
        return _lab_pids(self.name, self.hosts)

    def down(self, timeout: float = 10.0) -> None:
        """Kill the lab's processes, delete its namespaces and directory.  Idempotent."""
        teardown(self.name, self.hosts, timeout)
        for p in self._launchers:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)
        self._launchers.clear()



SSHD_CONFIG = """\
# kubeboot lab host sshd (generated by tests/lab)
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes yes
MaxStartups 200:30:400
MaxSessions 100
PrintMotd no
AcceptEnv LANG LC_*
PermitUserEnvironment LD_PRELOAD,FAKETIME
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def _lab_pids(name: str, hosts: Sequence[Host]) -> list[int]:
    netns_inodes = set()
    for ns in lab_netns_names(f"{NETNS_PREFIX}{name}-"):
        ino = _ns_inode(f"/run/netns/{ns}")
        if ino is not None:
            netns_inodes.add(ino)
    pidns_inodes = set()
    for h in hosts:
        # guard against PID reuse: the recorded init must still sit in the lab's netns
        if h.init_pid and _link_inode(h.init_pid, "net") in netns_inodes:
            ino = _link_inode(h.init_pid, "pid_for_children")
            pid_ino = _link_inode(h.init_pid, "pid")
            for i in (ino, pid_ino):
                if i is not None:
                    pidns_inodes.add(i)
    return netns_pids(netns_inodes, pidns_inodes)


def teardown(name: str, hosts: Sequence[Host] = (), timeout: float = 10.0) -> list[int]:
    """Kill exactly the lab's processes (members of its namespaces), delete the namespaces
    (with them bridge and veths) and the lab directory.  Returns the PIDs killed."""
    if not hosts:
        with contextlib.suppress(Exception):
            hosts = Lab.attach(name).hosts
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    # SIGKILL to a host's PID 1 makes the kernel kill its whole PID namespace; then whatever
    # else sits in the lab's network namespaces (nsenter children, ProxyCommand nc, ...)
    while True:
        pids = _lab_pids(name, hosts)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        # reap our own children (launchers of a lab started by this process)
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise LabError(f"lab {name}: processes survive SIGKILL: {pids}")
        time.sleep(0.01)
    _ip_batch([f"netns del {ns}" for ns in lab_netns_names(f"{NETNS_PREFIX}{name}-")], force=True)
    lab_dir = Path(f"{LAB_DIR_PREFIX}{name}")
    while os.path.ismount(lab_dir):  # the lab's tmpfs (lazy: a stray shell may still sit in it)
        _run(["umount", "-l", str(lab_dir)])
    if lab_dir.exists():
        shutil.rmtree(lab_dir)
    return killed
