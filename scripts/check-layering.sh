#!/usr/bin/env bash
# The layering Cargo enforces (docs/ARCHITECTURE.md): the core and the
# crates that decide and fold build without a storage engine or a network
# client. `cargo tree -p` resolves features as building that package alone
# would, so an optional backend turned on by default shows up here.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(librocksdb-sys|rocksdb|async-nats|zstd-sys|wasmtime) '
status=0
for package in agentlog-core agentlog-commands agentlog-projections; do
  found=$(cargo tree -p "$package" -e normal,build --prefix none | grep -E "$forbidden" | sort -u || true)
  if [ -n "$found" ]; then
    echo "layering: $package must build on agentlog-core alone, but pulls in:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
  fi
done
# Test-only features never reach the binary users run.
leaked=$(cargo tree -p agentlog -e features --prefix none | grep -F 'feature "expensive-checks"' | sort -u || true)
if [ -n "$leaked" ]; then
  echo "layering: the agentlog binary is built with test-only checks:" >&2
  echo "$leaked" | sed 's/^/  /' >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "layering: agentlog-core, agentlog-commands and agentlog-projections build without rocksdb, async-nats, zstd-sys or wasmtime; the binary without test-only checks"
exit "$status"
