#!/bin/sh
# Install the Python dependencies of the chart tests and run them.
set -eu
cd "$(dirname "$0")/../.."

sh tests/chart/install-deps.sh
exec "${PYTHON:-python3}" tests/chart/test_chart.py
