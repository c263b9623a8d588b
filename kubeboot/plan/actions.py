"""Pure core: actions a phase plans for a host. A plan is a list of these; apply executes them in order.

Reads happen while planning (facts); actions are the writes. Dry-run prints the same list and stops, so
there is no `if dry_run:` anywhere in a phase.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import FileState, HostFacts


@dataclass(frozen=True)
class WriteFile:
    artifact: Artifact
    reason: str  # "new" | "content changed" | "mode 0644 -> 0600" | ...
    diff: str | None = None  # unified diff for non-secret text files that changed

    def describe(self) -> str:
        return f"write {self.artifact.describe()}: {self.reason}"


@dataclass(frozen=True)
class RunCommand:
    command: str
    why: str
    display: str | None = None  # what to show instead of the command (never a secret)
    timeout: float | None = 300.0

    def describe(self) -> str:
        return f"run `{self.display or self.command}`: {self.why}"


@dataclass(frozen=True)
class UploadFile:
    """A large local file (an image archive) streamed to the host as is; never held in memory."""

    local: str  # path on the workstation
    path: str  # absolute path on the host
    size: int
    digest: str  # "sha256:<hex>" of the file
    reason: str
    mode: int = 0o600

    def describe(self) -> str:
        return f"upload {self.local} -> {self.path} ({self.size} bytes, {self.digest[:19]}): {self.reason}"


Action = WriteFile | RunCommand | UploadFile


def compare_file(artifact: Artifact, observed: FileState | None, old_text: str | None = None) -> WriteFile | None:
    """A WriteFile when the host's copy is missing or differs in digest, mode or owner; else None."""
    if observed is None:
        return WriteFile(artifact, "new")
    reasons = []
    if observed.digest != artifact.digest:
        reasons.append("content changed")
    if observed.mode != artifact.mode:
        reasons.append(f"mode {observed.mode:04o} -> {artifact.mode:04o}")
    if (observed.owner, observed.group) != (artifact.owner, artifact.group):
        reasons.append(f"owner {observed.owner}:{observed.group} -> {artifact.owner}:{artifact.group}")
    if not reasons:
        return None
    diff = None
    if old_text is not None and not artifact.secret and observed.digest != artifact.digest:
        diff = "".join(difflib.unified_diff(old_text.splitlines(True), artifact.content.decode(errors="replace")
                                            .splitlines(True), f"{artifact.path} (host)", f"{artifact.path} (kubeboot)"))
    return WriteFile(artifact, ", ".join(reasons), diff)


def file_actions(artifacts: tuple[Artifact, ...], facts: HostFacts) -> list[WriteFile]:
    out = []
    for a in artifacts:
        w = compare_file(a, facts.files.get(a.path))
        if w is not None:
            out.append(w)
    return out
