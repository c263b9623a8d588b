"""RemoteNode.wait_file (the join's wait for the kubelet's TLS bootstrap) on the local transport: the file
appearing, the wait running out (exit 18) and a host that stops answering mid-wait (exit 8, noticed within a
round, not after the whole wait)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kubeboot.errors import HostConnectionError
from kubeboot.plan.artifact import Artifact
from kubeboot.transport.base import CommandResult
from kubeboot.transport.local import LocalTransport
from kubeboot.workflows import nodes
from kubeboot.workflows.nodes import NodeWaitError, RemoteNode


class Unanswering(LocalTransport):
    """A host whose commands never come back (its network was cut after the connection was made)."""

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            display: str | None = None) -> CommandResult:
        return super().run("sleep 30", check=check, timeout=timeout, display=display or command)


def test_returns_once_the_file_appears_in_a_later_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "WAIT_ROUND", 1)
    target = tmp_path / "kubelet.conf"
    threading.Timer(2.5, target.touch).start()
    t0 = time.monotonic()
    RemoteNode("w1", LocalTransport("w1"), {}).wait_file(str(target), 20, "TLS bootstrap")
    assert target.exists() and time.monotonic() - t0 < 10


def test_a_file_that_never_appears_is_a_wait_timeout(tmp_path: Path) -> None:
    with pytest.raises(NodeWaitError) as info:
        RemoteNode("w1", LocalTransport("w1"), {}).wait_file(str(tmp_path / "kubelet.conf"), 2, "TLS bootstrap")
    assert info.value.exit_code == 18
    assert info.value.message.startswith("w1: TLS bootstrap: ") and "within 2s" in info.value.message


def test_a_host_that_stops_answering_is_a_connection_error_within_a_round(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "WAIT_ROUND", 1)
    monkeypatch.setattr(nodes, "ANSWER_GRACE", 1.0)
    t0 = time.monotonic()
    with pytest.raises(HostConnectionError) as info:
        RemoteNode("w1", Unanswering("w1"), {}).wait_file(str(tmp_path / "kubelet.conf"), 240, "TLS bootstrap")
    assert time.monotonic() - t0 < 10  # not the 240s wait
    assert info.value.exit_code == 8
    assert info.value.message == "w1: stopped answering while waiting for TLS bootstrap (no reply within 2s)"
    assert info.value.hint is not None and "re-run" in info.value.hint


def test_files_already_on_the_node_are_not_written_again(tmp_path: Path) -> None:
    """What a resumed join relies on: files facts gathering did not look at are compared on the node first."""
    same, changed, new = (str(tmp_path / n) for n in ("same.crt", "changed.conf", "new.yaml"))
    Path(same).write_bytes(b"kept\n")
    Path(changed).write_bytes(b"old\n")
    Path(same).chmod(0o644)
    arts = [Artifact(same, b"kept\n", 0o644), Artifact(changed, b"new\n", 0o600), Artifact(new, b"x\n", 0o600)]
    written = RemoteNode("w1", LocalTransport("w1"), {}).write(arts)
    assert written == [changed, new]
    assert Path(changed).read_bytes() == b"new\n" and Path(new).read_bytes() == b"x\n"
