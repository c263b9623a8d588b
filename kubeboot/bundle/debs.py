"""Shell (bundle inputs): Debian packages for the nodes and load balancers of a cluster.

* ``kubelet``, ``kubectl``, ``kubeadm`` and ``kubernetes-cni`` built with ``dpkg-deb`` from the binaries of build.sh
  (kubeboot/bundle/binaries.py), shaped like the pkgs.k8s.io packages: version ``<k8s>-1.1``, binaries in
  ``/usr/bin``, ``kubelet.service`` in kubelet, the kubeadm drop-in ``kubelet.service.d/10-kubeadm.conf`` in
  kubeadm; kubernetes-cni (version :data:`CNI_PLUGINS_VERSION`, as on pkgs.k8s.io, which kubelet ``Depends`` on) holds
  the containernetworking/plugins binaries (bridge, host-local, portmap, loopback) under ``/opt/cni/bin`` -- not
  flannel's plugin, which flannel's DaemonSet installs itself. Bit-for-bit reproducible (fixed mtimes,
  ``SOURCE_DATE_EPOCH``, root owner); :func:`ensure_deb` rebuilds one only when its inputs changed.
* Debian's own packages (``containerd``, ``runc``, ``nginx``, ...) and every dependency a minimal Debian host
  (Priority: required + Essential, like ``debootstrap --variant=minbase``) lacks for them, resolved against this
  machine's apt sources and fetched once with ``apt-get download`` into ``<cache>/debs`` (checked against the
  SHA256 of the apt index).

The control text still names "the kubeboot lab harness" (where this code came from): it is part of every
package's bytes, and the lab's apt repository serves these packages to running tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubeboot.bundle import binaries
from kubeboot.bundle.images import DEFAULT_VERSION, _locked
from kubeboot.errors import BundleError

#: Debian packages a node installs besides the Kubernetes ones.
NODE_DEBIAN_PACKAGES: tuple[str, ...] = ("containerd", "runc")
#: Debian packages of the nginx load balancer (external or node-local).
LB_DEBIAN_PACKAGES: tuple[str, ...] = ("nginx", "libnginx-mod-stream")
DEBIAN_PACKAGES: tuple[str, ...] = NODE_DEBIAN_PACKAGES + LB_DEBIAN_PACKAGES
#: Debian revision of the packages built here, like pkgs.k8s.io (``1.37.2-1.1``).
K8S_DEB_REVISION = "1.1"
#: Every mtime in the built .debs (2025-01-01T00:00:00Z).
SOURCE_DATE_EPOCH = 1735689600
#: Bump when the package layout/control text changes in a way the inputs do not show.
BUILDER_VERSION = "2"
#: containernetworking/plugins as built by build.sh (its CNI_PLUGINS_VERSION)
CNI_PLUGINS_VERSION = "1.10.0"
#: the plugins kubernetes-cni carries: what flannel's bridge delegate and its portmap chain call, and loopback
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_BIN = "/opt/cni/bin"
#: gzip level 1: ~0.8 s for kubectl's 62 MB (level 6: 2.6 s, xz: 16 s); gzip works with any dpkg.
DEB_COMPRESSION = ("gzip", "1")
ARCH = "amd64"
#: (program, Debian package that has it) for building and fetching packages
TOOLS: tuple[tuple[str, str], ...] = (("dpkg-deb", "dpkg"), ("apt-get", "apt"), ("apt-cache", "apt"))
#: the environment of every tool run here: a plain PATH and the C locale whose output is parsed
TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "TERM": "dumb"}

_APT_DEPENDS_FLAGS = (
    "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
    "--no-replaces", "--no-enhances",
)  # fmt: skip

KUBELET_SERVICE = """\
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """\
# Installed by the kubeadm package: how kubelet is started on a kubeadm node.
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# written by "kubeadm init" / "kubeadm join": sets KUBELET_KUBEADM_ARGS
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# the administrator's last-resort overrides: KUBELET_EXTRA_ARGS
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""



class DebError(BundleError):
    """A package could not be built or fetched."""


class DebInputMissing(DebError):
    """A prerequisite is missing on this machine (a tool, a binary): the message names the fix."""


# ---------------------------------------------------------------------------------------------
# package specs


@dataclass(frozen=True)
class HarnessPackage:
    """A Kubernetes .deb built here from binaries of build.sh (the lab harness built them first)."""

    name: str
    version: str
    binary: Path | None  # installed as /usr/bin/<name>; None: the package has no such binary
    depends: tuple[str, ...]
    description: str
    #: (absolute path inside the package, content, mode)
    files: tuple[tuple[str, str, int], ...] = ()
    #: empty directories the package owns
    dirs: tuple[str, ...] = ()
    #: (absolute path inside the package, file to copy, mode 0755)
    binaries: tuple[tuple[str, Path], ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}_{ARCH}.deb"

    def control(self, installed_kib: int) -> str:
        lines = [
            f"Package: {self.name}",
            f"Version: {self.version}",
            f"Architecture: {ARCH}",
            "Maintainer: kubeboot lab harness <kubeboot-lab@localhost>",
            f"Installed-Size: {installed_kib}",
        ]
        if self.depends:
            lines.append("Depends: " + ", ".join(self.depends))
        lines += [
            "Section: admin",
            "Priority: optional",
            "Homepage: https://kubernetes.io",
            f"Description: {self.description}",
            " Built by tests/lab/aptrepo.py from the kubeboot reference binaries; shaped like the",
            " pkgs.k8s.io package of the same name.",
        ]
        return "\n".join(lines) + "\n"


def deb_version(k8s_version: str) -> str:
    """``1.37.2`` -> ``1.37.2-1.1`` (the pkgs.k8s.io form)."""
    return f"{k8s_version.removeprefix('v')}-{K8S_DEB_REVISION}"


def kubernetes_cni_package(k8s_version: str = DEFAULT_VERSION) -> HarnessPackage:
    """``kubernetes-cni`` from the cni-bin dir of build.sh (kubeboot/bundle/binaries.py).

    Raises :class:`DebInputMissing` naming the build command when a plugin is missing."""
    d = binaries.cni_bin_dir(k8s_version.removeprefix("v"))
    missing = [p for p in CNI_PLUGINS if not (d / p).is_file()]
    if missing:
        raise DebInputMissing(
            f"CNI plugins missing for kubernetes-cni: {', '.join(missing)} in {d} "
            f"(build: {binaries.script_command(['cni-' + p for p in missing], k8s_version)})"
        )
    return HarnessPackage(
        name="kubernetes-cni",
        version=f"{CNI_PLUGINS_VERSION}-{K8S_DEB_REVISION}",
        binary=None,
        depends=(),
        description="Binaries required to provision kubernetes container networking",
        binaries=tuple((f"{CNI_BIN}/{p}", d / p) for p in CNI_PLUGINS),
        dirs=("/etc/cni/net.d",),
    )


def harness_packages(k8s_version: str = DEFAULT_VERSION, *, cni: bool = True,
                     require: tuple[str, ...] = ("kubelet", "kubectl")) -> list[HarnessPackage]:
    """kubernetes-cni (unless ``cni=False``), kubelet and kubectl (required) and kubeadm (when built, or required
    when ``require`` names it).

    Raises :class:`DebInputMissing` naming the build command when a required binary or a CNI plugin is missing."""
    ver = k8s_version.removeprefix("v")
    debver = deb_version(ver)
    minor_floor = ".".join(ver.split(".")[:2]) + ".0"
    bins = {name: binaries.built(name, ver) for name in ("kubelet", "kubectl", "kubeadm")}
    missing = [n for n in require if bins[n] is None]
    if missing:
        raise DebInputMissing(
            "binaries missing for the Kubernetes packages: "
            + "; ".join(f"{n} v{ver} (build: {binaries.script_command([n], ver)})" for n in missing)
        )
    kubelet, kubectl, kubeadm = bins["kubelet"], bins["kubectl"], bins["kubeadm"]
    assert kubelet is not None and kubectl is not None
    pkgs = [kubernetes_cni_package(ver)] if cni else []
    pkgs += [
        HarnessPackage(
            name="kubelet",
            version=debver,
            binary=kubelet,
            # pkgs.k8s.io also lists iproute2, socat, ethtool, ebtables, conntrack: left out here
            depends=("iptables (>= 1.4.21)", "kubernetes-cni (>= 1.1.1)", "mount", "util-linux"),
            description="Node agent for Kubernetes clusters",
            files=(("/usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE, 0o644),),
            dirs=("/etc/kubernetes/manifests",),
        ),
        HarnessPackage(
            name="kubectl",
            version=debver,
            binary=kubectl,
            depends=(),
            description="Command-line utility for interacting with a Kubernetes cluster",
        ),
    ]
    if kubeadm is not None:
        pkgs.append(
            HarnessPackage(
                name="kubeadm",
                version=debver,
                binary=kubeadm,
                # pkgs.k8s.io also depends on cri-tools (not available here)
                depends=(f"kubelet (>= {minor_floor})", f"kubectl (>= {minor_floor})"),
                description="Command-line utility for administering a Kubernetes cluster",
                files=(("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN, 0o644),),
            )
        )
    return pkgs


# ---------------------------------------------------------------------------------------------
# helpers


def missing_tools(tools: tuple[tuple[str, str], ...] = TOOLS) -> list[str]:
    """Why the packages cannot be built or fetched here (empty: they can)."""
    problems = []
    for tool, pkg in tools:
        if shutil.which(tool, path=TOOL_ENV["PATH"]) is None:
            problems.append(f"`{tool}` is missing (apt-get install {pkg})")
    return problems


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(
        argv, cwd=cwd, env={**TOOL_ENV, **(env or {})}, capture_output=True, text=True, check=False
    )
    if p.returncode != 0:
        raise DebError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _dep_names(depends: tuple[str, ...]) -> list[str]:
    """``("iptables (>= 1.4.21)", "a | b")`` -> ``["iptables", "a"]`` (first alternative)."""
    return [d.split("|")[0].split("(")[0].strip() for d in depends]


def parse_packages_index(text: str) -> dict[str, str]:
    """``Package -> Version`` from an apt ``Packages`` file (raises on a duplicate package)."""
    out: dict[str, str] = {}
    for stanza in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if line and not line.startswith(" ") and ": " in line
        )
        if "Package" not in fields:
            continue
        if fields["Package"] in out:
            raise DebError(f"Packages lists {fields['Package']} twice")
        out[fields["Package"]] = fields["Version"]
    return out


def parse_packages_versions(text: str) -> dict[str, list[str]]:
    """``Package -> [Version, ...]`` (in index order) from an apt ``Packages`` file that may list a package
    at several versions (a repository built with ``also``)."""
    out: dict[str, list[str]] = {}
    for stanza in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if line and not line.startswith(" ") and ": " in line
        )
        if "Package" in fields:
            out.setdefault(fields["Package"], []).append(fields["Version"])
    return out


# ---------------------------------------------------------------------------------------------
# Debian .debs


def _apt_lists_signature() -> str:
    """Changes when the machine's apt lists change (then the resolution is redone)."""
    h = hashlib.sha256()
    lists = Path("/var/lib/apt/lists")
    for p in sorted(lists.glob("*Packages*")):
        st = p.stat()
        h.update(f"{p.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _depends_closure(roots: list[str]) -> set[str]:
    out = _run(["apt-cache", "depends", *_APT_DEPENDS_FLAGS, *roots])
    return {line.strip() for line in out.splitlines() if line and not line.startswith((" ", "<"))}


def minbase_closure() -> set[str]:
    """Every package a minimal Debian host has: Priority required + Essential, with their
    dependencies (what ``debootstrap --variant=minbase`` installs, over-approximated for alternatives)."""
    base = set()
    name = ""
    dump = subprocess.run(
        ["apt-cache", "dumpavail"], env=TOOL_ENV, capture_output=True, text=True, check=True
    ).stdout
    for line in dump.splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line == "Priority: required" or line == "Essential: yes":
            base.add(name)
    return _depends_closure(sorted(base))


def resolve_debian_debs(roots: Iterable[str]) -> list[dict[str, str]]:
    """The Debian .debs a minimal host needs to install ``roots``: their dependency closure minus the minimal
    base.  Each entry: name, filename, uri, sha256 (from ``apt-get download --print-uris``, no download)."""
    roots = sorted(set(roots))
    want = sorted(_depends_closure(roots) - minbase_closure())
    out = _run(["apt-get", "download", "--print-uris", *want])
    entries = []
    for line in out.splitlines():
        # 'http://deb.debian.org/.../runc_1.1.5+ds1-1+deb12u1_amd64.deb' runc_1.1.5..._amd64.deb 2822072 SHA256:...
        m = re.match(r"^'([^']+)' (\S+) (\d+) (?:SHA256:)?([0-9a-f]{64})$", line.strip())
        if not m:
            raise DebError(f"unexpected `apt-get download --print-uris` line: {line!r}")
        uri, filename, _size, digest = m.groups()
        entries.append({"name": filename.split("_", 1)[0], "filename": filename, "uri": uri, "sha256": digest})
    if sorted(e["name"] for e in entries) != want:
        raise DebError(f"apt-get download --print-uris gave {[e['name'] for e in entries]}, wanted {want}")
    return entries


def fetch_debian_debs(cache: Path, roots: Iterable[str]) -> list[Path]:
    """The .debs of :func:`resolve_debian_debs` (``roots`` and what a minimal host lacks for them) in ``cache``:
    resolved once per set of roots and state of the apt lists (``cache/resolved.json``), downloaded only when
    the cache lacks them."""
    cache.mkdir(parents=True, exist_ok=True)
    roots = sorted(set(roots))
    with _locked(cache / ".lock"):
        state_path = cache / "resolved.json"
        key = {"lists": _apt_lists_signature(), "roots": roots}
        state = _read_json(state_path)
        resolutions = state.get("resolutions")
        if not isinstance(resolutions, dict):
            resolutions = {}
        seen = resolutions.get(",".join(roots))
        entries: list[dict[str, str]]
        if isinstance(seen, dict) and seen.get("key") == key and isinstance(seen.get("entries"), list):
            entries = seen["entries"]
        else:
            entries = resolve_debian_debs(roots)
            resolutions[",".join(roots)] = {"key": key, "entries": entries}
            _write_json(state_path, {"resolutions": resolutions})
        missing = [e for e in entries if not (cache / e["filename"]).is_file()]
        if missing:
            with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
                # as root into a root-owned dir: no _apt sandbox (it could not write there anyway)
                _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *[e["name"] for e in missing]],
                     cwd=Path(tmp))  # fmt: skip
                for e in missing:
                    got = Path(tmp) / e["filename"]
                    if not got.is_file():
                        raise DebError(f"apt-get download did not produce {e['filename']}")
                    if sha256_file(got) != e["sha256"]:
                        raise DebError(f"{e['filename']}: SHA256 differs from the apt index")
                    got.replace(cache / e["filename"])
        return [cache / e["filename"] for e in entries]


def debian_roots(pkgs: Iterable[HarnessPackage]) -> list[str]:
    """The Debian packages ``pkgs`` depend on (first alternatives), not counting each other."""
    pkgs = list(pkgs)
    return sorted({d for p in pkgs for d in _dep_names(p.depends)} - {p.name for p in pkgs})


def deb_fields(filename: str) -> tuple[str, str]:
    """(package, version) of an archive file name ``name_version_arch.deb`` (apt-get download writes an epoch's
    ``:`` as ``%3a``)."""
    from urllib.parse import unquote

    parts = filename.removesuffix(".deb").split("_")
    if len(parts) != 3:
        raise DebError(f"{filename}: not a name_version_arch.deb file name")
    return parts[0], unquote(parts[1])


# ---------------------------------------------------------------------------------------------
# Kubernetes .debs


def _build_input_key(pkg: HarnessPackage) -> str:
    h = hashlib.sha256()
    h.update(f"builder {BUILDER_VERSION} {DEB_COMPRESSION} {SOURCE_DATE_EPOCH}\n".encode())
    if pkg.binary is not None:
        h.update(f"binary {sha256_file(pkg.binary)}\n".encode())
    for path, src in pkg.binaries:
        h.update(f"binary {path} {sha256_file(src)}\n".encode())
    h.update(pkg.control(0).encode())
    for path, content, mode in pkg.files:
        h.update(f"file {path} {mode:o} {len(content)}\n{content}".encode())
    for d in pkg.dirs:
        h.update(f"dir {d}\n".encode())
    return h.hexdigest()


def build_deb(pkg: HarnessPackage, out: Path) -> None:
    """``dpkg-deb --build`` ``pkg`` into ``out`` (reproducible)."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".build-{pkg.name}-") as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        installs = [(f"/usr/bin/{pkg.name}", pkg.binary)] if pkg.binary is not None else []
        for path, src in [*installs, *pkg.binaries]:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755)
        for path, content, mode in pkg.files:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            os.chmod(target, mode)
        for d in pkg.dirs:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        (root / "DEBIAN" / "control").write_text(pkg.control((size + 1023) // 1024))
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)
            os.utime(p, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)
        os.chmod(root / "DEBIAN" / "control", 0o644)
        tmp_deb = Path(tmp) / pkg.filename
        kind, level = DEB_COMPRESSION
        _run(
            ["dpkg-deb", "--root-owner-group", f"-Z{kind}", f"-z{level}", "--build", str(root), str(tmp_deb)],
            env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)},
        )
        tmp_deb.replace(out)


def ensure_deb(pkg: HarnessPackage, out: Path, stamp: Path) -> bool:
    """Build ``pkg`` into ``out`` unless ``stamp`` records the same inputs and ``out``'s digest; True if built."""
    key = _build_input_key(pkg)
    old = _read_json(stamp)
    if old.get("input") == key and out.is_file() and old.get("sha256") == sha256_file(out):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    build_deb(pkg, out)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    _write_json(stamp, {"input": key, "sha256": sha256_file(out)})
    return True
