"""Shell: the Transport protocol every phase executes through, and its result type.

A transport runs shell commands as root on one host (directly when logged in as root, through sudo
otherwise) and writes files atomically. Nothing else in kubeboot touches a host.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kubeboot.errors import RemoteCommandError

Tracer = Callable[[str], None]


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def stderr_tail(text: str, lines: int = 8) -> str:
    tail = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join(tail)


def command_failed(result: CommandResult, phase: str | None = None, what: str | None = None) -> RemoteCommandError:
    where = f"{result.host}" + (f" [{phase}]" if phase else "")
    shown = what or result.command
    tail = stderr_tail(result.stderr or result.stdout)
    msg = f"{where}: `{shown}` exited {result.exit_code}" + (f":\n{tail}" if tail else "")
    return RemoteCommandError(msg, hint="fix the cause on that host and run again; finished steps are not repeated")


def install_script(path: str, mode: int, owner: str, group: str, tmp: str) -> str:
    """Move an uploaded temp file into place atomically: same-directory temp name, then rename."""
    d = shlex.quote(path.rsplit("/", 1)[0] or "/")
    p = shlex.quote(path)
    staged = shlex.quote(f"{path}.kubeboot-new")
    return (f"mkdir -p {d} && install -m {mode:04o} -o {shlex.quote(owner)} -g {shlex.quote(group)} "
            f"{shlex.quote(tmp)} {staged} && mv -f {staged} {p}")


class Transport(Protocol):
    """One host's connection. `run` executes as root; `put` is atomic with mode and owner."""

    name: str

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            display: str | None = None) -> CommandResult:
        """Run a shell command as root. display replaces the command text in errors and traces."""
        ...

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None: ...

    def put_file(self, path: str, local: str, mode: int) -> None:
        """Copy a (large) local file to the host without reading it into memory; root-owned, atomic."""
        ...

    def get(self, path: str) -> bytes | None:
        """File content, or None if it does not exist."""
        ...

    def get_file(self, path: str, local: str) -> None:
        """Copy a (large) root-readable file from the host to a new local file (mode 0600), streamed."""
        ...

    def close(self) -> None: ...


def close_all(transports: Iterable[Transport]) -> None:
    """Close every connection; a failure to close never masks the outcome of the work done over them."""
    for t in transports:
        try:
            t.close()
        except Exception:  # noqa: BLE001 - closing must never mask the real outcome
            pass
