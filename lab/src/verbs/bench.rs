//! `lab bench boot`.

use super::down::down;
use super::up::{up, UpOptions};
use crate::error::LabError;
use crate::events::Events;
use crate::image;
use crate::stats::median;
use crate::summary::BootBench;

/// `lab bench boot`: `runs` cycles of `lab up` and `lab down` with a cached
/// image, and the medians of their boot timings.
pub async fn bench_boot(
    opts: &UpOptions,
    runs: usize,
    events: &Events,
) -> Result<BootBench, LabError> {
    // Build (or find) the image first so every run measures a cached start.
    image::build(&opts.image, events)?;
    let mut timings = Vec::new();
    for _ in 0..runs {
        let s = up(opts, events).await?;
        down(&opts.name, events).await?;
        timings.push(s.timings);
    }
    let regions: Vec<u64> = timings.iter().map(|t| t.regions_ready_ms).collect();
    let median_ms = |ms: &[u64]| {
        let ms: Vec<f64> = ms.iter().map(|&m| m as f64).collect();
        median(&ms).round() as u64
    };
    let agent: Vec<u64> = timings.iter().map(|t| t.agent_ready_ms).collect();
    Ok(BootBench {
        median_agent_ready_ms: median_ms(&agent),
        median_regions_ready_ms: median_ms(&regions),
        min_regions_ready_ms: regions.iter().copied().min().unwrap_or(0),
        max_regions_ready_ms: regions.iter().copied().max().unwrap_or(0),
        runs: timings,
    })
}
