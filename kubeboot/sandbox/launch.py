"""Supervisor of one sandbox host (kubeboot/sandbox/hosts.py; shell): ``python3 -I -S <this file> spec.json``.

Run by its path, not with ``-m``: ``-I -S`` keeps site-packages (and the installed kubeboot) out of the
supervisor, which must outlive the process that started it unchanged; the path is inside the package, so an
installed kubeboot has it too.

1. Moves itself into the host's own cgroup in every hierarchy (created by the harness), so that
   systemd-nspawn (``--keep-unit``) and the host's systemd nest everything below it instead of at
   the root of ``name=systemd``/cgroup2 shared by every host (systemd-lab-hosts.md §3b).
2. Runs systemd-nspawn and runs it again when it exits with 133, which is how nspawn reports
   ``systemctl reboot`` inside the container: a reboot reboots, like a real machine.  Any other exit
   (poweroff, halt, the host's PID 1 killed) ends the supervisor with nspawn's exit code.
3. SIGTERM: passed on to nspawn, which halts the host (``--kill-signal=SIGRTMIN+3``); no relaunch.

Standalone on purpose: stdlib only, no site-packages (``-I -S``); one short log line per boot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

REBOOT_EXIT = 133


def log(msg: str) -> None:
    sys.stdout.write(f"[kubeboot-host-launch {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()


def enter_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def main() -> int:
    with open(sys.argv[1]) as f:
        spec: dict[str, Any] = json.load(f)
    enter_cgroups(spec["cgroups"])
    env = dict(spec["env"])
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    boot = 0
    while True:
        boot += 1
        log(f"boot {boot}: {' '.join(spec['argv'][:1])} -M {spec['machine']}")
        child = subprocess.Popen(spec["argv"], env=env, stdin=subprocess.DEVNULL)
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
        log(f"systemd-nspawn exited with {rc}")
        if rc != REBOOT_EXIT or stopping:
            return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
