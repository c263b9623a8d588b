"""Workflows are ordered lists of phases; the help tree and --only/--skip-phases come from them."""

from __future__ import annotations

from kubeboot.phases.base import Phase
from kubeboot.phases.files import FILES
from kubeboot.phases.images import IMAGES
from kubeboot.phases.prepare import PREPARE
from kubeboot.phases.runtime import RUNTIME

# preflight is a gate, not a planner: the runner evaluates its checks across all hosts at once.
PREFLIGHT = Phase("preflight", "Check every host (ports, swap, binaries, kernel, resources, duplicates, clocks)")

UP: tuple[Phase, ...] = (PREFLIGHT, PREPARE, RUNTIME, IMAGES, FILES)


def describe(workflow: tuple[Phase, ...], indent: str = "") -> str:
    lines = []
    for ph in workflow:
        lines.append(f"{indent}{ph.name:<12} {ph.summary}")
        if ph.children:
            lines.append(describe(ph.children, indent + "  "))
    return "\n".join(lines)
