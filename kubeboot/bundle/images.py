"""Shell (bundle inputs): every container image a kubeboot cluster runs, built locally as OCI archives from the
binaries of build.sh (kubeboot/bundle/binaries.py) and Debian's .debs: the images of an offline bundle built with
``--from-source`` (``kubeboot bundle build``), and of the test suite's lab nodes (tests/reference/images.py). Nodes
import them with ``ctr -n k8s.io images import``. Cached by version (``<cache>`` is kubeboot.cache's root):

    <cache>/v<version>/images/<short name>.tar
    <cache>/v<version>/images/images.json

Each archive is an OCI image layout (``oci-layout``, ``index.json`` naming the image through
``io.containerd.image.name``, blobs) holding one uncompressed layer, written with Python's tarfile: mtimes
0, uid/gid 0, sorted, so the same inputs give the same bytes. An archive is rebuilt only when its key
changes: a digest over the builder version, the ref, the image config and every layer entry (path, mode,
link target, xattrs, content digest); content digests are cached by (size, mtime, inode), so a run with
nothing to do costs a few hundred milliseconds. Writes are atomic (temp file + rename).

The images (refs exactly as kubeadm / kubeboot's ``kubeboot.render.images`` name them, tags from
``kubeboot.config.versions``; flannel's from its own kube-flannel.yml):

* ``registry.k8s.io/kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy:v<version>`` and
  ``registry.k8s.io/etcd:<etcd tag>``: the binaries of ``kubeboot/bundle/build.sh`` in
  /usr/local/bin (kubeadm's ``command: [kube-apiserver, ...]`` resolves through PATH). kube-proxy also gets
  the netfilter tools it execs, from Debian's .debs: iptables/ip6tables/-save/-restore in the nft and legacy
  variants with the alternatives links Debian's postinst creates (nft is the default, as on Debian),
  arptables/ebtables, ``nft``, ``conntrack``, ``ipset``, their shared libraries (the ELF DT_NEEDED closure
  within the .debs, lib* Depends followed recursively) and the dynamic loader.
* ``registry.k8s.io/pause:<tag>``: ``build/pause/linux/pause.c`` from the ``k8s.io/kubernetes`` module
  source, ``gcc -Os -Wall -Werror -static -DVERSION=v<tag>-v<version>`` as build/pause/Makefile, stripped;
  Entrypoint ``/pause``, User 65535:65535 (upstream's Dockerfile).
* ``registry.k8s.io/coredns/coredns:<tag>``: ``/coredns`` (build.sh, CGO_ENABLED=0, upstream Makefile's
  ldflags) with ``cap_net_bind_service=+ep`` as a file capability (upstream's ``setcap``), User 65532
  (distroless ``nonroot``), Entrypoint ``/coredns``, Debian's CA bundle.
* ``ghcr.io/flannel-io/flannel:v0.28.10`` (the newest flannel on the Go proxy; its
  Documentation/kube-flannel.yml pins this image and ``flannel-cni-plugin:v1.9.1-flannel3``):
  ``/opt/bin/flanneld`` (cgo + ``-extldflags -static`` as upstream's Makefile does on amd64; flannel's own
  main.go minus the TencentCloud VPC backend, whose SDK module the Go proxy does not serve),
  ``/opt/bin/install-conf`` (the manifest's install-cni init container), ``/opt/bin/mk-docker-opts.sh``,
  the same netfilter tools as kube-proxy and busybox in /bin; Entrypoint ``/opt/bin/flanneld``. Not
  included (upstream has them from Alpine): iproute2, strongswan, wireguard-tools (ipsec/wireguard backends),
  and iptables-wrapper (mode is Debian's default, nft).
* ``ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3``: ``/flannel`` plus busybox (the init container
  runs ``cp -f /flannel /opt/cni/bin/flannel``). github.com/flannel-io/cni-plugin is not served by the Go
  module proxy (403), and no other package registry carries it. Its code is the flannel meta plugin that
  lived in github.com/containernetworking/plugins until v0.9.1 (removed in v1.0.0, so v1.0.1 does not have
  it); v0.9.1's plugins/meta/flannel already has everything the later fork's flannel.go has (IPv4/IPv6
  subnet.env, ipam routes, runtimeConfig passed to the delegate), built with v0.9.1's own ldflags. It
  reports itself as "CNI flannel plugin v0.9.1", not v1.9.1-flannel3.
* ``kbs.local/busybox:1.35``: Debian's busybox-static, every applet linked in /bin (plain test pods).

The CNI plugins flannel delegates to (bridge, host-local, portmap, loopback of containernetworking/plugins
v1.10.0) and the flannel plugin are built by build.sh into ``v<version>/cni-bin/`` for the CNI to install.

Debian packages come from ``apt-get download`` into ``<cache>/debs`` (the apt candidate, pinned in
``<cache>/debs/lock.json`` on first use; ``--refresh-debs`` re-resolves), are checked against the SHA256 the
archive's Packages index gives, and are unpacked with ``dpkg-deb -x``.

Measured on the 2-core test machine (bench/images.py, which also lists the Go build times): packaging all ten
images from scratch 4.0 s (576 MiB of archives), a cached run ~0.1 s. Usage: ``python3 -m tests.reference.images [--only
name,...] [--refresh-debs] [VERSION]`` (tests) or ``kubeboot bundle build --from-source``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from kubeboot.bundle import binaries
from kubeboot.cache import cache_root
from kubeboot.config.versions import DEFAULT_MINOR, RELEASES, resolve_version

DEFAULT_VERSION = RELEASES[DEFAULT_MINOR].latest_patch

BUILDER_VERSION = "1"
ARCH = "amd64"
DEFAULT_PATH = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"

# Addons kubeadm does not pin (see the docstring); build.sh pins the same versions and records them in
# its stamps, which build_images checks. busybox is for the tests' pods, not the cluster (TEST_IMAGES).
FLANNEL_VERSION = "0.28.10"
FLANNEL_CNI_PLUGIN_TAG = "v1.9.1-flannel3"
CNI_FLANNEL_SOURCE = "github.com/containernetworking/plugins@v0.9.1"
BUSYBOX_REF = "kbs.local/busybox:1.35"

# Debian packages whose programs go into the kube-proxy and flannel images (their lib* Depends follow).
NETFILTER_PACKAGES = ("iptables", "nftables", "conntrack", "ipset")
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
PROGRAM_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class UnknownImage(ValueError):
    """A name that is not in IMAGE_NAMES."""


class ImageInputMissing(Exception):
    """An input (a reference binary, the module source) is not there; the message names the fix."""


# ------------------------------------------------------------------------------------------ paths

def version_dir(version: str = DEFAULT_VERSION) -> Path:
    return binaries.version_dir(version)


def default_images_dir(version: str = DEFAULT_VERSION) -> Path:
    return version_dir(version) / "images"


def cni_bin_dir(version: str = DEFAULT_VERSION) -> Path:
    """Where build.sh puts the CNI plugins (bridge, host-local, portmap, loopback, flannel)."""
    return binaries.cni_bin_dir(version)


def debs_dir() -> Path:
    return cache_root() / "debs"


# ---------------------------------------------------------------------------- content digests

class DigestCache:
    """sha256 of files, remembered by (size, mtime_ns, inode) in a JSON file so unchanged files are not re-read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        with contextlib.suppress(OSError, ValueError):
            self.entries = json.loads(path.read_text())

    def digest(self, file: Path) -> str:
        st = file.stat()
        key = str(file)
        seen = self.entries.get(key)
        if seen and seen[:3] == [st.st_size, st.st_mtime_ns, st.st_ino]:
            return str(seen[3])
        h = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        self.entries[key] = [st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest()]
        self.dirty = True
        return h.hexdigest()

    def save(self) -> None:
        if self.dirty:
            _atomic_write(self.path, json.dumps(self.entries, sort_keys=True).encode())
            self.dirty = False


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------- OCI writing

@dataclasses.dataclass(frozen=True)
class Entry:
    """One member of an image layer; ``path`` is relative to the image root."""

    path: str
    kind: Literal["file", "dir", "symlink"]
    mode: int = 0o755
    source: Path | None = None  # file content from disk ...
    data: bytes | None = None  # ... or inline
    target: str = ""  # symlink target
    xattrs: tuple[tuple[str, bytes], ...] = ()


def file_entry(path: str, source: Path, mode: int | None = None) -> Entry:
    if mode is None:
        mode = 0o755 if os.access(source, os.X_OK) else 0o644
    return Entry(path.strip("/"), "file", mode, source=source)


def data_entry(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path.strip("/"), "file", mode, data=data)


def link_entry(path: str, target: str) -> Entry:
    return Entry(path.strip("/"), "symlink", 0o777, target=target)


def dir_entry(path: str, mode: int = 0o755) -> Entry:
    return Entry(path.strip("/"), "dir", mode)


BASE_DIRS = (dir_entry("dev"), dir_entry("etc"), dir_entry("proc"), dir_entry("run"), dir_entry("sys"),
             dir_entry("tmp", 0o1777), dir_entry("root", 0o700), dir_entry("var"))


def base_files(extra_users: Iterable[tuple[str, int]] = ()) -> list[Entry]:
    """The minimal /etc a FROM-scratch image needs (name lookups of users and hosts)."""
    users = [("root", 0), *extra_users, ("nobody", 65534)]
    passwd = "".join(f"{n}:x:{u}:{u if u else 0}:{n}:{'/root' if not u else '/'}:{'/bin/sh' if not u else '/sbin/nologin'}\n"
                     for n, u in users)
    group = "".join(f"{'nogroup' if n == 'nobody' else n}:x:{u}:\n" for n, u in users)
    return [*BASE_DIRS, data_entry("etc/passwd", passwd.encode()), data_entry("etc/group", group.encode()),
            data_entry("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")]


def _complete(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by path, later duplicates winning, with every missing parent directory added (0755)."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        by_path[e.path] = e
    for p in list(by_path):
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            by_path.setdefault("/".join(parts[:i]), dir_entry("/".join(parts[:i])))
    return [by_path[p] for p in sorted(by_path)]


def _tarinfo(name: str, **kw: Any) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, b: Any) -> int:
        self.out.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


def write_layer(entries: list[Entry], out: IO[bytes]) -> tuple[str, int]:
    """Write the layer tar of ``entries`` (already complete and sorted) to ``out``; (sha256 digest, size)."""
    hw = _HashingWriter(out)
    with tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            pax = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in e.xattrs}
            if e.kind == "dir":
                t.addfile(_tarinfo(e.path, type=tarfile.DIRTYPE, mode=e.mode, pax_headers=pax))
            elif e.kind == "symlink":
                t.addfile(_tarinfo(e.path, type=tarfile.SYMTYPE, linkname=e.target, mode=0o777))
            elif e.data is not None:
                t.addfile(_tarinfo(e.path, size=len(e.data), mode=e.mode, pax_headers=pax), io.BytesIO(e.data))
            else:
                assert e.source is not None
                with open(e.source, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    t.addfile(_tarinfo(e.path, size=size, mode=e.mode, pax_headers=pax), f)
    return "sha256:" + hw.sha.hexdigest(), hw.size


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _blob(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """One archive and what is in it (also a line of images.json)."""

    name: str  # short name = archive stem
    ref: str
    file: str  # archive file name, relative to the images dir
    manifest: str  # digests "sha256:..."
    config: str
    layer: str
    size: int  # archive bytes
    key: str  # the build key (inputs digest)


def image_config(ref: str, layer_digest: str, cfg: dict[str, Any]) -> bytes:
    return _json({
        "architecture": ARCH, "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": cfg, "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        # where this builder lived first; not part of build_key, so another text would make a fresh archive differ
        # from a cached one of the same key
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"kubeboot tests/reference/images.py {ref}"}],
    })


def write_archive(path: Path, ref: str, entries: list[Entry], cfg: dict[str, Any]) -> tuple[str, str, str]:
    """Write the OCI layout tar of one single-layer image atomically; (manifest, config, layer) digests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path.parent) as layer:
        layer_digest, layer_size = write_layer(entries, layer)
        config = image_config(ref, layer_digest, cfg)
        manifest = _json({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                        "size": layer_size}],
        })
        index = _json({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _blob(manifest),
                           "size": len(manifest), "platform": {"architecture": ARCH, "os": "linux"},
                           "annotations": {"io.containerd.image.name": ref,
                                           "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
        })
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as t:
                def add(name: str, data: bytes) -> None:
                    t.addfile(_tarinfo(name, size=len(data), mode=0o644), io.BytesIO(data))
                t.addfile(_tarinfo("blobs", type=tarfile.DIRTYPE, mode=0o755))
                t.addfile(_tarinfo("blobs/sha256", type=tarfile.DIRTYPE, mode=0o755))
                for name, data in sorted([(_blob(config), config), (_blob(manifest), manifest)]):
                    add("blobs/sha256/" + name[7:], data)
                layer.seek(0)
                t.addfile(_tarinfo("blobs/sha256/" + layer_digest[7:], size=layer_size, mode=0o644), layer)
                add("index.json", index)
                add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return _blob(manifest), _blob(config), layer_digest


# ------------------------------------------------------------------------------- ELF closure

def elf_info(path: Path) -> tuple[str | None, list[str]] | None:
    """(PT_INTERP, DT_NEEDED) of a little-endian ELF64 file; None if it is not one."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        e_phoff, e_shoff = struct.unpack_from("<QQ", head, 32)
        e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", head, 54)
        f.seek(0)
        data = f.read()
    interp = None
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQII", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    needed: list[str] = []
    for _, sh_type, _, _, sh_offset, sh_size, sh_link, _ in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        str_off = sections[sh_link][4]
        for j in range(0, sh_size, 16):
            tag, val = struct.unpack_from("<qQ", data, sh_offset + j)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", str_off + val)
                needed.append(data[str_off + val:end].decode())
    return interp, needed


class Tree:
    """The union of unpacked .deb trees: relative path -> file on disk (lstat semantics)."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.files: dict[str, Path] = {}
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                rel = os.path.relpath(dirpath, root)
                if rel == ".":  # dpkg-deb -e's control files and our marker are not part of the tree
                    dirnames[:] = [d for d in dirnames if d != ".DEBIAN"]
                    filenames = [f for f in filenames if f != ".kubeboot-unpacked"]
                for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                    r = os.path.normpath(os.path.join(rel, n))
                    self.files.setdefault(r, Path(dirpath) / n)

    def resolve(self, rel: str) -> list[str]:
        """The chain of paths from ``rel`` through its symlinks to a regular file (all inside the tree)."""
        chain = []
        for _ in range(20):
            if rel not in self.files:
                raise KeyError(rel)
            chain.append(rel)
            src = self.files[rel]
            if not src.is_symlink():
                return chain
            target = os.readlink(src)
            rel = os.path.normpath(target.lstrip("/") if target.startswith("/")
                                   else os.path.join(os.path.dirname(rel), target))
        raise KeyError(f"symlink loop at {rel}")

    def entries(self, paths: Iterable[str]) -> list[Entry]:
        out = []
        for p in paths:
            src = self.files[p]
            if src.is_symlink():
                out.append(link_entry(p, os.readlink(src)))
            else:
                out.append(file_entry(p, src, src.stat().st_mode & 0o7777))
        return out

    def closure(self, roots: Iterable[str]) -> list[str]:
        """``roots`` plus their symlink targets, ELF interpreters and shared libraries, recursively."""
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            for p in self.resolve(todo.pop()):
                if p in seen:
                    continue
                seen.add(p)
                if self.files[p].is_symlink():
                    continue
                info = elf_info(self.files[p])
                if info is None:
                    continue
                interp, needed = info
                if interp:
                    todo.append(interp.lstrip("/"))
                for soname in needed:
                    cands = [f"{d}/{soname}" for d in LIB_DIRS if f"{d}/{soname}" in self.files]
                    if not cands:
                        raise ImageInputMissing(f"{p} needs {soname}, which no unpacked .deb provides")
                    todo.append(cands[0])
        return sorted(seen)


# ------------------------------------------------------------------------------ Debian packages

@dataclasses.dataclass(frozen=True)
class Deb:
    package: str
    version: str
    filename: str  # pool path in the archive
    sha256: str
    depends: tuple[str, ...]

    @property
    def file(self) -> Path:
        return debs_dir() / os.path.basename(self.filename)

    @property
    def root(self) -> Path:
        return debs_dir() / "x" / os.path.basename(self.filename).removesuffix(".deb")


def _parse_depends(text: str) -> list[str]:
    out = []
    for alt in text.split(","):
        first = alt.split("|")[0].strip()
        if first:
            out.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return out


def _apt_show(names: list[str]) -> dict[str, Deb]:
    res = subprocess.run(["apt-cache", "show", "--no-all-versions", *names], capture_output=True, text=True)
    found: dict[str, Deb] = {}
    for para in res.stdout.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in para.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                fields[key] = val.strip()
        if "Package" in fields and fields["Package"] not in found:
            deps = _parse_depends(fields.get("Pre-Depends", "")) + _parse_depends(fields.get("Depends", ""))
            found[fields["Package"]] = Deb(fields["Package"], fields["Version"], fields["Filename"],
                                           fields["SHA256"], tuple(deps))
    missing = [n for n in names if n not in found]
    if missing:
        raise ImageInputMissing(f"apt-cache knows no package {', '.join(missing)} (run apt-get update?): "
                                f"{res.stderr.strip()}")
    return found


class DebCache:
    """Debian packages pinned in ``<cache>/debs/lock.json``, downloaded and unpacked once."""

    def __init__(self, digests: DigestCache, log: Log, refresh: bool = False) -> None:
        self.digests, self.log = digests, log
        self.lock_path = debs_dir() / "lock.json"
        self.pins: dict[str, Deb] = {}
        if not refresh:
            with contextlib.suppress(OSError, ValueError, TypeError):
                raw = json.loads(self.lock_path.read_text())
                self.pins = {k: Deb(**{**v, "depends": tuple(v["depends"])}) for k, v in raw.items()}

    def resolve(self, names: Iterable[str], follow_libs: bool) -> list[Deb]:
        """The pinned packages ``names`` and (if ``follow_libs``) their lib* dependencies, recursively."""
        want, out, seen = list(names), [], set()
        while want:
            new = [n for n in want if n not in self.pins]
            if new:
                self.pins.update(_apt_show(new))
                _atomic_write(self.lock_path, json.dumps(
                    {k: dataclasses.asdict(v) for k, v in sorted(self.pins.items())}, indent=1).encode())
            nxt = []
            for n in want:
                if n in seen:
                    continue
                seen.add(n)
                out.append(self.pins[n])
                if follow_libs:
                    nxt += [d for d in self.pins[n].depends if d.startswith("lib") and d not in seen]
            want = nxt
        return sorted(out, key=lambda d: d.package)

    def fetch(self, deb: Deb) -> Path:
        """Download (checksum-checked) and unpack one package; the unpacked root."""
        marker = deb.root / ".kubeboot-unpacked"
        if marker.is_file() and marker.read_text() == deb.sha256:
            return deb.root
        if not (deb.file.is_file() and self.digests.digest(deb.file) == deb.sha256):
            self._download(deb)
        tmp = Path(tempfile.mkdtemp(dir=deb.root.parent if deb.root.parent.exists() else _mkdir(deb.root.parent)))
        subprocess.run(["dpkg-deb", "-x", str(deb.file), str(tmp)], check=True)
        subprocess.run(["dpkg-deb", "-e", str(deb.file), str(tmp / ".DEBIAN")], check=True)
        (tmp / ".kubeboot-unpacked").write_text(deb.sha256)
        if deb.root.exists():
            shutil.rmtree(deb.root)
        os.replace(tmp, deb.root)
        return deb.root

    def _download(self, deb: Deb) -> None:
        self.log(f"apt-get download {deb.package}={deb.version}")
        deb.file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=deb.file.parent) as tmp:
            os.chmod(tmp, 0o755)
            cmd = ["apt-get", "download", "-q", f"{deb.package}={deb.version}"]
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            got = list(Path(tmp).glob("*.deb"))
            if res.returncode != 0 or len(got) != 1:
                raise ImageInputMissing(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
            digest = hashlib.sha256(got[0].read_bytes()).hexdigest()
            if digest != deb.sha256:
                raise ImageInputMissing(f"{got[0].name}: sha256 {digest} != {deb.sha256} from the Packages index")
            os.replace(got[0], deb.file)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def debian_alternatives(root: Path) -> list[Entry]:
    """The links ``update-alternatives --install`` in a package's postinst makes, highest priority winning
    (Debian's auto mode): /usr/sbin/iptables -> /etc/alternatives/iptables -> /usr/sbin/iptables-nft."""
    postinst = root / ".DEBIAN" / "postinst"
    if not postinst.is_file():
        return []
    text = postinst.read_text().replace("\\\n", " ")
    best: dict[str, tuple[int, list[tuple[str, str, str]]]] = {}
    for m in re.finditer(r"update-alternatives\s+--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)([^\n;]*)", text):
        link, name, path, prio, rest = m.groups()
        group = [(link, name, path)] + re.findall(r"--slave\s+(\S+)\s+(\S+)\s+(\S+)", rest)
        if name not in best or int(prio) > best[name][0]:
            best[name] = (int(prio), group)
    out = []
    for _, group in best.values():
        for link, name, path in group:
            out += [link_entry(link, f"/etc/alternatives/{name}"), link_entry(f"etc/alternatives/{name}", path)]
    return out


# ------------------------------------------------------------------------------------ images

@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What one image is: its ref, archive stem, config and a function producing its layer entries."""

    name: str
    ref: str
    config: dict[str, Any]
    entries: Callable[[], list[Entry]]


class Inputs:
    """Everything images are made of, located (and prepared: pause compiled, .debs unpacked) on demand."""

    def __init__(self, version: str, images_dir: Path, digests: DigestCache, log: Log, refresh_debs: bool) -> None:
        self.version, self.images_dir, self.digests, self.log = version, images_dir, digests, log
        self.facts = resolve_version(version).facts
        self.debs = DebCache(digests, log, refresh_debs)

    # the binaries of build.sh (kubeboot/bundle/binaries.py)
    def built(self, name: str, addon: str = "") -> Path:
        """A binary build.sh built and verified (its stamp exists), of the addon version we expect."""
        path = binaries.binary_path(name, self.version)
        stamp = binaries.stamp_path(name, self.version)
        cmd = binaries.script_command([name], self.version)
        if not (path.is_file() and stamp.is_file()):
            raise ImageInputMissing(f"{path} is not built; build it with: {cmd}")
        if addon and f" addon={addon}" not in f" {stamp.read_text().strip()} ":
            raise ImageInputMissing(f"{path} was not built from {addon} (stamp: {stamp.read_text().strip()}); "
                                    f"rebuild with: {cmd}")
        return path

    def module_dir(self, module: str) -> Path:
        guess = Path(os.environ.get("GOMODCACHE") or Path.home() / "go/pkg/mod") / module
        if guess.is_dir():
            return guess
        res = subprocess.run([binaries.find_go() or "go", "mod", "download", "-json", module], capture_output=True,
                             text=True,
                             env={**os.environ, "GOFLAGS": "-mod=mod"}, cwd=tempfile.gettempdir())
        try:
            return Path(json.loads(res.stdout)["Dir"])
        except (ValueError, KeyError) as e:
            raise ImageInputMissing(f"go mod download {module} failed: {res.stderr.strip()[-300:]}") from e

    def pause(self) -> Path:
        """build/pause/linux/pause.c compiled as build/pause/Makefile does, stripped; rebuilt when its inputs change."""
        src = self.module_dir(f"k8s.io/kubernetes@v{self.version}") / "build/pause/linux/pause.c"
        out = self.images_dir / ".work" / "pause"
        cflags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{self.facts.pause_tag}-v{self.version}"]
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        key = hashlib.sha256(_json([self.digests.digest(src), cflags, gcc])).hexdigest()
        stamp = out.with_suffix(".stamp")
        if out.is_file() and stamp.is_file() and stamp.read_text() == key:
            return out
        self.log(f"gcc {' '.join(cflags)} {src}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".pause.{os.getpid()}")
        subprocess.run(["gcc", *cflags, "-o", str(tmp), str(src)], check=True)
        subprocess.run(["strip", str(tmp)], check=True)
        os.replace(tmp, out)
        stamp.write_text(key)
        return out

    def deb_roots(self, packages: Iterable[str], follow_libs: bool) -> list[Path]:
        return [self.debs.fetch(d) for d in self.debs.resolve(packages, follow_libs)]

    def busybox(self, prefix: str = "bin") -> list[Entry]:
        """Debian's static busybox at <prefix>/busybox with every applet linked beside it."""
        (root,) = self.deb_roots(["busybox-static"], follow_libs=False)
        bb = root / "bin/busybox"
        applets = subprocess.run([str(bb), "--list"], capture_output=True, text=True, check=True).stdout.split()
        return [file_entry(f"{prefix}/busybox", bb, 0o755)] + [
            link_entry(f"{prefix}/{a}", "busybox") for a in sorted(set(applets)) if a != "busybox"]

    def netfilter(self) -> list[Entry]:
        """iptables (nft + legacy, with Debian's alternatives), nft, conntrack, ipset, their libraries and
        loader, and netbase's /etc/protocols, /etc/services, /etc/ethertypes."""
        tool_roots = self.deb_roots(NETFILTER_PACKAGES, follow_libs=False)
        roots = self.deb_roots(NETFILTER_PACKAGES, follow_libs=True) + self.deb_roots(["netbase"], False)
        tree = Tree(roots)
        programs = []
        for root in tool_roots:
            for d in PROGRAM_DIRS:
                if (root / d).is_dir():
                    programs += [f"{d}/{p.name}" for p in sorted((root / d).iterdir())]
        xt = [p for p in tree.files if p.startswith("usr/lib/x86_64-linux-gnu/xtables/") and p.endswith(".so")]
        etc: list[str] = [p for p in ("etc/protocols", "etc/services", "etc/ethertypes", "etc/rpc") if p in tree.files]
        alternatives = [e for r in tool_roots for e in debian_alternatives(r)]
        return tree.entries(tree.closure(programs + xt) + etc) + alternatives

    def ca_bundle(self) -> Entry:
        """/etc/ssl/certs/ca-certificates.crt as update-ca-certificates builds it from Debian's ca-certificates."""
        (root,) = self.deb_roots(["ca-certificates"], follow_libs=False)
        certs = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
        return data_entry("etc/ssl/certs/ca-certificates.crt", b"".join(c.read_bytes() for c in certs))


def _cap_net_bind_service() -> bytes:
    """security.capability for ``setcap cap_net_bind_service=+ep``: vfs_cap_data revision 2, effective,
    permitted bit 10 (CAP_NET_BIND_SERVICE)."""
    return struct.pack("<IIIII", 0x02000000 | 0x1, 1 << 10, 0, 0, 0)


def image_specs(inputs: Inputs) -> list[ImageSpec]:
    """Every image, in kubeadm's order (GetControlPlaneImages), then the CNI's and the tests' images."""
    f = inputs.facts
    refs = image_refs(inputs.version)
    cfg = {"Env": [DEFAULT_PATH], "WorkingDir": "/"}

    def component(name: str, extra: Callable[[], list[Entry]] = list) -> ImageSpec:
        return ImageSpec(name, refs[name], {**cfg, "Cmd": [f"/usr/local/bin/{name}"]},
                         lambda: [*base_files(), file_entry(f"usr/local/bin/{name}", inputs.built(name), 0o755),
                                  *extra()])

    def etcd() -> list[Entry]:
        return [*base_files(), dir_entry("var/lib/etcd", 0o700)] + [
            file_entry(f"usr/local/bin/{b}", inputs.built(b), 0o755) for b in ("etcd", "etcdctl", "etcdutl")]

    def coredns() -> list[Entry]:
        src = inputs.built("coredns", f"github.com/coredns/coredns@{f.coredns_tag}")
        return [*base_files([("nonroot", 65532)]), inputs.ca_bundle(),
                Entry("coredns", "file", 0o755, source=src, xattrs=(("security.capability", _cap_net_bind_service()),))]

    def flannel() -> list[Entry]:
        mod = f"github.com/flannel-io/flannel@v{FLANNEL_VERSION}"
        return [*base_files(), *inputs.busybox(), *inputs.netfilter(), inputs.ca_bundle(),
                file_entry("opt/bin/flanneld", inputs.built("flanneld", mod), 0o755),
                file_entry("opt/bin/install-conf", inputs.built("flannel-install-conf", mod), 0o755),
                file_entry("opt/bin/mk-docker-opts.sh", inputs.module_dir(mod) / "dist/mk-docker-opts.sh", 0o755)]

    def flannel_cni() -> list[Entry]:
        return [*base_files(), *inputs.busybox(), file_entry("flannel", inputs.built("cni-flannel", CNI_FLANNEL_SOURCE), 0o755)]

    def pause() -> list[Entry]:
        return [*BASE_DIRS, file_entry("pause", inputs.pause(), 0o755)]

    return [
        component("kube-apiserver"),
        component("kube-controller-manager"),
        component("kube-scheduler"),
        component("kube-proxy", inputs.netfilter),
        ImageSpec("coredns", refs["coredns"],
                  {**cfg, "Entrypoint": ["/coredns"], "User": "65532:65532",
                   "ExposedPorts": {"53/tcp": {}, "53/udp": {}}}, coredns),
        ImageSpec("pause", refs["pause"],
                  {**cfg, "Entrypoint": ["/pause"], "User": "65535:65535"}, pause),
        ImageSpec("etcd", refs["etcd"], {**cfg, "Cmd": ["/usr/local/bin/etcd"]}, etcd),
        ImageSpec("flannel", refs["flannel"],
                  {**cfg, "Entrypoint": ["/opt/bin/flanneld"]}, flannel),
        ImageSpec("flannel-cni-plugin", refs["flannel-cni-plugin"],
                  {**cfg, "Cmd": ["/bin/sh"]}, flannel_cni),
        ImageSpec("busybox", refs["busybox"], {**cfg, "Cmd": ["/bin/sh"]},
                  lambda: [*base_files(), *inputs.busybox()]),
    ]


def image_refs(version: str = DEFAULT_VERSION) -> dict[str, str]:
    """Short name -> image ref, for every image this module builds for ``version``."""
    f = resolve_version(version.removeprefix("v")).facts
    tag = f"v{version.removeprefix('v')}"
    return {
        **{c: f"registry.k8s.io/{c}:{tag}" for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                                     "kube-proxy")},
        "coredns": f"registry.k8s.io/coredns/coredns:{f.coredns_tag}",
        "pause": f"registry.k8s.io/pause:{f.pause_tag}",
        "etcd": f"registry.k8s.io/etcd:{f.etcd_image_tag}",
        "flannel": f"ghcr.io/flannel-io/flannel:v{FLANNEL_VERSION}",
        "flannel-cni-plugin": f"ghcr.io/flannel-io/flannel-cni-plugin:{FLANNEL_CNI_PLUGIN_TAG}",
        "busybox": BUSYBOX_REF,
    }


IMAGE_NAMES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns", "pause",
               "etcd", "flannel", "flannel-cni-plugin", "busybox")
#: Images for the tests' pods, not the cluster's (a bundle carries them in its "tools" group).
TEST_IMAGES = ("busybox",)
#: What a cluster runs: the control plane, etcd, pause, CoreDNS, kube-proxy and flannel's two.
CLUSTER_IMAGES = tuple(n for n in IMAGE_NAMES if n not in TEST_IMAGES)


def build_key(spec: ImageSpec, entries: list[Entry], digests: DigestCache) -> str:
    """Digest of everything an archive's bytes depend on."""
    items = []
    for e in entries:
        content = digests.digest(e.source) if e.source else (hashlib.sha256(e.data).hexdigest() if e.data else "")
        items.append([e.path, e.kind, e.mode, e.target, content, [[k, v.hex()] for k, v in e.xattrs]])
    return hashlib.sha256(_json([BUILDER_VERSION, spec.ref, spec.config, items])).hexdigest()


@dataclasses.dataclass(frozen=True)
class BuildResult:
    built: list[BuiltImage]  # (re)written this run
    cached: list[BuiltImage]  # unchanged
    failed: dict[str, str]  # name -> why (an input is missing)
    seconds: float

    @property
    def images(self) -> list[BuiltImage]:
        return sorted(self.built + self.cached, key=lambda b: IMAGE_NAMES.index(b.name))


def build_images(version: str = DEFAULT_VERSION, names: Iterable[str] | None = None, out_dir: Path | None = None,
                 refresh_debs: bool = False, log: Log = _quiet) -> BuildResult:
    """Build (or reuse) the archives of ``names`` (default: all) into ``out_dir`` (default: the version's
    images dir) and update its images.json. Images whose inputs are missing are reported in ``failed``."""
    t0 = time.monotonic()
    version = version.removeprefix("v")
    out = out_dir or default_images_dir(version)
    wanted = list(names) if names is not None else list(IMAGE_NAMES)
    unknown = [n for n in wanted if n not in IMAGE_NAMES]
    if unknown:
        raise UnknownImage(f"unknown image {', '.join(unknown)} (known: {', '.join(IMAGE_NAMES)})")
    built, cached, failed = [], [], {}
    with _locked(out / ".lock"), _locked(debs_dir() / ".lock"):
        digests = DigestCache(cache_root() / ".digests.json")
        inputs = Inputs(version, out, digests, log, refresh_debs)
        index = _read_index(out)
        try:
            for spec in image_specs(inputs):
                if spec.name not in wanted:
                    continue
                try:
                    entries = _complete(spec.entries())
                except ImageInputMissing as e:
                    failed[spec.name] = str(e)
                    continue
                key = build_key(spec, entries, digests)
                archive = out / f"{spec.name}.tar"
                old = index.get(spec.name)
                if old and old.key == key and old.ref == spec.ref and archive.is_file() \
                        and archive.stat().st_size == old.size:
                    cached.append(old)
                    continue
                t = time.monotonic()
                manifest, config, layer = write_archive(archive, spec.ref, entries, spec.config)
                img = BuiltImage(spec.name, spec.ref, archive.name, manifest, config, layer, archive.stat().st_size, key)
                index[spec.name] = img
                built.append(img)
                log(f"{spec.ref}: {img.size / 2**20:.1f} MiB in {time.monotonic() - t:.1f}s")
        finally:
            digests.save()
            index = {n: i for n, i in index.items() if (out / i.file).is_file()}
            data = {"version": version, "builder": BUILDER_VERSION,
                    "images": [dataclasses.asdict(index[n]) for n in IMAGE_NAMES if n in index]}
            new = json.dumps(data, indent=1).encode() + b"\n"
            if not (out / "images.json").is_file() or (out / "images.json").read_bytes() != new:
                _atomic_write(out / "images.json", new)
    return BuildResult(built, cached, failed, time.monotonic() - t0)


def _read_index(out: Path) -> dict[str, BuiltImage]:
    try:
        data = json.loads((out / "images.json").read_text())
        if data.get("builder") != BUILDER_VERSION:
            return {}
        return {i["name"]: BuiltImage(**i) for i in data["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_images_json(images_dir: Path) -> list[BuiltImage]:
    """The images an images dir holds, as images.json lists them."""
    return sorted(_read_index(images_dir).values(), key=lambda b: IMAGE_NAMES.index(b.name))


def images_dir(version: str = DEFAULT_VERSION) -> Path | None:
    """The version's images dir if it holds an images.json, else None (nothing built yet)."""
    d = default_images_dir(version)
    return d if (d / "images.json").is_file() else None


