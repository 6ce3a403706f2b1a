#!/usr/bin/env bash
# Unpacks the envtest binaries (kube-apiserver, kube-controller-manager, etcd) that a checkout
# of shared/ keeps beside this repository, ../shared/envtest/<version>/*.xz, after checking them
# against SHA256SUMS, into target/envtest/<version>, and prints that directory for
# KUBEBUILDER_ASSETS. Prints nothing when ../shared/envtest is absent (a fresh clone): the
# real-server tests then say they are skipped and how to get the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${MONOSHIP_ENVTEST_VERSION:-1.36.3}"
src="../shared/envtest/$version"
dest="$PWD/target/envtest/$version"
[ -d "$src" ] || exit 0

if ! cmp -s "$src/SHA256SUMS" "$dest/SHA256SUMS" 2>/dev/null; then
  (cd "$src" && sha256sum --quiet -c SHA256SUMS) >&2
  mkdir -p "$dest"
  for file in "$src"/*.xz; do
    name="$(basename "$file" .xz)"
    xz -dc "$file" > "$dest/$name.partial"
    chmod +x "$dest/$name.partial"
    mv "$dest/$name.partial" "$dest/$name"
  done
  rm -f "$dest/SHA256SUMS"
  cat "$src/SHA256SUMS" > "$dest/SHA256SUMS"
fi
echo "$dest"
