"""A tiny container image for lab tests without a registry: ``kbs.local/busybox:lab``, Debian's static
busybox as the only layer, written as an OCI image layout tarball that ``ctr images import`` accepts.

The .deb comes from ``apt-get download busybox-static`` (the machine's apt candidate) into
``${KUBEBOOT_REF_CACHE}/lab-images/``; the tarball is reproducible (mtimes 0, root owner) and rebuilt only
when missing.  tests/reference/images.py builds the full set of cluster images; this is the lab's own
smallest one, for checking that containerd and runc work in a host.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.reference.binaries import cache_root

from .common import SAFE_ENV

IMAGE = "kbs.local/busybox:lab"
APPLETS = ("sh", "cat", "echo", "sleep", "ls", "id", "hostname", "mount", "tail", "head")


def images_dir() -> Path:
    return cache_root() / "lab-images"


def _tarinfo(name: str, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mtime = 0
    ti.uid = ti.gid = 0
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(busybox: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "out"):
            t.addfile(_tarinfo(d, type=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755))
        t.addfile(_tarinfo("bin/busybox", size=len(busybox), mode=0o755), io.BytesIO(busybox))
        for app in APPLETS:
            t.addfile(_tarinfo(f"bin/{app}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777))
        for name, text in (("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            t.addfile(_tarinfo(name, size=len(data), mode=0o644), io.BytesIO(data))
    return buf.getvalue()


def oci_archive(layer: bytes, ref: str) -> bytes:
    """An OCI image layout (index.json naming ``ref`` for containerd) holding one uncompressed layer."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_blob(layer)]},
    }, sort_keys=True).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _blob(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()  # fmt: skip
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _blob(manifest),
                       "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
    }, sort_keys=True).encode()  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("blobs", "blobs/sha256"):
            t.addfile(_tarinfo(d, type=tarfile.DIRTYPE, mode=0o755))
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{_blob(b)[7:]}", b) for b in (layer, config, manifest)]
        for name, data in files:
            t.addfile(_tarinfo(name, size=len(data), mode=0o644), io.BytesIO(data))
    return buf.getvalue()


def busybox_image() -> Path:
    """Path of the ``kbs.local/busybox:lab`` archive, built on first use."""
    out_dir = images_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "busybox-lab.tar"
    with open(out_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        debs = sorted(out_dir.glob("busybox-static_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "busybox-static"],
                           cwd=out_dir, env=SAFE_ENV, check=True, capture_output=True)  # fmt: skip
            debs = sorted(out_dir.glob("busybox-static_*.deb"))
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(debs[-1]), tmp], env=SAFE_ENV, check=True)
            busybox = Path(tmp, "bin", "busybox").read_bytes()
        part = out.with_suffix(".tmp")
        part.write_bytes(oci_archive(_layer(busybox), IMAGE))
        part.replace(out)
    return out
