"""The lab's image archives (tests/reference/images.py): valid OCI layouts, the right binaries inside, accepted by
the real containerd, and cached.

Each test skips, naming the command, when an archive is not built; ``tests/setup.sh`` builds them all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reference import images
from tests.reference.images import IMAGE_NAMES, BuiltImage, image_refs, require_image

VERSION = "1.37.2"
REFS = image_refs(VERSION)


def _read(t: tarfile.TarFile, name: str) -> bytes:
    f = t.extractfile(name)
    assert f is not None, name
    return f.read()


def _blob(t: tarfile.TarFile, digest: str) -> bytes:
    data = _read(t, "blobs/sha256/" + digest.removeprefix("sha256:"))
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} does not match its digest"
    return data


class Layout:
    """One archive, parsed and verified down to its layer."""

    def __init__(self, archive: Path) -> None:
        with tarfile.open(archive) as t:
            assert json.loads(_read(t, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
            self.index = json.loads(_read(t, "index.json"))
            (self.desc,) = self.index["manifests"]
            self.manifest = json.loads(_blob(t, self.desc["digest"]))
            assert self.desc["size"] == len(_blob(t, self.desc["digest"]))
            cdesc = self.manifest["config"]
            self.config = json.loads(_blob(t, cdesc["digest"]))
            (ldesc,) = self.manifest["layers"]
            self.layer = _blob(t, ldesc["digest"])
            assert ldesc["size"] == len(self.layer)
            assert ldesc["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            # uncompressed layer: the diff_id is the layer digest
            assert self.config["rootfs"] == {"type": "layers", "diff_ids": [ldesc["digest"]]}
            self.members = sorted(t.getnames())

    def open_layer(self) -> tarfile.TarFile:
        return tarfile.open(fileobj=io.BytesIO(self.layer))

    def extract(self, path: str, dest: Path) -> Path:
        with self.open_layer() as t:
            data = _read(t, path)
        dest.write_bytes(data)
        dest.chmod(0o755)
        return dest


@pytest.fixture(scope="module")
def layouts() -> dict[str, tuple[BuiltImage, Layout]]:
    out = {}
    for name in IMAGE_NAMES:
        d = images.images_dir(VERSION)
        img = next((i for i in images.read_images_json(d) if i.name == name), None) if d else None
        if img is not None and d is not None and (d / img.file).is_file():
            out[name] = (img, Layout(d / img.file))
    return out


def _layout(layouts: dict[str, tuple[BuiltImage, Layout]], name: str) -> tuple[BuiltImage, Layout]:
    if name not in layouts:
        require_image(name, VERSION)  # skips with the build command
    return layouts[name]


def test_refs_cover_what_kubeboot_deploys() -> None:
    """Every image kubeboot's renderer names for the default version has an archive ref here."""
    from kubeboot.config.load import load_inventory_text
    from kubeboot.render import images as render_images
    from tests.conftest import EXAMPLE

    cfg = load_inventory_text(EXAMPLE.read_text(), str(EXAMPLE))
    if cfg.version.version != VERSION:
        pytest.skip(f"example inventory deploys {cfg.version.version}")
    assert set(render_images.required_images(cfg)) <= set(REFS.values())


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_archive_is_a_valid_oci_layout(layouts: dict[str, tuple[BuiltImage, Layout]], name: str) -> None:
    img, lay = _layout(layouts, name)
    assert img.ref == REFS[name]
    assert lay.desc["annotations"]["io.containerd.image.name"] == REFS[name]
    assert lay.desc["digest"] == img.manifest and lay.manifest["config"]["digest"] == img.config
    assert lay.manifest["layers"][0]["digest"] == img.layer
    assert lay.desc["platform"] == {"architecture": "amd64", "os": "linux"}
    env = dict(e.split("=", 1) for e in lay.config["config"]["Env"])
    assert "/usr/local/bin" in env["PATH"].split(":") and "/usr/sbin" in env["PATH"].split(":")
    with lay.open_layer() as t:
        members = {m.name: m for m in t.getmembers()}
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
    assert list(members) == sorted(members), "layer members are not sorted"


EXPECTED_CONFIG: dict[str, dict[str, Any]] = {
    "pause": {"Entrypoint": ["/pause"], "User": "65535:65535"},
    "coredns": {"Entrypoint": ["/coredns"], "User": "65532:65532"},
    "flannel": {"Entrypoint": ["/opt/bin/flanneld"]},
    "flannel-cni-plugin": {"Cmd": ["/bin/sh"]},
    "busybox": {"Cmd": ["/bin/sh"]},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIG))
def test_entrypoint_and_user(layouts: dict[str, tuple[BuiltImage, Layout]], name: str) -> None:
    _, lay = _layout(layouts, name)
    cfg = lay.config["config"]
    for k, v in EXPECTED_CONFIG[name].items():
        assert cfg.get(k) == v, (k, cfg)


CONTENTS = {
    "kube-apiserver": ["usr/local/bin/kube-apiserver"],
    "kube-controller-manager": ["usr/local/bin/kube-controller-manager"],
    "kube-scheduler": ["usr/local/bin/kube-scheduler"],
    "kube-proxy": ["usr/local/bin/kube-proxy", "usr/sbin/iptables", "usr/sbin/xtables-nft-multi",
                   "usr/sbin/xtables-legacy-multi", "usr/sbin/conntrack", "usr/sbin/ipset", "usr/sbin/nft",
                   "lib64/ld-linux-x86-64.so.2"],
    "etcd": ["usr/local/bin/etcd", "usr/local/bin/etcdctl", "usr/local/bin/etcdutl", "var/lib/etcd"],
    "pause": ["pause"],
    "coredns": ["coredns", "etc/ssl/certs/ca-certificates.crt"],
    "flannel": ["opt/bin/flanneld", "opt/bin/install-conf", "opt/bin/mk-docker-opts.sh", "bin/cp", "bin/sh",
                "usr/sbin/iptables-legacy", "usr/sbin/ip6tables-nft"],
    "flannel-cni-plugin": ["flannel", "bin/cp", "bin/sh"],
    "busybox": ["bin/busybox", "bin/sh", "bin/cp", "etc/passwd"],
}


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_contents(layouts: dict[str, tuple[BuiltImage, Layout]], name: str) -> None:
    _, lay = _layout(layouts, name)
    with lay.open_layer() as t:
        names = set(t.getnames())
    assert not [p for p in CONTENTS[name] if p not in names]


def test_coredns_has_the_net_bind_service_file_capability(layouts: dict[str, tuple[BuiltImage, Layout]]) -> None:
    _, lay = _layout(layouts, "coredns")
    with lay.open_layer() as t:
        m = t.getmember("coredns")
    cap = m.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert cap == bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


VERSIONS = [
    ("kube-apiserver", "usr/local/bin/kube-apiserver", ["--version"], f"Kubernetes v{VERSION}"),
    ("kube-controller-manager", "usr/local/bin/kube-controller-manager", ["--version"], f"Kubernetes v{VERSION}"),
    ("kube-scheduler", "usr/local/bin/kube-scheduler", ["--version"], f"Kubernetes v{VERSION}"),
    ("kube-proxy", "usr/local/bin/kube-proxy", ["--version"], f"Kubernetes v{VERSION}"),
    ("etcd", "usr/local/bin/etcd", ["--version"], "etcd Version: 3.7.0"),
    ("etcd", "usr/local/bin/etcdctl", ["version"], "etcdctl version: 3.7.0"),
    ("pause", "pause", ["-v"], f"pause.c v3.10.2-v{VERSION}"),
    ("coredns", "coredns", ["-version"], "CoreDNS-1.14.6"),
    ("flannel", "opt/bin/flanneld", ["--version"], "v0.28.10"),
    ("flannel-cni-plugin", "flannel", [], "CNI flannel plugin v0.9.1"),
    ("busybox", "bin/busybox", [], "BusyBox v1.35"),
]


@pytest.mark.parametrize(("name", "path", "args", "want"), VERSIONS, ids=[v[1] for v in VERSIONS])
def test_binary_reports_its_version(layouts: dict[str, tuple[BuiltImage, Layout]], tmp_path: Path, name: str,
                                    path: str, args: list[str], want: str) -> None:
    _, lay = _layout(layouts, name)
    exe = lay.extract(path, tmp_path / os.path.basename(path))
    env = {"PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60, env=env)
    assert want in res.stdout + res.stderr, (res.returncode, res.stdout, res.stderr)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, unshare, containerd)")


@pytest.fixture(scope="module")
def kube_proxy_rootfs(layouts: dict[str, tuple[BuiltImage, Layout]]) -> Iterator[Path]:
    _need_root()
    _, lay = _layout(layouts, "kube-proxy")
    root = Path(tempfile.mkdtemp(prefix="kb-kube-proxy-rootfs-"))
    try:
        with tempfile.NamedTemporaryFile() as f:
            f.write(lay.layer)
            f.flush()
            subprocess.run(["tar", "-C", str(root), "-xf", f.name], check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


NETFILTER_COMMANDS = [
    ["iptables", "--version"],
    ["ip6tables", "--version"],
    ["iptables", "-L", "-n"],  # Debian's alternative: iptables-nft
    ["iptables-nft", "-t", "nat", "-L", "-n"],
    ["ip6tables-nft", "-L", "-n"],
    ["iptables-save"],
    ["iptables-nft-restore", "--version"],
    ["iptables-legacy", "--version"],
    ["iptables-legacy-save", "--version"],
    ["nft", "list", "ruleset"],
    ["conntrack", "--version"],
    ["ipset", "--version"],
]


def _in_netns(rootfs: Path, *cmds: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``cmds`` one after another, each chrooted into ``rootfs`` (absolute paths resolved against the image's
    PATH), all in one fresh network, mount and PID namespace, so no host rule is read or touched."""
    def resolve(prog: str) -> str:
        for d in ("usr/local/bin", "usr/local/sbin", "usr/bin", "usr/sbin", "bin", "sbin"):
            if os.path.lexists(rootfs / d / prog):
                return f"/{d}/{prog}"
        raise AssertionError(f"{prog} is not in the image")
    script = "\n".join(f"chroot {rootfs} {' '.join(resolve(c[0]) if i == 0 else c[i] for i in range(len(c)))} "
                       f"> {rootfs}/tmp/out.{n} 2>&1; echo $? > {rootfs}/tmp/rc.{n}" for n, c in enumerate(cmds))
    # /proc of the new namespaces (the legacy tools list tables from /proc/net); gone with the mount namespace
    script = f"mount -t proc proc {rootfs}/proc\n" + script
    subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "sh", "-c", script], check=True, timeout=120)
    return [subprocess.CompletedProcess(c, int((rootfs / f"tmp/rc.{n}").read_text()),
                                        (rootfs / f"tmp/out.{n}").read_text(), "") for n, c in enumerate(cmds)]


@pytest.mark.parametrize("cmd", NETFILTER_COMMANDS, ids=[" ".join(c) for c in NETFILTER_COMMANDS])
def test_netfilter_tools_run_in_the_kube_proxy_image(kube_proxy_rootfs: Path, cmd: list[str]) -> None:
    """The tools start inside the image's own root: they find their libraries, the loader, their extensions
    and (for -L) the kernel's nf_tables."""
    (res,) = _in_netns(kube_proxy_rootfs, cmd)
    assert res.returncode == 0, res.stdout
    if "--version" in cmd and cmd[0].startswith(("iptables", "ip6tables")):
        assert ("nf_tables" in res.stdout) == ("legacy" not in cmd[0]), res.stdout


@pytest.mark.parametrize("variant", ["iptables", "iptables-nft", "iptables-legacy"])
def test_kube_proxy_style_rules_round_trip(kube_proxy_rootfs: Path, variant: str) -> None:
    """Rules with the extensions kube-proxy's iptables mode uses (comment, mark, statistic, conntrack,
    MASQUERADE, DNAT) are accepted and read back by the matching -save."""
    rules = [
        [variant, "-t", "nat", "-N", "KUBE-SERVICES"],
        [variant, "-t", "nat", "-A", "KUBE-SERVICES", "-m", "comment", "--comment", "default/kubernetes:https",
         "-m", "statistic", "--mode", "random", "--probability", "0.5", "-p", "tcp", "-j", "DNAT",
         "--to-destination", "10.0.0.1:6443"],
        [variant, "-t", "nat", "-A", "POSTROUTING", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "MASQUERADE"],
        [variant, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
        [variant + "-save" if variant != "iptables" else "iptables-save"],
    ]
    results = _in_netns(kube_proxy_rootfs, *rules)
    assert all(r.returncode == 0 for r in results), [(r.args, r.stdout) for r in results]
    saved = results[-1].stdout
    for want in ("-A KUBE-SERVICES", "--probability 0.5", "--to-destination 10.0.0.1:6443", "-j MASQUERADE",
                 "--ctstate INVALID"):
        assert want in saved, saved


def test_iptables_is_debians_nft_alternative(kube_proxy_rootfs: Path) -> None:
    assert os.readlink(kube_proxy_rootfs / "usr/sbin/iptables") == "/etc/alternatives/iptables"
    assert os.readlink(kube_proxy_rootfs / "etc/alternatives/iptables") == "/usr/sbin/iptables-nft"
    assert os.readlink(kube_proxy_rootfs / "etc/alternatives/ip6tables-restore") == "/usr/sbin/ip6tables-nft-restore"


@pytest.fixture(scope="module")
def containerd() -> Iterator[list[str]]:
    """A private containerd (own root, state, socket, no CRI); yields the ctr command prefix."""
    _need_root()
    binary = shutil.which("containerd")
    ctr = shutil.which("ctr")
    if not binary or not ctr:
        pytest.skip("containerd/ctr not installed (run tests/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="kbctr-", dir="/tmp"))
    sock = base / "c.sock"
    (base / "config.toml").write_text(
        "version = 2\n"
        f'root = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n')
    log = open(base / "containerd.log", "w")
    proc = subprocess.Popen([binary, "--config", str(base / "config.toml")], stdout=log, stderr=subprocess.STDOUT)
    cmd = [ctr, "--address", str(sock), "-n", "k8s.io"]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*cmd, "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("private containerd did not start:\n" + (base / "containerd.log").read_text()[-2000:])
            time.sleep(0.1)
        yield cmd
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(base / "mnt")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_containerd_imports_every_archive(containerd: list[str]) -> None:
    d = images.images_dir(VERSION)
    built = images.read_images_json(d) if d else []
    if not built:
        require_image("pause", VERSION)
    assert d is not None
    for img in built:
        res = subprocess.run([*containerd, "images", "import", str(d / img.file)], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, (img.file, res.stderr)
    listed = subprocess.run([*containerd, "images", "ls", "-q"], capture_output=True, text=True, check=True)
    assert set(listed.stdout.split()) == {i.ref for i in built}
    missing = [n for n in IMAGE_NAMES if n not in {i.name for i in built}]
    if missing:
        pytest.skip(f"imported {len(built)} images; not built: {', '.join(missing)}")


def test_containerd_unpacks_coredns_with_its_file_capability(containerd: list[str]) -> None:
    img, archive = require_image("coredns", VERSION)
    subprocess.run([*containerd, "images", "import", str(archive)], capture_output=True, check=True, timeout=300)
    mnt = Path(containerd[2]).parent / "mnt"
    mnt.mkdir(exist_ok=True)
    res = subprocess.run([*containerd, "images", "mount", img.ref, str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"ctr images mount unavailable: {res.stderr.strip()}")
    try:
        assert os.getxattr(mnt / "coredns", "security.capability")[4:8] == (1 << 10).to_bytes(4, "little")
        assert (mnt / "coredns").stat().st_mode & 0o777 == 0o755
    finally:
        subprocess.run([*containerd, "images", "unmount", str(mnt)], capture_output=True)


def test_a_second_build_builds_nothing() -> None:
    if images.images_dir(VERSION) is None:
        require_image("pause", VERSION)
    before = {i.name: i for i in images.read_images_json(images.default_images_dir(VERSION))}
    res = images.build_images(VERSION, names=list(before))
    assert res.built == [] and res.failed == {}
    assert {i.name: i for i in res.cached} == before
    assert res.seconds < 2.0, f"cached run took {res.seconds:.2f}s"


def test_archives_are_reproducible(tmp_path: Path) -> None:
    """The same inputs give the same bytes in a fresh output directory."""
    img, archive = require_image("busybox", VERSION)
    res = images.build_images(VERSION, names=["busybox", "pause"], out_dir=tmp_path)
    assert not res.failed
    again = {i.name: i for i in res.built}
    assert again["busybox"].manifest == img.manifest
    assert (tmp_path / "busybox.tar").read_bytes() == archive.read_bytes()
    assert again["pause"].manifest == require_image("pause", VERSION)[0].manifest


def test_a_changed_input_rebuilds_only_its_image(tmp_path: Path) -> None:
    require_image("busybox", VERSION)
    first = images.build_images(VERSION, names=["busybox", "pause"], out_dir=tmp_path)
    assert {i.name for i in first.built} == {"busybox", "pause"}
    # A recompiled pause binary with the same bytes changes nothing ...
    (tmp_path / ".work" / "pause.stamp").write_text("stale")
    second = images.build_images(VERSION, names=["busybox", "pause"], out_dir=tmp_path)
    assert second.built == [] and {i.name for i in second.cached} == {"busybox", "pause"}
    # ... different bytes rebuild the pause image and nothing else.
    with open(tmp_path / ".work" / "pause", "ab") as f:
        f.write(b"\0")
    third = images.build_images(VERSION, names=["busybox", "pause"], out_dir=tmp_path)
    assert [i.name for i in third.built] == ["pause"] and [i.name for i in third.cached] == ["busybox"]
    assert third.built[0].manifest != first.built[1 if first.built[0].name == "busybox" else 0].manifest
    listed = json.loads((tmp_path / "images.json").read_text())["images"]
    assert [i["name"] for i in listed] == ["pause", "busybox"]


def test_flannel_init_containers_run_as_the_shipped_manifest_says(layouts: dict[str, tuple[BuiltImage, Layout]],
                                                                   tmp_path: Path) -> None:
    """kubeboot's kube-flannel.yml (upstream's) runs ``cp -f /flannel /opt/cni/bin/flannel`` in flannel-cni-plugin
    and ``/opt/bin/install-conf`` in flannel: each command, with its mounts, resolved through the image's PATH,
    chrooted into the image's root, leaves the files on the "host"."""
    _need_root()
    from kubeboot.render import cni

    objs = cni.shipped_manifest(cni.FLANNEL_MANIFEST)
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    host = tmp_path / "host"
    volumes: dict[str, Path] = {}
    for v in pod["volumes"]:
        if "configMap" in v:
            d = tmp_path / "configmap" / v["name"]
            d.mkdir(parents=True)
            for key, text in cm["data"].items():
                (d / key).write_text(text)
            volumes[v["name"]] = d
        else:
            volumes[v["name"]] = host / v["hostPath"]["path"].lstrip("/")
            volumes[v["name"]].mkdir(parents=True, exist_ok=True)
    by_image = {img.ref: lay for img, lay in layouts.values()}
    for c in pod["initContainers"]:
        lay = by_image.get(c["image"])
        if lay is None:
            pytest.skip(f"image {c['image']} not built")
        root = tmp_path / c["name"]
        root.mkdir()
        with tempfile.NamedTemporaryFile() as f:
            f.write(lay.layer)
            f.flush()
            subprocess.run(["tar", "-C", str(root), "-xf", f.name], check=True)
        mounts = "".join(f"mkdir -p {root}{m['mountPath']} && "
                         f"mount --bind {volumes[m['name']]} {root}{m['mountPath']}\n" for m in c["volumeMounts"])
        env = [e for e in lay.config["config"]["Env"] if e.startswith("PATH=")]
        argv = " ".join([*c["command"], *c.get("args", [])])
        script = f"{mounts}env -i {env[0]} chroot {root} {argv}"
        res = subprocess.run(["unshare", "--mount", "--fork", "sh", "-ec", script], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, (c["name"], res.stdout, res.stderr)
    assert (host / "opt/cni/bin/flannel").read_bytes() == (tmp_path / "install-cni-plugin/flannel").read_bytes()
    assert (host / "etc/cni/net.d/10-flannel.conflist").read_text() == cm["data"]["cni-conf.json"]
