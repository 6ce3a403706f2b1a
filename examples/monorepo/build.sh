#!/bin/sh
# Build one service's image reproducibly with Nix and push it to $MONOSHIP_IMAGE.
# Usage: ./build.sh banana|orange
# Writes the pushed digest to ./digest, and to /dev/termination-log when that exists
# (inside a Kubernetes build pod).
set -eu

service="${1:?usage: build.sh SERVICE}"
: "${MONOSHIP_IMAGE:?MONOSHIP_IMAGE must be set to registry/repository:tag}"
tls_verify="${REGISTRY_TLS_VERIFY:-true}"

case "$service" in
  banana|orange) ;;
  *) echo "unknown service: $service" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"
nix="nix --extra-experimental-features nix-command --extra-experimental-features flakes"

# The image tarball is a pure function of the flake inputs (flake.lock) and the
# service's sources: Nix sets every timestamp to 1970-01-01.
$nix build --no-link --print-out-paths ".#${service}-image" > .image-path
image_tar="$(cat .image-path)"
rm -f .image-path

$nix run nixpkgs#skopeo -- copy \
  --dest-tls-verify="$tls_verify" \
  --digestfile digest \
  "docker-archive:${image_tar}" \
  "docker://${MONOSHIP_IMAGE}"

echo "pushed ${MONOSHIP_IMAGE}@$(cat digest)"
if [ -w /dev/termination-log ]; then
  cat digest > /dev/termination-log
fi
