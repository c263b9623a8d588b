"""Pure core of offline bundles: the manifest (what a bundle holds, with the sha256 of every artifact), reading it
back and proving every artifact is there and unchanged. No SSH, no subprocess.

A bundle directory::

    manifest.json            written last by `kubeboot bundle build`: a directory without it is not a bundle
    packages/node/*.deb      containerd, runc, kubelet, kubectl, kubernetes-cni and what a minimal host lacks for them
    packages/lb/*.deb        nginx with the stream module (external-nginx and node-local load balancers)
    packages/tools/*.deb     kubeadm (not installed by `up`; for people who mix kubeadm nodes in)
    images/*.tar             OCI archives of every image the cluster runs
    bin/kubectl              the workstation's kubectl (`kubeboot sandbox kubectl`)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubeboot.cache import cache_root
from kubeboot.errors import BundleError

MANIFEST = "manifest.json"
API_VERSION = "kubeboot.io/v1alpha1"
KIND = "Bundle"
GROUPS = ("node", "lb", "tools")
KINDS = ("package", "image", "binary")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    path: str  # relative, POSIX, inside the bundle
    kind: str  # package | image | binary
    group: str  # node | lb | tools
    name: str
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    kubernetes_version: str  # "1.37.2"
    distribution: str  # the packages' distribution, "debian-12"
    arch: str  # "amd64"
    source: str  # "source" (built from the Go module proxy) | "release" (official artifacts)
    inputs: str  # a digest of everything the build used: equal inputs, nothing to build
    entries: tuple[Entry, ...]

    def to_json(self) -> str:
        doc = {"apiVersion": API_VERSION, "kind": KIND, "kubernetesVersion": self.kubernetes_version,
               "distribution": self.distribution, "arch": self.arch, "source": self.source, "inputs": self.inputs,
               "artifacts": [{"path": e.path, "kind": e.kind, "group": e.group, "name": e.name,
                              "version": e.version, "sha256": e.sha256, "size": e.size}
                             for e in sorted(self.entries, key=lambda e: e.path)]}
        return json.dumps(doc, indent=2) + "\n"

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def default_dir(version: str) -> Path:
    """Where `kubeboot bundle build` puts a version's bundle without -o, and `kubeboot sandbox up` looks for one."""
    return cache_root() / "bundles" / f"v{version}"


def hash_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def write_manifest(root: Path, m: Manifest) -> None:
    """Atomically (a temporary file renamed into place), so a reader sees the old manifest or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(m.to_json())
        os.chmod(tmp, 0o644)
        os.replace(tmp, root / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _bad(root: Path, what: str) -> BundleError:
    return BundleError(f"bundle {root}: {what}",
                       hint="build it again with `kubeboot bundle build -o DIR` (a bundle is only what that writes)")


def _field(doc: dict[str, Any], key: str, root: Path, where: str = "") -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v:
        raise _bad(root, f"{MANIFEST}: {where}{key} is missing or not a string")
    return v


def parse_manifest(text: str, root: Path) -> Manifest:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(root, f"{MANIFEST} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise _bad(root, f"{MANIFEST} is not a kubeboot bundle manifest (kind {KIND}, apiVersion {API_VERSION})")
    arts = doc.get("artifacts")
    if not isinstance(arts, list) or not arts:
        raise _bad(root, f"{MANIFEST}: artifacts is missing or empty")
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, a in enumerate(arts):
        where = f"artifacts[{i}]."
        if not isinstance(a, dict):
            raise _bad(root, f"{MANIFEST}: artifacts[{i}] is not an object")
        path = _field(a, "path", root, where)
        p = PurePosixPath(path)
        if p.is_absolute() or ".." in p.parts or str(p) != path:
            raise _bad(root, f"{MANIFEST}: {where}path {path!r} is not a plain relative path inside the bundle")
        if path in seen:
            raise _bad(root, f"{MANIFEST}: {path} is listed twice")
        seen.add(path)
        kind, group = _field(a, "kind", root, where), _field(a, "group", root, where)
        if kind not in KINDS or group not in GROUPS:
            raise _bad(root, f"{MANIFEST}: {path}: kind {kind!r} / group {group!r} unknown")
        sha, size = _field(a, "sha256", root, where), a.get("size")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _bad(root, f"{MANIFEST}: {path}: sha256 is not 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(root, f"{MANIFEST}: {path}: size is not a non-negative integer")
        entries.append(Entry(path, kind, group, _field(a, "name", root, where), str(a.get("version") or ""),
                             sha, size))
    return Manifest(_field(doc, "kubernetesVersion", root), _field(doc, "distribution", root),
                    _field(doc, "arch", root), _field(doc, "source", root), str(doc.get("inputs") or ""),
                    tuple(entries))


def read_manifest(root: Path) -> Manifest:
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a directory",
                          hint="build one with `kubeboot bundle build --from-source -o DIR`")
    try:
        text = (root / MANIFEST).read_text()
    except FileNotFoundError:
        raise _bad(root, f"no {MANIFEST} (an unfinished or foreign directory)") from None
    except OSError as exc:
        raise _bad(root, f"cannot read {MANIFEST}: {exc.strerror}") from None
    return parse_manifest(text, root)


def problems(root: Path, m: Manifest, deep: bool = True) -> list[str]:
    """Every artifact that is missing, of another size, or (deep) whose sha256 differs — each named."""
    out: list[str] = []
    for e in m.entries:
        p = root / e.path
        try:
            st = p.stat()
        except FileNotFoundError:
            out.append(f"{e.path}: missing")
            continue
        if not p.is_file():
            out.append(f"{e.path}: not a regular file")
        elif st.st_size != e.size:
            out.append(f"{e.path}: {st.st_size} bytes, the manifest says {e.size} (corrupt)")
        elif deep and hash_file(p)[0] != e.sha256:
            out.append(f"{e.path}: sha256 differs from the manifest (corrupt or tampered)")
    return out


def verify_manifest(root: Path, m: Manifest) -> None:
    bad = problems(root, m)
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise BundleError(f"bundle {root}: {len(bad)} artifact(s) fail their manifest digest: {shown}",
                          hint="nothing was installed from it; rebuild it with `kubeboot bundle build --from-source "
                               f"--version {m.kubernetes_version} -o {root}` or copy it again")


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.kubernetes_version

    def entries(self, kind: str, group: str | None = None) -> list[Entry]:
        return [e for e in self.manifest.entries if e.kind == kind and (group is None or e.group == group)]

    def packages(self, group: str) -> list[Path]:
        return [self.root / e.path for e in self.entries("package", group)]

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def images(self, group: str | None = None) -> list[Path]:
        return [self.root / e.path for e in self.entries("image", group)]

    def binary(self, name: str) -> Path | None:
        return next((self.root / e.path for e in self.entries("binary") if e.name == name), None)


def load_bundle(root: Path, verify: bool = True) -> Bundle:
    """Read the manifest and (verify) check every artifact's digest: a bundle is used whole or not at all."""
    m = read_manifest(root)
    if verify:
        verify_manifest(root, m)
    return Bundle(root, m)
