//! `lab compare` and `lab baseline save`: the runs a user names (or the
//! lab's last two) found on disk and handed to `gate::compare`.

use std::path::{Path, PathBuf};

use crate::error::LabError;
use crate::gate::compare::{compare, Comparison};
use crate::gate::record;
use crate::rundir::RunDir;

/// `lab compare [BASE [NEW]]`: with neither, the lab's last two runs; with
/// BASE only, BASE against the lab's latest run. Each is a run or baseline
/// directory, a baseline name in `baselines`, or a run id of the lab.
pub fn compare_runs(
    lab: &str,
    base: Option<&str>,
    new: Option<&str>,
    baselines: &Path,
) -> Result<Comparison, LabError> {
    let results = RunDir::new(lab)?.results_dir();
    let (base, new) = match (base, new) {
        (None, _) => record::last_two(lab, &results)?,
        (Some(b), None) => (
            record::resolve(b, baselines, &results)?,
            record::resolve(record::LATEST, baselines, &results)?,
        ),
        (Some(b), Some(n)) => (
            record::resolve(b, baselines, &results)?,
            record::resolve(n, baselines, &results)?,
        ),
    };
    let (b, n) = (record::load(&base)?, record::load(&new)?);
    let mut c = compare(&b, &n);
    c.base = base.display().to_string();
    c.new = new.display().to_string();
    Ok(c)
}

/// `lab baseline save NAME [RUN]`: copies a run of the lab (its latest by
/// default) to `<baselines>/<NAME>`.
pub fn save_baseline(
    lab: &str,
    name: &str,
    run: Option<&str>,
    baselines: &Path,
    force: bool,
) -> Result<PathBuf, LabError> {
    let results = RunDir::new(lab)?.results_dir();
    let from = record::resolve(run.unwrap_or(record::LATEST), baselines, &results)?;
    Ok(record::save_baseline(&from, baselines, name, force)?)
}
