"""Phase `kubectl`: the recipe's last steps on every control plane — the admin kubeconfig as ~/.kube/config
for root and for the inventory's named users (owned by them, 0600), and bash completion for kubectl."""

from __future__ import annotations

import shlex

from kubeboot.config.model import Host, Role
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.plan.actions import Action, RunCommand

ADMIN_CONF = "/etc/kubernetes/admin.conf"
COMPLETION = "/etc/bash_completion.d/kubectl"


def plan_kubectl(ctx: PhaseContext, host: Host) -> list[Action]:
    f = ctx.facts[host.name]
    admin = f.files.get(ADMIN_CONF)
    out: list[Action] = []
    root = f.files.get("/root/.kube/config")
    if admin is None or root is None or root.digest != admin.digest or (root.mode, root.owner) != (0o600, "root"):
        out.append(RunCommand(f"install -d -m 0700 /root/.kube && install -m 0600 -o root -g root {ADMIN_CONF} "
                              f"/root/.kube/config", "root's kubectl: the admin kubeconfig"))
    for user in ctx.config.kubectl_users:
        u = shlex.quote(user)
        home = f.homes.get(user)
        if home is None:
            out.append(RunCommand(f"id {u} >/dev/null", f"user {user} (spec.kubectl.users) must exist"))
            continue
        path = f"{home}/.kube/config"
        have = f.files.get(path)
        if admin is None or have is None or have.digest != admin.digest or (have.mode, have.owner) != (0o600, user):
            kube = shlex.quote(f"{home}/.kube")
            out.append(RunCommand(f"g=$(id -gn {u}) && install -d -m 0700 -o {u} -g \"$g\" {kube} && "
                                  f"install -m 0600 -o {u} -g \"$g\" {ADMIN_CONF} {shlex.quote(path)}",
                                  f"{user}'s kubectl: the admin kubeconfig"))
    if COMPLETION not in f.files:
        out.append(RunCommand(f"mkdir -p /etc/bash_completion.d && kubectl completion bash > {COMPLETION}.new && "
                              f"mv -f {COMPLETION}.new {COMPLETION}", "bash completion for kubectl"))
    return out


KUBECTL = Phase("kubectl", "Admin kubeconfig for root and spec.kubectl.users on the control planes; bash completion",
                plan_kubectl, roles=frozenset({Role.CONTROL_PLANE}))
