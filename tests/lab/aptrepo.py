"""A local apt repository served on the lab network (the "mirror" a lab host installs from).

:func:`build_repo` fills a directory with a *flat* apt repository:

* ``containerd``, ``runc``, ``nginx`` and ``libnginx-mod-stream`` -- and every dependency a minimal Debian 12 host
  (Priority: required + Essential, like ``debootstrap --variant=minbase``) lacks for them or for the Debian packages
  the harness packages depend on (``iptables``) -- as .debs from Debian's archive, fetched once with
  ``apt-get download`` into a cache (``<cache>/debs``) and reused;
* ``kubelet``, ``kubectl``, ``kubernetes-cni`` and (when its reference binary exists) ``kubeadm`` built with
  ``dpkg-deb`` from the reference binaries, shaped like the pkgs.k8s.io packages;
* ``Packages``, ``Packages.gz`` and ``Release`` from ``apt-ftparchive`` (``apt-get install apt-utils``).

Building and fetching the packages is kubeboot's own (kubeboot/bundle/debs.py: the packages of an offline bundle);
this module makes a served apt repository of them.

``build_repo(dest, "1.37.2", also=("1.36.3",))`` adds kubelet, kubectl and kubeadm of the other versions
(``1.36.3-1.1`` beside ``1.37.2-1.1``), so an upgrade test installs the old release and later the new one from
one sources line; a module marked ``pytest.mark.apt_versions("1.37.2", "1.36.3")`` gets that from ``apt_repo``.

The .debs are bit-for-bit reproducible (fixed mtimes, ``SOURCE_DATE_EPOCH``, root owner) and a
rebuild with unchanged inputs (binary digest, control text, unit files) skips them; the index is
only regenerated when the set of .debs changed.

:func:`serve` runs ``python -m http.server`` inside the lab's controller namespace on
``10.200.0.1:<port>``; the ``apt_repo`` fixture does both for a module's lab.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Iterator, Sequence

import pytest

from kubeboot.bundle import debs
from kubeboot.bundle.debs import (  # noqa: F401  (re-exported for the tests)
    ARCH,
    BUILDER_VERSION,
    CNI_BIN,
    CNI_PLUGINS,
    CNI_PLUGINS_VERSION,
    DEB_COMPRESSION,
    DEBIAN_PACKAGES,
    K8S_DEB_REVISION,
    KUBEADM_DROPIN,
    KUBELET_SERVICE,
    SOURCE_DATE_EPOCH,
    DebError,
    DebInputMissing,
    HarnessPackage,
    _dep_names,
    _read_json,
    _run,
    _write_json,
    build_deb,
    deb_version,
    ensure_deb,
    harness_packages,
    kubernetes_cni_package,
    minbase_closure,
    parse_packages_index,
    parse_packages_versions,
    sha256_file,
)
from tests.reference.binaries import cache_root

from .common import locked
from .lab import GATEWAY, SAFE_ENV, netns_socket

if TYPE_CHECKING:
    from .lab import Lab
    from .systemd import SystemdLab

    AnyLab = Lab | SystemdLab

DEFAULT_PORT = 8080
#: Apt packages needed on the machine to build the repo (beyond tests/setup.sh).
MACHINE_PACKAGES = ("apt-utils",)

#: The repository could not be built or served (kubeboot's DebError: a package could not be built or fetched).
AptRepoError = DebError
#: A prerequisite is missing on this machine (tool, reference binary): tests skip with this.
AptRepoUnavailable = DebInputMissing


# ---------------------------------------------------------------------------------------------
# helpers


def missing_tools() -> list[str]:
    """Why the repo cannot be built here (empty: it can)."""
    return debs.missing_tools((*debs.TOOLS, ("apt-ftparchive", "apt-utils")))


# ---------------------------------------------------------------------------------------------
# Debian .debs


def resolve_debian_debs(extra_roots: list[str]) -> list[dict[str, str]]:
    """The Debian .debs the repo needs: closure of DEBIAN_PACKAGES + ``extra_roots`` minus the minimal base
    (:func:`kubeboot.bundle.debs.resolve_debian_debs`)."""
    return debs.resolve_debian_debs(sorted(set(DEBIAN_PACKAGES) | set(extra_roots)))


def fetch_debian_debs(cache: Path, extra_roots: list[str]) -> list[Path]:
    """Resolve (cached per apt-lists state) and download (only what the cache lacks) the Debian .debs."""
    return debs.fetch_debian_debs(cache, sorted(set(DEBIAN_PACKAGES) | set(extra_roots)))


# ---------------------------------------------------------------------------------------------
# the repository


def _place(src: Path, dst: Path) -> None:
    """Hard link (same filesystem) or copy ``src`` to ``dst`` unless ``dst`` already is that file."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(src, dst):
            return
        if dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha256_file(src):
            return
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
    tmp.replace(dst)


def _write_index(dest: Path) -> None:
    packages = _run(["apt-ftparchive", "packages", "."], cwd=dest)
    (dest / "Packages").write_text(packages)
    with open(dest / "Packages.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(packages.encode())
    (dest / "Release").unlink(missing_ok=True)  # else `release .` would hash the old one
    release = _run(
        [
            "apt-ftparchive",
            "-o", "APT::FTPArchive::Release::Origin=kubeboot-lab",
            "-o", "APT::FTPArchive::Release::Label=kubeboot-lab",
            "-o", "APT::FTPArchive::Release::Suite=lab",
            "-o", "APT::FTPArchive::Release::Codename=lab",
            "-o", f"APT::FTPArchive::Release::Architectures={ARCH}",
            "-o", "APT::FTPArchive::Release::Description=kubeboot lab apt repository (tests/lab/aptrepo.py)",
            "-o", f"APT::FTPArchive::Release::Date={formatdate(SOURCE_DATE_EPOCH, usegmt=True)}",
            "release", ".",
        ],
        cwd=dest,
    )  # fmt: skip
    (dest / "Release").write_text(release)


@dataclass
class BuildReport:
    """What the last :func:`build_repo` call did (``dest/manifest.json`` holds the packages)."""

    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    index_written: bool = False
    seconds: float = 0.0


#: the report of the last build_repo() in this process (for timings in tests/benchmarks)
last_build: BuildReport = BuildReport()


def _versions(k8s_version: str, also: Sequence[str]) -> list[str]:
    """The primary version, then the ``also`` ones (no leading v); ValueError on a repeated version."""
    versions = [v.removeprefix("v") for v in (k8s_version, *also)]
    if len(set(versions)) != len(versions):
        raise ValueError(f"a version is given twice: {k8s_version!r}, also={tuple(also)!r}")
    return versions


def build_repo(
    dest: Path, k8s_version: str = "1.37.2", *, cache: Path | None = None, also: Sequence[str] = ()
) -> Path:
    """Fill ``dest`` with a flat apt repository (see module doc); return ``dest``.

    ``also``: more Kubernetes versions whose kubelet, kubectl and kubeadm the repo carries beside
    ``k8s_version``'s (one ``apt-get install kubelet=<v>-1.1`` source for an upgrade test); kubernetes-cni
    is ``k8s_version``'s alone.  ``dest/manifest.json`` lists ``{package: {version, source, filename,
    sha256}}`` for ``k8s_version`` and the Debian packages, and (only with ``also``) ``"also": {version:
    {package: ...}}``: together exactly what the ``Packages`` index holds.  Raises
    :class:`AptRepoUnavailable` when a tool or reference binary is missing, :class:`AptRepoError` when a
    step fails."""
    global last_build
    t0 = time.monotonic()
    report = BuildReport()
    primary, *others = _versions(k8s_version, also)
    problems = missing_tools()
    if problems:
        raise AptRepoUnavailable("cannot build the lab apt repo: " + "; ".join(problems))
    by_version = {primary: harness_packages(primary), **{v: harness_packages(v, cni=False) for v in others}}
    pkgs = [p for ps in by_version.values() for p in ps]
    cache = cache if cache is not None else cache_root() / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    with locked(dest / ".lock"):
        stamps_dir = dest / ".stamps"
        stamps_dir.mkdir(exist_ok=True)
        manifests: dict[str, dict[str, dict[str, str]]] = {v: {} for v in by_version}
        manifest = manifests[primary]

        # 1. harness packages: rebuilt only when an input changed
        for version, version_pkgs in by_version.items():
            for pkg in version_pkgs:
                # the primary version's stamps keep their single-version names (kubelet.json)
                stamp = stamps_dir / (f"{pkg.name}.json" if version == primary else f"{pkg.name}_{pkg.version}.json")
                if ensure_deb(pkg, dest / pkg.filename, stamp):
                    report.built.append(pkg.filename)
                else:
                    report.reused.append(pkg.filename)
                manifests[version][pkg.name] = {
                    "version": pkg.version, "source": "harness", "filename": pkg.filename,
                    "sha256": str(_read_json(stamp)["sha256"]),
                }  # fmt: skip

        # 2. Debian packages: from the shared cache
        debian_roots = sorted({d for p in pkgs for d in _dep_names(p.depends)} - {p.name for p in pkgs})
        before = {p.name for p in cache.glob("*.deb")} if cache.is_dir() else set()
        for deb in fetch_debian_debs(cache, debian_roots):
            if deb.name not in before:
                report.downloaded.append(deb.name)
            _place(deb, dest / deb.name)
            control = dict(
                line.split(": ", 1) for line in _run(["dpkg-deb", "-f", str(deb), "Package", "Version"]).splitlines()
            )
            manifest[control["Package"]] = {
                "version": control["Version"], "source": "debian", "filename": deb.name,
                "sha256": sha256_file(dest / deb.name),
            }  # fmt: skip

        # 3. nothing else: .debs of other versions / dropped packages go
        every = [m for ms in manifests.values() for m in ms.values()]
        wanted = {m["filename"] for m in every}
        for stale in dest.glob("*.deb"):
            if stale.name not in wanted:
                stale.unlink()

        # 4. index, only when the set of .debs changed
        index_key = hashlib.sha256(
            json.dumps(sorted((m["filename"], m["sha256"]) for m in every)).encode()
        ).hexdigest()
        index_stamp = stamps_dir / "index.json"
        if _read_json(index_stamp).get("key") != index_key or not all(
            (dest / f).is_file() for f in ("Packages", "Packages.gz", "Release")
        ):
            _write_index(dest)
            _write_json(index_stamp, {"key": index_key})
            report.index_written = True
        doc: dict[str, object] = {"k8s_version": primary, "packages": manifest}
        if others:
            doc["also"] = {v: manifests[v] for v in others}
        _write_json(dest / "manifest.json", doc)
    report.seconds = time.monotonic() - t0
    last_build = report
    return dest


def read_manifest(repo: Path, k8s_version: str | None = None) -> dict[str, dict[str, str]]:
    """``{package: {version, source, filename, sha256}}`` written by :func:`build_repo`: the primary
    version's and the Debian packages (``k8s_version`` None or the primary), or the kubelet, kubectl and
    kubeadm of a version built ``also``.  KeyError for a version the repo does not carry."""
    data = json.loads((repo / "manifest.json").read_text())
    packages: dict[str, dict[str, str]]
    if k8s_version is None or k8s_version.removeprefix("v") == data["k8s_version"]:
        packages = data["packages"]
    else:
        packages = data.get("also", {})[k8s_version.removeprefix("v")]
    return packages


def default_repo_dir(k8s_version: str = "1.37.2", also: Sequence[str] = ()) -> Path:
    """Where the fixture keeps the repo between runs: ``<ref cache>/aptrepo/v<version>``, or with ``also``
    ``<ref cache>/aptrepo/v<version>+v<also>...`` (a directory per set of versions: each keeps only its .debs)."""
    return cache_root() / "aptrepo" / "+".join(f"v{v}" for v in _versions(k8s_version, also))


# ---------------------------------------------------------------------------------------------
# serving it on the lab network


@dataclass
class RepoServer:
    """``python -m http.server`` serving ``repo`` on ``10.200.0.1:<port>`` in a lab's controller netns."""

    lab_name: str
    ctl_netns: str
    repo: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = GATEWAY

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"

    @property
    def sources_line(self) -> str:
        """The one-line apt source for the repo (flat, unsigned)."""
        return f"deb [trusted=yes] {self.url} ./"

    def running(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """HTTP GET ``path`` from inside the controller netns; (status, body)."""
        s = netns_socket(self.ctl_netns)
        try:
            s.settimeout(timeout)
            s.connect((self.address, self.port))
            s.sendall(f"GET /{path.lstrip('/')} HTTP/1.0\r\nHost: {self.address}\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            s.close()
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def stop(self, timeout: float = 5.0) -> None:
        """Kill exactly this server process (SIGTERM, then SIGKILL).  Idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> RepoServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, n: int = 10) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def serve(lab: AnyLab, repo: Path, port: int = DEFAULT_PORT, timeout: float = 10.0) -> RepoServer:
    """Serve ``repo`` over HTTP on ``10.200.0.1:port`` inside ``lab``'s controller namespace.

    Returns once ``GET /Release`` answers 200 (bounded poll).  The process lives in the controller
    netns, so ``lab.down()`` kills it too if :meth:`RepoServer.stop` is never called."""
    if not (repo / "Release").is_file():
        raise AptRepoError(f"{repo} is not a built repository (no Release): build_repo() first")
    log_path = lab.dir / f"aptrepo-{port}.log"
    argv = [
        "ip", "netns", "exec", lab.ctl_netns,   # execs: the PID is the server's own
        sys.executable, "-I", "-m", "http.server", "--bind", GATEWAY, "--directory", str(repo), str(port),
    ]  # fmt: skip
    log: IO[bytes]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=SAFE_ENV, cwd="/", start_new_session=True
        )
    server = RepoServer(lab.name, lab.ctl_netns, repo, port, proc, log_path)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if proc.poll() is not None:
            raise AptRepoError(f"http.server exited ({proc.returncode}) on {GATEWAY}:{port}: {server.log_tail()}")
        try:
            status, _ = server.get("Release", timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            if status == 200:
                return server
            last = AptRepoError(f"GET /Release: HTTP {status}")
        except (OSError, ValueError, IndexError) as e:
            last = e
        if time.monotonic() > deadline:
            server.stop()
            raise AptRepoError(f"repo server on {GATEWAY}:{port} not ready after {timeout}s ({last})")
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# preparing a lab host (harness set-up, through nsenter, not SSH)

#: the apt source file :func:`use_as_mirror` writes inside a host
LAB_SOURCES = "/etc/apt/sources.list.d/kubeboot-lab.list"
#: where it moves the host's other apt sources (the machine's Debian ones: unreachable from the lab)
DISABLED_SOURCES = "/etc/apt/sources.disabled-by-kubeboot-lab"
#: packages the machine has (tests/setup.sh, gcloud's kubectl) that a fresh Debian host would not
NOT_ON_A_FRESH_HOST = ("kubelet", "kubectl", "kubeadm", "kubernetes-cni", "containerd", "runc")


def _require_overlay(lab: AnyLab, what: str) -> None:
    if not lab.overlay:
        raise AptRepoError(f"{what} needs a lab with overlay=True (else dpkg would write the machine's /usr)")


def use_as_mirror(lab: AnyLab, host: str, server: RepoServer) -> None:
    """Make the lab repo ``host``'s only apt source, as if it were the host's mirror: every other
    source file is moved to :data:`DISABLED_SOURCES` and :data:`LAB_SOURCES` gets
    ``server.sources_line``.  Plain ``apt-get update`` / ``apt-get install`` (kubeboot's own commands)
    then work unchanged.  Only inside ``host`` (copy-on-write /etc); needs an overlay lab (systemd labs
    always are)."""
    _require_overlay(lab, "use_as_mirror")
    lab.run_in(host, ["sh", "-ec", """
        mkdir -p "$3"
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
            if [ -e "$f" ] && [ "$f" != "$1" ]; then mv "$f" "$3/"; fi
        done
        printf '%s\\n' "$2" > "$1"
        """, "sh", LAB_SOURCES, server.sources_line, DISABLED_SOURCES])  # fmt: skip


def remove_machine_packages(lab: AnyLab, host: str, names: tuple[str, ...] = NOT_ON_A_FRESH_HOST) -> list[str]:
    """``dpkg --purge`` those of ``names`` that ``host`` has (its overlay root starts as a copy of the
    machine's, which has containerd, runc, gcloud's kubectl ...): afterwards the host looks like a
    fresh Debian host for them.  Only inside ``host``; returns the packages removed."""
    _require_overlay(lab, "remove_machine_packages")
    out = lab.run_in(host, ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *names], check=False).stdout
    present = [line.split()[0] for line in out.splitlines() if line.endswith(" installed")]
    if present:
        lab.run_in(host, ["dpkg", "--purge", *present], timeout=300)
    return present


# ---------------------------------------------------------------------------------------------
# pytest


@dataclass
class AptRepo:
    """What the ``apt_repo`` fixture yields."""

    path: Path
    server: RepoServer
    k8s_version: str
    packages: dict[str, dict[str, str]]
    build: BuildReport
    #: the other versions' kubelet, kubectl and kubeadm (``apt_versions`` marker): version -> packages
    also: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every Kubernetes version the repo carries, the primary first."""
        return (self.k8s_version, *self.also)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def sources_line(self) -> str:
        return self.server.sources_line

    @property
    def deb_version(self) -> str:
        return deb_version(self.k8s_version)


def build_or_skip(k8s_version: str = "1.37.2", dest: Path | None = None, also: Sequence[str] = ()) -> Path:
    """:func:`build_repo` into :func:`default_repo_dir`; skips the test when a prerequisite is missing."""
    try:
        return build_repo(dest or default_repo_dir(k8s_version, also), k8s_version, also=also)
    except AptRepoUnavailable as e:
        pytest.skip(str(e))
    except PermissionError as e:
        pytest.skip(f"lab apt repo: cannot write the cache ({e}); run as root")


#: The ``apt_repo`` fixture's version unless the module says ``pytest.mark.apt_versions(...)``.
DEFAULT_APT_VERSION = "1.37.2"


def apt_versions(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The module's ``apt_versions("1.37.2", "1.36.3")`` marker (primary version first), else
    :data:`DEFAULT_APT_VERSION` alone."""
    marker = request.node.get_closest_marker("apt_versions")
    versions = tuple(str(v).removeprefix("v") for v in marker.args) if marker else ()
    return versions or (DEFAULT_APT_VERSION,)


@pytest.fixture(scope="module")
def apt_repo(request: pytest.FixtureRequest) -> Iterator[AptRepo]:
    """The lab apt repository (built or reused) served at 10.200.0.1:8080 on the module's lab: its
    ``systemd_lab`` if the module is marked ``systemd_lab``, else its ``lab``.  A module marked
    ``pytest.mark.apt_versions("1.37.2", "1.36.3")`` gets one repository with the Kubernetes packages of
    each version (the first one's kubernetes-cni; ``AptRepo.packages`` is the first version's)."""
    version, *also = apt_versions(request)
    path = build_or_skip(version, also=also)
    report = last_build
    kind = "systemd_lab" if request.node.get_closest_marker("systemd_lab") else "lab"
    the_lab: AnyLab = request.getfixturevalue(kind)
    with serve(the_lab, path) as server:
        yield AptRepo(path, server, version, read_manifest(path), report,
                      {v: read_manifest(path, v) for v in also})
