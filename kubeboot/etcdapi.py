"""Shell: the etcd membership calls a control-plane join needs (add as learner, promote, list), over etcd's
own v3 JSON gateway with the healthcheck-client certificate — the same API etcdctl uses, no extra library."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeboot.errors import KubebootError

ETCD_API_TIMEOUT = 120.0  # kubeadm EtcdAPICall


class EtcdError(KubebootError):
    exit_code = 6


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    learner: bool


class EtcdClient:
    def __init__(self, endpoints: list[str], ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        self.endpoints = endpoints
        self._dir = tempfile.TemporaryDirectory(prefix="kubeboot-etcd-")
        d = Path(self._dir.name)
        for name, data in (("ca.crt", ca_pem), ("client.crt", cert_pem), ("client.key", key_pem)):
            (d / name).write_bytes(data)
            (d / name).chmod(0o600)
        self._ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        self._ctx.load_cert_chain(str(d / "client.crt"), str(d / "client.key"))

    def close(self) -> None:
        self._dir.cleanup()

    def _call_one(self, ep: str, path: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        req = urllib.request.Request(f"{ep}/v3/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=timeout) as resp:
                out: dict[str, Any] = json.loads(resp.read() or b"{}")
                return out
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EtcdError(f"etcd {path} via {ep}: HTTP {exc.code}: {detail[:300]}") from None
        except (OSError, ValueError) as exc:
            raise EtcdError(f"etcd {path} via {ep}: {getattr(exc, 'reason', None) or exc}") from None

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for ep in self.endpoints:
            try:
                return self._call_one(ep, path, body)
            except EtcdError as exc:
                last = exc
        assert last is not None
        raise last

    def members(self) -> list[Member]:
        out = self._call("cluster/member/list", {"linearizable": True})
        return [Member(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])), bool(m.get("isLearner")))
                for m in out.get("members", [])]

    def members_via(self, ep: str, timeout: float = 3.0) -> list[Member]:
        """The member list as one member knows it (serializable: answered without a leader, so a member that
        lost quorum still says who the members are)."""
        out = self._call_one(ep, "cluster/member/list", {"linearizable": False}, timeout)
        return [Member(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])), bool(m.get("isLearner")))
                for m in out.get("members", [])]

    def health(self, ep: str, timeout: float = 3.0) -> tuple[bool | None, str]:
        """etcd's /health on one client endpoint (a linearizable read: true only when the member has a leader and
        the cluster answers): (True, "") healthy, (False, reason) answering but unhealthy (e.g. "RAFT NO LEADER"),
        (None, reason) no answer in time — which is also what a member waiting for a lost quorum gives; `status`
        tells the two apart."""
        try:
            with urllib.request.urlopen(f"{ep}/health", context=self._ctx, timeout=timeout) as resp:
                body = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:  # 503 with {"health":"false","reason":...}
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                return False, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return None, str(getattr(exc, "reason", None) or exc)
        if str(body.get("health")) == "true":
            return True, ""
        return False, str(body.get("reason") or "unhealthy")

    def status(self, ep: str, timeout: float = 3.0) -> tuple[int, int]:
        """Maintenance status of one member, answered from its own state (no quorum needed): (its member id, the
        leader's id; 0 when it knows of no leader)."""
        out = self._call_one(ep, "maintenance/status", {}, timeout)
        return int(out.get("header", {}).get("member_id") or 0), int(out.get("leader") or 0)

    def add_learner(self, peer_url: str) -> tuple[Member, list[Member]]:
        """MemberAdd as learner (kubeadm 1.32+ always); returns the new member and the full list."""
        out = self._call("cluster/member/add", {"peerURLs": [peer_url], "isLearner": True})
        m = out["member"]
        new = Member(int(m["ID"]), "", tuple(m.get("peerURLs", [])), True)
        members = [Member(int(x["ID"]), x.get("name", ""), tuple(x.get("peerURLs", [])), bool(x.get("isLearner")))
                   for x in out.get("members", [])]
        return new, members

    def remove(self, member_id: int) -> None:
        """MemberRemove (kubeadm reset's remove-etcd-member)."""
        self._call("cluster/member/remove", {"ID": str(member_id)})

    def promote(self, member_id: int) -> None:
        self._call("cluster/member/promote", {"ID": str(member_id)})

    def put(self, key: str, value: str) -> None:
        self._call("kv/put", {"key": base64.b64encode(key.encode()).decode(),
                              "value": base64.b64encode(value.encode()).decode()})


def wait(what: str, fn: Any, timeout: float = ETCD_API_TIMEOUT, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except EtcdError as exc:
            if time.monotonic() >= deadline:
                raise EtcdError(f"{what}: gave up after {timeout:.0f}s: {exc.message}") from None
            time.sleep(interval)
