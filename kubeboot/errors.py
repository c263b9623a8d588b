"""Error tree (shared by every layer). Each class carries its exit code; only cli.py turns them into output.

Exit codes are part of the CLI contract (documented in README.md):
  1 unexpected/internal, 2 usage (click), 3 config, 4 state, 5 preflight, 6 remote command,
  7 hosts failed, 8 connection, 9 authentication, 10 host key, 11 sudo, 12 endpoint unreachable (join),
  13 bootstrap token rejected, 14 CA pin mismatch, 15 kubeadm-certs missing or expired, 16 wrong certificate key,
  17 not an image archive, 18 a component did not become healthy in time (--wait-timeout),
  19 status: cluster degraded, 20 status: etcd quorum lost, 21 reset/remove-node: quorum at risk,
  22 etcd snapshot file corrupt, 23 etcd snapshot of another cluster, 24 a host of another cluster, 25 cannot adopt,
  26 version skew, 27 offline bundle missing/corrupt, 28 machine cannot host a sandbox, 29 sandbox subnet in use.
"""

from __future__ import annotations

from dataclasses import dataclass


class KubebootError(Exception):
    """Base of every error kubeboot reports on purpose (never a traceback without --debug)."""

    exit_code = 1
    hosts: tuple[str, ...] = ()  # the hosts that failed, when the error combines several (runner.combine)

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Problem:
    """One validation finding: a field path, what is wrong, and whether it blocks."""

    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(KubebootError):
    """The inventory or a flag is invalid; carries every problem found, not just the first."""

    exit_code = 3

    def __init__(self, problems: list[Problem], *, source: str = "inventory") -> None:
        self.problems = problems
        self.source = source
        errors = [p for p in problems if p.severity == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(
            f"{source}: {len(errors)} problem(s):\n{lines}",
            hint="fix the fields named above and run again; nothing was changed",
        )


class StateError(KubebootError):
    """The local state directory is inconsistent (e.g. a CA certificate without its key)."""

    exit_code = 4


class PreflightError(KubebootError):
    exit_code = 5


class RemoteCommandError(KubebootError):
    exit_code = 6


class HostsFailedError(KubebootError):
    exit_code = 7


class HostConnectionError(KubebootError):
    exit_code = 8


class AuthenticationError(KubebootError):
    exit_code = 9


class HostKeyError(KubebootError):
    exit_code = 10


class SudoError(KubebootError):
    exit_code = 11


class JoinError(KubebootError):
    """Discovery could not reach the endpoint (or another join failure without a more specific class)."""

    exit_code = 12


class TokenRejectedError(JoinError):
    """The bootstrap token is unknown, expired, not a signing token, or its secret is wrong."""

    exit_code = 13


class CAPinMismatchError(JoinError):
    exit_code = 14


class CertsUnavailableError(JoinError):
    """kubeadm-certs is gone (2-hour lifetime) or cannot be read with this token."""

    exit_code = 15


class CertificateKeyError(JoinError):
    exit_code = 16


class ImageArchiveError(KubebootError):
    """A supplied image archive is unreadable or not an image archive (named, before any host is touched)."""

    exit_code = 17


class WaitTimeoutError(KubebootError):
    """A component did not become healthy within the wait: an API server not live or ready, a joining kubelet
    without its client certificate (`--wait-timeout`)."""

    exit_code = 18


class ClusterDegradedError(KubebootError):
    """`status`: something is down or wrong (a host unreachable, a unit inactive, a static pod not running, an etcd
    member unhealthy, an LB backend down, an expired certificate) while etcd keeps its quorum."""

    exit_code = 19


class QuorumLostError(ClusterDegradedError):
    """`status`: no more than half of etcd's voting members are healthy: the cluster cannot write."""

    exit_code = 20


class QuorumRiskError(KubebootError):
    """`reset` / `remove-node`: the change would leave etcd without a healthy majority (refused without --force)."""

    exit_code = 21


class SnapshotCorruptError(KubebootError):
    """`etcd snapshot restore`: the file does not match the sha256 its metadata records, etcd's own hash at its end
    fails, or the metadata is unreadable. Checked on the workstation before anything is touched."""

    exit_code = 22


class SnapshotMismatchError(KubebootError):
    """`etcd snapshot restore`: the snapshot was taken from another cluster (its cluster CA differs from the state
    directory's): its Secrets and tokens would not fit this cluster's keys. Nothing is touched."""

    exit_code = 23


class ForeignClusterError(KubebootError):
    """`up`: a host already belongs to another cluster (its /etc/kubernetes/pki/ca.crt is not the state directory's
    CA, or the hosts hold different CAs). Checked before anything is written: going on would overwrite a CA."""

    exit_code = 24


class AdoptError(KubebootError):
    """`up` adopting an existing cluster: what the control planes hold cannot be taken over (a CA without its key,
    a missing service-account key, a CA certificate and key that are not a pair). Nothing is written."""

    exit_code = 25


class VersionSkewError(KubebootError):
    """The version asked for is not one the cluster can move to: `upgrade` more than one minor at a time, a
    downgrade, a kubelet outside the skew policy; or `up` with a spec.kubernetesVersion other than the one the
    control planes run (changing it is `kubeboot upgrade`'s job). Nothing is changed."""

    exit_code = 26


class BundleError(KubebootError):
    """An offline bundle (`kubeboot bundle build`, `up --bundle`) is missing, incomplete, corrupt (an artifact's
    sha256 differs from its manifest), or cannot be built. Checked before any host is touched."""

    exit_code = 27


class SandboxUnsupportedError(KubebootError):
    """`kubeboot sandbox`: this machine cannot host a sandbox (not root, not Linux, no network/mount namespaces,
    systemd-nspawn or debootstrap missing, not enough memory). Nothing is created."""

    exit_code = 28


class SandboxConflictError(KubebootError):
    """`kubeboot sandbox up`: the sandbox's subnet is in use (a route or address on this machine, or another
    sandbox), or a sandbox of that name is already up with another shape. Nothing is created."""

    exit_code = 29
