//! Stall mode end to end: `lab up` with `[simulator] timing = "stall"` on
//! the default topology with vmem0's reads at 2.5x the local latency;
//! `mem-probe` in the guest chases pointers on /dev/dax0.0 and in local
//! RAM. With the stalls the CXL/local latency ratio it measures must be
//! well above 1 (over 1.5). With the model off (every device at the local
//! latency, TCG's costs measured again just before) it must stay near 1
//! (under 1.2).
//! Ratios, never timed thresholds: both sides of a ratio run on the same
//! loaded machine within the same second.

use cxl_lab::stall::{self, Calibration};
use cxl_memsim_wire::Command;
use cxl_topology::{TimingMode, Topology};
use lab_e2e::TestLab;
use serde_json::{json, Value};

const PROBE: [&str; 12] = [
    "mem-probe",
    "--cxl",
    "dax:/dev/dax0.0",
    "--size",
    "1M",
    "--loads",
    "100000",
    "--passes",
    "1",
    "--rounds",
    "3",
    "--json",
];

fn probe(lab: &TestLab) -> Value {
    let out = lab.run(&PROBE);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("mem-probe's report ({e}): {out}"))
}

/// The regions the guest built, from the lab's saved state.
fn regions(lab: &TestLab) -> cxl_regions::plan::Outcome {
    let run = cxl_lab::rundir::RunDir::new(&lab.name).expect("run dir");
    run.load()
        .expect("the lab's state")
        .and_then(|s| s.regions)
        .expect("regions in the lab's state")
}

#[test]
fn stall_mode_makes_cxl_loads_slower_by_the_models_ratio() {
    let lab = TestLab::new("e2e-stall");
    let mut t = Topology::embedded_default();
    t.devices[0].read_latency_ns = Some(250);
    t.simulator.timing = TimingMode::Stall;
    let file = lab.topology_file(&t);
    let summary = lab.up_with_topology(&file);
    let st = summary
        .timing
        .as_ref()
        .and_then(|t| t.stall.clone())
        .unwrap_or_else(|| panic!("no stall state in {summary:?}"));
    let c = &st.calibration;
    assert!(
        c.local_ns_per_load > 0.0 && c.cxl_ns_per_load > 0.0 && c.wall_ns_per_model_ns > 0.0,
        "{c:?}"
    );

    let stalled = probe(&lab);
    let ratio = stalled["latency_ratio"].as_f64().expect("latency_ratio");
    assert!(
        ratio > 1.5,
        "with a 2.5x model the guest's CXL/local latency ratio is {ratio:.2}, not above 1.5: {stalled}\nstall: {st:?}"
    );

    // The model off: TCG's costs measured again (stall off), then every
    // device at the local latency, through the lab's own formulas.
    let send = |line: &str| {
        lab.rt
            .block_on(stall::control(&summary.simulator_control, line))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    send("plugin stall off");
    let tcg = probe(&lab);
    let mut model_off = t.clone();
    let local = model_off.simulator.local_latency_ns();
    for d in &mut model_off.devices {
        d.read_latency_ns = Some(local);
    }
    let fresh = Calibration::new(
        c.placement.clone(),
        stall::ns_per_load(&tcg, "local").expect("local ns per load"),
        stall::ns_per_load(&tcg, "cxl").expect("cxl ns per load"),
        &model_off,
    );
    let devices = stall::device_stalls(&model_off, &fresh);
    let table = stall::table(&regions(&lab), &fresh, &devices);
    send(&format!("plugin {}", Command::Stall(table)));
    let off = probe(&lab);
    let off_ratio = off["latency_ratio"].as_f64().expect("latency_ratio");
    assert!(
        off_ratio < 1.2,
        "with every device at the local latency the guest's CXL/local latency ratio is {off_ratio:.2}, not under 1.2: {off}\ncalibration: {fresh:?}\nstall off: {tcg}"
    );
    eprintln!(
        "CXL/local latency: {ratio:.2} with a 2.5x model, {off_ratio:.2} with the model off, {:.2} with stall off",
        tcg["latency_ratio"]
    );

    // What the lab recorded, measured figures left out.
    let devices: Vec<Value> = st
        .devices
        .iter()
        .map(|d| {
            json!({
                "device": d.device,
                "modelled": d.modelled,
                "model_latency_ratio": (d.model_latency_ratio * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    insta::assert_json_snapshot!(
        "stall_devices",
        json!({"local_latency_ns": st.local_latency_ns, "placement": c.placement, "devices": devices})
    );
    let _ = std::fs::remove_file(&file);
}
