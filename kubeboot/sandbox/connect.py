"""fabric Connections into sandbox or lab hosts (shell), with strict host-key checking (fabric itself defaults to
AutoAddPolicy and never reads known_hosts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import paramiko
from fabric import Config, Connection

if TYPE_CHECKING:
    from .client import BaseHost, HostsClient


class LabConnection(Connection):  # type: ignore[misc]  # fabric ships no type information
    """A fabric Connection that gets a fresh socket from the hosts' controller namespace on every
    ``open()`` (so it can be closed and reopened, e.g. around an sshd restart)."""

    lab_sock_factory: Any = None

    def open(self) -> Any:
        if not self.is_connected and self.lab_sock_factory is not None:
            self.connect_kwargs["sock"] = self.lab_sock_factory()
        return super().open()


def make_connection(
    lab: HostsClient, host: BaseHost, user: str, sudo_password: str | None, connect_timeout: float, via: str
) -> LabConnection:
    overrides: dict[str, Any] = {"run": {"in_stream": False}, "load_ssh_configs": False}
    if sudo_password is not None:
        overrides["sudo"] = {"password": sudo_password}
    config = Config(overrides=overrides, ssh_config=paramiko.SSHConfig())
    connect_kwargs = {
        "key_filename": str(lab.key_path),
        "look_for_keys": False,
        "allow_agent": False,
        "banner_timeout": connect_timeout,
        "auth_timeout": connect_timeout,
    }
    if via == "sock":
        c = LabConnection(
            host.address, user=user, port=host.port, config=config, connect_kwargs=connect_kwargs,
            connect_timeout=connect_timeout,
        )  # fmt: skip
        c.lab_sock_factory = lambda: lab.sock_for(host, host.port, timeout=connect_timeout)
    elif via == "proxy":
        c = LabConnection(
            host.address, user=user, port=host.port, config=config, connect_kwargs=connect_kwargs,
            connect_timeout=connect_timeout, gateway=lab.proxy_command(host, host.port),
        )  # fmt: skip
    else:
        raise ValueError(f"via must be 'sock' or 'proxy', not {via!r}")
    c.client.load_host_keys(str(lab.known_hosts))
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c
