#!/usr/bin/env bash
# `make images`: base image (Debian rootfs by mmdebstrap, built once), build context (the wheels of
# the project's lock), the runtime image and the SuperLink / SuperNode / ingestion images, and a
# CycloneDX SBOM per image under $IMAGES_DIR/sbom/. Builds run with --network none: nothing is
# fetched while building, so no credential or proxy setting is needed inside a build.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${CONTAINER_ENGINE:-podman}
out=${IMAGES_DIR:?IMAGES_DIR not set}
py=${PYTHON_BIN:-.venv/bin/python}
base=${SAIP_BASE_IMAGE:-localhost/saip/base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}
version=0.1.0
mkdir -p "$out/sbom"
t0=$SECONDS
say() { printf '==> images: %s (%ss)\n' "$*" "$((SECONDS - t0))"; }

if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
  if [ "$base" != "localhost/saip/base:bookworm" ]; then
    echo "images: base image $base not found (pull or build it first)" >&2; exit 1
  fi
  command -v mmdebstrap >/dev/null || { echo "images: mmdebstrap not installed" >&2; exit 1; }
  say "building the Debian $suite rootfs with mmdebstrap (once)"
  rm -f "$out/rootfs.tar"
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,ca-certificates,tini \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$out/rootfs.tar"
  "$engine" import --change 'CMD ["/bin/bash"]' "$out/rootfs.tar" "$base" >/dev/null
  rm -f "$out/rootfs.tar"
fi
say "base $base ready"

digests=$("$py" containers/ctr.py context --out "$out")
deps=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["deps"])' "$digests")
project=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["project"])' "$digests")
say "context: wheels of the lock (deps $deps, project $project)"

build() {  # build TAG CONTAINERFILE CONTEXT [ARGS...]
  local tag=$1 file=$2 ctx=$3; shift 3
  "$engine" build --network none -f "$file" -t "$tag" "$@" "$ctx" >"$out/build-$(basename "$(dirname "$file")").log" 2>&1 \
    || { tail -30 "$out/build-$(basename "$(dirname "$file")").log" >&2; echo "images: building $tag failed" >&2; exit 1; }
}
build "localhost/saip/runtime:$version" containers/runtime/Containerfile "$out/context" \
  --build-arg "BASE_IMAGE=$base" --build-arg "DEPS_LOCK_SHA256=$deps" \
  --build-arg "PROJECT_LOCK_SHA256=$project" --build-arg "SAIP_VERSION=$version"
say "runtime image built"
for role in superlink supernode ingest; do
  build "localhost/saip/$role:$version" "containers/$role/Containerfile" "containers/$role" \
    --build-arg "RUNTIME_IMAGE=localhost/saip/runtime:$version"
done
say "superlink, supernode, ingest images built"
for role in runtime superlink supernode ingest; do
  "$py" containers/ctr.py --engine "$engine" sbom "localhost/saip/$role:$version" \
    "$out/sbom/$role.cdx.json" --context "$out/context"
done
"$engine" images --filter reference='localhost/saip/*' | tee "$out/images.txt"
say "done"
