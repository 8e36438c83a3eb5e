//! `lab compare`: two runs (or a baseline and a run) are comparable when
//! they ran on the same topology and the new one has every suite of the
//! base; then their digests must be equal and each figure must stay within
//! its metric's tolerance the worse way (`figures::METRICS`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::figures::{improved, metric, regressed, Better, Load};
use super::record::RunRecord;

/// The outcome, and `lab compare`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same behaviour, every figure within tolerance: exit 0.
    Equal,
    /// A digest differs or a figure moved the worse way beyond tolerance: exit 1.
    Regression,
    /// Different topology or a missing suite: exit 2.
    NotComparable,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Equal => 0,
            Verdict::Regression => 1,
            Verdict::NotComparable => 2,
        }
    }
}

/// A field of a suite's digest that differs. `field` is a path into the
/// digest (`runs[2].intercepted.read`); a side is null where it is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestDiff {
    pub suite: String,
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// What became of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureStatus {
    Within,
    Improved,
    Regressed,
    /// Worse beyond its tolerance, on a figure that does not gate
    /// (`Metric::gates`): listed, not a regression.
    Worse,
    /// In the base, not in the new run.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureDiff {
    pub suite: String,
    pub field: String,
    pub old: f64,
    pub new: Option<f64>,
    pub unit: String,
    pub better: Better,
    pub tolerance: f64,
    pub status: FigureStatus,
    /// For a load-sensitive figure (`Load::Rate`) of two runs that both
    /// recorded QEMU's CPU share: new share / base share, shown so a reader
    /// sees how differently loaded the host was (not applied to the
    /// figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_scale: Option<f64>,
}

/// What `lab compare` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub base: String,
    pub new: String,
    pub verdict: Verdict,
    /// Why the runs cannot be compared (verdict `not_comparable`).
    pub reasons: Vec<String>,
    /// Differences that do not stop a comparison (kernel, image, QEMU or
    /// lab version; suites only the new run has).
    pub notes: Vec<String>,
    pub digests: Vec<DigestDiff>,
    /// Every compared figure.
    pub figures: Vec<FigureDiff>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &FigureDiff> {
        self.figures
            .iter()
            .filter(|f| matches!(f.status, FigureStatus::Regressed | FigureStatus::Missing))
    }
}

/// Compares `new` against `base`.
pub fn compare(base: &RunRecord, new: &RunRecord) -> Comparison {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let (be, ne) = (&base.environment, &new.environment);
    if be.topology.sha256 != ne.topology.sha256 {
        reasons.push(format!(
            "different topologies: {} ({}) against {} ({})",
            be.topology.origin,
            short(&be.topology.sha256),
            ne.topology.origin,
            short(&ne.topology.sha256)
        ));
    }
    for s in &base.suites {
        if new.suite(&s.suite).is_none() {
            reasons.push(format!(
                "suite {} is in {} but not in {}",
                s.suite, base.run_id, new.run_id
            ));
        }
    }
    for s in &new.suites {
        if base.suite(&s.suite).is_none() {
            notes.push(format!("suite {} is new (not in {})", s.suite, base.run_id));
        }
    }
    for (what, a, b) in [
        ("kernel", &be.kernel, &ne.kernel),
        ("image", &be.image_key, &ne.image_key),
        ("QEMU", &be.qemu, &ne.qemu),
        ("lab version", &be.lab, &ne.lab),
        ("accelerator", &be.accel, &ne.accel),
    ] {
        if a != b {
            notes.push(format!("{what}: {a} -> {b}"));
        }
    }
    let mut digests = Vec::new();
    let mut figures = Vec::new();
    // A restored lab reaches regions ready many times sooner than a cold
    // one: boot times compare only between labs that came up alike.
    let same_boot = be.boot_kind() == ne.boot_kind();
    if !same_boot {
        notes.push(format!(
            "boot: {} -> {} (boot times not compared)",
            be.boot_kind(),
            ne.boot_kind()
        ));
    }
    if reasons.is_empty() {
        if same_boot {
            compare_figures("boot", &base.boot, &new.boot, None, &mut figures);
        }
        for b in &base.suites {
            let Some(n) = new.suite(&b.suite) else {
                continue;
            };
            diff_values(&b.suite, String::new(), &b.digest, &n.digest, &mut digests);
            let load_scale = match (&b.qemu_cpu, &n.qemu_cpu) {
                (Some(x), Some(y)) if x.share > 0.0 && y.share > 0.0 => Some(y.share / x.share),
                _ => None,
            };
            compare_figures(&b.suite, &b.figures, &n.figures, load_scale, &mut figures);
        }
    }
    let verdict = if !reasons.is_empty() {
        Verdict::NotComparable
    } else if !digests.is_empty()
        || figures
            .iter()
            .any(|f| matches!(f.status, FigureStatus::Regressed | FigureStatus::Missing))
    {
        Verdict::Regression
    } else {
        Verdict::Equal
    };
    Comparison {
        base: base.run_id.clone(),
        new: new.run_id.clone(),
        verdict,
        reasons,
        notes,
        digests,
        figures,
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn compare_figures(
    suite: &str,
    base: &super::figures::Figures,
    new: &super::figures::Figures,
    load_scale: Option<f64>,
    out: &mut Vec<FigureDiff>,
) {
    for (key, &old) in base {
        let Some(m) = metric(suite, key) else {
            continue;
        };
        // Shown beside a load-sensitive figure, not applied: measured
        // here, rates did not follow the share (see `Load::Rate`).
        let load_scale = load_scale.filter(|_| m.load == Load::Rate);
        let n = new.get(key).copied();
        let status = match n {
            None => FigureStatus::Missing,
            Some(n) if regressed(m, old, n) && m.gates => FigureStatus::Regressed,
            Some(n) if regressed(m, old, n) => FigureStatus::Worse,
            Some(n) if improved(m, old, n) => FigureStatus::Improved,
            Some(_) => FigureStatus::Within,
        };
        out.push(FigureDiff {
            suite: suite.to_owned(),
            field: key.clone(),
            old,
            new: n,
            unit: m.unit.to_owned(),
            better: m.better,
            tolerance: m.tolerance,
            status,
            load_scale,
        });
    }
}

/// Every leaf where `a` and `b` differ, by path.
fn diff_values(suite: &str, path: String, a: &Value, b: &Value, out: &mut Vec<DigestDiff>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = Value::Null;
                diff_values(
                    suite,
                    p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff_values(suite, format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(DigestDiff {
            suite: suite.to_owned(),
            field: path,
            old: a.clone(),
            new: b.clone(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::figures::Figures;
    use crate::gate::fixture;
    use crate::gate::record::{suite_record, Environment, TopologyId, SCHEMA};
    use crate::schedstat::CpuShare;
    use serde_json::json;

    /// A record of fixture run `run` (two real runs of every suite on the
    /// default topology).
    fn run(run: &str) -> RunRecord {
        RunRecord {
            schema: SCHEMA,
            run_id: run.into(),
            lab: "t".into(),
            started: "2026-12-07T00:00:00Z".into(),
            environment: Environment {
                kernel_origin: None,
                kernel: "6.12.57+deb12-amd64".into(),
                topology: TopologyId {
                    origin: "embedded default".into(),
                    sha256: "0123456789abcdef".into(),
                },
                image_key: "k".into(),
                qemu: "QEMU emulator version 10.0.3".into(),
                lab: "0.1.0".into(),
                accel: "tcg".into(),
                boot: None,
            },
            boot: Figures::from([("regions_ready_ms".to_owned(), 8000.0)]),
            suites: ["dax", "fio", "faults", "ioriot", "ras"]
                .iter()
                .map(|s| suite_record(s, 1.0, &fixture(&format!("{run}/{s}"))))
                .collect(),
            stall: None,
        }
    }

    #[test]
    fn two_real_runs_are_equal_within_tolerance() {
        let c = compare(&run("run1"), &run("run2"));
        assert_eq!(c.verdict, Verdict::Equal, "{c:#?}");
        assert!(c.digests.is_empty() && c.reasons.is_empty());
        assert!(c.figures.len() > 40, "{}", c.figures.len());
    }

    #[test]
    fn an_edited_digest_is_a_regression_naming_the_field() {
        let base = run("run1");
        let mut new = run("run2");
        let fio = new.suites.iter_mut().find(|s| s.suite == "fio").unwrap();
        fio.digest["runs"][4]["intercepted"]["read"] = json!(1000);
        let c = compare(&base, &new);
        assert_eq!(c.verdict, Verdict::Regression);
        assert_eq!(c.verdict.exit_code(), 1);
        assert_eq!(
            c.digests,
            [DigestDiff {
                suite: "fio".into(),
                field: "runs[4].intercepted.read".into(),
                old: json!(1024),
                new: json!(1000)
            }]
        );
    }

    #[test]
    fn a_figure_beyond_tolerance_the_worse_way_is_a_regression() {
        let base = run("run1");
        let mut new = run("run1");
        let fio = new.suites.iter_mut().find(|s| s.suite == "fio").unwrap();
        let iops = fio.figures.get_mut("iops_geomean:randread").unwrap();
        let old = *iops;
        *iops = old * 0.3;
        let c = compare(&base, &new);
        assert_eq!(c.verdict, Verdict::Regression);
        let r: Vec<&FigureDiff> = c.regressions().collect();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].suite.as_str(), r[0].field.as_str()),
            ("fio", "iops_geomean:randread")
        );
        assert_eq!((r[0].old, r[0].new), (old, Some(old * 0.3)));
        // Three times the IOPS is better, not a regression.
        let mut faster = run("run1");
        let fio = faster.suites.iter_mut().find(|s| s.suite == "fio").unwrap();
        *fio.figures.get_mut("iops_geomean:randread").unwrap() = old * 3.0;
        let c = compare(&base, &faster);
        assert_eq!(c.verdict, Verdict::Equal);
        assert!(c.figures.iter().any(|f| f.status == FigureStatus::Improved));
        // One job at 30 %: listed as worse, but a single short job does
        // not gate.
        let mut one = run("run1");
        let fio = one.suites.iter_mut().find(|s| s.suite == "fio").unwrap();
        *fio.figures.get_mut("iops:256B randread").unwrap() *= 0.3;
        let c = compare(&base, &one);
        assert_eq!(c.verdict, Verdict::Equal);
        let worse: Vec<&FigureDiff> = c
            .figures
            .iter()
            .filter(|f| f.status == FigureStatus::Worse)
            .collect();
        assert_eq!(worse.len(), 1);
        assert_eq!(worse[0].field, "iops:256B randread");
    }

    fn with_share(mut r: RunRecord, suite: &str, share: f64) -> RunRecord {
        let s = r.suites.iter_mut().find(|s| s.suite == suite).unwrap();
        s.qemu_cpu = Some(CpuShare {
            run_seconds: 100.0 * share,
            wait_seconds: 100.0 * (1.0 - share),
            share,
        });
        r
    }

    #[test]
    fn the_cpu_share_ratio_is_shown_beside_rates_not_applied() {
        let base = with_share(run("run1"), "dax", 0.2);
        let key = "bandwidth_geomean_mb_s:vmem0 read";
        // A fifth of the bandwidth with five times the share: the gate
        // does not excuse (or blame) it on the load, it shows the ratio.
        let mut new = with_share(run("run1"), "dax", 0.9);
        let dax = new.suites.iter_mut().find(|s| s.suite == "dax").unwrap();
        for (k, v) in dax.figures.iter_mut() {
            if k.starts_with("bandwidth") {
                *v *= 0.2;
            }
        }
        let c = compare(&base, &new);
        assert_eq!(c.verdict, Verdict::Regression);
        let f = c.figures.iter().find(|f| f.field == key).unwrap();
        assert_eq!(f.status, FigureStatus::Regressed);
        assert!((f.load_scale.unwrap() - 4.5).abs() < 1e-9);
        // Latencies are not load-sensitive rates: no ratio.
        let lat = c
            .figures
            .iter()
            .find(|f| f.field.starts_with("latency_p50_ns:"))
            .unwrap();
        assert_eq!(lat.load_scale, None);
        // Runs recorded without shares: no ratio either.
        let c = compare(&run("run1"), &new);
        assert!(c.figures.iter().all(|f| f.load_scale.is_none()));
    }

    #[test]
    fn a_faster_boot_is_not_a_regression_a_much_slower_one_is() {
        let base = run("run1");
        let mut new = run("run1");
        new.boot.insert("regions_ready_ms".into(), 3000.0);
        assert_eq!(compare(&base, &new).verdict, Verdict::Equal);
        new.boot.insert("regions_ready_ms".into(), 20_000.0);
        assert_eq!(compare(&base, &new).verdict, Verdict::Regression);
    }

    #[test]
    fn boot_times_of_a_restored_lab_and_a_cold_one_are_not_compared() {
        let mut base = run("run1");
        base.environment.boot = Some("restored".into());
        base.boot.insert("regions_ready_ms".into(), 1000.0);
        // A record from before restores: it booted cold.
        let mut new = run("run1");
        new.boot.insert("regions_ready_ms".into(), 20_000.0);
        let c = compare(&base, &new);
        assert_eq!(c.verdict, Verdict::Equal, "{c:?}");
        assert!(
            c.notes
                .iter()
                .any(|n| n == "boot: restored -> cold (boot times not compared)"),
            "{:?}",
            c.notes
        );
        new.environment.boot = Some("restored".into());
        assert_eq!(compare(&base, &new).verdict, Verdict::Regression);
    }

    #[test]
    fn other_topologies_or_a_missing_suite_cannot_be_compared() {
        let base = run("run1");
        let mut other = run("run2");
        other.environment.topology = TopologyId {
            origin: "switched".into(),
            sha256: "fedcba9876543210".into(),
        };
        let c = compare(&base, &other);
        assert_eq!(c.verdict, Verdict::NotComparable);
        assert_eq!(c.verdict.exit_code(), 2);
        assert_eq!(
            c.reasons,
            ["different topologies: embedded default (0123456789ab) against switched (fedcba987654)"]
        );
        let mut fewer = run("run2");
        fewer.suites.retain(|s| s.suite != "ras");
        let c = compare(&base, &fewer);
        assert_eq!(c.verdict, Verdict::NotComparable);
        assert_eq!(c.reasons, ["suite ras is in run1 but not in run2"]);
        // The other way round the extra suite is only a note.
        let c = compare(&fewer, &base);
        assert_eq!(c.verdict, Verdict::Equal);
        assert_eq!(c.notes, ["suite ras is new (not in run2)"]);
    }

    #[test]
    fn another_kernel_is_compared_and_noted() {
        let base = run("run1");
        let mut new = run("run2");
        new.environment.kernel = "6.12.118+deb12-amd64".into();
        let c = compare(&base, &new);
        assert_eq!(c.verdict, Verdict::Equal);
        assert_eq!(
            c.notes,
            ["kernel: 6.12.57+deb12-amd64 -> 6.12.118+deb12-amd64"]
        );
    }
}
