"""The offline bundle the sandbox tests install from: `kubeboot bundle build --from-source` into the cache's
bundles/v<version> (where `kubeboot sandbox up` looks by default), built once from the warm cache tests/setup.sh
fills and a no-op afterwards. Skips, naming what is missing, when the reference binaries or images are not built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubeboot.bundle import binaries, images
from kubeboot.workflows.sandbox import default_bundle_dir
from tests.reference.binaries import DEFAULT_VERSION

REPO = Path(__file__).resolve().parents[2]


def require_bundle(version: str = DEFAULT_VERSION) -> Path:
    missing = [n for n in binaries.NAMES if binaries.built(n, version) is None]
    if missing:
        pytest.skip(f"reference binaries v{version} not built: {', '.join(missing)} (bash tests/setup.sh)")
    built = {i.name for i in images.read_images_json(images.default_images_dir(version))}
    if set(images.IMAGE_NAMES) - built:
        pytest.skip(f"images v{version} not built: {', '.join(sorted(set(images.IMAGE_NAMES) - built))} "
                    f"(bash tests/setup.sh)")
    out = default_bundle_dir(version)
    got = subprocess.run([sys.executable, "-m", "kubeboot.cli", "bundle", "build", "--from-source", "--version",
                          version, "-o", str(out)], capture_output=True, text=True, cwd=REPO, timeout=3600,
                         stdin=subprocess.DEVNULL)
    assert got.returncode == 0, f"kubeboot bundle build failed:\n{got.stderr[-4000:]}"
    return out
