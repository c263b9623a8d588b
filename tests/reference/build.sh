#!/usr/bin/env bash
# The test suite's reference binaries: kubeboot's own bundle binary builder (kubeboot/bundle/build.sh, same flags,
# same cache), plus refcheck, the tests' Go helper, whose sources live here.
#
# Usage: tests/reference/build.sh [--only name,name] [K8S_VERSION]      (default 1.37.2)
#        (names and details: kubeboot/bundle/build.sh --help)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KUBEBOOT_REFCHECK_SRC="$HERE/refcheck"
exec bash "$HERE/../../kubeboot/bundle/build.sh" "$@"
