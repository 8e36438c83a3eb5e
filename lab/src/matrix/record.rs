//! What a matrix run keeps: `matrix.json` in its results directory
//! (a [`MatrixRecord`]), beside one directory per cell holding a copy of
//! the cell's run (its `summary.json` and suite files, so the whole
//! directory can serve as the `baseline` of a later matrix) and `logs/`.
//! `lab report` reads `matrix.json` and the cells' runs to draw a matrix
//! report.

use serde::{Deserialize, Serialize};

use crate::gate::compare::{Comparison, Verdict};

/// The file a matrix run's results directory is summed up in.
pub const MATRIX_FILE: &str = "matrix.json";
/// Bumped when `matrix.json` changes shape.
pub const SCHEMA: u32 = 1;

/// One `lab` command a cell ran (`up`, `run`, `down`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The arguments after `lab`.
    pub argv: Vec<String>,
    /// None when it ended by a signal or could not start.
    pub exit_code: Option<i32>,
    /// When it started, seconds after the matrix did.
    pub started_s: f64,
    pub seconds: f64,
    /// Its stderr (progress and errors), in the matrix's `logs/`.
    pub log: String,
    /// Why it failed: the end of its stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StepRecord {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A suite's outcome in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuiteStatus {
    Passed,
    Failed,
    /// It does not apply to the cell's topology, or its kernel lacks an
    /// option it needs.
    Skipped,
    /// The lab did not come up, or the matrix was interrupted.
    NotRun,
}

/// One suite of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteOutcome {
    pub suite: String,
    pub status: SuiteStatus,
    pub seconds: f64,
    /// The figures `lab run` prints for it.
    pub headline: String,
    /// Why it was skipped, failed or not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A cell's comparison, in brief (the whole one is in its `logs/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareBrief {
    /// The baseline or earlier run compared against.
    pub base: String,
    pub verdict: Verdict,
    /// Why it could not be compared.
    pub reasons: Vec<String>,
    /// `suite field` of each digest that differs.
    pub digests: Vec<String>,
    /// `suite field` of each figure worse beyond its tolerance.
    pub regressions: Vec<String>,
    pub notes: Vec<String>,
}

impl CompareBrief {
    pub fn of(c: &Comparison) -> CompareBrief {
        CompareBrief {
            base: c.base.clone(),
            verdict: c.verdict,
            reasons: c.reasons.clone(),
            digests: c
                .digests
                .iter()
                .map(|d| format!("{} {}", d.suite, d.field))
                .collect(),
            regressions: c
                .regressions()
                .map(|f| format!("{} {}", f.suite, f.field))
                .collect(),
            notes: c.notes.clone(),
        }
    }

    /// No base to compare with (no baseline for the cell is a reason, not
    /// this: see `verbs::matrix`).
    pub fn not_comparable(base: String, reason: String) -> CompareBrief {
        CompareBrief {
            base,
            verdict: Verdict::NotComparable,
            reasons: vec![reason],
            digests: vec![],
            regressions: vec![],
            notes: vec![],
        }
    }
}

/// One cell: its lab, what it ran and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell: String,
    pub topology: String,
    pub kernel: String,
    pub suites: Vec<SuiteOutcome>,
    pub up: Option<StepRecord>,
    pub run: Option<StepRecord>,
    pub down: Option<StepRecord>,
    /// The lab's run (`results/<run id>/` in its run directory).
    pub run_id: Option<String>,
    pub run_dir: Option<String>,
    /// What `lab down` left (processes, sockets, files); empty when the
    /// lab was brought down cleanly.
    pub leftovers: Vec<String>,
    /// Against the cell's baseline, or else its lab's earlier run; None
    /// when there is neither or the cell did not run.
    pub compare: Option<CompareBrief>,
    /// Why the cell failed as a whole (its lab did not come up or go
    /// down), beside failed suites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

impl CellRecord {
    pub fn count(&self, status: SuiteStatus) -> usize {
        self.suites.iter().filter(|s| s.status == status).count()
    }

    /// Brought down with nothing left behind.
    pub fn brought_down(&self) -> bool {
        self.down.as_ref().is_some_and(StepRecord::ok) && self.leftovers.is_empty()
    }

    /// A suite failed or was not run, or the lab did not come up or go
    /// down cleanly.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || !self.brought_down()
            || self
                .suites
                .iter()
                .any(|s| matches!(s.status, SuiteStatus::Failed | SuiteStatus::NotRun))
    }
}

/// The matrix's verdict, and `lab matrix`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixVerdict {
    /// Every cell passed and compared equal (or had nothing to compare
    /// with): exit 0.
    Passed,
    /// A cell failed or regressed: exit 1.
    Failed,
    /// A cell's run could not be compared with its base: exit 2, as
    /// `lab compare` (a difference in what ran hides any regression).
    NotComparable,
}

impl MatrixVerdict {
    pub fn of(cells: &[CellRecord]) -> MatrixVerdict {
        let verdict = |v| {
            cells
                .iter()
                .any(|c| c.compare.as_ref().is_some_and(|b| b.verdict == v))
        };
        if verdict(Verdict::NotComparable) {
            MatrixVerdict::NotComparable
        } else if cells.iter().any(CellRecord::failed) || verdict(Verdict::Regression) {
            MatrixVerdict::Failed
        } else {
            MatrixVerdict::Passed
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            MatrixVerdict::Passed => 0,
            MatrixVerdict::Failed => 1,
            MatrixVerdict::NotComparable => 2,
        }
    }
}

/// `matrix.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixRecord {
    pub schema: u32,
    /// The run's id (its start time, as run ids).
    pub matrix_id: String,
    /// The matrix file, as given.
    pub file: String,
    /// Where this record and the cells' copies are.
    pub dir: String,
    pub started: String,
    pub elapsed_s: f64,
    /// Labs at once, and what bounded them.
    pub jobs: usize,
    pub bound: String,
    /// The host's load average (1, 5, 15 min) when the matrix started and
    /// ended: wall times depend on it.
    pub load_start: Option<[f64; 3]>,
    pub load_end: Option<[f64; 3]>,
    pub baseline: Option<String>,
    /// Stopped by Ctrl-C: the cells that had not started did not run.
    pub interrupted: bool,
    pub cells: Vec<CellRecord>,
    pub verdict: MatrixVerdict,
}

/// `lab bench matrix`: one matrix run at its parallelism and one with a
/// cell at a time, on the same cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixBench {
    pub parallel: MatrixRecord,
    pub one_by_one: MatrixRecord,
    /// One by one's wall time over the parallel one's.
    pub speedup: f64,
}

impl MatrixBench {
    pub fn new(parallel: MatrixRecord, one_by_one: MatrixRecord) -> MatrixBench {
        let speedup = one_by_one.elapsed_s / parallel.elapsed_s.max(f64::EPSILON);
        MatrixBench {
            parallel,
            one_by_one,
            speedup,
        }
    }
}

pub use crate::schedstat::load_average;

#[cfg(test)]
mod tests {
    use super::*;

    fn step(code: i32) -> StepRecord {
        StepRecord {
            argv: vec![],
            exit_code: Some(code),
            started_s: 0.0,
            seconds: 1.0,
            log: "l".into(),
            error: None,
        }
    }

    fn cell(statuses: &[SuiteStatus], compare: Option<Verdict>) -> CellRecord {
        CellRecord {
            cell: "m-default-image".into(),
            topology: "default".into(),
            kernel: "image".into(),
            suites: statuses
                .iter()
                .map(|s| SuiteOutcome {
                    suite: "dax".into(),
                    status: *s,
                    seconds: 1.0,
                    headline: String::new(),
                    reason: None,
                })
                .collect(),
            up: Some(step(0)),
            run: Some(step(0)),
            down: Some(step(0)),
            run_id: Some("20261207T000102Z".into()),
            run_dir: None,
            leftovers: vec![],
            compare: compare.map(|verdict| CompareBrief {
                base: "b".into(),
                verdict,
                reasons: vec![],
                digests: vec![],
                regressions: vec![],
                notes: vec![],
            }),
            error: None,
            seconds: 3.0,
        }
    }

    use SuiteStatus::*;

    #[test]
    fn passed_skipped_and_equal_cells_pass() {
        let cells = [
            cell(&[Passed, Skipped], None),
            cell(&[Passed], Some(Verdict::Equal)),
        ];
        assert_eq!(MatrixVerdict::of(&cells), MatrixVerdict::Passed);
        assert_eq!(MatrixVerdict::of(&cells).exit_code(), 0);
        assert_eq!((cells[0].count(Passed), cells[0].count(Skipped)), (1, 1));
    }

    #[test]
    fn a_failed_suite_a_regression_or_a_lab_left_up_fails() {
        let ok = cell(&[Passed], None);
        for bad in [
            cell(&[Passed, Failed], None),
            cell(&[NotRun], None),
            cell(&[Passed], Some(Verdict::Regression)),
        ] {
            assert_eq!(MatrixVerdict::of(&[ok.clone(), bad]).exit_code(), 1);
        }
        let mut left = ok.clone();
        left.leftovers = vec!["qemu-system-x86_64 (pid 7)".into()];
        assert!(!left.brought_down() && left.failed());
        let mut down_failed = ok.clone();
        down_failed.down = Some(step(1));
        assert!(down_failed.failed());
        let mut no_up = ok.clone();
        no_up.error = Some("lab up failed".into());
        assert_eq!(MatrixVerdict::of(&[no_up]), MatrixVerdict::Failed);
    }

    #[test]
    fn a_cell_that_cannot_be_compared_makes_the_matrix_not_comparable() {
        let cells = [
            cell(&[Failed], Some(Verdict::Regression)),
            cell(&[Passed], Some(Verdict::NotComparable)),
        ];
        assert_eq!(MatrixVerdict::of(&cells), MatrixVerdict::NotComparable);
        assert_eq!(MatrixVerdict::of(&cells).exit_code(), 2);
    }
}
