"""Where kubeboot keeps what it builds or fetches once and reuses (the offline bundles' inputs: reference binaries,
image archives, Debian packages; the sandbox hosts' base root filesystem)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE_ROOT = Path("/var/cache/kubeboot")


def cache_root() -> Path:
    """``$KUBEBOOT_CACHE``, else ``$KUBEBOOT_REF_CACHE`` (the test harness's older name), else /var/cache/kubeboot."""
    return Path(os.environ.get("KUBEBOOT_CACHE") or os.environ.get("KUBEBOOT_REF_CACHE") or DEFAULT_CACHE_ROOT)
