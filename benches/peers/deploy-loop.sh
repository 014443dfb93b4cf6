#!/usr/bin/env bash
# The plain-loop peer of `cargo bench --bench deploy_fleet`: for every host at once,
# `rsync --archive --checksum --delete` the worker tree into TARGET/current, then run the
# restart command over ssh. No releases, no atomic switch, no health check, no rollback:
# the least a deploy can do. Usage: deploy-loop.sh SRC KEY KNOWN_HOSTS USER HOSTS_FILE,
# where HOSTS_FILE has one `ADDRESS PORT TARGET` line per host. Prints the files rsync
# sent (summed); exits non-zero when a host failed.
set -euo pipefail
src=$1 key=$2 known=$3 user=$4 hosts=$5
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$known" -o LogLevel=ERROR -i "$key" -o IdentitiesOnly=yes)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
while read -r addr port target; do
  n=$((n + 1))
  (
    rsync --archive --checksum --delete --mkpath --stats \
      -e "ssh -p $port ${ssh_opts[*]}" "$src" "$user@$addr:$target/current/" > "$out/$n.rsync"
    ssh -p "$port" "${ssh_opts[@]}" -l "$user" -- "$addr" "cd '$target/current' && true"
  ) &
done < "$hosts"
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
files=$(cat "$out"/*.rsync | sed -n 's/^Number of regular files transferred: //p' | tr -d , | awk '{s += $1} END {print s + 0}')
echo "files=$files"
exit "$fail"
