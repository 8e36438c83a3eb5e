#!/bin/sh
# Loopback benchmark of cxl-memsim's TCP server with its own load generator,
# against a baseline measured in the same run: `cxl-memsim null-server`, the
# same server answering every request without memory or model, i.e. what
# the loopback transport and the server loop cost on this machine today.
# Usage: vhost/bench.sh [RUNS]   (default 3 runs per configuration and server)
# Runs alternate between the two servers so both see the same machine.
# Prints one line per configuration: the median and best req/s of cxl-memsim,
# the median of the baseline, their ratio, and the median run's wall-clock
# p50/p99 in ns. Not a test: the figures depend on the machine and on what
# else runs on it; the ratio much less so.
set -eu
runs=${1:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p cxl-memsim
bin=${CARGO_TARGET_DIR:-target}/release/cxl-memsim
dir=$(mktemp -d)
pids=
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT

# start NAME ARGS...: starts a server, waits for its ready line, sets $addr.
start() {
    name=$1
    shift
    "$bin" "$@" >"$dir/$name.out" &
    pids="$pids $!"
    while ! grep -q '"ready"' "$dir/$name.out" 2>/dev/null; do
        kill -0 "$!" || exit 1
        sleep 0.1
    done
    addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$dir/$name.out" | head -n 1)
}
start memsim serve --backing-dir "$dir" --listen 127.0.0.1:0 --control "$dir/ctl.sock"
memsim=$addr
start null null-server --listen 127.0.0.1:0
null=$addr

field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" | head -n 1; }
# median FILE: the middle line of FILE's "rate run" lines, sorted by rate.
median() { sort -n "$1" | sed -n "$(((runs + 1) / 2))p"; }
for pattern in seq random; do
    for cfg in "1 1 300000" "32 1 3000000" "32 8 500000"; do
        set -- $cfg
        : >"$dir/rates"
        : >"$dir/null-rates"
        i=0
        while [ "$i" -lt "$runs" ]; do
            for server in memsim null; do
                eval "a=\$$server"
                "$bin" client --addr "$a" --pattern "$pattern" --depth "$1" \
                    --connections "$2" --ops "$3" --json >"$dir/$server$i"
                printf '%s %s\n' "$(field requests_per_second <"$dir/$server$i")" "$i" \
                    >>"$dir/$( [ "$server" = null ] && echo null-)rates"
            done
            i=$((i + 1))
        done
        med=$(median "$dir/rates")
        best=$(sort -n "$dir/rates" | tail -n 1 | cut -d' ' -f1)
        null_med=$(median "$dir/null-rates")
        r="$dir/memsim${med#* }"
        wall=$(tr -d '\n ' <"$r" | sed 's/.*"wall_latency_ns":{\([^}]*\)}.*/\1/')
        printf '%-6s depth %-2s conns %s: median %8.0f req/s  best %8.0f  baseline %8.0f  ratio %.2f  wall %s\n' \
            "$pattern" "$1" "$2" "${med% *}" "$best" "${null_med% *}" \
            "$(echo "${med% *} ${null_med% *}" | awk '{ printf "%f", $1 / $2 }')" "$wall"
    done
done
