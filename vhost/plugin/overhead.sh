#!/usr/bin/env bash
# The TCG plugin's cost on guest workloads, in one lab run: each workload
# RUNS times with the plugin armed, then RUNS times disarmed (loaded, no
# instrumentation), then armed again; medians of host wall time around
# `lab exec` (which includes the guest agent's round trip, about `true`'s
# time). Then, for reference, the same in a second lab booted without the
# plugin. A report, never a test: this machine's 2 cores are shared.
#
#   vhost/plugin/overhead.sh [RUNS]     (after cargo build --workspace)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
LAB=target/debug/lab
MEMSIM=target/debug/cxl-memsim
NAME=overhead
export CXL_LAB_STATE=${CXL_LAB_STATE:-$(mktemp -d)}
trap '$LAB down --name $NAME >/dev/null 2>&1 || true' EXIT

$LAB up --name $NAME --timing --json >"$CXL_LAB_STATE/up.json"
CONTROL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["simulator_control"])' "$CXL_LAB_STATE/up.json")
WINDOWS=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["timing"]["windows"]))' "$CXL_LAB_STATE/up.json")

workloads=(
  "true"
  "dax-pattern write /dev/dax0.0 --offset 0 --len 4M"
  "data-generator -f /tmp/overhead.dat -s 16 -p random"
)

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # state workload
  for _ in $(seq "$RUNS"); do
    s=$(date +%s.%N)
    # shellcheck disable=SC2086
    $LAB exec --name $NAME -- $2 >/dev/null
    e=$(date +%s.%N)
    echo "$e - $s" | bc
  done | median
}

declare -A armed disarmed
for w in "${workloads[@]}"; do armed[$w]=$(measure armed "$w"); done
$MEMSIM plugin --control "$CONTROL" disarm >/dev/null
for w in "${workloads[@]}"; do disarmed[$w]=$(measure disarmed "$w"); done
# Re-arming needs a vCPU callback: guest-agent traffic gives one.
$MEMSIM plugin --control "$CONTROL" arm $WINDOWS >/dev/null &
while kill -0 $! 2>/dev/null; do $LAB exec --name $NAME -- true >/dev/null; done
wait $!
declare -A rearmed plain
for w in "${workloads[@]}"; do rearmed[$w]=$(measure armed "$w"); done
$MEMSIM plugin --control "$CONTROL" flush >/dev/null
$MEMSIM plugin --control "$CONTROL"
$LAB down --name $NAME >/dev/null
$LAB up --name $NAME >/dev/null
for w in "${workloads[@]}"; do plain[$w]=$(measure plain "$w"); done
for w in "${workloads[@]}"; do
  printf '%-55s armed %6.2f s  disarmed %6.2f s  re-armed %6.2f s  no plugin %6.2f s  armed/disarmed %.2fx\n' \
    "$w" "${armed[$w]}" "${disarmed[$w]}" "${rearmed[$w]}" "${plain[$w]}" \
    "$(echo "${armed[$w]} / ${disarmed[$w]}" | bc -l)"
done
