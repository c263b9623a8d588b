"""Shell: `kubeboot certs renew all|NAME` — new leaf certificates and kubeconfigs from the existing CAs, on every
control plane, one control plane at a time, with the API answering through the load balancer throughout.

Read `renew_one` beside kubeadm's advice after `kubeadm certs renew` ("restart the control plane components"): the
control plane leaves the load balancer when its API server is about to restart, its renewed files are written,
exactly the static pods that read them are restarted (their containers, which the kubelet starts again), kubeboot
waits until they are back (a new container, the API server ready), and the control plane rejoins the load balancer.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeboot import output
from kubeboot.config.model import ClusterConfig, Host
from kubeboot.errors import ConfigError, Problem, WaitTimeoutError
from kubeboot.offline import RenderResult, render
from kubeboot.phases.base import Phase, RunOptions
from kubeboot.phases.kubectl import ADMIN_CONF, plan_kubectl
from kubeboot.pki.bundle import CLIENTS
from kubeboot.pki.certs import LEAVES
from kubeboot.plan.actions import RunCommand
from kubeboot.render.cluster import local_api_url
from kubeboot.render.lb import nginx_conf
from kubeboot.render.manifests import STATIC_PODS
from kubeboot.runner import ConnectOptions, Runner, RunResult, TraceLog
from kubeboot.workflows.session import Session, ready, ready_control_planes

# kubeadm certs renew's names -> the static pods that read the file (none: only people and kubeboot use it)
RENEWABLE: dict[str, tuple[str, ...]] = {
    "admin.conf": (),
    "apiserver": ("kube-apiserver",),
    "apiserver-etcd-client": ("kube-apiserver",),
    "apiserver-kubelet-client": ("kube-apiserver",),
    "controller-manager.conf": ("kube-controller-manager",),
    "etcd-healthcheck-client": (),
    "etcd-peer": ("etcd",),
    "etcd-server": ("etcd",),
    "front-proxy-client": ("kube-apiserver",),
    "scheduler.conf": ("kube-scheduler",),
    "super-admin.conf": (),
}
_LEAF_BASE = {leaf.id: leaf.base for leaf in LEAVES}
_KUBECONFIGS = {c.file for c in CLIENTS}


@dataclass(frozen=True)
class RenewRequest:
    inventory: Path
    state_dir: Path | None
    names: Sequence[str]  # kubeadm's names, or ("all",)
    dry_run: bool = False
    connect: ConnectOptions = ConnectOptions()
    timeout: float = 240.0


def chosen_names(names: Sequence[str]) -> list[str]:
    if list(names) == ["all"]:
        return sorted(RENEWABLE)
    bad = [n for n in names if n not in RENEWABLE]
    if bad or not names:
        raise ConfigError([Problem("NAME", f"not a certificate kubeadm renews: {', '.join(bad) or '(none)'} "
                                           f"(all, {', '.join(sorted(RENEWABLE))})")], source="flags")
    return list(dict.fromkeys(names))


def state_entries(cfg: ClusterConfig, names: Collection[str]) -> set[str]:
    """The state directory entries (without .crt/.key) that are issued anew."""
    out = set()
    for cp in cfg.control_planes:
        for n in names:
            if n in _KUBECONFIGS:
                out.add(f"hosts/{cp.name}/clients/{n.removesuffix('.conf')}")
            else:
                out.add(f"hosts/{cp.name}/pki/{_LEAF_BASE[n]}")
    return out


def host_paths(names: Collection[str]) -> dict[str, str]:
    """Host path of each renewed file -> the name it belongs to (a leaf is its .crt and .key)."""
    out = {}
    for n in names:
        if n in _KUBECONFIGS:
            out[f"/etc/kubernetes/{n}"] = n
        else:
            for ext in ("crt", "key"):
                out[f"/etc/kubernetes/pki/{_LEAF_BASE[n]}.{ext}"] = n
    return out


def restarts(names: Collection[str]) -> list[str]:
    wanted = {c for n in names for c in RENEWABLE[n]}
    return [c for c in STATIC_PODS if c in wanted]  # etcd first: the API server reconnects to it


def running_containers(component: str) -> str:
    """Shell: one line `ID IMAGE` per running container of the component in containerd (as crictl ps shows)."""
    label = shlex.quote(f'labels."io.kubernetes.container.name"=={component}')
    return (f"running=$(timeout 30 ctr -n k8s.io tasks ls | awk '$3==\"RUNNING\" {{print $1}}'); "
            f"timeout 30 ctr -n k8s.io containers ls {label} | awk 'NR>1 {{print $1, $2}}' | "
            f"while read id image; do case \" $(echo $running) \" in *\" $id \"*) echo \"$id $image\";; esac; done")


# Seconds a stopped component gets to exit on SIGTERM before SIGKILL, as the kubelet's grace period does. Shorter
# than the pod's 30 s: out of the load balancer, what keeps an API server alive after SIGTERM is its open watches,
# which it holds until its own 60 s shutdown deadline and which every client re-opens elsewhere anyway.
STOP_GRACE = 10


def stop_containers(ids: Sequence[str], grace: int) -> str:
    """Shell: SIGTERM the containers' tasks, wait up to `grace` seconds for them to exit, SIGKILL what still runs."""
    q = " ".join(shlex.quote(c) for c in ids)
    running = ("timeout 30 ctr -n k8s.io tasks ls | awk -v c=$c '$1==c && $3==\"RUNNING\" {f=1} END {exit !f}'")
    return (f"for c in {q}; do timeout 30 ctr -n k8s.io tasks kill -s SIGTERM $c || true; done; "
            f"end=$(( $(date +%s) + {grace} )); "
            f"while [ $(date +%s) -lt $end ]; do left=0; for c in {q}; do if {running}; then left=1; fi; done; "
            f"[ $left = 0 ] && break; sleep 0.5; done; "
            f"for c in {q}; do if {running}; then timeout 30 ctr -n k8s.io tasks kill -s SIGKILL $c || true; fi; done")


def restart_components(s: Session, host: Host, components: Sequence[str], timeout: float) -> None:
    """Stop the components' running containers (the kubelet starts them again from the same manifests, which now
    read the renewed files) and wait until each has a new one; the API server must also be ready again. All at
    once: the control plane is out of the load balancer meanwhile, and the waits overlap. (etcd's new container is
    enough for etcd: the API server that is restarted next waits for its local member anyway.)"""
    t = s.runner.transports[host.name]

    def running() -> dict[str, set[str]]:
        script = "; ".join(f"echo {c} $({running_containers(c)} | cut -d' ' -f1)" for c in components)
        lines = t.run(script, display="list the components' running containers").stdout.splitlines()
        return {ln.split()[0]: set(ln.split()[1:]) for ln in lines if ln.strip()}

    before = running()
    ids = sorted(c for got in before.values() for c in got)
    if ids:
        t.run(stop_containers(ids, STOP_GRACE),
              display=f"stop the containers of {', '.join(components)} (the kubelet starts them again)")
    deadline = time.monotonic() + timeout
    waiting = list(components)
    while waiting:
        now = running()
        back = [c for c in waiting if now.get(c, set()) - before.get(c, set())
                and (c != "kube-apiserver" or ready(local_api_url(host)))]
        for c in back:
            s.info(host.name, f"{c} restarted with the renewed certificates")
        waiting = [c for c in waiting if c not in back]
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"{host.name} [certs renew]: {', '.join(waiting)} not back after {timeout:.0f}s",
                                   hint=f"check {host.name}: journalctl -u kubelet; the renewed files are in place, "
                                        f"run again to finish")
        time.sleep(1.0)


def renew_one(s: Session, host: Host, names: Collection[str], timeout: float) -> None:
    files = host_paths(names)
    have = s.runner.facts[host.name].files
    arts = [a for a in s.rendered.hosts[host.name] if a.path in files and a.path in have]  # !MISSING! stays so
    if not arts:
        return
    comps = restarts({files[a.path] for a in arts})
    if s.dry_run:
        s.change(host.name, f"write {len(arts)} renewed file(s), restart {', '.join(comps) or 'nothing'}")
        return
    others = [h for h in s.cfg.control_planes if h.name != host.name]
    out_of_lb = "kube-apiserver" in comps and bool(ready_control_planes(s.cfg, others))
    if out_of_lb:  # the others serve while this API server restarts
        s.point_load_balancers(ready_control_planes(s.cfg, others))
    t = s.runner.transports[host.name]
    for a in arts:
        t.put(a.path, a.content, a.mode, a.owner, a.group)
    s.change(host.name, f"wrote {len(arts)} renewed file(s)")
    # etcd first and alone: this API server talks to its local member only, and would crash-loop without it
    for group in ([c for c in comps if c == "etcd"], [c for c in comps if c != "etcd"]):
        if group:
            restart_components(s, host, group, timeout)
    if out_of_lb:
        s.point_load_balancers(ready_control_planes(s.cfg, s.cfg.control_planes))
    s.runner.gather([host])
    kubectl = plan_kubectl(s.runner.context(), host)  # ~/.kube/config follows a renewed admin.conf
    s.apply(host, [a for a in kubectl if isinstance(a, RunCommand) and "completion" not in a.command])


def renew(req: RenewRequest, rep: output.Reporter) -> RunResult:
    names = chosen_names(req.names)
    rendered: RenderResult = render(req.inventory, req.state_dir,
                                    renew=None if req.dry_run else (lambda cfg: state_entries(cfg, names)))
    cfg = rendered.config
    if not req.dry_run:
        rep.info("certs renew", None, f"issued {len(state_entries(cfg, names)) } certificate(s) anew from the "
                                      f"existing CAs (state directory {rendered.state_dir})")

    def step(s: Session) -> None:
        s.start()
        for h in cfg.control_planes:  # one control plane at a time
            renew_one(s, h, names, req.timeout)
        s.done()

    def session(runner: Runner, path: str, dry_run: bool, result: RunResult) -> Session:
        return Session(runner, rendered, path, dry_run, result)

    paths = list(host_paths(names)) + ["/root/.kube/config", ADMIN_CONF]
    runner = Runner(cfg, {}, RunOptions(), req.connect, rep, TraceLog(rendered.state_dir / "trace.log"),
                    session=session, extra_paths=lambda h: paths if h.is_control_plane else [])
    runner.hosts = [h for h in cfg.hosts if h.is_control_plane or nginx_conf(cfg, h) is not None]
    try:
        return runner.run((Phase("renew", "Renew, one control plane at a time", step=step),), (), (), req.dry_run)
    finally:
        runner.close()
