"""Phase `load-balancer`: nginx (stream) in front of the API servers — on the load-balancer hosts
(external-nginx) or on every node without an API server, listening on 127.0.0.1 (node-local) — installed,
configured and managed by systemd. Its backends are the control planes whose API server is ready (the workflow
renders them); a changed backend list is applied with a graceful reload, so open connections survive."""

from __future__ import annotations

from kubeboot.config.model import Host
from kubeboot.phases.base import Phase, PhaseContext
from kubeboot.phases.runtime import OFFLINE_LB_DIR, upload_packages
from kubeboot.plan.actions import Action, RunCommand, compare_file

NGINX_CONF = "/etc/nginx/nginx.conf"
# The stream module is a separate package on Debian/Ubuntu and RHEL-likes.
APT_NGINX = "DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Options::=--force-confold install -y " \
            "--no-install-recommends nginx libnginx-mod-stream"
DNF_NGINX = "{tool} install -y nginx nginx-mod-stream"
RELOAD = "nginx -t -q && systemctl reload nginx"


def lb_actions(ctx: PhaseContext, host: Host) -> list[Action]:
    """What it takes for this host's nginx to serve the rendered config (empty when it already does)."""
    art = next((a for a in ctx.artifacts.get(host.name, ()) if a.path == NGINX_CONF), None)
    if art is None:
        return []
    f = ctx.facts[host.name]
    out: list[Action] = []
    if "nginx" not in f.binaries and ctx.options.lb_packages:
        # an offline bundle's nginx: uploaded (compared like any file, so a retry does not upload again), installed
        # with nothing fetched from a repository
        out += upload_packages(f, OFFLINE_LB_DIR, ctx.options.lb_packages)
        out.append(RunCommand(f"DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Options::=--force-confold install "
                              f"-y --no-install-recommends {OFFLINE_LB_DIR}/*.deb",
                              "nginx is not installed (from the bundle)", timeout=600))
    elif "nginx" not in f.binaries:
        if f.package_manager == "apt":
            out.append(RunCommand(f"DEBIAN_FRONTEND=noninteractive apt-get -q update && {APT_NGINX}",
                                  "nginx is not installed", timeout=600))
        elif f.package_manager in ("dnf", "yum"):
            out.append(RunCommand(DNF_NGINX.format(tool=f.package_manager), "nginx is not installed", timeout=600))
        else:
            out.append(RunCommand("false", "nginx is not installed and there is no apt or dnf to install it"))
    write = compare_file(art, f.files.get(NGINX_CONF))
    if write is not None:
        out.append(write)
    if not f.systemd:
        return out
    active = f.services.get("nginx") == "active" and "nginx" in f.binaries
    if active and write is not None:
        out.append(RunCommand(RELOAD, f"{NGINX_CONF} changed (graceful reload: open connections stay)"))
    elif not active:
        # restart, not start: a fresh package may already run its default site with another config
        out.append(RunCommand("nginx -t -q && systemctl enable nginx && systemctl restart nginx",
                              "nginx is not running with kubeboot's config"))
    if active and f.enabled.get("nginx") not in (None, "enabled"):
        out.append(RunCommand("systemctl enable nginx", "nginx does not start at boot"))
    return out


LOAD_BALANCER = Phase("load-balancer", "nginx in front of the ready API servers (LB hosts, or 127.0.0.1 on nodes)",
                      lb_actions)
