#!/usr/bin/env bash
# The main job on the bundled example: build celeroot, validate the example manifests,
# then play a pull-request check: scaffold a config repository with `celeroot init`,
# commit, change it, commit again, and print the plan in text and Markdown.
#
# This milestone has no live state yet: reconciling into Redis arrives with the Redis
# milestone, and this script will then start a throwaway redis-server and reconcile.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "error: cargo is not installed (install Rust with rustup: https://rustup.rs)" >&2; exit 1; }
cargo build --release --locked --quiet
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/celeroot"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "celeroot validate --worktree   (the bundled example in manifests/)"
"$bin" validate --worktree

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo="$work/fleet-config"

step "celeroot init $repo"
"$bin" init "$repo" >/dev/null
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -qm "Initial celeroot config"
echo "scaffolded and committed $(git -C "$repo" ls-files | wc -l) files"

step "an operator adds web03, raises webserver concurrency and retires a schedule"
cat > "$repo/manifests/hosts/web03.yaml" <<'YAML'
apiVersion: celeroot.io/v1
kind: Host
metadata:
  name: web03
  labels:
    env: production
    zone: fra1-c
    tier: frontend
spec:
  address: 10.0.1.13
  roles: [webserver]
YAML
sed -i 's/concurrency: 4/concurrency: 6/' "$repo/manifests/roles/webserver.yaml"
git -C "$repo" rm -q manifests/schedules/cache-warmup.yaml
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -qm "Add web03"

step "celeroot diff --from HEAD~1   (exit 2 means: there are changes)"
set +e
(cd "$repo" && "$bin" diff --from HEAD~1)
code=$?
set -e
echo "exit status: $code"
[ "$code" = 2 ] || { echo "error: expected exit status 2" >&2; exit 1; }

step "celeroot diff --from HEAD~1 -o markdown   (ready for a PR comment)"
(cd "$repo" && "$bin" diff --from HEAD~1 -o markdown) || true

step "celeroot diff --from HEAD   (no changes: exit 0)"
(cd "$repo" && "$bin" diff --from HEAD)
echo "exit status: $?"
