"""Shell: before `up` decides anything, look at what the nodes already are.

A fresh state directory in front of control planes that already run a cluster (built with `kubeadm init`/`join` by
hand, or by kubeboot from a workstation whose state directory is gone): the cluster's PKI is read from the control
planes into the state directory, so `up` keeps the cluster's CAs, keys and certificates instead of making new ones.
A state directory whose CA is not the one a node holds: refused before anything is written.

One read per node, in parallel: the CA certificate from every node; on control planes, when there is something to
adopt, every file kubeboot.pki.adopt names. Key material goes from the remote command's output to the state
directory only (it is never traced, printed or logged).
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubeboot import output, state
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.pki.adopt import CA_CERT, adopt, check_same_ca, control_plane_paths
from kubeboot.plan.upgrade import COMPONENTS, NodeVersions, manifest_image, manifest_path
from kubeboot.runner import combine, parallel
from kubeboot.transport.base import Transport

_MARK = "=kubeboot-file "


def read_script(paths: Sequence[str]) -> str:
    """POSIX sh: for each path a marker line, then the file's bytes as one base64 line (or `-` when absent)."""
    return "\n".join(f"if [ -f {shlex.quote(p)} ]; then echo '{_MARK}{p}'; base64 < {shlex.quote(p)} | tr -d '\\n';"
                     f" echo; else echo '{_MARK}{p}'; echo -; fi" for p in paths) + "\n"


def parse_read(stdout: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(_MARK) and i + 1 < len(lines):
            body = lines[i + 1].strip()
            out[line[len(_MARK):]] = None if body == "-" else base64.b64decode(body)
    return out


def read_files(transports: Mapping[str, Transport], wanted: Mapping[str, Sequence[str]],
               concurrency: int) -> dict[str, dict[str, bytes | None]]:
    names = list(wanted)
    got: dict[str, dict[str, bytes | None]] = {}

    def one(name: str) -> None:
        res = transports[name].run(read_script(wanted[name]), display="read the cluster's certificates, keys and "
                                                                      "static pod manifests")
        got[name] = parse_read(res.stdout)

    errors = parallel(names, one, concurrency)
    if errors:  # the run's first contact with the hosts: unreachable ones are named as the connect phase names them
        raise combine({names[i]: e for i, e in errors.items()}, "connect")
    return got


def running_versions(cfg: ClusterConfig, files: Mapping[str, Mapping[str, bytes | None]]) -> list[NodeVersions]:
    """The control planes' static pod images, from manifests read_files read (kubelets are not looked at here)."""
    return [NodeVersions(h.name, True, {c: manifest_image(files.get(h.name, {}).get(manifest_path(c)), c)
                                        for c in COMPONENTS}, None) for h in cfg.control_planes]


def adopt_existing(cfg: ClusterConfig, root: Path, transports: Mapping[str, Transport], rep: output.Reporter,
                   concurrency: int) -> dict[str, dict[str, bytes | None]]:
    """Check the nodes' CA against the state directory's; with no CA in the state directory, adopt the cluster
    the control planes hold (if any). Raises ForeignClusterError / AdoptError before anything is written. Returns
    what was read, with each control plane's static pod manifests (`running_versions`)."""
    stored = state.read_state(root)
    state_ca = stored.get("pki/ca.crt")
    nodes: list[Host] = [h for h in cfg.hosts if h.is_node]
    manifests = tuple(manifest_path(c) for c in COMPONENTS)
    if state_ca is not None:
        got = read_files(transports, {h.name: (CA_CERT, *(manifests if h.is_control_plane else ())) for h in nodes},
                         concurrency)
        check_same_ca(state_ca, {name: files.get(CA_CERT) for name, files in got.items()})
        return got
    wanted = {h.name: ((*control_plane_paths(), *manifests) if h.is_control_plane else (CA_CERT,)) for h in nodes}
    files = read_files(transports, wanted, concurrency)
    check_same_ca(None, {name: got.get(CA_CERT) for name, got in files.items()})
    adopted = adopt(cfg, {h.name: files[h.name] for h in cfg.control_planes})
    if adopted is None:
        return files  # a new cluster: render makes its PKI
    state.write_state(root, adopted.entries, {})
    taken = ", ".join(f"{n} from {name}" for name, n in adopted.per_host.items())
    rep.info("adopt", None, f"an existing cluster: its CAs and service-account key from {adopted.source}, "
                            f"certificates ({taken}) into the state directory {root}; valid ones are kept")
    return files
