#!/usr/bin/env bash
# The promotion bench on a fresh Debian machine: installs what the tests install (the real
# registry and the image tools), then runs `cargo bench --bench promotion`. The table goes to
# stdout and to target/bench/promotion.json; the controller's log to target/bench/controller.log.
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

cargo bench --locked --bench promotion "$@"
