"""A real Kubernetes control plane started from kubeboot's rendered files — no fake API server anywhere.

``kubeboot render`` writes ``DIR/<host>/<absolute path>`` for every file a host needs. This module runs the
control-plane static pods of such a tree the way a kubelet would, minus containers: each container's
``command`` from ``DIR/<host>/etc/kubernetes/manifests/*.yaml`` runs as a process, with the binary replaced by
the reference build (``tests/reference/build.sh``) and the absolute host paths remapped:

* ``/etc/kubernetes`` -> ``DIR/<host>/etc/kubernetes`` (certificates, keys, kubeconfigs; the kubeconfigs embed
  their certificates, so only flags need remapping);
* ``/var/lib/etcd`` -> a per-host data directory under the runner's work directory.

Any other absolute path in a flag is an error (the harness would otherwise silently read this machine's files).

Every host is a network namespace of its own (own loopback, like a separate machine) holding its inventory
address on a bridge; the bridge lives in an extra ``ctl`` namespace, the "workstation", where ``kubectl`` and
``openssl`` run. Nothing is added to the root namespace. Readiness is the manifest's own probe
(``readinessProbe``, else ``startupProbe``, else ``livenessProbe``), polled from inside the host's namespace
with ``curl -k`` (no TLS verification, like the kubelet), with a deadline.

Usage (as root, with the reference binaries built)::

    from tests.integration.conftest import render_inventory
    from tests.reference.controlplane import Network, StaticPodRunner, kubectl

    tree = render_inventory(INVENTORY, tmp / "render")            # DIR of `kubeboot render`
    with Network({"cp1": "10.200.7.11", "w1": "10.200.7.21"}) as net:   # ctl = 10.200.7.1
        with StaticPodRunner(net, tree.root, "cp1", tmp / "cp1") as cp1:
            cp1.start_all()                       # etcd, kube-apiserver, kcm, scheduler; each waits for its probe
            print(cp1.timings)                    # {"etcd": 0.9, "kube-apiserver": 7.1, ...} seconds to ready
            kubectl(net, tree.root, "cp1", "get", "--raw", "/readyz", kubeconfig="super-admin.conf")
            cp1.stop("kube-apiserver")            # SIGTERM, then SIGKILL after a grace period
            cp1.start("kube-apiserver")           # same flags again, waits for readiness
            net.run("ctl", ["openssl", "s_client", ...])   # any command inside a namespace

``kubectl(net, DIR, host, *args, kubeconfig="admin.conf")`` runs the reference kubectl in the ctl namespace
with ``--kubeconfig DIR/<host>/etc/kubernetes/<kubeconfig>``; the kubeconfigs' server is the inventory's
``controlPlaneEndpoint``, so use ``loadBalancer: {mode: none}`` with an endpoint that is a control plane's
inventory address (e.g. ``10.200.7.11:6443``). With RBAC, ``admin.conf`` (group kubeadm:cluster-admins) is
forbidden until the ClusterRoleBinding ``kubeadm:cluster-admins`` exists; ``super-admin.conf`` (first control
plane only, group system:masters) always works — as in ``kubeadm init``.

A failed start or probe raises ``AssertionError`` whose message ends with the tail of every component's log
(``runner.logs()``). Namespaces are named ``kbcp<pid>-<host>`` and ``kbcp<pid>-ctl``; entering ``Network``
first deletes namespaces of that prefix whose creating process is gone (leftovers of a killed run), killing
whatever still runs in them. ``python -m tests.reference.controlplane --clean`` does the same by hand.

Limits: no kubelet, no container runtime and no CNI — the processes share this machine's file system, PID and
mount namespaces; the manifests' volumes, resources and securityContext are not applied (only the paths the
flags name are remapped). Hosts run as the calling user (root). The apiserver cannot reach kubelets (none
run), so ``logs``/``exec`` cannot be tested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from tests.reference.binaries import DEFAULT_VERSION, build_command, ref_bin

NETNS_PREFIX = "kbcp"
SUBNET = "10.200.7"
CTL_ADDRESS = f"{SUBNET}.1"
PREFIX_LEN = 24
CTL = "ctl"
# kubeadm's order: etcd first, then the API server, then its clients.
ORDER: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
MANIFESTS = "/etc/kubernetes/manifests"
LOG_TAIL = 3000
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class ControlPlaneError(AssertionError):
    """The harness could not do what was asked; the message carries the relevant log tails."""


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
             details: Callable[[], str] | None = None) -> float:
    """Poll ``cond`` until it is true or ``timeout`` seconds passed; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def _ip_batch(commands: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    args = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    p = subprocess.run(args, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60,
                       env=_ENV)
    if p.returncode != 0 and not force:
        raise ControlPlaneError(f"{' '.join(args)} failed: {p.stderr.strip()}\ncommands:\n" + "\n".join(commands))


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _pids_in(netns_names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of ``netns_names`` (what ``ip netns pids`` does, at once)."""
    inodes = {i for i in (_ns_inode(f"/run/netns/{n}") for n in netns_names) if i is not None}
    if not inodes:
        return []
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if _ns_inode(f"/proc/{entry}/ns/net") in inodes:
            found.append(int(entry))
    return found


def _kill_and_delete(netns_names: Sequence[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pids := _pids_in(netns_names):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:  # reap our own children; others are reaped by their parents or init
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"processes survive SIGKILL in {list(netns_names)}: {pids}")
        time.sleep(0.02)
    existing = set(_list_netns())
    todo = [n for n in netns_names if n in existing]
    if todo:
        _ip_batch([f"netns del {n}" for n in todo], force=True)


def _list_netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _owner_pid(netns: str) -> int | None:
    """The pid in ``kbcp<pid>-<host>``, or None when the name is not one of ours."""
    if not netns.startswith(NETNS_PREFIX) or "-" not in netns:
        return None
    head = netns[len(NETNS_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> list[str]:
    """Delete ``kbcp<pid>-*`` namespaces whose creating process is gone, killing what still runs in them."""
    stale = [n for n in _list_netns() if (pid := _owner_pid(n)) is not None and not _alive(pid)]
    if stale:
        _kill_and_delete(stale)
    return stale


def prerequisites() -> list[str]:
    """Reasons the harness cannot run here (empty: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root to create network namespaces (run the tests as root)")
    for tool in ("ip", "curl", "openssl"):
        if shutil.which(tool, path=_ENV["PATH"]) is None:
            problems.append(f"`{tool}` is not installed (run tests/setup.sh)")
    for name in (*ORDER, "kubectl"):
        if ref_bin(name) is None:
            problems.append(f"reference binary {name} v{DEFAULT_VERSION} not built ({build_command(name)})")
    return problems


class Network:
    """One network namespace per host plus the ``ctl`` namespace holding the bridge (the workstation).

    ``hosts`` maps host names to their inventory addresses, all inside ``SUBNET.0/24``; ``ctl`` gets
    ``ctl_address``. Leaving the context kills every process in these namespaces and deletes them."""

    def __init__(self, hosts: Mapping[str, str], ctl_address: str = CTL_ADDRESS, prefix_len: int = PREFIX_LEN,
                 tag: str | None = None) -> None:
        if CTL in hosts:
            raise ValueError(f"{CTL!r} is the workstation namespace, not a host name")
        self.hosts = dict(hosts)
        self.ctl_address = ctl_address
        self.prefix_len = prefix_len
        self.tag = tag or f"{NETNS_PREFIX}{os.getpid()}"
        self.netns = {name: f"{self.tag}-{name}" for name in (CTL, *self.hosts)}
        self._up = False

    def ns(self, host: str) -> str:
        return self.netns[host]

    def address(self, host: str) -> str:
        return self.ctl_address if host == CTL else self.hosts[host]

    def argv(self, host: str, cmd: Sequence[str]) -> list[str]:
        """``cmd`` wrapped to run inside ``host``'s namespace (``host`` may be ``"ctl"``)."""
        return ["ip", "netns", "exec", self.netns[host], *cmd]

    def run(self, host: str, cmd: Sequence[str], timeout: float = 60, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(host, cmd), capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise ControlPlaneError(f"in {host}: {' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def up(self) -> None:
        clean_stale()
        leftovers = [n for n in self.netns.values() if n in _list_netns()]
        if leftovers:  # our own pid: an earlier Network of this process was not torn down
            _kill_and_delete(leftovers)
        ctl = self.netns[CTL]
        self._up = True
        try:
            _ip_batch([f"netns add {n}" for n in self.netns.values()])
            # veth pairs are created directly in their namespaces: nothing ever appears in the root namespace
            _ip_batch(["link set lo up", "link add br0 type bridge",
                       f"addr add {self.ctl_address}/{self.prefix_len} dev br0", "link set br0 up"]
                      + [f"link add v{i} type veth peer name eth0 netns {self.netns[h]}"
                         for i, h in enumerate(self.hosts)]
                      + [f"link set v{i} master br0 up" for i in range(len(self.hosts))], ctl)
            for host, addr in self.hosts.items():
                _ip_batch(["link set lo up", f"addr add {addr}/{self.prefix_len} dev eth0", "link set eth0 up",
                           f"route add default via {self.ctl_address}"], self.netns[host])
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        if self._up:
            self._up = False
            _kill_and_delete(list(self.netns.values()))

    def __enter__(self) -> Network:
        self.up()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.down()


@dataclass(frozen=True)
class Probe:
    url: str
    timeout: float
    source: str  # readinessProbe, startupProbe or livenessProbe


@dataclass
class Component:
    name: str
    argv: list[str]
    probe: Probe | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    logfile: IO[bytes] | None = field(default=None, repr=False)


def _probe_of(container: Mapping[str, Any]) -> Probe | None:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if not get:
            continue
        port = get["port"]
        port = ports[port] if isinstance(port, str) and not port.isdigit() else int(port)
        scheme = str(get.get("scheme", "HTTP")).lower()
        url = f"{scheme}://{get.get('host', '127.0.0.1')}:{port}{get.get('path', '/')}"
        return Probe(url, float(container[kind].get("timeoutSeconds", 1)), kind)
    return None


class StaticPodRunner:
    """A pseudo-kubelet: runs ``<tree>/<host>/etc/kubernetes/manifests/*.yaml`` as processes in ``host``'s
    namespace of ``net``, with the reference binaries and host paths remapped into ``tree`` / ``workdir``.

    ``start(name)`` / ``stop(name)`` act on one component (the manifest's ``metadata.name``), ``start_all()``
    starts every manifest in kubeadm order; each start waits for the component's probe.
    ``timings[name]`` is the seconds from spawn to ready of the last start."""

    def __init__(self, net: Network, tree: Path, host: str, workdir: Path, version: str = DEFAULT_VERSION,
                 binaries: Mapping[str, Path] | None = None) -> None:
        self.net, self.tree, self.host, self.version = net, Path(tree), host, version
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.tree / host
        self.remap: dict[str, Path] = {
            "/etc/kubernetes": self.root / "etc/kubernetes",
            "/var/lib/etcd": self.workdir / "var/lib/etcd",
        }
        self.binaries = dict(binaries or {})
        self.components: dict[str, Component] = {}
        self.timings: dict[str, float] = {}
        mdir = self.root / MANIFESTS.lstrip("/")
        if not mdir.is_dir():
            raise ControlPlaneError(f"{host} has no static-pod manifests ({mdir} missing)")
        for path in sorted(mdir.glob("*.yaml")):
            pod = yaml.safe_load(path.read_text())
            containers = pod["spec"]["containers"]
            if len(containers) != 1:
                raise ControlPlaneError(f"{path}: expected one container, found {len(containers)}")
            c = containers[0]
            name = pod["metadata"]["name"]
            self.components[name] = Component(name, self._argv(path, c["command"] + c.get("args", [])),
                                              _probe_of(c), self.workdir / f"{name}.log")

    # ---- commands

    def _binary(self, name: str) -> str:
        if name in self.binaries:
            return str(self.binaries[name])
        path = ref_bin(name, self.version)
        if path is None:
            raise ControlPlaneError(f"reference binary {name} v{self.version} not built ({build_command(name)})")
        return str(path)

    def _map_path(self, value: str, where: str) -> str:
        if not value.startswith("/"):
            return value
        for host_path, local in self.remap.items():
            if value == host_path or value.startswith(host_path + "/"):
                return str(local) + value[len(host_path):]
        raise ControlPlaneError(f"{where}: host path {value} has no mapping (known: {', '.join(self.remap)})")

    def _argv(self, manifest: Path, command: Sequence[str]) -> list[str]:
        argv = [self._binary(Path(command[0]).name)]
        for arg in command[1:]:
            if arg.startswith("--") and "=" in arg:
                flag, value = arg.split("=", 1)
                where = f"{manifest.name} {flag}"
                argv.append(f"{flag}=" + ",".join(self._map_path(v, where) for v in value.split(",")))
            else:
                argv.append(self._map_path(arg, f"{manifest.name} {arg}"))
        return argv

    def command(self, name: str) -> list[str]:
        """The command ``start(name)`` runs (inside the host's namespace)."""
        return list(self.components[name].argv)

    # ---- lifecycle

    def start(self, name: str, wait: bool = True, timeout: float = 60.0) -> float:
        """Start one component detached in the host's namespace; with ``wait``, poll its probe until it passes
        (or the process exits, or ``timeout``). Returns the seconds to ready (0 without ``wait``)."""
        comp = self.components[name]
        if comp.proc is not None and comp.proc.poll() is None:
            raise ControlPlaneError(f"{self.host}/{name} is already running (pid {comp.proc.pid})")
        if name == "etcd":
            self.remap["/var/lib/etcd"].parent.mkdir(parents=True, exist_ok=True)
        comp.logfile = open(comp.log, "ab")
        comp.logfile.write(f"==== {time.strftime('%H:%M:%S')} start {' '.join(comp.argv)}\n".encode())
        comp.logfile.flush()
        comp.proc = subprocess.Popen(self.net.argv(self.host, comp.argv), stdin=subprocess.DEVNULL,
                                     stdout=comp.logfile, stderr=subprocess.STDOUT, env=_ENV,
                                     start_new_session=True)
        if not wait:
            return 0.0
        took = self.wait_ready(name, timeout)
        self.timings[name] = took
        return took

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; no-op when not running."""
        comp = self.components[name]
        proc = comp.proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            comp.proc = None
        if comp.logfile is not None:
            comp.logfile.close()
            comp.logfile = None

    def start_all(self, timeout: float = 90.0) -> dict[str, float]:
        """Every manifest, kubeadm order first (etcd, apiserver, kcm, scheduler), each waited for."""
        names = [n for n in ORDER if n in self.components] + sorted(set(self.components) - set(ORDER))
        for name in names:
            self.start(name, timeout=timeout)
        return dict(self.timings)

    def stop_all(self) -> None:
        names = [n for n in ORDER if n in self.components] + sorted(set(self.components) - set(ORDER))
        for name in reversed(names):
            self.stop(name)

    def running(self, name: str) -> bool:
        proc = self.components[name].proc
        return proc is not None and proc.poll() is None

    def __enter__(self) -> StaticPodRunner:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    # ---- probes

    def probe(self, name: str) -> bool:
        """One probe of ``name`` from inside the host's namespace: HTTP 200-399 passes, TLS is not verified."""
        comp = self.components[name]
        if comp.probe is None:
            return self.running(name)
        t = min(comp.probe.timeout, 3.0)
        try:
            p = self.net.run(self.host, ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                                         str(t), comp.probe.url], timeout=t + 10)
        except subprocess.TimeoutExpired:
            return False
        return p.stdout.isdigit() and 200 <= int(p.stdout) < 400

    def wait_ready(self, name: str, timeout: float = 60.0) -> float:
        comp = self.components[name]

        def ready() -> bool:
            if not self.running(name):
                code = comp.proc.returncode if comp.proc is not None else None
                raise ControlPlaneError(f"{self.host}/{name} exited (status {code}) before its probe passed\n"
                                        + self.logs())
            return self.probe(name)

        what = f"{self.host}/{name} {comp.probe.source} {comp.probe.url}" if comp.probe else f"{self.host}/{name}"
        return wait_for(ready, timeout, what, interval=0.25, details=self.logs)

    # ---- diagnostics

    def logs(self, tail: int = LOG_TAIL) -> str:
        """The last ``tail`` characters of every component's log, for assertion messages."""
        out = []
        for comp in self.components.values():
            if comp.log.exists():
                text = comp.log.read_bytes()[-tail:].decode(errors="replace")
                state = "running" if self.running(comp.name) else "stopped"
                out.append(f"----- {self.host}/{comp.name} ({state}) {comp.log} (last {tail} chars)\n{text}")
        return "\n".join(out)

    def kubectl(self, *args: str, kubeconfig: str = "admin.conf",
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return kubectl(self.net, self.tree, self.host, *args, kubeconfig=kubeconfig, timeout=timeout,
                       cache_dir=self.workdir / "kubectl-cache")

    def check(self, cond: bool, message: str) -> None:
        """``assert`` with every component's log tail in the failure message."""
        if not cond:
            raise ControlPlaneError(f"{message}\n{self.logs()}")


def kubectl(net: Network, tree: Path, host: str, *args: str, kubeconfig: str = "admin.conf", timeout: float = 30,
            cache_dir: Path | None = None, version: str = DEFAULT_VERSION) -> subprocess.CompletedProcess[str]:
    """The reference kubectl in the ctl namespace with ``--kubeconfig <tree>/<host>/etc/kubernetes/<kubeconfig>``
    (``kubeconfig`` may also be an absolute path)."""
    binary = ref_bin("kubectl", version)
    if binary is None:
        raise ControlPlaneError(f"reference binary kubectl v{version} not built ({build_command('kubectl')})")
    config = Path(kubeconfig) if kubeconfig.startswith("/") else Path(tree) / host / "etc/kubernetes" / kubeconfig
    cache = cache_dir or Path(tree).parent / "kubectl-cache"
    return net.run(CTL, [str(binary), f"--kubeconfig={config}", f"--cache-dir={cache}", "--request-timeout=20s",
                         *args], timeout=timeout)


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["--clean"]:
        print("usage: python -m tests.reference.controlplane --clean   # delete stale kbcp<pid>-* namespaces",
              file=sys.stderr)
        return 2
    for n in clean_stale():
        print(f"deleted {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))

__all__ = ["CTL", "ControlPlaneError", "Network", "Probe", "StaticPodRunner", "clean_stale", "kubectl",
           "prerequisites", "wait_for"]
