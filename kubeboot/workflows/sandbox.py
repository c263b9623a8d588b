"""Shell: `kubeboot sandbox` — a real HA cluster on one Linux machine.

Read SANDBOX_UP beside what a person does to try kubeadm's HA recipe on machines of their own: check the machine,
take the offline bundle, start the hosts (systemd as PID 1, sshd, each its own network namespace on a private
bridge), write the inventory, run `kubeboot up` over SSH, fetch the admin kubeconfig, show the nodes.

Nothing leaves the sandbox's bridge and nothing is added to the machine's own network: the bridge and the
"workstation" side of every connection live in the sandbox's controller namespace (`kbsb-<name>-ctl`), where
`kubeboot up`, `sandbox kubectl` and `sandbox ssh` run. Everything of a sandbox is under
/var/lib/kubeboot/sandbox/<name>/ (hosts' disks, keys, inventory, kubeboot's state directory, admin.conf).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeboot import output
from kubeboot.bundle.manifest import Bundle, load_bundle
from kubeboot.bundle.manifest import default_dir as default_bundle_dir
from kubeboot.errors import (
    BundleError,
    ClusterDegradedError,
    KubebootError,
    SandboxConflictError,
    SandboxUnsupportedError,
)
from kubeboot.sandbox import shape as sh

SANDBOX_ROOT = Path(os.environ.get("KUBEBOOT_SANDBOX_ROOT", "/var/lib/kubeboot/sandbox"))
NETNS_PREFIX = "kbsb-"
DEFAULT_NAME = "sandbox"
UP_TIMEOUT = 3600.0


def sandbox_dir(name: str) -> Path:
    return SANDBOX_ROOT / name


@dataclass(frozen=True)
class Files:
    """A sandbox's files on this machine."""

    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def admin(self) -> Path:
        return self.root / "admin.conf"

    @property
    def kubectl(self) -> Path:
        return self.root / "bin" / "kubectl"

    @property
    def client_ssh_config(self) -> Path:
        """What `kubeboot up` reads inside the controller namespace (no ~/.ssh/config of the person running it)."""
        return self.root / "kubeboot-ssh-config"


@dataclass(frozen=True)
class UpRequest:
    name: str = DEFAULT_NAME
    shape: sh.Shape = sh.Shape()
    bundle: Path | None = None
    wait_timeout: float = 240.0


@dataclass
class Run:
    """What the steps of one `sandbox up` share."""

    req: UpRequest
    files: Files
    reporter: output.Reporter
    bundle: Bundle | None = None
    lab: Any = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    fn: Callable[[Run], str]


# --- checks ---------------------------------------------------------------------------------------------------


def machine_problems(shape: sh.Shape) -> list[str]:
    """Everything that keeps this machine from hosting the sandbox, each with what to do (the package to install)."""
    from kubeboot.sandbox import checks

    bad = checks.machine_problems()
    if bad:
        return bad
    return checks.memory_problems(shape.control_planes, shape.workers, shape.load_balancers)


def check(run: Run) -> str:
    bad = machine_problems(run.req.shape)
    if bad:
        raise SandboxUnsupportedError("this machine cannot host the sandbox: " + "; ".join(bad),
                                      hint="nothing was created")
    from kubeboot.sandbox import hosts

    uses = hosts.subnet_uses(run.req.shape.subnet, exclude=run.req.name, root=SANDBOX_ROOT)
    if uses:
        raise SandboxConflictError(f"subnet {run.req.shape.subnet} is in use: {'; '.join(uses)}",
                                   hint="pick a free private /24 with --subnet (e.g. 10.201.0.0/24); nothing "
                                        "was created")
    from kubeboot.sandbox import checks

    shape = run.req.shape
    need = checks.memory_needed(shape.control_planes, shape.workers, shape.load_balancers)
    return (f"{platform.node()}: root, namespaces, systemd-nspawn; {len(run.req.shape.hosts())} hosts need about "
            f"{need >> 20} MiB of {checks.memory_available() >> 20} MiB available; subnet {run.req.shape.subnet} free")


def take_bundle(run: Run) -> str:
    version = run.req.shape.version
    d = run.req.bundle or default_bundle_dir(version)
    if run.req.bundle is None and not d.exists():
        raise BundleError(f"no bundle for Kubernetes {version} in {d}",
                          hint=f"build one: kubeboot bundle build --from-source --version {version}, or pass "
                               f"--bundle DIR")
    b = load_bundle(d)
    if b.version != version:
        raise BundleError(f"bundle {d} is for Kubernetes {b.version}, the sandbox asks for {version}",
                          hint=f"pass --version {b.version}, or build a bundle for {version}")
    if b.binary("kubectl") is None:
        raise BundleError(f"bundle {d} has no bin/kubectl", hint="build it again with `kubeboot bundle build`")
    run.bundle = b
    return f"{d}: Kubernetes {b.version}, {len(b.manifest.entries)} artifacts, digests verified"


# --- hosts ----------------------------------------------------------------------------------------------------


def _lab(name: str, shape: sh.Shape, root: Path) -> Any:
    from kubeboot.sandbox import hosts

    return hosts.SystemdHosts(name, names=shape.names(), state_dir=root / "hosts", netns_prefix=NETNS_PREFIX,
                              subnet=shape.subnet, users=())


def start_hosts(run: Run) -> str:
    lab = _lab(run.req.name, run.req.shape, run.files.root)
    lab.up(timeout=300.0)
    run.lab = lab
    return f"{len(lab.hosts)} hosts booted: " + ", ".join(f"{h.name} {h.address}" for h in lab.hosts)


def write_inventory(run: Run) -> str:
    lab, f = run.lab, run.files
    cgroup_v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    doc = sh.inventory(run.req.shape, run.req.name, {h.name: str(h.address) for h in lab.hosts}, str(lab.key_path),
                       cgroup_v1)
    f.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    f.client_ssh_config.write_text("# kubeboot sandbox: no ~/.ssh/config; host keys are in known_hosts\n")
    f.kubectl.parent.mkdir(parents=True, exist_ok=True)
    kubectl = run.bundle.binary("kubectl") if run.bundle else None
    assert kubectl is not None
    shutil.copyfile(kubectl, f.kubectl)
    f.kubectl.chmod(0o755)
    return f"{f.inventory} ({len(doc['spec']['hosts'])} hosts, load balancer {run.req.shape.lb})"


def in_ctl(name: str, argv: Sequence[str]) -> list[str]:
    """argv run in the sandbox's controller namespace: the only place its hosts are reachable from."""
    return ["ip", "netns", "exec", f"{NETNS_PREFIX}{name}-ctl", *argv]


def kubeboot_argv(files: Files, lab: Any, *args: str) -> list[str]:
    return [sys.executable, "-m", "kubeboot.cli", *args, "-i", str(files.inventory), "--state-dir", str(files.state),
            "--known-hosts", str(lab.known_hosts), "--ssh-config", str(files.client_ssh_config)]


def run_up(run: Run) -> str:
    assert run.bundle is not None
    argv = in_ctl(run.req.name, [*kubeboot_argv(run.files, run.lab, "up"), "--bundle", str(run.bundle.root),
                                 "--wait-timeout", str(run.req.wait_timeout)])
    # the real `kubeboot up`, its progress straight to this terminal
    rc = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=UP_TIMEOUT).returncode
    if rc != 0:
        err = KubebootError(f"kubeboot up on the sandbox's hosts failed (exit {rc}; its messages are above)",
                            hint=f"fix what it says and run `kubeboot sandbox up --name {run.req.name}` again (it "
                                 f"resumes), or `kubeboot sandbox down --name {run.req.name}`")
        err.exit_code = rc
        raise err
    return "kubeboot up finished"


def fetch_kubeconfig(run: Run) -> str:
    from kubeboot.workflows.kubeconfig import admin_kubeconfig, write_kubeconfig

    write_kubeconfig(run.files.admin, admin_kubeconfig(run.files.inventory, run.files.state))
    return f"{run.files.admin} (0600)"


SANDBOX_UP: tuple[Step, ...] = (
    Step("check", "root, Linux, namespaces, systemd-nspawn, debootstrap, memory, a free subnet", check),
    Step("bundle", "the offline bundle: every artifact's digest", take_bundle),
    Step("hosts", "systemd hosts on a private bridge, each with sshd and its own key", start_hosts),
    Step("inventory", "the inventory, known_hosts and kubectl for this machine", write_inventory),
    Step("up", "kubeboot up over SSH, from the sandbox's controller namespace", run_up),
    Step("kubeconfig", "the cluster's admin kubeconfig", fetch_kubeconfig),
)


def save_meta(files: Files, req: UpRequest) -> None:
    files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.meta.write_text(json.dumps({"name": req.name, "shape": req.shape.to_dict(),
                                      "bundle": str(req.bundle) if req.bundle else None}, indent=2) + "\n")


def load_meta(name: str) -> tuple[Files, dict[str, Any]] | None:
    files = Files(sandbox_dir(name))
    try:
        return files, json.loads(files.meta.read_text())
    except FileNotFoundError:
        return None


def up(req: UpRequest, reporter: output.Reporter) -> Run:
    req.shape.check()
    files = Files(sandbox_dir(req.name))
    run = Run(req, files, reporter)
    prior = load_meta(req.name)
    steps = list(SANDBOX_UP)
    if prior is not None:
        old = sh.Shape.from_dict(prior[1]["shape"])
        from kubeboot.sandbox import hosts

        lab = hosts.attach(req.name, NETNS_PREFIX, files.root / "hosts")
        if lab is not None and hosts.running(lab):
            if old != req.shape:
                raise SandboxConflictError(f"sandbox {req.name!r} is up with another shape ({_describe(old)})",
                                           hint=f"`kubeboot sandbox down --name {req.name}` first, or run up with "
                                                f"the same options")
            run.lab = lab
            steps = [s for s in steps if s.name not in ("hosts",)]
        else:  # killed or half made: start over from nothing
            reporter.info("sandbox", None, f"sandbox {req.name!r} was left behind (its processes are gone): "
                                           f"removing it first")
            down(req.name, reporter, quiet_if_absent=True)
    for step in steps:
        reporter.phase_start(step.name)
        if step.name == "hosts":
            save_meta(files, req)  # before anything exists, so `down` finds whatever a crash leaves behind
        t0 = time.monotonic()
        summary = step.fn(run)
        run.timings[step.name] = time.monotonic() - t0
        reporter.phase_done(step.name, summary)
    return run


def _describe(s: sh.Shape) -> str:
    return f"{s.control_planes} control planes, {s.workers} workers, --lb {s.lb}, {s.version}, {s.subnet}"


# --- day to day -----------------------------------------------------------------------------------------------


def require(name: str) -> tuple[Files, dict[str, Any]]:
    got = load_meta(name)
    if got is None:
        raise KubebootError(f"no sandbox named {name!r} (nothing in {sandbox_dir(name)})",
                            hint="create one with `kubeboot sandbox up`")
    return got


def stop_clients(root: Path, grace: float = 10.0) -> list[int]:
    """Processes working on this sandbox from the machine (a `kubeboot up` whose `sandbox up` was killed, a
    `sandbox kubectl`): they name its directory on their command line. SIGTERM, then SIGKILL after `grace`."""
    from kubeboot.sandbox.system import alive, all_pids, ancestors, cmdline

    mine, needle = ancestors(), str(root) + "/"
    found = [p for p in all_pids() if p not in mine and needle in cmdline(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in found):
            time.sleep(0.1)
    return found


def down(name: str, reporter: output.Reporter, quiet_if_absent: bool = False) -> list[str]:
    """Stop every host, remove namespaces, mounts, cgroups and files; return what could not be removed."""
    from kubeboot.sandbox import hosts

    files = Files(sandbox_dir(name))
    if not files.root.exists() and not hosts.leftovers(name, NETNS_PREFIX, files.root / "hosts"):
        if not quiet_if_absent:
            reporter.info("down", None, f"no sandbox {name!r}: nothing to remove")
        return []
    stop_clients(files.root)
    hosts.teardown(name, NETNS_PREFIX, files.root / "hosts")
    left = hosts.leftovers(name, NETNS_PREFIX, files.root / "hosts")
    if not left:
        shutil.rmtree(files.root, ignore_errors=True)
        if files.root.exists():
            left.append(f"{files.root} (could not be removed)")
    return left


def nodes_table(run: Run) -> str:
    """`kubectl get nodes -o wide` as the sandbox's admin (what the person trying kubeboot wants to see)."""
    return kubectl_output(run.req.name, run.files, ["get", "nodes", "-o", "wide"])


def kubectl_argv(name: str, files: Files, args: Sequence[str]) -> list[str]:
    """The sandbox's kubectl as its admin, in its controller namespace."""
    return in_ctl(name, [str(files.kubectl), "--kubeconfig", str(files.admin), *args])


def kubectl_output(name: str, files: Files, args: Sequence[str], timeout: float = 60.0) -> str:
    argv = kubectl_argv(name, files, args)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise KubebootError(f"kubectl {' '.join(args)} failed in sandbox {name!r}: {res.stderr.strip()[-500:]}",
                            hint=f"`kubeboot sandbox status --name {name}` shows what is wrong")
    return res.stdout.rstrip("\n")


def how_to_reach(run: Run) -> str:
    n, f = run.req.name, run.files
    named = "" if n == DEFAULT_NAME else f" --name {n}"
    first_cp = next(h for h, r in run.req.shape.hosts() if r == "control-plane")
    return "\n".join([
        "",
        f"kubeconfig: {f.admin}",
        f"  (the API answers only inside the sandbox's network namespace {NETNS_PREFIX}{n}-ctl:",
        f"   sudo ip netns exec {NETNS_PREFIX}{n}-ctl {f.kubectl} --kubeconfig {f.admin} get nodes)",
        f"inventory:  {f.inventory}  (state: {f.state})",
        "next:",
        f"  kubeboot sandbox kubectl{named} get pods -A",
        f"  kubeboot sandbox ssh{named} {first_cp}",
        f"  kubeboot sandbox status{named}",
        f"  kubeboot sandbox down{named}",
    ])


def status(name: str, reporter: output.Reporter) -> int:
    """Each host's state, then `kubeboot status` of the cluster; returns kubeboot status's exit code."""
    from kubeboot.sandbox import hosts

    files, meta = require(name)
    lab = hosts.attach(name, NETNS_PREFIX, files.root / "hosts")
    if lab is None or not hosts.running(lab):
        reporter.warn("sandbox", None, f"sandbox {name!r} is not running (its processes are gone); "
                                       f"`kubeboot sandbox down --name {name}` cleans it up")
        return ClusterDegradedError.exit_code
    for h in lab.hosts:
        reporter.info("sandbox", h.name, f"{h.address} {'running' if hosts.host_running(lab, h) else 'STOPPED'}")
    if not files.inventory.exists():
        reporter.warn("sandbox", None, "no inventory yet: the hosts are up but `kubeboot up` has not run")
        return ClusterDegradedError.exit_code
    return subprocess.run(in_ctl(name, kubeboot_argv(files, lab, "status")), stdin=subprocess.DEVNULL).returncode


def exec_ssh(name: str, node: str, command: Sequence[str]) -> None:
    from kubeboot.sandbox import hosts

    files, _meta = require(name)
    lab = hosts.attach(name, NETNS_PREFIX, files.root / "hosts")
    if lab is None:
        raise KubebootError(f"sandbox {name!r} has no hosts", hint="`kubeboot sandbox up` creates them")
    names = [h.name for h in lab.hosts]
    if node not in names:
        raise KubebootError(f"sandbox {name!r} has no host {node!r}", hint=f"its hosts: {', '.join(names)}")
    os.execvp("ssh", ["ssh", "-F", str(lab.ssh_config), node, *command])


def exec_kubectl(name: str, args: Sequence[str]) -> None:
    files, _meta = require(name)
    if not files.admin.exists():
        raise KubebootError(f"sandbox {name!r} has no cluster yet (no {files.admin})",
                            hint=f"`kubeboot sandbox up --name {name}` builds it")
    argv = kubectl_argv(name, files, args)
    os.execvp(argv[0], argv)
