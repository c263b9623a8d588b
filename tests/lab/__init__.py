"""Multi-host SSH lab for kubeboot tests (light hosts: Lab; systemd hosts: SystemdLab): see tests/lab/README.md."""

from .lab import (
    KBUSER,
    KBUSER_PASSWORD,
    NOSUDO_PASSWORD,
    NOSUDO_USER,
    Host,
    Lab,
    LabError,
    prerequisites,
    teardown,
)
from .systemd import SystemdHost, SystemdLab

__all__ = [
    "KBUSER",
    "KBUSER_PASSWORD",
    "NOSUDO_PASSWORD",
    "NOSUDO_USER",
    "SystemdHost",
    "SystemdLab",
    "Host",
    "Lab",
    "LabError",
    "prerequisites",
    "teardown",
]
