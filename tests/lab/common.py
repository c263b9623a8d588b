"""What both lab kinds share, from the product (kubeboot.sandbox: one code path with ``kubeboot sandbox``): the
lab network (a bridge inside a controller network namespace, one namespace per host, nothing in the root
namespace), the users and the workstation key every host trusts, the client files (known_hosts, ssh_config) and
the ways in (sockets created inside the controller namespace, a ProxyCommand, fabric connections with strict host
keys).

:class:`~tests.lab.lab.Lab` (light hosts: namespaces + sshd) and
:class:`~tests.lab.systemd.SystemdLab` (systemd-nspawn hosts with real systemd) both build on
:class:`LabClient` (= :class:`kubeboot.sandbox.client.HostsClient`), so tests and kubeboot can use either.
This module keeps the names the tests import.
"""

from __future__ import annotations

from kubeboot.sandbox.client import SSH_PORT as SSH_PORT
from kubeboot.sandbox.client import BaseHost as BaseHost
from kubeboot.sandbox.client import HostsClient
from kubeboot.sandbox.net import CLONE_NEWNET as CLONE_NEWNET
from kubeboot.sandbox.net import MAX_HOSTS as MAX_HOSTS
from kubeboot.sandbox.net import Subnet
from kubeboot.sandbox.net import ip_batch as ip_batch
from kubeboot.sandbox.net import link_inode as link_inode
from kubeboot.sandbox.net import netns_names
from kubeboot.sandbox.net import netns_pids as netns_pids
from kubeboot.sandbox.net import netns_socket as netns_socket
from kubeboot.sandbox.net import ns_inode as ns_inode
from kubeboot.sandbox.net import resolv_conf
from kubeboot.sandbox.rootfs import KBUSER as KBUSER
from kubeboot.sandbox.rootfs import KBUSER_PASSWORD as KBUSER_PASSWORD
from kubeboot.sandbox.rootfs import NOSUDO_PASSWORD as NOSUDO_PASSWORD
from kubeboot.sandbox.rootfs import NOSUDO_USER as NOSUDO_USER
from kubeboot.sandbox.rootfs import PASSWORD_HASHES as PASSWORD_HASHES
from kubeboot.sandbox.rootfs import USER_IDS as USER_IDS
from kubeboot.sandbox.system import SAFE_ENV as SAFE_ENV
from kubeboot.sandbox.system import SandboxError
from kubeboot.sandbox.system import alive as alive
from kubeboot.sandbox.system import all_pids as all_pids
from kubeboot.sandbox.system import ancestors as ancestors
from kubeboot.sandbox.system import children as children
from kubeboot.sandbox.system import comm as comm
from kubeboot.sandbox.system import gen_ed25519 as gen_ed25519
from kubeboot.sandbox.system import locked as locked
from kubeboot.sandbox.system import mkdir as mkdir
from kubeboot.sandbox.system import run as run
from kubeboot.sandbox.system import valid_name
from kubeboot.sandbox.system import wait_until as wait_until
from kubeboot.sandbox.system import write as write

#: The test labs' network: 10.200.0.0/24, gateway .1, host hN = .(10+N).
_NET = Subnet("10.200.0.0/24")
SUBNET = "10.200.0"
PREFIX_LEN = _NET.prefix_len
GATEWAY = _NET.gateway
RESOLV_CONF = resolv_conf(GATEWAY)

LabError = SandboxError
valid_lab_name = valid_name


class LabClient(HostsClient):
    """The test labs' client half: the product's, with the lab users (kbuser, nosudo) enabled by default."""

    default_users = (KBUSER, NOSUDO_USER)


def host_address(index: int) -> str:
    return _NET.host(index)


def lab_netns_names(prefix: str) -> list[str]:
    """The lab's namespaces in /run/netns: ``<prefix>ctl`` and ``<prefix><host>`` (nothing else)."""
    return netns_names(prefix)
