//! `lab bench boot` and `lab bench timing`.

use std::time::{Duration, Instant};

use cxl_memsim_wire::Command;
use cxl_topology::Topology;

use super::down::down;
use super::exec::agent;
use super::up::{up, UpOptions};
use crate::error::LabError;
use crate::events::Events;
use crate::image;
use crate::rundir::{BootKind, RunDir, Timings};
use crate::stall::{self, StallError, StallState};
use crate::stats::median;
use crate::summary::{
    AppExperiment, BootBench, BootStats, LearningCounts, RatioRow, TimingBench, WorkloadSlowdown,
};
use crate::timing::{self, TimingError};

/// `lab bench boot`: `runs` cold boots that save nothing, one cold boot
/// that saves the state (its save time in the runs, but in neither
/// median), then `runs` boots that restore it, each followed by `lab
/// down`, with a cached image; the medians of each kind's boot timings.
pub async fn bench_boot(
    opts: &UpOptions,
    runs: usize,
    events: &Events,
) -> Result<BootBench, LabError> {
    // Build (or find) the image first so every run measures a cached start.
    image::build(&opts.image, events)?;
    let mut timings = Vec::new();
    let cold = UpOptions {
        cold: true,
        save: false,
        ..opts.clone()
    };
    let saving = UpOptions {
        cold: true,
        save: true,
        ..opts.clone()
    };
    let restoring = UpOptions {
        cold: false,
        save: false,
        ..opts.clone()
    };
    let phases = [(&cold, runs), (&saving, 1), (&restoring, runs)];
    for (opts, n) in phases {
        for _ in 0..n {
            let s = up(opts, events).await?;
            down(&opts.name, events).await?;
            timings.push(s.timings);
        }
    }
    let cold = stats(&timings, BootKind::Cold).expect("cold runs");
    let restored = stats(&timings, BootKind::Restored);
    let speedup = restored.as_ref().map(|r| {
        let ratio = cold.median_regions_ready_ms as f64 / r.median_regions_ready_ms.max(1) as f64;
        (ratio * 10.0).round() / 10.0
    });
    Ok(BootBench {
        runs: timings,
        cold,
        restored,
        speedup,
    })
}

/// Medians of the runs that came up `kind`, if any did.
fn stats(timings: &[Timings], kind: BootKind) -> Option<BootStats> {
    let runs: Vec<&Timings> = timings
        .iter()
        .filter(|t| t.boot == kind && t.save_ms.is_none())
        .collect();
    if runs.is_empty() {
        return None;
    }
    let regions: Vec<u64> = runs.iter().map(|t| t.regions_ready_ms).collect();
    let agent: Vec<u64> = runs.iter().map(|t| t.agent_ready_ms).collect();
    let median_ms = |ms: &[u64]| {
        let ms: Vec<f64> = ms.iter().map(|&m| m as f64).collect();
        median(&ms).round() as u64
    };
    Some(BootStats {
        runs: runs.len(),
        median_agent_ready_ms: median_ms(&agent),
        median_regions_ready_ms: median_ms(&regions),
        min_regions_ready_ms: regions.iter().copied().min().unwrap_or(0),
        max_regions_ready_ms: regions.iter().copied().max().unwrap_or(0),
    })
}

/// `lab bench timing`: one `lab up --timing=stall` on `opts`' topology;
/// the two workloads of the README's overhead table armed (stall off) and
/// disarmed, `runs` times each; then the probe's CXL/local ratios with
/// stall off and with every device's read latency at `factors` times the
/// local latency; then `lab down`.
pub async fn bench_timing(
    opts: &UpOptions,
    runs: usize,
    factors: &[f64],
    events: &Events,
) -> Result<TimingBench, LabError> {
    let loadavg_start = crate::schedstat::loadavg_line();
    let opts = UpOptions {
        timing: true,
        stall: true,
        ..opts.clone()
    };
    let summary = up(&opts, events).await?;
    let measured = measure_timing(&opts.name, &summary, runs.max(1), factors).await;
    down(&opts.name, events).await?;
    let (stall, workloads, learning, ratios, application) = measured?;
    Ok(TimingBench {
        loadavg_start,
        loadavg_end: crate::schedstat::loadavg_line(),
        runs: runs.max(1),
        stall,
        workloads,
        learning,
        ratios,
        application,
    })
}

type Measured = (
    StallState,
    Vec<WorkloadSlowdown>,
    Option<LearningCounts>,
    Vec<RatioRow>,
    Option<AppExperiment>,
);

/// The plugin's learning counters, sent at a flush.
async fn learning_counts(control: &std::path::Path) -> Result<LearningCounts, LabError> {
    stall::control(control, "plugin flush").await?;
    let v = cxl_memsim_wire::control::request(control, "stats")
        .await
        .map_err(StallError::from)?;
    let n = |k: &str| v["plugin"][k].as_u64().unwrap_or(0);
    Ok(LearningCounts {
        left_out: n("left_out"),
        prunes: n("prunes"),
        relearned: n("relearned"),
    })
}

async fn measure_timing(
    name: &str,
    summary: &crate::summary::Summary,
    runs: usize,
    factors: &[f64],
) -> Result<Measured, LabError> {
    let run = RunDir::new(name)?;
    let control = run.memsim_control();
    let state = run
        .load()?
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let outcome = state
        .regions
        .clone()
        .ok_or_else(|| LabError::NotUp(name.to_owned()))?;
    let topology = Topology::load(Some(&run.topology_file()))?;
    let timing = summary.timing.clone().ok_or(TimingError::NoWindow)?;
    let stall_state = timing.stall.clone().ok_or(StallError::NoProbeTarget)?;
    let agent = agent(name).await?;
    let target = stall::probe_target(&outcome).ok_or(StallError::NoProbeTarget)?;
    // The README table's workloads write a dax device: none without one.
    let workloads: Vec<Vec<String>> = match outcome.regions.iter().find_map(|r| r.dax.clone()) {
        Some(dax) => [
            format!("dax-pattern write {dax} --offset 0 --len 4M"),
            "data-generator -f /tmp/bench-timing.dat -s 16 -p random".to_owned(),
        ]
        .iter()
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .collect(),
        None => Vec::new(),
    };
    // One run more than measured, first: the guest's page cache, and with
    // learning the plugin, start each workload's measured runs warm. The
    // first run's time is reported apart (with learning, it pays the
    // learning); the median is of the others.
    let wall = |argv: Vec<String>| {
        let agent = &agent;
        async move {
            let mut secs = Vec::new();
            for _ in 0..=runs {
                let t = Instant::now();
                let out = agent
                    .exec(&argv[0], &argv[1..], Duration::from_secs(600))
                    .await
                    .map_err(|e| LabError::Guest(Box::new(e)))?;
                secs.push(t.elapsed().as_secs_f64());
                if !out.success() {
                    return Err(StallError::GuestFailed {
                        command: argv.join(" "),
                        code: out.exit_code,
                        stderr: out.stderr.trim().to_owned(),
                    }
                    .into());
                }
            }
            Ok::<(f64, f64), LabError>((secs[0], median(&secs[1..])))
        }
    };
    // Armed and observing only: the README table's "armed" column.
    stall::control(&control, "plugin stall off").await?;
    let mut armed = Vec::new();
    for w in &workloads {
        armed.push(wall(w.clone()).await?);
    }
    let learning = match timing.learning {
        true => Some(learning_counts(&control).await?),
        false => None,
    };
    let mut slowdowns = Vec::new();
    if !workloads.is_empty() {
        timing::arm_windows(&control, &agent, &[], ARM_TIMEOUT).await?;
        for (w, (first_armed, a)) in workloads.iter().zip(armed) {
            let (first_disarmed, d) = wall(w.clone()).await?;
            slowdowns.push(WorkloadSlowdown {
                workload: w.join(" "),
                armed_s: a,
                disarmed_s: d,
                slowdown: a / d.max(1e-9),
                first_armed_s: first_armed,
                first_disarmed_s: first_disarmed,
            });
        }
        timing::arm_windows(&control, &agent, &timing.windows, ARM_TIMEOUT).await?;
    }

    let mut ratios = Vec::new();
    for factor in std::iter::once(None).chain(factors.iter().copied().map(Some)) {
        let model = match factor {
            None => {
                stall::control(&control, "plugin stall off").await?;
                None
            }
            Some(f) => {
                let mut t = topology.clone();
                let local = t.simulator.local_latency_ns();
                for d in &mut t.devices {
                    d.read_latency_ns = Some((f * local as f64).round() as u64);
                }
                let c = &stall_state.calibration;
                let calibration = stall::Calibration::new(
                    c.placement.clone(),
                    c.local_ns_per_load,
                    c.cxl_ns_per_load,
                    &t,
                );
                let devices = stall::device_stalls(&t, &calibration);
                let table = stall::table(&outcome, &calibration, &devices);
                stall::control(&control, &format!("plugin {}", Command::Stall(table))).await?;
                // The probed device's ratio (the first region's first member).
                let probed = outcome
                    .regions
                    .iter()
                    .find(|r| r.dax.is_some() || r.numa_node.is_some())
                    .and_then(|r| r.members.first())
                    .and_then(|m| devices.iter().find(|d| d.device == m.device))
                    .map(|d| d.model_latency_ratio);
                probed
            }
        };
        // 5 rounds: a median that one slow stretch of the machine does not move.
        let report = stall::probe(&agent, &stall::probe_args(&target, 5)).await?;
        let f = |side: &str, key: &str| report[side][key].as_f64().unwrap_or(0.0);
        ratios.push(RatioRow {
            setting: factor.map_or("stall off".into(), |f| format!("{f}x")),
            model_latency_ratio: model,
            model_bandwidth_ratio: model.map(|m| 1.0 / m),
            guest_latency_ratio: report["latency_ratio"].as_f64().unwrap_or(0.0),
            guest_bandwidth_ratio: report["bandwidth_ratio"].as_f64().unwrap_or(0.0),
            guest_local_ns_per_load: f("local", "chase_ns_per_load"),
            guest_cxl_ns_per_load: f("cxl", "chase_ns_per_load"),
            guest_local_mb_per_s: f("local", "stream_mb_per_s"),
            guest_cxl_mb_per_s: f("cxl", "stream_mb_per_s"),
        });
    }
    // The lab's own table back, for the application experiment.
    stall::control(&control, &stall_state.command).await?;
    let application = match outcome.regions.iter().find(|r| r.numa_node.is_some()) {
        Some(r) => Some(application(&control, &agent, r, &stall_state, runs).await?),
        None => None,
    };
    Ok((stall_state, slowdowns, learning, ratios, application))
}

/// The application experiment's workload: random page writes over a
/// mapped 4 MiB file, each first one to a page a copy-on-write copy placed
/// by the memory policy (`numactl --membind`), then a write to it.
const APP_FILE: &str = "/tmp/bench-app.dat";
const APP_WORKLOAD: &str = "mmap-workload -f /tmp/bench-app.dat -p random -c 2000 --json";

/// Runs [`APP_WORKLOAD`] bound to node 0 (local RAM) and to the region's
/// node in turn, `runs` times each, with the lab's stall table in force.
async fn application(
    control: &std::path::Path,
    agent: &crate::qga::Agent,
    region: &cxl_regions::plan::RegionOutcome,
    stall_state: &StallState,
    runs: usize,
) -> Result<AppExperiment, LabError> {
    let cxl_node = region.numa_node.unwrap_or_default();
    let device = region
        .members
        .first()
        .map(|m| m.device.clone())
        .unwrap_or_default();
    let model_latency_ratio = stall_state
        .devices
        .iter()
        .find(|d| d.device == device)
        .map_or(0.0, |d| d.model_latency_ratio);
    let exec = |argv: Vec<String>| async move {
        let out = agent
            .exec(&argv[0], &argv[1..], Duration::from_secs(600))
            .await
            .map_err(|e| LabError::Guest(Box::new(e)))?;
        if !out.success() {
            return Err(LabError::from(StallError::GuestFailed {
                command: argv.join(" "),
                code: out.exit_code,
                stderr: out.stderr.trim().to_owned(),
            }));
        }
        Ok(out.stdout)
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    // The file is written unstalled: every user-space store would be
    // held (16 MiB did not finish in 10 minutes).
    stall::control(control, "plugin stall off").await?;
    exec(words(&format!(
        "data-generator -f {APP_FILE} -s 4 -p sequential"
    )))
    .await?;
    stall::control(control, &stall_state.command).await?;
    let bound = |node: i64| words(&format!("numactl --membind={node} {APP_WORKLOAD}"));
    let elapsed = |stdout: String, node: i64| -> Result<f64, LabError> {
        serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| v["elapsed_ms"].as_f64())
            .ok_or_else(|| {
                StallError::BadReport(format!(
                    "no elapsed_ms from {APP_WORKLOAD} on node {node}: {stdout}"
                ))
                .into()
            })
    };
    let (mut local_ms, mut cxl_ms) = (Vec::new(), Vec::new());
    // Alternating, so a change in the machine's speed touches both.
    for _ in 0..runs {
        local_ms.push(elapsed(exec(bound(0)).await?, 0)?);
        cxl_ms.push(elapsed(exec(bound(cxl_node)).await?, cxl_node)?);
    }
    exec(words(&format!("rm -f {APP_FILE}"))).await?;
    Ok(AppExperiment {
        workload: APP_WORKLOAD.to_owned(),
        local_node: 0,
        cxl_node,
        device,
        model_latency_ratio,
        slowdown: median(&cxl_ms) / median(&local_ms).max(1e-9),
        local_ms,
        cxl_ms,
    })
}

const ARM_TIMEOUT: Duration = Duration::from_secs(60);
