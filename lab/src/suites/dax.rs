//! `lab run dax`: `dax-tester … all --json` on every dax device.
//!
//! dax-tester writes its whole range. On a volatile device that is scratch
//! memory; a persistent device's data must outlive the suite, so the host
//! copies the range out of the device's backing file before the test and
//! writes it back after ([`device_data`](crate::suite_support::device_data)). A failed restore is a suite
//! error that says where the copy is.

use cxl_topology::DeviceKind;
use serde_json::{json, Value};

use crate::suite_support::device_data;
use crate::suite_support::{SuiteContext, SuiteError};

/// How much of each device the tester uses. QEMU serves CXL windows
/// through MMIO callbacks, so under TCG every guest access to CXL memory is
/// slow (measured: the 64 MiB byte test alone takes about 45 s per device).
/// 20 MiB runs the byte sizes up to 16 MiB; dax-tester reports the 64 MiB
/// size as SKIP with its reason (the host tests cover it).
const RANGE: &str = "20M";
const RANGE_BYTES: u64 = 20 << 20;

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    // The members of an interleaved region share its dax device: test it
    // once, under its first member.
    let mut seen = std::collections::HashSet::new();
    let devices: Vec<_> = ctx
        .summary
        .devices
        .iter()
        .filter(|d| d.dax.as_ref().is_some_and(|dax| seen.insert(dax.clone())))
        .collect();
    if devices.is_empty() {
        return Err(SuiteError::NoDax("dax"));
    }
    let mut results = Vec::new();
    let mut all_passed = true;
    for d in devices {
        let dax = d.dax.clone().unwrap_or_default();
        // Short timings: the guest runs under TCG on a shared machine.
        let argv: Vec<String> = [
            "dax-tester",
            &dax,
            "0",
            RANGE,
            "all",
            "--json",
            "--threads",
            "2",
            "--duration-ms",
            "300",
            "--latency-samples",
            "2000",
            "--atomic-ops",
            "20000",
            "--wakeups",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let persistent = d.kind == DeviceKind::Persistent;
        let chardev = dax.trim_start_matches("/dev/");
        let saved = match persistent {
            true => Some(device_data::save(ctx, d, chardev, "dax", 0, Some(RANGE_BYTES)).await?),
            false => None,
        };
        let tested = ctx.exec_json(&argv).await;
        if let Some(saved) = &saved {
            device_data::restore(ctx, saved, chardev).await?;
        }
        let (report, code) = tested?;
        let passed = code == 0 && report.get("passed").and_then(Value::as_bool) == Some(true);
        all_passed &= passed;
        results.push(json!({
            "device": d.name,
            "kind": d.kind,
            "dax": dax,
            "range": { "offset": 0, "size": RANGE },
            // Reached only when the restore succeeded (else the suite errs).
            "data": device_data::data_fate(persistent),
            "passed": passed,
            "report": report,
        }));
    }
    Ok(json!({ "suite": "dax", "passed": all_passed, "devices": results }))
}
