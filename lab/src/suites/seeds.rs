//! `lab run seeds`: every command line of the five documents of the tools
//! we re-implement (the seed documents 000…004 beside DESIGN.md), run in the guest as a
//! user of those tools would, from a working directory laid out like the
//! documents' build trees (`./test_mwait_dax`, `./libfio_intercept.so`,
//! `./src/data_generator`, … are links to the image's programs).
//!
//! [`LINES`] is the list: each entry has the document it comes from, the
//! line verbatim, and how the lab runs it. Only sizes, device paths and
//! physical offsets are adapted, and only where the lab's devices differ
//! (the adaptation is named in the entry and the result), and one file path
//! Debian's kernel keeps elsewhere (/proc/config.gz). The documents'
//! troubleshooting lines are entries too (diagnostics: what they print is
//! checked, not their exit code, where the document uses them to tell two
//! cases apart). What cannot run as
//! written is `not_run` with the reason, `host_side` when it belongs on the
//! host where `lab up` does it, or `run_by` the suite that runs it.
//! `{offset}` in an adapted line is the physical start of the lab's first
//! volatile dax device (0x110000000 on the default topology, where the
//! documents' 0x100000000 is the host bridge's registers).

use serde_json::{json, Value};

use crate::suite_support::{sh, SuiteContext, SuiteError};
use cxl_topology::DeviceKind;

/// What an adaptation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptationKind {
    /// A size the lab's devices or the guest's RAM cannot hold, or that
    /// would take minutes under TCG.
    Size,
    /// A physical offset: the lab's CXL window is elsewhere.
    Offset,
    /// A file the guest's kernel keeps elsewhere (Debian's kernels have no
    /// /proc/config.gz; their config is /boot/config-<release>).
    Path,
}

impl AdaptationKind {
    pub fn name(self) -> &'static str {
        match self {
            AdaptationKind::Size => "size",
            AdaptationKind::Offset => "offset",
            AdaptationKind::Path => "path",
        }
    }
}

/// One named change from the documented line.
#[derive(Debug, Clone, Copy)]
pub struct Adaptation {
    pub kind: AdaptationKind,
    pub what: &'static str,
}

/// How a documented line is checked once it ran: its exit code must be 0,
/// every `expect` text must be in its output (stdout and stderr, with what
/// `then` printed) and no `reject` text.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Shell run after the line in the same directory (its exit code does
    /// not count; it prints what `expect` looks for).
    pub then: &'static str,
    pub expect: &'static [&'static str],
    pub reject: &'static [&'static str],
    /// A diagnostic line (the documents' troubleshooting): what it prints
    /// is checked, its exit code is not (`ls /dev/dax* /dev/pmem*` exits 2
    /// when one of the two kinds is absent, which is what it diagnoses).
    pub any_exit: bool,
}

/// How the lab runs a documented line.
#[derive(Debug, Clone, Copy)]
pub enum How {
    /// As written.
    AsWritten { script: &'static str, check: Check },
    /// With the named adaptations.
    Adapted {
        script: &'static str,
        adaptations: &'static [Adaptation],
        check: Check,
    },
    /// Not run, for this reason.
    NotRun(&'static str),
    /// A host-side line: what the lab does instead.
    HostSide(&'static str),
    /// Run by another suite (named), as part of its procedure.
    RunBy(&'static str),
}

/// A documented command line.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Short stable name (a JUnit test case).
    pub id: &'static str,
    /// The document: `000` … `004`.
    pub document: &'static str,
    /// The line as the document gives it.
    pub documented: &'static str,
    pub how: How,
}

const fn check(
    then: &'static str,
    expect: &'static [&'static str],
    reject: &'static [&'static str],
) -> Check {
    Check {
        then,
        expect,
        reject,
        any_exit: false,
    }
}

const fn diagnostic(expect: &'static [&'static str]) -> Check {
    Check {
        then: "",
        expect,
        reject: &[],
        any_exit: true,
    }
}

const DEVMEM_OFFSET: Adaptation = Adaptation {
    kind: AdaptationKind::Offset,
    what: "0x100000000 -> {offset}: the lab's CXL window starts there (QEMU puts the host bridge's registers at 0x100000000)",
};
const DEVMEM_16G: Adaptation = Adaptation {
    kind: AdaptationKind::Size,
    what: "16G -> 16M: the default topology's devices are 256 MiB, and every access to CXL memory is an MMIO exit under TCG (the 16G run is `lab up --topology seed-dax`, see README)",
};
const FIO_1G: Adaptation = Adaptation {
    kind: AdaptationKind::Size,
    what: "FIO_MEM_SIZE 16G -> 16M, FIO_FILE_SIZE and --size 1G -> 16M: the window is the 16 MiB above",
};
const FIO_100M: Adaptation = Adaptation {
    kind: AdaptationKind::Size,
    what: "FIO_MEM_SIZE 16G -> 16M, --size 100M -> 1M: 100 MiB of 64 B writes is 1.6 M MMIO accesses under TCG",
};
const LARGE_2048: Adaptation = Adaptation {
    kind: AdaptationKind::Size,
    what: "-s 2048 -> -s 64: the guest has 1 GiB of RAM and its files are in RAM",
};
const PROC_CONFIG: Adaptation = Adaptation {
    kind: AdaptationKind::Path,
    what: "zcat /proc/config.gz -> /boot/config-$(uname -r): Debian's kernels are built without CONFIG_IKCONFIG_PROC; the image keeps the kernel's config where Debian does",
};
const BENCH_SIZE: Adaptation = Adaptation {
    kind: AdaptationKind::Size,
    what: "1gb -> 8mb: the guest has 1 GiB of RAM, its files are in RAM, and each benchmark writes and maps its file ten times (two tests under five advice values)",
};

/// Runs the monitor line `$MONITOR` on a paused `mmap_workload` whose pid
/// is `$PID`: the monitor attaches, the workload is released, and the
/// monitor gets SIGINT once the workload has exited (its last table).
const UNDER_MONITOR: &str = r#"rm -f go; mkfifo go
(read x < go; exec ./src/mmap_workload -f test_data.bin -p random -c 10000 -t 2 > workload.out) &
PID=$!
"#;
const MONITOR_RUN: &str = r#" > monitor.out 2>&1 &
m=$!
i=0; until grep -q 'attached to' monitor.out || [ $i -ge 600 ]; do sleep 0.2; i=$((i+1)); done
echo go > go
wait $PID; w=$?
kill -INT $m; wait $m; rc=$?
cat monitor.out; cat workload.out
[ $w -eq 0 ] && [ $rc -eq 0 ]"#;

/// The table's header and a row of the workload.
const MONITOR_TABLE: &[&str] = &[
    "attached to",
    "PID",
    "TID",
    "COMM",
    "MAJOR",
    "MINOR",
    "TOTAL_MS",
    "mmap_workload",
];

/// Loads the module, runs a workload, shows its `PID COUNT` line.
const SEQ_PAGE_FAULTS_THEN: &str = r#"grep -Eq '^[0-9]+ [0-9]+$' /proc/seq_page_faults && echo "seq_page_faults: PID COUNT lines"
grep -E "^$PID [0-9]+$" /proc/seq_page_faults | sed 's/^[0-9]* /workload pid: /'"#;

/// Every command line of the five documents, in their order.
pub const LINES: &[Line] = &[
    // 000: DAX tester and the fio preload.
    Line {
        id: "000 build",
        document: "000",
        documented: "make -f Makefile.dax all; mkdir build && cd build; cmake ..; make fio_intercept test_mwait_dax",
        how: How::NotRun("a build of the original sources: the image carries dax-tester and libfio_intercept.so built from this workspace by cargo (`lab image build`), linked as ./test_mwait_dax and ./libfio_intercept.so"),
    },
    Line {
        id: "000 test_mwait_dax all",
        document: "000",
        documented: "./test_mwait_dax /dev/mem 0x100000000 16G all",
        how: How::Adapted {
            script: "./test_mwait_dax /dev/mem {offset} 16M all",
            adaptations: &[DEVMEM_OFFSET, DEVMEM_16G],
            check: check("", &["physical memory", "PASS"], &["FAIL"]),
        },
    },
    Line {
        id: "000 test_mwait_dax byte",
        document: "000",
        documented: "./test_mwait_dax /dev/mem 0x100000000 16G byte      # Byte-addressable ops",
        how: How::Adapted {
            script: "./test_mwait_dax /dev/mem {offset} 16M byte",
            adaptations: &[DEVMEM_OFFSET, DEVMEM_16G],
            check: check("", &["physical memory", "PASS"], &["FAIL"]),
        },
    },
    Line {
        id: "000 test_mwait_dax mwait",
        document: "000",
        documented: "./test_mwait_dax /dev/mem 0x100000000 16G mwait    # MWAIT performance",
        how: How::Adapted {
            script: "./test_mwait_dax /dev/mem {offset} 16M mwait",
            adaptations: &[DEVMEM_OFFSET, DEVMEM_16G],
            check: check("", &["physical memory", "PASS"], &["FAIL"]),
        },
    },
    Line {
        id: "000 test_mwait_dax latency",
        document: "000",
        documented: "./test_mwait_dax /dev/mem 0x100000000 16G latency  # Latency measurements",
        how: How::Adapted {
            script: "./test_mwait_dax /dev/mem {offset} 16M latency",
            adaptations: &[DEVMEM_OFFSET, DEVMEM_16G],
            check: check("", &["physical memory", "PASS"], &["FAIL"]),
        },
    },
    Line {
        id: "000 fio randwrite",
        document: "000",
        documented: "export FIO_INTERCEPT_ENABLE=1; export FIO_MEM_DEVICE=/dev/mem; export FIO_MEM_OFFSET=0x100000000; export FIO_MEM_SIZE=16G; export FIO_FILE_SIZE=1G; export LD_PRELOAD=./libfio_intercept.so; fio --name=test --rw=randwrite --bs=4k --size=1G --direct=1 --ioengine=psync --runtime=10",
        how: How::Adapted {
            // FIO_DEBUG=1 is the document's own "Debug Output" line: the
            // library's count of intercepted calls is the check.
            script: "export FIO_DEBUG=1\nexport FIO_INTERCEPT_ENABLE=1\nexport FIO_MEM_DEVICE=/dev/mem\nexport FIO_MEM_OFFSET={offset}\nexport FIO_MEM_SIZE=16M\nexport FIO_FILE_SIZE=16M\nexport LD_PRELOAD=./libfio_intercept.so\nfio --name=test --rw=randwrite --bs=4k --size=16M --direct=1 --ioengine=psync --runtime=10",
            adaptations: &[DEVMEM_OFFSET, FIO_1G],
            check: check(
                "ls test.0.0 2>/dev/null && echo 'a real file test.0.0 was written'",
                &["intercepted calls in pid", "pwrite", "err= 0"],
                &[" none", "a real file"],
            ),
        },
    },
    Line {
        id: "000 test_dax_fio.sh",
        document: "000",
        documented: "./scripts/test_dax_fio.sh",
        how: How::NotRun("the document names the script but does not give it; its fio lines are the entries around this one"),
    },
    Line {
        id: "000 fio sub-512 B loop",
        document: "000",
        documented: "for bs in 64 128 256 384; do FIO_INTERCEPT_ENABLE=1 FIO_MEM_DEVICE=/dev/mem FIO_MEM_OFFSET=0x100000000 FIO_MEM_SIZE=16G LD_PRELOAD=./libfio_intercept.so fio --name=byte_test --rw=randwrite --bs=${bs} --size=100M --direct=1; done",
        how: How::Adapted {
            script: "export FIO_DEBUG=1\nrc=0\nfor bs in 64 128 256 384; do\n    FIO_INTERCEPT_ENABLE=1 \\\n    FIO_MEM_DEVICE=/dev/mem \\\n    FIO_MEM_OFFSET={offset} \\\n    FIO_MEM_SIZE=16M \\\n    LD_PRELOAD=./libfio_intercept.so \\\n    fio --name=byte_test --rw=randwrite --bs=${bs} --size=1M --direct=1 || rc=1\ndone\n[ $rc -eq 0 ]",
            adaptations: &[DEVMEM_OFFSET, FIO_100M],
            check: check(
                "ls byte_test.0.0 2>/dev/null && echo 'a real file byte_test.0.0 was written'",
                &["bs=(R) 64B-64B", "bs=(R) 128B-128B", "bs=(R) 256B-256B", "bs=(R) 384B-384B", "intercepted calls in pid", "pwrite"],
                &[" none", "a real file", "err=22"],
            ),
        },
    },
    // 000's troubleshooting section.
    Line {
        id: "000 troubleshooting: dax devices",
        document: "000",
        documented: "ls -la /dev/dax* /dev/pmem*",
        how: How::AsWritten {
            script: "ls -la /dev/dax* /dev/pmem*",
            // A listed character device: a dax device was found.
            check: diagnostic(&["crw", "/dev/dax"]),
        },
    },
    Line {
        id: "000 troubleshooting: kernel dax support",
        document: "000",
        documented: "grep -i dax /boot/config-$(uname -r)",
        how: How::AsWritten {
            script: "grep -i dax /boot/config-$(uname -r)",
            check: check("", &["CONFIG_DEV_DAX=", "CONFIG_DEV_DAX_CXL="], &[]),
        },
    },
    Line {
        id: "000 troubleshooting: /dev/mem permission",
        document: "000",
        documented: "sudo chmod 666 /dev/mem",
        how: How::AsWritten {
            script: "sudo chmod 666 /dev/mem",
            // Shown, then put back: the guest's /dev/mem is root's only.
            check: check("stat -c 'mode %a' /dev/mem; chmod 600 /dev/mem", &["mode 666"], &[]),
        },
    },
    Line {
        id: "000 troubleshooting: MWAIT support",
        document: "000",
        documented: "grep monitor /proc/cpuinfo",
        how: How::AsWritten {
            script: "grep monitor /proc/cpuinfo",
            check: check("", &[" monitor "], &[]),
        },
    },
    Line {
        id: "000 debug output",
        document: "000",
        documented: "export FIO_DEBUG=1  # Enable debug messages",
        how: How::AsWritten {
            script: "export FIO_DEBUG=1  # Enable debug messages",
            // What the variable turns on: the preload's report of its
            // intercepted calls, on a short intercepted fio run.
            check: check(
                "FIO_INTERCEPT_ENABLE=1 FIO_MEM_DEVICE=/dev/mem FIO_MEM_OFFSET={offset} FIO_MEM_SIZE=16M LD_PRELOAD=./libfio_intercept.so fio --name=debug --rw=write --bs=4k --size=64k --direct=1 --ioengine=psync 2>&1 | grep 'intercepted calls'",
                &["intercepted calls in pid"],
                &[" none"],
            ),
        },
    },
    // 001: the page-fault monitor.
    Line {
        id: "001 build",
        document: "001",
        documented: "sudo scripts/setup_environment.sh; mkdir build && cd build; cmake ..; make",
        how: How::NotRun("a build of the original sources with bcc: the image carries data-generator, mmap-workload and fault-monitor built from this workspace, linked as ./src/data_generator, ./src/mmap_workload and ./src/fault_monitor"),
    },
    Line {
        id: "001 run_demo.sh",
        document: "001",
        documented: "sudo ./scripts/run_demo.sh",
        how: How::NotRun("the document describes run_demo.sh but does not give it; its manual steps are the entries below"),
    },
    Line {
        id: "001 run_demo.sh options",
        document: "001",
        documented: "sudo ./scripts/run_demo.sh --size 256 --pattern random --threads 4",
        how: How::NotRun("the document describes run_demo.sh but does not give it; its manual steps are the entries below"),
    },
    Line {
        id: "001 data_generator 128",
        document: "001",
        documented: "./src/data_generator -f test_data.bin -s 128 -p random",
        how: How::AsWritten {
            script: "./src/data_generator -f test_data.bin -s 128 -p random",
            check: check("stat -c 'size %s' test_data.bin", &["size 134217728"], &[]),
        },
    },
    Line {
        id: "001 pagefault_monitor.py -p PID -i 1000",
        document: "001",
        documented: "sudo python3 tools/pagefault_monitor.py -p <PID> -i 1000",
        how: How::AsWritten {
            script: "{under_monitor}sudo python3 tools/pagefault_monitor.py -p $PID -i 1000{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 fault_monitor -p PID -i 1000",
        document: "001",
        documented: "sudo ./src/fault_monitor -p <PID> -i 1000",
        how: How::AsWritten {
            script: "{under_monitor}sudo ./src/fault_monitor -p $PID -i 1000{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 mmap_workload random",
        document: "001",
        documented: "./src/mmap_workload -f test_data.bin -p random -c 10000 -t 2",
        how: How::AsWritten {
            script: "./src/mmap_workload -f test_data.bin -p random -c 10000 -t 2",
            check: check("", &["random"], &[]),
        },
    },
    Line {
        id: "001 data_generator 2048",
        document: "001",
        documented: "./src/data_generator -s 2048 -f large_test.bin",
        how: How::Adapted {
            script: "./src/data_generator -s 64 -f large_test.bin",
            adaptations: &[LARGE_2048],
            check: check("stat -c 'size %s' large_test.bin", &["size 67108864"], &[]),
        },
    },
    Line {
        id: "001 mmap_workload 8 threads",
        document: "001",
        documented: "./src/mmap_workload -f large_test.bin -t 8 -c 50000",
        how: How::AsWritten {
            script: "./src/mmap_workload -f large_test.bin -t 8 -c 50000",
            check: check("", &["seq"], &[]),
        },
    },
    Line {
        id: "001 pattern loop",
        document: "001",
        documented: "for pattern in seq random stride mixed; do echo \"Testing pattern: $pattern\"; ./src/mmap_workload -f test_data.bin -p $pattern -c 5000; done",
        how: How::AsWritten {
            script: "rc=0\nfor pattern in seq random stride mixed; do\n    echo \"Testing pattern: $pattern\"\n    ./src/mmap_workload -f test_data.bin -p $pattern -c 5000 || rc=1\ndone\n[ $rc -eq 0 ]",
            check: check("", &["Testing pattern: seq", "Testing pattern: random", "Testing pattern: stride", "Testing pattern: mixed"], &[]),
        },
    },
    Line {
        id: "001 pagefault_monitor.py -p 1234",
        document: "001",
        documented: "sudo python3 tools/pagefault_monitor.py -p 1234",
        how: How::AsWritten {
            // 1234 is the document's example pid: the workload's here.
            script: "{under_monitor}sudo python3 tools/pagefault_monitor.py -p $PID{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 pagefault_monitor.py all processes",
        document: "001",
        documented: "sudo python3 tools/pagefault_monitor.py",
        how: How::AsWritten {
            script: "{under_monitor}sudo python3 tools/pagefault_monitor.py{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 pagefault_monitor.py -v -p PID",
        document: "001",
        documented: "sudo python3 tools/pagefault_monitor.py -v -p <PID>",
        how: How::AsWritten {
            script: "{under_monitor}sudo python3 tools/pagefault_monitor.py -v -p $PID{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 with iostat and vmstat",
        document: "001",
        documented: "iostat -x 1 &; vmstat 1 &; sudo python3 tools/pagefault_monitor.py -p <PID>",
        how: How::AsWritten {
            script: "iostat -x 1 &\nI=$!\nvmstat 1 &\nV=$!\n{under_monitor}sudo python3 tools/pagefault_monitor.py -p $PID{monitor_run}\nrc=$?\nkill $I $V\n[ $rc -eq 0 ]",
            check: check("", &["avg-cpu:", "procs -----", "attached to", "mmap_workload"], &[]),
        },
    },
    Line {
        id: "001 bcc check",
        document: "001",
        documented: "python3 -c \"import bcc; print('BCC OK')\"",
        how: How::NotRun("the guest has python3 but not bcc (fault_monitor loads its eBPF program itself); the line would fail with ModuleNotFoundError"),
    },
    // 001's troubleshooting section.
    Line {
        id: "001 troubleshooting: as root",
        document: "001",
        documented: "sudo ./fault_monitor",
        how: How::AsWritten {
            script: "{under_monitor}sudo ./fault_monitor{monitor_run}",
            check: check("", MONITOR_TABLE, &[]),
        },
    },
    Line {
        id: "001 troubleshooting: debugfs",
        document: "001",
        documented: "mount | grep debugfs",
        how: How::AsWritten {
            script: "mount | grep debugfs",
            check: check("", &["debugfs on /sys/kernel/debug"], &[]),
        },
    },
    Line {
        id: "001 troubleshooting: eBPF support",
        document: "001",
        documented: "zcat /proc/config.gz | grep BPF",
        how: How::Adapted {
            script: "grep BPF /boot/config-$(uname -r)",
            adaptations: &[PROC_CONFIG],
            check: check("", &["CONFIG_BPF=y", "CONFIG_BPF_SYSCALL=y"], &[]),
        },
    },
    Line {
        id: "001 troubleshooting: handle_mm_fault",
        document: "001",
        documented: "sudo cat /sys/kernel/debug/tracing/available_filter_functions | grep handle_mm_fault",
        how: How::AsWritten {
            script: "sudo cat /sys/kernel/debug/tracing/available_filter_functions | grep handle_mm_fault",
            check: check("", &["handle_mm_fault"], &[]),
        },
    },
    Line {
        id: "001 troubleshooting: drop caches",
        document: "001",
        documented: "sudo echo 3 > /proc/sys/vm/drop_caches",
        how: How::AsWritten {
            script: "sudo echo 3 > /proc/sys/vm/drop_caches",
            check: check("", &[], &[]),
        },
    },
    Line {
        id: "001 troubleshooting: kernel log",
        document: "001",
        documented: "sudo dmesg | tail -20",
        how: How::AsWritten {
            script: "sudo dmesg | tail -20",
            check: check("sudo dmesg | wc -l | sed 's/^/kernel log lines: /'", &["kernel log lines: "], &["kernel log lines: 0"]),
        },
    },
    // 002: CXLMemSim's QEMU integration.
    Line {
        id: "002 build",
        document: "002",
        documented: "cd qemu_integration; mkdir build; cd build; cmake ..; make -j$(nproc); sudo make install",
        how: How::HostSide("a build on the host: `cargo build --workspace` builds cxl-memsim and lab (README's set-up commands)"),
    },
    Line {
        id: "002 start_server.sh",
        document: "002",
        documented: "./start_server.sh 9999 topology_simple.txt",
        how: How::HostSide("`lab up` starts `cxl-memsim serve` on the host with the lab's topology (a TOML file, `lab up --topology`), its TCP server on the address the summary's memsim_listen names; `cxl-memsim client --addr` speaks the protocol"),
    },
    Line {
        id: "002 CXL_MEMSIM_HOST",
        document: "002",
        documented: "export CXL_MEMSIM_HOST=192.168.1.100  # IP of CXLMemSim server",
        how: How::HostSide("`lab up` connects QEMU and cxl-memsim itself; the server's address is the summary's memsim_listen (`lab status`)"),
    },
    Line {
        id: "002 CXL_MEMSIM_PORT",
        document: "002",
        documented: "export CXL_MEMSIM_PORT=9999",
        how: How::HostSide("`lab up` picks the port and reports it in the summary's memsim_listen"),
    },
    Line {
        id: "002 launch_qemu_cxl.sh",
        document: "002",
        documented: "./launch_qemu_cxl.sh",
        how: How::HostSide("`lab up` launches QEMU with the CXL devices on cxl-memsim's memory (`lab args` prints its command line); this suite runs in that guest"),
    },
    // 003: smart-madvise.
    Line {
        id: "003 build and install",
        document: "003",
        documented: "sudo make build-collector; sudo make install-collector",
        how: How::NotRun("a build of the original module: the image carries seq_page_faults built against the guest kernel (`lab image build`), which `modprobe seq_page_faults` loads; the benchmark entries below do that first"),
    },
    Line {
        id: "003 remove and clean",
        document: "003",
        documented: "sudo make remove-collector; sudo make clean-collector",
        how: How::NotRun("the original's Makefile targets (rmmod and removing build files); the suite leaves the module loaded as madvise-collector --proc does"),
    },
    Line {
        id: "003 sequential benchmark",
        document: "003",
        documented: "./sequential-access-benchmark 1gb 1",
        how: How::Adapted {
            script: "modprobe seq_page_faults\n./sequential-access-benchmark 8mb 1 &\nPID=$!\nwait $PID",
            adaptations: &[BENCH_SIZE],
            check: check(SEQ_PAGE_FAULTS_THEN, &["seq_page_faults: PID COUNT lines", "workload pid: "], &[]),
        },
    },
    Line {
        id: "003 random benchmark",
        document: "003",
        documented: "./random-access-benchmark 1gb 2 1",
        how: How::Adapted {
            script: "modprobe seq_page_faults\n./random-access-benchmark 8mb 2 1 &\nPID=$!\nwait $PID",
            adaptations: &[BENCH_SIZE],
            check: check(SEQ_PAGE_FAULTS_THEN, &["seq_page_faults: PID COUNT lines"], &[]),
        },
    },
    // 004: I/O Riot.
    Line {
        id: "004 build",
        document: "004",
        documented: "make clean all test; sudo make install",
        how: How::NotRun("a build of the original sources: the image carries ioriot built from this workspace, linked as /opt/ioriot/bin/ioriot"),
    },
    Line {
        id: "004 prepare",
        document: "004",
        documented: "stamp=$(date +%Y%m%d_%H%M%S) … mkdir -p \"$run_root\"; cc -Wall -Wextra -O2 -o \"$helper_bin\" scripts/syscall_matrix.c",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 helper",
        document: "004",
        documented: "sudo \"$helper_bin\" \"$pid_file\" \"$go_file\" \"$base_dir\" \"$user_name\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 capture",
        document: "004",
        documented: "helper_pid=$(cat \"$pid_file\"); sudo /opt/ioriot/bin/ioriot -c \"$capture_file\" -x \"$helper_pid\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 release",
        document: "004",
        documented: "touch \"$go_file\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 generate",
        document: "004",
        documented: "sudo /opt/ioriot/bin/ioriot -c \"$capture_file\" -r \"$replay_file\" -u \"$user_name\" -n \"$test_name\" -w /home/$user_name/.ioriot-wd",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 capture ops check",
        document: "004",
        documented: "python - \"$capture_file\" <<'PY' … re.search(r';:,o=([^;]+);:,', line) … PY",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 replay ops check",
        document: "004",
        documented: "python - \"$replay_file\" <<'PY' … re.search(r'\\|([a-z0-9_]+)@[0-9]+\\|\\s*$', line) … PY",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 rg replay",
        document: "004",
        documented: "rg -n 'head-renamed|openat|creat|link-open|emptydir' \"$replay_file\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 init",
        document: "004",
        documented: "sudo /opt/ioriot/bin/ioriot -i \"$replay_file\" -w /home/$user_name/.ioriot-wd",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 replay under strace",
        document: "004",
        documented: "sudo strace -f -o \"$strace_file\" /opt/ioriot/bin/ioriot -D -r \"$replay_file\" -p 1 -t 1 -S \"$stats_file\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 stats",
        document: "004",
        documented: "cat \"$stats_file\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 rg strace",
        document: "004",
        documented: "rg -n \"/home/\\\\.ioriot/$test_name/\" \"$strace_file\"",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 find",
        document: "004",
        documented: "find \"/home/.ioriot/$test_name\" -maxdepth 6 \\( -name 'head-renamed.bin' -o -name 'open*.txt' -o -name 'creat*.txt' -o -name 'link-open.txt' -o -name 'emptydir' \\) | sort",
        how: How::RunBy("ioriot"),
    },
    Line {
        id: "004 exists check",
        document: "004",
        documented: "python - \"$test_name\" \"$user_name\" \"$stamp\" <<'PY' … print(f\"{p}: exists={p.exists()} is_dir={p.is_dir()}\") PY",
        how: How::RunBy("ioriot"),
    },
];

/// Makes the working directory (a fresh `mktemp -d` of the guest, its path
/// printed last): the documents' relative program paths as links to the
/// image's programs.
const SETUP: &str = r#"set -e
dir=$(mktemp -d)
cd "$dir"
mkdir src
ln -s /usr/lib/cxl-lab/libfio_intercept.so libfio_intercept.so
ln -s /usr/bin/test_mwait_dax test_mwait_dax
ln -s /usr/bin/fault_monitor fault_monitor
for p in data_generator mmap_workload fault_monitor; do ln -s /usr/bin/$p src/$p; done
mkdir tools
ln -s /usr/lib/cxl-lab/tools/pagefault_monitor.py tools/pagefault_monitor.py
for p in sequential-access-benchmark random-access-benchmark; do ln -s /usr/bin/$p $p; done
for p in libfio_intercept.so test_mwait_dax src/data_generator src/mmap_workload src/fault_monitor \
    tools/pagefault_monitor.py sequential-access-benchmark random-access-benchmark; do
  [ -e $p ] || { echo "missing: $p (its program is not in the image)"; exit 1; }
done
echo "$dir""#;

/// `script` with the lab's values in place of `{offset}` and the monitor
/// harness.
pub fn render(script: &str, offset: u64) -> String {
    script
        .replace("{offset}", &format!("{offset:#x}"))
        .replace("{under_monitor}", UNDER_MONITOR)
        .replace("{monitor_run}", MONITOR_RUN)
}

/// The shell the guest runs for a line: the line in the working
/// directory `dir`, then the check's `then`, exiting with the line's code.
pub fn guest_script(dir: &str, script: &str, then: &str) -> String {
    format!("cd '{dir}'\n{{\n{script}\n}} 2>&1\nrc=$?\n{then}\nexit $rc")
}

/// The last lines of a line's output, for a failure.
fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.trim_end().lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// What is wrong with a line's run, empty when it passed.
pub fn problems(check: &Check, code: i64, out: &str) -> Vec<String> {
    let mut p = Vec::new();
    if code != 0 && !check.any_exit {
        p.push(format!("exit {code}"));
    }
    for e in check.expect {
        if !out.contains(e) {
            p.push(format!("no `{e}` in the output"));
        }
    }
    for r in check.reject {
        if out.contains(r) {
            p.push(format!("`{r}` in the output"));
        }
    }
    p
}

/// The result entry of a line that is not run here.
fn static_entry(line: &Line) -> Option<Value> {
    let (outcome, reason) = match line.how {
        How::NotRun(why) => ("not_run", why.to_owned()),
        How::HostSide(why) => ("host_side", why.to_owned()),
        How::RunBy(suite) => (
            "run_by",
            format!("`lab run {suite}` runs this line as part of the document's procedure"),
        ),
        _ => return None,
    };
    Some(json!({
        "id": line.id,
        "document": line.document,
        "documented": line.documented,
        "outcome": outcome,
        "reason": reason,
    }))
}

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    // The /dev/mem lines use a volatile device: dax-tester writes its range.
    let dax = ctx
        .summary
        .devices
        .iter()
        .find(|d| d.kind == DeviceKind::Volatile && d.dax.is_some())
        .and_then(|d| d.dax.clone())
        .ok_or(SuiteError::NoDax("seeds"))?;
    let chardev = dax.trim_start_matches("/dev/");
    let resource = ctx
        .exec_checked(&sh(format!("cat /sys/bus/dax/devices/{chardev}/resource")))
        .await?;
    let offset = parse_hex(resource.trim()).ok_or_else(|| SuiteError::Setup {
        what: format!("read the physical start of {dax}"),
        detail: resource.clone(),
    })?;
    let setup = ctx.exec(&sh(SETUP)).await?;
    let workdir = setup
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !setup.success() || !workdir.starts_with('/') {
        return Err(SuiteError::Setup {
            what: "lay out the working directory".into(),
            detail: format!("{}{}", setup.stdout, setup.stderr),
        });
    }
    let mut entries = Vec::new();
    for line in LINES {
        if let Some(e) = static_entry(line) {
            entries.push(e);
            continue;
        }
        let (script, adaptations, check) = match line.how {
            How::AsWritten { script, check } => (script, &[][..], check),
            How::Adapted {
                script,
                adaptations,
                check,
            } => (script, adaptations, check),
            _ => unreachable!("static_entry took the others"),
        };
        let ran = render(script, offset);
        let started = std::time::Instant::now();
        let out = ctx
            .exec(&sh(guest_script(
                &workdir,
                &ran,
                &render(check.then, offset),
            )))
            .await?;
        let output = format!("{}{}", out.stdout, out.stderr);
        let problems = problems(&check, out.exit_code, &output);
        let outcome = match (problems.is_empty(), adaptations.is_empty()) {
            (false, _) => "failed",
            (true, true) => "passed",
            (true, false) => "adapted",
        };
        let mut e = json!({
            "id": line.id,
            "document": line.document,
            "documented": line.documented,
            "outcome": outcome,
            "exit_code": out.exit_code,
            "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        });
        if !adaptations.is_empty() {
            e["ran"] = json!(render(script, offset)
                .replace(UNDER_MONITOR, "")
                .replace(MONITOR_RUN, ""));
            e["adaptations"] = adaptations
                .iter()
                .map(|a| json!({ "kind": a.kind.name(), "what": a.what.replace("{offset}", &format!("{offset:#x}")) }))
                .collect();
        }
        // The output's end, on a pass too: what the check found.
        e["tail"] = json!(tail(&output));
        if !problems.is_empty() {
            e["problems"] = json!(problems);
        }
        entries.push(e);
    }
    let count = |o: &str| entries.iter().filter(|e| e["outcome"] == o).count();
    let counts = json!({
        "passed": count("passed"),
        "adapted": count("adapted"),
        "failed": count("failed"),
        "not_run": count("not_run"),
        "host_side": count("host_side"),
        "run_by": count("run_by"),
    });
    let _ = ctx.exec(&sh(format!("rm -rf '{workdir}'"))).await;
    Ok(json!({
        "suite": "seeds",
        "passed": count("failed") == 0,
        "devmem": { "dax": dax, "offset": format!("{offset:#x}") },
        "counts": counts,
        "lines": entries,
    }))
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_has_lines_and_ids_are_unique() {
        for doc in ["000", "001", "002", "003", "004"] {
            assert!(LINES.iter().any(|l| l.document == doc), "{doc}");
        }
        let mut ids: Vec<_> = LINES.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), LINES.len());
        for l in LINES {
            assert!(l.id.starts_with(l.document), "{}", l.id);
        }
    }

    /// A line run as written has every word of the documented line (the
    /// document's `<PID>`, and 1234 its example pid, are the workload's
    /// `$PID`); an adapted one names its adaptations.
    #[test]
    fn as_written_lines_keep_the_documented_words_and_adaptations_are_named() {
        for l in LINES {
            match l.how {
                How::AsWritten { script, .. } => {
                    let ran = render(script, 0);
                    let words = |s: &str| -> Vec<String> {
                        s.split(|c: char| c.is_whitespace() || c == ';')
                            .filter(|w| !w.is_empty())
                            .map(|w| match w {
                                "1234" => "$PID".to_owned(),
                                w => w.replace("<PID>", "$PID"),
                            })
                            .collect()
                    };
                    let ran_words = words(&ran);
                    for w in words(l.documented) {
                        assert!(ran_words.contains(&w), "{}: `{w}` is not in {ran}", l.id);
                    }
                }
                How::Adapted { adaptations, .. } => assert!(!adaptations.is_empty(), "{}", l.id),
                _ => {}
            }
        }
    }

    #[test]
    fn the_offset_and_the_monitor_harness_are_filled_in() {
        let s = render("./test_mwait_dax /dev/mem {offset} 16M all", 0x1_1000_0000);
        assert_eq!(s, "./test_mwait_dax /dev/mem 0x110000000 16M all");
        let m = render(
            "{under_monitor}sudo ./src/fault_monitor -p $PID -i 1000{monitor_run}",
            0,
        );
        assert!(
            m.contains("PID=$!\nsudo ./src/fault_monitor -p $PID -i 1000 > monitor.out"),
            "{m}"
        );
        assert_eq!(parse_hex("0x110000000"), Some(0x1_1000_0000));
    }

    #[test]
    fn a_check_needs_exit_zero_every_expected_text_and_no_rejected_one() {
        let c = check("", &["PASS"], &["FAIL"]);
        assert!(problems(&c, 0, "byte PASS").is_empty());
        assert_eq!(problems(&c, 1, "byte PASS"), ["exit 1"]);
        assert_eq!(
            problems(&c, 0, "byte FAIL"),
            ["no `PASS` in the output", "`FAIL` in the output"]
        );
        // A diagnostic is judged by what it prints.
        let d = diagnostic(&["crw", "/dev/dax"]);
        let found = "crw------- 1 root root 252, 0 /dev/dax0.0\nls: /dev/pmem*: No such file";
        assert!(problems(&d, 2, found).is_empty());
        assert_eq!(
            problems(&d, 2, "ls: /dev/dax*: No such file"),
            ["no `crw` in the output"]
        );
    }
}
