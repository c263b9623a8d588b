"""What both lab kinds share: the lab network (a bridge inside a controller network namespace, one
namespace per host, nothing in the root namespace), the users and the workstation key every host
trusts, the client files (known_hosts, ssh_config) and the ways in (sockets created inside the
controller namespace, a ProxyCommand, fabric connections with strict host keys).

:class:`~tests.lab.lab.Lab` (light hosts: namespaces + sshd) and
:class:`~tests.lab.systemd.SystemdLab` (systemd-nspawn hosts with real systemd) both build on
:class:`LabClient`, so tests and kubeboot can use either.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Self, Sequence

if TYPE_CHECKING:
    from .fabric_conn import LabConnection

SUBNET = "10.200.0"
PREFIX_LEN = 24
GATEWAY = f"{SUBNET}.1"
#: Every host's resolver: the controller namespace, where nothing listens on port 53, so a query fails at once
#: (ICMP port unreachable) and DNS never leaves the lab. Not loopback: CoreDNS forwards to the nameservers of its
#: node's resolv.conf from its own network namespace, where 127.0.0.1 is CoreDNS itself (a loop it refuses), and
#: kubeboot's preflight refuses such hosts (ResolvConf) as it should.
RESOLV_CONF = f"nameserver {GATEWAY}\noptions timeout:1 attempts:1\n"
SSH_PORT = 22
MAX_HOSTS = 200

#: A non-root user with password sudo on every host.
KBUSER = "kbuser"
KBUSER_PASSWORD = "kbpass"
#: A non-root user without any sudo rights on every host.
NOSUDO_USER = "nosudo"
NOSUDO_PASSWORD = "nopass"
PASSWORD_HASHES = {  # openssl passwd -6 -salt kubebootlab <password>
    KBUSER: "$6$kubebootlab$jDXoX9A8OHJQsK0SDaXuDNmoe8NVU5459cDBQFZrhyjSe/m3lDlRip8BMpNuY8Gi2laNJ7Fd2TBNDxOKxC9Rg1",
    NOSUDO_USER: "$6$kubebootlab$zn9lkJQsxsh.87ikwG5FALaf4EOsHjozXTORB1m2g1AaFKhFAgk3lG4OKRCW2nb4E2g8Q.zql9u9.8bXZAv3I1",
}
USER_IDS = {KBUSER: 2001, NOSUDO_USER: 2002}

SAFE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """The lab could not be started, reached or changed."""


def valid_lab_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name) and len(name) <= 40


# ---------------------------------------------------------------------------------------------
# low-level helpers


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def netns_socket(netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that belongs to network namespace ``netns`` (created by a short-lived thread that
    setns()-es into it; the socket keeps its namespace, the calling thread never moves)."""
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, kind)
        except BaseException as e:  # handed to the caller
            result["err"] = e

    t = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "err" in result:
        raise result["err"]
    sock: socket.socket = result["sock"]
    return sock


def run(argv: Sequence[str], input: str | None = None, check: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    p = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, env=SAFE_ENV, check=False, timeout=timeout
    )
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def ip_batch(lines: Iterable[str], netns: str | None = None, force: bool = False) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    script = "".join(line + "\n" for line in lines)
    if script:
        run(argv, input=script, check=not force)


def ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def link_inode(pid: int, ns: str) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/{ns}")  # e.g. "net:[4026532281]"
    except OSError:
        return None
    return int(link[link.index("[") + 1 : -1])


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return pids


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (its main thread's, which is where fork() children hang)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    """The process's command name ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive flock on ``path`` (concurrent pytest sessions share caches below it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def gen_ed25519(comment: str) -> tuple[bytes, str]:
    """(OpenSSH private key, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return priv, f"{pub.decode()} {comment}"


def write(path: Path, data: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def mkdir(path: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    os.chown(path, uid, gid)
    return path


def wait_until(what: str, cond: Any, timeout: float, interval: float = 0.01) -> Any:
    """Poll ``cond()`` until it returns something truthy (returned); :class:`LabError` naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not after {timeout}s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# hosts and the client side


@dataclass
class BaseHost:
    """What every lab host has: a name, an address on the lab bridge, a network namespace, a
    directory on the machine and (while running) a PID 1 seen from the root namespace."""

    name: str
    index: int
    address: str
    netns: str
    root: str
    port: int = SSH_PORT
    init_pid: int = 0
    launcher_pid: int = 0
    machine_id: str = ""
    host_key: str = ""

    @property
    def log_path(self) -> Path:
        """The host's log on the machine (its init's or console output; per kind)."""
        raise NotImplementedError


def host_address(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


class LabClient:
    """The client-facing half of a lab: network, keys, client files and the ways in, and the state file
    through which any process can attach to a lab and tear it down.

    Each kind sets the class attributes below, calls ``super().__init__`` and provides ``up`` (through
    :meth:`_start`), ``_up``, ``down``, ``_running_pid1``, ``_from_state`` and ``_kind_state``; it may override
    :meth:`_host_alive` and :meth:`_abort`."""

    #: what messages call a lab of this kind ("lab", "systemd lab")
    what: str
    #: the module whose CLI has ``down --name LAB``
    cli: str
    #: lab dir = ``<dir_prefix><name>``; namespaces ``<netns_prefix><name>-ctl`` and ``-h<N>``
    dir_prefix: str
    netns_prefix: str
    host_class: type[BaseHost]
    #: the keys of lab.json in file order (common ones and the kind's own)
    state_keys: tuple[str, ...]
    #: the namespaces :meth:`run_in` enters
    nsenter_flags: tuple[str, ...]

    name: str
    n: int
    ephemeral: bool
    owner_pid: int
    dir: Path
    ctl_netns: str
    hosts: Sequence[BaseHost]

    def __init__(self, name: str, n: int, ephemeral: bool) -> None:
        if not valid_lab_name(name):
            raise ValueError("lab name: 1-40 characters of [A-Za-z0-9_-]")
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"1 <= n <= {MAX_HOSTS}")
        self.name = name
        self.n = n
        self.ephemeral = ephemeral
        self.dir = Path(f"{self.dir_prefix}{name}")
        self.ctl_netns = f"{self.netns_prefix}{name}-ctl"
        self.owner_pid = os.getpid()

    # -- paths -----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def key_path(self) -> Path:
        """Workstation-side private key, authorised for root, kbuser and nosudo on every host."""
        return self.dir / "keys" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    def host(self, ref: str | int | BaseHost) -> Any:
        """A host by object, name (``"h2"``), address or 1-based index."""
        if isinstance(ref, BaseHost):
            return ref
        for h in self.hosts:
            if ref in (h.name, h.address, h.index):
                return h
        raise KeyError(f"no host {ref!r} in lab {self.name}")

    def _host_fields(self) -> list[dict[str, Any]]:
        """Name, index, address, network namespace and directory of each host ``h1..hN``."""
        return [
            {
                "name": f"h{i}",
                "index": i,
                "address": host_address(i),
                "netns": f"{self.netns_prefix}{self.name}-h{i}",
                "root": str(self.dir / "hosts" / f"h{i}"),
            }
            for i in range(1, self.n + 1)
        ]

    # -- hooks -------------------------------------------------------------------------------
    def _host_alive(self, h: BaseHost) -> bool:
        return not h.init_pid or alive(h.init_pid)

    def _log_tail(self, h: BaseHost, n: int = 15) -> str:
        """The last ``n`` lines of the host's log, for error messages."""
        try:
            return " | ".join(h.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _running_pid1(self, h: BaseHost) -> int:
        """The host's PID 1 for :meth:`run_in`, 0 when the host is not running."""
        raise NotImplementedError

    def _up(self, timeout: float) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        """Remove what a failed :meth:`_up` made."""
        self.down()

    @classmethod
    def _from_state(cls, name: str, state: dict[str, Any]) -> Self:
        """A lab object with the kind's options from lab.json (hosts and owner are set by :meth:`attach`)."""
        raise NotImplementedError

    def _kind_state(self) -> dict[str, Any]:
        """The kind's own fields of lab.json."""
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------
    def _save(self) -> None:
        common = {
            "name": self.name,
            "n": self.n,
            "ephemeral": self.ephemeral,
            "owner_pid": self.owner_pid,
            "ctl_netns": self.ctl_netns,
            "key": str(self.key_path),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "proxy_command": self.proxy_command(),
            "hosts": [asdict(h) for h in self.hosts],
        }
        state: dict[str, Any] = dict.fromkeys(self.state_keys)  # update() keeps this key order
        state.update(common)
        state.update(self._kind_state())
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)

    def _save_if_owner(self) -> None:
        if self.state_path.exists():
            self._save()

    @classmethod
    def attach(cls, name: str = "default") -> Self:
        """Open a lab started elsewhere (from its state file)."""
        path = Path(f"{cls.dir_prefix}{name}") / "lab.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no {cls.what} {name!r} ({path} does not exist)") from None
        lab = cls._from_state(name, state)
        lab.owner_pid = state.get("owner_pid", 0)
        lab.hosts = [cls.host_class(**h) for h in state["hosts"]]
        return lab

    @classmethod
    def list_labs(cls) -> list[str]:
        """Labs of this kind on the machine: a lab dir or a controller namespace (a half-removed lab)."""
        parent, stem = Path(cls.dir_prefix).parent, Path(cls.dir_prefix).name
        names = {p.name[len(stem) :] for p in parent.glob(stem + "*") if p.is_dir()}
        with contextlib.suppress(FileNotFoundError):
            for ns in os.listdir("/run/netns"):
                if ns.startswith(cls.netns_prefix) and ns.endswith("-ctl"):
                    names.add(ns[len(cls.netns_prefix) : -len("-ctl")])
        return sorted(names)

    # -- up and the context manager ----------------------------------------------------------------
    def _start(self, timeout: float, problems: list[str]) -> Self:
        """The frame of ``up()``: refuse on ``problems`` (the kind's prerequisites) or a lab of this name
        that exists, run :meth:`_up`, and on any error remove what it made (:meth:`_abort`)."""
        if problems:
            raise LabError("; ".join(problems))
        if self.state_path.exists() or Path(f"/run/netns/{self.ctl_netns}").exists():
            raise LabError(f"{self.what} {self.name!r} already exists: "
                           f"`python -m {self.cli} down --name {self.name}` first")  # fmt: skip
        try:
            self._up(timeout)
        except BaseException:
            self._abort()
            raise
        return self

    def up(self) -> Self:
        """Start the lab (each kind: ``up(timeout=...)`` with its own default, through :meth:`_start`)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # -- inside a host -------------------------------------------------------------------------
    def sh_in(self, host: str | int | BaseHost, script: str, check: bool = True) -> str:
        """``sh -c script`` inside ``host``; return stdout."""
        return self.run_in(host, ["sh", "-c", script], check=check).stdout

    def run_in(
        self,
        host: str | int | BaseHost,
        argv: Sequence[str],
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root in the namespaces of ``host``'s PID 1 (nsenter; no SSH involved)."""
        h = self.host(host)
        pid = self._running_pid1(h)
        if not pid:
            raise LabError(f"{h.name}: host is not running")
        cmd = ["nsenter", "-t", str(pid), *self.nsenter_flags, "--", *argv]
        p = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=SAFE_ENV, cwd="/", timeout=timeout, check=False
        )
        if check and p.returncode != 0:
            raise LabError(f"{h.name}: {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    # -- set-up --------------------------------------------------------------------------------
    def _make_network(self) -> None:
        """Controller namespace with bridge ``br0`` (the gateway address), one namespace per host
        with ``eth0`` on the bridge.  veth pairs are created directly in their namespaces: nothing
        ever appears in the root namespace, and the controller has no route out."""
        ip_batch([f"netns add {self.ctl_netns}"] + [f"netns add {h.netns}" for h in self.hosts])
        ctl = [
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {GATEWAY}/{PREFIX_LEN} dev br0",
            "link set br0 up",
        ]
        ip_batch(
            f"link add veth-{h.name} netns {self.ctl_netns} type veth peer name eth0 netns {h.netns}"
            for h in self.hosts
        )
        ctl += [f"link set veth-{h.name} master br0 up" for h in self.hosts]
        ip_batch(ctl, self.ctl_netns)
        for h in self.hosts:
            ip_batch(
                [
                    "link set lo up",
                    f"addr add {h.address}/{PREFIX_LEN} dev eth0",
                    "link set eth0 up",
                    f"route add default via {GATEWAY}",
                ],
                h.netns,
            )

    def _make_key(self) -> str:
        """A fresh workstation key pair for this lab; returns the public key line."""
        mkdir(self.key_path.parent, 0o700)
        priv, pub = gen_ed25519(f"kubeboot-lab-{self.name}")
        write(self.key_path, priv, 0o600)
        write(self.key_path.with_suffix(".pub"), pub + "\n", 0o644)
        return pub

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{GATEWAY}\tworkstation"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts]
        return "\n".join(lines) + "\n"

    def _write_client_files(self) -> None:
        write(self.known_hosts, "".join(f"{h.name},{h.address} {h.host_key}\n" for h in self.hosts))
        lines = [f"# generated by tests.lab for lab {self.name}; use: ssh -F {self.ssh_config} h1", ""]
        for h in self.hosts:
            lines += [f"Host {h.name}", f"    HostName {h.address}", ""]
        lines += [
            "Host " + " ".join(f"{h.name} {h.address}" for h in self.hosts),
            "    User root",
            f"    Port {SSH_PORT}",
            f"    IdentityFile {self.key_path}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    ConnectTimeout 5",
            "    LogLevel ERROR",
            f"    ProxyCommand {self.proxy_command()}",
            "",
        ]
        write(self.ssh_config, "\n".join(lines))

    # -- reaching the hosts ------------------------------------------------------------------
    def proxy_command(self, host: str | int | BaseHost | None = None, port: int = SSH_PORT) -> str:
        """ProxyCommand through the controller namespace (needs netcat-openbsd).  Without a host:
        the ``%h %p`` template for ssh_config; with one: a ready string for fabric's ``gateway=``."""
        if host is None:
            return f"ip netns exec {self.ctl_netns} nc %h %p"
        return f"ip netns exec {self.ctl_netns} nc {self.host(host).address} {port}"

    def sock_for(self, host: str | int | BaseHost, port: int = SSH_PORT, timeout: float = 5.0) -> socket.socket:
        """A TCP socket from the workstation (controller netns) connected to ``host:port``, with
        TCP_NODELAY (paramiko commands: ~15 ms instead of ~48 ms).  Pass it as fabric/paramiko
        ``sock=``."""
        h = self.host(host)
        s = netns_socket(self.ctl_netns)
        try:
            s.settimeout(timeout)
            s.connect((h.address, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(None)
        except BaseException:
            s.close()
            raise
        return s

    def connection(
        self,
        host: str | int | BaseHost,
        user: str = "root",
        sudo_password: str | None = None,
        connect_timeout: float = 10.0,
        via: str = "sock",
    ) -> LabConnection:
        """A fabric Connection with strict host-key checking against the lab's known_hosts.

        ``via="sock"`` (default) connects through :meth:`sock_for` on every ``open()``;
        ``via="proxy"`` uses the ProxyCommand gateway.  ``sudo_password`` defaults to kbuser's /
        nosudo's password for those users.  ``run.in_stream`` is False (pitfall: sudo + no stdin)."""
        from .fabric_conn import make_connection

        if sudo_password is None:
            sudo_password = {KBUSER: KBUSER_PASSWORD, NOSUDO_USER: NOSUDO_PASSWORD}.get(user)
        return make_connection(self, self.host(host), user, sudo_password, connect_timeout, via)

    def wait_for_ssh(self, host: str | int | BaseHost, timeout: float = 10.0) -> float:
        """Poll until ``host``'s sshd sends its SSH banner; return the seconds waited."""
        h = self.host(host)
        t0 = time.monotonic()
        deadline = t0 + timeout
        last: BaseException | None = None
        while True:
            try:
                with self.sock_for(h, h.port, timeout=max(0.05, min(1.0, deadline - time.monotonic()))) as s:
                    s.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
                    if s.recv(4) == b"SSH-":
                        return time.monotonic() - t0
            except OSError as e:
                last = e
            if not self._host_alive(h):
                raise LabError(f"{h.name}: host init died: {self._log_tail(h)}")
            if time.monotonic() > deadline:
                raise LabError(f"{h.name}: sshd not answering after {timeout}s ({last}): {self._log_tail(h)}")
            time.sleep(0.01)

    def port_open(self, host: str | int | BaseHost, port: int, timeout: float = 0.5) -> bool:
        try:
            self.sock_for(host, port, timeout).close()
            return True
        except OSError:
            return False

    def wait_port_closed(self, host: str | int | BaseHost, port: int = SSH_PORT, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.port_open(host, port, 0.2):
            if time.monotonic() > deadline:
                raise LabError(f"{self.host(host).name}:{port} still open after {timeout}s")
            time.sleep(0.01)

    # -- network faults --------------------------------------------------------------------------
    def disconnect(self, host: str | int | BaseHost) -> None:
        """Unplug the host's cable (bridge port down): packets are dropped, connections time out."""
        ip_batch([f"link set veth-{self.host(host).name} down"], self.ctl_netns)

    def reconnect(self, host: str | int | BaseHost) -> None:
        ip_batch([f"link set veth-{self.host(host).name} up"], self.ctl_netns)


def lab_netns_names(prefix: str) -> list[str]:
    """The lab's namespaces in /run/netns: ``<prefix>ctl`` and ``<prefix>h<N>`` (nothing else)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return [ns for ns in names if ns.startswith(prefix)
            and (ns == f"{prefix}ctl" or (ns[len(prefix):].startswith("h") and ns[len(prefix) + 1:].isdigit()))]  # fmt: skip


def netns_pids(netns_inodes: set[int], pidns_inodes: set[int] | None = None) -> list[int]:
    """Live processes (not us or our ancestors) in one of those network or PID namespaces."""
    pidns_inodes = pidns_inodes or set()
    if not netns_inodes and not pidns_inodes:
        return []
    mine = ancestors()
    found = []
    for pid in all_pids():
        if pid in mine:
            continue
        if link_inode(pid, "net") in netns_inodes or link_inode(pid, "pid") in pidns_inodes:
            if alive(pid):
                found.append(pid)
    return found
