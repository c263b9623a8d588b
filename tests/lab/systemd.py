"""A lab of N hosts whose PID 1 is real systemd, booted with systemd-nspawn, reachable over real SSH.

The machinery is the product's (:mod:`kubeboot.sandbox.hosts`, the same code ``kubeboot sandbox`` runs); this
module gives it the test lab's names and adds the fault helpers tests use:

* hosts ``h1..hN`` = ``10.200.0.11..``, namespaces ``kbs-<lab>-ctl`` / ``kbs-<lab>-hN``, lab dir
  ``/tmp/kubeboot-systemd-lab-<lab>`` (on disk here: ``/tmp`` is the root ext4, not a tmpfs);
* the lab users kbuser (password sudo) and nosudo get the workstation key;
* units (``unit_state``, ``wait_unit``, ``start_unit``, ``stop_unit``, ``kill_main_pid``,
  ``stop_kubelet_and_pods``), sshd (``stop_sshd``, ``start_sshd``), ``freeze``/``thaw``.

Same client surface as the light :class:`~tests.lab.lab.Lab`, so tests and kubeboot can use either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from kubeboot.sandbox import cgroups as _cgroups
from kubeboot.sandbox import hosts as _hosts
from kubeboot.sandbox.checks import machine_problems
from kubeboot.sandbox.hosts import LAUNCHER as LAUNCHER
from kubeboot.sandbox.hosts import NSPAWN as NSPAWN
from kubeboot.sandbox.hosts import NSPAWN_RUN_DIR as NSPAWN_RUN_DIR
from kubeboot.sandbox.hosts import PREPARE_POWEROFF as PREPARE_POWEROFF
from kubeboot.sandbox.hosts import STOP_KUBELET_AND_PODS
from kubeboot.sandbox.hosts import SystemdHost as SystemdHost
from kubeboot.sandbox.hosts import SystemdHosts

from .common import KBUSER, NOSUDO_USER, BaseHost, LabError, all_pids, comm, link_inode

# re-exported: older callers import the cgroup helpers from here
Hierarchy = _cgroups.Hierarchy
cgroup_hierarchies = _cgroups.hierarchies
make_cgroup = _cgroups.make
remove_cgroup = _cgroups.remove
cgroup_probe = _cgroups.probe

LAB_DIR_PREFIX = "/tmp/kubeboot-systemd-lab-"
NETNS_PREFIX = "kbs-"
#: ``systemctl show`` properties :meth:`SystemdLab.unit_state` returns.
UNIT_PROPERTIES = ("ActiveState", "SubState", "MainPID", "ActiveEnterTimestamp", "NRestarts")


def prerequisites() -> list[str]:
    """Reasons a systemd lab cannot run here (empty list: it can), each with its fix."""
    return machine_problems()


class SystemdLab(SystemdHosts):
    """N systemd hosts ``h1..hN`` = ``10.200.0.11..`` behind the controller namespace.

    ``with SystemdLab("demo", 3) as lab: ...`` starts and always tears down; ``SystemdLab.attach(name)``
    re-opens a lab another process started.  ``ro_binds`` = ``[(source on the machine, target in
    every host)]``, read-only (e.g. an images directory).  The keyword options of
    :class:`~kubeboot.sandbox.hosts.SystemdHosts` (``names``, ``state_dir``, ``netns_prefix``, ``subnet``,
    ``users``) override the lab defaults."""

    what = "systemd lab"
    cli = "tests.lab.systemd"
    dir_prefix = LAB_DIR_PREFIX
    netns_prefix = NETNS_PREFIX
    default_subnet = "10.200.0.0/24"
    default_users = (KBUSER, NOSUDO_USER)

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


def _lab_for(name: str, hosts: Sequence[SystemdHost], lab: SystemdLab | None = None) -> SystemdLab:
    if lab is not None:
        return lab
    try:
        return SystemdLab.attach(name)
    except LabError:
        blank = SystemdLab(name, max(1, len(hosts)))
        blank.hosts = list(hosts)
        return blank


def teardown(
    name: str,
    hosts: Sequence[SystemdHost] = (),
    timeout: float = 30.0,
    graceful: bool = True,
    lab: SystemdHosts | None = None,
) -> list[str]:
    """Remove everything of systemd lab ``name`` (from its state file, or whatever remains of it); returns what
    was removed (for reports)."""
    target: SystemdHosts = lab if lab is not None else _lab_for(name, hosts)
    if hosts and not target.hosts:
        target.hosts = list(hosts)
    return _hosts.teardown_hosts(target, timeout=timeout, graceful=graceful)


def leftovers(name: str, hosts: Sequence[SystemdHost]) -> list[str]:
    """Everything of lab ``name`` still on the machine (empty after a clean teardown): namespaces,
    mounts, cgroups in any hierarchy, processes, nspawn files, the lab dir."""
    lab = SystemdLab(name, max(1, len(hosts)))
    lab.hosts = list(hosts)
    return _hosts.leftovers_of(lab)


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
