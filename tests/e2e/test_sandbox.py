"""`kubeboot sandbox`, as a person trying kubeboot runs it: `sandbox up --bundle B` on this machine makes the
recipe's cluster (an nginx host, 3 control planes, 2 workers: real systemd hosts, real SSH, the real `kubeboot up`)
from the offline bundle alone; `sandbox kubectl/ssh/status` reach it; a second `up` changes nothing; `down` leaves
nothing (checked here independently of the sandbox's own bookkeeping: namespaces, mounts, cgroups, processes,
files). Also: a sandbox whose `up` was SIGKILLed is cleaned up by `down`; every refusal with its exit code and
nothing created; a tampered bundle refused by `up --bundle` by name with nothing changed on any host."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from kubeboot.sandbox.system import wait_until
from tests.lab.fixtures import systemd_lab_skip_reason
from tests.reference.bundle import require_bundle

ROOT = Path(os.environ.get("KUBEBOOT_SANDBOX_ROOT", "/var/lib/kubeboot/sandbox"))
NAME = f"pt{os.getpid()}"


def kb(*args: str, timeout: float = 1800, env: dict[str, str] | None = None,
       user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kubeboot.cli", *args]
    if user is not None:  # as an unprivileged user (a user namespace, so it still reads this root-owned checkout)
        argv = ["unshare", "--user", f"--map-user={user}", f"--map-group={user}", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(Path.cwd()), **(env or {})})


def leftovers(name: str) -> list[str]:
    """Everything of sandbox `name` still on this machine, found without the sandbox's code."""
    tag = f"kbsb-{name}-"
    out = [f"netns {n}" for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                  check=True).stdout.split() if n.startswith(tag)]
    d = ROOT / name
    out += [f"mount {m.split()[1]}" for m in Path("/proc/self/mounts").read_text().splitlines()
            if m.split()[1].startswith(str(d)) or tag in m.split()[1]]
    for top in Path("/sys/fs/cgroup").iterdir():
        if top.is_dir() and not top.is_symlink():
            out += [f"cgroup {p}" for p in top.rglob(f"{tag}*") if p.is_dir()]
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (tag in cmd or str(d) + "/" in cmd) and int(pid) != os.getpid():
            out.append(f"process {pid} {cmd[:120]}")
    if d.exists():
        out.append(f"files {d}")
    return out


@pytest.fixture(scope="module")
def bundle() -> Path:
    reason = systemd_lab_skip_reason()
    if reason:
        pytest.skip(reason)
    return require_bundle()


@pytest.fixture(scope="module")
def sandbox(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.CompletedProcess[str]]:
    logs = tmp_path_factory.mktemp("sandbox")
    t0 = time.monotonic()
    got = kb("sandbox", "up", "--name", NAME, "--bundle", str(bundle))
    (logs / "up.log").write_text(f"{time.monotonic() - t0:.1f}s\n" + got.stdout + got.stderr)
    try:
        assert got.returncode == 0, got.stderr[-6000:]
        yield got
    finally:
        if (ROOT / NAME).exists():
            kb("sandbox", "down", "--name", NAME, timeout=300)


def kubectl_json(*args: str) -> Any:
    got = kb("sandbox", "kubectl", "--name", NAME, *args, "-o", "json", timeout=120)
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def test_sandbox_up_builds_the_recipes_cluster_from_the_bundle(sandbox: subprocess.CompletedProcess[str]) -> None:
    # it ends by printing the nodes, the kubeconfig and how to reach the hosts
    for host in ("cp1", "cp2", "cp3", "w1", "w2"):
        assert re.search(rf"^{host}\s+Ready\s", sandbox.stdout, re.M), sandbox.stdout
    assert f"kubeconfig: {ROOT / NAME / 'admin.conf'}" in sandbox.stdout
    assert f"kubeboot sandbox ssh --name {NAME} cp1" in sandbox.stdout
    # progress per phase, and the real `kubeboot up` inside it, packages and images from the bundle only
    for step in ("check", "bundle", "hosts", "inventory", "up", "kubeconfig"):
        assert f"[{step}] " in sandbox.stderr, step
    assert "install the supplied packages (offline)" in sandbox.stderr or "offline" in sandbox.stderr
    assert "pkgs.k8s.io" not in sandbox.stderr
    assert oct((ROOT / NAME / "admin.conf").stat().st_mode & 0o777) == "0o600"

    nodes = kubectl_json("get", "nodes")["items"]
    ready = {n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
             for n in nodes}
    assert ready == {h: "True" for h in ("cp1", "cp2", "cp3", "w1", "w2")}
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {"v1.37.2"}

    def all_running() -> list[str] | None:
        pods = kubectl_json("get", "pods", "-A")["items"]
        bad = [f"{p['metadata']['namespace']}/{p['metadata']['name']} {p['status'].get('phase')}" for p in pods
               if p["status"].get("phase") != "Running"
               or not all(c.get("ready") for c in p["status"].get("containerStatuses", []))]
        return None if bad or not pods else [p["metadata"]["name"] for p in pods]

    running = wait_until("every pod Running and ready", all_running, 300, interval=2.0)
    for want in ("etcd-cp3", "kube-apiserver-cp2", "coredns-", "kube-proxy-", "kube-flannel-ds-"):
        assert any(p.startswith(want) for p in running), (want, running)


def test_sandbox_ssh_and_status_reach_the_hosts(sandbox: subprocess.CompletedProcess[str]) -> None:
    got = kb("sandbox", "ssh", "--name", NAME, "w2", "hostname", timeout=60)
    assert got.returncode == 0 and got.stdout.strip() == "w2", got.stderr
    st = kb("sandbox", "status", "--name", NAME, timeout=300)
    assert st.returncode == 0, st.stdout + st.stderr
    for h in ("lb1", "cp1", "cp2", "cp3", "w1", "w2"):
        assert re.search(rf"\[sandbox\] {h}: 10\.200\.0\.\d+ running", st.stderr), st.stderr
    bad = kb("sandbox", "ssh", "--name", NAME, "cp9", "true", timeout=60)
    assert bad.returncode != 0 and "has no host 'cp9'" in bad.stderr and "lb1, cp1" in bad.stderr


def test_a_second_sandbox_up_changes_nothing(sandbox: subprocess.CompletedProcess[str], bundle: Path) -> None:
    again = kb("sandbox", "up", "--name", NAME, "--bundle", str(bundle))
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[hosts]" not in again.stderr  # the hosts run: not started again
    assert "no changes" in again.stderr, again.stderr[-3000:]
    other = kb("sandbox", "up", "--name", NAME, "--bundle", str(bundle), "--workers", "3")
    assert other.returncode == 29 and "is up with another shape" in other.stderr


def test_refusals_create_nothing(sandbox: subprocess.CompletedProcess[str], bundle: Path, tmp_path: Path) -> None:
    other = f"{NAME}x"
    # the subnet of a running sandbox
    got = kb("sandbox", "up", "--name", other, "--bundle", str(bundle), timeout=120)
    assert got.returncode == 29, got.stderr
    assert "subnet 10.200.0.0/24 is in use" in got.stderr and NAME in got.stderr
    # not root
    got = kb("sandbox", "up", "--name", other, "--bundle", str(bundle), user=1000, timeout=120)
    assert got.returncode == 28 and "need root" in got.stderr and "sudo" in got.stderr, got.stderr
    # more hosts than memory (only where 200 workers do not fit: elsewhere this would build them)
    from kubeboot.sandbox import checks

    if checks.memory_needed(3, 200, 1) > checks.memory_available():
        got = kb("sandbox", "up", "--name", other, "--bundle", str(bundle), "--subnet", "10.201.0.0/24",
                 "--workers", "200", timeout=120)
        assert got.returncode == 28 and "not enough memory" in got.stderr, got.stderr
    # a missing program: systemd-nspawn hidden (a non-executable file bound over it in a private mount namespace)
    nspawn = shutil.which("systemd-nspawn")
    assert nspawn
    blank = tmp_path / "blank"
    blank.write_text("")
    blank.chmod(0o644)
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'mount --bind "$0" {nspawn} && exec "$@"',
            str(blank), sys.executable, "-m", "kubeboot.cli", "sandbox", "up", "--name", other, "--bundle", str(bundle),
            "--subnet", "10.201.0.0/24"]
    got = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                         env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert got.returncode == 28 and "systemd-nspawn" in got.stderr and "systemd-container" in got.stderr, got.stderr
    # a bad flag
    got = kb("sandbox", "up", "--name", other, "--control-planes", "2", timeout=60)
    assert got.returncode == 3 and "--control-planes" in got.stderr
    assert leftovers(other) == []


def test_a_tampered_bundle_is_refused_by_name_and_nothing_changes(sandbox: subprocess.CompletedProcess[str],
                                                                  bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "bundle"
    shutil.copytree(bundle, tampered, copy_function=os.link)  # hard links: cheap; the changed file is replaced
    victim = sorted((tampered / "images").glob("*kube-apiserver*"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))
    rel = str(victim.relative_to(tampered))
    d = ROOT / NAME
    before = {h: kb("sandbox", "ssh", "--name", NAME, h, "find /etc/kubernetes /var/lib/kubelet /etc/containerd "
                    "-type f -printf '%p %T@\\n' | sort; systemctl show -p MainPID kubelet containerd",
                    timeout=60).stdout for h in ("cp1", "w1")}
    assert all(before.values())
    argv = ["ip", "netns", "exec", f"kbsb-{NAME}-ctl", sys.executable, "-m", "kubeboot.cli", "up", "-i",
            str(d / "inventory.yaml"), "--state-dir", str(d / "state"), "--known-hosts",
            str(d / "hosts" / "known_hosts"), "--ssh-config", str(d / "kubeboot-ssh-config"), "--bundle",
            str(tampered)]
    got = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                         env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert got.returncode == 27, got.stderr
    assert rel in got.stderr and "sha256 differs" in got.stderr and "nothing was installed" in got.stderr
    assert "[preflight]" not in got.stderr  # refused before any host was contacted
    after = {h: kb("sandbox", "ssh", "--name", NAME, h, "find /etc/kubernetes /var/lib/kubelet /etc/containerd "
                   "-type f -printf '%p %T@\\n' | sort; systemctl show -p MainPID kubelet containerd",
                   timeout=60).stdout for h in ("cp1", "w1")}
    assert after == before
    # `sandbox up` with it: refused in its bundle step, before any host is started
    got = kb("sandbox", "up", "--name", f"{NAME}t", "--bundle", str(tampered), "--subnet", "10.202.0.0/24")
    assert got.returncode == 27 and rel in got.stderr
    assert leftovers(f"{NAME}t") == []


def test_sandbox_down_leaves_nothing(sandbox: subprocess.CompletedProcess[str]) -> None:
    assert leftovers(NAME)  # it is up
    t0 = time.monotonic()
    got = kb("sandbox", "down", "--name", NAME, timeout=300)
    assert got.returncode == 0, got.stderr
    assert "removed: no namespaces, mounts, cgroups, processes or files left" in got.stderr
    assert leftovers(NAME) == [], f"after down ({time.monotonic() - t0:.1f}s)"
    again = kb("sandbox", "down", "--name", NAME, timeout=60)
    assert again.returncode == 0 and "nothing to remove" in again.stderr


def test_a_sandbox_killed_mid_up_is_cleaned_up_by_down(bundle: Path) -> None:
    name = f"{NAME}k"
    proc = subprocess.Popen([sys.executable, "-m", "kubeboot.cli", "sandbox", "up", "--name", name, "--bundle",
                             str(bundle), "--control-planes", "1", "--workers", "1", "--lb", "node-local",
                             "--subnet", "10.203.0.0/24"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        # mid-up: its hosts are booted and `kubeboot up` is working on them
        wait_until("the sandbox's inventory (hosts booted)", lambda: (ROOT / name / "inventory.yaml").exists(), 300,
                   interval=0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert leftovers(name), "the killed sandbox left nothing to clean up: the test did not kill it mid-up"
        st = kb("sandbox", "status", "--name", name, timeout=120)
        assert st.returncode != 0
        got = kb("sandbox", "down", "--name", name, timeout=300)
        assert got.returncode == 0, got.stderr
        assert leftovers(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        if leftovers(name):
            kb("sandbox", "down", "--name", name, timeout=300)
