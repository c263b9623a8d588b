"""Shell: workers join in parallel with the bootstrap token — kubeadm's discovery (token JWS + CA pin) from the
workstation, then the node's own kubelet performs the TLS bootstrap. Workers never receive a CA key."""

from __future__ import annotations

from kubeboot.config.model import Host
from kubeboot.join import join
from kubeboot.runner import combine, parallel
from kubeboot.workflows.controlplane import join_request
from kubeboot.workflows.nodes import RemoteNode
from kubeboot.workflows.session import Session


def join_workers(s: Session) -> None:
    s.start()
    todo = [h for h in s.cfg.hosts if h.is_worker and not h.is_control_plane and not s.joined(h)]
    if s.dry_run:
        for h in todo:
            s.change(h.name, "join as a worker (discovery with the bootstrap token, TLS bootstrap by its kubelet)")
        s.done()
        return

    def one(h: Host) -> None:
        node = RemoteNode(h.name, s.runner.transports[h.name], s.runner.facts[h.name].files,
                          s.runner.facts[h.name].systemd_resolved)
        join(join_request(s, h), s.runner.rep, node=node)

    errors = parallel(todo, one, s.runner.connect_opts.concurrency)
    ok = [h for i, h in enumerate(todo) if i not in errors]
    for h in ok:
        s.change(h.name, "joined as a worker (its kubelet holds a client certificate)")
    if ok:
        s.runner.gather(ok)
    if errors:
        raise combine({todo[i].name: e for i, e in errors.items()}, s.path)
    s.done()
