"""Phases as data: a Phase is a name, a one-line summary (its help text), the roles it applies to and a plan
function from a narrow context to actions. Workflows are ordered lists; `--only`/`--skip-phases` select by path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeboot.config.model import ClusterConfig, Host, Role
from kubeboot.plan.actions import Action
from kubeboot.plan.archives import ImageArchive
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import HostFacts


@dataclass(frozen=True)
class RunOptions:
    ignore_preflight_errors: frozenset[str] = frozenset()  # lower-case check names, or {"all"}
    disable_firewall: bool = False
    phases_in_run: frozenset[str] = frozenset()  # top-level phase names this run executes
    # Packages the user supplied (--offline-packages DIR): (file name, bytes), installed instead of a repository.
    offline_packages: tuple[tuple[str, bytes], ...] = ()
    # nginx and the stream module from an offline bundle (`up --bundle`), installed on the hosts that run nginx
    lb_packages: tuple[tuple[str, bytes], ...] = ()
    # the distribution the supplied packages are built for ("debian-12", a bundle's manifest); "" = not known
    packages_distribution: str = ""
    # Image archives the user supplied (--images DIR / spec.images.archiveDir): (local path, what it holds).
    image_archives: tuple[tuple[str, ImageArchive], ...] = ()
    # --wait-timeout: seconds an API server gets to become live/ready and a joining kubelet to finish its TLS
    # bootstrap (kubeadm's ControlPlaneComponentHealthCheck, 4 minutes)
    wait_timeout: float = 240.0


@dataclass(frozen=True)
class PhaseContext:
    """What a phase may look at: never the CLI, the runner or a connection."""

    config: ClusterConfig
    artifacts: Mapping[str, tuple[Artifact, ...]]  # desired files per host name
    facts: Mapping[str, HostFacts]
    options: RunOptions

    def will_run(self, phase: str) -> bool:
        return phase in self.options.phases_in_run


PlanFn = Callable[[PhaseContext, Host], Sequence[Action]]
# A cluster-level step (API calls, joins one host at a time): gets the workflow's session object, which plans
# when it is a dry run and applies otherwise. Typed loosely here so the phase list stays free of the shell.
StepFn = Callable[[Any], None]


@dataclass(frozen=True)
class Phase:
    name: str
    summary: str
    plan: PlanFn | None = None
    roles: frozenset[Role] | None = None  # None: every host
    children: tuple[Phase, ...] = ()
    step: StepFn | None = None  # instead of `plan`: one step for the whole cluster

    def applies_to(self, host: Host) -> bool:
        return self.roles is None or bool(self.roles & host.roles)


@dataclass(frozen=True)
class Finding:
    check: str  # kubeadm-style name: Swap, Port-6443, FileExisting-ip, DuplicateHostname ...
    host: str
    message: str
    severity: str = "error"  # error | warning


@dataclass(frozen=True)
class Selected:
    """A phase chosen to run, with its path (e.g. "files" or "prepare/swap")."""

    path: str
    phase: Phase


def flatten(workflow: Sequence[Phase], prefix: str = "") -> list[Selected]:
    """Leaf phases in order, each with its slash path."""
    out: list[Selected] = []
    for ph in workflow:
        path = f"{prefix}{ph.name}"
        if ph.children:
            out += flatten(ph.children, path + "/")
        else:
            out.append(Selected(path, ph))
    return out


def all_paths(workflow: Sequence[Phase], prefix: str = "") -> list[str]:
    out: list[str] = []
    for ph in workflow:
        path = f"{prefix}{ph.name}"
        out.append(path)
        out += all_paths(ph.children, path + "/")
    return out


def select(workflow: Sequence[Phase], only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Selected]:
    """Leaves under any `only` path (all if none), minus leaves under any `skip` path. Unknown paths: ValueError."""
    known = set(all_paths(workflow))
    for p in [*only, *skip]:
        if p not in known:
            raise ValueError(f"unknown phase {p!r} (known: {', '.join(sorted(known))})")

    def under(path: str, roots: Sequence[str]) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    leaves = flatten(workflow)
    return [s for s in leaves if (not only or under(s.path, only)) and not under(s.path, skip)]


@dataclass
class HostPlan:
    host: str
    actions: list[Action] = field(default_factory=list)
