#!/usr/bin/env bash
# Creates (or reuses) the virtualenv of the Python peer (benches/peers/requirements.txt)
# and prints its python. Run by `cargo bench --bench fleet_scale` (part e).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/prereqs.sh
req="benches/peers/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-12)
dir="$HOME/.cache/celeroot/peer-$hash"
if ! "$dir/bin/python" -c 'import celery, redbeat, redis, yaml, pydantic' >/dev/null 2>&1; then
  ensure_packages python3:python3 >&2
  if ! python3 -m venv --help >/dev/null 2>&1; then
    ensure_packages venv-missing:python3-venv >&2
  fi
  echo "creating the Python peer's environment in $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
fi
echo "$dir/bin/python"
