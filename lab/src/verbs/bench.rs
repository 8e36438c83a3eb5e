//! `lab bench boot`.

use super::down::down;
use super::up::{up, UpOptions};
use crate::error::LabError;
use crate::events::Events;
use crate::image;
use crate::rundir::{BootKind, Timings};
use crate::stats::median;
use crate::summary::{BootBench, BootStats};

/// `lab bench boot`: `runs` cold boots, then, with `opts.restore`, `runs`
/// boots that restore the state the cold ones saved (`lab up --restore`),
/// each followed by `lab down`, with a cached image; the medians of each
/// kind's boot timings.
pub async fn bench_boot(
    opts: &UpOptions,
    runs: usize,
    events: &Events,
) -> Result<BootBench, LabError> {
    // Build (or find) the image first so every run measures a cached start.
    image::build(&opts.image, events)?;
    let mut timings = Vec::new();
    let phases: &[bool] = if opts.restore {
        &[true, false]
    } else {
        &[true]
    };
    for &cold in phases {
        let opts = UpOptions {
            cold,
            ..opts.clone()
        };
        for _ in 0..runs {
            let s = up(&opts, events).await?;
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
    let runs: Vec<&Timings> = timings.iter().filter(|t| t.boot == kind).collect();
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
