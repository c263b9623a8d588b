"""`kubeboot bundle build`'s own logic (kubeboot/bundle/build.py) without building anything: the version it builds,
the distribution it records, the inputs digest, when a directory counts as up to date, which directories it refuses,
and how it fills one (copies, never links; stale files go; the manifest comes last). The real build:
tests/reference/test_bundle_build.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubeboot.bundle import build as b
from kubeboot.bundle.debs import deb_fields
from kubeboot.bundle.manifest import MANIFEST, Entry, Manifest, hash_file, read_manifest, write_manifest
from kubeboot.cli import main
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES
from kubeboot.errors import BundleError, ConfigError
from kubeboot.output import Reporter


def test_the_version_defaults_to_kubeboots_and_must_be_supported() -> None:
    assert b.target_version(None) == RELEASES[DEFAULT_MINOR].latest_patch
    assert b.target_version("1.36") == RELEASES["1.36"].latest_patch
    assert b.target_version("v1.37.1") == "1.37.1"
    with pytest.raises(ConfigError) as exc:
        b.target_version("1.30")
    assert exc.value.problems[0].path == "--version" and "supported minors" in exc.value.problems[0].message


@pytest.mark.parametrize(("text", "want"), [
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', "debian-12"),
    ("ID=ubuntu\nVERSION_ID='24.04'\nID_LIKE=debian\n", "ubuntu-24.04"),
    ("ID=debian\n", ""),  # testing/sid have no VERSION_ID
    ("", ""),
])  # fmt: skip
def test_distribution_from_os_release(text: str, want: str) -> None:
    assert b.distribution(text) == want


def _entry(path: str = "images/etcd.tar", **kw: object) -> Entry:
    base = dict(path=path, kind="image", group="node", name="registry.k8s.io/etcd", version="3.7.0-0",
                sha256="a" * 64, size=3)
    return Entry(**{**base, **kw})  # type: ignore[arg-type]


def test_inputs_digest_covers_every_field_and_not_the_order() -> None:
    one, two = _entry(), _entry("bin/kubectl", kind="binary", group="tools", name="kubectl")
    d = b.inputs_digest("1.37.2", "debian-12", "amd64", "source", [one, two])
    assert d == b.inputs_digest("1.37.2", "debian-12", "amd64", "source", [two, one])
    for field in ("path", "kind", "group", "name", "version", "sha256", "size"):
        other = dataclasses.replace(one, **{field: 4 if field == "size" else "b" * 64 if field == "sha256" else "x"})
        assert b.inputs_digest("1.37.2", "debian-12", "amd64", "source", [other, two]) != d, field
    assert b.inputs_digest("1.37.1", "debian-12", "amd64", "source", [one, two]) != d
    assert b.inputs_digest("1.37.2", "debian-13", "amd64", "source", [one, two]) != d


def test_image_name_and_deb_fields() -> None:
    assert b.image_name_version("registry.k8s.io/kube-apiserver:v1.37.2") == ("registry.k8s.io/kube-apiserver",
                                                                              "v1.37.2")
    assert b.image_name_version("localhost:5000/x:1") == ("localhost:5000/x", "1")
    assert deb_fields("libbpf1_1%3a1.1.2-0+deb12u1_amd64.deb") == ("libbpf1", "1:1.1.2-0+deb12u1")
    assert deb_fields("kubelet_1.37.2-1.1_amd64.deb") == ("kubelet", "1.37.2-1.1")
    with pytest.raises(BundleError):
        deb_fields("not-a-deb.deb")


# ------------------------------------------------------------------------------------ filling a directory

def _cache(tmp_path: Path) -> list[b.Artifact]:
    """Three cached artifacts (an image, a package, kubectl) with their digests."""
    src = tmp_path / "cache"
    src.mkdir()
    arts = []
    for rel, kind, group, data in (("images/etcd.tar", "image", "node", b"etcd archive"),
                                   ("packages/node/runc_1_amd64.deb", "package", "node", b"runc deb"),
                                   ("bin/kubectl", "binary", "tools", b"#!kubectl")):
        f = src / rel.replace("/", "_")
        f.write_bytes(data)
        sha, size = hash_file(f)
        arts.append(b.Artifact(Entry(rel, kind, group, rel.rsplit("/", 1)[1], "1", sha, size), f))
    return arts


def _manifest(arts: list[b.Artifact]) -> Manifest:
    entries = tuple(a.entry for a in arts)
    return Manifest("1.37.2", "debian-12", "amd64", "source",
                    b.inputs_digest("1.37.2", "debian-12", "amd64", "source", entries), entries)


def test_fill_copies_never_links_and_a_second_fill_keeps_everything(tmp_path: Path) -> None:
    arts = _cache(tmp_path)
    root = tmp_path / "bundle"
    root.mkdir()
    assert b._fill(root, arts) == (3, 0, 0)
    for a in arts:
        dst = root / a.entry.path
        assert dst.read_bytes() == a.source.read_bytes()
        assert os.stat(dst).st_ino != os.stat(a.source).st_ino and os.stat(dst).st_nlink == 1
    assert os.access(root / "bin/kubectl", os.X_OK) and not os.access(root / "images/etcd.tar", os.X_OK)
    # editing the bundle must not edit the cache
    (root / "images/etcd.tar").write_bytes(b"tampered!!!!")
    assert arts[0].source.read_bytes() == b"etcd archive"
    # same size, other bytes: copied again; the rest kept
    assert b._fill(root, arts) == (1, 2, 0)
    assert (root / "images/etcd.tar").read_bytes() == b"etcd archive"


def test_fill_removes_what_the_new_bundle_does_not_list_and_the_old_manifest_first(tmp_path: Path) -> None:
    arts = _cache(tmp_path)
    root = tmp_path / "bundle"
    root.mkdir()
    b._fill(root, arts)
    write_manifest(root, _manifest(arts))
    (root / "images/old-release.tar").write_bytes(b"x")
    (root / "packages/lb").mkdir()
    (root / "packages/lb/nginx_1_amd64.deb").write_bytes(b"x")
    (root / "README").write_text("the user's own file stays")
    assert b._fill(root, arts[:2]) == (0, 2, 3)
    assert not (root / MANIFEST).exists()  # a bundle again only once the new manifest is written
    assert not (root / "bin").exists() and not (root / "packages/lb").exists()
    assert (root / "README").is_file()


def test_up_to_date_needs_the_same_inputs_entries_and_every_file_at_its_size(tmp_path: Path) -> None:
    arts = _cache(tmp_path)
    root = tmp_path / "bundle"
    root.mkdir()
    b._fill(root, arts)
    m = _manifest(arts)
    write_manifest(root, m)
    existing = read_manifest(root)
    assert b.is_up_to_date(root, existing, m)
    assert not b.is_up_to_date(root, None, m)
    assert not b.is_up_to_date(root, existing, dataclasses.replace(m, inputs="0" * 64))
    (root / "bin/kubectl").write_bytes(b"#!kubectl, bigger")
    assert not b.is_up_to_date(root, existing, m)
    (root / "bin/kubectl").unlink()
    assert not b.is_up_to_date(root, existing, m)


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    assert b._check_target(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert b._check_target(tmp_path / "empty") is None
    partial = tmp_path / "partial"  # an interrupted build: our directories, no manifest
    (partial / "images").mkdir(parents=True)
    assert b._check_target(partial) is None
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"not empty and is not a bundle \(it holds notes.txt\)"):
        b._check_target(tmp_path / "home")
    (tmp_path / "file").write_text("")
    with pytest.raises(BundleError, match="not a directory"):
        b._check_target(tmp_path / "file")


# ----------------------------------------------------------------------------------------- official sources

def test_without_from_source_it_says_official_downloads_are_not_available(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as exc:
        b.build(b.BuildRequest(tmp_path / "out", "1.37"), Reporter(quiet=True))
    assert exc.value.exit_code == 27
    assert "not available in this build" in exc.value.message
    assert exc.value.hint and "--from-source --version 1.37.2" in exc.value.hint
    assert not (tmp_path / "out").exists()


def test_cli_exit_codes(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["bundle", "build", "-o", str(tmp_path / "out")])
    assert res.exit_code == 27 and "--from-source" in res.output
    res = CliRunner().invoke(main, ["bundle", "build", "--version", "2.0", "--from-source", "-o", str(tmp_path)])
    assert res.exit_code == 3 and "--version" in res.output
    res = CliRunner().invoke(main, ["bundle", "verify", str(tmp_path)])
    assert res.exit_code == 27 and "no manifest.json" in res.output
