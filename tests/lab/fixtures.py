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
from typing import Any, Callable, Generic, Iterator, Self, Sequence, TypeVar

import pytest

from . import systemd
from .common import LabClient
from .lab import Lab, _alive, prerequisites, teardown
from .systemd import SystemdLab

DEFAULT_HOSTS = 5
DEFAULT_SYSTEMD_HOSTS = 3
_problems: dict[str, list[str]] = {}

L = TypeVar("L", bound=LabClient)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab(hosts=5, overlay=False): needs the multi-host lab (tests/lab)")
    config.addinivalue_line(
        "markers", "systemd_lab(hosts=3, ro_binds=()): needs the systemd-nspawn lab hosts (tests/lab/systemd.py)"
    )
    config.addinivalue_line(
        "markers",
        "apt_versions(*versions): the apt_repo fixture's Kubernetes versions, primary first (tests/lab/aptrepo.py)",
    )


def _skip_reason(what: str, prerequisites: Callable[[], list[str]]) -> str | None:
    if what not in _problems:
        _problems[what] = prerequisites()
    return f"{what} unavailable: " + "; ".join(_problems[what]) if _problems[what] else None


def lab_skip_reason() -> str | None:
    """Why a lab cannot run on this machine (None: it can).  Cached per process."""
    return _skip_reason("lab", prerequisites)


def systemd_lab_skip_reason() -> str | None:
    """Why systemd lab hosts cannot run on this machine (None: they can).  Cached per process."""
    return _skip_reason("systemd lab", systemd.prerequisites)


class _Factory(Generic[L]):
    """Makes ephemeral labs of one kind named ``<prefix><pid>-<k>`` and tears them all down at the end."""

    lab_class: type[L]
    prefix: str

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.labs: list[L] = []

    def _next_name(self) -> str:
        return f"{self.prefix}{os.getpid()}-{next(self._seq)}"

    def _keep(self, lab: L) -> L:
        """Register a new lab (before it starts: a failed start is torn down with the rest)."""
        self.labs.append(lab)
        return lab

    def _remove_stale(self) -> None:
        """Remove the ephemeral labs of dead processes (a killed pytest session)."""
        for name in self.lab_class.list_labs():
            with contextlib.suppress(Exception):
                lab = self.lab_class.attach(name)
                if lab.ephemeral and lab.owner_pid != os.getpid() and not _alive(lab.owner_pid):
                    self._teardown_stale(lab)

    def _teardown_stale(self, lab: L) -> None:
        raise NotImplementedError

    def down(self, lab: L) -> None:
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
            raise RuntimeError(f"{self.lab_class.what} teardown failed: " + "; ".join(errors))

    def session(self) -> Iterator[Self]:
        """The body of a session-scoped factory fixture (stale labs removed first)."""
        self._remove_stale()
        try:
            yield self
        finally:
            self.down_all()

    def scoped(self, lab: L) -> Iterator[L]:
        """The body of a module-scoped lab fixture: ``lab``, torn down after the module."""
        try:
            yield lab
        finally:
            self.down(lab)


class LabFactory(_Factory[Lab]):
    lab_class = Lab
    prefix = "pt"

    def __call__(self, n: int = DEFAULT_HOSTS, overlay: bool = False, timeout: float = 30.0) -> Lab:
        return self._keep(Lab(self._next_name(), n, overlay=overlay, ephemeral=True)).up(timeout=timeout)

    def _teardown_stale(self, lab: Lab) -> None:
        teardown(lab.name, lab.hosts)


class SystemdLabFactory(_Factory[SystemdLab]):
    lab_class = SystemdLab
    prefix = "ps"

    def __call__(
        self, n: int = DEFAULT_SYSTEMD_HOSTS, ro_binds: Sequence[tuple[str, str]] = (), timeout: float = 120.0
    ) -> SystemdLab:
        return self._keep(SystemdLab(self._next_name(), n, ro_binds=ro_binds, ephemeral=True)).up(timeout=timeout)

    def _teardown_stale(self, lab: SystemdLab) -> None:
        systemd.teardown(lab.name, lab.hosts, graceful=False)


def _marker_kwargs(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    return dict(marker.kwargs) if marker else {}


def _skip_if(reason: str | None) -> None:
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_requirements() -> None:
    _skip_if(lab_skip_reason())


@pytest.fixture(scope="session")
def lab_factory(lab_requirements: None) -> Iterator[LabFactory]:
    yield from LabFactory().session()


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, lab_factory: LabFactory) -> Iterator[Lab]:
    kwargs = _marker_kwargs(request, "lab")
    n = int(kwargs.get("hosts", DEFAULT_HOSTS))
    yield from lab_factory.scoped(lab_factory(n=n, overlay=bool(kwargs.get("overlay", False))))


@pytest.fixture(scope="session")
def systemd_lab_requirements() -> None:
    _skip_if(systemd_lab_skip_reason())


@pytest.fixture(scope="session")
def systemd_lab_factory(systemd_lab_requirements: None) -> Iterator[SystemdLabFactory]:
    yield from SystemdLabFactory().session()


@pytest.fixture(scope="module")
def systemd_lab(request: pytest.FixtureRequest, systemd_lab_factory: SystemdLabFactory) -> Iterator[SystemdLab]:
    kwargs = _marker_kwargs(request, "systemd_lab")
    n = int(kwargs.get("hosts", DEFAULT_SYSTEMD_HOSTS))
    ro_binds = [(str(s), str(d)) for s, d in kwargs.get("ro_binds", ())]
    yield from systemd_lab_factory.scoped(systemd_lab_factory(n=n, ro_binds=ro_binds))
