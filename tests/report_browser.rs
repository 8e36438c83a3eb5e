//! `lab report` in a real browser (no lab boot): the report of the two
//! fixture runs (lab/src/gate/fixtures, real runs of every suite on the
//! default topology) is loaded by Debian's headless Chromium. A copy with
//! two small scripts added (the report itself has none) records every
//! error the page raises and, once it is laid out, each chart's size and
//! drawn elements; Chromium's `--dump-dom` brings that back. Every chart
//! must have a non-zero box and bars, and the page must log nothing (the
//! report has no script, so any console line is the browser complaining,
//! as it does about a malformed SVG attribute). A screenshot of each
//! report is kept as a test artifact (the path is printed).
//!
//! Chromium is a prerequisite like QEMU: without it the test fails and
//! says to run ci/install-deps.

use std::path::{Path, PathBuf};
use std::process::Command;

use cxl_lab::gate::compare::compare;
use cxl_lab::gate::figures::Figures;
use cxl_lab::gate::record::{
    self, suite_record, Environment, RunRecord, TopologyId, MEMSIM_FILE, SCHEMA,
};
use cxl_lab::report;
use serde_json::{json, Value};

const SUITES: [&str; 5] = ["dax", "fio", "faults", "ioriot", "ras"];

/// Records errors from the first moment (before anything else parses).
const CAPTURE: &str = r#"<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(e.message || ('failed to load ' + (t && (t.src || t.href || t.tagName))));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  window.__errors.push('security policy: ' + e.violatedDirective);
});
['error', 'warn'].forEach(function (k) {
  var f = console[k];
  console[k] = function () {
    window.__errors.push(k + ': ' + Array.prototype.join.call(arguments, ' '));
    f.apply(console, arguments);
  };
});
</script>"#;

/// Measures each chart once the page is laid out and writes the result
/// into the DOM, where `--dump-dom` finds it.
const CHECK: &str = r#"<script>
(function () {
  var out = { charts: [], errors: window.__errors, height: document.documentElement.scrollHeight };
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var svg = f.querySelector('svg');
    var c = { id: f.id, width: 0, height: 0, drawn: 0, bars: 0, texts: 0 };
    if (svg) {
      var r = svg.getBoundingClientRect();
      c.width = r.width; c.height = r.height;
      c.drawn = svg.querySelectorAll('rect,path,polyline,line,polygon,circle').length;
      c.texts = svg.querySelectorAll('text').length;
      svg.querySelectorAll('rect').forEach(function (e) {
        var b = e.getBBox();
        if (b.width > 0 && b.height > 0 && b.width < r.width - 1) { c.bars += 1; }
      });
    }
    out.charts.push(c);
  });
  var pre = document.createElement('pre');
  pre.id = 'render-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"#;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/src/gate/fixtures")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A run directory `results/<run>` made of fixture run `run`, as `lab
/// run all` keeps it on the default topology (dcd skipped there).
fn run_dir(results: &Path, run: &str) -> PathBuf {
    let dir = results.join(run);
    std::fs::create_dir_all(&dir).unwrap();
    let mut suites = Vec::new();
    for s in SUITES {
        let v = read_json(&fixtures().join(run).join(format!("{s}.json")));
        std::fs::write(dir.join(format!("{s}.json")), v.to_string()).unwrap();
        suites.push(suite_record(s, 10.0, &v));
    }
    let dcd = json!({"suite": "dcd", "passed": false, "skipped": "the topology has no dynamic capacity device"});
    std::fs::write(dir.join("dcd.json"), dcd.to_string()).unwrap();
    suites.push(suite_record("dcd", 0.0, &dcd));
    // cxl-memsim's stats: only run1 has them, from a real `lab up
    // --timing` and `lab run fio` on the default topology (2026-12-07).
    let memsim = fixtures().join(run).join(MEMSIM_FILE);
    if memsim.is_file() {
        std::fs::copy(&memsim, dir.join(MEMSIM_FILE)).unwrap();
    }
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
            image_key: "fixture".into(),
            qemu: "QEMU emulator version 10.0.3".into(),
            lab: "0.1.0".into(),
            accel: "tcg".into(),
        },
        boot: Figures::from([("regions_ready_ms".to_owned(), 7800.0)]),
        suites,
        stall: None,
    };
    record::write_run(results, &record).unwrap();
    dir
}

fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromium"))
            .find(|c| c.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Headless Chromium is not installed (no `chromium` on PATH); run ci/install-deps, \
             which installs Debian's chromium package (CI runs it first)"
        )
    })
}

/// Runs Chromium headless on `page` with `args`; (stdout, stderr).
fn run_chromium(page: &Path, profile: &Path, args: &[String]) -> (String, String) {
    let out = Command::new("timeout")
        .arg("300")
        .arg(chromium())
        .args([
            "--headless",
            // Chromium refuses to run as root with its sandbox on.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            // Nothing may be fetched: any name lookup fails.
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium on {} failed: {}\n{stderr}",
        page.display(),
        out.status
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The chart ids the report has, in order.
fn chart_ids(html: &str) -> Vec<String> {
    html.split("<figure class=\"chart\" id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect()
}

/// Loads `report` in Chromium, checks every chart rendered and nothing was
/// logged, and keeps a screenshot next to it; returns the screenshot.
fn check_in_browser(report: &Path, work: &Path) -> PathBuf {
    let html = std::fs::read_to_string(report).unwrap();
    let ids = chart_ids(&html);
    let instrumented = report.with_extension("checked.html");
    let copy = html
        .replacen("<head>", &format!("<head>{CAPTURE}"), 1)
        .replacen("</body>", &format!("{CHECK}</body>"), 1);
    std::fs::write(&instrumented, copy).unwrap();
    let profile = work.join("chromium-profile");
    let (dom, stderr) = run_chromium(&instrumented, &profile, &["--dump-dom".into()]);
    let start = dom.find("<pre id=\"render-check\">").unwrap_or_else(|| {
        panic!("the check script left no result; the page as loaded:\n{dom}\n{stderr}")
    });
    let rest = &dom[start + "<pre id=\"render-check\">".len()..];
    let check: Value = serde_json::from_str(&unescape(&rest[..rest.find("</pre>").unwrap()]))
        .expect("the check's JSON");
    eprintln!("{}: {check}", report.display());
    assert_eq!(check["errors"], json!([]), "the page raised errors");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged: {console:#?}");
    let charts = check["charts"].as_array().unwrap();
    let seen: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(seen, ids, "the browser's charts are the report's");
    for c in charts {
        let num = |k: &str| c[k].as_f64().unwrap();
        assert!(
            num("width") > 100.0 && num("height") > 100.0,
            "chart {} has no size: {c}",
            c["id"]
        );
        // The background and at least one bar; axes, ticks and labels.
        assert!(num("bars") >= 2.0, "chart {} drew no bars: {c}", c["id"]);
        assert!(
            num("drawn") > 4.0 && num("texts") > 3.0,
            "chart {}: {c}",
            c["id"]
        );
    }
    let height = check["height"].as_u64().unwrap().clamp(600, 16_000);
    let png = report.with_extension("png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        report,
        &profile,
        &[
            format!("--window-size=1280,{height}"),
            format!("--screenshot={}", png.display()),
        ],
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1280);
    png
}

#[test]
fn reports_render_in_headless_chromium() {
    chromium();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    let _ = std::fs::remove_dir_all(&work);
    let results = work.join("results");
    let run1 = run_dir(&results, "run1");
    let run2 = run_dir(&results, "run2");

    // run1 alone.
    let plain = work.join("report.html");
    let data = report::load(&run1).unwrap();
    std::fs::write(&plain, report::render(&data, None).unwrap()).unwrap();
    let core = [
        "chart-dax-latency-vmem0",
        "chart-dax-latency-pmem0",
        "chart-fio-iops",
        "chart-faults-latency-seq",
        "chart-faults-latency-random",
        "chart-ioriot-ops",
        "chart-ioriot-rate",
        "chart-memsim-hot-vmem0",
    ];
    let ids = chart_ids(&std::fs::read_to_string(&plain).unwrap());
    for id in core {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    let shot = check_in_browser(&plain, &work);
    println!("screenshot of the report: {}", shot.display());

    // run2 against run1 with a behaviour change and a figure regressed:
    // both listed, the figure's rows in red.
    let base = record::load(&run1).unwrap();
    let mut new = report::load(&run2).unwrap();
    let fio = new
        .record
        .suites
        .iter_mut()
        .find(|s| s.suite == "fio")
        .unwrap();
    fio.digest["runs"][4]["intercepted"]["read"] = json!(1000);
    // And a figure at 30 % of the base's: a red row.
    let old = base.suite("fio").unwrap().figures["iops_geomean:randread"];
    fio.figures
        .insert("iops_geomean:randread".into(), old * 0.3);
    let c = compare(&base, &new.record);
    let compared = work.join("report-compared.html");
    let html = report::render(&new, Some(&c)).unwrap();
    assert!(html.contains("REGRESSION") && html.contains("fio runs[4].intercepted.read"));
    assert!(html.contains("<tr class=\"regressed\"><td>fio</td><td>iops_geomean:randread</td>"));
    std::fs::write(&compared, html).unwrap();
    let shot = check_in_browser(&compared, &work);
    println!("screenshot of the compared report: {}", shot.display());
}
