"""Test infrastructure: the lab's container images, as OCI archives (``ctr -n k8s.io images import`` on lab nodes).

The builder is kubeboot's own (kubeboot/bundle/images.py: the images of an offline bundle); this module re-exports
it for the tests and adds what only they need: the build command tests name when they skip, :func:`require_image`,
and the two-release images directory of the upgrade tests.

An upgrade test's cluster needs the images of two releases: tests/setup.sh also builds PREVIOUS_IMAGES for
``binaries.PREVIOUS_VERSION`` (``--only`` needs only those images' binaries), and :func:`upgrade_images_dir` makes
``<cache>/upgrade-images/v<old>-v<new>/`` with every archive of the new release and the old release's Kubernetes,
etcd and CoreDNS archives (symlinks; each image ref in one archive).

Usage: ``python3 -m tests.reference.images [--only name,...] [--refresh-debs] [VERSION]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from kubeboot.bundle.images import (  # noqa: F401  (re-exported for the tests)
    ARCH,
    BASE_DIRS,
    BUILDER_VERSION,
    BUSYBOX_REF,
    BuildResult,
    BuiltImage,
    CLUSTER_IMAGES,
    CNI_FLANNEL_SOURCE,
    DEFAULT_PATH,
    Deb,
    DebCache,
    DigestCache,
    Entry,
    FLANNEL_CNI_PLUGIN_TAG,
    FLANNEL_VERSION,
    IMAGE_NAMES,
    ImageInputMissing,
    ImageSpec,
    Inputs,
    LIB_DIRS,
    NETFILTER_PACKAGES,
    PROGRAM_DIRS,
    TEST_IMAGES,
    Tree,
    UnknownImage,
    base_files,
    build_images,
    build_key,
    cni_bin_dir,
    data_entry,
    debian_alternatives,
    debs_dir,
    default_images_dir,
    dir_entry,
    elf_info,
    file_entry,
    image_config,
    image_refs,
    image_specs,
    images_dir,
    link_entry,
    read_images_json,
    version_dir,
    write_archive,
    write_layer,
    _locked,
)
from tests.reference.binaries import DEFAULT_VERSION, PREVIOUS_VERSION, cache_root

BUILD_COMMAND = "python3 -m tests.reference.images"

#: What tests/setup.sh builds for PREVIOUS_VERSION (an upgrade test's starting point): the images whose refs change
#: with the Kubernetes release. pause keeps its tag across 1.36/1.37 (the archive of the version it is built for
#: would carry another pause.c VERSION string under the same ref), flannel and busybox are version independent.
PREVIOUS_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns", "etcd")


def build_command(version: str = DEFAULT_VERSION, names: Iterable[str] = ()) -> str:
    """The command that builds the images (``names``, or all) for ``version``."""
    cmd = BUILD_COMMAND + (f" --only {','.join(names)}" if names else "")
    return cmd + (f" {version.removeprefix('v')}" if version.removeprefix("v") != DEFAULT_VERSION else "")


def require_image(name: str, version: str = DEFAULT_VERSION) -> tuple[BuiltImage, Path]:
    """images.json's line for ``name`` and its archive; skips the calling test when it is not built."""
    import pytest

    d = default_images_dir(version)
    img = next((i for i in read_images_json(d) if i.name == name), None)
    if img is None or not (d / img.file).is_file():
        pytest.skip(f"image {name} for v{version.removeprefix('v')} not built (expected in {d}); build it with: "
                    f"{build_command(version, [name])} (after tests/reference/build.sh)")
    return img, d / img.file


# ------------------------------------------------------------------------------- upgrade tests

def upgrade_dir_path(old: str = PREVIOUS_VERSION, new: str = DEFAULT_VERSION) -> Path:
    """Where :func:`upgrade_images_dir` keeps the archives of an upgrade from ``old`` to ``new``."""
    return cache_root() / "upgrade-images" / f"v{old.removeprefix('v')}-v{new.removeprefix('v')}"


def _upgrade_links(old: str, new: str) -> tuple[dict[str, Path], list[str]]:
    """(file name in the upgrade dir -> the archive it stands for, what is missing). Every image of ``new``, then
    the PREVIOUS_IMAGES of ``old`` whose ref ``new`` does not already carry: each ref in exactly one archive."""
    links: dict[str, Path] = {}
    missing: list[str] = []
    refs: set[str] = set()
    for version, names in ((new, IMAGE_NAMES), (old, PREVIOUS_IMAGES)):
        d = default_images_dir(version)
        built = {i.name: i for i in read_images_json(d)}
        want = image_refs(version)
        absent = []
        for name in names:
            img = built.get(name)
            if img is None or img.ref != want[name] or not (d / img.file).is_file() \
                    or (d / img.file).stat().st_size != img.size:
                absent.append(name)
            elif img.ref not in refs:
                refs.add(img.ref)
                links[f"{name}-v{version}.tar"] = d / img.file
        if absent:
            missing.append(f"v{version} images {', '.join(absent)} (build: {build_command(version, absent)})")
    return links, missing


def upgrade_images_missing(old: str = PREVIOUS_VERSION, new: str = DEFAULT_VERSION) -> list[str]:
    """What :func:`upgrade_images_dir` lacks, per version with the command that builds it (empty: nothing)."""
    return _upgrade_links(old.removeprefix("v"), new.removeprefix("v"))[1]


def upgrade_images_dir(old: str = PREVIOUS_VERSION, new: str = DEFAULT_VERSION) -> Path | None:
    """A directory for ``kubeboot up --images`` / spec.images.archiveDir of a cluster upgraded from ``old`` to
    ``new``: every archive of ``new`` plus the Kubernetes, etcd and CoreDNS archives of ``old``, as relative
    symlinks ``<name>-v<version>.tar`` into the versions' images dirs (no copy; a rebuilt archive is seen at
    once), each image ref in exactly one archive. None when an archive is not built (see
    :func:`upgrade_images_missing`). Idempotent: a call with nothing to change only reads links."""
    old, new = old.removeprefix("v"), new.removeprefix("v")
    links, missing = _upgrade_links(old, new)
    if missing:
        return None
    out = upgrade_dir_path(old, new)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out / ".lock"):
        for name, archive in links.items():
            target = os.path.relpath(archive, out)
            link = out / name
            with contextlib.suppress(OSError):
                if os.readlink(link) == target:
                    continue
            tmp = out / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
        for p in out.iterdir():  # anything else would be imported too (kubeboot loads every archive there)
            if p.name not in links and p.name != ".lock" and (p.is_symlink() or p.is_file()):
                p.unlink()
    return out


def require_upgrade_images(old: str = PREVIOUS_VERSION, new: str = DEFAULT_VERSION) -> Path:
    """:func:`upgrade_images_dir`; skips the calling test, naming what to build, when an archive is missing."""
    import pytest

    try:
        d = upgrade_images_dir(old, new)
    except PermissionError as e:
        pytest.skip(f"upgrade images: cannot write the cache ({e}); run as root")
    if d is None:
        pytest.skip(f"upgrade v{old.removeprefix('v')} -> v{new.removeprefix('v')}: not built: "
                    + "; ".join(upgrade_images_missing(old, new)) + " (tests/setup.sh builds them)")
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=BUILD_COMMAND, description="Build the lab's container images as OCI archives.")
    ap.add_argument("version", nargs="?", default=DEFAULT_VERSION)
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(IMAGE_NAMES)}")
    ap.add_argument("--out", type=Path, help="output directory (default: <cache>/v<version>/images)")
    ap.add_argument("--refresh-debs", action="store_true", help="re-resolve the pinned Debian packages")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else None
    try:
        res = build_images(args.version, names, args.out, args.refresh_debs, log=lambda m: print(f"[images] {m}"))
    except UnknownImage as e:
        print(f"{BUILD_COMMAND}: {e}", file=sys.stderr)
        return 2
    out = args.out or default_images_dir(args.version)
    for img in res.images:
        state = "built " if img in res.built else "cached"
        print(f"  {state} {img.ref:<58} {img.size / 2**20:7.1f} MiB  {img.manifest[:19]}")
    for name, why in res.failed.items():
        print(f"  FAILED {name}: {why}", file=sys.stderr)
    print(f"{len(res.built)} built, {len(res.cached)} cached, {len(res.failed)} failed in {res.seconds:.2f}s -> {out}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
