"""Lab hosts that look like Vagrant boxes to kubeboot: a ``vagrant`` user with passwordless sudo and a key of
the lab's own, reached through a client config in exactly the shape ``vagrant ssh-config`` prints.

Works on both lab kinds (:class:`~tests.lab.Lab` and :class:`~tests.lab.SystemdLab`): everything is done as
root inside the host through ``run_in``, with the tools every lab host has (useradd, openssl).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .common import gen_ed25519, locked, write

VAGRANT_USER = "vagrant"
VAGRANT_PASSWORD = "vagrant"  # a box's well-known password; sshd here allows keys only (PasswordAuthentication no)


def vagrant_key(lab: Any) -> Path:
    """The lab's private key for the ``vagrant`` user (made once per lab, like Vagrant's per-machine key)."""
    path: Path = lab.dir / "keys" / "vagrant_ed25519"
    with locked(lab.dir / "keys" / ".vagrant.lock"):
        if not path.exists():
            priv, pub = gen_ed25519(f"vagrant@kubeboot-lab-{lab.name}")
            write(path, priv, 0o600)
            write(path.with_suffix(".pub"), pub + "\n", 0o644)
    return path


def add_vagrant_user(lab: Any, host: str) -> None:
    """Give ``host`` a ``vagrant`` user as a Vagrant box has one: password sudo without a password
    (/etc/sudoers.d/vagrant, NOPASSWD:ALL) and :func:`vagrant_key` in ~vagrant/.ssh/authorized_keys. Idempotent."""
    pub = vagrant_key(lab).with_suffix(".pub").read_text().strip()
    # A password, not a locked account: sshd without PAM refuses even key logins to a locked ('!') account.
    script = f"""
set -e
if ! id -u {VAGRANT_USER} >/dev/null 2>&1; then
  useradd -m -U -s /bin/bash -p "$(openssl passwd -6 -salt vagrantlab {VAGRANT_PASSWORD})" {VAGRANT_USER}
fi
home=$(getent passwd {VAGRANT_USER} | cut -d: -f6)
install -d -m 700 -o {VAGRANT_USER} -g {VAGRANT_USER} "$home/.ssh"
printf '%s\\n' {shlex.quote(pub)} > "$home/.ssh/authorized_keys"
chown {VAGRANT_USER}:{VAGRANT_USER} "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"
install -d -m 750 /etc/sudoers.d
printf '%s\\n' '{VAGRANT_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
visudo -cf /etc/sudoers.d/vagrant >/dev/null
"""
    lab.sh_in(host, script)


def vagrant_ssh_config(lab: Any, hosts: list[str], key: Path) -> str:
    """Client config text in exactly the format ``vagrant ssh-config`` prints, one block per host. Vagrant
    points HostName at 127.0.0.1 and a forwarded port; here it is the lab host's address, port 22. (Lab
    addresses are reachable only through the lab's ProxyCommand: callers add that, keyed by address.)"""
    blocks = []
    for name in hosts:
        h = lab.host(name)
        blocks.append(
            f"Host {h.name}\n"
            f"  HostName {h.address}\n"
            f"  User {VAGRANT_USER}\n"
            f"  Port 22\n"
            f"  UserKnownHostsFile /dev/null\n"
            f"  StrictHostKeyChecking no\n"
            f"  PasswordAuthentication no\n"
            f"  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n"
            f"  LogLevel FATAL\n"
            f"  PubkeyAcceptedKeyTypes +ssh-rsa\n"
            f"  HostKeyAlgorithms +ssh-rsa\n"
        )
    return "\n".join(blocks) + "\n"
