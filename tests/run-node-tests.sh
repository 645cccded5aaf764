#!/usr/bin/env bash
# Runs the node suites against sandboxd: conformance + security in parallel
# (two test files at a time, each with its own daemon), then the leak check
# alone. Exits non-zero if anything failed. Called by `make test`.
#   SANDBOXD_BIN   daemon binary (default build/bin/sandboxd)
# Self-check of the suites: SANDBOXD_BIN=tests/lib/fake-sandboxd runs them
# against an unisolated protocol fake; conformance should mostly pass there,
# the security suite must fail (and FAKE_LEAK=1 must make the leak check fail).
set -uo pipefail
cd "$(dirname "$0")/.."
export SANDBOXD_BIN="${SANDBOXD_BIN:-$PWD/build/bin/sandboxd}"
export SBXD_TEST_RUN_START="$(date +%s%3N)"

if [[ ! -x "$SANDBOXD_BIN" ]]; then
  echo "run-node-tests: $SANDBOXD_BIN not found or not executable" >&2
  exit 1
fi
if [[ ! -d node_modules/@deno/sandbox || ! -d node_modules/ws ]]; then
  npm ci --no-audit --no-fund --loglevel=error || exit 1
fi

shopt -s nullglob
main=(tests/conformance/*.test.mjs tests/security/*.test.mjs)
rc=0
node --test --test-reporter=spec --test-concurrency=2 "${main[@]}" || rc=1
# The microVM backend under TCG (docs/microvm.md, "Tests"): its own suite, and
# the conformance files that exercise what a backend provides (processes and
# the agent link, every filesystem op in the guest, error mapping, the
# lifecycle, a daemon restart reaping VMs, the HTTP ingress into a guest), the
# security files that hold for a VM too (resource limits and OOM reports,
# filesystem attacks, escapes, the whole egress suite through the guest's own
# network stack), then the leak check with VMs. SANDBOXD_SKIP_MICROVM=1
# leaves them out.
microvm=(tests/vm/*.test.mjs tests/conformance/{process,fs,errors,lifecycle,restart,ingress}.test.mjs
         tests/security/{resources,fs,escape,egress}.test.mjs)
if [[ "${SANDBOXD_SKIP_MICROVM:-0}" != 1 ]]; then
  SANDBOXD_ISOLATION=microvm node --test --test-reporter=spec --test-concurrency=2 "${microvm[@]}" || rc=1
fi
node --test --test-reporter=spec --test-concurrency=1 tests/leak/leak.test.mjs || rc=1
if [[ "${SANDBOXD_SKIP_MICROVM:-0}" != 1 ]]; then
  SANDBOXD_ISOLATION=microvm node --test --test-reporter=spec --test-concurrency=1 tests/leak/leak.test.mjs || rc=1
fi
exit $rc
