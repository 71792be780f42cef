#!/usr/bin/env bash
# Alternating runs of two agentlog binaries on the distributed bench's
# claim latency, open and signed (docs/BENCHMARKS.md, issue 15): one line
# per run with the signed claim's p50 and p99 less the open claim's in the
# same run, signing and verifying alone, the 64-producer command rates and
# CPU per command, and (from binaries that measure it) the floor under a
# claim: its NATS visits alone, three in a row. Build each binary with
# `cargo build --release` (the one `cargo test --release` leaves in
# target/release has the test-only checks on, and `agentlog bench` warns
# about it).
#
#   scripts/ab-claims.sh OLD_BINARY NEW_BINARY [RUNS] [-- BENCH ARGS]
#
# RUNS defaults to 5 of each; the bench arguments default to
# `--events 20000 --claims 2000 --hot-seconds 2`.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [RUNS] [-- BENCH ARGS]" >&2; exit 2; }
old="$1" new="$2"; shift 2
runs=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then runs="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--events 20000 --claims 2000 --hot-seconds 2)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for run in $(seq 1 "$runs"); do
  for which in old new; do
    binary="$old"; [ "$which" = new ] && binary="$new"
    "$binary" bench --distributed "${args[@]}" --json > "$out/$which.json"
    python3 - "$which" "$out/$which.json" <<'PY'
import json, sys
which, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
cpu = d["cpu_us_per_command"]
open50, open99 = d["service_claim_p50_us"], d["service_claim_p99_us"]
signed50, signed99 = d["signed_service_claim_p50_us"], d["signed_service_claim_p99_us"]
print(f"{which}: open p50 {open50:7.1f} p99 {open99:7.1f} | signed p50 {signed50:7.1f} p99 {signed99:7.1f}"
      f" | d50 {signed50 - open50:+6.1f} d99 {signed99 - open99:+6.1f}"
      f" | sign {d['sign_p50_us']} verify {d['verify_p50_us']}"
      f" | open/s {d['service_commands_p64_per_s']:.0f} signed/s {d['signed_service_commands_p64_per_s']:.0f}"
      f" | cpu open {cpu['open']['process']:.0f} signed {cpu['signed']['process']:.0f} serve {cpu['serve_process']['serve']:.0f}"
      + (f" | floor p50 {d['claim_floor']['in_a_row']['p50_us']:.0f} p99 {d['claim_floor']['in_a_row']['p99_us']:.0f}"
         if "claim_floor" in d else ""),
      flush=True)
PY
  done
done
