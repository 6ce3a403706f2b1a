#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real registry and image tools
# the tests use, then runs every Rust test and the Helm chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh

cargo test --workspace --locked
bash tests/chart/run.sh
