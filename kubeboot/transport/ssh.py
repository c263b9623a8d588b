"""Shell: the SSH transport on fabric/paramiko.

Failure classes are kept apart, because the remedy differs: an unknown or changed host key, a rejected key
and a missing key file never fix themselves (fail at once, exit 10 / 9); a connection timeout may
(retried a bounded number of times, then exit 8); a refused connection means sshd is not listening.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import invoke
import paramiko
from fabric import Config, Connection

from kubeboot.errors import (
    AuthenticationError,
    HostConnectionError,
    HostKeyError,
    RemoteCommandError,
    SudoError,
)
from kubeboot.transport.base import CommandResult, Tracer, command_failed, install_script

CONNECT_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 3
CHANNEL_TIMEOUT = 30.0  # opening a session on a connection whose host died must fail, not hang for an hour
KEEPALIVE = 10  # seconds between keepalives, so a silently dead peer is noticed
UPLOAD_TIMEOUT = 300.0
CLOSE_TIMEOUT = 5.0  # the best-effort clean-up when a run ends (a healthy host answers in milliseconds)


@dataclass(frozen=True)
class SSHTarget:
    name: str  # inventory host name (for messages)
    address: str
    port: int
    user: str
    key_path: str | None
    known_hosts: Path
    accept_new_host_keys: bool = False
    ssh_config: Path | None = None  # an OpenSSH client config (ProxyCommand, ProxyJump, ...)
    bastion: str | None = None  # [user@]host[:port]
    sudo_password: str | None = None


class _AcceptAndRecord(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Explicit opt-in: accept a host key never seen before and append it to known_hosts (a changed key is
    still refused: paramiko raises BadHostKeyException before policies are consulted)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SSHTransport:
    def __init__(self, target: SSHTarget, trace: Tracer | None = None) -> None:
        self.name = target.name
        self.target = target
        self._trace = trace or (lambda _line: None)
        self._conn: Connection | None = None
        self._tmpdir: str | None = None

    # --- connection ----------------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        t = self.target
        if t.key_path is not None and not Path(t.key_path).expanduser().is_file():
            raise AuthenticationError(f"{t.name}: SSH key file {t.key_path} does not exist",
                                      hint="fix ssh.keyPath in the inventory (or keyPath: null: the agent or the "
                                           "--ssh-config IdentityFile)")
        overrides: dict[str, Any] = {"run": {"in_stream": False}, "load_ssh_configs": False}
        ssh_config = paramiko.SSHConfig.from_path(str(t.ssh_config)) if t.ssh_config else paramiko.SSHConfig()
        if t.sudo_password is not None:
            overrides["sudo"] = {"password": t.sudo_password}
        config = Config(overrides=overrides, ssh_config=ssh_config)
        connect_kwargs: dict[str, Any] = {"banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT}
        if t.key_path is not None:
            connect_kwargs["key_filename"] = str(Path(t.key_path).expanduser())
            connect_kwargs["look_for_keys"] = False
        else:
            # No keyPath: the keys come from the ssh config. fabric looks it up by the address kubeboot dials;
            # `vagrant ssh-config` and most hand-written configs name the host instead (Host cp1), so that
            # block's IdentityFile counts too, as for `ssh cp1`. Address, port and user stay the inventory's.
            named = [str(k) for k in ssh_config.lookup(t.name).get("identityfile", [])]
            if named:
                connect_kwargs["key_filename"] = named
        gateway: Connection | None = None
        if t.bastion:
            user, _, hostport = t.bastion.rpartition("@")
            host, _, port = hostport.partition(":")
            gateway = Connection(host, user=user or t.user, port=int(port or 22), config=config,
                                 connect_kwargs=dict(connect_kwargs), connect_timeout=CONNECT_TIMEOUT)
            self._verify_keys(gateway)
        conn = Connection(t.address, user=t.user, port=t.port, config=config, connect_kwargs=connect_kwargs,
                          connect_timeout=CONNECT_TIMEOUT, gateway=gateway)
        self._verify_keys(conn)
        self._open(conn)
        self._conn = conn
        return conn

    def _verify_keys(self, conn: Connection) -> None:
        # fabric defaults to AutoAddPolicy and never reads known_hosts: make verification explicit.
        client = conn.client
        if self.target.known_hosts.exists():
            client.load_host_keys(str(self.target.known_hosts))
        if self.target.accept_new_host_keys:
            client.set_missing_host_key_policy(_AcceptAndRecord(self.target.known_hosts))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def _open(self, conn: Connection) -> None:
        t = self.target
        where = f"{t.name} ({t.user}@{t.address}:{t.port})"
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                conn.open()
                break
            except paramiko.BadHostKeyException:
                raise HostKeyError(
                    f"{where}: the host key does not match {t.known_hosts}: possible man-in-the-middle, "
                    f"or the host was reinstalled",
                    hint=f"if the host was reinstalled, remove its old entry: ssh-keygen -R {t.address} "
                         f"-f {t.known_hosts}") from None
            except paramiko.AuthenticationException:
                raise AuthenticationError(
                    f"{where}: SSH authentication failed (key {t.key_path or 'from agent'} was rejected)",
                    hint="check ssh.user and ssh.keyPath, and that the public key is in the user's "
                         "authorized_keys") from None
            except paramiko.SSHException as exc:
                if "not found in known_hosts" in str(exc):
                    raise HostKeyError(
                        f"{where}: unknown host key (not in {t.known_hosts})",
                        hint="verify the key and add it (ssh-keyscan), or pass --accept-new-host-keys to trust "
                             "keys seen for the first time") from None
                if "No authentication methods available" in str(exc):  # no key file, no agent: never retried
                    raise AuthenticationError(
                        f"{where}: no SSH key to offer (keyPath is null, no IdentityFile in --ssh-config for "
                        f"{t.name} or {t.address}, no agent)",
                        hint="set ssh.keyPath, or pass --ssh-config with the host's IdentityFile") from None
                if attempt == CONNECT_ATTEMPTS:
                    raise HostConnectionError(f"{where}: SSH handshake failed: {exc}") from None
            except (socket.timeout, TimeoutError):
                if attempt == CONNECT_ATTEMPTS:
                    raise HostConnectionError(
                        f"{where}: connection timed out ({CONNECT_ATTEMPTS} attempts of {CONNECT_TIMEOUT:.0f}s)",
                        hint="check the address, routing and firewalls between here and the host") from None
            except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError) as exc:
                raise HostConnectionError(f"{where}: connection refused ({exc.strerror or exc})",
                                          hint="is sshd running and listening on that port?") from None
            except OSError as exc:
                raise HostConnectionError(f"{where}: cannot connect: {exc.strerror or exc}",
                                          hint="check the address and the route to the host") from None
            time.sleep(min(2.0 * attempt, 5.0))  # backoff before retrying a timeout
        transport = conn.client.get_transport()
        if transport is not None:
            transport.channel_timeout = CHANNEL_TIMEOUT
            transport.set_keepalive(KEEPALIVE)
        sock = getattr(transport, "sock", None)
        if isinstance(sock, socket.socket):
            # One round trip per command: without NODELAY small writes wait for delayed ACKs (48 ms -> 15 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- commands ------------------------------------------------------------------------------

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            display: str | None = None) -> CommandResult:
        conn = self._connection()
        timeout = timeout or 600.0  # nothing kubeboot runs may hang a run forever
        shown = display or command
        self._trace(f"{self.name}$ {shown}")
        wrapped = f"sh -c {shlex.quote(command)}"
        t0 = time.monotonic()
        with self._mapped_errors(f"`{shown}`", timeout):
            if self.target.user == "root":
                res = conn.run(wrapped, hide=True, warn=True, timeout=timeout)
            elif self.target.sudo_password is not None:
                res = conn.sudo(wrapped, hide=True, warn=True, timeout=timeout, in_stream=False)
            else:
                res = conn.run(f"sudo -n {wrapped}", hide=True, warn=True, timeout=timeout)
        result = CommandResult(self.name, shown, res.exited, res.stdout, res.stderr, time.monotonic() - t0)
        self._trace(f"{self.name}: exit {res.exited} in {result.seconds:.3f}s")
        if self.target.user != "root" and res.exited != 0:
            self._check_sudo(res.stderr)
        if check and res.exited != 0:
            raise command_failed(result)
        return result

    @contextlib.contextmanager
    def _mapped_errors(self, what: str, timeout: float) -> Iterator[None]:
        """fabric/paramiko failures as kubeboot errors: a wrong sudo password, a timeout, a lost connection."""
        try:
            yield
        except invoke.exceptions.AuthFailure:
            raise SudoError(f"{self.name}: sudo rejected the password for {self.target.user}",
                            hint="check the variable named by ssh.sudoPasswordEnv") from None
        except invoke.exceptions.CommandTimedOut:
            raise RemoteCommandError(f"{self.name}: {what} did not finish within {timeout:.0f}s") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._conn = None
            raise HostConnectionError(f"{self.name}: connection lost during {what}: {exc}",
                                      hint="re-run once the host is reachable; finished steps are skipped") from None

    def _raw(self, command: str, what: str, **kwargs: Any) -> Any:
        """A plain (login-user) command with kubeboot's error mapping and a bounded duration."""
        timeout = kwargs.setdefault("timeout", UPLOAD_TIMEOUT)
        with self._mapped_errors(what, timeout):
            return self._connection().run(command, hide=True, warn=True, **kwargs)

    def _check_sudo(self, stderr: str) -> None:
        user = self.target.user
        if "a password is required" in stderr or "no password was provided" in stderr:
            raise SudoError(f"{self.name}: {user} needs a password for sudo",
                            hint="set ssh.sudoPasswordEnv to the name of an environment variable holding it")
        if "is not in the sudoers file" in stderr or "is not allowed to" in stderr or "may not run sudo" in stderr:
            raise SudoError(f"{self.name}: {user} may not use sudo on this host",
                            hint="log in as root, or grant the user sudo rights")
        if "incorrect password" in stderr or "Sorry, try again" in stderr:
            raise SudoError(f"{self.name}: sudo rejected the password for {user}",
                            hint="check the variable named by ssh.sudoPasswordEnv")

    def _upload_dir(self) -> str:
        if self._tmpdir is None:
            res = self._raw("umask 077 && mktemp -d /tmp/kubeboot.XXXXXXXX", "creating an upload directory")
            if res.exited != 0:
                raise RemoteCommandError(f"{self.name}: cannot create a temporary directory: {res.stderr.strip()}")
            self._tmpdir = res.stdout.strip()
        return self._tmpdir

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None:
        """Stream the bytes (base64, as the login user, into a 0700 temp dir), then install as root and rename
        into place, so a reader never sees half a file and the target never has the wrong mode."""
        tmp = f"{self._upload_dir()}/upload"
        self._trace(f"{self.name}: put {path} ({len(content)} bytes, mode {mode:04o})")
        payload = base64.b64encode(content).decode()
        res = self._raw(f"umask 077 && base64 -d > {shlex.quote(tmp)}", f"the upload of {path}",
                        in_stream=_TextStream(payload))
        if res.exited != 0:
            raise RemoteCommandError(f"{self.name}: upload of {path} failed: {res.stderr.strip()}")
        self.run(install_script(path, mode, owner, group, tmp) + f" && rm -f {shlex.quote(tmp)}",
                 display=f"install {path}")

    def put_file(self, path: str, local: str, mode: int) -> None:
        """Stream a local file (raw bytes over one exec channel, `cat` as the login user into the 0700 upload
        dir), then install it as root. For big files (image archives): no base64, never all in memory."""
        tmp = f"{self._upload_dir()}/upload-file"
        size = Path(local).stat().st_size
        self._trace(f"{self.name}: put {path} from {local} ({size} bytes, mode {mode:04o})")
        with open(local, "rb") as fh:
            self._stream(f"umask 077 && cat > {shlex.quote(tmp)}", f"upload of {path}", source=fh)
        self.run(install_script(path, mode, "root", "root", tmp) + f" && rm -f {shlex.quote(tmp)}",
                 display=f"install {path}")

    def get(self, path: str) -> bytes | None:
        q = shlex.quote(path)
        res = self.run(f"if [ -e {q} ]; then base64 {q}; else echo __KUBEBOOT_ABSENT__; fi", display=f"read {path}")
        if res.stdout.strip() == "__KUBEBOOT_ABSENT__":
            return None
        return base64.b64decode(res.stdout)

    def get_file(self, path: str, local: str) -> None:
        """Stream a root-readable file to the workstation: root copies it into the login user's 0700 upload dir
        (owned by that user), the login user `cat`s it over one exec channel, raw bytes, written as they come."""
        tmp = f"{self._upload_dir()}/download-file"
        self._trace(f"{self.name}: get {path} to {local}")
        self.run(f"install -m 0600 -o {shlex.quote(self.target.user)} {shlex.quote(path)} {shlex.quote(tmp)}",
                 display=f"stage {path} for download")
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            self._stream(f"cat {shlex.quote(tmp)} && rm -f {shlex.quote(tmp)}", f"download of {path}", sink=out)

    def _stream(self, command: str, what: str, source: BinaryIO | None = None, sink: BinaryIO | None = None) -> None:
        """Run `command` as the login user on one exec channel, raw bytes in from `source` or out to `sink`, 1 MiB
        at a time (never all in memory, no base64); a non-zero exit is a RemoteCommandError naming `what`."""
        transport = self._connection().client.get_transport()
        with self._mapped_errors(f"the {what}", UPLOAD_TIMEOUT):
            if transport is None:
                raise OSError("no SSH transport")
            chan = transport.open_session(timeout=CHANNEL_TIMEOUT)
            try:
                chan.settimeout(UPLOAD_TIMEOUT)
                chan.exec_command(command)
                if source is not None:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        chan.sendall(chunk)
                    chan.shutdown_write()
                if sink is not None:
                    for chunk in iter(lambda: chan.recv(1 << 20), b""):
                        sink.write(chunk)
                status = chan.recv_exit_status()
                err = chan.recv_stderr(4096).decode(errors="replace") if chan.recv_stderr_ready() else ""
            finally:
                chan.close()
        if status != 0:
            raise RemoteCommandError(f"{self.name}: {what} failed: {err.strip() or f'exit {status}'}")

    def close(self) -> None:
        if self._conn is not None:
            if self._tmpdir is not None and self._conn.is_connected:
                transport = self._conn.client.get_transport()
                if transport is not None:  # a host that stopped answering must not hold up the end of the run
                    transport.channel_timeout = CLOSE_TIMEOUT
                try:
                    self._conn.run(f"rm -rf {shlex.quote(self._tmpdir)}", hide=True, warn=True,
                                   timeout=CLOSE_TIMEOUT)
                except Exception:  # noqa: BLE001 - best effort: the host may be gone
                    pass
            self._conn.close()
        self._conn = None
        self._tmpdir = None


class _TextStream:
    """A minimal read()-able stream for invoke's stdin pump (it reads text, one chunk at a time)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def read(self, n: int = -1) -> str:
        if self._pos >= len(self._text):
            return ""
        n = len(self._text) - self._pos if n < 0 else max(n, 65536)
        chunk = self._text[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk
