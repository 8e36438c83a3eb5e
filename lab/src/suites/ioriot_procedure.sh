# I/O Riot's "Syscall Matrix End-to-End Test", steps 2-10, as documented in
# seed document 004 (the I/O Riot agent notes,
# section "Syscall Matrix End-to-End Test"), run by `lab run ioriot` in the
# guest as root, with /home an ext4 filesystem on the lab's CXL memory.
# The documented commands are verbatim; what had to change is marked
# ADAPTED with the reason, and every adaptation is listed in the suite's
# JSON (`adaptations`). Lines starting `echo "=== ` only mark sections for
# the suite to read.
#
# ADAPTED (login): the guest agent runs this as root with no login
# environment; USER is the image's unprivileged user, as a login sets it.
USER=${USER:-ioriot}
export USER

echo "=== step 2"
stamp=$(date +%Y%m%d_%H%M%S)
run_root=/tmp/ioriot-syscall-e2e-$stamp
user_name=${SUDO_USER:-$USER}
base_dir=/home/$user_name/ioriot-syscall-matrix-src-$stamp
helper_bin=$run_root/syscall_matrix
mkdir -p "$run_root"
# ADAPTED (helper): the guest has no compiler and no scripts/syscall_matrix.c;
# `cc -Wall -Wextra -O2 -o "$helper_bin" scripts/syscall_matrix.c` becomes
# a copy of our prebuilt helper, which takes the same four arguments.
cp /usr/bin/ioriot-syscall-matrix "$helper_bin"
pid_file=$run_root/syscall_matrix.pid
go_file=$run_root/syscall_matrix.go
capture_file=$run_root/syscall_matrix.capture
replay_file=$run_root/syscall_matrix.replay
stats_file=$run_root/syscall_matrix.stats
strace_file=$run_root/replay.strace
test_name=e2e_syscall_matrix_$stamp
echo "=== vars stamp=$stamp test_name=$test_name user_name=$user_name"

echo "=== step 3"
# ADAPTED (terminals): terminal A is a background job.
sudo "$helper_bin" "$pid_file" "$go_file" "$base_dir" "$user_name" > "$run_root/helper.out" 2>&1 &
helper_job=$!

echo "=== step 4"
# ADAPTED (terminals): terminal B is a background job, started once
# "$pid_file" exists (the reader waits for it, as the document says).
while [ ! -s "$pid_file" ]; do sleep 0.1; done
helper_pid=$(cat "$pid_file")
sudo /opt/ioriot/bin/ioriot -c "$capture_file" -x "$helper_pid" > "$run_root/capture.out" 2>&1 &
capture_job=$!
# ADAPTED (attach): "wait until staprun reports that targetedioriot.ko has
# been inserted" is waiting for ioriot's "tracing attached" line.
while ! grep -q "tracing attached" "$run_root/capture.out"; do
  kill -0 "$capture_job" 2>/dev/null || break
  sleep 0.1
done

echo "=== step 5"
touch "$go_file"
wait "$helper_job"
echo "=== rc helper $?"
# ADAPTED (Ctrl+C): Ctrl+C in terminal B is SIGINT to the capture job
# (ioriot also stops by itself once the followed processes are gone).
kill -INT "$capture_job" 2>/dev/null
wait "$capture_job"
echo "=== rc capture $?"
echo "=== capture log"
cat "$run_root/capture.out"
echo "=== helper log"
tail -n 3 "$run_root/helper.out"

echo "=== step 6"
sudo /opt/ioriot/bin/ioriot \
  -c "$capture_file" \
  -r "$replay_file" \
  -u "$user_name" \
  -n "$test_name" \
  -w /home/$user_name/.ioriot-wd
echo "=== rc generate $?"

echo "=== step 7 capture ops"
python - "$capture_file" <<'PY'
import re
import sys
ops=set()
for line in open(sys.argv[1]):
    m=re.search(r';:,o=([^;]+);:,', line)
    if m:
        ops.add(m.group(1))
for op in sorted(ops):
    print(op)
PY
echo "=== step 7 replay ops"
python - "$replay_file" <<'PY'
import re
import sys
ops=set()
for line in open(sys.argv[1]):
    m=re.search(r'\|([a-z0-9_]+)@[0-9]+\|\s*$', line)
    if m:
        ops.add(m.group(1))
for op in sorted(ops):
    print(op)
PY
echo "=== step 7 rg replay"
rg -n 'head-renamed|openat|creat|link-open|emptydir' "$replay_file"

echo "=== step 8"
sudo /opt/ioriot/bin/ioriot \
  -i "$replay_file" \
  -w /home/$user_name/.ioriot-wd
echo "=== rc init $?"

echo "=== step 9"
sudo strace -f -o "$strace_file" \
  /opt/ioriot/bin/ioriot \
  -D \
  -r "$replay_file" \
  -p 1 \
  -t 1 \
  -S "$stats_file"
echo "=== rc replay $?"

echo "=== step 10 stats"
cat "$stats_file"
echo "=== step 10 rg strace"
rg -n "/home/\\.ioriot/$test_name/" "$strace_file"
echo "=== step 10 find"
find "/home/.ioriot/$test_name" -maxdepth 6 \
  \( -name 'head-renamed.bin' -o -name 'open*.txt' -o -name 'creat*.txt' \
  -o -name 'link-open.txt' -o -name 'emptydir' \) | sort
echo "=== step 10 exists"
python - "$test_name" "$user_name" "$stamp" <<'PY'
from pathlib import Path
import sys
test_name, user_name, stamp = sys.argv[1:]
root = Path(f"/home/.ioriot/{test_name}/{user_name}")
base = root / f"ioriot-syscall-matrix-src-{stamp}"
paths = [
    base / "open-renamed.txt",
    base / "emptydir",
    base / "dirA" / "openat-renamed.txt",
]
for p in paths:
    print(f"{p}: exists={p.exists()} is_dir={p.is_dir()}")
PY
echo "=== end"
