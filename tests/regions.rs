//! Interleaved regions end to end: every topology preset boots; every
//! region the kernel built has the ways and granularity the topology
//! declares (`cxl list -R` in the guest); and on the presets with
//! interleaved regions, a pattern the guest writes through each region's
//! dax device lands in the members' backing files exactly where the CXL
//! interleave arithmetic puts it. Presets boot one after the other: boots
//! share the machine's two cores.

use std::path::{Path, PathBuf};

use cxl_lab::striping::{self, StripeCheck};
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

/// Boots `preset`, compares the kernel's regions with the topology's and
/// runs the striping check on every interleaved dax region.
fn check_preset(preset: &str) -> Vec<StripeCheck> {
    let lab = TestLab::new(&format!("e2e-{preset}"));
    let summary = lab.up_with_topology(Path::new(preset));
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
    }
    checks
}

#[test]
fn presets_boot_with_their_regions_and_interleaved_ones_stripe_as_the_spec_says() {
    let mut all = Vec::new();
    for preset in ["switched", "two-bridges", "run-qemu"] {
        all.push((preset, check_preset(preset)));
    }
    insta::assert_json_snapshot!("striping_checks", all, {
        "[][1][].offset" => "[dax offset]",
    });
    for preset in ["default", "tiering", "dcd"] {
        let lab = TestLab::new(&format!("e2e-{preset}"));
        let summary = lab.up_with_topology(Path::new(preset));
        let outcome = outcome(&summary.run_dir);
        let topology = Topology::load(Some(Path::new(preset))).expect("the preset loads");
        assert_eq!(
            outcome.regions.len(),
            topology.region_layouts().len(),
            "{preset}"
        );
        if preset == "tiering" {
            let node = outcome.regions[0]
                .numa_node
                .expect("the tiering device is a NUMA node");
            assert_ne!(
                node, 0,
                "the CXL memory is a node of its own, not the CPUs' node 0"
            );
            let online = lab.run(&["cat", "/sys/devices/system/node/online"]);
            assert!(
                online.trim().ends_with(&node.to_string()),
                "node {node} is online: {online}"
            );
        }
    }
}
