//! `lab bench boot`.

use super::down::down;
use super::up::{up, UpOptions};
use crate::error::LabError;
use crate::events::Events;
use crate::image;
use crate::rundir::{BootKind, Timings};
use crate::stats::median;
use crate::summary::{BootBench, BootStats};

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
