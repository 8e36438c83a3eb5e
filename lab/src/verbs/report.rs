//! `lab report`: the run a user names (the lab's latest by default) found
//! as `lab compare` finds runs, compared with a baseline when one is
//! named, and written as one HTML file by `report::render`.

use std::path::{Path, PathBuf};

use crate::error::{io_err, LabError};
use crate::gate::compare::{compare, Comparison};
use crate::gate::record;
use crate::report;
use crate::rundir::RunDir;

/// The report's file name in the run directory when no `-o` is given.
pub const REPORT_FILE: &str = "report.html";

/// What `lab report` wrote.
#[derive(Debug)]
pub struct Written {
    pub file: PathBuf,
    pub run: PathBuf,
    /// The comparison with the baseline, when one was named.
    pub comparison: Option<Comparison>,
}

/// `lab report [RUN] [-o FILE] [--baseline BASE]`: RUN and BASE are each a
/// run or baseline directory, a baseline name (under `baselines`) or a run
/// id of the lab; RUN is the lab's latest run when absent. The report goes
/// to `out`, or `<run dir>/report.html`.
pub fn report(
    lab: &str,
    run: Option<&str>,
    out: Option<&Path>,
    baseline: Option<&str>,
    baselines: &Path,
) -> Result<Written, LabError> {
    let results = RunDir::new(lab)?.results_dir();
    let dir = record::resolve(run.unwrap_or(record::LATEST), baselines, &results)?;
    // `results/latest` named as the run it points at.
    let dir = dir.canonicalize().unwrap_or(dir);
    let data = report::load(&dir)?;
    let comparison = match baseline {
        Some(b) => {
            let base = record::resolve(b, baselines, &results)?;
            let mut c = compare(&record::load(&base)?, &data.record);
            c.base = base.display().to_string();
            c.new = dir.display().to_string();
            Some(c)
        }
        None => None,
    };
    let html = report::render(&data, comparison.as_ref())?;
    let file = out.map_or_else(|| dir.join(REPORT_FILE), Path::to_owned);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(&file, html).map_err(io_err(&file))?;
    Ok(Written {
        file,
        run: dir,
        comparison,
    })
}
