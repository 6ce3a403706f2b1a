#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real registry and image tools
# the tests use, then runs every Rust test and the Helm chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in docker-registry skopeo umoci git; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-registry skopeo umoci git >/dev/null
fi

cargo test --workspace --locked
bash tests/chart/run.sh
