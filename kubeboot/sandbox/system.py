"""Machine-side helpers of the sandbox host layer (shell): subprocesses with a fixed environment, processes
seen through /proc, files with owner and mode, locks, waiting, and the one error type of the host machinery.

Used by :mod:`kubeboot.sandbox.hosts` (systemd-nspawn hosts) and by the light test lab (tests/lab/lab.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

#: Environment of every program the host machinery runs (no inherited proxies, locales or PATH surprises).
SAFE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}


class SandboxError(RuntimeError):
    """Sandbox hosts could not be started, reached, changed or removed."""


def valid_name(name: str) -> bool:
    """A lab or sandbox name: 1-40 characters of ``[A-Za-z0-9_-]`` (it becomes part of paths and namespaces)."""
    return bool(name) and all(c.isalnum() or c in "-_" for c in name) and len(name) <= 40


def run(argv: Sequence[str], input: str | None = None, check: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``argv`` with :data:`SAFE_ENV`, output captured; :class:`SandboxError` with stderr on failure."""
    p = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, env=SAFE_ENV, check=False, timeout=timeout
    )
    if check and p.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


# ---------------------------------------------------------------------------------------------
# processes


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def ancestors() -> set[int]:
    """This process and its ancestors (never to be killed by a teardown)."""
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
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


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def mounts() -> list[str]:
    """Mount points of this mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def mounts_under(path: Path | str) -> list[str]:
    """Mount points at or below ``path``."""
    top = str(path).rstrip("/")
    return [m for m in mounts() if m == top or m.startswith(top + "/")]


# ---------------------------------------------------------------------------------------------
# files


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive flock on ``path`` (concurrent processes share caches below it)."""
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
    """Poll ``cond()`` until it returns something truthy (returned); :class:`SandboxError` naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SandboxError(f"{what}: not after {timeout}s")
        time.sleep(interval)
