//! `lab matrix FILE`: each cell of the matrix file (`matrix::spec`) is a
//! lab of its own, run as the `lab` binary itself runs one: `lab up --name
//! CELL --topology T [--kernel K]`, `lab run --name CELL SUITES…`, and
//! always `lab down --name CELL`, whatever happened before. Running the
//! verbs as processes keeps every cell as a user would run it by hand (and
//! picks up `lab up`'s options, such as `--kernel`, as they are). Cells
//! run in parallel up to `matrix::schedule::jobs`; each cell's run is then
//! compared with its baseline (`<baseline>/<cell>`), or else with its
//! lab's earlier run. The matrix's results directory holds `matrix.json`,
//! a copy of each cell's run under the cell's name (so the directory can
//! be a later matrix's `baseline`) and `logs/<cell>/`: each command's
//! stderr (`up.log`, `run.log`, `down.log`) and `--json` output, the
//! topology `lab up` got when `[guest]` changed it, and `compare.json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::error::{io_err, LabError};
use crate::events::{Event, Events, Step};
use crate::gate::compare::compare;
use crate::gate::record::{self as runs, SUMMARY_FILE};
use crate::image::{self, ImageOptions};
use crate::leftovers;
use crate::matrix::record::{
    load_average, CellRecord, CompareBrief, MatrixBench, MatrixRecord, MatrixVerdict, StepRecord,
    SuiteOutcome, SuiteStatus, MATRIX_FILE, SCHEMA,
};
use crate::matrix::schedule::{self, Host};
use crate::matrix::spec::{Cell, MatrixSpec};
use crate::process;
use crate::rundir::RunDir;

/// Options of `lab matrix`.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    pub spec: MatrixSpec,
    /// The `lab` binary the cells run (`lab up`, `lab run`, `lab down`).
    pub lab: PathBuf,
    /// Labs at once instead of what cores and memory allow.
    pub jobs: Option<usize>,
    /// Where matrix runs are kept: `<out>/<matrix id>/`, `<out>/latest`.
    pub out: PathBuf,
}

/// Where runs of `spec` are kept unless `--out` says otherwise:
/// `<state root>/matrix/<file stem>`.
pub fn default_out(spec: &MatrixSpec) -> PathBuf {
    crate::paths::state_root().join("matrix").join(spec.stem())
}

/// What the cells share.
struct Run<'a> {
    opts: &'a MatrixOptions,
    /// This matrix run's results directory.
    dir: PathBuf,
    events: &'a Events,
    /// When the matrix started.
    t0: Instant,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

/// Resolves when `stop` says so; never when its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Run<'_> {
    fn note(&self, message: String) {
        self.events.emit(Event::Note {
            step: Step::Matrix,
            message,
        });
    }

    /// Runs `lab ARGV…`, its stderr to `logs/<cell>/<what>.log` and its
    /// stdout kept (and written to `<what>.json`). With `stop`, a stop
    /// request sends the command SIGINT (as Ctrl-C would) and waits for
    /// it to end.
    async fn lab(
        &self,
        cell: &str,
        what: &str,
        argv: Vec<String>,
        stop: Option<&mut watch::Receiver<bool>>,
    ) -> (StepRecord, Vec<u8>) {
        let t = Instant::now();
        let logs = self.dir.join("logs").join(cell);
        let log = logs.join(format!("{what}.log"));
        let mut record = StepRecord {
            argv: argv.clone(),
            exit_code: None,
            started_s: self.t0.elapsed().as_secs_f64(),
            seconds: 0.0,
            log: log.display().to_string(),
            error: None,
        };
        let started = std::fs::File::create(&log).and_then(|stderr| {
            tokio::process::Command::new(&self.opts.lab)
                .args(&argv)
                // Under RUST_BACKTRACE=1 anyhow's backtrace would push the
                // error out of the log's end that the record quotes.
                .env("RUST_LIB_BACKTRACE", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
        });
        let mut child = match started {
            Ok(c) => c,
            Err(e) => {
                record.error = Some(format!(
                    "cannot run {} {}: {e}",
                    self.opts.lab.display(),
                    argv.join(" ")
                ));
                return (record, vec![]);
            }
        };
        let mut out = child.stdout.take().expect("stdout is piped");
        let read = async {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf).await;
            buf
        };
        let pid = child.id();
        let wait = async {
            match stop {
                Some(stop) => tokio::select! {
                    s = child.wait() => s,
                    () = stopped(stop) => {
                        if let Some(pid) = pid {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGINT,
                            );
                        }
                        child.wait().await
                    }
                },
                None => child.wait().await,
            }
        };
        let (stdout, status) = tokio::join!(read, wait);
        record.seconds = t.elapsed().as_secs_f64();
        record.exit_code = status.ok().and_then(|s| s.code());
        if !stdout.is_empty() {
            let _ = std::fs::write(logs.join(format!("{what}.json")), &stdout);
        }
        if !record.ok() {
            let tail = process::tail(&log, 6);
            let how = match record.exit_code {
                Some(c) => format!("exit {c}"),
                None => "ended by a signal".into(),
            };
            record.error = Some(format!("lab {what} failed ({how}): {tail}"));
        }
        (record, stdout)
    }

    /// One cell: up, run, down (always), then its comparison.
    async fn cell(&self, cell: &Cell, mut stop: watch::Receiver<bool>) -> CellRecord {
        let t = Instant::now();
        let mut rec = CellRecord {
            cell: cell.name.clone(),
            topology: cell.topology.entry.clone(),
            kernel: cell.kernel.entry.clone(),
            suites: cell
                .plan
                .iter()
                .map(|(s, skip)| SuiteOutcome {
                    suite: s.name().to_owned(),
                    status: if skip.is_some() {
                        SuiteStatus::Skipped
                    } else {
                        SuiteStatus::NotRun
                    },
                    seconds: 0.0,
                    headline: String::new(),
                    reason: skip.clone(),
                })
                .collect(),
            up: None,
            run: None,
            down: None,
            run_id: None,
            run_dir: None,
            leftovers: vec![],
            compare: None,
            error: None,
            seconds: 0.0,
        };
        if *stop.borrow() {
            rec.error = Some("not started: the matrix was interrupted".into());
            self.not_run(&mut rec, "the matrix was interrupted");
            return rec;
        }
        let logs = self.dir.join("logs").join(&cell.name);
        if let Err(e) = std::fs::create_dir_all(&logs) {
            rec.error = Some(format!("cannot create {}: {e}", logs.display()));
            self.not_run(&mut rec, "its logs directory could not be made");
            return rec;
        }
        let topology = if cell.guest_changed {
            let file = logs.join("topology.toml");
            if let Err(e) = std::fs::write(&file, cell.effective.to_toml()) {
                rec.error = Some(format!("cannot write {}: {e}", file.display()));
                self.not_run(&mut rec, "its topology could not be written");
                return rec;
            }
            file.display().to_string()
        } else {
            cell.topology.arg.clone()
        };
        let name = cell.name.clone();
        let mut up = vec![
            "up".to_owned(),
            "--name".into(),
            name.clone(),
            "--topology".into(),
            topology,
        ];
        if let Some(k) = &cell.kernel.arg {
            up.extend(["--kernel".to_owned(), k.clone()]);
        }
        up.push("--json".into());
        self.note(format!(
            "{name}: lab up (topology {}, kernel {})",
            cell.topology.entry, cell.kernel.entry
        ));
        let (up, _) = self.lab(&name, "up", up, Some(&mut stop)).await;
        let up_ok = up.ok();
        if !up_ok {
            rec.error = up.error.clone();
            self.not_run(&mut rec, "its lab did not come up");
        }
        rec.up = Some(up);
        let suites: Vec<String> = cell.to_run().iter().map(|s| s.name().to_owned()).collect();
        if up_ok && !suites.is_empty() && !*stop.borrow() {
            self.note(format!("{name}: up; lab run {}", suites.join(" ")));
            let mut argv = vec![
                "run".to_owned(),
                "--name".into(),
                name.clone(),
                "--json".into(),
            ];
            argv.extend(suites);
            let (run, stdout) = self.lab(&name, "run", argv, Some(&mut stop)).await;
            match serde_json::from_slice::<Value>(&stdout) {
                Ok(report) => self.take_report(&mut rec, &report),
                Err(_) => {
                    let why = run
                        .error
                        .clone()
                        .unwrap_or_else(|| "lab run printed no report".into());
                    self.not_run(&mut rec, &why);
                    rec.error = Some(why);
                }
            }
            rec.run = Some(run);
        }
        if *stop.borrow() {
            self.not_run(&mut rec, "the matrix was interrupted");
        }
        // Always, also when `lab up` failed (it tears down what it started,
        // and a second look costs nothing) or the matrix was stopped.
        let argv = vec![
            "down".to_owned(),
            "--name".into(),
            name.clone(),
            "--json".into(),
        ];
        let (down, _) = self.lab(&name, "down", argv, None).await;
        if !down.ok() && rec.error.is_none() {
            rec.error = down.error.clone();
        }
        rec.down = Some(down);
        if let Ok(run) = RunDir::new(&name) {
            let left = leftovers::of_lab(&run);
            rec.leftovers = left
                .processes
                .iter()
                .cloned()
                .chain(
                    left.sockets
                        .iter()
                        .chain(&left.files)
                        .map(|p| p.display().to_string()),
                )
                .collect();
        }
        if let Some(run_dir) = rec.run_dir.clone() {
            self.keep_and_compare(&mut rec, Path::new(&run_dir));
        }
        rec.seconds = t.elapsed().as_secs_f64();
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.note(format!(
            "{name}: {} in {:.0} s: {} passed, {} failed, {} skipped{}; {}",
            if rec.failed() { "FAILED" } else { "done" },
            rec.seconds,
            rec.count(SuiteStatus::Passed),
            rec.count(SuiteStatus::Failed),
            rec.count(SuiteStatus::Skipped),
            rec.compare
                .as_ref()
                .map_or(String::new(), |c| format!(", compare {:?}", c.verdict)
                    .to_lowercase()),
            if rec.brought_down() {
                "down".to_owned()
            } else {
                format!("NOT brought down cleanly: {}", rec.leftovers.join("; "))
            }
        ));
        self.events.emit(Event::Progress {
            step: Step::Matrix,
            done: n as u64,
            total: self.total as u64,
        });
        rec
    }

    /// Marks the suites still to run as not run, with `why`.
    fn not_run(&self, rec: &mut CellRecord, why: &str) {
        for s in rec
            .suites
            .iter_mut()
            .filter(|s| s.status == SuiteStatus::NotRun)
        {
            s.reason.get_or_insert_with(|| why.to_owned());
        }
    }

    /// Takes the suites' outcomes from `lab run --json`'s report.
    fn take_report(&self, rec: &mut CellRecord, report: &Value) {
        rec.run_id = report["run_id"].as_str().map(str::to_owned);
        rec.run_dir = report["run_dir"].as_str().map(str::to_owned);
        for r in report["suites"].as_array().into_iter().flatten() {
            let Some(s) = rec
                .suites
                .iter_mut()
                .find(|s| r["suite"] == s.suite.as_str())
            else {
                continue;
            };
            let skipped = r["skipped"].as_str();
            s.status = match (skipped, r["passed"].as_bool()) {
                (Some(_), _) => SuiteStatus::Skipped,
                (None, Some(true)) => SuiteStatus::Passed,
                _ => SuiteStatus::Failed,
            };
            s.seconds = r["seconds"].as_f64().unwrap_or(0.0);
            s.headline = r["headline"].as_str().unwrap_or_default().to_owned();
            s.reason = skipped
                .or(r["error"].as_str())
                .map(str::to_owned)
                .or_else(|| {
                    (s.status == SuiteStatus::Failed).then(|| {
                        format!(
                            "see {}",
                            r["result_file"].as_str().unwrap_or("its results file")
                        )
                    })
                });
        }
    }

    /// Copies the cell's run to `<matrix dir>/<cell>/` and compares it
    /// with the cell's baseline, or else its lab's earlier run.
    fn keep_and_compare(&self, rec: &mut CellRecord, run_dir: &Path) {
        if let Err(e) = runs::save_baseline(run_dir, &self.dir, &rec.cell, true) {
            rec.error
                .get_or_insert_with(|| crate::error::error_chain(&e));
        }
        let base = match &self.opts.spec.baseline {
            Some(dir) => {
                let base = dir.join(&rec.cell);
                if !base.join(SUMMARY_FILE).is_file() {
                    rec.compare = Some(CompareBrief::not_comparable(
                        base.display().to_string(),
                        format!(
                            "the baseline {} has no run of cell {} (no {}/{SUMMARY_FILE})",
                            dir.display(),
                            rec.cell,
                            base.display()
                        ),
                    ));
                    return;
                }
                base
            }
            None => match earlier_run(run_dir) {
                Some(b) => b,
                None => return,
            },
        };
        let brief = match (runs::load(&base), runs::load(run_dir)) {
            (Ok(b), Ok(n)) => {
                let mut c = compare(&b, &n);
                c.base = base.display().to_string();
                c.new = run_dir.display().to_string();
                let file = self.dir.join("logs").join(&rec.cell).join("compare.json");
                let _ = std::fs::write(
                    &file,
                    serde_json::to_vec_pretty(&c).expect("a comparison serialises"),
                );
                CompareBrief::of(&c)
            }
            (Err(e), _) | (_, Err(e)) => CompareBrief::not_comparable(
                base.display().to_string(),
                crate::error::error_chain(&e),
            ),
        };
        rec.compare = Some(brief);
    }
}

/// The run kept before `run_dir` in its lab's `results/`, if any.
fn earlier_run(run_dir: &Path) -> Option<PathBuf> {
    let results = run_dir.parent()?;
    let id = run_dir.file_name()?.to_string_lossy().into_owned();
    let all = runs::runs(results).ok()?;
    let i = all.iter().position(|r| *r == id)?;
    i.checked_sub(1).map(|p| results.join(&all[p]))
}

/// Points `<out>/latest` at the newest matrix run.
fn link_latest(out: &Path, id: &str) -> Result<(), LabError> {
    let latest = out.join(runs::LATEST);
    let tmp = out.join(format!(".{}.{}", runs::LATEST, std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(id, &tmp).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &latest).map_err(io_err(&latest))
}

/// `lab matrix`: every cell of `opts.spec`, at most the scheduled number
/// at once; a true on `stop` (Ctrl-C) stops the commands running (each
/// cell's lab still goes down) and starts no more cells. The record is
/// also written to `<out>/<matrix id>/matrix.json`.
pub async fn matrix(
    opts: &MatrixOptions,
    events: &Events,
    stop: watch::Receiver<bool>,
) -> Result<MatrixRecord, LabError> {
    // Once here, so the cells' `lab up`s find it cached instead of all
    // building it at once; not part of the matrix's wall time.
    image::build(&ImageOptions::default(), events)?;
    let t = Instant::now();
    let load_start = load_average();
    let cells = &opts.spec.cells;
    let lab_memory = cells
        .iter()
        .map(|c| schedule::lab_memory(&c.effective))
        .max()
        .unwrap_or(0);
    let jobs = schedule::jobs(Host::now(), lab_memory, cells.len(), opts.jobs);
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let started = chrono::Utc::now();
    let id = runs::new_run_id(&opts.out, started);
    let dir = opts.out.join(&id);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    events.emit(Event::Started {
        step: Step::Matrix,
        detail: format!(
            "{} cell{}, {} at a time ({:?}: {} cores, {:.1} GiB available, {:.1} GiB a lab)",
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            jobs.jobs,
            jobs.bound,
            jobs.host.cores,
            jobs.host.memory_available as f64 / (1u64 << 30) as f64,
            jobs.lab_memory as f64 / (1u64 << 30) as f64,
        )
        .to_lowercase(),
    });
    let run = Run {
        opts,
        dir: dir.clone(),
        events,
        t0: t,
        total: cells.len(),
        done: Default::default(),
    };
    let mut records: Vec<(usize, CellRecord)> = stream::iter(cells.iter().enumerate())
        .map(|(i, c)| {
            let run = &run;
            let stop = stop.clone();
            async move { (i, run.cell(c, stop).await) }
        })
        .buffer_unordered(jobs.jobs)
        .collect()
        .await;
    records.sort_by_key(|(i, _)| *i);
    let cells: Vec<CellRecord> = records.into_iter().map(|(_, r)| r).collect();
    let verdict = MatrixVerdict::of(&cells);
    let record = MatrixRecord {
        schema: SCHEMA,
        matrix_id: id.clone(),
        file: opts.spec.file.display().to_string(),
        dir: dir.display().to_string(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        elapsed_s: t.elapsed().as_secs_f64(),
        jobs: jobs.jobs,
        bound: format!("{:?}", jobs.bound).to_lowercase(),
        load_start,
        load_end: load_average(),
        baseline: opts.spec.baseline.as_ref().map(|b| b.display().to_string()),
        interrupted: *stop.borrow(),
        cells,
        verdict,
    };
    let file = dir.join(MATRIX_FILE);
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&record).expect("a matrix record serialises"),
    )
    .map_err(io_err(&file))?;
    link_latest(&opts.out, &id)?;
    // A matrix report (`lab report`) plugs in here: it reads `matrix.json`
    // and each cell's copied run beside it.
    events.emit(Event::Finished {
        step: Step::Matrix,
        elapsed: t.elapsed(),
        detail: format!("{:?}", record.verdict).to_lowercase(),
    });
    Ok(record)
}

/// `lab bench matrix`: the matrix at the scheduled parallelism (or
/// `opts.jobs`), then again one cell at a time, and the ratio of their
/// wall times.
pub async fn bench_matrix(
    opts: &MatrixOptions,
    events: &Events,
    stop: watch::Receiver<bool>,
) -> Result<MatrixBench, LabError> {
    let parallel = matrix(opts, events, stop.clone()).await?;
    let one = MatrixOptions {
        jobs: Some(1),
        ..opts.clone()
    };
    let one_by_one = matrix(&one, events, stop).await?;
    Ok(MatrixBench::new(parallel, one_by_one))
}

/// `lab matrix --junit FILE`: one `<testsuite>` per cell and suite (the
/// steps of `lab run --junit` as its test cases), read from each cell's
/// kept run; a cell with no run is one failed case with its error.
pub fn write_matrix_junit(
    m: &crate::matrix::record::MatrixRecord,
    file: &std::path::Path,
) -> Result<(), LabError> {
    let mut cells = Vec::new();
    for c in &m.cells {
        let run = match &c.run_dir {
            Some(dir) => super::run::run_suites_json(std::path::Path::new(dir))
                .map(|(_, suites)| suites)
                .map_err(|e| crate::error::error_chain(&e)),
            None => Err(c
                .error
                .clone()
                .unwrap_or_else(|| "the cell kept no run".to_owned())),
        };
        cells.push((c.cell.clone(), run));
    }
    super::run::write_junit_report(
        &crate::gate::junit::matrix_report(&m.matrix_id, &cells),
        file,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_run_is_the_one_kept_before() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path();
        for id in ["20261207T000102Z", "20261207T000102Z-2", "20261207T010000Z"] {
            std::fs::create_dir_all(results.join(id)).unwrap();
            std::fs::write(results.join(id).join(SUMMARY_FILE), "{}").unwrap();
        }
        assert_eq!(
            earlier_run(&results.join("20261207T010000Z")),
            Some(results.join("20261207T000102Z-2"))
        );
        assert_eq!(earlier_run(&results.join("20261207T000102Z")), None);
    }
}
