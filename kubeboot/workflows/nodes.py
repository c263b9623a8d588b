"""Shell: a host reached over SSH as the node of kubeadm's join protocol (join.NodeTarget). The protocol runs on
the workstation; the node only receives files and a kubelet restart — it needs no Python and no kubeboot."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from kubeboot.errors import KubebootError
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import FileState
from kubeboot.transport.base import Transport, command_failed


class NodeWaitError(KubebootError):
    exit_code = 6


class RemoteNode:
    def __init__(self, name: str, transport: Transport, files: Mapping[str, FileState],
                 resolved: bool = False) -> None:
        self.name = name
        self.t = transport
        self.files = dict(files)  # what facts gathering saw: identical files are not written again
        self.resolved = resolved  # facts: systemd-resolved is active

    def exists(self, path: str) -> bool:
        return path in self.files or self.t.run(f"test -e {shlex.quote(path)}", check=False).ok

    def write(self, artifacts: Sequence[Artifact]) -> list[str]:
        out = []
        for a in artifacts:
            have = self.files.get(a.path)
            if have is not None and have.digest == a.digest and have.mode == a.mode:
                continue
            self.t.put(a.path, a.content, a.mode, a.owner, a.group)
            self.files[a.path] = FileState(a.digest, a.mode, a.owner, a.group)
            out.append(a.path)
        return out

    def systemd_resolved(self) -> bool:
        return self.resolved

    def start_kubelet(self) -> str | None:
        res = self.t.run("systemctl daemon-reload && systemctl restart kubelet", check=False, timeout=120)
        if not res.ok:
            raise command_failed(res, "kubelet-start")
        return "kubelet (re)started by systemd"

    def wait_file(self, path: str, timeout: float, what: str) -> None:
        q = shlex.quote(path)
        res = self.t.run(f"timeout {int(timeout)} sh -c 'until [ -e {q} ]; do sleep 1; done'", check=False,
                         timeout=timeout + 30)
        if not res.ok:
            raise NodeWaitError(f"{self.name}: {what}: {path} did not appear within {timeout:.0f}s",
                                hint=f"check the kubelet on {self.name}: journalctl -u kubelet")
