#!/usr/bin/env bash
# Runs the whole test suite from a fresh Debian machine: installs what the tests need,
# then formatting, lints, unit, integration and property tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prerequisites: a C compiler (libgit2 is vendored) and redis-server (every Redis test
# starts its own on a free loopback port). Later milestones add openssh-server, rsync and
# a Python venv with Celery here, so the same command keeps setting everything up.
. scripts/lib/prereqs.sh
ensure_packages cc:gcc redis-server:redis-server redis-cli:redis-tools
require_cargo
rustup component add rustfmt clippy >/dev/null 2>&1 || true

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Snapshot tests never write new snapshots here: a missing or changed snapshot fails.
export INSTA_UPDATE=no

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test (unit, integration, property tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$log"
# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
