#!/usr/bin/env bash
# Creates (or reuses) the virtualenv of a peer and prints its python:
# `setup.sh` for the Python registration peer (benches/peers/requirements.txt, run by
# `cargo bench --bench fleet_scale`, part e), `setup.sh ansible` for the Ansible peer of
# `cargo bench --bench deploy_fleet` (benches/peers/ansible-requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/prereqs.sh
case "${1:-python}" in
  python) req="benches/peers/requirements.txt"; name=peer ;;
  ansible) req="benches/peers/ansible-requirements.txt"; name=ansible ;;
  *) echo "usage: $0 [python|ansible]" >&2; exit 2 ;;
esac
hash=$(sha256sum "$req" | cut -c1-12)
dir="$HOME/.cache/celeroot/$name-$hash"
if [ ! -f "$dir/.complete" ]; then
  ensure_packages python3:python3 >&2
  if ! python3 -m venv --help >/dev/null 2>&1; then
    ensure_packages venv-missing:python3-venv >&2
  fi
  echo "creating the $name peer's environment in $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$dir/.complete"
fi
echo "$dir/bin/python"
