//! Interleaved regions end to end: every topology preset boots (default
//! and dcd in the tests of their own); every region the kernel built has
//! the ways and granularity the topology declares (`cxl list -R` in the
//! guest); and on the presets with interleaved regions, a pattern the
//! guest writes through each region's dax device lands in the members'
//! backing files exactly where the CXL interleave arithmetic puts it.
//! Presets boot one after the other: boots share the machine's two cores.

use std::path::{Path, PathBuf};

use cxl_lab::events::Events;
use cxl_lab::striping::{self, StripeCheck};
use cxl_lab::suites::Suite;
use cxl_lab::verbs::{self, UpOptions};
use cxl_regions::plan::Outcome;
use cxl_topology::Topology;
use lab_e2e::TestLab;

/// Bytes of each region the striping check writes and reads back: 256
/// granules of 16K at least on every member of a 4-way region at 4K.
const CHECK_LEN: u64 = 4 << 20;
const SEED: u64 = 0x5712_1fe5;

fn outcome(run_dir: &Path) -> Outcome {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("state.json")).expect("reading the lab's state.json"),
    )
    .expect("state.json is JSON");
    serde_json::from_value(state["regions"].clone()).expect("state.json holds the regions' outcome")
}

fn sysfs_number(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a sysfs number: {s:?}"))
}

/// Boots `preset` (in timing mode when `timing`), compares the kernel's
/// regions with the topology's and runs the striping check on every
/// interleaved dax region; in timing mode, also that the simulator charges
/// each granule's access to the device that holds it.
fn check_preset(preset: &str, timing: bool) -> Vec<StripeCheck> {
    let lab = TestLab::new(&format!("e2e-{preset}"));
    let opts = UpOptions {
        topology: Some(PathBuf::from(preset)),
        timing,
        ..lab.options()
    };
    let summary = lab
        .rt
        .block_on(verbs::up(&opts, &Events::none()))
        .unwrap_or_else(|e| panic!("lab up {preset} failed: {}", lab_e2e::error_chain(&e)));
    let topology = Topology::load(Some(Path::new(preset))).expect("the preset loads");
    let declared = topology.region_layouts();
    let outcome = outcome(&summary.run_dir);
    assert_eq!(
        outcome.regions.len(),
        declared.len(),
        "{preset}: one kernel region per topology region: {outcome:#?}"
    );

    // What the kernel reports, through ndctl's own listing.
    let listed: serde_json::Value =
        serde_json::from_str(&lab.run(&["cxl", "list", "-R"])).expect("cxl list -R prints JSON");
    let listed = listed.as_array().cloned().unwrap_or_else(|| vec![listed]);
    for r in &declared {
        let got = outcome
            .regions
            .iter()
            .find(|o| o.name == r.name)
            .unwrap_or_else(|| panic!("{preset}: no outcome for region {}", r.name));
        let kernel = listed
            .iter()
            .find(|l| l["region"] == got.region.as_str())
            .unwrap_or_else(|| panic!("{preset}: cxl list -R has no {}: {listed:#?}", got.region));
        assert_eq!(
            (
                kernel["interleave_ways"].as_u64(),
                kernel["interleave_granularity"].as_u64()
            ),
            (Some(r.ways() as u64), Some(r.granularity)),
            "{preset}: region {} ({}) as cxl list -R shows it",
            r.name,
            got.region
        );
        let names: Vec<String> = r
            .devices
            .iter()
            .map(|&i| topology.devices[i].name.clone())
            .collect();
        let members: Vec<String> = got.members.iter().map(|m| m.device.clone()).collect();
        assert_eq!(
            members, names,
            "{preset}: {} targets in position order",
            r.name
        );
    }

    let backing: Vec<(String, PathBuf)> = summary
        .devices
        .iter()
        .map(|d| (d.name.clone(), d.backing.clone()))
        .collect();
    let backing_of = |device: &str| -> PathBuf {
        backing
            .iter()
            .find(|(n, _)| n == device)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no backing file for {device}"))
    };
    let mut checks = Vec::new();
    for region in outcome.regions.iter().filter(|r| r.ways > 1) {
        let dax = region
            .dax
            .as_deref()
            .expect("interleaved presets make dax regions");
        let chardev = dax.trim_start_matches("/dev/");
        // A pmem namespace's data starts after its info block: the dax
        // device's physical start says where in the region it is.
        let start =
            sysfs_number(&lab.run(&["cat", &format!("/sys/bus/dax/devices/{chardev}/resource")]));
        let dax_offset = start - region.start;
        lab.run(&[
            "dax-pattern",
            "write",
            dax,
            "--offset",
            "0",
            "--len",
            &CHECK_LEN.to_string(),
            "--seed",
            &SEED.to_string(),
        ]);
        let expected = |region_offset: u64, buf: &mut [u8]| {
            dax_pattern::fill(buf, SEED, region_offset - dax_offset);
        };
        let check = striping::verify(region, &backing_of, dax_offset, CHECK_LEN, &expected)
            .unwrap_or_else(|e| {
                panic!(
                    "{preset}: striping check of {}: {}",
                    region.name,
                    lab_e2e::error_chain(&e)
                )
            });
        assert!(check.passed(), "{preset}: {check:#?}");
        checks.push(check);
        if timing {
            charges_follow_the_decode(&lab, &summary.simulator_control, region, dax_offset);
        }
    }
    if preset == "switched" {
        suites_pass(&lab, &summary.simulator_control);
    }
    checks
}

/// The dax and faults suites pass on the interleaved region (with the
/// timing plugin disarmed: armed, it slows every guest access). fio maps
/// the region's dax device as the dax suite does; it runs on the default
/// topology and on a second kernel.
fn suites_pass(lab: &TestLab, control: &Path) {
    let v = lab
        .rt
        .block_on(cxl_memsim::control::request(control, "plugin disarm"))
        .unwrap_or_else(|e| panic!("plugin disarm: {e}"));
    assert!(v.get("error").is_none(), "plugin disarm: {v}");
    let suites = [Suite::Dax, Suite::Faults];
    let results = lab
        .rt
        .block_on(verbs::run_suites(&lab.name, &suites, &Events::none()))
        .unwrap_or_else(|e| panic!("lab run on switched: {}", lab_e2e::error_chain(&e)))
        .suites;
    for r in &results {
        let detail = std::fs::read_to_string(&r.result_file).unwrap_or_default();
        assert!(
            r.passed,
            "suite {} on switched: {:?}\n{}",
            r.suite,
            r.error,
            &detail[..detail.len().min(4000)]
        );
    }
    assert_eq!(results.len(), 2);
}

/// Writes one cache line at the start of each of the first 2 x ways
/// granules of `region` and checks, in the simulator's stats, that each
/// was charged to the member the interleave puts it on, on the page it
/// has there.
fn charges_follow_the_decode(
    lab: &TestLab,
    control: &Path,
    region: &cxl_regions::plan::RegionOutcome,
    dax_offset: u64,
) {
    let ask = |line: &str| -> serde_json::Value {
        let v = lab
            .rt
            .block_on(cxl_memsim::control::request(control, line))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v.get("error").is_none(), "{line}: {v}");
        v
    };
    let writes_on = |stats: &serde_json::Value, device: &str, page: u64| -> u64 {
        stats["hot_pages"]
            .as_array()
            .expect("hot_pages")
            .iter()
            .filter(|p| p["device"] == device && p["offset"].as_u64() == Some(page))
            .map(|p| p["writes"].as_u64().unwrap_or(0))
            .sum()
    };
    let decode = cxl_topology::Interleave {
        ways: region.ways,
        granularity: region.granularity,
    };
    let dax = region.dax.as_deref().expect("a dax region");
    // Region offsets of the lines: granule starts past the dax offset.
    let first = dax_offset.div_ceil(region.granularity);
    let lines: Vec<u64> = (first..first + 2 * region.ways)
        .map(|k| k * region.granularity)
        .collect();
    ask("plugin flush");
    let before = ask("stats 1000000");
    for &line in &lines {
        lab.run(&[
            "dax-pattern",
            "write",
            dax,
            "--offset",
            &(line - dax_offset).to_string(),
            "--len",
            "64",
            "--seed",
            "3",
        ]);
    }
    ask("plugin flush");
    let after = ask("stats 1000000");
    for &line in &lines {
        let place = decode.locate(line);
        let device = &region.members[place.position].device;
        let page = (region.members[place.position].dpa_base + place.device_offset) / 4096 * 4096;
        assert!(
            writes_on(&after, device, page) > writes_on(&before, device, page),
            "region {} offset {line:#x}: no write charged to {device} page {page:#x}",
            region.name
        );
    }
}

#[test]
fn presets_boot_with_their_regions_and_interleaved_ones_stripe_as_the_spec_says() {
    let mut all = Vec::new();
    // switched in timing mode: the simulator must follow its decode too.
    for preset in ["switched", "two-bridges", "run-qemu"] {
        all.push((preset, check_preset(preset, preset == "switched")));
    }
    insta::assert_json_snapshot!("striping_checks", all, {
        "[][1][].offset" => "[dax offset]",
    });
    // default and dcd boot in the tests of their own (every other test's
    // lab, dcd.rs).
    memory_tier_is_a_numa_node_numactl_can_bind_to();
    fsdax_region_is_a_pmem_block_device();
}

/// A persistent device in fsdax mode comes up as `/dev/pmemN`, a block
/// device of the region's size less the namespace's metadata.
fn fsdax_region_is_a_pmem_block_device() {
    let dir = std::env::temp_dir().join(format!("cxl-lab-fsdax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let topology = dir.join("fsdax.toml");
    // The default topology with its persistent device in fsdax mode.
    let fsdax = cxl_topology::DEFAULT_TOPOLOGY_TOML
        .replace("lsa_size = \"1M\"", "lsa_size = \"1M\"\nmode = \"fsdax\"");
    assert_ne!(fsdax, cxl_topology::DEFAULT_TOPOLOGY_TOML);
    std::fs::write(&topology, fsdax).expect("writing the fsdax topology");
    let lab = TestLab::new("e2e-fsdax-default");
    let summary = lab.up_with_topology(&topology);
    let region = summary
        .regions
        .iter()
        .find(|r| r.devices == ["pmem0"])
        .unwrap_or_else(|| panic!("no region of pmem0: {:#?}", summary.regions));
    let pmem = region
        .pmem
        .clone()
        .unwrap_or_else(|| panic!("an fsdax region has a pmem device: {region:#?}"));
    assert_eq!(region.dax, None);
    let sectors: u64 = lab
        .run(&[
            "cat",
            &format!("/sys/block/{}/size", pmem.trim_start_matches("/dev/")),
        ])
        .trim()
        .parse()
        .expect("the block device's size in sectors");
    let size = sectors * 512;
    assert!(
        size > 200 << 20 && size <= 256 << 20,
        "{pmem} is {size} bytes"
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes of the tiering device's backing file that are not zero, by page.
fn nonzero_pages(path: &Path) -> usize {
    let data = std::fs::read(path).expect("reading the backing file");
    data.chunks(4096)
        .filter(|p| p.iter().any(|&b| b != 0))
        .count()
}

/// `tiering` in timing mode: its device is a NUMA node of its own, and a
/// program bound to it with `numactl --membind` has its memory there: the
/// simulator is charged its writes and the backing file fills; bound to
/// node 0, the same program leaves the device almost untouched.
fn memory_tier_is_a_numa_node_numactl_can_bind_to() {
    let lab = TestLab::new("e2e-tiering");
    let opts = UpOptions {
        topology: Some(PathBuf::from("tiering")),
        timing: true,
        ..lab.options()
    };
    let summary = lab
        .rt
        .block_on(verbs::up(&opts, &Events::none()))
        .unwrap_or_else(|e| panic!("lab up tiering failed: {}", lab_e2e::error_chain(&e)));
    let outcome = outcome(&summary.run_dir);
    let node = outcome.regions[0]
        .numa_node
        .expect("the tiering device is a NUMA node");
    assert_ne!(
        node, 0,
        "the CXL memory is a node of its own, not the CPUs' node 0"
    );
    let hardware = lab.run(&["numactl", "--hardware"]);
    assert!(
        hardware.contains(&format!("node {node} size:")),
        "numactl sees node {node}: {hardware}"
    );
    let control = summary.simulator_control.clone();
    let write_bytes = || -> u64 {
        let ask = |line: &str| {
            lab.rt
                .block_on(cxl_memsim::control::request(&control, line))
                .unwrap_or_else(|e| panic!("{line}: {e}"))
        };
        ask("plugin flush");
        let stats = ask("stats 1");
        stats["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == "vmem0")
            .and_then(|d| d["write_bytes"].as_u64())
            .unwrap_or_else(|| panic!("vmem0's write bytes in {stats}"))
    };
    let backing = summary.devices[0].backing.clone();
    // dd's 16 MiB buffer is written by every read from /dev/urandom.
    let dd = |membind: &str| {
        lab.run(&[
            "numactl",
            &format!("--membind={membind}"),
            "dd",
            "if=/dev/urandom",
            "of=/dev/null",
            "bs=16M",
            "count=2",
        ]);
    };
    let (w0, p0) = (write_bytes(), nonzero_pages(&backing));
    dd("0");
    let (w1, p1) = (write_bytes(), nonzero_pages(&backing));
    dd(&node.to_string());
    let (w2, p2) = (write_bytes(), nonzero_pages(&backing));
    const BUFFER: u64 = 16 << 20;
    assert!(
        w2 - w1 >= BUFFER,
        "bound to node {node}, dd's buffer is written on vmem0: {} bytes charged",
        w2 - w1
    );
    assert!(
        (w1 - w0) * 4 < w2 - w1,
        "bound to node 0, far fewer writes reach vmem0: {} vs {}",
        w1 - w0,
        w2 - w1
    );
    assert!(
        p2 - p1 >= (BUFFER / 4096) as usize / 2,
        "the backing file holds the buffer's pages: {} new non-zero pages (node 0 run: {})",
        p2 - p1,
        p1 - p0
    );
}
