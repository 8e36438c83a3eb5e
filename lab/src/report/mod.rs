//! `lab report`: one self-contained HTML page of a kept run (or baseline):
//! its summary, per suite its figures, charts and steps, the simulator's
//! hot pages, and with a baseline the comparison, regressions in red.
//! `page.rs` lays out the page, `charts.rs` draws the SVG charts,
//! `sections.rs` decides what each suite's section shows. Pure: it reads a
//! run directory and returns text.

pub mod charts;
pub mod page;
pub mod sections;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::gate::compare::Comparison;
use crate::gate::record::{self, RecordError, RunRecord, MEMSIM_FILE};
use charts::ChartError;
use page::{badge, esc};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Reading the run failed.")]
    Run(#[source] RecordError),
    #[error("Reading {} failed.", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("A chart of the report could not be drawn.")]
    Chart(#[source] ChartError),
}

/// The suites whose sections have charts: one the run did not include is
/// shown as not run.
const CHARTED: [&str; 4] = ["dax", "fio", "faults", "ioriot"];

/// What a report is made of: a run's summary, each suite's results file
/// and the simulator's stats.
#[derive(Debug, Clone, PartialEq)]
pub struct RunData {
    pub record: RunRecord,
    /// Each suite's results JSON by suite name; a suite whose file is
    /// missing has none.
    pub results: BTreeMap<String, Value>,
    /// `memsim.json`, when the run has one.
    pub memsim: Option<Value>,
}

/// A JSON file of the run: its value, an `{"error"}` object saying why it
/// cannot be read as JSON, or None when it is not there.
fn read_json(path: &Path) -> Result<Option<Value>, ReportError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            serde_json::json!({
                "passed": false,
                "error": format!("{} is not JSON ({e}); it was edited or cut short", path.display()),
            })
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReportError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a run or baseline directory.
pub fn load(dir: &Path) -> Result<RunData, ReportError> {
    let record = record::load(dir).map_err(ReportError::Run)?;
    let mut results = BTreeMap::new();
    for s in &record.suites {
        if let Some(v) = read_json(&dir.join(format!("{}.json", s.suite)))? {
            results.insert(s.suite.clone(), v);
        }
    }
    let memsim = read_json(&dir.join(MEMSIM_FILE))?;
    Ok(RunData {
        record,
        results,
        memsim,
    })
}

/// The report of `run` as one HTML document; `cmp` is its comparison with
/// a baseline.
pub fn render(run: &RunData, cmp: Option<&Comparison>) -> Result<String, ReportError> {
    let r = &run.record;
    let mut body = format!(
        "<h1>cxl-lab run {}</h1><p>Lab <code>{}</code>, started {}.</p>",
        esc(&r.run_id),
        esc(&r.lab),
        esc(&r.started)
    );
    body.push_str("<h2 id=\"summary\">Summary</h2>");
    body.push_str(&page::summary(r));
    body.push_str(&overview(run));
    if let Some(c) = cmp {
        body.push_str(&page::comparison(c));
    }
    for s in &r.suites {
        body.push_str(
            &sections::suite_section(s, run.results.get(&s.suite), cmp)
                .map_err(ReportError::Chart)?,
        );
    }
    for suite in CHARTED {
        if r.suite(suite).is_none() {
            body.push_str(&sections::not_run_section(suite));
        }
    }
    body.push_str(&sections::memsim_section(run.memsim.as_ref()).map_err(ReportError::Chart)?);
    let _ = write!(
        body,
        "<p><small>Written by <code>lab report</code> (cxl-lab {}).</small></p>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(page::document(&format!("cxl-lab run {}", r.run_id), &body))
}

/// The suites at a glance: verdict, time and headline, each linked to its
/// section.
fn overview(run: &RunData) -> String {
    let rows: Vec<(Option<&str>, Vec<page::Cell>)> = run
        .record
        .suites
        .iter()
        .map(|s| {
            let skipped = run
                .results
                .get(&s.suite)
                .and_then(|v| v["skipped"].as_str())
                .map(str::to_owned);
            let (class, verdict) = match (&skipped, s.passed) {
                (Some(_), _) => (Some("skipped"), badge("skipped", "SKIPPED")),
                (None, true) => (None, badge("passed", "PASSED")),
                (None, false) => (Some("failed"), badge("failed", "FAILED")),
            };
            (
                class,
                vec![
                    page::Cell::Html(format!("<a href=\"#suite-{0}\">{0}</a>", esc(&s.suite))),
                    page::Cell::Html(verdict),
                    page::Cell::Num(s.seconds),
                    page::Cell::Text(skipped.unwrap_or_else(|| s.headline.clone())),
                ],
            )
        })
        .collect();
    format!(
        "<h3>Suites</h3>{}",
        page::table(&["suite", "verdict", "seconds", "headline"], &rows)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gate::compare::compare;
    use crate::gate::figures::Figures;
    use crate::gate::fixture;
    use crate::gate::record::{suite_record, Environment, TopologyId, SCHEMA};
    use serde_json::json;

    const SUITES: [&str; 5] = ["dax", "fio", "faults", "ioriot", "ras"];

    /// Fixture run `run` (two real runs of every suite on the default
    /// topology), with dcd skipped as `lab run all` skips it there.
    pub(crate) fn fixture_run(run: &str) -> RunData {
        let mut results: BTreeMap<String, Value> = SUITES
            .iter()
            .map(|s| (s.to_string(), fixture(&format!("{run}/{s}"))))
            .collect();
        results.insert(
            "dcd".into(),
            json!({"suite": "dcd", "passed": false, "skipped": "the topology has no dynamic capacity device"}),
        );
        let record = RunRecord {
            schema: SCHEMA,
            run_id: run.into(),
            lab: "default".into(),
            started: "2026-12-07T00:00:00Z".into(),
            environment: Environment {
                kernel: "6.12.118+deb12-amd64".into(),
                kernel_origin: None,
                boot: None,
                topology: TopologyId {
                    origin: "embedded default".into(),
                    sha256: "0123456789abcdef".into(),
                },
                image_key: "k".into(),
                qemu: "QEMU emulator version 10.0.3".into(),
                lab: "0.1.0".into(),
                accel: "tcg".into(),
            },
            boot: Figures::from([("regions_ready_ms".to_owned(), 7800.0)]),
            suites: SUITES
                .iter()
                .chain(&["dcd"])
                .map(|s| suite_record(s, 10.0, &results[*s]))
                .collect(),
            stall: None,
        };
        // cxl-memsim's stats: only run1 has them, from a real `lab up
        // --timing` and `lab run fio` on the default topology (2026-12-07).
        let memsim = (run == "run1").then(|| fixture("run1/memsim"));
        RunData {
            record,
            results,
            memsim,
        }
    }

    /// The `<svg>` inside the figure with this id, if drawn.
    fn chart_svg<'a>(html: &'a str, id: &str) -> Option<&'a str> {
        let start = html.find(&format!("<figure class=\"chart\" id=\"{id}\">"))?;
        let rest = &html[start..];
        let end = rest.find("</figure>")?;
        let fig = &rest[..end];
        fig.find("<svg").map(|i| &fig[i..])
    }

    #[test]
    fn every_expected_chart_is_drawn_from_a_real_run() {
        let html = render(&fixture_run("run1"), None).unwrap();
        for id in [
            "chart-dax-latency-vmem0",
            "chart-dax-latency-pmem0",
            "chart-dax-bandwidth-vmem0",
            "chart-dax-bandwidth-pmem0",
            "chart-fio-iops",
            "chart-faults-latency-seq",
            "chart-faults-latency-random",
            "chart-faults-histogram-seq",
            "chart-faults-histogram-random",
            "chart-ioriot-ops",
            "chart-ioriot-rate",
        ] {
            let svg = chart_svg(&html, id).unwrap_or_else(|| panic!("no chart {id}"));
            assert!(svg.contains("<rect"), "{id} has no bars");
        }
        // The latency chart names each op and size, and the mwait mode.
        let dax = chart_svg(&html, "chart-dax-latency-vmem0").unwrap();
        for label in ["read 64 B", "write 4096 B", "mwait wake-up", "p99"] {
            assert!(dax.contains(label), "{label}");
        }
        // The fault-time histogram: a bar per thread in each log2 bucket.
        let hist = chart_svg(&html, "chart-faults-histogram-random").unwrap();
        for label in ["16 µs–33 µs", "mmap-w0"] {
            assert!(hist.contains(label), "{label}");
        }
        // No network: nothing is loaded, nothing runs.
        for banned in ["<script", "<link", "src=", "url(", "@import"] {
            assert!(!html.contains(banned), "{banned}");
        }
        let without_svg_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !without_svg_namespace.contains("http"),
            "a link in the report"
        );
    }

    #[test]
    fn tables_have_the_runs_numbers_and_steps() {
        let run = fixture_run("run1");
        let html = render(&run, None).unwrap();
        // fio 256 B randread with the preload: 12800 IOPS in run1, and
        // 44522 without it.
        let iops = run.results["fio"]["runs"][5]["iops"].as_f64().unwrap();
        assert_eq!(run.results["fio"]["runs"][5]["bs"], 256);
        assert!(html.contains(&format!(
            "<td>iops:256B randread</td><td class=\"num\">{}</td>",
            page::number(iops)
        )));
        assert!(html.contains("12800") && html.contains("44522"));
        // The summary names what the run ran on.
        for s in [
            "6.12.118+deb12-amd64",
            "QEMU emulator version 10.0.3",
            "embedded default",
        ] {
            assert!(html.contains(s), "{s}");
        }
        // ras: its skipped step with the reason.
        let ras_skip = crate::gate::junit::steps("ras", &run.results["ras"])
            .into_iter()
            .find_map(|s| match s.outcome {
                crate::gate::junit::Outcome::Skipped(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert!(html.contains(&page::esc(&ras_skip)));
        assert!(html.contains("Steps: 7 passed, 0 failed, 1 skipped"));
        // dcd was skipped: said in words, no chart.
        assert!(html.contains("Skipped: the topology has no dynamic capacity device."));
        // The simulator's hot pages per device.
        assert!(chart_svg(&html, "chart-memsim-hot-vmem0").is_some());
    }

    #[test]
    fn missing_and_skipped_suites_are_said_plainly() {
        let mut run = fixture_run("run1");
        run.record.suites.retain(|s| s.suite != "ioriot");
        run.results.remove("ioriot");
        let faults = run.results.get_mut("faults").unwrap();
        *faults = json!({"suite": "faults", "passed": false, "skipped": "the guest kernel lacks CONFIG_KPROBES", "missing_options": ["KPROBES"]});
        run.record
            .suites
            .iter_mut()
            .find(|s| s.suite == "faults")
            .unwrap()
            .passed = false;
        run.results.remove("fio");
        run.memsim = None;
        let html = render(&run, None).unwrap();
        assert!(html.contains("This run did not include suite ioriot"));
        assert!(chart_svg(&html, "chart-ioriot-ops").is_none());
        assert!(html.contains("Skipped: the guest kernel lacks CONFIG_KPROBES (missing: KPROBES)."));
        assert!(chart_svg(&html, "chart-faults-latency-seq").is_none());
        assert!(html.contains("its results file fio.json is not in the run directory"));
        assert!(html.contains("This run has no memsim.json"));
    }

    #[test]
    fn regressions_against_a_baseline_are_red_with_old_and_new() {
        let base = fixture_run("run1");
        let mut new = fixture_run("run2");
        let fio = new
            .record
            .suites
            .iter_mut()
            .find(|s| s.suite == "fio")
            .unwrap();
        fio.digest["runs"][4]["intercepted"]["read"] = json!(1000);
        let old_iops = base.record.suite("fio").unwrap().figures["iops_geomean:randread"];
        fio.figures
            .insert("iops_geomean:randread".into(), old_iops * 0.3);
        let c = compare(&base.record, &new.record);
        let html = render(&new, Some(&c)).unwrap();
        assert!(html.contains("REGRESSION"));
        assert!(html.contains("<li>fio runs[4].intercepted.read: 1024 -&gt; 1000</li>"));
        let row = format!(
            "<tr class=\"regressed\"><td>iops_geomean:randread</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            page::number(old_iops),
            page::number(old_iops * 0.3)
        );
        // Once in the comparison's table (with the suite), once in fio's.
        assert!(html.contains(&row), "{row}");
        assert!(html.contains("<tr class=\"regressed\"><td>fio</td><td>iops_geomean:randread</td>"));
        // The unedited runs are equal: no red row.
        let c = compare(&base.record, &fixture_run("run2").record);
        let html = render(&fixture_run("run2"), Some(&c)).unwrap();
        assert!(html.contains("EQUAL") && !html.contains("class=\"regressed\""));
    }

    #[test]
    fn a_run_directory_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = fixture_run("run1");
        let results = dir.path();
        std::fs::create_dir_all(results.join("run1")).unwrap();
        for (suite, v) in &run.results {
            std::fs::write(
                results.join("run1").join(format!("{suite}.json")),
                v.to_string(),
            )
            .unwrap();
        }
        std::fs::write(
            results.join("run1").join(MEMSIM_FILE),
            run.memsim.as_ref().unwrap().to_string(),
        )
        .unwrap();
        record::write_run(results, &run.record).unwrap();
        assert_eq!(load(&results.join("latest")).unwrap(), run);
        std::fs::write(results.join("run1").join("fio.json"), "{\"cut").unwrap();
        let html = render(&load(&results.join("run1")).unwrap(), None).unwrap();
        assert!(
            html.contains("fio.json is not JSON"),
            "the corrupt file is named"
        );
    }
}
