#!/usr/bin/env bash
# Installs, with apt-get, the real registry and image tools that the tests, the demo and the
# bench run against, when any is missing. Uses sudo when not root.
set -euo pipefail

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
