# Sourced by the bench scripts: starts a daemon of its own (free port,
# temporary data dir) and sets $endpoint and $token; stops it on exit.
# Needs $daemon (the sandboxd binary); honours $AGENT (an --agent override),
# $ISOLATION (an --isolation choice: auto, namespaces, microvm) and
# $DAEMON_ARGS (more daemon flags, split on blanks, e.g. "--vm-snapshot off").
data=$(mktemp -d /tmp/sandboxd-bench-XXXXXX)
token=$("$daemon" token create --org bench --data-dir "$data" | tail -n 1)
agent_args=()
[[ -n "${AGENT:-}" ]] && agent_args=(--agent "$AGENT")
[[ -n "${ISOLATION:-}" ]] && agent_args+=(--isolation "$ISOLATION")
# shellcheck disable=SC2206  # word splitting wanted
[[ -n "${DAEMON_ARGS:-}" ]] && agent_args+=($DAEMON_ARGS)
"$daemon" serve --listen 127.0.0.1:0 --data-dir "$data" --log-level warn "${agent_args[@]}" >"$data/out" 2>"$data/err" &
daemon_pid=$!
cleanup() { kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$data/out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^sandboxd listening on //p' "$data/out")
[[ -n "$endpoint" ]] || { echo "daemon did not start:"; cat "$data/err"; exit 1; }
