"""Each sandbox host's own cgroup in every mounted hierarchy (shell): found, made, probed, emptied and removed.

On a machine without systemd as PID 1 (cgroup v1 hybrid here), systemd-nspawn ``--keep-unit`` nests a host below
the cgroup of the process that starts it, so every host is started from its own cgroup ``<machine>`` created below
the creating process's cgroup in every hierarchy (notes: systemd-lab-hosts.md §3b).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .system import SAFE_ENV, SandboxError


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the path of this process's cgroup in it."""

    mount: str
    path: str
    controllers: str  # "memory", "name=systemd", "" for cgroup2

    def dir_for(self, leaf: str) -> str:
        return os.path.join(self.mount, self.path.lstrip("/"), leaf)


def hierarchies(pid: int | str = "self") -> list[Hierarchy]:
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


def make(h: Hierarchy, leaf: str) -> str:
    """Create (or reuse) cgroup ``leaf`` below this process's cgroup in ``h``; its directory."""
    d = h.dir_for(leaf)
    os.makedirs(d, exist_ok=True)
    cpus = os.path.join(d, "cpuset.cpus")
    if os.path.exists(cpus) and not Path(cpus).read_text().strip():
        # a new v1 cpuset is empty: nothing can run in it until it gets the parent's cpus and mems
        parent = os.path.dirname(d)
        for f in ("cpuset.cpus", "cpuset.mems"):
            Path(d, f).write_text(Path(parent, f).read_text())
    return d


def pids_in(dirs: Iterable[str]) -> list[int]:
    """Every process in those cgroups or below them."""
    out: set[int] = set()
    for d in dirs:
        for dirpath, _, files in os.walk(d):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    out.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return sorted(out)


def thaw(dirs: Iterable[str]) -> None:
    """Thaw frozen cgroups (v1 freezer, v2 cgroup.freeze): a frozen process neither shuts down nor dies of
    SIGKILL until thawed."""
    for d in dirs:
        with contextlib.suppress(OSError):
            state = Path(d, "freezer.state")
            if state.exists() and state.read_text().strip() != "THAWED":
                state.write_text("THAWED")
            freeze = Path(d, "cgroup.freeze")
            if freeze.exists() and freeze.read_text().strip() != "0":
                freeze.write_text("0")


def remove(d: str, timeout: float = 5.0) -> None:
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
            raise SandboxError(f"cgroup not removable after {timeout}s: {'; '.join(busy[:3])}")
        time.sleep(0.02)


def find(match: Callable[[str], bool]) -> list[str]:
    """Cgroup directories anywhere in any hierarchy whose name ``match``es (not descending into them)."""
    out = []
    for hier in hierarchies():
        for dirpath, dirnames, _ in os.walk(hier.mount):
            hits = [d for d in dirnames if match(d)]
            out += [os.path.join(dirpath, d) for d in hits]
            dirnames[:] = [d for d in dirnames if d not in hits]
    return out


def probe(prefix: str = "kubeboot-") -> str | None:
    """Why hosts cannot get their own cgroup in every hierarchy here (None: they can).  Moves a
    ``sleep`` into a probe cgroup ``<prefix>probe-<pid>`` in each hierarchy and back out."""
    leaf = f"{prefix}probe-{os.getpid()}"
    hiers = hierarchies()
    if not hiers:
        return "no cgroup hierarchy is mounted"
    made: list[str] = []
    p = subprocess.Popen(["sleep", "30"], env=SAFE_ENV)
    try:
        for h in hiers:
            d = make(h, leaf)
            made.append(d)
            Path(d, "cgroup.procs").write_text(str(p.pid))
        got = Path(f"/proc/{p.pid}/cgroup").read_text()
        if got.count(leaf) != len(hiers):
            return f"a process moved into {leaf} is not there in every hierarchy: {got!r}"
    except OSError as e:
        return f"cannot create or enter a cgroup ({e})"
    finally:
        p.kill()
        p.wait()
        for d in reversed(made):
            with contextlib.suppress(SandboxError):
                remove(d)
    return None
