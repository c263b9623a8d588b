"""The base root filesystem of systemd lab hosts: the product's (:mod:`kubeboot.sandbox.rootfs`, the same tree and
cache ``kubeboot sandbox`` uses).  ``python -m tests.lab.rootfs [--force]`` builds it (tests/setup.sh does) and
prints the path."""

from __future__ import annotations

import sys

from kubeboot.sandbox.rootfs import *  # noqa: F403  (the names tests and bench import from here)
from kubeboot.sandbox.rootfs import INIT_PATH as INIT_PATH
from kubeboot.sandbox.rootfs import PACKAGES as PACKAGES
from kubeboot.sandbox.rootfs import BaseRootfs as BaseRootfs
from kubeboot.sandbox.rootfs import RootfsError as RootfsError
from kubeboot.sandbox.rootfs import cached as cached
from kubeboot.sandbox.rootfs import digest_of as digest_of
from kubeboot.sandbox.rootfs import ensure_base as ensure_base
from kubeboot.sandbox.rootfs import in_use as in_use
from kubeboot.sandbox.rootfs import inputs as inputs
from kubeboot.sandbox.rootfs import main as _main
from kubeboot.sandbox.rootfs import rootfs_dir as rootfs_dir


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m tests.lab.rootfs")


if __name__ == "__main__":
    sys.exit(main())
