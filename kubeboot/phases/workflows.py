"""The preflight gate and the help tree of a workflow (workflows are ordered lists of phases, see
kubeboot/workflows/; the help tree and --only/--skip-phases come from them)."""

from __future__ import annotations

from kubeboot.phases.base import Phase

# preflight is a gate, not a planner: the runner evaluates its checks across all hosts at once.
PREFLIGHT = Phase("preflight", "Check every host (ports, swap, binaries, kernel, resources, duplicates, clocks)")



def describe(workflow: tuple[Phase, ...], indent: str = "") -> str:
    lines = []
    for ph in workflow:
        lines.append(f"{indent}{ph.name:<12} {ph.summary}")
        if ph.children:
            lines.append(describe(ph.children, indent + "  "))
    return "\n".join(lines)
