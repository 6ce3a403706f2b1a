#!/usr/bin/env bash
# monoship's main job on the seed scenario, on a fresh Debian machine with a Rust toolchain:
# installs the registry and image tools the demo uses, then runs examples/demo.rs (the real
# controller, an in-process API server, a job runner and a real local registry).
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

exec cargo run --quiet --locked --example demo
