#!/usr/bin/env bash
# Runs the whole test suite from a fresh Debian machine: installs what the tests need,
# then formatting, lints, unit, integration and property tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prerequisites. This milestone needs only the Rust toolchain and a C compiler (libgit2
# is vendored). Later milestones add redis-server, openssh-server, rsync and a Python
# venv with Celery here, so the same command keeps setting everything up.
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need cc || missing+=(gcc)
need pkg-config || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}"; else sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"; fi
fi
need cargo || { echo "error: cargo is not installed (install Rust with rustup: https://rustup.rs)" >&2; exit 1; }
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
