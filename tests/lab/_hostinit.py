"""PID 1 of one lab host.

Started by the harness as::

    ip netns exec <host-netns> unshare --mount --uts --ipc --pid --fork --mount-proc \
        --propagation private -- python -I -S _hostinit.py <spec.json>

so it already runs inside the host's network, mount, UTS, IPC and PID namespaces.  It
sets the hostname, builds the host's private file tree (overlays + bind mounts), then
starts ``sshd -D -e`` and stays as the namespace's init: it reaps orphans and reacts
to signals sent by the harness from the root namespace:

* SIGUSR1 -- stop sshd (the listener only; open sessions survive, like ``systemctl stop ssh``)
* SIGUSR2 -- start sshd again (no-op if it is running)
* SIGTERM -- kill every process of the host and exit (the harness usually just SIGKILLs us,
  which makes the kernel kill the whole PID namespace)

Standalone on purpose: stdlib only, every module imported *before* the private /root is
mounted (the interpreter may live under the real /root, e.g. pyenv).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import sys
import time
from typing import Any

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
FLAG_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "relatime": MS_RELATIME}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

SSHD = "/usr/sbin/sshd"
CONTROL_SIGNALS = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGCHLD}
sshd_pid: int | None = None
log_fd = 2


def log(msg: str) -> None:
    os.write(log_fd, f"hostinit: {msg}\n".encode())


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype} {data}): {os.strerror(err)}")


def detach_foreign_nsfs() -> None:
    """Drop our copies of /run/netns/* (and other nsfs) mounts.

    The private mount namespace inherited a copy of every netns bind mount on the machine;
    keeping them would pin other labs' namespaces alive until this host dies."""
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in reversed(lines):
        pre, _, post = line.partition(" - ")
        if post.split(" ", 1)[0] == "nsfs":
            target = pre.split(" ")[4].replace("\\040", " ")
            _libc.umount2(target.encode(), MNT_DETACH)


def mount_cgroups(mounts: list[dict[str, str]]) -> None:
    """Recreate the machine's cgroup mounts (``ip netns exec`` gave us a fresh, empty sysfs)."""
    for m in mounts:
        os.makedirs(m["target"], exist_ok=True)
        flags = 0
        for opt in m["options"].split(","):
            flags |= FLAG_OPTS.get(opt, 0)
        data = ",".join(o for o in m["super"].split(",") if o not in ("rw", "ro")) or None
        try:
            mount(m["source"], m["target"], m["fstype"], flags, data)
        except OSError as e:  # not fatal: only container runtimes inside the host need them
            log(f"warning: {e}")


def build_tree(spec: dict[str, Any]) -> None:
    for ov in spec["overlays"]:
        data = f"lowerdir={ov['target']},upperdir={ov['upper']},workdir={ov['work']}"
        mount("kblab-overlay", ov["target"], "overlay", 0, data)
    mount("kblab-run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/run/lock", exist_ok=True)
    os.chmod("/run/lock", 0o1777)
    # the harness area first: its source (under the lab dir in /tmp) disappears with the /tmp bind
    binds = [spec["harness"]] + spec["binds"]
    for b in binds:
        os.makedirs(b["target"], exist_ok=True)
        mount(b["source"], b["target"], None, MS_BIND | MS_REC)


def start_sshd() -> None:
    global sshd_pid
    if sshd_pid is not None:
        return
    sshd_pid = os.posix_spawn(
        SSHD,
        [SSHD, "-D", "-e"],
        {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        },
        file_actions=[(os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)],
        setsid=True,
        setsigmask=(),  # our blocked set is ours: sshd must see its signals
        setsigdef=CONTROL_SIGNALS,
    )
    log(f"sshd started (pid {sshd_pid} in the host)")


def stop_sshd() -> None:
    global sshd_pid
    if sshd_pid is None:
        return
    pid, sshd_pid = sshd_pid, None
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    log("sshd stopped")


def reap() -> None:
    """Reap every child that has exited (orphans of the host end up with us)."""
    global sshd_pid
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == sshd_pid:
            log(f"sshd exited ({os.waitstatus_to_exitcode(status)}) at {time.time():.3f}")
            sshd_pid = None


def kill_all_and_exit() -> None:
    # kill(-1) from PID 1 of a PID namespace signals every other process in it
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os._exit(0)


def serve() -> None:
    """The control loop: signals are blocked and taken one at a time with sigwaitinfo, so a
    stop and a start sent back to back are handled in order and never interleave (Python
    signal handlers could nest, and a start running inside an unfinished stop was lost)."""
    start_sshd()
    while True:
        info = signal.sigwaitinfo(CONTROL_SIGNALS)
        if info.si_signo == signal.SIGUSR1:
            stop_sshd()
        elif info.si_signo == signal.SIGUSR2:
            start_sshd()
        elif info.si_signo == signal.SIGTERM:
            kill_all_and_exit()
        reap()


def main() -> None:
    global log_fd
    with open(sys.argv[1]) as f:
        spec: dict[str, Any] = json.load(f)
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    socket.sethostname(spec["hostname"])
    detach_foreign_nsfs()
    mount_cgroups(spec["cgroups"])
    build_tree(spec)
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    # Blocked first (a signal arriving in between stays pending for serve()), and handlers as
    # well: the kernel drops a signal sent from the parent namespace to a namespace's init
    # that neither handles nor blocks it.
    signal.pthread_sigmask(signal.SIG_BLOCK, CONTROL_SIGNALS)
    for sig in CONTROL_SIGNALS:
        signal.signal(sig, lambda _s, _f: None)
    serve()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 -- make the failure visible in the host log, then die
        log(f"fatal: {type(e).__name__}: {e}")
        sys.exit(1)
