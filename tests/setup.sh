#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine (run as root), then the Python
# test dependencies. Idempotent: a second run only checks. Used by README's test command and by .ci/run.
#   KUBEBOOT_SKIP_REFERENCE=1  skip building the Kubernetes reference binaries (their tests then skip)
#   KUBEBOOT_SKIP_SYSTEMD_LAB=1  skip pre-building the systemd lab hosts' base rootfs (tests build it on first use)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(openssl curl apt-utils nginx libnginx-mod-stream containerd openssh-server openssh-client openssh-sftp-server iproute2 sudo procps psmisc libfaketime
      netcat-openbsd util-linux iptables conntrack ethtool socat ebtables)
PKGS+=(ruby vagrant)  # tests/unit/test_vagrant.py: ruby -c and vagrant validate on the Vagrantfile
PKGS+=(gcc libc6-dev binutils jq)  # bundle images: the static pause binary; build.sh: cgo flanneld, go mod JSON
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then echo "tests/setup.sh: need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "[setup] apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d on these images keeps the daemons from starting; tests start what they need themselves.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# systemd lab hosts (tests/lab/systemd.py): systemd-nspawn and debootstrap, WITHOUT Recommends: systemd-container
# recommends libnss-mymachines, whose postinst edits /etc/nsswitch.conf (hosts: files mymachines dns).
SYSTEMD_LAB_PKGS=(systemd-container debootstrap)
missing=()
for p in "${SYSTEMD_LAB_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then echo "tests/setup.sh: need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "[setup] apt-get install --no-install-recommends ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Every lab host's kubelet, containerd and systemd take inotify instances from the machine's root user (hosts
# have no user namespace); at the default 128 the 5th kubelet host's containerd starts without its CRI plugin
# (kubelet-in-systemd-hosts.md 3f). Raise, never lower.
if [ "$(id -u)" -eq 0 ]; then
  for kv in fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288; do
    key=${kv%%=*} want=${kv#*=}
    if [ "$(sysctl -n "$key")" -lt "$want" ]; then echo "[setup] sysctl -w $kv"; sysctl -qw "$kv"; fi
  done
fi

# Kernel features the lab's nodes take from the machine's kernel (lab hosts share it): br_netfilter (bridged pod
# traffic through iptables), overlay (containerd's snapshotter), vxlan (flannel's default backend). Each is probed
# first, so a second run, or a kernel with them built in (this VM: no modprobe, no /lib/modules), does nothing.
if [ "$(id -u)" -eq 0 ]; then
  for m in br_netfilter:/proc/sys/net/bridge overlay:/sys/module/overlay vxlan:/sys/module/vxlan; do
    mod=${m%%:*} probe=${m#*:}
    [ -e "$probe" ] && continue
    if ! command -v modprobe >/dev/null; then
      echo "[setup] apt-get install kmod (modprobe, for $mod)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kmod >/dev/null
    fi
    echo "[setup] modprobe $mod"
    modprobe "$mod"
    [ -e "$probe" ] || { echo "tests/setup.sh: $mod loaded but $probe is missing" >&2; exit 1; }
  done
fi

echo "[setup] pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# kubeboot's cache root (kubeboot/cache.py): the bundle builder's binaries, images and packages, shared with the tests
CACHE="${KUBEBOOT_CACHE:-${KUBEBOOT_REF_CACHE:-/var/cache/kubeboot}}"
if [ "${KUBEBOOT_SKIP_REFERENCE:-0}" != 1 ]; then
  # tests/reference/build.sh is kubeboot's own builder (kubeboot/bundle/build.sh) plus the tests' refcheck
  echo "[setup] reference binaries (cached in $CACHE)"
  tests/reference/build.sh
  echo "[setup] container images (OCI archives in $CACHE/v*/images)"
  python3 -m tests.reference.images
  # The release upgrade tests start from (binaries.PREVIOUS_VERSION): its own binaries and the images whose refs
  # change with the release. flannel, the CNI plugins, refcheck and pause come from the build above.
  prev_spec="$(python3 -c 'from tests.reference.binaries import PREVIOUS_VERSION as v, PREVIOUS_NAMES as b
from tests.reference.images import PREVIOUS_IMAGES as i
print(v, ",".join(b), ",".join(i))')"  # an assignment, so a failure stops the script (set -e)
  read -r prev prev_bins prev_images <<<"$prev_spec"
  echo "[setup] reference binaries v$prev for upgrade tests: $prev_bins"
  tests/reference/build.sh --only "$prev_bins" "$prev"
  echo "[setup] container images v$prev: $prev_images"
  python3 -m tests.reference.images --only "$prev_images" "$prev"
fi

if [ "${KUBEBOOT_SKIP_SYSTEMD_LAB:-0}" != 1 ] && [ "$(id -u)" -eq 0 ]; then
  echo "[setup] systemd lab base rootfs (cached in $CACHE/rootfs)"
  python3 -m tests.lab.rootfs
fi
