#!/usr/bin/env bash
# The promotion bench on a fresh Debian machine: installs what the tests install (the real
# registry and the image tools), then runs `cargo bench --bench promotion`. The table goes to
# stdout and to target/bench/promotion.json; the controller's log to target/bench/controller.log.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh

cargo bench --locked --bench promotion "$@"
