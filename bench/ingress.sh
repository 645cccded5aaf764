#!/usr/bin/env bash
# bench-ingress: what the HTTP ingress costs. A small GET (a Node server in a
# sandbox, 23-byte body, keep-alive) measured with wrk, several connections:
#   direct        — wrk inside the sandbox's network namespace against
#                   127.0.0.1:PORT (what the ingress itself dials)
#   ingress http  — wrk on the host against the ingress, Host = exposed name
#   ingress https — the same over TLS (local CA)
# Prints req/s, p50 and p99 per path, the p50 the ingress adds and the share
# of direct throughput it keeps. Asserts nothing about time.
# Needs root (the daemon, nsenter), wrk, node with node_modules/@deno/sandbox.
# The three paths run interleaved, ROUNDS times, and the medians are shown
# (other load on the machine shifts single runs a lot). Also shown: the
# daemon's CPU time per request (its ingress thread, in effect).
# Env: BUILD (default build), SANDBOXD_BIN, AGENT, DURATION (5s), ROUNDS (3),
# CONNECTIONS (16), THREADS (2), PORT (3000).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
daemon="${SANDBOXD_BIN:-$build/bin/sandboxd}"
duration="${DURATION:-5s}"
conns="${CONNECTIONS:-16}"
threads="${THREADS:-2}"
rounds="${ROUNDS:-3}"
port="${PORT:-3000}"
command -v wrk >/dev/null || { echo "bench-ingress: wrk not found (apt-get install wrk)"; exit 1; }

data=$(mktemp -d /tmp/sandboxd-bench-XXXXXX)
token=$("$daemon" token create --org bench --data-dir "$data" | tail -n 1)
agent_args=()
[[ -n "${AGENT:-}" ]] && agent_args=(--agent "$AGENT")
"$daemon" serve --listen 127.0.0.1:0 --data-dir "$data" --log-level warn --ingress-listen 127.0.0.1:0 \
  --isolation namespaces \
  "${agent_args[@]}" >"$data/out" 2>"$data/err" &
daemon_pid=$!
cleanup() { kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 200); do grep -q "ingress on" "$data/out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^sandboxd listening on //p' "$data/out")
ingress=$(sed -n 's/^sandboxd ingress on //p' "$data/out")
[[ -n "$endpoint" && -n "$ingress" ]] || { echo "daemon did not start:"; cat "$data/err"; exit 1; }
ingress_port=${ingress##*:}

setup=$(DENO_SANDBOX_ENDPOINT="$endpoint" DENO_DEPLOY_TOKEN="$token" node bench/ingress_setup.mjs "$port" "$ingress_port")
host=$(sed -n 's/^host=//p' <<<"$setup")
marker=$(sed -n 's/^marker=//p' <<<"$setup")
server_pid=$(pgrep -f "$marker" | head -n 1)
[[ -n "$server_pid" ]] || { echo "bench-ingress: the sandbox's server process was not found"; exit 1; }

# CPU time (ticks) the daemon has used so far: the ingress is its only busy part here.
daemon_ticks() { awk '{ t += $14 + $15 } END { print t }' /proc/"$daemon_pid"/task/*/stat; }

# "name req/s p50_ms p99_ms daemon_us_per_request" from wrk --latency output.
run() {
  local name=$1
  shift
  local out t0 t1
  t0=$(daemon_ticks)
  out=$("$@" -t "$threads" -c "$conns" -d "$duration" --latency 2>&1)
  t1=$(daemon_ticks)
  local rps p50 p99 reqs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if [[ -z "$rps" || -z "$reqs" ]]; then
    echo "$name: wrk failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$name $rps $(ms "$p50") $(ms "$p99") $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
}
# wrk prints 512.00us / 1.23ms / 2.00s.
ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
# Median of column $2 (1-based) over the rows of path $1 in $results.
median() {
  awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$results" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "bench-ingress: GET / of a Node server, $conns connections, $threads wrk threads, $duration per run," \
  "$rounds rounds (paths interleaved), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
results="$data/results"
: >"$results"
for ((i = 1; i <= rounds; i++)); do
  run direct nsenter --net="/proc/$server_pid/ns/net" wrk "http://127.0.0.1:$port/" >>"$results"
  run ingress-http wrk -H "Host: $host" "http://127.0.0.1:$ingress_port/" >>"$results"
  run ingress-https wrk -H "Host: $host" "https://127.0.0.1:$ingress_port/" >>"$results"
done

printf '%-15s %10s %9s %9s %22s\n' "path (median)" req/s p50_ms p99_ms "daemon CPU µs/request"
for path in direct ingress-http ingress-https; do
  printf '%-15s %10.0f %9.3f %9.3f %22s\n' "$path" "$(median $path 2)" "$(median $path 3)" "$(median $path 4)" \
    "$([[ $path == direct ]] && echo - || median $path 5)"
done
d_rps=$(median direct 2)
d_p50=$(median direct 3)
for path in ingress-http ingress-https; do
  awk -v n="$path" -v r="$(median $path 2)" -v p="$(median $path 3)" -v dr="$d_rps" -v dp="$d_p50" \
    'BEGIN { printf "%s: p50 +%.3f ms over direct, %.0f%% of direct throughput\n", n, p - dp, 100 * r / dr }'
done
