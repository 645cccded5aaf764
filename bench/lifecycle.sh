#!/usr/bin/env bash
# Runs bench-lifecycle against a daemon of its own (free port, temporary data
# dir), then stops it. Extra arguments go to bench-lifecycle; with
# `--isolation microvm|namespaces` the daemon runs that backend too, and
# `--vm-snapshot on|off` goes to the daemon only (microVM snapshot restore,
# docs/microvm.md; the daemon's default is on).
#
# microvm under TCG boots each sandbox in seconds, so unless given, the sample
# counts shrink to what fits a few minutes (20 creates, 5 idle VMs, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
daemon="${SANDBOXD_BIN:-$build/bin/sandboxd}"
args=()
DAEMON_ARGS="${DAEMON_ARGS:-}"
while (($#)); do
  case "$1" in
    --isolation) ISOLATION="${2:-}"; args+=("$1" "${2:-}"); shift 2; continue ;;
    --isolation=*) ISOLATION="${1#--isolation=}" ;;
    --vm-snapshot) DAEMON_ARGS+=" --vm-snapshot ${2:-}"; shift 2; continue ;;
    --vm-snapshot=*) DAEMON_ARGS+=" --vm-snapshot ${1#--vm-snapshot=}"; shift; continue ;;
  esac
  args+=("$1")
  shift
done
if [[ "${ISOLATION:-}" == microvm ]]; then
  given=" ${args[*]} "
  for d in "--iterations 20" "--exec-iterations 100" "--idle 5" "--concurrency 2" "--duration 20" "--bwrap-runs 10"; do
    [[ "$given" == *" ${d%% *}"[\ =]* ]] || args+=($d)
  done
fi
source bench/daemon.sh
"$build/bin/bench-lifecycle" --endpoint "$endpoint" --token "$token" "${args[@]}"
