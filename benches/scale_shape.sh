#!/usr/bin/env bash
# Issue 18, target 7: the fleet_scale benchmarks at 1k, 10k and 50k hosts (roles and
# schedules in the same proportions: 1 role per 50 hosts, 2 schedules per host), to show
# how time and memory grow with the fleet. Prints each size's figures, then a table.
#
# Run: bash benches/scale_shape.sh [SIZES...]     (default: 1000 10000 50000)
# Needs what fleet_scale needs (redis-server, redis-benchmark: scripts/test.sh installs
# them). The 50k run takes about 15 minutes on 2 cores and needs about 4 GB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 50000)
out=$(mktemp -d)
for n in "${sizes[@]}"; do
  echo "== $n hosts" >&2
  cargo bench -q --bench fleet_scale -- --hosts "$n" --roles $((n / 50)) --schedules $((n * 2)) \
    --only acdef --runs 1 --no-peer | tee "$out/$n.txt" >&2
done
# One row per size: the figures that show the shape.
pick() {
  local v
  v=$(grep -m1 -F "$2" "$1" | grep -oE 'median [0-9.]+ [a-zA-Z/]+' | head -1 | cut -d' ' -f2-) || true
  echo "${v:--}"
}
printf '\n| hosts | objects | a. validate | c. fast no-op | c. full no-op | d. one-file change (daemon) | e. first reconcile | f. RSS validate | f. RSS first reconcile |\n|---|---|---|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
  f="$out/$n.txt"
  objects=$(grep -m1 -oE '\(([0-9]+) objects, one per file' "$f" | grep -oE '[0-9]+' || echo "-")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$objects" \
    "$(pick "$f" 'a. cold')" \
    "$(pick "$f" 'the fast no-op')" \
    "$(pick "$f" 'without the settled record')" \
    "$(pick "$f" 'd. one-file change')" \
    "$(pick "$f" 'e. first')" \
    "$(pick "$f" 'max RSS of a (validate)')" \
    "$(pick "$f" 'max RSS of e (first reconcile)')"
done
