//! The figures of a run that `lab compare` weighs, each with the direction
//! that is better and how far it may move the worse way before it counts as
//! a regression: one table, [`METRICS`]. Tolerances are wide because the
//! guest runs under TCG on a shared machine, where the same run varies by
//! tens of percent (the README has the five-run figures they come from).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// How a figure moves with the host's load. Under TCG the guest runs only
/// while QEMU's threads get a CPU, and its clock is the host's, so a busy
/// host slows what the guest measures over wall time. Measured on this
/// two-core machine: vmem0's 1 MiB read bandwidth was 4.9 to 26.9 MB/s
/// over four runs of one commit, while its 64 B p50 latency stayed at
/// 4.9 to 9.0 us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// A rate over wall-clock time while the guest is busy: it falls when
    /// QEMU's threads wait for a CPU. `lab compare` shows the two runs'
    /// ratio of QEMU's CPU share (`schedstat::CpuShare::share`, recorded
    /// per suite) beside it but does not scale by it: measured here, two
    /// runs on one lab whose dax suites had shares 0.18 and 0.33 (1.89x)
    /// gave vmem0 write bandwidth geometric means of 6.0 and 3.1 MB/s, and
    /// fio's with shares 0.22 and 0.50 (2.22x) IOPS means 1.4x to 3.5x
    /// apart: one suite's share does not predict its short jobs' rates.
    Rate,
    /// Compared as recorded: a ratio of two figures of the same run, the
    /// latency of single short operations (a timeslice lost to another
    /// process lands in a few samples, not in the shortest), or a boot
    /// timing (no share is recorded for `lab up`).
    AsIs,
}

/// One kind of figure; a run has one value of it per instance (device,
/// block size, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The suite, or `boot` for the lab's own boot timings.
    pub suite: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// How far the figure may move the worse way, as a fraction of the
    /// base value (0.5: half as fast, or 1.5 times as slow).
    pub tolerance: f64,
    pub load: Load,
    /// Whether a move beyond the tolerance the worse way fails the
    /// comparison. A figure that does not gate is still compared and
    /// listed (`FigureStatus::Worse`); each says why it does not gate.
    pub gates: bool,
}

/// Every figure `lab compare` knows. A figure a run has that is not here is
/// not compared.
///
/// Single short measurements do not gate: dax's bandwidth per block size
/// and fio's IOPS per job (1024 I/Os, 20 to 300 ms each under TCG) move
/// several-fold when one timeslice goes to another process on a shared
/// host (measured here, one lab, two `lab run all` seven minutes apart:
/// fio 64 B randwrite 3879 then 46545 IOPS, vmem0 64 B write 18.5 then 7.1
/// MB/s, while QEMU's CPU share over each suite differed by 1.11x and
/// 1.14x). Their geometric mean per series (a device and op, a direction)
/// gates instead: one job's stall moves it by its 1/n-th power. The
/// monitor's overhead (a ratio of two short timed runs) ranged 0.34x to
/// 6.17x on one commit, so it does not gate either. Nor does dax's p50
/// latency: over three runs on one lab vmem0's 64 B write p50 was 4457,
/// 4527, then 19299 ns, while its shortest sample stayed at 3.9 us; the
/// shortest (`latency_min_ns`, what the access costs when nothing else
/// gets in the way) gates instead.
pub const METRICS: &[Metric] = &[
    Metric {
        suite: "boot",
        name: "agent_ready_ms",
        unit: "ms",
        better: Better::Lower,
        tolerance: 0.5,
        load: Load::AsIs,
        gates: true,
    },
    Metric {
        suite: "boot",
        name: "regions_ready_ms",
        unit: "ms",
        better: Better::Lower,
        tolerance: 0.5,
        load: Load::AsIs,
        gates: true,
    },
    Metric {
        suite: "dax",
        name: "latency_p50_ns",
        unit: "ns",
        better: Better::Lower,
        tolerance: 1.5,
        load: Load::AsIs,
        gates: false,
    },
    Metric {
        suite: "dax",
        name: "latency_min_ns",
        unit: "ns",
        better: Better::Lower,
        tolerance: 1.5,
        load: Load::AsIs,
        gates: true,
    },
    Metric {
        suite: "dax",
        name: "bandwidth_mb_s",
        unit: "MB/s",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: false,
    },
    Metric {
        suite: "dax",
        name: "bandwidth_geomean_mb_s",
        unit: "MB/s",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: true,
    },
    Metric {
        suite: "fio",
        name: "iops_geomean",
        unit: "IOPS",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: true,
    },
    Metric {
        suite: "fio",
        name: "baseline_iops_geomean",
        unit: "IOPS",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: true,
    },
    Metric {
        suite: "fio",
        name: "iops",
        unit: "IOPS",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: false,
    },
    Metric {
        suite: "fio",
        name: "baseline_iops",
        unit: "IOPS",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: false,
    },
    Metric {
        suite: "faults",
        name: "sequential_over_random",
        unit: "x",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::AsIs,
        gates: true,
    },
    Metric {
        suite: "faults",
        name: "monitor_overhead",
        unit: "x",
        better: Better::Lower,
        tolerance: 1.0,
        load: Load::AsIs,
        gates: false,
    },
    Metric {
        suite: "ioriot",
        name: "replay_ops_per_s",
        unit: "ops/s",
        better: Better::Higher,
        tolerance: 0.6,
        load: Load::Rate,
        gates: true,
    },
    Metric {
        suite: "ioriot",
        name: "capture_overhead",
        unit: "x",
        better: Better::Lower,
        tolerance: 1.0,
        load: Load::AsIs,
        gates: true,
    },
];

/// The metric of a figure's key (`name` or `name:instance`).
pub fn metric(suite: &str, key: &str) -> Option<&'static Metric> {
    let name = key.split_once(':').map_or(key, |(n, _)| n);
    METRICS.iter().find(|m| m.suite == suite && m.name == name)
}

/// Whether `new` is worse than `base` by more than the metric allows.
pub fn regressed(m: &Metric, base: f64, new: f64) -> bool {
    match m.better {
        Better::Higher => new < base * (1.0 - m.tolerance),
        Better::Lower => new > base * (1.0 + m.tolerance),
    }
}

/// Whether `new` is better than `base` by more than the tolerance (shown,
/// never a failure).
pub fn improved(m: &Metric, base: f64, new: f64) -> bool {
    match m.better {
        Better::Higher => new > base * (1.0 + m.tolerance),
        Better::Lower => new < base * (1.0 - m.tolerance),
    }
}

/// Figures keyed `name:instance` (or `name`).
pub type Figures = BTreeMap<String, f64>;

fn put(out: &mut Figures, name: &str, instance: Option<String>, v: &Value) {
    if let Some(x) = v.as_f64() {
        let key = match instance {
            Some(i) => format!("{name}:{i}"),
            None => name.to_owned(),
        };
        out.insert(key, x);
    }
}

/// The geometric mean of positive values, to a thousandth (None when
/// there is none).
fn geomean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u32);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        sum += v.ln();
        n += 1;
    }
    // Rounded to a thousandth, so the figure reads back from
    // summary.json as written.
    (n > 0).then(|| ((sum / f64::from(n)).exp() * 1000.0).round() / 1000.0)
}

/// The ops of throughput results, in first-seen order.
fn dedup_ops(results: &[&Value]) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    for r in results {
        if let Some(op) = r["op"].as_str() {
            if !ops.iter().any(|o| o == op) {
                ops.push(op.to_owned());
            }
        }
    }
    ops
}

/// The figures of suite `suite`'s JSON (none for a suite that could not
/// run).
pub fn figures(suite: &str, v: &Value) -> Figures {
    let mut out = Figures::new();
    match suite {
        "dax" => {
            for d in v["devices"].as_array().into_iter().flatten() {
                let dev = d["device"].as_str().unwrap_or("?");
                let modes = &d["report"]["modes"];
                for r in modes["latency"]["results"].as_array().into_iter().flatten() {
                    let i = format!("{dev} {} {}B", r["op"].as_str().unwrap_or("?"), r["size"]);
                    put(&mut out, "latency_p50_ns", Some(i.clone()), &r["p50_ns"]);
                    put(&mut out, "latency_min_ns", Some(i), &r["min_ns"]);
                }
                for r in modes["throughput"]["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = format!(
                        "{dev} {} {}B",
                        r["op"].as_str().unwrap_or("?"),
                        r["block_size"]
                    );
                    put(&mut out, "bandwidth_mb_s", Some(i), &r["mb_per_sec"]);
                }
                let results: Vec<&Value> = modes["throughput"]["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .collect();
                for op in dedup_ops(&results) {
                    let mbs = results
                        .iter()
                        .filter(|r| r["op"].as_str() == Some(op.as_str()))
                        .filter_map(|r| r["mb_per_sec"].as_f64());
                    if let Some(g) = geomean(mbs) {
                        out.insert(format!("bandwidth_geomean_mb_s:{dev} {op}"), g);
                    }
                }
            }
        }
        "fio" => {
            for r in v["runs"].as_array().into_iter().flatten() {
                let i = format!("{}B {}", r["bs"], r["rw"].as_str().unwrap_or("?"));
                put(&mut out, "iops", Some(i), &r["iops"]);
            }
            for r in v["baseline"]["runs"].as_array().into_iter().flatten() {
                let i = format!("{}B {}", r["bs"], r["rw"].as_str().unwrap_or("?"));
                put(&mut out, "baseline_iops", Some(i), &r["iops"]);
            }
            for (series, name) in [
                ("runs", "iops_geomean"),
                ("baseline", "baseline_iops_geomean"),
            ] {
                let runs: Vec<&Value> = match series {
                    "runs" => v["runs"].as_array(),
                    _ => v["baseline"]["runs"].as_array(),
                }
                .into_iter()
                .flatten()
                .collect();
                for rw in ["randwrite", "randread"] {
                    let iops = runs
                        .iter()
                        .filter(|r| r["rw"].as_str() == Some(rw))
                        .filter_map(|r| r["iops"].as_f64());
                    if let Some(g) = geomean(iops) {
                        out.insert(format!("{name}:{rw}"), g);
                    }
                }
            }
        }
        "faults" => {
            put(
                &mut out,
                "sequential_over_random",
                None,
                &v["checks"]["sequential_over_random"],
            );
            put(&mut out, "monitor_overhead", None, &v["overhead"]["ratio"]);
        }
        "ioriot" => {
            for (speed, r) in v["rate"].as_object().into_iter().flatten() {
                put(
                    &mut out,
                    "replay_ops_per_s",
                    Some(speed.clone()),
                    &r["ops_per_s"],
                );
            }
            let o = &v["overhead"];
            if let (Some(t), Some(p)) = (
                o["median_traced_seconds"].as_f64(),
                o["median_plain_seconds"].as_f64(),
            ) {
                if p > 0.0 {
                    out.insert("capture_overhead".into(), t / p);
                }
            }
        }
        _ => {}
    }
    out
}

/// The line `lab run` prints for a suite: its headline figures (or, for
/// ras, its step counts).
pub fn headline(suite: &str, v: &Value) -> String {
    let f = figures(suite, v);
    let get = |k: &str| f.get(k).copied();
    match suite {
        "dax" => v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let dev = d["device"].as_str()?;
                let lat = get(&format!("latency_p50_ns:{dev} read 64B"))?;
                let bw = get(&format!("bandwidth_mb_s:{dev} read 1048576B"))?;
                Some(format!(
                    "{dev} 64 B read p50 {:.1} us, 1 MiB read {bw:.1} MB/s",
                    lat / 1000.0
                ))
            })
            .collect::<Vec<_>>()
            .join("; "),
        "fio" => {
            let mut h = match (get("iops:256B randread"), get("iops:256B randwrite")) {
                (Some(r), Some(w)) => {
                    format!("256 B with the preload: randread {r:.0} IOPS, randwrite {w:.0} IOPS")
                }
                _ => String::new(),
            };
            if let (Some(r), Some(w)) = (
                get("baseline_iops:256B randread"),
                get("baseline_iops:256B randwrite"),
            ) {
                h.push_str(&format!("; without (fio dev-dax): {r:.0}, {w:.0}"));
            }
            h
        }
        "faults" => match (get("sequential_over_random"), get("monitor_overhead")) {
            (Some(s), Some(o)) => {
                format!("sequential faults seq/random {s:.1}x, monitor overhead {o:.2}x")
            }
            _ => String::new(),
        },
        "ioriot" => match (
            get("replay_ops_per_s:speed0"),
            &v["rate"]["speed0"]["rate_vs_source"],
        ) {
            (Some(r), x) => format!(
                "replay {r:.0} ops/s ({:.2}x the capture's), capture overhead {:.2}x",
                x.as_f64().unwrap_or(f64::NAN),
                get("capture_overhead").unwrap_or(f64::NAN)
            ),
            _ => String::new(),
        },
        "ras" => {
            let c = &v["counts"];
            match (
                c["passed"].as_u64(),
                c["skipped"].as_u64(),
                c["failed"].as_u64(),
            ) {
                (Some(p), Some(s), Some(f)) => {
                    format!("steps: {p} passed, {s} skipped, {f} failed")
                }
                _ => String::new(),
            }
        }
        "seeds" => {
            let c = &v["counts"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            if c.is_object() {
                format!(
                    "documented lines: {} passed, {} adapted, {} failed, {} not run, {} host-side, {} run by ioriot",
                    n("passed"),
                    n("adapted"),
                    n("failed"),
                    n("not_run"),
                    n("host_side"),
                    n("run_by")
                )
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::fixture;

    #[test]
    fn every_figure_of_a_real_run_has_a_metric() {
        for suite in ["dax", "fio", "faults", "ioriot", "ras"] {
            for key in figures(suite, &fixture(&format!("run1/{suite}"))).keys() {
                assert!(metric(suite, key).is_some(), "{suite} {key}");
            }
        }
        let f = figures("fio", &fixture("run1/fio"));
        assert_eq!(f.len(), 28, "12 runs with the preload, 12 without, 4 means");
        assert!(f.contains_key("iops:256B randread"));
    }

    #[test]
    fn series_gate_through_their_geometric_mean() {
        assert_eq!(geomean([4.0, 16.0].into_iter()), Some(8.0));
        assert_eq!(geomean([0.0, -1.0].into_iter()), None);
        let f = figures("fio", &fixture("run1/fio"));
        let reads: Vec<f64> = f
            .iter()
            .filter(|(k, _)| k.starts_with("iops:") && k.ends_with(" randread"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(reads.len(), 6);
        let g = f["iops_geomean:randread"];
        assert_eq!(g, geomean(reads.into_iter()).unwrap());
        assert!(f.contains_key("baseline_iops_geomean:randwrite"));
        let d = figures("dax", &fixture("run1/dax"));
        for k in [
            "bandwidth_geomean_mb_s:vmem0 read",
            "bandwidth_geomean_mb_s:pmem0 write",
        ] {
            assert!(d.contains_key(k), "{k}");
        }
        for k in f
            .keys()
            .chain(d.keys())
            .filter(|k| !k.starts_with("latency"))
        {
            let m = metric(if k.contains("iops") { "fio" } else { "dax" }, k).unwrap();
            assert_eq!(m.gates, k.contains("geomean"), "{k}");
        }
    }

    #[test]
    fn one_metric_per_suite_and_name() {
        for (i, a) in METRICS.iter().enumerate() {
            assert!(a.tolerance > 0.0 && a.tolerance.is_finite());
            for b in &METRICS[i + 1..] {
                assert!(
                    (a.suite, a.name) != (b.suite, b.name),
                    "{} {}",
                    a.suite,
                    a.name
                );
            }
        }
    }

    #[test]
    fn only_the_worse_way_beyond_tolerance_regresses() {
        let boot = metric("boot", "regions_ready_ms").unwrap();
        assert!(
            !regressed(boot, 8000.0, 4000.0),
            "a faster boot is no regression"
        );
        assert!(improved(boot, 8000.0, 3000.0));
        assert!(!regressed(boot, 8000.0, 11_900.0));
        assert!(regressed(boot, 8000.0, 12_100.0));
        let iops = metric("fio", "iops:256B randread").unwrap();
        assert!(!regressed(iops, 1000.0, 5000.0));
        assert!(!regressed(iops, 1000.0, 410.0));
        assert!(regressed(iops, 1000.0, 390.0));
    }

    #[test]
    fn headlines_name_the_figures() {
        let h = headline("fio", &fixture("run1/fio"));
        assert!(h.starts_with("256 B with the preload: randread "), "{h}");
        let h = headline("dax", &fixture("run1/dax"));
        assert!(
            h.contains("vmem0 64 B read p50 ") && h.contains("pmem0"),
            "{h}"
        );
        assert!(headline("ras", &fixture("run1/ras")).starts_with("steps: 7 passed, 1 skipped"));
        assert!(headline("faults", &fixture("run1/faults")).contains("seq/random"));
        assert!(headline("ioriot", &fixture("run1/ioriot")).starts_with("replay "));
        let seeds = serde_json::json!({"counts": {"passed": 9, "adapted": 12, "failed": 0, "not_run": 8, "host_side": 5, "run_by": 13}});
        assert_eq!(
            headline("seeds", &seeds),
            "documented lines: 9 passed, 12 adapted, 0 failed, 8 not run, 5 host-side, 13 run by ioriot"
        );
    }
}
