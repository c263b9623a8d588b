"""The client-facing half of a set of sandbox hosts (shell): the network (a bridge inside a controller network
namespace, one namespace per host, nothing in the machine's own namespace), the key every host trusts for root,
the client files (known_hosts, ssh_config), the ways in (sockets created inside the controller namespace, a
ProxyCommand, fabric connections with strict host keys) and the state file through which any process can attach to
the hosts and tear them down.

:class:`~kubeboot.sandbox.hosts.SystemdHosts` (systemd-nspawn hosts; the sandbox and the test lab) and the test
suite's light hosts (tests/lab/lab.py: namespaces + sshd) both build on :class:`HostsClient`.

Names: the hosts' directory is ``state_dir`` (default ``<dir_prefix><name>``), their namespaces
``<netns_prefix><name>-ctl`` and ``<netns_prefix><name>-<host>``, host ``i`` has address ``.(10+i)`` of the /24.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Sequence

from .net import MAX_HOSTS, Subnet, ip_batch, netns_socket
from .rootfs import PASSWORDS, USER_IDS
from .system import SAFE_ENV, SandboxError, alive, gen_ed25519, mkdir, valid_name, write

if TYPE_CHECKING:
    from .connect import LabConnection

SSH_PORT = 22
DEFAULT_SUBNET = "10.200.0.0/24"
#: A host name: a DNS label short enough for ``veth-<name>`` (an interface name has at most 15 characters),
#: without ``-`` (so that one set's namespaces are never mistaken for another's: :func:`~.net.netns_names`).
HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")


def check_host_names(names: Sequence[str]) -> None:
    """ValueError unless every name is a short DNS label without ``-``, unique, and not ``ctl``."""
    bad = [n for n in names if not HOST_NAME.match(n) or n == "ctl"]
    if bad:
        raise ValueError(f"host names: 1-10 characters of [a-z0-9], starting with a letter, not 'ctl': {bad}")
    if len(set(names)) != len(names):
        raise ValueError(f"host names must be unique: {list(names)}")


@dataclass
class BaseHost:
    """What every host has: a name, an address on the bridge, a network namespace, a directory on the machine
    and (while running) a PID 1 seen from the root namespace."""

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


class HostsClient:
    """Network, keys, client files and the ways in, and the state file (``lab.json``) through which any process
    can attach to a set of hosts and tear it down.

    Each kind sets the class attributes below, calls ``super().__init__`` and provides ``up`` (through
    :meth:`_start`), ``_up``, ``down``, ``_running_pid1``, ``_from_state`` and ``_kind_state``; it may override
    :meth:`_host_alive` and :meth:`_abort`."""

    #: what messages call a set of this kind ("lab", "systemd lab", "sandbox")
    what: str = "hosts"
    #: the module whose CLI has ``down --name NAME`` (for the "already exists" message; see :meth:`down_hint`)
    cli: str = ""
    #: defaults: dir = ``<dir_prefix><name>``; namespaces ``<netns_prefix><name>-ctl`` and ``-<host>``
    dir_prefix: str
    netns_prefix: str
    #: the /24 when none is given
    default_subnet: str = DEFAULT_SUBNET
    #: base users besides root whose authorized_keys get the key (test convenience; see rootfs.lock_users)
    default_users: tuple[str, ...] = ()
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
    subnet: Subnet
    host_names: list[str]
    users: tuple[str, ...]
    hosts: Sequence[BaseHost]

    def __init__(
        self,
        name: str,
        n: int,
        ephemeral: bool,
        *,
        names: Sequence[str] | None = None,
        state_dir: Path | str | None = None,
        netns_prefix: str | None = None,
        subnet: str | None = None,
        users: Sequence[str] | None = None,
    ) -> None:
        if not valid_name(name):
            raise ValueError("name: 1-40 characters of [A-Za-z0-9_-]")
        if names is not None:
            n = len(names)
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"1 <= number of hosts <= {MAX_HOSTS}")
        self.host_names = list(names) if names is not None else [f"h{i}" for i in range(1, n + 1)]
        check_host_names(self.host_names)
        users = tuple(self.default_users if users is None else users)
        if unknown := [u for u in users if u not in USER_IDS]:
            raise ValueError(f"users: only {sorted(USER_IDS)} exist in the base, not {unknown}")
        if netns_prefix is not None:
            self.netns_prefix = netns_prefix
        if not re.match(r"^[a-z][a-z0-9]*-$", self.netns_prefix):
            raise ValueError(f"netns prefix {self.netns_prefix!r}: [a-z][a-z0-9]* and a final '-' expected")
        self.name = name
        self.n = n
        self.ephemeral = ephemeral
        self.dir = Path(state_dir) if state_dir is not None else Path(f"{self.dir_prefix}{name}")
        self.subnet = Subnet(subnet or self.default_subnet)
        self.users = users
        self.ctl_netns = f"{self.ns_prefix}ctl"
        self.owner_pid = os.getpid()

    # -- names and paths -------------------------------------------------------------------
    @property
    def ns_prefix(self) -> str:
        """``<netns_prefix><name>-``: every namespace, nspawn machine and cgroup of this set starts with it."""
        return f"{self.netns_prefix}{self.name}-"

    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def key_path(self) -> Path:
        """Workstation-side private key, authorised for root (and the enabled users) on every host."""
        return self.dir / "keys" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def gateway(self) -> str:
        """The controller namespace's address on the bridge (the hosts' default route, ``workstation``)."""
        return self.subnet.gateway

    def host(self, ref: str | int | BaseHost) -> Any:
        """A host by object, name (``"h2"``), address or 1-based index."""
        if isinstance(ref, BaseHost):
            return ref
        for h in self.hosts:
            if ref in (h.name, h.address, h.index):
                return h
        raise KeyError(f"no host {ref!r} in {self.what} {self.name}")

    def addresses(self) -> dict[str, str]:
        """Host name -> address."""
        return {h.name: h.address for h in self.hosts}

    def _host_fields(self) -> list[dict[str, Any]]:
        """Name, index, address, network namespace and directory of each host."""
        return [
            {
                "name": hn,
                "index": i,
                "address": self.subnet.host(i),
                "netns": f"{self.ns_prefix}{hn}",
                "root": str(self.dir / "hosts" / hn),
            }
            for i, hn in enumerate(self.host_names, start=1)
        ]

    def down_hint(self) -> str:
        """How a user removes this set (named in the "already exists" refusal)."""
        return f"`python -m {self.cli} down --name {self.name}`"

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
        """An object with the kind's options from lab.json (the common fields are set by :meth:`open`)."""
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
            "netns_prefix": self.netns_prefix,
            "subnet": self.subnet.cidr,
            "users": list(self.users),
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
        """Open a set started elsewhere, by name (its state file in ``<dir_prefix><name>``)."""
        return cls.open(Path(f"{cls.dir_prefix}{name}"))

    @classmethod
    def open(cls, state_dir: Path | str) -> Self:
        """Open a set started elsewhere from its directory's state file (lab.json): everything a teardown
        needs, also after every process of the set was killed."""
        path = Path(state_dir) / "lab.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise SandboxError(f"no {cls.what} in {state_dir} ({path} does not exist)") from None
        except ValueError as e:
            raise SandboxError(f"{path}: not a state file ({e})") from None
        hosts = state["hosts"]
        lab = cls._from_state(state["name"], {**state, "_names": [h["name"] for h in hosts] or None})
        lab.dir = Path(state_dir)
        lab.netns_prefix = state.get("netns_prefix", cls.netns_prefix)
        lab.subnet = Subnet(state.get("subnet") or DEFAULT_SUBNET)
        lab.users = tuple(state.get("users", cls.default_users))
        lab.ctl_netns = state.get("ctl_netns", lab.ctl_netns)
        lab.owner_pid = state.get("owner_pid", 0)
        lab.hosts = [cls.host_class(**h) for h in hosts]
        if hosts:
            lab.host_names = [h.name for h in lab.hosts]
        return lab

    @classmethod
    def _init_kwargs(cls, state: dict[str, Any]) -> dict[str, Any]:
        """The common keyword arguments of ``__init__`` from a state file (for :meth:`_from_state`)."""
        return {
            "names": state.get("_names"),
            "netns_prefix": state.get("netns_prefix", cls.netns_prefix),
            "subnet": state.get("subnet") or DEFAULT_SUBNET,
            "users": state.get("users", cls.default_users),
        }

    @classmethod
    def list_labs(cls, parent: Path | str | None = None, netns_prefix: str | None = None) -> list[str]:
        """Names of the sets of this kind on the machine: a directory ``<dir_prefix><name>`` (or any directory in
        ``parent``) or a controller namespace ``<netns_prefix><name>-ctl`` (a half-removed set)."""
        prefix = netns_prefix or cls.netns_prefix
        if parent is not None:
            top, stem = Path(parent), ""
        elif cls.dir_prefix.endswith("/"):
            top, stem = Path(cls.dir_prefix), ""
        else:
            top, stem = Path(cls.dir_prefix).parent, Path(cls.dir_prefix).name
        names = {p.name[len(stem) :] for p in top.glob(stem + "*") if p.is_dir()} if top.is_dir() else set()
        with contextlib.suppress(FileNotFoundError):
            for ns in os.listdir("/run/netns"):
                if ns.startswith(prefix) and ns.endswith("-ctl"):
                    names.add(ns[len(prefix) : -len("-ctl")])
        return sorted(n for n in names if valid_name(n))

    # -- up and the context manager ----------------------------------------------------------------
    def _start(self, timeout: float, problems: list[str]) -> Self:
        """The frame of ``up()``: refuse on ``problems`` (the kind's prerequisites) or a set of this name
        that exists, run :meth:`_up`, and on any error remove what it made (:meth:`_abort`)."""
        if problems:
            raise SandboxError("; ".join(problems))
        if self.state_path.exists() or Path(f"/run/netns/{self.ctl_netns}").exists():
            raise SandboxError(f"{self.what} {self.name!r} already exists: {self.down_hint()} first")
        try:
            self._up(timeout)
        except BaseException:
            self._abort()
            raise
        return self

    def up(self) -> Self:
        """Start the hosts (each kind: ``up(timeout=...)`` with its own default, through :meth:`_start`)."""
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
            raise SandboxError(f"{h.name}: host is not running")
        cmd = ["nsenter", "-t", str(pid), *self.nsenter_flags, "--", *argv]
        p = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=SAFE_ENV, cwd="/", timeout=timeout, check=False
        )
        if check and p.returncode != 0:
            raise SandboxError(f"{h.name}: {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
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
            f"addr add {self.gateway}/{self.subnet.prefix_len} dev br0",
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
                    f"addr add {h.address}/{self.subnet.prefix_len} dev eth0",
                    "link set eth0 up",
                    f"route add default via {self.gateway}",
                ],
                h.netns,
            )

    def _make_key(self) -> str:
        """A fresh workstation key pair for this set; returns the public key line."""
        mkdir(self.key_path.parent, 0o700)
        priv, pub = gen_ed25519(f"kubeboot-{self.name}")
        write(self.key_path, priv, 0o600)
        write(self.key_path.with_suffix(".pub"), pub + "\n", 0o644)
        return pub

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{self.gateway}\tworkstation"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts]
        return "\n".join(lines) + "\n"

    def _write_client_files(self) -> None:
        write(self.known_hosts, "".join(f"{h.name},{h.address} {h.host_key}\n" for h in self.hosts))
        first = self.hosts[0].name
        lines = [f"# generated by kubeboot for {self.what} {self.name}; use: ssh -F {self.ssh_config} {first}", ""]
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
        """ProxyCommand through the controller namespace (``ip`` and netcat-openbsd's ``nc`` on the machine;
        root).  Without a host: the ``%h %p`` template for ssh_config; with one: a ready string for fabric's
        ``gateway=``."""
        if host is None:
            return f"ip netns exec {self.ctl_netns} nc %h %p"
        return f"ip netns exec {self.ctl_netns} nc {self.host(host).address} {port}"

    def sock_for(self, host: str | int | BaseHost, port: int = SSH_PORT, timeout: float = 5.0) -> socket.socket:
        """A TCP socket from the workstation (controller netns) connected to ``host:port``, with
        TCP_NODELAY (paramiko commands: ~15 ms instead of ~48 ms).  Pass it as fabric/paramiko ``sock=``."""
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
        """A fabric Connection with strict host-key checking against the set's known_hosts.

        ``via="sock"`` (default) connects through :meth:`sock_for` on every ``open()``; ``via="proxy"`` uses the
        ProxyCommand gateway.  ``sudo_password`` defaults to an enabled base user's password.  ``run.in_stream``
        is False (pitfall: sudo + no stdin)."""
        from .connect import make_connection

        if sudo_password is None and user in self.users:
            sudo_password = PASSWORDS.get(user)
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
                raise SandboxError(f"{h.name}: host init died: {self._log_tail(h)}")
            if time.monotonic() > deadline:
                raise SandboxError(f"{h.name}: sshd not answering after {timeout}s ({last}): {self._log_tail(h)}")
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
                raise SandboxError(f"{self.host(host).name}:{port} still open after {timeout}s")
            time.sleep(0.01)

    def ctl_exec(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in the controller namespace (e.g. ``kubectl`` against a host's address)."""
        return ["ip", "netns", "exec", self.ctl_netns, *argv]

    # -- network faults --------------------------------------------------------------------------
    def disconnect(self, host: str | int | BaseHost) -> None:
        """Unplug the host's cable (bridge port down): packets are dropped, connections time out."""
        ip_batch([f"link set veth-{self.host(host).name} down"], self.ctl_netns)

    def reconnect(self, host: str | int | BaseHost) -> None:
        ip_batch([f"link set veth-{self.host(host).name} up"], self.ctl_netns)
