#!/usr/bin/env bash
# Runs bench-lifecycle against a daemon of its own (free port, temporary data
# dir), then stops it. Extra arguments go to bench-lifecycle; with
# `--isolation microvm|namespaces` the daemon runs that backend too.
#
# microvm under TCG boots each sandbox in seconds, so unless given, the sample
# counts shrink to what fits a few minutes (20 creates, 5 idle VMs, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
daemon="${SANDBOXD_BIN:-$build/bin/sandboxd}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --isolation) ISOLATION="${args[i + 1]:-}" ;;
    --isolation=*) ISOLATION="${args[i]#--isolation=}" ;;
  esac
done
if [[ "${ISOLATION:-}" == microvm ]]; then
  given=" ${args[*]} "
  for d in "--iterations 20" "--exec-iterations 100" "--idle 5" "--concurrency 2" "--duration 20" "--bwrap-runs 10"; do
    [[ "$given" == *" ${d%% *}"[\ =]* ]] || args+=($d)
  done
fi
source bench/daemon.sh
"$build/bin/bench-lifecycle" --endpoint "$endpoint" --token "$token" "${args[@]}"
