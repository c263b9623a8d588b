"""The base root filesystem of the sandbox hosts (kubeboot/sandbox/hosts.py; shell): a Debian bookworm
``debootstrap --variant=minbase`` tree with systemd, sshd, sudo and every binary kubeboot's preflight looks for on
a node -- but no container runtime and no kubelet: kubeboot's runtime phase installs those, as on a fresh machine.

The tree is cached by its inputs (package list, suite, mirror, builder version, the files added here) in
``kubeboot.cache.cache_root()/rootfs/<digest>/root``, built in a temporary directory and renamed into place
(atomic), under a file lock so that two processes never build it twice.  Hosts mount it read-only as the lower
layer of an overlay; it is never changed once built.

The tree also has two users with passwords (kbuser with sudo, nosudo without), a convenience of the test lab.
They are part of the cache key (the digest of a warm cache must not change for a rename), and a host that does not
ask for them gets them locked (:func:`lock_users`): sshd allows keys only anyway.

``python -m kubeboot.sandbox.rootfs [--force]`` builds it and prints the path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubeboot.cache import cache_root

from .system import SAFE_ENV, locked

#: A non-root user with password sudo on every host (test convenience; locked unless a host set asks for it).
KBUSER = "kbuser"
KBUSER_PASSWORD = "kbpass"
#: A non-root user without any sudo rights on every host (test convenience, idem).
NOSUDO_USER = "nosudo"
NOSUDO_PASSWORD = "nopass"
PASSWORDS = {KBUSER: KBUSER_PASSWORD, NOSUDO_USER: NOSUDO_PASSWORD}
PASSWORD_HASHES = {  # openssl passwd -6 -salt kubebootlab <password>
    KBUSER: "$6$kubebootlab$jDXoX9A8OHJQsK0SDaXuDNmoe8NVU5459cDBQFZrhyjSe/m3lDlRip8BMpNuY8Gi2laNJ7Fd2TBNDxOKxC9Rg1",
    NOSUDO_USER: "$6$kubebootlab$zn9lkJQsxsh.87ikwG5FALaf4EOsHjozXTORB1m2g1AaFKhFAgk3lG4OKRCW2nb4E2g8Q.zql9u9.8bXZAv3I1",
}
USER_IDS = {KBUSER: 2001, NOSUDO_USER: 2002}

SUITE = "bookworm"
VARIANT = "minbase"
#: Bump when the build steps change in a way the hashed inputs below do not show.
BUILDER_VERSION = "1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

#: What a host has beyond minbase.  systemd + dbus: a real PID 1 with a bus; openssh (+ sftp: fabric's
#: put) and sudo: how kubeboot reaches it; kmod/iproute2/procps/iptables/ca-certificates: what every
#: server has.  conntrack, ethtool, socat, ebtables (+ ip, tc, mount, nsenter, touch from iproute2 and
#: minbase): kubeboot's FileExisting-* preflight checks (kubeboot/plan/facts.py REQUIRED_BINARIES and
#: OPTIONAL_BINARIES), so a fresh host passes preflight with only the runtime missing.
#: netcat-openbsd, iputils-ping: for tests (occupy a port, reach a neighbour).
PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "openssh-sftp-server", "sudo", "iproute2", "procps",
    "kmod", "iptables", "ca-certificates", "conntrack", "ethtool", "socat", "ebtables", "netcat-openbsd",
    "iputils-ping",
)  # fmt: skip

#: The host's PID 1 is this wrapper, which execs systemd (see systemd-lab-hosts.md §3c, §6.3):
#: nspawn mounts the cgroup-v1 controller hierarchies read-only, and they are rooted at the host's own
#: cgroup (cgroup namespace), so remounting them rw lets runc create container cgroups there (both
#: drivers) without touching anyone else's.  The kubelet writes four GLOBAL sysctls at start and
#: refuses to run if it cannot; /proc/sys is read-only here (except net), so the host gets per-host
#: files with the values it wants bind-mounted over them instead of changing the machine's kernel.
#: NOTE: INIT_SCRIPT, SSHD_DROPIN, SUDOERS, RESOLV_CONF, the users and MASKED_UNITS are hashed into the cache key
#: (:func:`inputs`) byte for byte, comments included ("tests/lab/rootfs.py" is where they were first written):
#: any edit means a new digest and a cold build of several minutes on every machine.
INIT_PATH = "/usr/local/sbin/kubeboot-lab-init"
INIT_SCRIPT = """\
#!/bin/sh
# kubeboot systemd lab host PID 1 (tests/lab/rootfs.py): fix cgroups and sysctls, then exec systemd.
awk '$9 == "cgroup" { print $5 }' /proc/self/mountinfo | while read -r m; do
    mount -o remount,bind,rw,nosuid,nodev,noexec "$m" || echo "kubeboot-lab-init: remount rw $m failed" >&2
done
mkdir -p /run/kubeboot-lab/sysctl
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1; do
    key=${kv%%=*}; file=/run/kubeboot-lab/sysctl/$(echo "$key" | tr / .)
    echo "${kv#*=}" > "$file"
    mount --bind "$file" "/proc/sys/$key" || echo "kubeboot-lab-init: shadow /proc/sys/$key failed" >&2
done
exec /lib/systemd/systemd "$@"
"""

SSHD_DROPIN = """\
# kubeboot lab host (tests/lab/rootfs.py); per-host key written at lab start
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
"""

SUDOERS = f"{KBUSER} ALL=(ALL:ALL) ALL\n"

#: DNS never leaves a host: a query fails at once on the host's own loopback (sudo resolves its hostname,
#: which /etc/hosts answers first).
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"

#: Units that would run apt or touch the network in the background of a test (dpkg lock, timeouts).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service")


class RootfsError(RuntimeError):
    """The base rootfs could not be built."""


@dataclass(frozen=True)
class BaseRootfs:
    """A built base: ``root`` is the tree (overlay lower layer), ``digest`` its input key."""

    root: Path
    digest: str
    #: seconds spent in this call (build or lookup)
    seconds: float
    built: bool


def machine_mirror() -> str:
    """The Debian mirror this machine's apt uses for ``SUITE`` (main), else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d")
    texts = [p.read_text(errors="replace") for p in sorted(sources.glob("*.sources"))] if sources.is_dir() else []
    for stanza in "\n\n".join(texts).split("\n\n"):
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in stanza.splitlines() if not line.startswith("#"))
            if v
        )
        if SUITE in fields.get("suites", "").split() and "main" in fields.get("components", "").split():
            return fields.get("uris", DEFAULT_MIRROR).split()[0].rstrip("/")
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s+.*\bmain\b", line)
            if m:
                return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def inputs(mirror: str | None = None) -> dict[str, object]:
    """Everything the tree depends on (its cache key)."""
    return {
        "builder": BUILDER_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "mirror": mirror or machine_mirror(),
        "packages": sorted(PACKAGES),
        "files": {
            INIT_PATH: INIT_SCRIPT,
            "sshd": SSHD_DROPIN,
            "sudoers": SUDOERS,
            "resolv": RESOLV_CONF,
            "users": {u: [USER_IDS[u], PASSWORD_HASHES[u]] for u in sorted(USER_IDS)},
            "masked": list(MASKED_UNITS),
        },
    }


def digest_of(inp: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inp, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_dir() -> Path:
    return cache_root() / "rootfs"


def in_use(root: Path) -> bool:
    """True while an overlay (a lab host) uses ``root`` as its lower layer."""
    with open("/proc/self/mountinfo") as f:
        return any(f"lowerdir={root}" in line for line in f)


def missing_tools() -> list[str]:
    """Why the base cannot be built here (empty: it can)."""
    problems = []
    if shutil.which("debootstrap", path=SAFE_ENV["PATH"]) is None:
        problems.append("`debootstrap` is missing (apt-get install --no-install-recommends debootstrap)")
    if os.geteuid() != 0:
        problems.append("building the base rootfs needs root (debootstrap, chroot)")
    return problems


def cached(mirror: str | None = None) -> Path | None:
    """The built tree for the current inputs, or None."""
    root = rootfs_dir() / digest_of(inputs(mirror)) / "root"
    return root if (root.parent / "build.json").is_file() else None


def _run(argv: list[str], log: Path, timeout: float) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=SAFE_ENV,
                               timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RootfsError(f"{argv[0]} did not finish in {timeout:.0f}s (log: {log})") from None
    if p.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RootfsError(f"{' '.join(argv[:3])} ... failed ({p.returncode}): {tail}")


def ensure_base(
    mirror: str | None = None, force: bool = False, timeout: float = 900.0, cache: Path | None = None
) -> BaseRootfs:
    """The base tree for the current inputs, building it first if the cache (``cache`` or
    :func:`rootfs_dir`) lacks it.  ``force`` rebuilds even if cached (a cold build); refused while
    running hosts use the cached tree (their lower layer must never change under them)."""
    t0 = time.monotonic()
    inp = inputs(mirror)
    digest = digest_of(inp)
    top = cache or rootfs_dir()
    final = top / digest
    with locked(top / f".lock-{digest}"):
        if not force and (final / "build.json").is_file():
            return BaseRootfs(final / "root", digest, time.monotonic() - t0, built=False)
        if final.exists() and in_use(final / "root"):
            raise RootfsError(f"{final / 'root'} is in use by running hosts: stop them before a rebuild")
        problems = missing_tools()
        if problems:
            raise RootfsError("cannot build the base rootfs: " + "; ".join(problems))
        tmp = top / f".tmp-{digest}-{os.getpid()}"
        _remove_tree(tmp)
        tmp.mkdir(parents=True)
        try:
            _build(tmp / "root", str(inp["mirror"]), tmp / "build.log", timeout)
            (tmp / "build.json").write_text(
                json.dumps({"inputs": inp, "seconds": round(time.monotonic() - t0, 1), "built_at": time.time()},
                           indent=2, sort_keys=True) + "\n"  # fmt: skip
            )
            if final.exists():
                old = top / f".old-{digest}-{os.getpid()}"
                final.rename(old)
                tmp.rename(final)
                _remove_tree(old)
            else:
                tmp.rename(final)
        except BaseException:
            _remove_tree(tmp)
            raise
        _prune_temporaries(top)
    return BaseRootfs(final / "root", digest, time.monotonic() - t0, built=True)


def _remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mounted filesystem (a crashed build may leave /proc mounted)."""
    if not path.exists():
        return
    for mnt in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "-l", mnt], env=SAFE_ENV, check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], env=SAFE_ENV, check=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def _prune_temporaries(top: Path) -> None:
    """Leftovers of builds whose process died (their pid is in the name)."""
    for p in top.glob(".tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_tree(p)


def _build(root: Path, mirror: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    argv = ["nice", "-n", "19", "debootstrap", f"--variant={VARIANT}", "--include=" + ",".join(PACKAGES)]
    if KEYRING.is_file():
        argv.append(f"--keyring={KEYRING}")
    _run(argv + [SUITE, str(root), mirror], log, timeout)

    def chroot(*cmd: str) -> None:
        _run(["chroot", str(root), *cmd], log, max(10.0, deadline - time.monotonic()))

    for user, uid in USER_IDS.items():
        chroot("useradd", "-u", str(uid), "-U", "-m", "-s", "/bin/bash", "-p", PASSWORD_HASHES[user],
               "-c", "kubeboot lab user", user)  # fmt: skip
    chroot("usermod", "-aG", "sudo", KBUSER)
    for user in (KBUSER, NOSUDO_USER):
        d = root / "home" / user / ".ssh"
        d.mkdir(mode=0o700)
        os.chown(d, USER_IDS[user], USER_IDS[user])
    (root / "root" / ".ssh").mkdir(mode=0o700, exist_ok=True)

    _put(root, INIT_PATH, INIT_SCRIPT, 0o755)
    _put(root, "/etc/ssh/sshd_config.d/kubeboot-lab.conf", SSHD_DROPIN, 0o644)
    _put(root, "/etc/sudoers.d/kubeboot-lab", SUDOERS, 0o440)
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    _put(root, "/etc/resolv.conf", RESOLV_CONF, 0o644)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):  # every host gets its own
        key.unlink()
    _put(root, "/etc/machine-id", "", 0o444)  # empty: per-host id written at lab start
    _put(root, "/etc/hostname", "kubeboot-lab-base\n", 0o644)
    _put(root, "/etc/fstab", "# kubeboot lab host: nothing to mount\n", 0o644)
    for unit in MASKED_UNITS:
        link = root / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (root / sub).glob("*"):
            if f.is_file() and f.name != "lock":
                f.unlink()


def _put(root: Path, path: str, content: str, mode: int) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    os.chmod(target, mode)
    os.chown(target, 0, 0)


def lock_users(root: Path, users: tuple[str, ...] | list[str]) -> None:
    """Lock the password of every base user (kbuser, nosudo) not in ``users`` in the host tree ``root`` (its
    /etc/shadow, written through the overlay: the base keeps its copy)."""
    shadow = root / "etc" / "shadow"
    lines = shadow.read_text().splitlines()
    out = []
    for line in lines:
        fields = line.split(":")
        if fields[0] in USER_IDS and fields[0] not in users and len(fields) > 1:
            fields[1] = "!*"
        out.append(":".join(fields))
    st = shadow.stat()
    tmp = shadow.with_name("shadow.kubeboot-tmp")
    tmp.write_text("\n".join(out) + "\n")
    os.chmod(tmp, st.st_mode & 0o7777)
    os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(shadow)


def main(argv: list[str] | None = None, prog: str = "python -m kubeboot.sandbox.rootfs") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache has it (cold build)")
    ap.add_argument("--mirror", default=None, help=f"Debian mirror (default: the machine's, {machine_mirror()})")
    args = ap.parse_args(argv)
    try:
        base = ensure_base(args.mirror, force=args.force)
    except RootfsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"base rootfs {'built' if base.built else 'cached'} in {base.seconds:.1f}s: {base.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
