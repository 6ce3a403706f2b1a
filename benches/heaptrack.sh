#!/bin/sh
# Runs a command under heaptrack's allocation recorder in the same process (exec, so its pid
# and its VmHWM stay its own), writing the raw trace to $HEAPTRACK_DIR/heaptrack.<pid>.raw
# (default target/bench). For the controller of the bench:
#
#   MONOSHIP_BENCH_WRAP="$PWD/benches/heaptrack.sh" cargo bench --bench promotion
#   /usr/lib/heaptrack/libexec/heaptrack_interpret < target/bench/heaptrack.<pid>.raw \
#     | gzip > target/bench/heaptrack.<pid>.gz
#   heaptrack_print --print-peaks --peak-limit 40 target/bench/heaptrack.<pid>.gz
#
# The recorder slows every allocation down: timings of such a run mean nothing.
set -eu
lib="$(dirname "$(readlink -f "$(command -v heaptrack)")")/../lib/heaptrack"
dir="${HEAPTRACK_DIR:-$(dirname "$0")/../target/bench}"
mkdir -p "$dir"
export LD_PRELOAD="$lib/libheaptrack_preload.so${LD_PRELOAD:+:$LD_PRELOAD}"
export DUMP_HEAPTRACK_OUTPUT="$dir/heaptrack.$$.raw"
exec "$@"
