"""The images of an upgrade test (tests/reference/images.py): the previous release the test starts from, its
archives, and the one directory (``upgrade_images_dir``) holding both releases' archives for ``kubeboot up --images``.

The directory's logic runs against a fake cache (archives are only bytes there); the real archives are checked
when built (each test skips naming the command otherwise; ``tests/setup.sh`` builds them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeboot.config.versions import DEFAULT_MINOR, RELEASES
from tests.reference import images
from tests.reference.binaries import DEFAULT_VERSION, PREVIOUS_NAMES, PREVIOUS_VERSION, previous_release
from tests.reference.images import (
    BUILDER_VERSION,
    IMAGE_NAMES,
    PREVIOUS_IMAGES,
    BuiltImage,
    image_refs,
    require_image,
    require_upgrade_images,
    upgrade_dir_path,
    upgrade_images_dir,
    upgrade_images_missing,
)
from tests.reference.test_images import Layout, containerd  # noqa: F401  (fixture)

OLD, NEW = PREVIOUS_VERSION, DEFAULT_VERSION


# ---------------------------------------------------------------------------------------- versions

def test_previous_version_is_the_latest_patch_of_the_minor_below_the_default() -> None:
    major, minor = DEFAULT_MINOR.split(".")
    assert PREVIOUS_VERSION == RELEASES[f"{major}.{int(minor) - 1}"].latest_patch
    assert DEFAULT_VERSION == RELEASES[DEFAULT_MINOR].latest_patch
    assert previous_release("1.37") == RELEASES["1.36"].latest_patch
    with pytest.raises(KeyError):
        previous_release(min(RELEASES, key=lambda m: int(m.split(".")[1])))  # kubeboot knows no older minor


def test_previous_images_are_the_ones_whose_refs_change_with_the_release() -> None:
    """What setup.sh builds for the previous release: exactly the images whose ref differs from the default
    release's (pause keeps its tag: a second pause archive would carry the same ref with other bytes)."""
    old, new = image_refs(OLD), image_refs(NEW)
    assert set(PREVIOUS_IMAGES) == {n for n in IMAGE_NAMES if old[n] != new[n]}
    # and build.sh builds every binary those images hold (nothing version independent)
    needed = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "etcdctl",
              "etcdutl", "coredns"}
    assert needed <= set(PREVIOUS_NAMES)
    assert not {n for n in PREVIOUS_NAMES if n.startswith(("cni-", "flannel")) or n == "refcheck"}


# ------------------------------------------------------------------------------ against a fake cache

def _fake_images(version: str, names: tuple[str, ...]) -> None:
    """An images dir as build_images leaves it (images.json + archives), archives being a few distinct bytes."""
    d = images.default_images_dir(version)
    d.mkdir(parents=True, exist_ok=True)
    refs = image_refs(version)
    built = []
    for n in names:
        data = f"{n} {version}".encode()
        (d / f"{n}.tar").write_bytes(data)
        built.append(BuiltImage(n, refs[n], f"{n}.tar", "sha256:m", "sha256:c", "sha256:l", len(data), "k"))
    (d / "images.json").write_text(json.dumps(
        {"version": version, "builder": BUILDER_VERSION, "images": [dataclasses.asdict(b) for b in built]}))


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("KUBEBOOT_REF_CACHE", str(tmp_path))
    _fake_images(NEW, IMAGE_NAMES)
    _fake_images(OLD, PREVIOUS_IMAGES)
    yield tmp_path


def _listing(d: Path) -> dict[str, str]:
    """Archive file name -> what it holds (the fake archive's text)."""
    return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.name.endswith(".tar")}


def test_upgrade_dir_holds_the_new_release_and_the_old_ones_kubernetes_images(fake_cache: Path) -> None:
    d = upgrade_images_dir(OLD, NEW)
    assert d == upgrade_dir_path(OLD, NEW) == fake_cache / "upgrade-images" / f"v{OLD}-v{NEW}"
    want = {f"{n}-v{NEW}.tar": f"{n} {NEW}" for n in IMAGE_NAMES}
    want |= {f"{n}-v{OLD}.tar": f"{n} {OLD}" for n in PREVIOUS_IMAGES}
    assert _listing(d) == want
    # relative links into the versions' images dirs: a rebuilt archive is seen without relinking
    for p in d.glob("*.tar"):
        assert p.is_symlink() and not os.path.isabs(os.readlink(p))
    (images.default_images_dir(OLD) / "etcd.tar").write_bytes(b"etcd rebuilt")
    assert (d / f"etcd-v{OLD}.tar").read_bytes() == b"etcd rebuilt"


def test_an_image_the_new_release_carries_is_not_linked_twice(fake_cache: Path) -> None:
    """A patch upgrade within a minor keeps etcd's and CoreDNS's refs: the old archives of those are left out,
    so every ref is in exactly one archive."""
    old = "1.37.1"
    _fake_images(old, PREVIOUS_IMAGES)
    d = upgrade_images_dir(old, NEW)
    assert d is not None
    olds = sorted(n for n in _listing(d) if n.endswith(f"-v{old}.tar"))
    assert olds == sorted(f"{n}-v{old}.tar" for n in PREVIOUS_IMAGES if n not in ("etcd", "coredns"))


def test_a_second_call_changes_nothing_and_strays_go(fake_cache: Path) -> None:
    d = upgrade_images_dir(OLD, NEW)
    assert d is not None
    before = {p.name: os.lstat(p).st_ino for p in d.iterdir()}
    assert upgrade_images_dir(OLD, NEW) == d
    assert {p.name: os.lstat(p).st_ino for p in d.iterdir()} == before
    # a stray archive would be imported by kubeboot too; a link pointing elsewhere is repointed
    (d / "stray.tar").write_bytes(b"x")
    os.unlink(d / f"pause-v{NEW}.tar")
    os.symlink("/nonexistent", d / f"pause-v{NEW}.tar")
    assert upgrade_images_dir(OLD, NEW) == d
    assert set(_listing(d)) == {n for n in before if n.endswith(".tar")}
    assert (d / f"pause-v{NEW}.tar").read_text() == f"pause {NEW}"


def test_a_missing_or_stale_archive_is_named_with_its_build_command(fake_cache: Path) -> None:
    assert upgrade_images_missing(OLD, NEW) == []
    (images.default_images_dir(OLD) / "coredns.tar").unlink()
    (images.default_images_dir(NEW) / "flannel.tar").write_bytes(b"other size")  # images.json no longer matches
    assert upgrade_images_dir(OLD, NEW) is None
    (images.default_images_dir(OLD) / "etcd.tar").unlink()
    assert upgrade_images_missing(OLD, NEW) == [
        f"v{NEW} images flannel (build: python3 -m tests.reference.images --only flannel)",
        f"v{OLD} images coredns, etcd (build: python3 -m tests.reference.images --only coredns,etcd {OLD})",
    ]
    with pytest.raises(pytest.skip.Exception, match=f"--only coredns,etcd {OLD}"):
        require_upgrade_images(OLD, NEW)


# ------------------------------------------------------------------------------ the real archives

@pytest.fixture(scope="module")
def upgrade_dir() -> Path:
    return require_upgrade_images(OLD, NEW)


def test_kubeboot_reads_every_archive_and_finds_both_releases_images(upgrade_dir: Path) -> None:
    """kubeboot's own reader (what `up --images` does first): every file is an archive, no ref is in two, and
    every image a cluster of either release runs is there."""
    from kubeboot.config.load import load_inventory_text
    from kubeboot.render.images import required_images
    from kubeboot.workflows.up import load_image_archives
    from tests.conftest import EXAMPLE

    archives = load_image_archives(upgrade_dir, "--images")
    refs = [ref for _, a in archives for ref in a.refs]
    assert len(refs) == len(set(refs)) == len(IMAGE_NAMES) + len(PREVIOUS_IMAGES)
    assert len({a.name for _, a in archives}) == len(archives)
    text = EXAMPLE.read_text()
    for version in (OLD, NEW):
        cfg = load_inventory_text(text.replace('kubernetesVersion: "1.37"', f'kubernetesVersion: "{version}"'),
                                  str(EXAMPLE))
        assert cfg.version.version == version
        assert set(required_images(cfg)) <= set(refs), version


VERSIONS = [
    ("kube-apiserver", "usr/local/bin/kube-apiserver", ["--version"], f"Kubernetes v{OLD}"),
    ("kube-controller-manager", "usr/local/bin/kube-controller-manager", ["--version"], f"Kubernetes v{OLD}"),
    ("kube-scheduler", "usr/local/bin/kube-scheduler", ["--version"], f"Kubernetes v{OLD}"),
    ("kube-proxy", "usr/local/bin/kube-proxy", ["--version"], f"Kubernetes v{OLD}"),
    ("etcd", "usr/local/bin/etcd", ["--version"], f"etcd Version: {RELEASES['1.36'].etcd_version}"),
    ("coredns", "coredns", ["-version"], f"CoreDNS-{RELEASES['1.36'].coredns_tag.removeprefix('v')}"),
]


@pytest.mark.parametrize(("name", "path", "args", "want"), VERSIONS, ids=[v[1] for v in VERSIONS])
def test_previous_release_archive_holds_its_binary(tmp_path: Path, name: str, path: str, args: list[str],
                                                   want: str) -> None:
    img, archive = require_image(name, OLD)
    assert img.ref == image_refs(OLD)[name]
    lay = Layout(archive)
    assert lay.desc["annotations"]["io.containerd.image.name"] == img.ref
    exe = lay.extract(path, tmp_path / os.path.basename(path))
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert want in res.stdout + res.stderr, (res.returncode, res.stdout, res.stderr)


def test_containerd_imports_the_previous_release_archives(upgrade_dir: Path, containerd: list[str]) -> None:
    """The real containerd takes the old release's archives beside the new ones' refs (none replaces another)."""
    olds = sorted(upgrade_dir.glob(f"*-v{OLD}.tar"))
    assert len(olds) == len(PREVIOUS_IMAGES)
    for archive in olds:
        res = subprocess.run([*containerd, "images", "import", str(archive)], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, (archive.name, res.stderr)
    listed = subprocess.run([*containerd, "images", "ls", "-q"], capture_output=True, text=True, check=True)
    assert {image_refs(OLD)[n] for n in PREVIOUS_IMAGES} <= set(listed.stdout.split())
