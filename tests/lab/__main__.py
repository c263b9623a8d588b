"""``python -m tests.lab up N [--name LAB] [--overlay] | down [--name LAB | --all | --stale] | status``"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .lab import Lab, LabError, _alive, teardown


def _status(name: str) -> dict[str, object]:
    try:
        lab = Lab.attach(name)
    except LabError:
        return {"name": name, "state": "no state file (stale namespaces?)"}
    hosts = []
    for h in lab.hosts:
        up = bool(h.init_pid) and _alive(h.init_pid)
        hosts.append(
            {
                "name": h.name,
                "address": h.address,
                "netns": h.netns,
                "init_pid": h.init_pid,
                "running": up,
                "sshd": up and lab.port_open(h, h.port, 0.3),
            }
        )
    return {
        "name": name,
        "dir": str(lab.dir),
        "owner_pid": lab.owner_pid,
        "ephemeral": lab.ephemeral,
        "ssh_config": str(lab.ssh_config),
        "hosts": hosts,
    }


def _is_stale(name: str) -> bool:
    """A lab whose hosts are all dead, or an ephemeral (pytest) lab whose owner process is gone."""
    try:
        lab = Lab.attach(name)
    except LabError:
        return True
    if lab.ephemeral and not _alive(lab.owner_pid):
        return True
    return not any(h.init_pid and _alive(h.init_pid) for h in lab.hosts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab", description="kubeboot multi-host SSH lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start N hosts")
    p_up.add_argument("n", type=int, nargs="?", default=5)
    p_up.add_argument("--name", default="default")
    p_up.add_argument("--overlay", action="store_true", help="copy-on-write /usr, /opt, /var/cache ... too")
    p_up.add_argument("--timeout", type=float, default=30.0)
    p_down = sub.add_parser("down", help="kill the lab's processes, delete its namespaces and files")
    p_down.add_argument("--name", default="default")
    p_down.add_argument("--all", action="store_true", help="every lab on this machine")
    p_down.add_argument("--stale", action="store_true", help="labs whose hosts/owner are dead")
    p_st = sub.add_parser("status", help="list labs and hosts")
    p_st.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    if args.cmd == "up":
        t0 = time.monotonic()
        try:
            lab = Lab(args.name, args.n, overlay=args.overlay).up(timeout=args.timeout)
        except (LabError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"lab {lab.name}: {len(lab.hosts)} hosts up in {time.monotonic() - t0:.2f}s")
        for h in lab.hosts:
            print(f"  {h.name}  {h.address}  netns {h.netns}  root {h.root}")
        print(f"ssh:   ssh -F {lab.ssh_config} h1")
        print(f"shell: ip netns exec {lab.ctl_netns} ssh -i {lab.key_path} root@{lab.hosts[0].address}")
        print(f"down:  python -m tests.lab down --name {lab.name}")
        return 0
    if args.cmd == "down":
        names = Lab.list_labs() if (args.all or args.stale) else [args.name]
        if args.stale:
            names = [n for n in names if _is_stale(n)]
        for name in names:
            t0 = time.monotonic()
            killed = teardown(name)
            print(f"lab {name}: down in {time.monotonic() - t0:.2f}s ({len(killed)} processes killed)")
        return 0
    labs = [_status(n) for n in Lab.list_labs()]
    if args.json:
        print(json.dumps(labs, indent=2))
        return 0
    if not labs:
        print("no labs")
    for lab_st in labs:
        print(f"lab {lab_st['name']}: {lab_st.get('dir', lab_st.get('state'))}")
        for h in lab_st.get("hosts", []):  # type: ignore[attr-defined]
            print(
                f"  {h['name']}  {h['address']}  init {h['init_pid']}  "
                f"{'running' if h['running'] else 'DEAD'}  sshd {'up' if h['sshd'] else 'down'}"
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
