#!/usr/bin/env bash
# Build a deterministic OCI image from a directory with umoci and push it with skopeo.
#
# Usage: build-image.sh [--layers N] [--image HOST/REPO:TAG] [--digestfile FILE]
#                       [--creds USER:PASSWORD] SRC_DIR
#
# The image reference defaults to $MONOSHIP_IMAGE (set by monoship on the build Job). The
# pushed manifest digest is printed on stdout, and written to --digestfile, which defaults to
# $MONOSHIP_DIGEST_FILE (set by monoship on the build container: its terminationMessagePath,
# through which monoship learns what the build pushed).
#
# Determinism: the same SRC_DIR content (names, bytes, executable bit, symlinks) gives the same
# digest on every run, anywhere on this machine. Every timestamp is fixed (file mtimes, the
# config's `created`), history is off, permissions are normalized, and entries are sorted
# (LC_ALL=C). The top-level entries of SRC_DIR, sorted, are spread over N layers (default 1)
# round-robin; each layer puts its entries under /app. Empty layers are skipped.
set -euo pipefail

layers=1
image="${MONOSHIP_IMAGE:-}"
digestfile="${MONOSHIP_DIGEST_FILE:-}"
creds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --digestfile) digestfile="$2"; shift 2 ;;
    --creds) creds=(--dest-creds "$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "build-image.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 1 ]; then
  echo "usage: build-image.sh [--layers N] [--image HOST/REPO:TAG] [--digestfile FILE] SRC_DIR" >&2
  exit 2
fi
src="$1"
if [ -z "$image" ]; then
  echo "build-image.sh: no image: set MONOSHIP_IMAGE or pass --image" >&2
  exit 2
fi
if [ ! -d "$src" ]; then
  echo "build-image.sh: $src is not a directory" >&2
  exit 2
fi
case "$layers" in ''|*[!0-9]*|0) echo "build-image.sh: --layers must be a positive integer" >&2; exit 2 ;; esac

export LC_ALL=C
export SOURCE_DATE_EPOCH=0
export TZ=UTC
epoch="@${SOURCE_DATE_EPOCH}"
created="1970-01-01T00:00:00Z"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
layout="$work/oci"

umoci init --layout "$layout" >&2
umoci new --image "$layout:build" >&2

mapfile -t entries < <(cd "$src" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)

for ((layer = 0; layer < layers; layer++)); do
  stage="$work/layer$layer"
  mkdir -p "$stage/app"
  count=0
  for ((i = layer; i < ${#entries[@]}; i += layers)); do
    cp -a -- "$src/${entries[$i]}" "$stage/app/"
    count=$((count + 1))
  done
  if [ "$count" -eq 0 ]; then
    continue
  fi
  # Normalize what tar records: ownership, permissions (keep only the executable bit), times.
  chown -R 0:0 "$stage" 2>/dev/null || true
  find "$stage" -type d -exec chmod 0755 {} +
  find "$stage" -type f -perm /111 -exec chmod 0755 {} +
  find "$stage" -type f ! -perm /111 -exec chmod 0644 {} +
  find "$stage" -depth -exec touch -h -d "$epoch" {} +
  umoci insert --image "$layout:build" --no-history "$stage/app" /app >&2
done

umoci config --image "$layout:build" --no-history --created "$created" \
  --config.workingdir /app >&2

digest_out="$work/digest"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false --digestfile "$digest_out" \
  "${creds[@]}" "oci:$layout:build" "docker://$image" >&2
digest="$(cat "$digest_out")"
if [ -n "$digestfile" ]; then
  printf '%s' "$digest" > "$digestfile"
fi
printf '%s\n' "$digest"
