"""Shell: the only module that writes to the terminal. `[phase] host: message` lines, redacted.

Secrets (bootstrap tokens, certificate keys, PEM private keys) are masked in everything that passes through
here, so a mistake elsewhere cannot print one. The join command is the one place a token is shown on
purpose, and it goes through `secret_result`, which the caller must ask for explicitly.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

_TOKEN = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b")
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
_HEX_KEY = re.compile(r"\b[0-9a-f]{64}\b")
_B64_KEY = re.compile(r"(client-key-data|token):\s*[A-Za-z0-9+/=._-]{20,}")


def redact(text: str) -> str:
    """Mask tokens (keep the public id), private keys, certificate keys and key/token fields of kubeconfigs."""
    text = _PEM_KEY.sub("<redacted private key>", text)
    text = _TOKEN.sub(r"\1.<redacted>", text)
    text = _B64_KEY.sub(r"\1: <redacted>", text)
    return _HEX_KEY.sub("<redacted 64-hex>", text)


class Reporter:
    """Progress lines on stderr (so stdout stays machine-readable) with elapsed time per phase. On a terminal
    a live spinner shows the phase in progress; in logs and CI only the plain lines appear."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self._phase_started: dict[str, float] = {}
        self._status: Any = None
        self._console: Any = None
        if not quiet and self.stream.isatty():
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def _emit(self, line: str) -> None:
        if self.quiet:
            return
        text = redact(line)
        if self._console is not None:
            self._console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def phase_start(self, phase: str) -> None:
        self._phase_started[phase] = time.monotonic()
        if self._console is not None:
            if self._status is not None:
                self._status.stop()
            from rich.markup import escape

            self._status = self._console.status(escape(f"[{phase}] working…"))
            self._status.start()

    def phase_done(self, phase: str, summary: str) -> None:
        t0 = self._phase_started.pop(phase, self.started)
        if self._status is not None:
            self._status.stop()
            self._status = None
        self._emit(f"[{phase}] {summary} ({time.monotonic() - t0:.2f}s)")

    def info(self, phase: str, host: str | None, message: str) -> None:
        self._emit(f"[{phase}] {host}: {message}" if host else f"[{phase}] {message}")

    def warn(self, phase: str, host: str | None, message: str) -> None:
        self.info(phase, host, f"WARNING: {message}")

    def done(self, summary: str) -> None:
        self._emit(f"[done] {summary} in {time.monotonic() - self.started:.2f}s")


def error(message: str, hint: str | None = None, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    print(redact(f"error: {message}"), file=out)
    if hint:
        print(redact(f"hint: {hint}"), file=out)


def result(text: str) -> None:
    """Ordinary command output on stdout (still redacted)."""
    print(redact(text))


def secret_result(text: str) -> None:
    """Output the user asked for that legitimately contains a secret (a join command). Not redacted."""
    print(text)
