"""Phase `runtime`: containerd from the distribution, kubelet and kubectl pinned from the Kubernetes package
repository (held at that version), or all of them from packages the user supplies (--offline-packages)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from kubeboot.config.model import Host, Role
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.plan.actions import Action, RunCommand, compare_file
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
APT_SOURCE = "/etc/apt/sources.list.d/kubernetes.list"
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
YUM_REPO = "/etc/yum.repos.d/kubernetes.repo"
OFFLINE_DIR = "/var/cache/kubeboot/packages"
OFFLINE_LB_DIR = "/var/cache/kubeboot/lb-packages"  # nginx from a bundle: only on the hosts that run it
NODES = frozenset({Role.CONTROL_PLANE, Role.WORKER})


def package_version(ctx: PhaseContext) -> str:
    """pkgs.k8s.io's Debian packages are <version>-1.1 (its RPMs are <version>-150500.1.1: matched by version)."""
    return f"{ctx.config.version.version}-1.1"


def _installed(ctx: PhaseContext, host: Host, binary: str) -> str | None:
    return ctx.facts[host.name].versions.get(binary)


def _kube_current(ctx: PhaseContext, host: Host) -> bool:
    want = ctx.config.version.tag
    kubelet = _installed(ctx, host, "kubelet") or ""
    kubectl = _installed(ctx, host, "kubectl") or ""
    return kubelet.split()[-1:] == [want] and f"Client Version: {want}" in kubectl


def apt_repository_line(ctx: PhaseContext) -> str:
    pk = ctx.config.packages
    if pk.apt_repository:
        return pk.apt_repository
    return (f"deb [signed-by={APT_KEYRING}] https://pkgs.k8s.io/core:/stable:/v{ctx.config.version.minor}/deb/ /")


def upload_packages(f: HostFacts, directory: str, packages: Sequence[tuple[str, bytes]]) -> list[Action]:
    """Supplied package files into `directory` on the host, each compared like any file (a retry or a converged
    host uploads nothing again; the runner gathers their digests)."""
    out: list[Action] = []
    for name, data in packages:
        art = Artifact(f"{directory}/{name}", data, 0o644)
        w = compare_file(art, f.files.get(art.path))
        if w is not None:
            out.append(w)
    return out


def plan_packages(ctx: PhaseContext, host: Host) -> list[Action]:
    f = ctx.facts[host.name]
    out: list[Action] = []
    need_containerd = "containerd" not in f.binaries
    need_kube = not _kube_current(ctx, host)
    if not need_containerd and not need_kube:
        return []
    ver = package_version(ctx)
    if ctx.options.offline_packages:
        out += upload_packages(f, OFFLINE_DIR, ctx.options.offline_packages)
        if f.package_manager == "apt":
            # --no-install-recommends: offline means nothing may be fetched from a repository
            out.append(RunCommand(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                                  f"--allow-downgrades --allow-change-held-packages {OFFLINE_DIR}/*.deb "
                                  f"&& apt-mark hold kubelet kubectl", "install the supplied packages (offline)"))
        elif f.package_manager in ("dnf", "yum"):
            out.append(RunCommand(f"{f.package_manager} install -y --disableexcludes=all {OFFLINE_DIR}/*.rpm",
                                  "install the supplied packages (offline)"))
        else:
            out.append(RunCommand("false", "no supported package manager (apt or dnf/yum) to install packages"))
        return out
    if f.package_manager == "apt":
        apt = "DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Options::=--force-confold"
        line = apt_repository_line(ctx)
        if need_kube:
            if not ctx.config.packages.apt_repository:
                key = f"https://pkgs.k8s.io/core:/stable:/v{ctx.config.version.minor}/deb/Release.key"
                out.append(RunCommand(f"mkdir -p -m 0755 /etc/apt/keyrings && [ -s {APT_KEYRING} ] || "
                                      f"curl -fsSL {key} | gpg --dearmor -o {APT_KEYRING}",
                                      "the Kubernetes package signing key is missing"))
            out.append(RunCommand(f"echo {shlex.quote(line)} > {APT_SOURCE}", "point apt at the Kubernetes packages"))
        pkgs = (["containerd"] if need_containerd else []) + ([f"kubelet={ver}", f"kubectl={ver}"] if need_kube else [])
        out.append(RunCommand(f"{apt} update && {apt} install -y --no-install-recommends --allow-downgrades "
                              f"--allow-change-held-packages "
                              f"{' '.join(pkgs)}" + (" && apt-mark hold kubelet kubectl" if need_kube else ""),
                              f"install {', '.join(pkgs)}", timeout=900))
    elif f.package_manager in ("dnf", "yum"):
        tool = f.package_manager
        if need_kube:
            base = ctx.config.packages.rpm_repository or \
                f"https://pkgs.k8s.io/core:/stable:/v{ctx.config.version.minor}/rpm/"
            repo = (f"[kubernetes]\nname=Kubernetes\nbaseurl={base}\nenabled=1\ngpgcheck=1\n"
                    f"gpgkey={base}repodata/repomd.xml.key\nexclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\n")
            out.append(RunCommand(f"printf %s {shlex.quote(repo)} > {YUM_REPO}", "point dnf at the Kubernetes packages"))
        rpm_ver = ctx.config.version.version  # release part differs per build (-150500.1.1): match by version
        pkgs = (["containerd"] if need_containerd else []) + ([f"kubelet-{rpm_ver}", f"kubectl-{rpm_ver}"]
                                                              if need_kube else [])
        out.append(RunCommand(f"{tool} install -y --disableexcludes=kubernetes {' '.join(pkgs)}",
                              f"install {', '.join(pkgs)}", timeout=900))
    else:
        out.append(RunCommand("false", "no supported package manager (apt or dnf); use --offline-packages"))
    return out


def plan_containerd(ctx: PhaseContext, host: Host) -> list[Action]:
    """containerd's config from the core; restart only when the config changed while it runs; enable it (and
    the kubelet) for boot. Without systemd the config is written and services are left alone (preflight
    reported it)."""
    f = ctx.facts[host.name]
    art = next((a for a in ctx.artifacts.get(host.name, ()) if a.path == CONTAINERD_CONFIG), None)
    out: list[Action] = []
    write = compare_file(art, f.files.get(CONTAINERD_CONFIG)) if art is not None else None
    if write is not None:
        out.append(write)
    if not f.systemd:
        return out
    active = f.services.get("containerd") == "active"
    if write is not None and active:
        out.append(RunCommand("systemctl restart containerd", f"{CONTAINERD_CONFIG} changed"))
    if not active:
        out.append(RunCommand("systemctl enable --now containerd", "containerd is not running"))
    elif f.enabled.get("containerd") != "enabled":
        out.append(RunCommand("systemctl enable containerd", "containerd does not start at boot"))
    if f.enabled.get("kubelet") != "enabled":
        out.append(RunCommand("systemctl enable kubelet", "the kubelet must start at boot (it waits for its config)"))
    return out


RUNTIME = Phase(
    "runtime", "Install containerd, kubelet and kubectl (pinned, held) and configure containerd",
    roles=NODES,
    children=(
        Phase("packages", "Install containerd, and kubelet/kubectl at the target version, held there",
              plan_packages, roles=NODES),
        Phase("containerd", "Write containerd's config (systemd cgroups, pause image) and enable it",
              plan_containerd, roles=NODES),
    ),
)
