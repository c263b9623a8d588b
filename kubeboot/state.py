"""Shell (local disk): the state directory that keeps key material and tokens between runs.

Layout (all below the state dir, directories 0700, private material 0600):
  pki/…            cluster CAs and sa key pair         hosts/<host>/…   per-host leaves and client certs
  tokens/bootstrap the node bootstrap token with its expiry
A run reads everything, lets the pure core decide, and writes back only files whose bytes changed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from kubeboot.errors import StateError
from kubeboot.plan.artifact import Artifact
from kubeboot.pki.tokens import BootstrapToken, deserialize_token, generate_token, serialize_token, usable

TOKEN_FILE = "tokens/bootstrap"
_PUBLIC_SUFFIXES = (".crt", ".pub")


def default_state_dir(inventory: Path, cluster_name: str) -> Path:
    """`.kubeboot/<cluster name>/` next to the inventory."""
    return inventory.resolve().parent / ".kubeboot" / cluster_name


def read_state(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    if not root.is_dir():
        raise StateError(f"state directory {root} is not a directory", hint="pass --state-dir DIR")
    out: dict[str, bytes] = {}
    try:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read state directory {root}: {exc.strerror}") from None
    return out


def write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Write via a temp file in the same directory and rename, so a crash never leaves half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_state(root: Path, stored: Mapping[str, bytes], previous: Mapping[str, bytes]) -> list[str]:
    """Write entries that are new or changed; return their relative paths."""
    changed = [rel for rel, data in stored.items() if previous.get(rel) != data]
    if not changed:
        return []
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        for rel in changed:
            target = root / rel
            for parent in reversed(target.relative_to(root).parents):
                d = root / parent
                if not d.exists():
                    d.mkdir(mode=0o700)
            mode = 0o644 if rel.endswith(_PUBLIC_SUFFIXES) else 0o600
            write_atomic(target, stored[rel], mode)
    except OSError as exc:
        raise StateError(f"cannot write state directory {root}: {exc.strerror}") from None
    return changed


def plan_token(stored: Mapping[str, bytes], now: datetime) -> tuple[BootstrapToken, bool]:
    """Reuse the stored bootstrap token while it has at least an hour left; else make a new one (24 h)."""
    data = stored.get(TOKEN_FILE)
    if data is not None:
        try:
            token = deserialize_token(data)
        except ValueError:
            token = None
        if token is not None and usable(token, now):
            return token, False
    return generate_token(now), True


def token_entry(token: BootstrapToken) -> dict[str, bytes]:
    return {TOKEN_FILE: serialize_token(token)}


def write_files_under(root: Path, artifacts: Iterable[Artifact]) -> list[str]:
    """Place artifacts below root (a node's `/` or a --rootfs), skipping identical ones; return what changed."""
    written = []
    for a in artifacts:
        target = root / a.path.lstrip("/")
        if target.exists() and target.read_bytes() == a.content and (target.stat().st_mode & 0o777) == a.mode:
            continue
        write_atomic(target, a.content, a.mode)
        written.append(a.path)
    return written
