"""The SSH transport's streamed copies (image archives up, etcd snapshots down) over real OpenSSH: byte-exact both
ways, the mode asked for, the temporary copies gone, and a failure named as the upload or download it was."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kubeboot.errors import RemoteCommandError
from kubeboot.transport.ssh import SSHTarget, SSHTransport
from tests.e2e.conftest import proxy_only_ssh_config
from tests.lab import Lab

pytestmark = pytest.mark.lab(hosts=1)


def test_put_file_and_get_file_stream_byte_exact(lab: Lab, tmp_path: Path) -> None:
    h = lab.host("h1")
    target = SSHTarget("h1", str(h.address), 22, "root", str(lab.key_path), lab.known_hosts,
                       ssh_config=proxy_only_ssh_config(lab))
    blob = os.urandom(3 * (1 << 20) + 12345)  # several 1 MiB chunks and a partial one
    local = tmp_path / "blob"
    local.write_bytes(blob)
    t = SSHTransport(target)
    try:
        t.put_file("/root/streamed/blob", str(local), 0o640)
        remote = lab.sh_in("h1", "sha256sum /root/streamed/blob | cut -d' ' -f1; stat -c %a /root/streamed/blob")
        assert remote.split() == [hashlib.sha256(blob).hexdigest(), "640"]
        back = tmp_path / "back"
        t.get_file("/root/streamed/blob", str(back))
        assert back.read_bytes() == blob and (back.stat().st_mode & 0o777) == 0o600
        with pytest.raises(RemoteCommandError) as info:
            t.get_file("/root/streamed/absent", str(tmp_path / "absent"))
        assert info.value.message.startswith("h1: ") and "/root/streamed/absent" in info.value.message, info.value
        assert not (tmp_path / "absent").exists() or (tmp_path / "absent").read_bytes() == b""
        staged = lab.sh_in("h1", "ls -d /tmp/kubeboot.* && ls -A /tmp/kubeboot.*/")
        assert "/tmp/kubeboot." in staged and "upload-file" not in staged and "download-file" not in staged, staged
    finally:
        t.close()
