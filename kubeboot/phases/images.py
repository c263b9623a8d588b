"""Phase `images`: import the user's image archives (air-gapped installs) into every node's containerd, in the
k8s.io namespace the kubelet's CRI uses, before the kubelet needs them. An archive is uploaded and imported only
on a node that misses one of its images (by digest); a re-run imports nothing."""

from __future__ import annotations

import shlex

from kubeboot.config.model import Host
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.phases.runtime import NODES
from kubeboot.plan.actions import Action, RunCommand, UploadFile
from kubeboot.plan.archives import ImageArchive, present
from kubeboot.render.images import split_ref
from kubeboot.render.manifests import STATIC_PODS

UPLOAD_DIR = "/var/cache/kubeboot/images"


def control_plane_only(ctx: PhaseContext, ref: str) -> bool:
    """The ref is a control-plane component's image, of any version (the repository's, without the tag): an
    archive of another release's control plane (an upgrade's images directory holds both) is no worker's either."""
    return split_ref(ref)[0] in {f"{ctx.config.image_repository}/{c}" for c in STATIC_PODS}


def wanted_on(ctx: PhaseContext, host: Host, archive: ImageArchive) -> bool:
    """Workers skip archives that hold nothing but control-plane images (they never run them)."""
    return host.is_control_plane or not all(control_plane_only(ctx, r) for r in archive.refs)


def plan_images(ctx: PhaseContext, host: Host) -> list[Action]:
    on_host = ctx.facts[host.name].images
    out: list[Action] = []
    for local, archive in ctx.options.image_archives:
        if not wanted_on(ctx, host, archive):
            continue
        missing = [i.ref for i in archive.images if not present(i, on_host)]
        if not missing:
            continue
        remote = f"{UPLOAD_DIR}/{archive.sha256[7:19]}-{archive.name}"
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        out.append(UploadFile(local, remote, archive.size, archive.sha256, f"{shown} not in containerd"))
        q = shlex.quote(remote)
        out.append(RunCommand(f"ctr -n k8s.io images import {q}; rc=$?; rm -f {q}; exit $rc",
                              f"import {archive.name} into containerd (k8s.io)", timeout=900))
    return out


IMAGES = Phase("images", "Import the supplied image archives into containerd (only images a node lacks)",
               plan_images, roles=NODES)
