#!/usr/bin/env bash
# monoship's main job on the seed scenario, on a fresh Debian machine with a Rust toolchain:
# installs the registry and image tools the demo uses, then runs examples/demo.rs (the real
# controller, an in-process API server, a job runner and a real local registry).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh

exec cargo run --quiet --locked --example demo
