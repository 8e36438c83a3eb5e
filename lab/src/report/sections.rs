//! One section of the report per suite, and one for the simulator: the
//! suite's verdict and headline, its figures (`gate::figures`, compared
//! with the baseline's when there is one), its charts from the suite's
//! JSON, and its steps (`gate::junit::steps`) with their reasons. What a
//! suite did not record is said in words, never drawn as an empty chart.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;

use super::charts::{BarChart, ChartError, Series};
use super::page::{bad_notice, badge, chart_figure, esc, figure_diff_row, notice, table, Cell};
use crate::gate::compare::{Comparison, Verdict};
use crate::gate::figures::metric;
use crate::gate::junit::{steps, Outcome};
use crate::gate::record::SuiteRecord;

/// A piece of a section: a chart to draw, or a statement in its place.
enum Block {
    Chart {
        id: String,
        chart: BarChart,
        caption: String,
    },
    Note(String),
}

fn chart(id: impl Into<String>, chart: BarChart, caption: impl Into<String>) -> Block {
    Block::Chart {
        id: id.into(),
        chart,
        caption: caption.into(),
    }
}

fn render(blocks: Vec<Block>) -> Result<String, ChartError> {
    let mut out = String::from("<div class=\"charts\">");
    for b in blocks {
        match b {
            Block::Chart { id, chart, caption } if chart.has_bars() => {
                out.push_str(&chart_figure(&id, &chart.to_svg()?, &caption));
            }
            Block::Chart { chart, .. } => {
                out.push_str(&notice(&format!(
                    "{}: the run recorded no values to draw.",
                    chart.title
                )));
            }
            Block::Note(n) => out.push_str(&notice(&n)),
        }
    }
    out.push_str("</div>");
    Ok(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// What state a suite's JSON is in.
enum State<'a> {
    /// No results file.
    Missing,
    /// `{"skipped": reason}`: not for this topology, or the kernel lacks
    /// an option.
    Skipped(String),
    /// `{"suite", "passed": false, "error"}`: it could not run.
    Error(String),
    Ran(&'a Value),
}

fn state(json: Option<&Value>) -> State<'_> {
    let Some(v) = json else {
        return State::Missing;
    };
    if let Some(reason) = v["skipped"].as_str() {
        let missing: Vec<String> = array(&v["missing_options"]).map(text).collect();
        return State::Skipped(if missing.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason} (missing: {})", missing.join(", "))
        });
    }
    if let Some(e) = v["error"].as_str() {
        return State::Error(e.to_owned());
    }
    State::Ran(v)
}

/// The section of a suite of the run. `json` is its results file (None
/// when it is missing); `cmp` the comparison with a baseline.
pub fn suite_section(
    s: &SuiteRecord,
    json: Option<&Value>,
    cmp: Option<&Comparison>,
) -> Result<String, ChartError> {
    let name = s.suite.as_str();
    let st = state(json);
    let verdict = match (&st, s.passed) {
        (State::Skipped(_), _) => badge("skipped", "SKIPPED"),
        (_, true) => badge("passed", "PASSED"),
        (_, false) => badge("failed", "FAILED"),
    };
    let mut out = format!(
        "<section id=\"suite-{}\"><h2>{}{verdict}</h2>",
        esc(name),
        esc(name)
    );
    if !s.headline.is_empty() {
        let _ = write!(out, "<p>{}", esc(&s.headline));
    } else {
        out.push_str("<p>");
    }
    let _ = write!(out, " <small>({:.0} s)</small></p>", s.seconds);
    match st {
        State::Missing => {
            out.push_str(&bad_notice(&format!(
                "The run's summary names suite {name}, but its results file {name}.json is not in the run directory."
            )));
        }
        State::Skipped(reason) => {
            out.push_str(&notice(&format!("Skipped: {reason}. Nothing to chart.")));
        }
        State::Error(e) => {
            out.push_str(&bad_notice(&format!(
                "The suite could not run: {e}. Nothing to chart."
            )));
        }
        State::Ran(v) => {
            out.push_str(&render(charts(name, v))?);
            out.push_str(&figures_table(s, cmp));
            out.push_str(&steps_table(name, v));
        }
    }
    out.push_str("</section>");
    Ok(out)
}

/// A suite the report charts that the run did not include.
pub fn not_run_section(suite: &str) -> String {
    format!(
        "<section id=\"suite-{0}\"><h2>{0}{1}</h2>{2}</section>",
        esc(suite),
        badge("missing", "NOT RUN"),
        notice(&format!(
            "This run did not include suite {suite}, so there is nothing to chart (`lab run {suite}` or `lab run all` runs it)."
        ))
    )
}

/// The suite's figures: with a comparable baseline, old and new side by
/// side (regressions in red); else the run's own, with each metric's
/// direction and tolerance.
fn figures_table(s: &SuiteRecord, cmp: Option<&Comparison>) -> String {
    let compared = cmp.filter(|c| c.verdict != Verdict::NotComparable);
    if let Some(c) = compared {
        let rows: Vec<_> = c
            .figures
            .iter()
            .filter(|f| f.suite == s.suite)
            .map(|f| figure_diff_row(f, false))
            .collect();
        if !rows.is_empty() {
            return format!(
                "<h3>Figures against the baseline</h3>{}",
                table(
                    &[
                        "figure",
                        "old",
                        "new",
                        "unit",
                        "change",
                        "better",
                        "tolerance",
                        ""
                    ],
                    &rows
                )
            );
        }
    }
    if s.figures.is_empty() {
        return String::new();
    }
    let rows: Vec<_> = s
        .figures
        .iter()
        .map(|(key, v)| {
            let m = metric(&s.suite, key);
            (
                None,
                vec![
                    Cell::Text(key.clone()),
                    Cell::Num(*v),
                    Cell::Text(m.map_or("", |m| m.unit).into()),
                    Cell::Text(
                        m.map_or(String::new(), |m| format!("{:?}", m.better).to_lowercase()),
                    ),
                    Cell::Text(
                        m.map_or(String::new(), |m| format!("{:.0} %", m.tolerance * 100.0)),
                    ),
                ],
            )
        })
        .collect();
    format!(
        "<h3>Figures</h3>{}",
        table(&["figure", "value", "unit", "better", "tolerance"], &rows)
    )
}

/// The suite's steps with their outcome and, for a failed or skipped one,
/// the reason.
fn steps_table(suite: &str, v: &Value) -> String {
    let steps = steps(suite, v);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let rows: Vec<_> = steps
        .iter()
        .map(|st| {
            let (class, outcome, reason) = match &st.outcome {
                Outcome::Passed => {
                    passed += 1;
                    (None, badge("passed", "passed"), String::new())
                }
                Outcome::Failed(r) => {
                    failed += 1;
                    (Some("failed"), badge("failed", "FAILED"), r.clone())
                }
                Outcome::Skipped(r) => {
                    skipped += 1;
                    (Some("skipped"), badge("skipped", "skipped"), r.clone())
                }
            };
            (
                class,
                vec![
                    Cell::Text(st.name.clone()),
                    Cell::Html(outcome),
                    Cell::Text(reason),
                ],
            )
        })
        .collect();
    format!(
        "<h3>Steps: {passed} passed, {failed} failed, {skipped} skipped</h3>{}",
        table(&["step", "outcome", "reason"], &rows)
    )
}

fn charts(suite: &str, v: &Value) -> Vec<Block> {
    match suite {
        "dax" => dax_charts(v),
        "fio" => fio_charts(v),
        "faults" => faults_charts(v),
        "ioriot" => ioriot_charts(v),
        _ => Vec::new(),
    }
}

/// Per device: the latency percentiles of the latency mode (per op and
/// size) and of the mwait mode's wake-ups; the throughput mode's
/// bandwidth per block size.
fn dax_charts(v: &Value) -> Vec<Block> {
    let mut out = Vec::new();
    for d in array(&v["devices"]) {
        let dev = d["device"].as_str().unwrap_or("?");
        let modes = &d["report"]["modes"];
        if !modes.is_object() {
            out.push(Block::Note(format!(
                "{dev}: dax-tester reported no modes ({}).",
                text(&d["error"])
            )));
            continue;
        }
        let mut categories = Vec::new();
        let mut pct: [Vec<Option<f64>>; 3] = Default::default();
        let us = |x: &Value| x.as_f64().map(|ns| ns / 1000.0);
        for r in array(&modes["latency"]["results"]) {
            categories.push(format!("{} {} B", text(&r["op"]), r["size"]));
            for (i, k) in ["p50_ns", "p90_ns", "p99_ns"].iter().enumerate() {
                pct[i].push(us(&r[*k]));
            }
        }
        let wake = &modes["mwait"]["wake_latency"];
        if wake.is_object() {
            categories.push(format!(
                "mwait wake-up ({})",
                text(&modes["mwait"]["mechanism"])
            ));
            for (i, k) in ["p50_ns", "p90_ns", "p99_ns"].iter().enumerate() {
                pct[i].push(us(&wake[*k]));
            }
        }
        if categories.is_empty() {
            out.push(Block::Note(format!(
                "{dev}: neither the latency nor the mwait mode recorded latencies{}.",
                skipped_why(&modes["latency"])
            )));
        } else {
            let [p50, p90, p99] = pct;
            out.push(chart(
                format!("chart-dax-latency-{dev}"),
                BarChart {
                    title: format!("dax {dev}: latency percentiles per mode"),
                    y_label: "latency (µs, log)".into(),
                    categories,
                    series: vec![
                        Series { name: "p50".into(), values: p50 },
                        Series { name: "p90".into(), values: p90 },
                        Series { name: "p99".into(), values: p99 },
                    ],
                    log: true,
                },
                format!(
                    "dax-tester on {} ({}): the latency mode's percentiles per operation and size, and the mwait mode's wake-up latency.",
                    text(&d["dax"]),
                    text(&d["kind"])
                ),
            ));
        }
        let results: Vec<&Value> = array(&modes["throughput"]["results"]).collect();
        if results.is_empty() {
            out.push(Block::Note(format!(
                "{dev}: the throughput mode recorded no results{}.",
                skipped_why(&modes["throughput"])
            )));
            continue;
        }
        let sizes: Vec<u64> = dedup(results.iter().filter_map(|r| r["block_size"].as_u64()));
        let ops: Vec<String> = dedup(results.iter().map(|r| text(&r["op"])));
        let series = ops
            .iter()
            .map(|op| Series {
                name: op.clone(),
                values: sizes
                    .iter()
                    .map(|bs| {
                        results
                            .iter()
                            .find(|r| {
                                r["block_size"].as_u64() == Some(*bs) && &text(&r["op"]) == op
                            })
                            .and_then(|r| r["mb_per_sec"].as_f64())
                    })
                    .collect(),
            })
            .collect();
        out.push(chart(
            format!("chart-dax-bandwidth-{dev}"),
            BarChart {
                title: format!("dax {dev}: bandwidth per block size"),
                y_label: "MB/s (log)".into(),
                categories: sizes.iter().map(|b| size_name(*b)).collect(),
                series,
                log: true,
            },
            format!(
                "The throughput mode's bandwidth ({} threads).",
                results[0]["threads"]
            ),
        ));
    }
    if out.is_empty() {
        out.push(Block::Note("The dax suite tested no device.".into()));
    }
    out
}

fn skipped_why(mode: &Value) -> String {
    match &mode["skipped"] {
        Value::String(s) => format!(" (skipped: {s})"),
        Value::Array(a) if !a.is_empty() => format!(
            " (skipped: {})",
            a.iter().map(text).collect::<Vec<_>>().join("; ")
        ),
        _ => String::new(),
    }
}

/// Values in first-seen order, without repeats.
fn dedup<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn size_name(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// fio's IOPS per block size and direction, with the preload (onto the
/// dax device through libfio_intercept.so) and, where the run has it,
/// without (plain fio's dev-dax engine on the same device and slot).
fn fio_charts(v: &Value) -> Vec<Block> {
    let runs: Vec<&Value> = array(&v["runs"]).collect();
    let baseline: Vec<&Value> = array(&v["baseline"]["runs"]).collect();
    let sizes: Vec<u64> = dedup(runs.iter().filter_map(|r| r["bs"].as_u64()));
    let rws: Vec<String> = dedup(runs.iter().map(|r| text(&r["rw"])));
    let iops = |set: &[&Value], rw: &str| -> Vec<Option<f64>> {
        sizes
            .iter()
            .map(|bs| {
                set.iter()
                    .find(|r| r["bs"].as_u64() == Some(*bs) && text(&r["rw"]) == rw)
                    .and_then(|r| r["iops"].as_f64())
            })
            .collect()
    };
    let mut series = Vec::new();
    for rw in &rws {
        series.push(Series {
            name: format!("{rw}, with the preload"),
            values: iops(&runs, rw),
        });
        if !baseline.is_empty() {
            series.push(Series {
                name: format!("{rw}, without (fio dev-dax)"),
                values: iops(&baseline, rw),
            });
        }
    }
    let without = if baseline.is_empty() {
        "This run has no figures without the preload (it was recorded before the suite ran a baseline).".to_owned()
    } else {
        format!(
            "Without: the same jobs by plain fio, its {} engine, on the same device and slot, no LD_PRELOAD.",
            text(&v["baseline"]["engine"])
        )
    };
    vec![chart(
        "chart-fio-iops",
        BarChart {
            title: "fio: IOPS per block size, with and without the preload".into(),
            y_label: "IOPS".into(),
            categories: sizes.iter().map(|b| size_name(*b)).collect(),
            series,
            log: false,
        },
        format!(
            "With: fio ({}, {}) through libfio_intercept.so onto {} ({}). {without}",
            text(&v["engine"]),
            text(&v["verify"]),
            text(&v["dax"]),
            text(&v["device"])
        ),
    )]
}

/// fault-monitor's per-thread fault times of the monitored sequential and
/// random workloads, and each thread's counts.
fn faults_charts(v: &Value) -> Vec<Block> {
    let mut out = Vec::new();
    for pattern in ["seq", "random"] {
        let m = &v["monitor"][pattern];
        let rows: Vec<&Value> = array(&m["rows"]).collect();
        if rows.is_empty() {
            out.push(Block::Note(format!(
                "fault-monitor recorded no thread of the {pattern} workload."
            )));
            continue;
        }
        let ms_to_us = |x: &Value| x.as_f64().map(|ms| ms * 1000.0);
        let series = vec![
            Series {
                name: "min".into(),
                values: rows.iter().map(|r| r["min_us"].as_f64()).collect(),
            },
            Series {
                name: "average".into(),
                values: rows.iter().map(|r| ms_to_us(&r["avg_ms"])).collect(),
            },
            Series {
                name: "max".into(),
                values: rows.iter().map(|r| ms_to_us(&r["max_ms"])).collect(),
            },
        ];
        out.push(chart(
            format!("chart-faults-latency-{pattern}"),
            BarChart {
                title: format!("page-fault latency per thread: {pattern} workload"),
                y_label: "fault time (µs, log)".into(),
                categories: rows
                    .iter()
                    .map(|r| format!("{} ({})", text(&r["comm"]), r["tid"]))
                    .collect(),
                series,
                log: true,
            },
            format!(
                "fault-monitor (kprobe and kretprobe on handle_mm_fault) over mmap-workload -p {pattern}: each thread's shortest, average and longest fault. Faults per thread: {}.",
                rows.iter()
                    .map(|r| format!("{} major + {} minor", r["major"], r["minor"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        out.push(fault_histogram(pattern, &rows).unwrap_or_else(|| {
            Block::Note(format!(
                "This run's fault-monitor kept no histogram of the {pattern} workload's fault times (it was recorded before the monitor kept one)."
            ))
        }));
    }
    out
}

/// A time in ns as a short label: ns below 1 µs, µs below 1 ms, else ms.
fn time_label(ns: u64) -> String {
    let ns = ns as f64;
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e4 => format!("{:.1} µs", n / 1e3),
        n if n < 1e6 => format!("{:.0} µs", n / 1e3),
        n => format!("{:.1} ms", n / 1e6),
    }
}

/// fault-monitor's log2 histogram of each thread's fault times: one
/// grouped chart per workload, a bucket per category, a thread per series;
/// None when no row has a histogram (a run recorded before the monitor
/// kept one).
fn fault_histogram(pattern: &str, rows: &[&Value]) -> Option<Block> {
    let buckets: BTreeSet<(u64, u64)> = rows
        .iter()
        .flat_map(|r| array(&r["histogram"]))
        .filter_map(|b| Some((b["from_ns"].as_u64()?, b["to_ns"].as_u64()?)))
        .collect();
    if buckets.is_empty() {
        return None;
    }
    let series = rows
        .iter()
        .map(|r| Series {
            name: format!("{} ({})", text(&r["comm"]), r["tid"]),
            values: buckets
                .iter()
                .map(|(from, _)| {
                    array(&r["histogram"])
                        .find(|b| b["from_ns"].as_u64() == Some(*from))
                        .and_then(|b| b["count"].as_f64())
                        .or(Some(0.0))
                })
                .collect(),
        })
        .collect();
    Some(chart(
        format!("chart-faults-histogram-{pattern}"),
        BarChart {
            title: format!("page-fault time histogram per thread: {pattern} workload"),
            y_label: "faults".into(),
            categories: buckets
                .iter()
                .map(|(from, to)| format!("{}–{}", time_label(*from), time_label(*to)))
                .collect(),
            series,
            log: false,
        },
        "fault-monitor's log2 buckets of each thread's fault times (kept in the BPF map per thread, as bcc's funclatency: a bucket holds the faults from its lower bound up to, not including, its upper).".to_owned(),
    ))
}

/// ioriot's op mix (captured, and in the replay file) and its replay
/// rates against the captured workload's own.
fn ioriot_charts(v: &Value) -> Vec<Block> {
    let mut out = Vec::new();
    let g = &v["generate"];
    let (cap, rep) = (&g["capture_ops"], &g["replay_ops"]);
    let ops: BTreeSet<&String> = cap
        .as_object()
        .into_iter()
        .flatten()
        .chain(rep.as_object().into_iter().flatten())
        .map(|(k, _)| k)
        .collect();
    if ops.is_empty() {
        out.push(Block::Note(
            "ioriot's generate step recorded no op counts.".into(),
        ));
    } else {
        let count = |m: &Value, op: &str| m[op].as_f64();
        out.push(chart(
            "chart-ioriot-ops",
            BarChart {
                title: "ioriot: op mix of the syscall matrix".into(),
                y_label: "operations".into(),
                categories: ops.iter().map(|s| (*s).clone()).collect(),
                series: vec![
                    Series {
                        name: "captured".into(),
                        values: ops.iter().map(|op| count(cap, op)).collect(),
                    },
                    Series {
                        name: "in the replay file".into(),
                        values: ops.iter().map(|op| count(rep, op)).collect(),
                    },
                ],
                log: false,
            },
            format!(
                "Each syscall the capture recorded, and what generate kept of it ({} events, {} kept).",
                g["events"], g["kept"]
            ),
        ));
    }
    let mut categories = Vec::new();
    let (mut replayed, mut source) = (Vec::new(), Vec::new());
    let mut add = |name: String, s: &Value| {
        if s.is_object() {
            categories.push(name);
            replayed.push(s["ops_per_s"].as_f64());
            source.push(s["source_ops_per_s"].as_f64());
        }
    };
    for (speed, r) in v["rate"].as_object().into_iter().flatten() {
        add(format!("{speed} (30 iterations)"), r);
    }
    add("matrix 1x1".into(), &v["single"]["stats"]);
    add("matrix 2x4".into(), &v["multi"]["stats"]);
    add("fio 1x2".into(), &v["fio"]["replay"]);
    if categories.is_empty() {
        out.push(Block::Note("ioriot recorded no replay rates.".into()));
    } else {
        out.push(chart(
            "chart-ioriot-rate",
            BarChart {
                title: "ioriot: replay rate".into(),
                y_label: "operations per second".into(),
                categories,
                series: vec![
                    Series {
                        name: "replayed".into(),
                        values: replayed,
                    },
                    Series {
                        name: "as captured".into(),
                        values: source,
                    },
                ],
                log: false,
            },
            "Replayed operations per second against the captured workload's own rate: speed0 replays as fast as it can, speed1 at the captured pace; the matrix replays are processes x threads.",
        ));
    }
    out
}

/// The simulator's section: per device its totals and hottest pages, from
/// `memsim.json` (absent in runs from before `lab run` kept it).
pub fn memsim_section(memsim: Option<&Value>) -> Result<String, ChartError> {
    let mut out = String::from("<section id=\"memsim\"><h2>cxl-memsim: hot pages per device</h2>");
    let Some(m) = memsim else {
        out.push_str(&notice(
            "This run has no memsim.json (lab run keeps the simulator's stats from this version on), so there are no hot pages to chart.",
        ));
        out.push_str("</section>");
        return Ok(out);
    };
    if let Some(e) = m["error"].as_str() {
        out.push_str(&bad_notice(&format!(
            "lab run could not read cxl-memsim's stats: {e}"
        )));
        out.push_str("</section>");
        return Ok(out);
    }
    let stats = &m["stats"];
    let timing = m["timing"].as_bool() == Some(true);
    let devices: Vec<&Value> = array(&stats["devices"]).collect();
    let rows: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                None,
                vec![
                    Cell::Text(text(&d["name"])),
                    Cell::Num(d["reads"].as_f64().unwrap_or(0.0)),
                    Cell::Num(d["writes"].as_f64().unwrap_or(0.0)),
                    Cell::Num(d["read_bytes"].as_f64().unwrap_or(0.0)),
                    Cell::Num(d["write_bytes"].as_f64().unwrap_or(0.0)),
                    Cell::Num(d["pages_touched"].as_f64().unwrap_or(0.0)),
                ],
            )
        })
        .collect();
    let _ = write!(
        out,
        "<p>Counted by the simulator since <code>lab up</code>; {}.</p>",
        if timing {
            "the lab runs in timing mode, so every guest access to CXL memory is counted"
        } else {
            "the lab does not run in timing mode, so only requests through its TCP server and vhost-user-blk views are counted, not the guest's loads and stores"
        }
    );
    out.push_str(&table(
        &[
            "device",
            "reads",
            "writes",
            "read bytes",
            "written bytes",
            "pages touched",
        ],
        &rows,
    ));
    let hot: Vec<&Value> = array(&stats["hot_pages"]).collect();
    let mut blocks = Vec::new();
    for d in &devices {
        let name = text(&d["name"]);
        let pages: Vec<&&Value> = hot
            .iter()
            .filter(|p| p["device"].as_str() == Some(name.as_str()))
            .take(12)
            .collect();
        if pages.is_empty() {
            blocks.push(Block::Note(if timing {
                format!("{name}: no page of this device is among the simulator's {} hottest.", hot.len())
            } else {
                format!("{name}: cxl-memsim counted no access to this device (boot with `lab up --timing` to count the guest's).")
            }));
            continue;
        }
        let field = |p: &&&Value, k: &str| p[k].as_f64();
        blocks.push(chart(
            format!("chart-memsim-hot-{name}"),
            BarChart {
                title: format!("cxl-memsim {name}: hottest pages"),
                y_label: "accesses".into(),
                categories: pages
                    .iter()
                    .map(|p| format!("0x{:x}", p["offset"].as_u64().unwrap_or(0)))
                    .collect(),
                series: vec![
                    Series {
                        name: "reads".into(),
                        values: pages.iter().map(|p| field(p, "reads")).collect(),
                    },
                    Series {
                        name: "writes".into(),
                        values: pages.iter().map(|p| field(p, "writes")).collect(),
                    },
                ],
                log: false,
            },
            format!(
                "The device's pages (4 KiB, by offset in the device) among the simulator's {} hottest, most accessed first.",
                hot.len()
            ),
        ));
    }
    out.push_str(&render(blocks)?);
    out.push_str("</section>");
    Ok(out)
}
