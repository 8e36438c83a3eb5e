#!/usr/bin/env bash
# Compares fio randwrite, psync, at 256 B and 4 KiB: through libfio_intercept.so
# on a /dev/shm backing file, against plain fio psync on the same file, in the
# same run. Not a test: prints ops/s and the ratio.
#
#   guest-tools/fio-preload/scripts/bench.sh [runtime_seconds]
set -euo pipefail
runtime=${1:-5}
here=$(cd "$(dirname "$0")/../../.." && pwd)
command -v fio >/dev/null || { echo "fio is not installed: run ci/install-deps" >&2; exit 1; }
cargo build --release -q -p fio-preload --manifest-path "$here/Cargo.toml"
target=${CARGO_TARGET_DIR:-$here/target}
lib="$target/release/libfio_intercept.so"
dev=$(mktemp /dev/shm/fio-bench.XXXXXX)
trap 'rm -f "$dev"' EXIT
truncate -s 256M "$dev"

iops() { # prints the write IOPS of a fio json-less run
  grep -oE 'write: IOPS=[0-9.]+[kM]?' | head -1 | sed -E 's/write: IOPS=//' |
    awk '{v=$1; m=1; if (v ~ /k$/) m=1e3; if (v ~ /M$/) m=1e6; sub(/[kM]$/, "", v); printf "%.0f\n", v*m}'
}
# Both runs drop the same fio bookkeeping (random map, timing, per-write
# buffer scrambling), so what differs is the write path: pwrite into tmpfs
# against a memcpy into the mapping.
common=(--name=bench --rw=randwrite --ioengine=psync --size=128M --time_based "--runtime=$runtime"
        --randrepeat=1 --norandommap --invalidate=0 --gtod_reduce=1 --scramble_buffers=0)

printf '%-6s %14s %14s %8s\n' bs plain_ops/s preload_ops/s ratio
for bs in 256 4096; do
  plain=$(fio "${common[@]}" --bs=$bs "--filename=$dev" | iops)
  pre=$(LD_PRELOAD="$lib" FIO_INTERCEPT_ENABLE=1 FIO_MEM_DEVICE="$dev" FIO_FILE_SIZE=128M \
        FIO_INTERCEPT_PATTERN='*/bench.cxl' fio "${common[@]}" --bs=$bs --filename=/tmp/bench.cxl | iops)
  awk -v bs=$bs -v a="$plain" -v b="$pre" 'BEGIN { printf "%-6s %14d %14d %7.2fx\n", bs, a, b, b/a }'
done
