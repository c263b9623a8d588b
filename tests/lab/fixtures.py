"""pytest fixtures for the multi-host lab.  Enable with ``pytest_plugins = ["tests.lab.fixtures"]``
(or ``pytest -p tests.lab.fixtures``).

* ``lab`` (module scope): a running :class:`~tests.lab.lab.Lab`, 5 hosts unless the module says
  ``pytestmark = pytest.mark.lab(hosts=3, overlay=True)``.
* ``lab_factory`` (session scope): ``lab_factory(n=5, overlay=False)`` -> a new Lab; every lab it
  made is torn down at the end of the session (or earlier with ``lab_factory.down(lab)``).
* ``lab_requirements`` (session scope): skips with the reason when the machine cannot run a lab.
* ``systemd_lab`` (module scope): a running :class:`~tests.lab.systemd.SystemdLab` (hosts with real
  systemd as PID 1), 3 hosts unless the module says
  ``pytestmark = pytest.mark.systemd_lab(hosts=2, ro_binds=[("/src", "/dst")])``.
* ``systemd_lab_factory`` (session scope): ``systemd_lab_factory(n=3, ro_binds=())`` -> a new
  SystemdLab, all torn down at the end of the session (or with ``systemd_lab_factory.down(lab)``).
* ``systemd_lab_requirements`` (session scope): skips naming what is missing and how to get it.

Labs made here are named ``pt<pid>-<k>`` (light) / ``ps<pid>-<k>`` (systemd) and marked ephemeral;
labs of dead pytest processes are removed at session start.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator, Sequence

import pytest

from . import systemd
from .lab import Lab, _alive, prerequisites, teardown
from .systemd import SystemdLab

DEFAULT_HOSTS = 5
DEFAULT_SYSTEMD_HOSTS = 3
_problems: list[str] | None = None
_systemd_problems: list[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab(hosts=5, overlay=False): needs the multi-host lab (tests/lab)")
    config.addinivalue_line(
        "markers", "systemd_lab(hosts=3, ro_binds=()): needs the systemd-nspawn lab hosts (tests/lab/systemd.py)"
    )


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


# ---------------------------------------------------------------------------------------------
# systemd hosts


def systemd_lab_skip_reason() -> str | None:
    """Why systemd lab hosts cannot run on this machine (None: they can).  Cached per process."""
    global _systemd_problems
    if _systemd_problems is None:
        _systemd_problems = systemd.prerequisites()
    return "systemd lab unavailable: " + "; ".join(_systemd_problems) if _systemd_problems else None


def _remove_stale_systemd_labs() -> None:
    for name in SystemdLab.list_labs():
        with contextlib.suppress(Exception):
            lab = SystemdLab.attach(name)
            if lab.ephemeral and lab.owner_pid != os.getpid() and not _alive(lab.owner_pid):
                systemd.teardown(name, lab.hosts, graceful=False)


class SystemdLabFactory:
    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.labs: list[SystemdLab] = []

    def __call__(
        self, n: int = DEFAULT_SYSTEMD_HOSTS, ro_binds: Sequence[tuple[str, str]] = (), timeout: float = 120.0
    ) -> SystemdLab:
        lab = SystemdLab(f"ps{os.getpid()}-{next(self._seq)}", n, ro_binds=ro_binds, ephemeral=True)
        self.labs.append(lab)
        return lab.up(timeout=timeout)

    def down(self, lab: SystemdLab) -> None:
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
            raise RuntimeError("systemd lab teardown failed: " + "; ".join(errors))


@pytest.fixture(scope="session")
def systemd_lab_requirements() -> None:
    reason = systemd_lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def systemd_lab_factory(systemd_lab_requirements: None) -> Iterator[SystemdLabFactory]:
    _remove_stale_systemd_labs()
    factory = SystemdLabFactory()
    try:
        yield factory
    finally:
        factory.down_all()


@pytest.fixture(scope="module")
def systemd_lab(request: pytest.FixtureRequest, systemd_lab_factory: SystemdLabFactory) -> Iterator[SystemdLab]:
    marker = request.node.get_closest_marker("systemd_lab")
    kwargs = marker.kwargs if marker else {}
    the_lab = systemd_lab_factory(
        n=int(kwargs.get("hosts", DEFAULT_SYSTEMD_HOSTS)),
        ro_binds=[(str(s), str(d)) for s, d in kwargs.get("ro_binds", ())],
    )
    try:
        yield the_lab
    finally:
        systemd_lab_factory.down(the_lab)
