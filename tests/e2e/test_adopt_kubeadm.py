"""`kubeboot up` adopts a cluster built by hand with the real `kubeadm init` / `kubeadm join` (the manual HA recipe).

One module-scoped cluster on 4 systemd lab hosts: h1 the load balancer, h2 the first control plane (`kubeadm init
--upload-certs`, controlPlaneEndpoint h1:6443), h3 a second control plane (`kubeadm join --control-plane` with the
certificate key), h4 a worker (`kubeadm join`). What the recipe does before kubeadm — containerd, kubelet and the
images on every node, nginx on h1 — is done by kubeboot's own phases (`up --only preflight,prepare,runtime,images,
load-balancer`, with a throw-away state directory): that is not what is adopted. kubeadm comes from the lab apt
mirror and gets a configuration equivalent to the inventory kubeboot is given afterwards (the same endpoint,
addresses, node names, subnets, kubelet and kube-proxy settings).

Then `kubeboot up` from a fresh state directory must take the cluster's PKI over and converge without replacing a
certificate or restarting anything; a second `up` changes nothing; `status` and `certs check-expiration` work; and a
state directory holding another cluster's CA is refused (exit 24) before a host is touched. Every file that `up`
changed on a host is written, as a diff (never a private key or a token), to `adopt-changes.txt` in the module's
temporary directory and into the failure message, so that a difference between kubeadm's files and kubeboot's
rendering is easy to read. Tests run in file order and build on each other.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import proxy_only_ssh_config
from tests.e2e.nodes import Cluster, containers, images_dir, node_inventory, unit
from tests.e2e.test_up_cluster import KUBE_PROXY
from tests.lab.aptrepo import AptRepo, apt_repo, use_as_mirror  # noqa: F401 (fixture)
from tests.lab.common import wait_until
from tests.lab.systemd import SystemdLab
from tests.reference.binaries import ref_bin

pytestmark = [pytest.mark.systemd_lab(hosts=4)]

LB, CP1, CP2, WORKER = "h1", "h2", "h3", "h4"
CPS, NODES = (CP1, CP2), (CP1, CP2, WORKER)
FOREIGN_CLUSTER = 24
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# kubeadm's preflight checks that a lab host cannot pass (anything else must pass as on a real machine):
KUBEADM_IGNORED_PREFLIGHT = {
    # this machine runs cgroup v1: the kubelet refuses it unless failCgroupV1 is false (set, as in the inventory),
    # and kubeadm's SystemVerification then fails anyway ("You must also explicitly skip this validation"); the
    # kernel configuration it also checks passes
    "SystemVerification",
}
# what kubeboot's node phases do before kubeadm runs (the recipe's "install containerd, kubelet; set up nginx")
PROVISION = ("--only", "preflight", "--only", "prepare", "--only", "runtime", "--only", "images",
             "--only", "load-balancer")
# files compared before and after adoption, under each host's root; directories are walked
RECORDED = ("etc/kubernetes", "var/lib/kubelet/config.yaml", "var/lib/kubelet/kubeadm-flags.env",
            "var/lib/kubelet/instance-config.yaml", "var/lib/kubelet/pki", "etc/systemd/system/kubelet.service.d",
            "usr/lib/systemd/system/kubelet.service.d", "etc/containerd/config.toml", "etc/crictl.yaml",
            "etc/nginx/nginx.conf", "etc/sysctl.d/99-kubernetes.conf", "etc/modules-load.d/kubernetes.conf")
SECRET_FIELDS = ("client-key-data", "token")


# --- the kubeadm cluster ---------------------------------------------------------------------------------------


@dataclass
class HostRecord:
    files: dict[str, bytes]  # absolute path -> bytes (a symlink: b"-> target"); held in memory, never printed
    containers: dict[str, str]  # "<pod>/<container>" -> container id
    pids: dict[str, str]  # unit -> MainPID


@dataclass
class Adoption:
    c: Cluster
    dir: Path
    addresses: dict[str, str]
    secrets: tuple[str, ...]  # the bootstrap token and the certificate key: redacted from anything shown
    before: dict[str, HostRecord] = field(default_factory=dict)
    adopt_run: subprocess.CompletedProcess[str] | None = None
    after: dict[str, HostRecord] | None = None
    changes: str = ""

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "<redacted>")
        return text


def kubeadm_configs(inv: dict[str, Any], token: str, cert_key: str, ca_hash: str | None) -> dict[str, str]:
    """The kubeadm v1beta4 documents equivalent to the inventory: InitConfiguration + ClusterConfiguration +
    KubeletConfiguration + KubeProxyConfiguration for the first control plane (ca_hash None), JoinConfigurations
    for the others."""
    spec = inv["spec"]
    addr = {h["name"]: h["address"] for h in spec["hosts"]}
    endpoint = spec["controlPlaneEndpoint"]

    def registration(name: str) -> dict[str, Any]:
        # kubeboot's kubeadm-flags.env always carries --hostname-override and --node-ip (README "Deliberate
        # differences"): a kubeadm user who wants the same writes them as kubeletExtraArgs
        return {"name": name, "criSocket": CRI_SOCKET, "imagePullPolicy": "Never",
                "kubeletExtraArgs": [{"name": "hostname-override", "value": name},
                                     {"name": "node-ip", "value": addr[name]}],
                "ignorePreflightErrors": sorted(KUBEADM_IGNORED_PREFLIGHT)}

    if ca_hash is None:
        docs: list[dict[str, Any]] = [
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
             "bootstrapTokens": [{"token": token, "ttl": "2h0m0s", "usages": ["signing", "authentication"],
                                  "groups": ["system:bootstrappers:kubeadm:default-node-token"]}],
             "certificateKey": cert_key,
             "localAPIEndpoint": {"advertiseAddress": addr[CP1], "bindPort": 6443},
             "nodeRegistration": registration(CP1)},
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
             "kubernetesVersion": "v1.37.2", "controlPlaneEndpoint": endpoint,
             "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                            "dnsDomain": "cluster.local"}},
            # what kubeboot renders from spec.kubelet.config and spec.containerRuntime.cgroupDriver
            {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
             "cgroupDriver": spec["containerRuntime"]["cgroupDriver"], **spec["kubelet"]["config"]},
            {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
             **spec["kubeProxy"]["config"]},
        ]
        return {CP1: yaml.safe_dump_all(docs, sort_keys=False)}
    out = {}
    for name in (CP2, WORKER):
        doc: dict[str, Any] = {
            "apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "JoinConfiguration",
            "discovery": {"bootstrapToken": {"token": token, "apiServerEndpoint": endpoint,
                                             "caCertHashes": [ca_hash]}},
            "nodeRegistration": registration(name)}
        if name in CPS:
            doc["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": addr[name], "bindPort": 6443},
                                   "certificateKey": cert_key}
        out[name] = yaml.safe_dump(doc, sort_keys=False)
    return out


def ca_cert_hash(pem: bytes) -> str:
    """kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's SubjectPublicKeyInfo."""
    spki = x509.load_pem_x509_certificate(pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def run_kubeadm(a: Adoption, host: str, *args: str) -> None:
    res = a.c.lab.run_in(host, ["kubeadm", *args, "--config", "/root/kubeadm.yaml"], timeout=420, check=False)
    log = a.redact(res.stdout + res.stderr)
    (a.dir / f"kubeadm-{host}.log").write_text(log)
    if res.returncode != 0:
        why = a.c.sh(host, "journalctl -u kubelet --no-pager | tail -25; true")
        raise AssertionError(f"{host}: kubeadm {args[0]} failed ({res.returncode}):\n{log[-5000:]}\n"
                             f"kubelet:\n{a.redact(why)}")


def kube_system_pods(c: Cluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = c.kubectl_json("get", "pods", "-n", "kube-system")["items"]
    return pods


def pod_ready(p: dict[str, Any]) -> bool:
    return p["status"].get("phase") == "Running" and any(
        x["type"] == "Ready" and x["status"] == "True" for x in p["status"].get("conditions", []))


def settled(a: Adoption) -> bool:
    """Every node registered; on each control plane its four static pods and kube-proxy running, Ready, their
    mirror pods there; kube-proxy Ready on the worker (CoreDNS waits for a pod network: kubeadm installs none)."""
    c = a.c
    try:
        nodes = {n["metadata"]["name"] for n in c.kubectl_json("get", "nodes")["items"]}
        pods = kube_system_pods(c)
    except (AssertionError, json.JSONDecodeError):
        return False
    if nodes != set(NODES):
        return False
    ready = {p["metadata"]["name"] for p in pods if pod_ready(p)}
    proxies = [p for p in pods if p["metadata"]["name"].startswith("kube-proxy-")]
    if len(proxies) != len(NODES) or not all(pod_ready(p) for p in proxies):
        return False
    return all(f"{comp}-{cp}" in ready for comp in STATIC_PODS for cp in CPS)


def build_kubeadm_cluster(lab: SystemdLab, apt_repo: AptRepo, d: Path) -> Adoption:
    images, kubectl = images_dir(), ref_bin("kubectl")
    if images is None or kubectl is None:
        pytest.skip("no locally built images or kubectl: tests/setup.sh builds them")
    if "kubeadm" not in apt_repo.packages:
        pytest.skip("the lab apt mirror has no kubeadm (tests/reference/build.sh builds the reference kubeadm)")
    for h in lab.hosts:
        use_as_mirror(lab, h.name, apt_repo.server)
    hosts = {LB: ["load-balancer"], CP1: ["control-plane"], CP2: ["control-plane"], WORKER: ["worker"]}
    inv = node_inventory(lab, d / "cluster.yaml", hosts, apt_repo.sources_line, images,
                         controlPlaneEndpoint=f"{lab.host(LB).address}:6443",
                         loadBalancer={"mode": "external-nginx"}, kubeProxy={"config": KUBE_PROXY})
    token = f"{secrets.token_hex(3)}.{secrets.token_hex(8)}"
    cert_key = secrets.token_hex(32)
    a = Adoption(Cluster(lab, inv, images, d / "admin.conf", kubectl), d,
                 {h.name: str(h.address) for h in lab.hosts}, (token, token.split(".")[1], cert_key))

    # the recipe's steps before kubeadm, by kubeboot (its own state directory, thrown away: not the adopting one)
    prov = a.c.kb("up", "--state-dir", str(d / "provisioning-state"), *PROVISION, netns=True)
    (d / "provision.log").write_text(prov.stdout + prov.stderr)
    assert prov.returncode == 0, prov.stderr[-5000:]
    shutil.rmtree(d / "provisioning-state")

    def install_kubeadm(h: str) -> None:
        a.c.sh(h, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubeadm >/dev/null")

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(install_kubeadm, NODES))

    def put_config(h: str, text: str) -> None:
        lab.run_in(h, ["sh", "-c", "umask 077; cat > /root/kubeadm.yaml"], input=text)

    doc = yaml.safe_load(inv.read_text())
    put_config(CP1, kubeadm_configs(doc, token, cert_key, None)[CP1])
    run_kubeadm(a, CP1, "init", "--upload-certs")
    ca_pem = (lab.host(CP1).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes()
    joins = kubeadm_configs(doc, token, cert_key, ca_cert_hash(ca_pem))
    for name, text in joins.items():
        put_config(name, text)
    with ThreadPoolExecutor(2) as pool:  # the worker joins beside the control plane, as the recipe allows
        list(pool.map(lambda h: run_kubeadm(a, h, "join"), (CP2, WORKER)))
    a.c.admin.write_bytes((lab.host(CP1).rootfs / "etc/kubernetes/admin.conf").read_bytes())
    a.c.admin.chmod(0o600)
    wait_until("the kubeadm cluster settled (nodes registered, static pods and kube-proxy Ready)",
               lambda: settled(a), timeout=300, interval=2)
    return a


@pytest.fixture(scope="module")
def kubeadm_cluster(systemd_lab: SystemdLab, apt_repo: AptRepo, tmp_path_factory: pytest.TempPathFactory) -> Adoption:
    return build_kubeadm_cluster(systemd_lab, apt_repo, tmp_path_factory.mktemp("adopt"))


# --- what the hosts hold ---------------------------------------------------------------------------------------


def host_files(lab: SystemdLab, host: str) -> dict[str, bytes]:
    root = lab.host(host).rootfs
    out: dict[str, bytes] = {}
    for rel in RECORDED:
        top = root / rel
        paths = sorted(p for p in top.rglob("*")) if top.is_dir() and not top.is_symlink() else [top]
        for p in paths:
            if p.is_symlink():  # read the link, never follow it (an absolute target means the machine's file)
                out["/" + str(p.relative_to(root))] = b"-> " + str(p.readlink()).encode()
            elif p.is_file():
                out["/" + str(p.relative_to(root))] = p.read_bytes()
    return out


def record(a: Adoption) -> dict[str, HostRecord]:
    out = {}
    for h in (LB, *NODES):
        conts = {k: v["id"] for k, v in containers(a.c.lab, h).items()} if h in NODES else {}
        pids = {u: unit(a.c.lab, h, u)[1] for u in (("containerd", "kubelet") if h in NODES else ("nginx",))}
        out[h] = HostRecord(host_files(a.c.lab, h), conts, pids)
    return out


def is_secret(path: str) -> bool:
    return path.endswith((".key", ".pem")) or (path.startswith("/etc/kubernetes/") and path.endswith(".conf"))


def is_pki(path: str) -> bool:
    return "/pki/" in path


def describe_cert(pem: bytes) -> list[str]:
    lines = []
    for block in pem.split(b"-----END CERTIFICATE-----")[:-1]:
        cert = x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n")
        try:
            sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        except x509.ExtensionNotFound:
            sans = []
        lines.append(f"subject={cert.subject.rfc4514_string()} issuer={cert.issuer.rfc4514_string()} "
                     f"serial={cert.serial_number:x} notBefore={cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
                     f"notAfter={cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} SANs={sans}")
    return lines


def shown(path: str, data: bytes) -> list[str]:
    """A file as it may be shown: certificates described, kubeconfigs with their embedded key and token replaced
    by a digest and embedded certificates described, other secrets only by size and digest."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    if path.endswith(".crt"):
        return describe_cert(data)
    if path.startswith("/etc/kubernetes/") and path.endswith(".conf"):
        out = []
        for line in data.decode(errors="replace").splitlines():
            key, _, value = line.strip().partition(": ")
            if key in SECRET_FIELDS:
                line = line.replace(value, f"<secret sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}>")
            elif key.endswith("-data") and value:
                desc = "; ".join(describe_cert(base64.b64decode(value)))
                line = line.replace(value, f"<{desc}>")
            out.append(line)
        return out
    if is_secret(path):
        return [f"<secret: {len(data)} bytes, sha256:{digest}>"]
    return data.decode(errors="replace").splitlines()


def changes(before: dict[str, HostRecord], after: dict[str, HostRecord]) -> dict[str, list[str]]:
    """Per host, the paths that were added, removed or changed."""
    out = {}
    for h in before:
        b, af = before[h].files, after[h].files
        out[h] = sorted(p for p in set(b) | set(af) if b.get(p) != af.get(p))
    return out


def change_report(before: dict[str, HostRecord], after: dict[str, HostRecord]) -> str:
    parts = []
    for h, paths in changes(before, after).items():
        for p in paths:
            old, new = before[h].files.get(p), after[h].files.get(p)
            what = "added" if old is None else "removed" if new is None else "changed"
            diff = difflib.unified_diff(shown(p, old) if old is not None else [],
                                        shown(p, new) if new is not None else [],
                                        f"{h}:{p} (kubeadm)", f"{h}:{p} (after kubeboot up)", lineterm="", n=2)
            parts.append(f"== {h}: {p} {what}\n" + "\n".join(diff))
        for kind in ("containers", "pids"):
            old_map, new_map = getattr(before[h], kind), getattr(after[h], kind)
            moved = {k: (old_map.get(k), new_map.get(k)) for k in set(old_map) | set(new_map)
                     if old_map.get(k) != new_map.get(k)}
            if moved:
                parts.append(f"== {h}: {kind} " + ", ".join(f"{k}: {o} -> {n}" for k, (o, n) in sorted(moved.items())))
    return "\n".join(parts)


def replaced(before: dict[str, HostRecord], after: dict[str, HostRecord]) -> dict[str, dict[str, Any]]:
    """Per host, what was running before and is not the same now: containers gone or replaced (a container that
    appeared, flannel's or CoreDNS's, is an addition), a unit's MainPID that changed."""
    out: dict[str, dict[str, Any]] = {}
    for h in before:
        gone = {k: (v, after[h].containers.get(k)) for k, v in before[h].containers.items()
                if after[h].containers.get(k) != v}
        pids = {u: (p, after[h].pids.get(u)) for u, p in before[h].pids.items() if after[h].pids.get(u) != p}
        if gone or pids:
            out[h] = {"containers": gone, "pids": pids}
    return out


def kubeconfig_credentials(data: bytes) -> dict[str, str]:
    doc = yaml.safe_load(data)
    out = {}
    for cl in doc.get("clusters", []):
        out[f"cluster {cl['name']} ca"] = cl["cluster"].get("certificate-authority-data", "")
    for u in doc.get("users", []):
        for k in ("client-certificate-data", "client-key-data", "client-certificate", "client-key"):
            out[f"user {u['name']} {k}"] = u["user"].get(k, "")
    return out


# --- the tests -------------------------------------------------------------------------------------------------


def test_kubeadm_built_the_recipes_cluster(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    nodes = {n["metadata"]["name"]: n for n in a.c.kubectl_json("get", "nodes")["items"]}  # through h1:6443
    assert set(nodes) == set(NODES)
    assert yaml.safe_load(a.c.admin.read_text())["clusters"][0]["cluster"]["server"] == \
        f"https://{a.addresses[LB]}:6443"
    for name, n in nodes.items():  # registered with the inventory's address, as kubeboot's nodes are
        assert {x["type"]: x["address"] for x in n["status"]["addresses"]}["InternalIP"] == a.addresses[name]
    cm = a.c.kubectl_json("get", "configmap", "-n", "kube-system", "kubeadm-config")
    assert f"controlPlaneEndpoint: {a.addresses[LB]}:6443" in cm["data"]["ClusterConfiguration"]
    for cp in CPS:  # kubeadm's files, not kubeboot's: the CA is shared, each control plane has its own leaves
        pki = a.c.lab.host(cp).rootfs / "etc/kubernetes/pki"
        assert (pki / "ca.key").is_file() and (pki / "etcd/ca.key").is_file() and (pki / "sa.key").is_file()
    assert (a.c.lab.host(CP2).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes() == \
        (a.c.lab.host(CP1).rootfs / "etc/kubernetes/pki/ca.crt").read_bytes()
    assert sorted(p.name for p in (a.c.lab.host(WORKER).rootfs / "etc/kubernetes/pki").iterdir()) == ["ca.crt"]
    kubelet_conf = yaml.safe_load((a.c.lab.host(CP1).rootfs / "etc/kubernetes/kubelet.conf").read_text())
    assert kubelet_conf["users"][0]["user"]["client-certificate"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert not (a.dir / "cluster.yaml").parent.joinpath(".kubeboot").exists()  # no kubeboot state yet


def test_up_adopts_without_replacing_a_certificate_or_a_container(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    a.before = before = record(a)
    a.adopt_run = res = a.c.kb("up", netns=True)
    (a.dir / "adopt-up.log").write_text(res.stdout + res.stderr)
    a.after = after = record(a)
    a.changes = report = change_report(before, after)
    (a.dir / "adopt-changes.txt").write_text(report + "\n")
    print(f"--- what `kubeboot up` changed on the kubeadm cluster ---\n{report}")
    assert res.returncode == 0, res.stderr[-6000:] + "\n" + report[-6000:]
    assert "[adopt]" in res.stderr, res.stderr[-3000:]
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    assert not any(s in res.stdout + res.stderr for s in a.secrets)

    # 0 certificates replaced: every certificate and key file, every credential a kubeconfig embeds; in fact nothing
    # kubeadm wrote under /etc/kubernetes (PKI, kubeconfigs with the first control plane's kubelet.conf pointing at
    # kubelet-client-current.pem, manifests) was rewritten
    changed = changes(before, after)
    pki = {h: [p for p in paths if is_pki(p)] for h, paths in changed.items()}
    assert not any(pki.values()), f"{pki}\n{report[-8000:]}"
    for h in NODES:
        for p, data in before[h].files.items():
            if p.startswith("/etc/kubernetes/") and p.endswith(".conf") and p in after[h].files:
                assert kubeconfig_credentials(after[h].files[p]) == kubeconfig_credentials(data), \
                    f"{h}:{p}\n{report[-8000:]}"
    kubeadms = {h: [p for p in paths if p.startswith("/etc/kubernetes/")] for h, paths in changed.items()}
    assert not any(kubeadms.values()), f"{kubeadms}\n{report[-8000:]}"
    # no static pod (or kube-proxy) container replaced
    for h in NODES:
        assert {k.split("/")[0].rsplit("-", 1)[0] for k in before[h].containers} >= \
            ({*STATIC_PODS, "kube-proxy"} if h in CPS else {"kube-proxy"}), before[h].containers
    gone = {h: r["containers"] for h, r in replaced(before, after).items() if r["containers"]}
    assert gone == {}, report[-8000:]
    # the state directory now holds the cluster's CA
    state = a.c.inv.parent / ".kubeboot" / "nodes"
    assert (state / "pki/ca.crt").read_bytes() == before[CP1].files["/etc/kubernetes/pki/ca.crt"]


def test_up_adopting_restarts_neither_kubelet_nor_containerd(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    if a.adopt_run is None or a.after is None:
        pytest.fail("the adopting up did not run")
    pids = {h: r["pids"] for h, r in replaced(a.before, a.after).items() if r["pids"]}
    assert pids == {}, a.changes[-8000:]


def test_a_second_up_changes_nothing(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    if a.adopt_run is None or a.adopt_run.returncode != 0:
        pytest.fail("the adopting up did not succeed")
    before = record(a)
    again = a.c.kb("up", netns=True)
    (a.dir / "second-up.log").write_text(again.stdout + again.stderr)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "no changes: the hosts already match" in again.stderr, again.stderr[-4000:]
    assert "[adopt]" not in again.stderr  # the state directory has the CA now: nothing to adopt
    after = record(a)
    assert changes(before, after) == {h: [] for h in before}, change_report(before, after)
    assert replaced(before, after) == {}, change_report(before, after)


def kb_read(a: Adoption, *args: str) -> subprocess.CompletedProcess[str]:
    """A read-only kubeboot command from the workstation (inside the lab's controller namespace)."""
    return a.c.kb(*args, "-i", str(a.c.inv), "--known-hosts", str(a.c.lab.known_hosts),
                  "--ssh-config", str(proxy_only_ssh_config(cast(Any, a.c.lab))), netns=True)


def test_status_and_certs_check_expiration_on_the_adopted_cluster(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    if a.adopt_run is None or a.adopt_run.returncode != 0:
        pytest.fail("the adopting up did not succeed")

    def healthy() -> dict[str, Any] | None:
        res = kb_read(a, "status", "-o", "json")
        assert "Traceback" not in res.stderr and "PRIVATE KEY" not in res.stdout + res.stderr, res.stderr
        return json.loads(res.stdout) if res.returncode == 0 else None

    doc = wait_until("status healthy", healthy, timeout=120, interval=3)
    assert doc["cluster"]["state"] == "healthy"
    assert doc["cluster"]["quorum"] == {"votingMembers": 2, "healthy": 2, "ok": True}
    by = {h["name"]: h for h in doc["hosts"]}
    for cp in CPS:
        assert by[cp]["services"] == {"containerd": "active", "kubelet": "active"}
        assert by[cp]["etcd"]["member"] == "voter" and by[cp]["etcd"]["health"] == "healthy", by[cp]["etcd"]
        assert all(by[cp]["staticPods"][comp]["running"] for comp in STATIC_PODS), by[cp]["staticPods"]
    assert [(b["host"], b["up"]) for b in by[LB]["loadBalancer"]["backends"]] == [(cp, True) for cp in CPS]

    res = kb_read(a, "certs", "check-expiration", "-o", "json")
    assert res.returncode == 0, res.stderr
    exp = json.loads(res.stdout)
    assert [cp["name"] for cp in exp["controlPlanes"]] == list(CPS)
    for cp in exp["controlPlanes"]:
        rows = {r["name"]: r for r in (*cp["certificates"], *cp["certificateAuthorities"])}
        assert {rows[n]["residual"] for n in ("ca", "etcd-ca", "front-proxy-ca")} == {"9y"}
        # kubeadm's certificates, issued for a year, read from the host
        pem = (a.c.lab.host(cp["name"]).rootfs / "etc/kubernetes/pki/apiserver.crt").read_bytes()
        not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        assert rows["apiserver"]["expires"] == not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), rows["apiserver"]
        assert rows["apiserver"]["residual"] in ("364d", "365d") and rows["apiserver"]["externallyManaged"] is False
        assert (rows["super-admin.conf"]["expires"] is None) == (cp["name"] != CP1)  # kubeadm: init node only
    text = kb_read(a, "certs", "check-expiration")
    assert text.returncode == 0 and f"[check-expiration] {CP1}" in text.stdout, text.stderr


def test_a_state_directory_of_another_cluster_is_refused(kubeadm_cluster: Adoption) -> None:
    a = kubeadm_cluster
    other = a.dir / "other-workstation"
    other.mkdir()
    inv = other / "cluster.yaml"
    inv.write_text(a.c.inv.read_text())
    # another workstation's state: `render` makes a new CA for the copied inventory (nothing reaches a host)
    rendered = subprocess.run([sys.executable, "-m", "kubeboot.cli", "render", "-i", str(inv), "-o",
                               str(other / "out")], capture_output=True, text=True, timeout=120, cwd=other,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert rendered.returncode == 0, rendered.stderr
    foreign_ca = (other / ".kubeboot/nodes/pki/ca.crt").read_bytes()
    before = record(a)
    assert foreign_ca != before[CP1].files["/etc/kubernetes/pki/ca.crt"]
    res = a.c.kb("up", inv=inv, netns=True)
    assert res.returncode == FOREIGN_CLUSTER, res.stderr[-4000:]
    assert "Traceback" not in res.stderr
    error = next((ln for ln in res.stderr.splitlines() if ln.startswith("error:")), "")
    assert "another cluster" in error and re.search(rf"\b({'|'.join(NODES)})\b", error), res.stderr[-3000:]
    after = record(a)
    assert changes(before, after) == {h: [] for h in before}, change_report(before, after)
    assert replaced(before, after) == {}, change_report(before, after)
    assert (other / ".kubeboot/nodes/pki/ca.crt").read_bytes() == foreign_ca  # the state was not rewritten either
