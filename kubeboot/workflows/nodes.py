"""Shell: a host reached over SSH as the node of kubeadm's join protocol (join.NodeTarget). The protocol runs on
the workstation; the node only receives files and a kubelet restart — it needs no Python and no kubeboot."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence

from kubeboot.errors import HostConnectionError, RemoteCommandError, WaitTimeoutError
from kubeboot.plan.artifact import Artifact
from kubeboot.plan.facts import FileState
from kubeboot.transport.base import Transport, command_failed


# A remote wait answers at least this often (seconds), so a host that stops answering mid-join (network cut,
# powered off: SSH keepalives never fail a connection by themselves) is noticed within a round plus ANSWER_GRACE.
WAIT_ROUND = 10
ANSWER_GRACE = 20.0


class NodeWaitError(WaitTimeoutError):
    pass


class RemoteNode:
    def __init__(self, name: str, transport: Transport, files: Mapping[str, FileState],
                 resolved: bool = False) -> None:
        self.name = name
        self.t = transport
        self.files = dict(files)  # what facts gathering saw: identical files are not written again
        self.resolved = resolved  # facts: systemd-resolved is active

    def exists(self, path: str) -> bool:
        return path in self.files or self.t.run(f"test -e {shlex.quote(path)}", check=False).ok

    def read(self, path: str) -> bytes | None:
        return self.t.get(path)

    def _known(self, paths: Sequence[str]) -> None:
        """Digest and mode of the files facts gathering did not look at (a join's PKI, kubeconfigs and
        manifests), in one round trip: a join resumed after a failure rewrites nothing that is already right."""
        unknown = [p for p in paths if p not in self.files]
        if not unknown:
            return
        quoted = " ".join(shlex.quote(p) for p in unknown)
        res = self.t.run(f"for f in {quoted}; do [ -f \"$f\" ] && echo \"$(sha256sum \"$f\" | cut -d' ' -f1) "
                         f"$(stat -c '%a %U %G' \"$f\") $f\"; done; true", display=f"compare {len(unknown)} file(s)")
        for line in res.stdout.splitlines():
            parts = line.split(" ", 4)
            if len(parts) == 5:
                digest, mode, owner, group, path = parts
                self.files[path] = FileState("sha256:" + digest, int(mode, 8), owner, group)

    def write(self, artifacts: Sequence[Artifact]) -> list[str]:
        self._known([a.path for a in artifacts])
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
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            step = max(1, min(WAIT_ROUND, int(left)))
            try:
                res = self.t.run(f"timeout {step} sh -c 'until [ -e {q} ]; do sleep 1; done'", check=False,
                                 timeout=step + ANSWER_GRACE)
            except RemoteCommandError:  # the remote side ends within `step` seconds: no answer means no host
                raise HostConnectionError(
                    f"{self.name}: stopped answering while waiting for {what} (no reply within "
                    f"{step + ANSWER_GRACE:.0f}s)",
                    hint=f"check {self.name} and the network to it; re-run once it is reachable: finished steps "
                         f"are skipped") from None
            if res.ok:
                return
        raise NodeWaitError(f"{self.name}: {what}: {path} did not appear within {timeout:.0f}s",
                            hint=f"check the kubelet on {self.name}: journalctl -u kubelet")
