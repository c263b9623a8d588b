"""pytest fixtures for the multi-host lab.  Enable with ``pytest_plugins = ["tests.lab.fixtures"]``
(or ``pytest -p tests.lab.fixtures``).

* ``lab`` (module scope): a running :class:`~tests.lab.lab.Lab`, 5 hosts unless the module says
  ``pytestmark = pytest.mark.lab(hosts=3, overlay=True)``.
* ``lab_factory`` (session scope): ``lab_factory(n=5, overlay=False)`` -> a new Lab; every lab it
  made is torn down at the end of the session (or earlier with ``lab_factory.down(lab)``).
* ``lab_requirements`` (session scope): skips with the reason when the machine cannot run a lab.

Labs made here are named ``pt<pid>-<k>`` and marked ephemeral; labs of dead pytest processes
are removed at session start.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator

import pytest

from .lab import Lab, _alive, prerequisites, teardown

DEFAULT_HOSTS = 5
_problems: list[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab(hosts=5, overlay=False): needs the multi-host lab (tests/lab)")


def lab_skip_reason() -> str | None:
    """Why a lab cannot run on this machine (None: it can).  Cached per process."""
    global _problems
    if _problems is None:
        _problems = prerequisites()
    return "lab unavailable: " + "; ".join(_problems) if _problems else None


def _remove_stale_labs() -> None:
    for name in Lab.list_labs():
        with contextlib.suppress(Exception):
            lab = Lab.attach(name)
            if lab.ephemeral and lab.owner_pid != os.getpid() and not _alive(lab.owner_pid):
                teardown(name, lab.hosts)


class LabFactory:
    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.labs: list[Lab] = []

    def __call__(self, n: int = DEFAULT_HOSTS, overlay: bool = False, timeout: float = 30.0) -> Lab:
        lab = Lab(f"pt{os.getpid()}-{next(self._seq)}", n, overlay=overlay, ephemeral=True)
        self.labs.append(lab)
        return lab.up(timeout=timeout)

    def down(self, lab: Lab) -> None:
        lab.down()
        if lab in self.labs:
            self.labs.remove(lab)

    def down_all(self) -> None:
        errors = []
        for lab in reversed(self.labs):
            try:
                lab.down()
            except Exception as e:  # keep tearing down the others
                errors.append(f"{lab.name}: {e}")
        self.labs.clear()
        if errors:
            raise RuntimeError("lab teardown failed: " + "; ".join(errors))


@pytest.fixture(scope="session")
def lab_requirements() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_factory(lab_requirements: None) -> Iterator[LabFactory]:
    _remove_stale_labs()
    factory = LabFactory()
    try:
        yield factory
    finally:
        factory.down_all()


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, lab_factory: LabFactory) -> Iterator[Lab]:
    marker = request.node.get_closest_marker("lab")
    kwargs = marker.kwargs if marker else {}
    the_lab = lab_factory(n=int(kwargs.get("hosts", DEFAULT_HOSTS)), overlay=bool(kwargs.get("overlay", False)))
    try:
        yield the_lab
    finally:
        lab_factory.down(the_lab)
