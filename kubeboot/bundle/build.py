"""Shell: `kubeboot bundle build` -- everything a cluster of one Kubernetes version needs with no network, in one
directory with a manifest of digests (kubeboot/bundle/manifest.py has the layout).

The recipe, each step cached by version in kubeboot's cache (kubeboot/cache.py), so a second build redoes nothing:

1. binaries  Kubernetes, etcd, CoreDNS, flannel and the CNI plugins from the Go module proxy (build.sh)
2. images    OCI archives of every image the cluster runs, made of those binaries and Debian's .debs (images.py)
3. packages  kubelet, kubectl, kubernetes-cni, kubeadm as .debs (dpkg-deb), and containerd, runc, nginx with every
             dependency a minimal host of this machine's distribution lacks (apt-get download) (debs.py)
4. bundle    a copy of each artifact into DIR (never a hard link: editing a bundle must not edit the cache), then
             manifest.json, last and atomically: a directory without it is never taken for a bundle

`inputs` in the manifest is a digest of every artifact (path, kind, group, name, version, sha256, size) and of this
builder's version: when an existing DIR's manifest has the same inputs and every file is there at its size, the
build copies nothing. Official release artifacts (dl.k8s.io, pkgs.k8s.io) are not fetched by this build of
kubeboot: only ``--from-source``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubeboot.bundle import binaries, debs, images
from kubeboot.bundle.manifest import GROUPS, MANIFEST, Entry, Manifest, problems, read_manifest, write_manifest
from kubeboot.cache import cache_root
from kubeboot.config.versions import DEFAULT_MINOR, resolve_version
from kubeboot.errors import BundleError, ConfigError, Problem
from kubeboot.output import Reporter

#: Bump when the bundle's layout or what goes into it changes in a way the artifacts' digests do not show.
BUILDER_VERSION = "1"
ARCH = "amd64"
SOURCE = "source"  # Manifest.source of a --from-source bundle
#: the top-level names a bundle directory holds (anything else in a directory without a manifest: not ours)
LAYOUT = (MANIFEST, "packages", "images", "bin")
_CHUNK = 1 << 20

#: (program, where it comes from) that a --from-source build runs
BUILD_TOOLS: tuple[tuple[str, str], ...] = (
    ("jq", "apt-get install jq"), ("gcc", "apt-get install gcc libc6-dev"), ("strip", "apt-get install binutils"),
    ("flock", "apt-get install util-linux"), ("dpkg-deb", "apt-get install dpkg"), ("apt-get", "apt-get install apt"),
    ("apt-cache", "apt-get install apt"),
)  # fmt: skip


@dataclass(frozen=True)
class BuildRequest:
    out: Path
    version: str | None = None  # "1.37" or "1.37.2"; None: kubeboot's default
    from_source: bool = False


@dataclass(frozen=True)
class Artifact:
    """One manifest entry and the cached file it is a copy of."""

    entry: Entry
    source: Path


@dataclass(frozen=True)
class BuildResult:
    root: Path
    manifest: Manifest
    up_to_date: bool  # nothing was copied: DIR already held these inputs
    copied: int  # artifacts written into DIR
    kept: int  # artifacts DIR already held (same digest)
    removed: int  # files of an older bundle in DIR that this one does not list

    def mib(self, group: str | None = None) -> float:
        return sum(e.size for e in self.manifest.entries if group is None or e.group == group) / 2**20


# ------------------------------------------------------------------------------------------- pure parts

def target_version(text: str | None) -> str:
    """The full version to build: ``text`` ("1.37" means its newest known patch) or kubeboot's default; ConfigError
    (with the flag) for a version kubeboot does not support."""
    try:
        return resolve_version(text or DEFAULT_MINOR).version
    except ValueError as exc:
        raise ConfigError([Problem("--version", str(exc))], source="flags") from None


def distribution(os_release: str) -> str:
    """``ID-VERSION_ID`` of an /etc/os-release text ("debian-12"); "" when it names neither."""
    fields: dict[str, str] = {}
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    if not fields.get("ID") or not fields.get("VERSION_ID"):
        return ""
    return f"{fields['ID']}-{fields['VERSION_ID']}"


def inputs_digest(version: str, dist: str, arch: str, source: str, entries: Iterable[Entry]) -> str:
    """What makes a bundle: equal digests, equal bundles (the builder version is part of it)."""
    rows = sorted([e.path, e.kind, e.group, e.name, e.version, e.sha256, e.size] for e in entries)
    doc = json.dumps([BUILDER_VERSION, version, dist, arch, source, rows], separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def is_up_to_date(root: Path, existing: Manifest | None, wanted: Manifest) -> bool:
    """``root``'s manifest has the wanted inputs and entries, and every file is there at its size (not re-hashed:
    `kubeboot bundle verify` and `up --bundle` check digests)."""
    return (existing is not None and existing.inputs == wanted.inputs
            and set(existing.entries) == set(wanted.entries) and not problems(root, existing, deep=False))


def image_name_version(ref: str) -> tuple[str, str]:
    """("registry.k8s.io/kube-apiserver", "v1.37.2") of an image ref."""
    name, _, tag = ref.rpartition(":")
    return name, tag


# ----------------------------------------------------------------------------------------------- checks

def _missing_tools() -> list[str]:
    out = []
    if binaries.find_go() is None:
        out.append("`go`: a Go toolchain as new as k8s.io/kubernetes's go.mod asks for (the go.dev tarball in "
                   "/usr/local/go, or set $GO)")
    for tool, how in BUILD_TOOLS:
        if shutil.which(tool, path=debs.TOOL_ENV["PATH"]) is None:
            out.append(f"`{tool}` ({how})")
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").is_file():
        out.append("static libc for the pause image (apt-get install libc6-dev)")
    return out


def _machine() -> tuple[str, str]:
    """(distribution, arch) of this machine: the packages come from its apt sources."""
    try:
        dist = distribution(Path("/etc/os-release").read_text())
    except OSError:
        dist = ""
    if not dist:
        raise BundleError("cannot tell this machine's distribution (no ID/VERSION_ID in /etc/os-release): the "
                          "bundle's packages come from its apt sources")
    try:
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        arch = ""
    if arch != ARCH:
        raise BundleError(f"this machine's architecture is {arch or 'unknown'}: bundles are built for {ARCH} only, "
                          "on an amd64 Debian-family machine")
    return dist, arch


# ------------------------------------------------------------------------------------------------ steps

def _binaries(version: str, rep: Reporter) -> None:
    rep.phase_start("binaries")
    res = binaries.build_binaries(version, binaries.NAMES, go=binaries.find_go(),
                                  log=lambda line: rep.info("binaries", None, line))
    rep.phase_done("binaries", f"{len(res.cached)} cached, {len(res.built)} built in {binaries.bin_dir(version)}")


def _images(version: str, rep: Reporter) -> list[Artifact]:
    rep.phase_start("images")
    res = images.build_images(version, images.IMAGE_NAMES, log=lambda m: rep.info("images", None, m))
    if res.failed:
        raise BundleError(f"images of v{version} could not be built: "
                          + "; ".join(f"{n}: {why}" for n, why in res.failed.items()))
    d = images.default_images_dir(version)
    out = []
    for img in res.images:
        name, tag = image_name_version(img.ref)
        group = "tools" if img.name in images.TEST_IMAGES else "node"
        out.append(Artifact(Entry(f"images/{img.file}", "image", group, name, tag, "", img.size), d / img.file))
    rep.phase_done("images", f"{len(res.cached)} cached, {len(res.built)} built in {d}")
    return out


def _packages(version: str, rep: Reporter) -> list[Artifact]:
    rep.phase_start("packages")
    problems_ = debs.missing_tools()
    if problems_:
        raise debs.DebInputMissing("cannot build the packages: " + "; ".join(problems_))
    pkgs = debs.harness_packages(version, require=("kubelet", "kubectl", "kubeadm"))
    pkg_dir = binaries.version_dir(version) / "packages"
    built = 0
    out: list[Artifact] = []
    for pkg in pkgs:
        deb = pkg_dir / pkg.filename
        built += debs.ensure_deb(pkg, deb, pkg_dir / ".stamps" / f"{pkg.name}.json")
        group = "tools" if pkg.name == "kubeadm" else "node"
        out.append(Artifact(Entry(f"packages/{group}/{pkg.filename}", "package", group, pkg.name, pkg.version, "",
                                  0), deb))
    node_pkgs = [p for p in pkgs if p.name != "kubeadm"]
    cache = images.debs_dir()
    for group, roots in (("node", [*debs.NODE_DEBIAN_PACKAGES, *debs.debian_roots(node_pkgs)]),
                         ("lb", list(debs.LB_DEBIAN_PACKAGES))):
        for deb in debs.fetch_debian_debs(cache, roots):
            name, ver = debs.deb_fields(deb.name)
            out.append(Artifact(Entry(f"packages/{group}/{deb.name}", "package", group, name, ver, "", 0), deb))
    rep.phase_done("packages", f"{len(pkgs) - built} cached, {built} built; Debian's from {cache}")
    return out


def _kubectl(version: str) -> Artifact:
    path = binaries.built("kubectl", version)
    if path is None:
        raise BundleError(f"kubectl v{version} is not built ({binaries.script_command(['kubectl'], version)})")
    return Artifact(Entry("bin/kubectl", "binary", "tools", "kubectl", f"v{version}", "", 0), path)


def _with_digests(arts: list[Artifact]) -> list[Artifact]:
    """Each entry with its source's sha256 and size (digests remembered by size, mtime and inode)."""
    cache = images.DigestCache(cache_root() / ".digests.json")
    out = []
    try:
        for a in arts:
            e = a.entry
            out.append(Artifact(Entry(e.path, e.kind, e.group, e.name, e.version, cache.digest(a.source),
                                      a.source.stat().st_size), a.source))
    finally:
        cache.save()
    return out


def _check_target(root: Path) -> Manifest | None:
    """The manifest ``root`` holds (None: none, or unreadable); BundleError when ``root`` is something else."""
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root} exists and is not a directory")
    if not root.is_dir():
        return None
    try:
        return read_manifest(root)
    except BundleError:
        pass
    foreign = sorted(p.name for p in root.iterdir() if p.name not in LAYOUT and not p.name.startswith(".manifest."))
    if foreign:
        raise BundleError(f"{root} is not empty and is not a bundle (it holds {', '.join(foreign[:5])}"
                          f"{' ...' if len(foreign) > 5 else ''})", hint="give -o a new or empty directory")
    return None


def _copy(src: Path, dst: Path, sha256: str, mode: int) -> None:
    """Copy ``src`` to ``dst`` (temporary name, renamed), hashing what was written: BundleError if it is not
    ``sha256`` (the cache changed under the build)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
        os.chmod(tmp, mode)
        if h.hexdigest() != sha256:
            raise BundleError(f"{src} changed while the bundle was built (its sha256 is not the one recorded)",
                              hint="build again")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _same(path: Path, e: Entry) -> bool:
    from kubeboot.bundle.manifest import hash_file

    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size == e.size \
            and hash_file(path)[0] == e.sha256
    except OSError:
        return False


def _fill(root: Path, arts: list[Artifact]) -> tuple[int, int, int]:
    """Make ``root`` hold exactly ``arts`` under packages/, images/ and bin/; (copied, kept, removed)."""
    (root / MANIFEST).unlink(missing_ok=True)  # from here on, DIR is not a bundle until the new manifest is written
    copied = kept = 0
    for a in arts:
        dst = root / a.entry.path
        if _same(dst, a.entry):
            kept += 1
            continue
        _copy(a.source, dst, a.entry.sha256, 0o755 if a.entry.kind == "binary" else 0o644)
        copied += 1
    wanted = {a.entry.path for a in arts}
    removed = 0
    for top in LAYOUT[1:]:
        base = root / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*"), reverse=True):
            rel = p.relative_to(root).as_posix()
            if (p.is_file() or p.is_symlink()) and rel not in wanted:
                p.unlink()
                removed += 1
            elif p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
                p.rmdir()
        if not any(base.iterdir()):
            base.rmdir()
    return copied, kept, removed


# ------------------------------------------------------------------------------------------------- build

def build(req: BuildRequest, rep: Reporter) -> BuildResult:
    """Build (or find up to date) the bundle of ``req.version`` in ``req.out``. BundleError (exit 27) when it
    cannot be built: no --from-source, a missing tool, a failed step."""
    version = target_version(req.version)
    if not req.from_source:
        raise BundleError(
            "official release downloads (dl.k8s.io, pkgs.k8s.io) are not available in this build of kubeboot",
            hint=f"build the artifacts from source instead: kubeboot bundle build --from-source --version {version} "
                 f"-o {req.out} (Go module proxy and this machine's apt sources)")
    dist, arch = _machine()
    missing = _missing_tools()
    if missing:
        raise BundleError("cannot build a bundle from source on this machine, missing: " + "; ".join(missing))
    root = req.out
    existing = _check_target(root)
    rep.info("bundle", None, f"Kubernetes v{version} for {dist}/{arch} from source; cache {cache_root()}")

    _binaries(version, rep)
    arts = _images(version, rep)
    arts += _packages(version, rep)
    arts.append(_kubectl(version))
    arts = _with_digests(arts)

    entries = tuple(a.entry for a in arts)
    wanted = Manifest(version, dist, arch, SOURCE, inputs_digest(version, dist, arch, SOURCE, entries), entries)
    if is_up_to_date(root, existing, wanted):
        assert existing is not None
        return BuildResult(root, existing, True, 0, len(entries), 0)
    rep.phase_start("bundle")
    root.mkdir(parents=True, exist_ok=True)
    copied, kept, removed = _fill(root, arts)
    write_manifest(root, wanted)
    rep.phase_done("bundle", f"{copied} copied, {kept} kept, {removed} removed")
    return BuildResult(root, wanted, False, copied, kept, removed)


def summary(res: BuildResult) -> str:
    """One line: what the bundle holds, per group."""
    groups = ", ".join(f"{g} {res.mib(g):.0f} MiB" for g in GROUPS)
    n = len(res.manifest.entries)
    if res.up_to_date:
        return f"bundle {res.root} is up to date ({n} artifacts, {res.mib():.0f} MiB: {groups})"
    return f"bundle {res.root}: {n} artifacts, {res.mib():.0f} MiB ({groups}), Kubernetes " \
           f"v{res.manifest.kubernetes_version} for {res.manifest.distribution}/{res.manifest.arch}"
