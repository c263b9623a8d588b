"""Fixtures for tests against real programs: the example inventory rendered once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeboot.offline import render, write_tree
from tests.conftest import EXAMPLE, FIXED_NOW, KeyPool


@dataclass(frozen=True)
class Rendered:
    root: Path  # DIR of `kubeboot render -o DIR`
    control_planes: tuple[str, ...]
    workers: tuple[str, ...]

    def path(self, host: str, abs_path: str) -> Path:
        return self.root / host / abs_path.lstrip("/")


def render_inventory(text: str, tmp: Path) -> Rendered:
    tmp.mkdir(parents=True, exist_ok=True)
    inv = tmp / "inventory.yaml"
    inv.write_text(text)
    result = render(inv, tmp / "state", now=None, keygen=KeyPool())
    write_tree(tmp / "out", result.hosts)
    cfg = result.config
    return Rendered(tmp / "out", tuple(h.name for h in cfg.control_planes),
                    tuple(h.name for h in cfg.hosts if h.is_worker and not h.is_control_plane))


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    tmp = tmp_path_factory.mktemp("render")
    yield render_inventory(EXAMPLE.read_text(), tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (run tests/setup.sh)")
    return path


__all__ = ["FIXED_NOW", "Rendered", "need", "render_inventory"]
