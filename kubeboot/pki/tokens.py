"""Pure core: kubeadm bootstrap tokens (`[a-z0-9]{6}.[a-z0-9]{16}`), generated and parsed as kubeadm does.

Source: k8s.io/cluster-bootstrap token/util/helpers.go (GenerateBootstrapToken, regexes).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

TOKEN_RE = re.compile(r"\A([a-z0-9]{6})\.([a-z0-9]{16})\Z")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
DEFAULT_TTL = timedelta(hours=24)
# A stored token with less life left than this is replaced rather than handed to a new node.
MIN_REMAINING = timedelta(hours=1)


@dataclass(frozen=True)
class BootstrapToken:
    id: str
    secret: str
    expires: datetime | None  # None: never expires (ttl 0)

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}"

    def __repr__(self) -> str:  # never leak the secret through logs or tracebacks
        return f"BootstrapToken(id={self.id!r}, secret=<redacted>, expires={self.expires!r})"


def random_string(length: int, randbytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """kubeadm's algorithm: random bytes, drop values >= 252 (7*36) to avoid modulo bias, map mod 36."""
    out: list[str] = []
    while len(out) < length:
        for b in randbytes(length * 2):
            if b < 252:
                out.append(ALPHABET[b % 36])
                if len(out) == length:
                    break
    return "".join(out)


def generate_token(now: datetime, ttl: timedelta = DEFAULT_TTL,
                   randbytes: Callable[[int], bytes] = secrets.token_bytes) -> BootstrapToken:
    return BootstrapToken(random_string(6, randbytes), random_string(16, randbytes),
                          None if ttl == timedelta(0) else now + ttl)


def parse_token(text: str) -> BootstrapToken:
    """Parse `<id>.<secret>`; ValueError with a message that does not echo the secret."""
    m = TOKEN_RE.match(text.strip())
    if not m:
        raise ValueError("the token must have the form [a-z0-9]{6}.[a-z0-9]{16}")
    return BootstrapToken(m[1], m[2], None)


def serialize_token(token: BootstrapToken) -> bytes:
    """State-file form: `<id>.<secret> <RFC3339 expiry or never>`."""
    exp = "never" if token.expires is None else token.expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{token} {exp}\n".encode()


def deserialize_token(data: bytes) -> BootstrapToken:
    parts = data.decode().split()
    if len(parts) != 2:
        raise ValueError("token state file must hold '<token> <expiry>'")
    tok = parse_token(parts[0])
    if parts[1] == "never":
        return tok
    expires = datetime.strptime(parts[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return BootstrapToken(tok.id, tok.secret, expires)


def usable(token: BootstrapToken, now: datetime) -> bool:
    return token.expires is None or token.expires - now >= MIN_REMAINING
