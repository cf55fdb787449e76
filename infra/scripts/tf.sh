#!/usr/bin/env bash
# Run terraform in one module directory with the project's own CLI configuration: providers come
# only from the local filesystem mirror (never the registry), and all state Terraform keeps between
# runs (.terraform data dir, plugin cache, CLI config) lives under $SAIP_TF_RUN_DIR (default .run/tf),
# never in the user's home.
#
#   infra/scripts/tf.sh --mirror            print the provider mirror in use; exit 3 if there is none
#   infra/scripts/tf.sh DIR ARGS...         terraform -chdir=DIR ARGS... (exit 3 if no mirror)
#
# The mirror is $TF_PROVIDER_MIRROR if set, else the first folder named tf-plugins at depth <= 2
# under / (where the image keeps hashicorp/aws).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
run_dir="${SAIP_TF_RUN_DIR:-$root/.run/tf}"

mirror="${TF_PROVIDER_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror="$(find / -maxdepth 2 -type d -name tf-plugins 2>/dev/null | sort | head -n 1 || true)"
fi
if [[ -z "$mirror" || ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]]; then
  echo "tf.sh: no Terraform provider mirror with hashicorp/aws found (set TF_PROVIDER_MIRROR to a filesystem mirror folder)" >&2
  exit 3
fi
if [[ "${1:-}" == "--mirror" ]]; then
  echo "$mirror"
  exit 0
fi
if ! command -v terraform >/dev/null 2>&1; then
  echo "tf.sh: terraform is not installed" >&2
  exit 3
fi

dir="$1"
shift
mkdir -p "$run_dir/plugin-cache" "$run_dir/data"
rc="$run_dir/terraformrc"
sed -e "s#@MIRROR@#$mirror#" -e "s#@PLUGIN_CACHE@#$run_dir/plugin-cache#" "$root/infra/terraformrc.in" > "$rc.tmp.$$"
mv -f "$rc.tmp.$$" "$rc"

abs_dir="$(cd "$dir" && pwd)"
slug="${abs_dir#"$root"/}"
slug="${slug//\//_}"

export TF_CLI_CONFIG_FILE="$rc"
export TF_DATA_DIR="$run_dir/data/$slug"
export TF_IN_AUTOMATION=1
export TF_INPUT=0
export CHECKPOINT_DISABLE=1
unset TF_PLUGIN_CACHE_DIR
exec terraform -chdir="$abs_dir" "$@"
