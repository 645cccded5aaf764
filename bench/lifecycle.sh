#!/usr/bin/env bash
# Runs bench-lifecycle against a daemon of its own (free port, temporary data
# dir), then stops it. Extra arguments go to bench-lifecycle.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
data=$(mktemp -d /tmp/sandboxd-bench-XXXXXX)
token=$("$build/bin/sandboxd" token create --org bench --data-dir "$data" | tail -n 1)
"$build/bin/sandboxd" serve --listen 127.0.0.1:0 --data-dir "$data" --log-level warn >"$data/out" 2>"$data/err" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$data/out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^sandboxd listening on //p' "$data/out")
[[ -n "$endpoint" ]] || { echo "daemon did not start:"; cat "$data/err"; exit 1; }
"$build/bin/bench-lifecycle" --endpoint "$endpoint" --token "$token" "$@"
