#!/usr/bin/env bash
# Runs bench-fs (C++ client) and, when node and @deno/sandbox are available,
# bench/fs_sdk.mjs (the official SDK) against a daemon of its own (free port,
# temporary data dir), then stops it.
# Env: BUILD (dir with bin/bench-fs, default build), SANDBOXD_BIN (default
# $BUILD/bin/sandboxd), AGENT (optional --agent for the daemon), RUNS (5),
# SIZE_MIB (256), INLINE_MIB (64; the SDK's run uses min(INLINE_MIB, 32)
# because its `ws` client refuses messages of more than 16384 fragments).
# Extra arguments go to bench-fs.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
daemon="${SANDBOXD_BIN:-$build/bin/sandboxd}"
runs="${RUNS:-5}"
size="${SIZE_MIB:-256}"
inline="${INLINE_MIB:-64}"
source bench/daemon.sh
"$build/bin/bench-fs" --endpoint "$endpoint" --token "$token" --runs "$runs" --size-mib "$size" --inline-mib "$inline" "$@"
if command -v node >/dev/null && [[ -d node_modules/@deno/sandbox ]]; then
  echo
  DENO_SANDBOX_ENDPOINT="$endpoint" DENO_DEPLOY_TOKEN="$token" \
    node bench/fs_sdk.mjs "$runs" "$size" "$(( inline < 32 ? inline : 32 ))"
else
  echo "node or node_modules/@deno/sandbox not found: SDK comparison skipped"
fi
