#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine (run as root), then the Python
# test dependencies. Idempotent: a second run only checks. Used by README's test command and by .ci/run.
#   KUBEBOOT_SKIP_REFERENCE=1  skip building the Kubernetes reference binaries (their tests then skip)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(openssl curl apt-utils nginx libnginx-mod-stream containerd openssh-server openssh-client openssh-sftp-server iproute2 sudo procps psmisc libfaketime
      netcat-openbsd util-linux iptables conntrack ethtool socat ebtables)
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

echo "[setup] pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

if [ "${KUBEBOOT_SKIP_REFERENCE:-0}" != 1 ]; then
  echo "[setup] reference binaries (cached in ${KUBEBOOT_REF_CACHE:-/var/cache/kubeboot-ref})"
  tests/reference/build.sh
fi
