#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real registry and image tools
# the tests use, then runs every Rust test and the Helm chart tests.
#
# The real-server tests (tests/real) run against the envtest binaries in KUBEBUILDER_ASSETS;
# when it is unset, they are unpacked from ../shared/envtest if that exists, and otherwise
# those tests say they are skipped and how to get the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh
sh tests/chart/install-deps.sh
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  assets="$(bash tests/envtest-assets.sh)"
  [ -z "$assets" ] || export KUBEBUILDER_ASSETS="$assets"
fi

cargo test --workspace --locked
bash tests/chart/run.sh
