#!/usr/bin/env bash
# Bounded soak of the server: a fixed number of mixed requests (plain and streaming completions
# and chats, streams and requests cancelled at random points, invalid requests, bursts over the
# queue limit) at a fixed concurrency and seed; reports RSS growth, leaked slots, the /metrics
# counter reconciliation and the status codes, and exits 1 on any of: a leaked slot, counters that
# do not reconcile, a 5xx or other unexpected answer, RSS growth over the limit, a dead server.
#
#   scripts/soak.sh [--requests 2000] [--concurrency 8] [--seed 1] [--url URL [--pid PID]] ...
#
# `scripts/soak.sh --help` lists every option (tests/soak/soak.mjs). Without --url it starts
# build/inferbox itself on a free port.
#
# Environment (optional):
#   INFERBOX_BIN          the server binary (default build/inferbox)
#   INFERBOX_TEST_MODELS  folder of the test models (default ../shared/models from the repo root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export INFERBOX_BIN=${INFERBOX_BIN:-$root/build/inferbox}
export INFERBOX_TEST_MODELS=${INFERBOX_TEST_MODELS:-$(cd "$root/.." && pwd)/shared/models}
if [ ! -d "$root/tests/integration/js/node_modules" ]; then
  echo "soak: tests/integration/js/node_modules is missing: run scripts/setup.sh (npm ci) first" >&2
  exit 1
fi
exec node "$root/tests/soak/soak.mjs" "$@"
