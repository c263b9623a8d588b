"""`kubeboot bundle build --from-source` for real (kubeboot/bundle/build.py), through the CLI, from the warm cache
tests/setup.sh fills (reference binaries, image archives, Debian packages): the bundle holds what a cluster needs, a
second build copies nothing, `bundle verify` passes, and a tampered copy fails it naming the file (exit 27).

Skips, naming what to build, when the cache lacks a binary or an image (a cold build takes ~20 minutes of Go)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeboot.bundle import binaries, debs, images
from kubeboot.bundle.build import distribution
from kubeboot.bundle.manifest import Manifest, hash_file, read_manifest
from tests.reference.binaries import DEFAULT_VERSION

pytestmark = pytest.mark.reference

VERSION = DEFAULT_VERSION
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str
    seconds: float


def kubeboot(*args: str, timeout: float = 1800) -> Run:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "kubeboot.cli", *args], capture_output=True, text=True, cwd=REPO,
                       timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def _require_inputs() -> None:
    missing = [n for n in binaries.NAMES if binaries.built(n, VERSION) is None]
    if missing:
        pytest.skip(f"reference binaries v{VERSION} not built: {', '.join(missing)} (bash tests/setup.sh, or "
                    f"tests/reference/build.sh {VERSION})")
    built = {i.name for i in images.read_images_json(images.default_images_dir(VERSION))}
    if set(images.IMAGE_NAMES) - built:
        pytest.skip(f"images v{VERSION} not built: {', '.join(sorted(set(images.IMAGE_NAMES) - built))} "
                    "(python3 -m tests.reference.images)")
    if debs.missing_tools() or shutil.which("jq") is None or binaries.find_go() is None:
        pytest.skip(f"cannot build packages or run build.sh here: {debs.missing_tools()} (bash tests/setup.sh)")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    _require_inputs()
    root = tmp_path_factory.mktemp("bundle") / "b"
    run = kubeboot("bundle", "build", "--from-source", "--version", VERSION, "-o", str(root))
    assert run.rc == 0, run.err
    return root, run


@pytest.fixture(scope="module")
def manifest(first: tuple[Path, Run]) -> Manifest:
    return read_manifest(first[0])


def test_first_build_reports_each_step_and_writes_the_manifest_last(first: tuple[Path, Run]) -> None:
    root, run = first
    for step in ("[binaries]", "[images]", "[packages]", "[bundle]", "[done]"):
        assert step in run.err, run.err
    m = read_manifest(root)
    newest = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert (root / "manifest.json").stat().st_mtime_ns >= newest
    print(f"first build into a new directory: {run.seconds:.1f}s, {m.total_bytes() / 2**20:.0f} MiB")


def test_second_build_copies_nothing(first: tuple[Path, Run]) -> None:
    root, _ = first
    before = _snapshot(root)
    run = kubeboot("bundle", "build", "--from-source", "--version", VERSION, "-o", str(root))
    assert run.rc == 0, run.err
    n = len(read_manifest(root).entries)
    assert f"bundle {root} is up to date ({n} artifacts, " in run.err, run.err
    assert " copied, " not in run.err and "0 built in" in run.err, run.err
    assert _snapshot(root) == before  # same inodes, mtimes and sizes: nothing rewritten, manifest included
    assert run.seconds < 60, f"a no-op build took {run.seconds:.1f}s"
    print(f"no-op build: {run.seconds:.1f}s")


def test_the_manifest_lists_what_a_cluster_needs(manifest: Manifest, first: tuple[Path, Run]) -> None:
    root, _ = first
    m = manifest
    assert (m.kubernetes_version, m.arch, m.source) == (VERSION, "amd64", "source")
    assert m.distribution == distribution(Path("/etc/os-release").read_text())
    pkgs = {g: {e.name: e for e in m.entries if e.kind == "package" and e.group == g} for g in ("node", "lb", "tools")}
    assert {"containerd", "runc", "kubelet", "kubectl", "kubernetes-cni", "iptables"} <= set(pkgs["node"])
    assert {"nginx", "libnginx-mod-stream"} <= set(pkgs["lb"])
    assert set(pkgs["tools"]) == {"kubeadm"}
    assert {pkgs["node"][n].version for n in ("kubelet", "kubectl")} == {f"{VERSION}-1.1"}
    for g, es in pkgs.items():
        for e in es.values():
            assert e.path == f"packages/{g}/{Path(e.path).name}" and e.path.endswith(".deb")
    refs = images.image_refs(VERSION)
    got = {f"{e.name}:{e.version}": e.group for e in m.entries if e.kind == "image"}
    assert got == {refs[n]: "tools" if n in images.TEST_IMAGES else "node" for n in images.IMAGE_NAMES}
    assert [(e.path, e.group, e.name) for e in m.entries if e.kind == "binary"] == [("bin/kubectl", "tools", "kubectl")]

    from kubeboot.config.load import load_inventory_text
    from kubeboot.render.images import required_images
    from tests.conftest import EXAMPLE

    cfg = load_inventory_text(EXAMPLE.read_text(), str(EXAMPLE))
    if cfg.version.version == VERSION:
        assert set(required_images(cfg)) <= set(got)  # every image kubeadm would pull

    # copies of the cache, not links to it
    cache_kubectl = binaries.built("kubectl", VERSION)
    assert cache_kubectl is not None
    st = os.stat(root / "bin/kubectl")
    assert st.st_nlink == 1 and st.st_ino != os.stat(cache_kubectl).st_ino and os.access(root / "bin/kubectl", os.X_OK)
    assert hash_file(root / "bin/kubectl")[0] == hash_file(cache_kubectl)[0]


def test_verify_passes(first: tuple[Path, Run]) -> None:
    run = kubeboot("bundle", "verify", str(first[0]))
    assert run.rc == 0, run.err
    assert "every sha256 verified" in run.out


def test_a_tampered_copy_fails_verify_naming_the_file(first: tuple[Path, Run], manifest: Manifest,
                                                      tmp_path: Path) -> None:
    root, _ = first
    copy = tmp_path / "copy"
    for p in root.rglob("*"):  # hard links: cheap, and replacing a file below breaks only its own link
        dst = copy / p.relative_to(root)
        if p.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dst)
    victim = next(e for e in manifest.entries if e.path.startswith("packages/lb/nginx_"))
    data = bytearray((copy / victim.path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    tmp = copy / (victim.path + ".new")
    tmp.write_bytes(bytes(data))
    tmp.replace(copy / victim.path)
    gone = next(e for e in manifest.entries if e.path == "images/pause.tar")
    (copy / gone.path).unlink()

    run = kubeboot("bundle", "verify", str(copy))
    assert run.rc == 27, run.err
    assert f"{victim.path}: sha256 differs" in run.err and f"{gone.path}: missing" in run.err, run.err
    assert hash_file(root / victim.path)[0] == victim.sha256  # the original bundle is untouched
