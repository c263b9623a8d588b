"""Multi-host SSH lab for kubeboot tests: see tests/lab/README.md."""

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

__all__ = [
    "KBUSER",
    "KBUSER_PASSWORD",
    "NOSUDO_PASSWORD",
    "NOSUDO_USER",
    "Host",
    "Lab",
    "LabError",
    "prerequisites",
    "teardown",
]
