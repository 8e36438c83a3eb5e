//! `lab soak --cycles N`: N × (`lab up`, `lab run dax`, `lab down`), each
//! cycle checked for failures and for what `lab down` left behind, and the
//! boot times compared from first to last cycle (drift). Not for CI: a
//! cycle takes a minute or more under TCG.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use super::down::down;
use super::run::run_suites;
use super::up::{up, UpOptions};
use crate::error::{error_chain, io_err, LabError};
use crate::events::Events;
use crate::image;
use crate::leftovers::{self, Leftovers};
use crate::rundir::RunDir;
use crate::stats::median;
use crate::suites::Suite;

/// One cycle of the soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakCycle {
    pub cycle: usize,
    /// Up, `run dax` and down all succeeded and the suite passed.
    pub ok: bool,
    /// The step that failed (`up`, `run dax`, `down`) and why.
    pub failed: Option<String>,
    pub error: Option<String>,
    /// How the guest came up (the first cycle of a key cold, then
    /// restored from the state it saved).
    pub boot: Option<crate::rundir::BootKind>,
    pub agent_ready_ms: Option<u64>,
    pub regions_ready_ms: Option<u64>,
    pub run_ms: Option<u64>,
    pub down_ms: Option<u64>,
    /// What was left after `lab down`.
    pub leftovers: Leftovers,
}

/// Boot time (regions ready) across the cycles that booted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BootDrift {
    pub booted: usize,
    pub first_ms: u64,
    pub last_ms: u64,
    pub min_ms: u64,
    pub median_ms: u64,
    pub max_ms: u64,
    /// Medians of the first and the second half of the boots.
    pub first_half_median_ms: u64,
    pub second_half_median_ms: u64,
    /// Least-squares slope of boot time over the cycle number: how much
    /// slower each boot was than the one before, on average.
    pub trend_ms_per_cycle: f64,
}

/// What `lab soak` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub name: String,
    pub cycles_asked: usize,
    pub cycles: Vec<SoakCycle>,
    pub failures: usize,
    /// Cycles after whose `lab down` something was left.
    pub cycles_with_leftovers: usize,
    pub boot: BootDrift,
    pub elapsed_s: f64,
    /// Where each cycle's record was appended as it finished (JSON lines).
    pub log: std::path::PathBuf,
}

/// Least-squares slope of `ys` over their (cycle) positions `xs`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// Boot-time figures of the cycles that booted.
pub fn drift(cycles: &[SoakCycle]) -> BootDrift {
    let boots: Vec<(f64, f64)> = cycles
        .iter()
        .filter_map(|c| Some((c.cycle as f64, c.regions_ready_ms? as f64)))
        .collect();
    if boots.is_empty() {
        return BootDrift::default();
    }
    let ms: Vec<f64> = boots.iter().map(|b| b.1).collect();
    let (a, b) = ms.split_at(ms.len() / 2);
    let med = |v: &[f64]| median(v).round() as u64;
    BootDrift {
        booted: boots.len(),
        first_ms: ms[0] as u64,
        last_ms: ms[ms.len() - 1] as u64,
        min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min) as u64,
        median_ms: med(&ms),
        max_ms: ms.iter().copied().fold(0.0, f64::max) as u64,
        first_half_median_ms: med(if a.is_empty() { b } else { a }),
        second_half_median_ms: med(b),
        trend_ms_per_cycle: (slope(&boots) * 10.0).round() / 10.0,
    }
}

/// One cycle: up, `run dax`, down, then what was left.
async fn cycle(opts: &UpOptions, run: &RunDir, n: usize, events: &Events) -> SoakCycle {
    let mut c = SoakCycle {
        cycle: n,
        ..SoakCycle::default()
    };
    let fail = |c: &mut SoakCycle, step: &str, error: String| {
        if c.failed.is_none() {
            c.failed = Some(step.to_owned());
            c.error = Some(error);
        }
    };
    match up(opts, events).await {
        Ok(s) => {
            c.boot = Some(s.timings.boot);
            c.agent_ready_ms = Some(s.timings.agent_ready_ms);
            c.regions_ready_ms = Some(s.timings.regions_ready_ms);
            let t = Instant::now();
            match run_suites(&opts.name, &[Suite::Dax], events).await {
                Ok(r) => {
                    if let Some(r) = r.suites.iter().find(|r| r.failed()) {
                        let why = r.error.clone().unwrap_or_else(|| {
                            format!("suite failed; see {}", r.result_file.display())
                        });
                        fail(&mut c, "run dax", why);
                    }
                }
                Err(e) => fail(&mut c, "run dax", error_chain(&e)),
            }
            c.run_ms = Some(t.elapsed().as_millis() as u64);
        }
        Err(e) => fail(&mut c, "up", error_chain(&e)),
    }
    match down(&opts.name, events).await {
        Ok(d) => c.down_ms = Some(d.elapsed_ms),
        Err(e) => fail(&mut c, "down", error_chain(&e)),
    }
    c.leftovers = leftovers::of_lab(run);
    c.ok = c.failed.is_none();
    c
}

/// `lab soak`: `cycles` × (up, `run dax`, down). Every cycle runs whatever
/// the one before did; each cycle's record is appended to
/// `results/soak.jsonl` in the run directory as it ends, so a soak that is
/// stopped still leaves what it found. `progress` sees each cycle.
pub async fn soak(
    opts: &UpOptions,
    cycles: usize,
    events: &Events,
    mut progress: impl FnMut(&SoakCycle),
) -> Result<SoakReport, LabError> {
    let t = Instant::now();
    let run = RunDir::new(&opts.name)?;
    // Build (or find) the image first so every boot is a cached start, and
    // start from a lab that is down.
    image::build(&opts.image, events)?;
    down(&opts.name, events).await?;
    run.create()?;
    let log = run.results_dir().join("soak.jsonl");
    let mut file = std::fs::File::create(&log).map_err(io_err(&log))?;
    let mut report = SoakReport {
        name: opts.name.clone(),
        cycles_asked: cycles,
        log: log.clone(),
        ..SoakReport::default()
    };
    for n in 1..=cycles {
        let c = cycle(opts, &run, n, events).await;
        let line = serde_json::to_string(&c).expect("JSON serialises");
        writeln!(file, "{line}").map_err(io_err(&log))?;
        progress(&c);
        report.cycles.push(c);
    }
    report.failures = report.cycles.iter().filter(|c| !c.ok).count();
    report.cycles_with_leftovers = report
        .cycles
        .iter()
        .filter(|c| !c.leftovers.is_empty())
        .count();
    report.boot = drift(&report.cycles);
    report.elapsed_s = t.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booted(cycle: usize, ms: u64) -> SoakCycle {
        SoakCycle {
            cycle,
            ok: true,
            regions_ready_ms: Some(ms),
            ..SoakCycle::default()
        }
    }

    #[test]
    fn drift_from_first_to_last_boot_and_its_trend() {
        let mut cycles: Vec<SoakCycle> = (1..=6)
            .map(|i| booted(i, 10_000 + 100 * i as u64))
            .collect();
        // A cycle that did not boot counts in no figure.
        cycles.insert(
            2,
            SoakCycle {
                cycle: 7,
                failed: Some("up".into()),
                ..SoakCycle::default()
            },
        );
        let d = drift(&cycles);
        assert_eq!(d.booted, 6);
        assert_eq!((d.first_ms, d.last_ms), (10_100, 10_600));
        assert_eq!((d.min_ms, d.max_ms, d.median_ms), (10_100, 10_600, 10_350));
        assert_eq!(
            (d.first_half_median_ms, d.second_half_median_ms),
            (10_200, 10_500)
        );
        assert_eq!(d.trend_ms_per_cycle, 100.0);
        let flat = drift(&[booted(1, 9000), booted(2, 9000)]);
        assert_eq!(flat.trend_ms_per_cycle, 0.0);
        assert_eq!(drift(&[]).booted, 0);
        assert_eq!(drift(&[booted(1, 5)]).trend_ms_per_cycle, 0.0);
    }
}
