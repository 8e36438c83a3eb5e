//! Timing mode end to end: `lab up` with the TCG plugin, known cache lines
//! written to /dev/dax0.0 in the guest, and the simulator's stats must show
//! at least those writes on the right pages of the right device; a
//! disarmed plugin must count nothing, a re-armed one counts again.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use cxl_lab::events::Events;
use cxl_lab::verbs::{self, UpOptions};
use cxl_topology::Topology;
use lab_e2e::{error_chain, TestLab};
use serde_json::Value;

const PAGE: u64 = 4096;

/// Cache lines written in the guest: two on one page, the last line of a
/// page, lines on pages far apart.
const LINES: [u64; 6] = [
    0x40_0000,
    0x40_0040,
    0x41_3080,
    0x80_0fc0,
    0xff_f000,
    0x0123_4540,
];
const SEED: u64 = 7;

/// (device, page offset) to (writes, write bytes, reads, read bytes).
fn pages(stats: &Value) -> BTreeMap<(String, u64), [u64; 4]> {
    stats["hot_pages"]
        .as_array()
        .expect("hot_pages")
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().expect("a count");
            (
                (
                    p["device"].as_str().expect("device").to_owned(),
                    n("offset"),
                ),
                [n("writes"), n("write_bytes"), n("reads"), n("read_bytes")],
            )
        })
        .collect()
}

fn device(stats: &Value, name: &str) -> Value {
    stats["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .clone()
}

fn backing_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).expect("backing file");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut b = vec![0; len];
    f.read_exact(&mut b).expect("read");
    b
}

#[test]
fn timing_mode_charges_guest_cache_line_writes_to_their_pages() {
    charges_cache_line_writes(&TestLab::new("e2e-timing"), None, true);
}

/// The same checks with learning on (`[simulator] timing_learn`): the
/// writes' instructions are new code, instrumented until seen, so every
/// line is counted; records carry no instruction count in this mode.
#[test]
fn learning_mode_counts_the_same_cache_line_writes() {
    let lab = TestLab::new("e2e-timing-learn");
    let mut t = Topology::embedded_default();
    t.simulator.timing_learn = Some(true);
    let file = lab.topology_file(&t);
    charges_cache_line_writes(&lab, Some(file.clone()), false);
    let _ = std::fs::remove_file(&file);
}

/// `topology`: None for the embedded default (learning off). `save`: the
/// learning lab's topology is booted by no other test, so its state would
/// only fill the saved-state cap.
fn charges_cache_line_writes(lab: &TestLab, topology: Option<PathBuf>, save: bool) {
    let learning = topology.is_some();
    let opts = UpOptions {
        timing: true,
        topology,
        save,
        ..lab.options()
    };
    let summary = lab
        .rt
        .block_on(verbs::up(&opts, &Events::none()))
        .unwrap_or_else(|e| panic!("lab up --timing failed: {}", error_chain(&e)));
    let timing = summary.timing.clone().expect("timing mode state");
    assert!(!timing.windows.is_empty(), "{timing:?}");
    assert_eq!(timing.learning, learning, "{timing:?}");
    assert_eq!(
        cxl_lab::text::summary(&summary).contains("learning on (`timing_learn`)"),
        learning
    );
    let region = |name: &str| {
        timing
            .regions
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no region of {name}: {timing:?}"))
            .1
    };
    assert_ne!(region("vmem0"), region("pmem0"));
    let argv = verbs::args(&opts).expect("lab args");
    let plugin = argv
        .iter()
        .position(|a| a == "-plugin")
        .map(|i| argv[i + 1].clone())
        .expect("QEMU runs with -plugin");
    assert!(
        plugin.contains("libcxl_memsim_plugin.so,socket="),
        "{plugin}"
    );
    assert_eq!(plugin.contains(",learn=on"), learning, "{plugin}");

    let control = summary.simulator_control.clone();
    let ask = |line: &str| -> Value {
        let v = lab
            .rt
            .block_on(cxl_memsim::control::request(&control, line))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v.get("error").is_none(), "{line}: {v}");
        v
    };
    // Every access made so far is in the stats once flush returns.
    let stats = || {
        ask("plugin flush");
        ask("stats 1000000")
    };
    let write_line = |offset: u64| {
        lab.run(&[
            "dax-pattern",
            "write",
            "/dev/dax0.0",
            "--offset",
            &format!("{offset:#x}"),
            "--len",
            "64",
            "--seed",
            &SEED.to_string(),
        ]);
    };
    let vmem0 = summary
        .devices
        .iter()
        .find(|d| d.name == "vmem0")
        .expect("vmem0")
        .clone();
    assert_eq!(vmem0.dax.as_deref(), Some("/dev/dax0.0"));

    let before = stats();
    let p = &before["plugin"];
    assert_eq!(p["armed"], 1, "{p}");
    assert_eq!(p["connections"], 1, "{p}");
    for line in LINES {
        write_line(line);
    }
    let after = stats();
    let (b, a) = (pages(&before), pages(&after));
    let mut per_page: BTreeMap<u64, u64> = BTreeMap::new();
    for line in LINES {
        *per_page.entry(line / PAGE * PAGE).or_default() += 1;
        // The data is where the simulator says the access went: the
        // device offset of the charge is the offset in the backing file.
        let want: Vec<u8> = (0..64)
            .map(|i| dax_pattern::pattern_byte(SEED, line + i))
            .collect();
        assert_eq!(
            backing_bytes(&vmem0.backing, line, 64),
            want,
            "line {line:#x}"
        );
    }
    for (&page, &lines) in &per_page {
        let key = ("vmem0".to_owned(), page);
        let was = b.get(&key).copied().unwrap_or_default();
        let now = a
            .get(&key)
            .copied()
            .unwrap_or_else(|| panic!("no accesses charged to vmem0 page {page:#x}"));
        assert!(
            now[1] - was[1] >= 64 * lines && now[0] > was[0],
            "vmem0 page {page:#x}: {lines} line(s) written, write bytes {} -> {}",
            was[1],
            now[1]
        );
    }
    let written = |s: &Value, d: &str| device(s, d)["write_bytes"].as_u64().expect("bytes");
    assert!(written(&after, "vmem0") - written(&before, "vmem0") >= 64 * LINES.len() as u64);
    assert_eq!(
        written(&after, "pmem0"),
        written(&before, "pmem0"),
        "nothing written to pmem0"
    );
    let p = &after["plugin"];
    for counter in [
        "unmapped",
        "decode_errors",
        "plugin_dropped",
        "sequence_gaps",
        "truncated_bytes",
    ] {
        assert_eq!(p[counter], 0, "{counter}: {p}");
    }
    assert!(after["latency_ns"]["count"].as_u64() > before["latency_ns"]["count"].as_u64());
    // Instruction-count timestamps: per guest vCPU (2), growing.
    let icounts = |st: &Value| -> BTreeMap<String, u64> {
        st["plugin"]["vcpus"]
            .as_object()
            .expect("vcpus")
            .iter()
            .map(|(k, v)| (k.clone(), v["last_icount"].as_u64().expect("icount")))
            .collect()
    };
    let (i0, i1) = (icounts(&before), icounts(&after));
    assert!(
        !i1.is_empty() && i1.keys().all(|k| k == "0" || k == "1"),
        "{i1:?}"
    );
    if learning {
        assert!(
            i1.values().all(|&i| i == 0),
            "learning counts no instructions: {i1:?}"
        );
    } else {
        assert!(
            i1.values().sum::<u64>() > i0.values().sum::<u64>(),
            "instruction counts grow: {i0:?} -> {i1:?}"
        );
    }

    // Disarmed: the write lands but is not seen; re-armed: it is again.
    assert_eq!(ask("plugin disarm")["plugins"], 1);
    let quiet_line = 0x0200_0000;
    write_line(quiet_line);
    let disarmed = stats();
    assert_eq!(disarmed["plugin"]["armed"], 0);
    assert_eq!(
        written(&disarmed, "vmem0"),
        written(&after, "vmem0"),
        "a disarmed plugin reports nothing"
    );
    assert!(!pages(&disarmed).contains_key(&("vmem0".to_owned(), quiet_line)));
    assert_eq!(
        backing_bytes(&vmem0.backing, quiet_line, 1)[0],
        dax_pattern::pattern_byte(SEED, quiet_line)
    );
    let windows = timing.windows.join(" ");
    // The guest may be idle: keep it busy until the plugin acknowledged.
    let rearm = std::thread::scope(|s| {
        let h = s.spawn(|| ask(&format!("plugin arm {windows}")));
        while !h.is_finished() {
            lab.run(&["true"]);
        }
        h.join().expect("arm thread")
    });
    assert_eq!(rearm["plugins"], 1);
    write_line(quiet_line + PAGE);
    let rearmed = stats();
    let key = ("vmem0".to_owned(), quiet_line + PAGE);
    assert!(
        pages(&rearmed).get(&key).is_some_and(|c| c[1] >= 64),
        "re-armed plugin charges the write: {:?}",
        pages(&rearmed).get(&key)
    );
    lab.down();
}
