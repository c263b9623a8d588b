"""Pure core: what an image archive holds (OCI image layout or `docker save` tar), read from an open file.

containerd's `ctr images import` takes both formats. For the images phase kubeboot needs, per archive, the image
names it carries and the digest containerd will record for each (the target digest `ctr images ls` prints), so
an archive is imported only on hosts that miss one of its images. The caller opens the file; nothing here
touches the disk or a host.

* OCI layout: `oci-layout` + `index.json`; each manifest descriptor names its image with the annotation
  `io.containerd.image.name` (what containerd writes on export) or `org.opencontainers.image.ref.name` (a full
  reference, or just a tag in plain OCI layouts, which containerd cannot name an image from). containerd
  records the descriptor's digest.
* docker archive: `manifest.json` = [{Config, RepoTags, Layers}]. containerd converts it to an OCI manifest
  whose digest is not in the archive, so such images are matched by name and by their image ID (the config
  digest), which the CRI plugin records as a `sha256:<id>` name beside the tag.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

OCI_NAME = "io.containerd.image.name"
OCI_REF = "org.opencontainers.image.ref.name"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# a reference containerd accepts as an image name: host/path:tag or @digest (lower-case path components)
_REF = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\.[a-z0-9-]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                  r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json",
                   "application/vnd.oci.image.index.v1+json",
                   "application/vnd.docker.distribution.manifest.list.v2+json")


class ArchiveError(ValueError):
    """The file is not an image archive containerd can import; the message says what is wrong."""


@dataclass(frozen=True)
class ArchivedImage:
    ref: str  # full reference, e.g. registry.k8s.io/pause:3.10.2
    digest: str  # OCI: the manifest (or index) digest containerd records; docker: "" (not in the archive)
    image_id: str  # config digest when known (docker archives; OCI single manifests), else ""


@dataclass(frozen=True)
class ImageArchive:
    name: str  # file name, for messages and the upload path
    size: int
    sha256: str  # of the whole file: names the upload, and a re-upload after a change
    format: str  # "oci" | "docker"
    images: tuple[ArchivedImage, ...]

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(i.ref for i in self.images)


def _json(tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: str) -> Any:
    member = members.get(path)
    if member is None or not member.isfile():
        raise ArchiveError(f"{path} is missing")
    fh = tf.extractfile(member)
    if fh is None:
        raise ArchiveError(f"{path} is not a regular file")
    try:
        return json.loads(fh.read())
    except ValueError:
        raise ArchiveError(f"{path} is not valid JSON") from None


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _objects(doc: object, empty: str, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The items of a JSON list of objects, each checked as it is reached (so an earlier item's own problem is
    reported first); `empty` is the message when `doc` is not a non-empty list, `label` names an item."""
    if not isinstance(doc, list) or not doc:
        raise ArchiveError(empty)
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ArchiveError(f"{label}[{i}] is not an object")
        yield i, item


def _oci(tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[ArchivedImage]:
    index = _json(tf, members, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    out = []
    for i, desc in _objects(manifests, "index.json lists no manifests", "index.json manifests"):
        digest = desc.get("digest", "")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ArchiveError(f"index.json manifests[{i}] has no sha256 digest")
        if desc.get("mediaType") not in _MANIFEST_TYPES:
            raise ArchiveError(f"index.json manifests[{i}] has media type {desc.get('mediaType')!r}, not an image")
        if _blob_path(digest) not in members:
            raise ArchiveError(f"the manifest {digest[:19]} named by index.json is not in the archive")
        ann = desc.get("annotations") or {}
        ref = ann.get(OCI_NAME) or ann.get(OCI_REF) or ""
        if not ref or not _REF.match(ref) or ("/" not in ref and ":" not in ref and "@" not in ref):
            raise ArchiveError(f"index.json manifests[{i}] does not name its image (annotation {OCI_NAME})")
        image_id = ""
        if desc.get("mediaType") in _MANIFEST_TYPES[:2]:
            manifest = _json(tf, members, _blob_path(digest))
            cfg = manifest.get("config", {}) if isinstance(manifest, dict) else {}
            image_id = cfg.get("digest", "") if isinstance(cfg, dict) else ""
            if not _DIGEST.match(image_id) or _blob_path(image_id) not in members:
                raise ArchiveError(f"the image config of {ref} is not in the archive")
            for layer in manifest.get("layers") or []:
                ld = layer.get("digest", "") if isinstance(layer, dict) else ""
                if not _DIGEST.match(ld) or _blob_path(ld) not in members:
                    raise ArchiveError(f"a layer of {ref} ({str(ld)[:19]}) is not in the archive")
        out.append(ArchivedImage(ref, digest, image_id))
    return out


def _docker(tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[ArchivedImage]:
    manifest = _json(tf, members, "manifest.json")
    out = []
    for i, entry in _objects(manifest, "manifest.json lists no images", "manifest.json"):
        config = entry.get("Config", "")
        if not isinstance(config, str) or config not in members:
            raise ArchiveError(f"manifest.json[{i}] names config {config!r}, which is not in the archive")
        for layer in entry.get("Layers") or []:
            if layer not in members:
                raise ArchiveError(f"manifest.json[{i}] names layer {layer!r}, which is not in the archive")
        fh = tf.extractfile(members[config])
        image_id = "sha256:" + hashlib.sha256(fh.read() if fh else b"").hexdigest()
        tags = entry.get("RepoTags") or []
        if not tags:
            raise ArchiveError(f"manifest.json[{i}] has no RepoTags: containerd cannot name the image")
        for tag in tags:
            if not isinstance(tag, str) or not _REF.match(tag):
                raise ArchiveError(f"manifest.json[{i}] has an invalid tag {tag!r}")
            out.append(ArchivedImage(normalize_ref(tag), "", image_id))
    return out


def normalize_ref(ref: str) -> str:
    """Docker's short names as containerd stores them: `busybox:1` -> `docker.io/library/busybox:1`."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def read_archive(name: str, fileobj: IO[bytes]) -> ImageArchive:
    """Parse an image archive from a seekable binary file; ArchiveError says why it is not one."""
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: fileobj.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    fileobj.seek(0)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
            members = {m.name.removeprefix("./"): m for m in tf.getmembers()}
            if "index.json" in members:
                if "oci-layout" not in members:
                    raise ArchiveError("index.json without oci-layout: not an OCI image layout")
                images, fmt = _oci(tf, members), "oci"
            elif "manifest.json" in members:
                images, fmt = _docker(tf, members), "docker"
            else:
                raise ArchiveError("neither an OCI image layout (index.json) nor a docker archive (manifest.json)")
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a tar archive ({exc})") from None
    return ImageArchive(name, size, "sha256:" + digest.hexdigest(), fmt, tuple(images))


def present(image: ArchivedImage, on_host: Mapping[str, str]) -> bool:
    """Whether a host already has this image, from `ref -> digest` as containerd lists its k8s.io images."""
    if image.digest:
        return on_host.get(image.ref) == image.digest
    return image.ref in on_host and bool(image.image_id) and image.image_id in on_host
