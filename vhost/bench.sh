#!/bin/sh
# Loopback benchmark of cxl-memsim's TCP server with its own load generator.
# Usage: vhost/bench.sh [RUNS]   (default 3 runs per configuration)
# Prints one line per configuration: the median and best req/s of the runs,
# and the median run's wall-clock p50/p99 in ns. Not a test: the figures
# depend on the machine and on what else runs on it.
set -eu
runs=${1:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p cxl-memsim
bin=${CARGO_TARGET_DIR:-target}/release/cxl-memsim
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --backing-dir "$dir" --listen 127.0.0.1:0 --control "$dir/ctl.sock" >"$dir/out" &
pid=$!
while ! grep -q '"ready"' "$dir/out" 2>/dev/null; do
    kill -0 "$pid" || exit 1
    sleep 0.1
done
addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$dir/out" | head -n 1)
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" | head -n 1; }
for pattern in seq random; do
    for cfg in "1 1 300000" "32 1 3000000" "32 8 500000"; do
        set -- $cfg
        : >"$dir/rates"
        i=0
        while [ "$i" -lt "$runs" ]; do
            "$bin" client --addr "$addr" --pattern "$pattern" --depth "$1" \
                --connections "$2" --ops "$3" --json >"$dir/r$i"
            printf '%s %s\n' "$(field requests_per_second <"$dir/r$i")" "$i" >>"$dir/rates"
            i=$((i + 1))
        done
        sort -n "$dir/rates" >"$dir/sorted"
        med=$(sed -n "$(((runs + 1) / 2))p" "$dir/sorted")
        best=$(tail -n 1 "$dir/sorted" | cut -d' ' -f1)
        r="$dir/r${med#* }"
        wall=$(tr -d '\n ' <"$r" | sed 's/.*"wall_latency_ns":{\([^}]*\)}.*/\1/')
        printf '%-6s depth %-2s conns %s: median %8.0f req/s  best %8.0f req/s  wall %s\n' \
            "$pattern" "$1" "$2" "${med% *}" "$best" "$wall"
    done
done
