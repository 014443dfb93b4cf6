#!/usr/bin/env bash
# The main job on the bundled example: reconcile the example manifests into a throwaway
# local Redis and walk through what an operator does every day:
#   validate → diff → reconcile → an out-of-band edit → drift → reconcile heals it →
#   commit a new host → diff → reconcile → status → history.
# It starts its own redis-server on a free loopback port in a temp dir and stops it on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
ensure_packages cc:gcc pkg-config:pkg-config /usr/include/openssl/ssl.h:libssl-dev redis-server:redis-server redis-cli:redis-tools git:git
require_cargo

cargo build --release --locked --quiet
bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/celeroot"
root=$(pwd)

work=$(mktemp -d)
redis_pid=
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 16379)
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export CELEROOT_REDIS_URL="redis://127.0.0.1:$port/0"
export CELEROOT_ACTOR="demo@$(hostname 2>/dev/null || echo localhost)"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Runs celeroot and shows its exit status (2 means "changes" or "drift", not an error).
c() {
  set +e
  (cd "$repo" && "$bin" "$@")
  local code=$?
  set -e
  echo "[exit status: $code]"
  [ "$code" -le 2 ] || exit "$code"
  return 0
}
commit() { git -C "$repo" add -A && git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -qm "$1"; }

repo="$work/fleet-config"
step "a config repository from the bundled manifests/ (redis-server on 127.0.0.1:$port)"
mkdir -p "$repo"
git -C "$repo" init -q
cp -r "$root/manifests" "$repo/"
commit "Initial celeroot config"
git -C "$repo" log --oneline

step "celeroot validate"
c validate

step "celeroot diff   (against the live state: Redis is empty, so everything is new)"
c diff | tail -n 12

step "celeroot reconcile"
c reconcile | tail -n 4

step "celeroot reconcile   (again: nothing to do, only an event is recorded)"
c reconcile | tail -n 2

step "an out-of-band edit: someone bumps web01's concurrency with redis-cli"
redis-cli -p "$port" HSET 'celeroot:{production}:worker:web01' concurrency 64

step "celeroot drift   (2 = drift; no agents and no beat run in this demo, so every host lacks a heartbeat and the schedules do not fire)"
c drift

step "celeroot reconcile   (heals the edit: a corrective write)"
c reconcile | tail -n 2
redis-cli -p "$port" HGET 'celeroot:{production}:worker:web01' concurrency

step "commit a new host, web03"
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
  address: 192.0.2.13
  roles: [webserver]
YAML
commit "Add web03"

step "celeroot diff   (live → HEAD)"
c diff

step "celeroot reconcile"
c reconcile | tail -n 2

step "celeroot status"
c status

step "celeroot history"
c history
