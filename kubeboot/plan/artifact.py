"""Pure core: an Artifact is one file kubeboot wants on one host (absolute path, bytes, mode, owner)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    path: str  # absolute path on the host
    content: bytes
    mode: int  # e.g. 0o600
    secret: bool = False  # private keys, tokens, kubeconfigs with keys: never shown, only path/size/digest
    owner: str = "root"
    group: str = "root"

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or "/../" in self.path or self.path.endswith("/"):
            raise ValueError(f"artifact path must be an absolute file path: {self.path!r}")
        if self.secret and self.mode & 0o077:
            raise ValueError(f"secret artifact {self.path} must not be readable by group/others (mode {self.mode:o})")

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    def describe(self) -> str:
        """Safe one-line description: never the content of a secret."""
        return f"{self.path} ({len(self.content)} bytes, mode {self.mode:04o}, {self.digest[:19]})"
