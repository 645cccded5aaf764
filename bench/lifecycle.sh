#!/usr/bin/env bash
# Runs bench-lifecycle against a daemon of its own (free port, temporary data
# dir), then stops it. Extra arguments go to bench-lifecycle.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
daemon="${SANDBOXD_BIN:-$build/bin/sandboxd}"
source bench/daemon.sh
"$build/bin/bench-lifecycle" --endpoint "$endpoint" --token "$token" "$@"
