"""Shared fixtures: a fixed clock, a fast key generator and the example inventory."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kubeboot.config.model import KeyAlgorithm
from kubeboot.pki.keys import PrivateKey, generate_key

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "inventory.example.yaml"
FIXED_NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)

_POOL_SIZE = 48  # more than one 3-control-plane render needs, so keys within a render are all distinct
_pools: dict[KeyAlgorithm, list[PrivateKey]] = {}


class KeyPool:
    """Hands out pre-generated keys in a cycle: RSA generation dominates test time otherwise."""

    def __init__(self) -> None:
        self._iters: dict[KeyAlgorithm, Iterator[PrivateKey]] = {}
        self.calls = 0

    def __call__(self, alg: KeyAlgorithm) -> PrivateKey:
        self.calls += 1
        if alg not in _pools:
            _pools[alg] = [generate_key(alg) for _ in range(_POOL_SIZE)]
        it = self._iters.setdefault(alg, itertools.cycle(_pools[alg]))
        return next(it)


@pytest.fixture
def keygen() -> KeyPool:
    return KeyPool()


@pytest.fixture
def now() -> datetime:
    return FIXED_NOW


@pytest.fixture
def example_text() -> str:
    return EXAMPLE.read_text()


try:  # the lab harness (tests/lab) contributes its fixtures (lab, lab_factory) to every test
    from tests.lab.fixtures import *  # noqa: F401,F403
except ImportError:  # pragma: no cover - only while the lab package is absent
    pass


def skip_unless(path: str | None, reason: str) -> Callable[[object], object]:
    return pytest.mark.skipif(path is None, reason=reason)
