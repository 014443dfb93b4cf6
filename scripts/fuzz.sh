#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted input (tests/fuzz/main.rs): the manifest loader,
# the cl.yaml importer, the webhook signature and payload parser, and the Redis URL
# parser, each for SECONDS (default 600). Findings are saved under target/fuzz-findings/.
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET,...]     e.g. ./scripts/fuzz.sh 900 manifest,import
#
# CI runs the same harness for 30 s per target as part of ./scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
require_cargo
export CELEROOT_FUZZ_SECONDS="${1:-600}"
if [ -n "${2:-}" ]; then export CELEROOT_FUZZ_TARGETS="$2"; fi
# Optimised: more inputs per second than the debug build of the test suite.
exec cargo test --release --locked --test fuzz
