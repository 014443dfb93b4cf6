#!/usr/bin/env bash
# Runs the whole test suite from a fresh Debian machine: installs what the tests need,
# then formatting, lints, unit, integration and property tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prerequisites: a C compiler (libgit2 is vendored), redis-server (every Redis test starts
# its own on a free loopback port) and Python 3 with venv (a cached virtualenv with
# Celery). Later milestones add openssh-server and rsync here.
. scripts/lib/prereqs.sh
. scripts/lib/pyenv.sh
ensure_packages cc:gcc pkg-config:pkg-config /usr/include/openssl/ssl.h:libssl-dev redis-server:redis-server redis-cli:redis-tools /usr/sbin/sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client rsync:rsync openssl:openssl curl:curl /usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server
require_cargo
# A virtualenv with the pinned Celery stack (celery, celery-redbeat, redis) for the tests
# that run real Celery workers and beat; exports CELEROOT_PYTHON.
ensure_pyenv
rustup component add rustfmt clippy >/dev/null 2>&1 || true

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Snapshot tests never write new snapshots here: a missing or changed snapshot fails.
export INSTA_UPDATE=no
# The fuzz harness (tests/fuzz/main.rs) runs each target this long; scripts/fuzz.sh runs
# it for longer.
export CELEROOT_FUZZ_SECONDS="${CELEROOT_FUZZ_SECONDS:-30}"

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
