#!/bin/sh
# Install the Python packages that render the chart with Helm (tests/chart/render.py): the chart
# tests use them, and so does the real-server RBAC test (tests/real/rbac.rs).
# Works with the system python3 (3.11+) and pip; helm-sdkpy asks for Python 3.12 but
# works on 3.11, hence --ignore-requires-python.
set -eu

python="${PYTHON:-python3}"
pip_install() {
  # Debian's python3 marks itself externally managed (PEP 668); inside a venv or
  # pyenv no extra flag is needed.
  if "$python" -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null; then
    return 0
  fi
  "$python" -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$@"
}

pip_install --ignore-requires-python helm-sdkpy pyyaml jsonschema
