#!/usr/bin/env bash
# Build Kubernetes' own binaries (and the etcd kubeadm pins for them) from Go modules, as reference
# binaries for the test suite.  Output is cached OUTSIDE the repository, keyed by version:
#
#   ${KUBEBOOT_REF_CACHE:-/var/cache/kubeboot-ref}/v<K8S_VERSION>/bin/<name>
#
# Usage: tests/reference/build.sh [--only name,name] [K8S_VERSION]      (default 1.37.2)
#
# Names, in build order: etcd etcdctl etcdutl kubectl refcheck kubeadm kube-apiserver
#                        kube-controller-manager kube-scheduler kubelet kube-proxy
#                        coredns flanneld flannel-install-conf cni-bridge cni-host-local
#                        cni-portmap cni-loopback cni-flannel
#
# The addons (for tests/reference/images.py): coredns at kubeadm's CoreDNSVersion; flanneld and
# flannel-install-conf from github.com/flannel-io/flannel (flanneld without the TencentCloud VPC backend,
# whose SDK the Go proxy does not serve); the CNI plugins into
# v<K8S_VERSION>/cni-bin/<plugin> (cni-flannel is the flannel meta plugin of
# github.com/containernetworking/plugins v0.9.1, its last release with it; see images.py).
#
# How: a small generated Go module (in the cache dir, never in the repo) requires k8s.io/kubernetes
# vX.Y.Z and replaces every staging module of k8s.io/kubernetes's own go.mod with the published
# v0.Y.Z; a second generated module requires the etcd modules.  Binaries are static
# (CGO_ENABLED=0), version-stamped through -ldflags -X, built one after another, written under a
# temporary name and renamed into place, then verified by running them.  A binary is reused when it
# exists and its stamp file (versions + go version + source hash) matches.
# GOMODCACHE / GOCACHE: the go toolchain's defaults unless set in the environment.
# The whole script is one brace group, so bash parses it completely before running it: editing or
# checking out this file while a build runs cannot change what the running build does.
{
set -euo pipefail

readonly DEFAULT_VERSION="1.37.2"
readonly ALL_NAMES=(etcd etcdctl etcdutl kubectl refcheck kubeadm kube-apiserver
                    kube-controller-manager kube-scheduler kubelet kube-proxy
                    coredns flanneld flannel-install-conf cni-bridge cni-host-local
                    cni-portmap cni-loopback cni-flannel)
# Addon pins (not derived from kubeadm): the newest flannel the Go proxy serves, the CNI plugins
# release, and the last containernetworking/plugins release that still had the flannel meta plugin.
readonly FLANNEL_VERSION="0.28.10"
readonly CNI_PLUGINS_VERSION="1.10.0"
readonly CNI_FLANNEL_SRC_VERSION="0.9.1"
readonly CNI_FLANNEL_LIBCNI_VERSION="1.3.1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

die() { echo "build.sh: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "==> $*"; }

# ---------------------------------------------------------------------------------------- args
ONLY=""
VERSION=""
while (($#)); do
  case "$1" in
    --only) (($# >= 2)) || die "--only needs a value"; ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#--only=}"; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option: $1" >&2; usage 2 ;;
    *) [[ -z "$VERSION" ]] || die "only one version may be given"; VERSION="$1"; shift ;;
  esac
done
VERSION="${VERSION:-$DEFAULT_VERSION}"
VERSION="${VERSION#v}"
[[ "$VERSION" =~ ^1\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?$ ]] || die "not a Kubernetes 1.x.y version: $VERSION"
K8S_MINOR="${BASH_REMATCH[1]}"
STAGING_VERSION="v0.${VERSION#1.}"            # Kubernetes v1.N.P pairs with staging v0.N.P

SELECTED=()
if [[ -z "$ONLY" ]]; then
  SELECTED=("${ALL_NAMES[@]}")
else
  IFS=, read -r -a wanted <<<"$ONLY"
  for w in "${wanted[@]}"; do
    [[ " ${ALL_NAMES[*]} " == *" $w "* ]] || die "unknown binary '$w' (known: ${ALL_NAMES[*]})"
  done
  for n in "${ALL_NAMES[@]}"; do             # keep the canonical build order
    [[ ",$ONLY," == *",$n,"* ]] && SELECTED+=("$n")
  done
fi

# ------------------------------------------------------------------------------------ toolchain
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO="$(command -v go)" || die "no go toolchain"; fi
fi
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"   # never download another toolchain
GO_VERSION="$("$GO" env GOVERSION)"

ROOT="${KUBEBOOT_REF_CACHE:-/var/cache/kubeboot-ref}"
VDIR="$ROOT/v$VERSION"
BIN="$VDIR/bin"
STAMPS="$VDIR/stamps"
SRC="$VDIR/src"
CNI_BIN="$VDIR/cni-bin"
mkdir -p "$BIN" "$CNI_BIN" "$STAMPS" "$SRC/k8s" "$SRC/etcd/cmd/etcd" "$SRC/coredns" "$SRC/flannel" "$SRC/cni" \
  "$SRC/cni-flannel"

REPO_TOP="$(cd "$HERE/../.." && pwd)"
case "$VDIR/" in "$REPO_TOP"/*) die "cache dir $VDIR must be outside the repository" ;; esac

exec 9>"$VDIR/.lock"
flock 9 || die "cannot lock $VDIR/.lock"     # one build per version at a time

T0="$(now)"
TMP_FILES=()
cleanup() { local f; for f in "${TMP_FILES[@]}"; do rm -f -- "$f"; done; }
trap cleanup EXIT

log "kubernetes v$VERSION; cache $VDIR; $GO_VERSION; GOMODCACHE=$("$GO" env GOMODCACHE) GOCACHE=$("$GO" env GOCACHE)"

# ------------------------------------------------------------------ k8s.io/kubernetes module source
mod_field() {  # mod_field MODULE@VERSION FIELD  -> value from `go mod download -json`
  (cd "$SRC" && "$GO" mod download -json "$1") | jq -er ".$2" \
    || die "go mod download $1 failed"
}
K8S_DIR="$(mod_field "k8s.io/kubernetes@v$VERSION" Dir)"
K8S_INFO="$(mod_field "k8s.io/kubernetes@v$VERSION" Info)"
K8S_TIME="$(jq -r '.Time // "1970-01-01T00:00:00Z"' "$K8S_INFO")"
K8S_COMMIT="$(jq -r '.Origin.Hash // ""' "$K8S_INFO")"

# The etcd version kubeadm pins: kubeadm's EtcdSupportedVersion(SupportedEtcdVersion, version):
# the map entry for our minor, else the nearest end of the map; image tag suffix "-N" dropped.
CONSTANTS="$K8S_DIR/cmd/kubeadm/app/constants/constants.go"
[[ -f "$CONSTANTS" ]] || die "no $CONSTANTS"
ETCD_VERSION="$(awk -v want="$K8S_MINOR" '
  /SupportedEtcdVersion[ \t]*=[ \t]*map\[/ { inmap = 1; next }
  inmap && /^[ \t]*}/ { inmap = 0 }
  inmap && match($0, /^[ \t]*([0-9]+):[ \t]*"([^"]+)"/) {
    split(substr($0, RSTART, RLENGTH), kv, ":"); k = kv[1] + 0
    v = kv[2]; gsub(/[ \t"]/, "", v); m[k] = v
    if (min == "" || k < min) min = k
    if (max == "" || k > max) max = k
  }
  END {
    if (want in m) v = m[want]; else if (want + 0 < min) v = m[min]; else v = m[max]
    sub(/-[0-9]+$/, "", v); print v
  }' "$CONSTANTS")"
DEFAULT_ETCD="$(sed -n 's/^[[:space:]]*DefaultEtcdVersion[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$CONSTANTS")"
DEFAULT_ETCD="${DEFAULT_ETCD%-*}"
[[ "$ETCD_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "could not read SupportedEtcdVersion from $CONSTANTS"
COREDNS_VERSION="$(sed -n 's/^[[:space:]]*CoreDNSVersion[[:space:]]*=[[:space:]]*"v\{0,1\}\([^"]*\)".*/\1/p' "$CONSTANTS")"
[[ "$COREDNS_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "could not read CoreDNSVersion from $CONSTANTS"
[[ -z "$DEFAULT_ETCD" || "$DEFAULT_ETCD" == "$ETCD_VERSION" ]] \
  || log "note: DefaultEtcdVersion=$DEFAULT_ETCD but SupportedEtcdVersion[$K8S_MINOR] resolves to $ETCD_VERSION; using $ETCD_VERSION"
log "kubeadm v$VERSION pins etcd $ETCD_VERSION (from $CONSTANTS)"

# ------------------------------------------------------------------------- generated modules
write_if_changed() {  # write_if_changed FILE  (content on stdin); returns 0 if it changed
  local new; new="$(cat)"
  if [[ -f "$1" && "$(cat "$1")" == "$new" ]]; then return 1; fi
  printf '%s\n' "$new" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

# go.mod of the kubernetes module: seeded from k8s.io/kubernetes's go.mod; `go build -mod=mod`
# then adds the indirect requirements and go.sum.  Reset only when the seed changes.
gen_k8s_module() {
  local gomod="$K8S_DIR/go.mod" staging
  staging="$(awk '/=>[ \t]*\.\/staging\// { if ($1 == "replace") print $2; else print $1 }' "$gomod" | sort -u)"
  [[ -n "$staging" ]] || die "no staging replaces found in $gomod"
  {
    echo "// Generated by kubeboot tests/reference/build.sh; do not edit."
    echo "module kubeboot.local/reference"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require k8s.io/kubernetes v$VERSION"
    echo
    echo "replace ("
    local m; for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
    echo ")"
  } | write_if_changed "$SRC/k8s/go.mod.seed" && { cp "$SRC/k8s/go.mod.seed" "$SRC/k8s/go.mod"; rm -f "$SRC/k8s/go.sum"; }
  [[ -f "$SRC/k8s/go.mod" ]] || cp "$SRC/k8s/go.mod.seed" "$SRC/k8s/go.mod"
  # refcheck's sources live in the repository; the module builds a copy.
  if [[ " ${SELECTED[*]} " == *" refcheck "* ]]; then
    mkdir -p "$SRC/k8s/refcheck"
    rm -f "$SRC/k8s/refcheck/"*.go
    cp "$HERE/refcheck/"*.go "$SRC/k8s/refcheck/"
  fi
}

gen_etcd_module() {
  local server_dir gov
  server_dir="$(mod_field "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" Dir)"
  gov="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$server_dir/go.mod")"
  {
    echo "// Generated by kubeboot tests/reference/build.sh; do not edit."
    echo "module kubeboot.local/reference-etcd"
    echo
    echo "go ${gov:-1.26}"
    echo
    echo "require ("
    printf '\tgo.etcd.io/etcd/%s/v3 v%s\n' server "$ETCD_VERSION" etcdctl "$ETCD_VERSION" etcdutl "$ETCD_VERSION"
    echo ")"
  } | write_if_changed "$SRC/etcd/go.mod.seed" && { cp "$SRC/etcd/go.mod.seed" "$SRC/etcd/go.mod"; rm -f "$SRC/etcd/go.sum"; }
  [[ -f "$SRC/etcd/go.mod" ]] || cp "$SRC/etcd/go.mod.seed" "$SRC/etcd/go.mod"
  write_if_changed "$SRC/etcd/cmd/etcd/main.go" <<'EOF' || true
// Generated by kubeboot tests/reference/build.sh: the etcd server, as etcd's own main.go does it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
}

# A module that only requires MODULE@vVERSION; main packages of that module are built from it (their
# go.mod's replace lines, if any, do not apply, exactly as for `go install MODULE/cmd@vVERSION`).
gen_dep_module() {  # gen_dep_module DIR MODULE VERSION [EXTRA_MODULE EXTRA_VERSION]
  local dir="$1" mod="$2" ver="$3" extra="${4:-}" extra_ver="${5:-}" mdir gov
  mdir="$(mod_field "$mod@v$ver" Dir)"
  gov="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$mdir/go.mod")"
  {
    echo "// Generated by kubeboot tests/reference/build.sh; do not edit."
    echo "module kubeboot.local/reference-$(basename "$dir")"
    echo
    echo "go ${gov:-1.22}"
    echo
    echo "require $mod v$ver"
    [[ -n "$extra" ]] && echo "require $extra v$extra_ver"
  } | write_if_changed "$dir/go.mod.seed" && { cp "$dir/go.mod.seed" "$dir/go.mod"; rm -f "$dir/go.sum"; }
  [[ -f "$dir/go.mod" ]] || cp "$dir/go.mod.seed" "$dir/go.mod"
}

# ------------------------------------------------------------------------------------- build
k8s_ldflags() {
  local p out="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=" -X $p.gitVersion=v$VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    out+=" -X $p.gitTreeState=clean -X $p.buildDate=$K8S_TIME"
    out+=" -X $p.gitCommit=$K8S_COMMIT"   # empty when the proxy does not record it (not "$Format:%H$")
  done
  echo "$out"
}

# module dir, package, ldflags for a name
build_spec() {
  case "$1" in
    etcd)    echo "$SRC/etcd ./cmd/etcd" ;;
    etcdctl) echo "$SRC/etcd go.etcd.io/etcd/etcdctl/v3" ;;
    etcdutl) echo "$SRC/etcd go.etcd.io/etcd/etcdutl/v3" ;;
    refcheck) echo "$SRC/k8s ./refcheck" ;;
    coredns) echo "$SRC/coredns github.com/coredns/coredns" ;;
    flanneld) echo "$SRC/flannel ./cmd/flanneld" ;;
    flannel-install-conf) echo "$SRC/flannel github.com/flannel-io/flannel/cmd/install_conf" ;;
    cni-bridge|cni-loopback) echo "$SRC/cni github.com/containernetworking/plugins/plugins/main/${1#cni-}" ;;
    cni-host-local) echo "$SRC/cni github.com/containernetworking/plugins/plugins/ipam/host-local" ;;
    cni-portmap) echo "$SRC/cni github.com/containernetworking/plugins/plugins/meta/portmap" ;;
    cni-flannel) echo "$SRC/cni-flannel github.com/containernetworking/plugins/plugins/meta/flannel" ;;
    *)       echo "$SRC/k8s k8s.io/kubernetes/cmd/$1" ;;
  esac
}

# The addons' module@version (empty for Kubernetes' and etcd's own binaries).
addon_of() {
  case "$1" in
    coredns) echo "github.com/coredns/coredns@v$COREDNS_VERSION" ;;
    flanneld|flannel-install-conf) echo "github.com/flannel-io/flannel@v$FLANNEL_VERSION" ;;
    cni-flannel) echo "github.com/containernetworking/plugins@v$CNI_FLANNEL_SRC_VERSION" ;;
    cni-*) echo "github.com/containernetworking/plugins@v$CNI_PLUGINS_VERSION" ;;
  esac
}

# -ldflags as each project's own release build sets them (Makefile / release workflow).
ldflags_of() {
  local bv=github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion
  case "$1" in
    etcd*) echo "$LDFLAGS_ETCD" ;;
    coredns) echo "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_COMMIT" ;;
    flanneld) echo "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=v$FLANNEL_VERSION -extldflags -static" ;;
    flannel-install-conf) echo "" ;;
    cni-flannel) echo "-extldflags -static -X $bv=v$CNI_FLANNEL_SRC_VERSION" ;;
    cni-*) echo "-extldflags -static -X $bv=v$CNI_PLUGINS_VERSION" ;;
    *) echo "$LDFLAGS_K8S" ;;
  esac
}

# flanneld is cgo on amd64 upstream (its UDP backend's C proxy), linked -static; everything else is pure Go.
cgo_of() { if [[ "$1" == flanneld ]]; then echo 1; else echo 0; fi; }

out_of() {  # where a name's binary lives
  case "$1" in cni-*) echo "$CNI_BIN/${1#cni-}" ;; *) echo "$BIN/$1" ;; esac
}

stamp_of() {  # what a cached binary must have been built from
  local s="name=$1 kubernetes=v$VERSION etcd=v$ETCD_VERSION go=$GO_VERSION cgo=$(cgo_of "$1")" moddir pkg addon
  read -r moddir pkg <<<"$(build_spec "$1")"
  s+=" gomod=$(sha256sum <"$moddir/go.mod.seed" | cut -c1-16)"
  s+=" ldflags=$(sha256sum <<<"$(ldflags_of "$1")" | cut -c1-16)"
  if [[ "$1" == refcheck ]]; then
    s+=" src=$(cat "$SRC/k8s/refcheck/"*.go | sha256sum | cut -c1-16)"   # the copy being built
  fi
  [[ "$1" != flanneld ]] || s+=" src=$(sha256sum <"$SRC/flannel/cmd/flanneld/main.go" | cut -c1-16)"
  addon="$(addon_of "$1")"
  [[ -z "$addon" ]] || s+=" addon=$addon"
  echo "$s"
}

verify() {  # verify NAME PATH: run it and check the version it reports; static check
  local name="$1" bin="$2" out want
  case "$name" in
    etcd)    out="$("$bin" --version)"; want="etcd Version: $ETCD_VERSION" ;;
    etcdctl) out="$("$bin" version)"; want="etcdctl version: $ETCD_VERSION" ;;
    etcdutl) out="$("$bin" version)"; want="etcdutl version: $ETCD_VERSION" ;;
    kubectl) out="$("$bin" version --client)"; want="Client Version: v$VERSION" ;;
    kubeadm) out="$("$bin" version -o short)"; want="v$VERSION"
             [[ "$out" == "$want" ]] || { echo "kubeadm version -o short: '$out' != '$want'" >&2; return 1; } ;;
    refcheck) out="$("$bin" version)"; want="v$VERSION"
             [[ "$out" == "$want" ]] || { echo "refcheck version: '$out' != '$want'" >&2; return 1; } ;;
    coredns) out="$("$bin" -version)"; want="CoreDNS-$COREDNS_VERSION" ;;
    flanneld) out="$("$bin" --version 2>&1)"; want="v$FLANNEL_VERSION"
             [[ "$out" == "$want" ]] || { echo "flanneld --version: '$out' != '$want'" >&2; return 1; } ;;
    flannel-install-conf)   # no version flag: its usage line, and the module it was built from
             out="$("$bin" 2>&1 || true)"; want="usage:"
             "$GO" version -m "$bin" | grep -qE "^[[:space:]]+mod[[:space:]]+github.com/flannel-io/flannel[[:space:]]+v$FLANNEL_VERSION" \
               || { echo "$name: not built from flannel v$FLANNEL_VERSION" >&2; return 1; } ;;
    cni-*)   # skel.PluginMain prints "CNI <plugin> plugin <BuildVersion>" when CNI_COMMAND is unset
             out="$(env -u CNI_COMMAND "$bin" </dev/null 2>&1 || true)"
             want="CNI ${name#cni-} plugin v$( [[ "$name" == cni-flannel ]] && echo "$CNI_FLANNEL_SRC_VERSION" || echo "$CNI_PLUGINS_VERSION")"
             CNI_COMMAND=VERSION "$bin" </dev/null | jq -e '.supportedVersions | index("0.3.1")' >/dev/null \
               || { echo "$name: CNI VERSION does not list 0.3.1" >&2; return 1; } ;;
    *)       out="$("$bin" --version)"; want="Kubernetes v$VERSION"
             [[ "$out" == "$want" ]] || { echo "$name --version: '$out' != '$want'" >&2; return 1; } ;;
  esac
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "$name reports:"$'\n'"$out"$'\n'"expected to contain: $want" >&2; return 1
  fi
  if ! "$GO" version -m "$bin" | grep -q "CGO_ENABLED=$(cgo_of "$name")"; then
    echo "$name was not built with CGO_ENABLED=$(cgo_of "$name")" >&2; return 1
  fi
  if file -b "$bin" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "$name is dynamically linked" >&2; return 1
  fi
  echo "$(head -n1 <<<"$out")"
}

need_k8s=0 need_etcd=0 need_coredns=0 need_flannel=0 need_cni=0 need_cni_flannel=0
for n in "${SELECTED[@]}"; do
  case "$n" in
    etcd|etcdctl|etcdutl) need_etcd=1 ;;
    coredns) need_coredns=1 ;;
    flanneld|flannel-install-conf) need_flannel=1 ;;
    cni-flannel) need_cni_flannel=1 ;;
    cni-*) need_cni=1 ;;
    *) need_k8s=1 ;;
  esac
done
((need_etcd)) && gen_etcd_module
((need_k8s)) && gen_k8s_module
((need_coredns)) && gen_dep_module "$SRC/coredns" github.com/coredns/coredns "$COREDNS_VERSION"
if ((need_flannel)); then
  gen_dep_module "$SRC/flannel" github.com/flannel-io/flannel "$FLANNEL_VERSION"
  # flanneld is flannel's own main.go minus one blank import: the TencentCloud VPC backend, whose SDK module
  # (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc) the Go module proxy does not serve (403).
  flannel_main="$(mod_field "github.com/flannel-io/flannel@v$FLANNEL_VERSION" Dir)/main.go"
  mkdir -p "$SRC/flannel/cmd/flanneld"
  grep -v '^[[:space:]]*_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"$' "$flannel_main" \
    | write_if_changed "$SRC/flannel/cmd/flanneld/main.go" || true
  [[ "$(grep -c tencentvpc "$SRC/flannel/cmd/flanneld/main.go")" == 0 ]] || die "could not drop tencentvpc from $flannel_main"
fi
((need_cni)) && gen_dep_module "$SRC/cni" github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION"
# built against the CNI library of CNI spec 1.0 (what flannel-io/cni-plugin did when it forked this plugin):
# kube-flannel.yml's cni-conf.json says cniVersion 1.0.0, which v0.9.1's own library (spec <= 0.4.0) refuses
((need_cni_flannel)) && gen_dep_module "$SRC/cni-flannel" github.com/containernetworking/plugins \
  "$CNI_FLANNEL_SRC_VERSION" github.com/containernetworking/cni "$CNI_FLANNEL_LIBCNI_VERSION"
COREDNS_COMMIT="v$COREDNS_VERSION"   # upstream: `git describe --dirty --always` (the tag, on a release)
if ((need_coredns)); then
  c="$(jq -r '.Origin.Hash // ""' "$(mod_field "github.com/coredns/coredns@v$COREDNS_VERSION" Info)")"
  [[ -z "$c" ]] || COREDNS_COMMIT="${c:0:7}"
fi

LDFLAGS_K8S="$(k8s_ldflags)"
LDFLAGS_ETCD="-s -w"
declare -A RESULT=()
status=0
# A binary is in bin/ only once verified (built as .NAME.tmp.PID, verified, then renamed); it counts
# as cached only with a matching stamp, written after the rename.
for n in "${SELECTED[@]}"; do
  out="$(out_of "$n")" stampf="$STAMPS/$n" want_stamp="$(stamp_of "$n")"
  read -r moddir pkg <<<"$(build_spec "$n")"
  t="$(now)"
  if [[ -x "$out" && -f "$stampf" && "$(cat "$stampf")" == "$want_stamp" ]]; then
    if line="$(verify "$n" "$out")"; then
      el="$(secs "$t" "$(now)")"; RESULT[$n]="cached ${el}s  $line"; log "$n: cached: $line"
      continue
    fi
    log "$n: cached binary fails verification; rebuilding"
  fi
  log "$n: building $pkg in $moddir"
  rm -f "$stampf"
  tmp="$(dirname "$out")/.$n.tmp.$$"; TMP_FILES+=("$tmp")
  ld="$(ldflags_of "$n")"
  if ! (cd "$moddir" && CGO_ENABLED="$(cgo_of "$n")" nice -n 10 \
          "$GO" build -mod=mod -trimpath -buildvcs=false -ldflags "$ld" -o "$tmp" "$pkg"); then
    rm -f "$tmp"; el="$(secs "$t" "$(now)")"
    RESULT[$n]="build FAILED after ${el}s"; log "$n: build FAILED after ${el}s"; status=1
    continue
  fi
  el="$(secs "$t" "$(now)")"
  if ! line="$(verify "$n" "$tmp")"; then
    rm -f "$tmp"
    RESULT[$n]="FAILED verification after ${el}s"; log "$n: FAILED verification"; status=1
    continue
  fi
  mv -f "$tmp" "$out"
  echo "$want_stamp" >"$stampf.tmp.$$" && mv -f "$stampf.tmp.$$" "$stampf"
  RESULT[$n]="built ${el}s  $line"
  log "$n: built in ${el}s: $line"
done
TOTAL="$(secs "$T0" "$(now)")"

echo
echo "reference binaries v$VERSION (etcd $ETCD_VERSION) in $BIN (CNI plugins in $CNI_BIN):"
for n in "${SELECTED[@]}"; do printf '  %-24s %s\n' "$n" "${RESULT[$n]}"; done
echo "  total: ${TOTAL}s"
exit "$status"
}
