"""Shell: the local transport, so `kubeboot init`/`join` can run on the node itself exactly as kubeadm does."""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from kubeboot.errors import RemoteCommandError
from kubeboot.transport.base import CommandResult, Tracer, command_failed, install_script


class LocalTransport:
    def __init__(self, name: str, trace: Tracer | None = None) -> None:
        self.name = name
        self._trace = trace or (lambda _line: None)
        self._sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            display: str | None = None) -> CommandResult:
        shown = display or command
        self._trace(f"{self.name}$ {shown}")
        t0 = time.monotonic()
        try:
            proc = subprocess.run([*self._sudo, "sh", "-c", command], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteCommandError(f"{self.name}: `{shown}` did not finish within {timeout}s") from None
        result = CommandResult(self.name, shown, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        if check and proc.returncode != 0:
            raise command_failed(result)
        return result

    def put(self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root") -> None:
        fd, tmp = tempfile.mkstemp(prefix="kubeboot-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            self.run(install_script(path, mode, owner, group, tmp), display=f"install {path}")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_file(self, path: str, local: str, mode: int) -> None:
        self.run(install_script(path, mode, "root", "root", local), display=f"install {path}")

    def get(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except PermissionError:
            res = self.run(f"base64 {shlex.quote(path)}", display=f"read {path}")
            return base64.b64decode(res.stdout)

    def get_file(self, path: str, local: str) -> None:
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self.run(f"cat {shlex.quote(path)} > {shlex.quote(local)}", display=f"copy {path} to {local}")

    def close(self) -> None:
        return None
