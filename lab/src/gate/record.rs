//! Kept runs and saved baselines. `lab run` writes `results/<run id>/`
//! in the lab's run directory: one `<suite>.json` per suite and
//! `summary.json` (a [`RunRecord`]: what the run ran on, and per suite its
//! verdict, digest, figures and headline). `results/latest` links to the
//! newest. A baseline is a copy of a run's directory under a name, plain
//! files a user can commit; `lab compare` reads either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::digest::digest;
use super::figures::{figures, headline, Figures};
use crate::schedstat::CpuShare;

/// The summary file of a run or baseline directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// cxl-memsim's stats as a run ended (written by `lab run`, charted by
/// `lab report`).
pub const MEMSIM_FILE: &str = "memsim.json";
/// The link to the newest run in a lab's `results/`.
pub const LATEST: &str = "latest";
/// Bumped when `summary.json` changes shape.
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{} is not a run or baseline directory: it has no {SUMMARY_FILE}. Name a directory `lab run` wrote (results/<run id>/), a baseline saved with `lab baseline save`, or a run id of the lab.", .0.display())]
    NoSummary(PathBuf),
    #[error("Reading {} failed.", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Writing {} failed.", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a summary this lab can read (schema {SCHEMA}); was it edited by hand, or written by another version?", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("Lab '{lab}' has {found} kept run(s) in {}; `lab compare` with no run named needs two (run `lab run` again, or name BASE and NEW).", dir.display())]
    TooFewRuns {
        lab: String,
        dir: PathBuf,
        found: usize,
    },
    #[error("No run or baseline '{spec}': it is neither a directory, nor {} (a baseline), nor a run id in {}.", baseline.display(), runs.display())]
    NotFound {
        spec: String,
        baseline: PathBuf,
        runs: PathBuf,
    },
    #[error("Baseline {} exists; pass --force to replace it.", .0.display())]
    BaselineExists(PathBuf),
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Read {
        path: path.to_owned(),
        source,
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Write {
        path: path.to_owned(),
        source,
    }
}

/// The topology a run ran on: where it came from, and a hash of the
/// effective topology (defaults filled in) that `lab compare` requires to
/// be equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyId {
    pub origin: String,
    pub sha256: String,
}

/// What a run ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The guest kernel's `uname -r`.
    pub kernel: String,
    /// Where that kernel came from: the image, or `lab up --kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_origin: Option<crate::kernel::KernelOrigin>,
    pub topology: TopologyId,
    pub image_key: String,
    /// `qemu-system-x86_64 --version`'s first line.
    pub qemu: String,
    /// This `lab`'s version.
    pub lab: String,
    pub accel: String,
    /// How the lab came up: `cold` or `restored` (a saved state); runs
    /// recorded before labs were restored have none and booted cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
}

impl Environment {
    /// How the lab came up (`cold` when the record predates restores).
    pub fn boot_kind(&self) -> &str {
        self.boot.as_deref().unwrap_or("cold")
    }
}

/// One suite of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRecord {
    pub suite: String,
    pub passed: bool,
    pub seconds: f64,
    /// The figures `lab run` prints for it.
    pub headline: String,
    /// The behaviour part of its JSON (`gate::digest`).
    pub digest: Value,
    /// Its figures (`gate::figures`), keyed `name:instance`.
    pub figures: Figures,
    /// How much of the host CPU QEMU's threads got while the suite ran
    /// (`schedstat`): `lab compare` shows the two runs' ratio beside
    /// load-sensitive figures.
    /// None in runs recorded before it was kept, and for skipped suites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_cpu: Option<CpuShare>,
    /// The host's 1, 5 and 15 minute load averages as the suite ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<[f64; 3]>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: String,
    pub lab: String,
    /// When the run started, RFC 3339 UTC.
    pub started: String,
    pub environment: Environment,
    /// The lab's boot timings (figures of the `boot` metrics).
    pub boot: Figures,
    /// In the order they ran.
    pub suites: Vec<SuiteRecord>,
    /// Stall mode (`lab up --timing=stall`): the calibration, each
    /// device's modelled latency and wall times, the plugin's table, as
    /// the lab recorded them at up. Absent otherwise (and in summaries
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<crate::stall::StallState>,
}

impl RunRecord {
    pub fn suite(&self, name: &str) -> Option<&SuiteRecord> {
        self.suites.iter().find(|s| s.suite == name)
    }
}

/// A suite's record from its JSON result.
pub fn suite_record(suite: &str, seconds: f64, result: &Value) -> SuiteRecord {
    SuiteRecord {
        suite: suite.to_owned(),
        passed: result["passed"].as_bool() == Some(true),
        seconds,
        headline: headline(suite, result),
        digest: digest(suite, result),
        figures: figures(suite, result),
        qemu_cpu: None,
        load_average: None,
    }
}

/// A new run id: the UTC start time to the second (so ids sort by time),
/// with `-2`, `-3`, ... when `results` already has one of that second.
pub fn new_run_id(results: &Path, now: chrono::DateTime<chrono::Utc>) -> String {
    let base = now.format("%Y%m%dT%H%M%SZ").to_string();
    let mut id = base.clone();
    let mut n = 1;
    while results.join(&id).exists() {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// The kept runs in `results`, oldest first (`latest` and stray files
/// left out).
pub fn runs(results: &Path) -> Result<Vec<String>, RecordError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(results) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(read_err(results)(e)),
    };
    for e in entries {
        let e = e.map_err(read_err(results))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map_err(read_err(results))?.is_dir();
        if is_dir && name != LATEST && e.path().join(SUMMARY_FILE).is_file() {
            out.push(name);
        }
    }
    // Ids are times; `-N` suffixes sort after their second's first run.
    out.sort_by_key(|id| {
        let (t, n) = id.split_once('-').unwrap_or((id, "1"));
        (t.to_owned(), n.parse::<u32>().unwrap_or(0))
    });
    Ok(out)
}

/// The last two kept runs of a lab: (older, newer).
pub fn last_two(lab: &str, results: &Path) -> Result<(PathBuf, PathBuf), RecordError> {
    let runs = runs(results)?;
    match runs.as_slice() {
        [.., a, b] => Ok((results.join(a), results.join(b))),
        _ => Err(RecordError::TooFewRuns {
            lab: lab.to_owned(),
            dir: results.to_owned(),
            found: runs.len(),
        }),
    }
}

/// Writes `summary.json` into the run's directory and points
/// `results/latest` at it.
pub fn write_run(results: &Path, record: &RunRecord) -> Result<PathBuf, RecordError> {
    let dir = results.join(&record.run_id);
    let file = dir.join(SUMMARY_FILE);
    let text = serde_json::to_vec_pretty(record).expect("a run record serialises");
    std::fs::write(&file, text).map_err(write_err(&file))?;
    // A new link renamed over the old one: `latest` is never missing.
    let latest = results.join(LATEST);
    let tmp = results.join(format!(".{LATEST}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&record.run_id, &tmp).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, &latest).map_err(write_err(&latest))?;
    Ok(dir)
}

/// Reads a run's or baseline's `summary.json`.
pub fn load(dir: &Path) -> Result<RunRecord, RecordError> {
    let file = dir.join(SUMMARY_FILE);
    if !file.is_file() {
        return Err(RecordError::NoSummary(dir.to_owned()));
    }
    let text = std::fs::read(&file).map_err(read_err(&file))?;
    serde_json::from_slice(&text).map_err(|source| RecordError::Parse { path: file, source })
}

/// Where BASE or NEW of `lab compare` is: a directory as given, else a
/// baseline `<baselines>/<spec>`, else a run id (or `latest`) of the lab.
pub fn resolve(spec: &str, baselines: &Path, results: &Path) -> Result<PathBuf, RecordError> {
    let as_path = PathBuf::from(spec);
    if as_path.join(SUMMARY_FILE).is_file() {
        return Ok(as_path);
    }
    let simple = !spec.contains('/') && spec != "." && spec != "..";
    if simple {
        for dir in [baselines.join(spec), results.join(spec)] {
            if dir.join(SUMMARY_FILE).is_file() {
                return Ok(dir);
            }
        }
    }
    if as_path.is_dir() {
        return Err(RecordError::NoSummary(as_path));
    }
    Err(RecordError::NotFound {
        spec: spec.to_owned(),
        baseline: baselines.join(spec),
        runs: results.to_owned(),
    })
}

/// `lab baseline save`: copies a run's directory (its summary and suite
/// JSON) to `<baselines>/<name>`; an existing baseline is kept unless
/// `force`.
pub fn save_baseline(
    run: &Path,
    baselines: &Path,
    name: &str,
    force: bool,
) -> Result<PathBuf, RecordError> {
    load(run)?;
    let target = baselines.join(name);
    if target.exists() {
        if !force {
            return Err(RecordError::BaselineExists(target));
        }
        std::fs::remove_dir_all(&target).map_err(write_err(&target))?;
    }
    std::fs::create_dir_all(&target).map_err(write_err(&target))?;
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(run).map_err(read_err(run))? {
        let e = e.map_err(read_err(run))?;
        let path = e.path();
        if path.extension().is_some_and(|x| x == "json") && path.is_file() {
            names.insert(e.file_name().to_string_lossy().into_owned(), path);
        }
    }
    for (name, from) in names {
        let to = target.join(name);
        std::fs::copy(&from, &to).map_err(write_err(&to))?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn record(id: &str) -> RunRecord {
        RunRecord {
            schema: SCHEMA,
            run_id: id.into(),
            lab: "t".into(),
            started: "2026-12-07T00:00:00Z".into(),
            environment: Environment {
                kernel: "6.12.57+deb12-amd64".into(),
                kernel_origin: None,
                topology: TopologyId {
                    origin: "embedded default".into(),
                    sha256: "ab".into(),
                },
                image_key: "k".into(),
                qemu: "QEMU emulator version 10.0.3".into(),
                lab: "0.1.0".into(),
                accel: "tcg".into(),
                boot: None,
            },
            boot: Figures::new(),
            suites: vec![],
            stall: None,
        }
    }

    #[test]
    fn a_stall_mode_run_keeps_its_calibration_and_older_summaries_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        std::fs::create_dir_all(results.join("a")).unwrap();
        let mut r = record("a");
        let t = cxl_topology::Topology::embedded_default();
        let c = crate::stall::Calibration::new("dax:/dev/dax0.0".into(), 50.0, 600.0, &t);
        let devices = crate::stall::device_stalls(&t, &c);
        r.stall = Some(crate::stall::StallState {
            local_latency_ns: 100,
            calibration: c,
            devices,
            command: "plugin stall off".into(),
        });
        let run = write_run(&results, &r).unwrap();
        let text = std::fs::read_to_string(run.join(SUMMARY_FILE)).unwrap();
        assert!(text.contains("\"wall_ns_per_model_ns\""), "{text}");
        assert!(text.contains("\"model_latency_ratio\""), "{text}");
        // (Floats through JSON may move in their last bit.)
        let back = load(&run).unwrap().stall.expect("the stall state back");
        let st = r.stall.as_ref().unwrap();
        assert_eq!(back.command, st.command);
        assert_eq!(back.devices.len(), 2);
        assert!(
            (back.calibration.wall_ns_per_model_ns - st.calibration.wall_ns_per_model_ns).abs()
                < 1e-9
        );
        // Without stall mode the key is left out, and a summary without
        // it (written before it existed) loads as None.
        std::fs::create_dir_all(results.join("b")).unwrap();
        let run = write_run(&results, &record("b")).unwrap();
        let text = std::fs::read_to_string(run.join(SUMMARY_FILE)).unwrap();
        assert!(!text.contains("\"stall\""), "{text}");
        assert_eq!(load(&run).unwrap().stall, None);
    }

    fn write(results: &Path, id: &str) {
        std::fs::create_dir_all(results.join(id)).unwrap();
        write_run(results, &record(id)).unwrap();
    }

    #[test]
    fn ids_sort_by_time_and_latest_follows_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path();
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 0, 1, 2).unwrap();
        let a = new_run_id(results, now);
        assert_eq!(a, "20261207T000102Z");
        write(results, &a);
        let b = new_run_id(results, now);
        assert_eq!(b, "20261207T000102Z-2");
        write(results, &b);
        write(results, "20261206T235959Z");
        assert_eq!(
            runs(results).unwrap(),
            ["20261206T235959Z", "20261207T000102Z", "20261207T000102Z-2"]
        );
        // `latest` is where the last write_run pointed.
        assert_eq!(
            std::fs::read_link(results.join(LATEST)).unwrap(),
            PathBuf::from("20261206T235959Z")
        );
        let (old, new) = last_two("t", results).unwrap();
        assert!(old.ends_with("20261207T000102Z") && new.ends_with("20261207T000102Z-2"));
        assert_eq!(
            load(&results.join(LATEST)).unwrap(),
            record("20261206T235959Z")
        );
    }

    #[test]
    fn one_run_is_too_few_to_compare() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "20261207T000102Z");
        let e = last_two("t", dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("has 1 kept run(s)") && e.contains("needs two"),
            "{e}"
        );
    }

    #[test]
    fn baselines_are_copies_found_by_name_and_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        let run = results.join("20261207T000102Z");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("dax.json"), "{}").unwrap();
        write_run(&results, &record("20261207T000102Z")).unwrap();
        let baselines = dir.path().join("baselines");
        let saved = save_baseline(&results.join(LATEST), &baselines, "main", false).unwrap();
        assert!(saved.join("dax.json").is_file() && saved.join(SUMMARY_FILE).is_file());
        assert!(!saved.join(LATEST).exists());
        let e = save_baseline(&run, &baselines, "main", false).unwrap_err();
        assert!(e.to_string().contains("pass --force"), "{e}");
        save_baseline(&run, &baselines, "main", true).unwrap();
        assert_eq!(
            resolve("main", &baselines, &results).unwrap(),
            baselines.join("main")
        );
        assert_eq!(
            resolve("20261207T000102Z", &baselines, &results).unwrap(),
            run
        );
        let e = resolve("nope", &baselines, &results)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("No run or baseline 'nope'"), "{e}");
        let e = resolve(dir.path().to_str().unwrap(), &baselines, &results)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no summary.json"), "{e}");
    }
}
