#!/usr/bin/env bash
# CI step after `make test` (called by .ci/run): install the container tool chain from Debian if
# missing (idempotent), then run the container test (tests/containers, marker `containers`):
# `make images` (cached layers when nothing changed) and the federation in containers.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(podman buildah runc mmdebstrap uidmap iptables slirp4netns fuse-overlayfs netavark aardvark-dns)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> containers: installing ${missing[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  # --no-install-recommends keeps crun out: it fails on hosts with hybrid cgroups; runc works
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
start=$SECONDS
make images
built=$SECONDS
rc=0
SAIP_CONTAINERS=1 .venv/bin/pytest tests/containers -m containers -q -p no:cacheprovider || rc=$?
echo "==> containers: images $((built - start)) s, deployment test $((SECONDS - built)) s (exit $rc)"
exit "$rc"
