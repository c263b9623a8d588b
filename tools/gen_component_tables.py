#!/usr/bin/env python3
"""Regenerate the data tables kubeboot validates component settings against (kubeboot/config/data/).

    python3 tools/gen_component_tables.py kubelet [--kubelet-module-version 0.37.2]
        KubeletConfiguration v1beta1 field table -> kubeboot/config/data/kubelet-config-v1beta1.json.
        Builds tools/kubeletfields (reflection over the Go type) in a throw-away module that requires
        k8s.io/kubelet at that version; needs Go and the module (from the proxy, or the cache with GOPROXY=off).

    python3 tools/gen_component_tables.py flags [--version 1.37.2] [--ref-cache DIR]
        Flag names (and pflag value types) of kube-apiserver, kube-controller-manager, kube-scheduler and etcd,
        parsed from the reference binaries' `--help`
        (${KUBEBOOT_REF_CACHE:-/var/cache/kubeboot-ref}/v<version>/bin, built by tests/reference/build.sh)
        -> kubeboot/config/data/flags-<minor>.json.

    --check: print nothing and exit 1 if the committed file differs from what would be generated.

tests/integration/test_component_tables.py runs both with --check when Go/the module or the binaries exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "kubeboot" / "config" / "data"
KUBELET_TABLE = DATA / "kubelet-config-v1beta1.json"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
DEFAULT_KUBELET_MODULE = "0.37.2"
DEFAULT_VERSION = "1.37.2"

# pflag help lines: "      --name type   text" or "  -v, --v Level   text" (a boolean has no type; the text
# starts after a run of spaces; wrapped text lines are indented far deeper); etcd: "  --name 'default'".
_PFLAG = re.compile(r"^  (?:-[A-Za-z], |    )--([a-z0-9][a-z0-9.-]*)(?: (\S+))?(?: {2,}|$)")
_ETCD = re.compile(r"^ {2}--([a-z0-9][a-z0-9.-]*)")


def kubelet_table(module_version: str, offline: bool = False) -> str:
    """The JSON text of the KubeletConfiguration field table for k8s.io/kubelet@v<module_version>."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("go not found")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    if offline:
        env["GOPROXY"] = "off"
    with tempfile.TemporaryDirectory(prefix="kubeletfields-") as tmp:
        shutil.copy(REPO / "tools" / "kubeletfields" / "main.go", tmp)
        Path(tmp, "go.mod").write_text(f"module kubeboot.local/kubeletfields\n\ngo 1.24\n\n"
                                       f"require k8s.io/kubelet v{module_version}\n")
        run = subprocess.run([go, "run", "."], cwd=tmp, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"kubeletfields failed:\n{run.stderr}")
    return json.dumps(json.loads(run.stdout), indent=1, sort_keys=True) + "\n"


def parse_help(component: str, text: str) -> dict[str, str]:
    """flag name -> pflag value type ("" for booleans; etcd: "" always, its help shows defaults, not types)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if component == "etcd":
            m = _ETCD.match(line)
            if m:
                out[m.group(1)] = ""
            continue
        m = _PFLAG.match(line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def flags_table(version: str, ref_cache: Path) -> str:
    bin_dir = ref_cache / f"v{version}" / "bin"
    table: dict[str, object] = {"source": f"--help of the v{version} reference binaries (tests/reference/build.sh)",
                                "generator": "tools/gen_component_tables.py flags"}
    for comp in COMPONENTS:
        binary = bin_dir / comp
        if not binary.exists():
            raise SystemExit(f"{binary} not found: run tests/reference/build.sh {version}")
        run = subprocess.run([str(binary), "--help"], capture_output=True, text=True)
        text = run.stdout + run.stderr  # etcd prints its usage to stderr
        flags = parse_help(comp, text)
        if len(flags) < 20:
            raise SystemExit(f"{comp} --help: only {len(flags)} flags parsed; the help format changed?")
        table[comp] = dict(sorted(flags.items()))
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def flags_path(version: str) -> Path:
    minor = ".".join(version.split(".")[:2])
    return DATA / f"flags-{minor}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kubelet")
    k.add_argument("--kubelet-module-version", default=DEFAULT_KUBELET_MODULE)
    k.add_argument("--offline", action="store_true", help="GOPROXY=off: use the module cache only")
    k.add_argument("--check", action="store_true")
    f = sub.add_parser("flags")
    f.add_argument("--version", default=DEFAULT_VERSION)
    f.add_argument("--ref-cache", type=Path,
                   default=Path(os.environ.get("KUBEBOOT_REF_CACHE", "/var/cache/kubeboot-ref")))
    f.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.what == "kubelet":
        path, text = KUBELET_TABLE, kubelet_table(args.kubelet_module_version, args.offline)
    else:
        path, text = flags_path(args.version), flags_table(args.version, args.ref_cache)
    if args.check:
        return 0 if path.exists() and path.read_text() == text else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
