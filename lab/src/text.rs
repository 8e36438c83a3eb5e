//! What `lab` prints without `--json`: the text forms of the summaries and
//! reports the library returns (the binary only chooses between this and
//! the JSON).

use std::fmt::Write;

use crate::gate::compare::{Comparison, FigureDiff, FigureStatus, Verdict};
use crate::gate::figures::Better;
use crate::image::Image;
use crate::matrix::record::{MatrixBench, MatrixRecord, MatrixVerdict, SuiteStatus};
use crate::summary::{BootBench, DownReport, InjectReport, RunReport, StatusReport, Summary};
use crate::verbs::soak::{SoakCycle, SoakReport};

/// `lab up`, and the first lines of `lab status`.
pub fn summary(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lab '{}' is {} ({}), run directory {}",
        s.name,
        s.status.as_str(),
        s.accel.as_str(),
        s.run_dir.display()
    );
    if let Some(k) = &s.kernel_release {
        let from = s
            .kernel_origin
            .as_ref()
            .map(|o| format!(" from {}", o.describe()))
            .unwrap_or_default();
        let _ = writeln!(out, "  kernel {k}{from}, image {}", s.image_key);
    }
    for d in &s.devices {
        let place = d
            .dax
            .clone()
            .or_else(|| d.numa_node.map(|n| format!("NUMA node {n}")))
            .or_else(|| {
                s.regions
                    .iter()
                    .find(|r| r.devices.contains(&d.name))
                    .and_then(|r| r.pmem.clone())
            })
            .unwrap_or_else(|| "no region".into());
        let _ = writeln!(
            out,
            "  {:<10} {:<10} {:>5} MiB  {:<9} {:<6} -> {:<12} backing {}",
            d.name,
            d.kind.name(),
            d.size >> 20,
            d.mode,
            d.memdev.clone().unwrap_or_default(),
            place,
            d.backing.display()
        );
        if let Some(v) = &d.vhost_user_blk {
            let _ = writeln!(
                out,
                "  {:<10} virtio disk (serial {}{}) served by cxl-memsim on {}",
                "",
                v.serial,
                if v.read_only { ", read-only" } else { "" },
                v.socket.display()
            );
        }
    }
    // One-device regions are the device lines above; the others get one.
    for r in s.regions.iter().filter(|r| r.ways > 1 || r.pmem.is_some()) {
        let place = r
            .dax
            .clone()
            .or_else(|| r.pmem.clone())
            .or_else(|| r.numa_node.map(|n| format!("NUMA node {n}")))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  region {} ({}): {}-way at {} B over {} -> {} ({} MiB at {:#x})",
            r.name,
            r.region,
            r.ways,
            r.granularity,
            r.devices.join(", "),
            place,
            r.size >> 20,
            r.start
        );
    }
    let _ = writeln!(
        out,
        "  QMP {}  agent {}",
        s.qmp_socket.display(),
        s.agent_socket.display()
    );
    let _ = writeln!(
        out,
        "  cxl-memsim tcp {}  control {}",
        s.simulator_tcp.clone().unwrap_or_else(|| "-".into()),
        s.simulator_control.display()
    );
    let _ = writeln!(out, "  console {}", s.console_log.display());
    if let Some(t) = &s.timing {
        let _ = writeln!(
            out,
            "  timing: plugin armed in {} ms on {}; `cxl-memsim stats --control {}` shows guest accesses",
            t.arm_ms,
            t.windows.join(" "),
            s.simulator_control.display()
        );
        if t.learning {
            let _ = writeln!(
                out,
                "  timing: learning on (`timing_learn`): instructions seen on RAM only are left out, so counts may miss CXL accesses (`relearned` in the stats' plugin object), and records carry no instruction count"
            );
        }
        if let Some(st) = &t.stall {
            stall_lines(&mut out, st);
        }
    }
    let t = &s.timings;
    let _ = writeln!(
        out,
        "  boot ({}): image {:.1}s, simulator {:.1}s, guest agent {:.1}s, regions ready {:.1}s",
        t.boot.as_str(),
        t.image_ms as f64 / 1e3,
        t.simulator_ms as f64 / 1e3,
        t.agent_ready_ms as f64 / 1e3,
        t.regions_ready_ms as f64 / 1e3
    );
    out
}

/// Stall mode's model figures, calibration and stalls.
fn stall_lines(out: &mut String, st: &crate::stall::StallState) {
    let c = &st.calibration;
    let _ = writeln!(
        out,
        "  stall: local DRAM {} ns; calibrated on {}: TCG takes {:.1} ns per local load, {:.1} per CXL load, so 1 model ns = {:.3} wall ns; user-space local accesses take at least {:.1} ns",
        st.local_latency_ns, c.placement, c.local_ns_per_load, c.cxl_ns_per_load, c.wall_ns_per_model_ns, c.local_wall_ns
    );
    for d in &st.devices {
        let m = &d.modelled;
        let _ = writeln!(
            out,
            "    {}: read {} ns, write {} ns, {} GB/s; CXL/local latency {:.2}x; at least {:.1} ns per read, {:.1} per write{}",
            d.device,
            m.read_ns,
            m.write_ns,
            m.bandwidth_gbps,
            d.model_latency_ratio,
            d.read_wall_ns,
            d.write_wall_ns,
            if d.write_reachable {
                ""
            } else {
                " (writes: TCG's own cost already exceeds it)"
            }
        );
    }
}

/// `lab status`.
/// `lab topologies`: each preset's name and one line.
pub fn topologies(presets: &[cxl_topology::Preset]) -> String {
    let width = presets.iter().map(|p| p.name.len()).max().unwrap_or(0);
    presets
        .iter()
        .map(|p| format!("{:width$}  {}\n", p.name, p.summary))
        .collect()
}

pub fn status(s: &StatusReport) -> String {
    let running = |yes: bool| if yes { "running" } else { "not running" };
    let mut out = summary(&s.summary);
    let _ = writeln!(
        out,
        "  QEMU {} ({}), cxl-memsim {}, guest agent {}",
        running(s.qemu_running),
        s.vm_status.clone().unwrap_or_else(|| "-".into()),
        running(s.simulator_running),
        if s.agent_answers {
            "answers"
        } else {
            "does not answer"
        }
    );
    for p in &s.problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    out
}

/// `lab down`.
pub fn down(r: &DownReport) -> String {
    let mut out = down_line(r);
    for f in &r.recovered {
        let _ = writeln!(
            out,
            "  {f} was deleted while the lab ran; its data was written back from cxl-memsim's open file"
        );
    }
    for f in &r.lost {
        let _ = writeln!(out, "  deleted while the lab ran and not written back: {f}");
    }
    out
}

fn down_line(r: &DownReport) -> String {
    if r.was_up {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        format!(
            "lab '{}' is down in {} (QEMU: {} in {}, cxl-memsim: {} in {})\n",
            r.name,
            secs(r.elapsed_ms),
            r.qemu,
            secs(r.qemu_ms),
            r.simulator,
            secs(r.simulator_ms)
        )
    } else {
        format!("lab '{}' was not running; cleaned up\n", r.name)
    }
}

/// `lab run`: one line per suite.
pub fn suite_table(run: &RunReport) -> String {
    let width = run
        .suites
        .iter()
        .map(|r| r.suite.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "run {} kept in {}\n{:<width$} {:<6} {:>8}  figures\n",
        run.run_id,
        run.run_dir.display(),
        "suite",
        "status",
        "seconds"
    );
    for r in &run.suites {
        let status = match (&r.skipped, r.passed) {
            (Some(_), _) => "SKIP",
            (None, true) => "PASS",
            (None, false) => "FAIL",
        };
        let what = r
            .skipped
            .clone()
            .or_else(|| r.error.clone())
            .unwrap_or_else(|| r.headline.clone());
        let _ = writeln!(
            out,
            "{:<width$} {:<6} {:>8.1}  {}",
            r.suite, status, r.seconds, what
        );
    }
    out
}

fn number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// `lab compare`: the verdict, then what differs, by suite and field.
pub fn comparison(c: &Comparison) -> String {
    let mut out = format!("base {}\nnew  {}\n", c.base, c.new);
    for n in &c.notes {
        let _ = writeln!(out, "note: {n}");
    }
    match c.verdict {
        Verdict::NotComparable => {
            let _ = writeln!(out, "NOT COMPARABLE:");
            for r in &c.reasons {
                let _ = writeln!(out, "  {r}");
            }
            return out;
        }
        Verdict::Regression => out.push_str("REGRESSION\n"),
        Verdict::Equal => {
            let improved = c
                .figures
                .iter()
                .filter(|f| f.status == FigureStatus::Improved)
                .count();
            let _ = writeln!(
                out,
                "EQUAL: same behaviour, {} figures within tolerance or better ({improved} better beyond it)",
                c.figures.len()
            );
        }
    }
    if !c.digests.is_empty() {
        out.push_str("behaviour (digest) differs:\n");
        for d in &c.digests {
            let _ = writeln!(out, "  {} {}: {} -> {}", d.suite, d.field, d.old, d.new);
        }
    }
    let worse: Vec<&FigureDiff> = c.regressions().collect();
    if !worse.is_empty() {
        out.push_str("figures worse beyond tolerance:\n");
        for f in worse {
            out.push_str(&figure_line(f));
        }
    }
    let ungated: Vec<&FigureDiff> = c
        .figures
        .iter()
        .filter(|f| f.status == FigureStatus::Worse)
        .collect();
    if !ungated.is_empty() {
        out.push_str(
            "figures worse beyond tolerance that do not gate (single short measurements; see METRICS in lab/src/gate/figures.rs):\n",
        );
        for f in ungated {
            out.push_str(&figure_line(f));
        }
    }
    let better: Vec<&FigureDiff> = c
        .figures
        .iter()
        .filter(|f| f.status == FigureStatus::Improved)
        .collect();
    if !better.is_empty() {
        out.push_str("figures better beyond tolerance (not a regression):\n");
        for f in better {
            out.push_str(&figure_line(f));
        }
    }
    out
}

fn figure_line(f: &FigureDiff) -> String {
    let new = f.new.map_or("missing".to_owned(), number);
    let change = match f.new {
        Some(n) if f.old != 0.0 => format!("{:+.0}%, ", (n / f.old - 1.0) * 100.0),
        _ => String::new(),
    };
    let better = match f.better {
        Better::Higher => "higher",
        Better::Lower => "lower",
    };
    let scaled = match f.load_scale {
        Some(k) => format!(", QEMU's CPU share {k:.2}x the base's"),
        None => String::new(),
    };
    format!(
        "  {} {}: {} -> {} {} ({change}{better} is better, tolerance {:.0}%{scaled})\n",
        f.suite,
        f.field,
        number(f.old),
        new,
        f.unit,
        f.tolerance * 100.0
    )
}

fn load(l: Option<[f64; 3]>) -> String {
    l.map_or("-".to_owned(), |l| {
        format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
    })
}

/// `lab matrix`: a line per cell (suites passed, failed and skipped, its
/// comparison), under it a line per suite with its headline figures, and
/// what went wrong.
pub fn matrix(m: &MatrixRecord) -> String {
    let mut out = format!(
        "matrix {}: {} cell{}, {} at a time ({}), {:.0} s; load average {} at the start, {} at the end{}\nkept in {}\n",
        m.file,
        m.cells.len(),
        if m.cells.len() == 1 { "" } else { "s" },
        m.jobs,
        m.bound,
        m.elapsed_s,
        load(m.load_start),
        load(m.load_end),
        if m.interrupted { "; INTERRUPTED" } else { "" },
        m.dir
    );
    let cw = m
        .cells
        .iter()
        .map(|c| c.cell.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let tw = m
        .cells
        .iter()
        .map(|c| c.topology.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let kw = m
        .cells
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        out,
        "{:<cw$}  {:<tw$}  {:<kw$}  passed failed skipped  {:<14} seconds",
        "cell", "topology", "kernel", "compare"
    );
    for c in &m.cells {
        let compare = match &c.compare {
            None => "-",
            Some(b) => match b.verdict {
                Verdict::Equal => "equal",
                Verdict::Regression => "REGRESSION",
                Verdict::NotComparable => "NOT COMPARABLE",
            },
        };
        let _ = writeln!(
            out,
            "{:<cw$}  {:<tw$}  {:<kw$}  {:>6} {:>6} {:>7}  {:<14} {:>7.1}",
            c.cell,
            c.topology,
            c.kernel,
            c.count(SuiteStatus::Passed),
            c.count(SuiteStatus::Failed),
            c.count(SuiteStatus::Skipped),
            compare,
            c.seconds
        );
        let sw = c.suites.iter().map(|s| s.suite.len()).max().unwrap_or(0);
        for s in &c.suites {
            let (status, what) = match s.status {
                SuiteStatus::Passed => ("PASS", s.headline.clone()),
                SuiteStatus::Failed => ("FAIL", s.reason.clone().unwrap_or_default()),
                SuiteStatus::Skipped => ("SKIP", s.reason.clone().unwrap_or_default()),
                SuiteStatus::NotRun => ("NOT RUN", s.reason.clone().unwrap_or_default()),
            };
            let _ = writeln!(
                out,
                "  {:<sw$}  {:<7} {:>7.1}  {what}",
                s.suite, status, s.seconds
            );
        }
        if let Some(e) = &c.error {
            let _ = writeln!(out, "  error: {}", e.replace('\n', "\n         "));
        }
        for l in &c.leftovers {
            let _ = writeln!(out, "  left after lab down: {l}");
        }
        if let Some(b) = &c.compare {
            if b.verdict != Verdict::Equal {
                let _ = writeln!(out, "  compared with {}:", b.base);
                for r in &b.reasons {
                    let _ = writeln!(out, "    {r}");
                }
                for d in &b.digests {
                    let _ = writeln!(out, "    behaviour differs: {d}");
                }
                for f in &b.regressions {
                    let _ = writeln!(out, "    worse beyond tolerance: {f}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} (exit {})",
        match m.verdict {
            MatrixVerdict::Passed => "PASSED",
            MatrixVerdict::Failed => "FAILED",
            MatrixVerdict::NotComparable => "NOT COMPARABLE",
        },
        m.verdict.exit_code()
    );
    out
}

/// `lab bench matrix`: both runs' wall times and their ratio.
pub fn matrix_bench(b: &MatrixBench) -> String {
    let line = |what: &str, m: &MatrixRecord| {
        format!(
            "{what:<11} {:>2} at a time: {:>7.1} s, {} (load average {} at the start, {} at the end)\n",
            m.jobs,
            m.elapsed_s,
            match m.verdict {
                MatrixVerdict::Passed => "passed",
                MatrixVerdict::Failed => "FAILED",
                MatrixVerdict::NotComparable => "NOT COMPARABLE",
            },
            load(m.load_start),
            load(m.load_end)
        )
    };
    format!(
        "{}{}{}one by one / parallel: {:.2}x\n",
        matrix(&b.parallel),
        matrix(&b.one_by_one),
        line("parallel", &b.parallel) + &line("one by one", &b.one_by_one),
        b.speedup
    )
}

/// `lab bench boot`.
pub fn bench_boot(b: &BootBench) -> String {
    let mut out = String::from("run  boot      agent-ready  regions-ready\n");
    for (i, t) in b.runs.iter().enumerate() {
        let _ = write!(
            out,
            "{:>3}  {:<8}  {:>9.2}s  {:>11.2}s",
            i + 1,
            t.boot.as_str(),
            t.agent_ready_ms as f64 / 1e3,
            t.regions_ready_ms as f64 / 1e3
        );
        let _ = match t.save_ms {
            Some(ms) => writeln!(out, "  (saved the state: {:.2}s)", ms as f64 / 1e3),
            None => writeln!(out),
        };
    }
    let line = |out: &mut String, kind: &str, s: &crate::summary::BootStats| {
        let _ = writeln!(
            out,
            "{kind}: median over {} runs: guest agent {:.2}s, regions ready {:.2}s (min {:.2}s, max {:.2}s)",
            s.runs,
            s.median_agent_ready_ms as f64 / 1e3,
            s.median_regions_ready_ms as f64 / 1e3,
            s.min_regions_ready_ms as f64 / 1e3,
            s.max_regions_ready_ms as f64 / 1e3
        );
    };
    line(&mut out, "cold", &b.cold);
    if let (Some(r), Some(x)) = (&b.restored, b.speedup) {
        line(&mut out, "restored", r);
        let _ = writeln!(out, "restored is {x:.1}x faster to regions ready");
    }
    out
}

/// `lab image snapshots`.
pub fn snapshots(entries: &[crate::snapshot::Entry], removed: bool) -> String {
    if entries.is_empty() {
        return "no saved lab states\n".to_owned();
    }
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(
            out,
            "{}{:<12} {:>7.1} MiB  {}",
            if removed { "removed " } else { "" },
            e.lab,
            e.bytes as f64 / (1u64 << 20) as f64,
            e.dir.display()
        );
    }
    out
}

/// One line of `lab soak` per cycle, as it ends.
pub fn soak_cycle(c: &SoakCycle) -> String {
    let secs = |ms: Option<u64>| ms.map_or("-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1e3));
    let left = &c.leftovers;
    let mut line = format!(
        "{:>5}  {:<4}  {:>9}  {:>11}  {:>7}  {:>6}  {:>5} {:>7} {:>5}",
        c.cycle,
        if c.ok { "ok" } else { "FAIL" },
        secs(c.agent_ready_ms),
        secs(c.regions_ready_ms),
        secs(c.run_ms),
        secs(c.down_ms),
        left.processes.len(),
        left.sockets.len(),
        left.files.len(),
    );
    if let (Some(step), Some(error)) = (&c.failed, &c.error) {
        let _ = write!(line, "\n       {step}: {error}");
    }
    let paths = left
        .sockets
        .iter()
        .chain(&left.files)
        .map(|p| p.display().to_string());
    for l in left.processes.iter().cloned().chain(paths) {
        let _ = write!(line, "\n       left: {l}");
    }
    line.push('\n');
    line
}

/// The header of [`soak_cycle`]'s lines.
pub const SOAK_HEADER: &str =
    "cycle  run   agent (s)  regions (s)  dax (s)  down (s)  procs sockets files\n";

/// `lab soak`: a line per cycle, then failures, leftovers and boot drift.
pub fn soak(r: &SoakReport) -> String {
    let mut out = String::from(SOAK_HEADER);
    for c in &r.cycles {
        out.push_str(&soak_cycle(c));
    }
    let b = &r.boot;
    let s = |ms: u64| ms as f64 / 1e3;
    let _ = writeln!(
        out,
        "{} of {} cycles in {:.0} s: {} failed, {} left something after lab down",
        r.cycles.len(),
        r.cycles_asked,
        r.elapsed_s,
        r.failures,
        r.cycles_with_leftovers
    );
    let _ = writeln!(
        out,
        "regions ready over {} boots: first {:.2} s, last {:.2} s, min {:.2} s, median {:.2} s, max {:.2} s; median of the first half {:.2} s, of the second {:.2} s; trend {:+.1} ms per cycle",
        b.booted,
        s(b.first_ms),
        s(b.last_ms),
        s(b.min_ms),
        s(b.median_ms),
        s(b.max_ms),
        s(b.first_half_median_ms),
        s(b.second_half_median_ms),
        b.trend_ms_per_cycle
    );
    let _ = writeln!(out, "each cycle's record: {}", r.log.display());
    out
}

/// `lab image build`.
pub fn image(img: &Image) -> String {
    format!(
        "image {} ({}): kernel {} ({} {}), initramfs {:.1} MiB, {} files, {} modules, tools: {}\n  {}\n",
        img.manifest.key,
        if img.cached { "cached" } else { "built" },
        img.manifest.kernel_release,
        img.manifest.kernel_package,
        img.manifest.kernel_version,
        img.manifest.initrd_bytes as f64 / (1 << 20) as f64,
        img.manifest.files,
        img.manifest.modules.len(),
        img.manifest.guest_tools.join(", "),
        img.dir.display()
    )
}

/// `lab image update`: what moved, then what to do next.
pub fn image_update(r: &crate::image::UpdateReport) -> String {
    let mut out = String::new();
    if let Some((old, new)) = &r.diff.kernel {
        out.push_str(&format!("kernel  {old} -> {new}\n"));
    }
    for (p, old, new) in &r.diff.changed {
        out.push_str(&format!("changed {p} {old} -> {new}\n"));
    }
    for (p, v) in &r.diff.added {
        out.push_str(&format!("added   {p} {v}\n"));
    }
    for (p, v) in &r.diff.removed {
        out.push_str(&format!("removed {p} {v}\n"));
    }
    if r.diff.is_empty() {
        out.push_str("no change\n");
    }
    out.push_str(&format!(
        "{} packages, kernel {} {}; ",
        r.packages, r.kernel, r.kernel_version
    ));
    if r.written {
        out.push_str(&format!(
            "wrote {}.\nRebuild lab to embed it (`cargo build -p cxl-lab`), then commit images/packages.lock.\n",
            r.lock_path.display()
        ));
    } else if r.diff.is_empty() {
        out.push_str(&format!("{} is current.\n", r.lock_path.display()));
    } else {
        out.push_str(&format!(
            "dry run: {} not written.\n",
            r.lock_path.display()
        ));
    }
    out
}

/// `lab inject`: the command, the device and the fields sent.
pub fn inject(r: &InjectReport) -> String {
    let fields = r
        .fields
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "path")
                .map(|(k, v)| match v.as_u64() {
                    Some(n) if n >= 0x100 => format!("{k}={n:#x}"),
                    _ => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "lab '{}': {} on {} ({}): {}; QEMU answered {}\n",
        r.name, r.command, r.device, r.path, fields, r.answer
    )
}

/// `lab bench timing`.
pub fn bench_timing(b: &crate::summary::TimingBench) -> String {
    let mut out = String::new();
    let c = &b.stall.calibration;
    let _ = writeln!(
        out,
        "load average {} at the start, {} at the end; medians of {} runs after a first one",
        b.loadavg_start, b.loadavg_end, b.runs
    );
    let _ = writeln!(
        out,
        "calibration on {}: {:.1} ns per local load, {:.1} per CXL load under TCG (armed, stall off); local DRAM {} ns",
        c.placement, c.local_ns_per_load, c.cxl_ns_per_load, b.stall.local_latency_ns
    );
    let _ = writeln!(
        out,
        "\n{:<55} {:>9} {:>9} {:>9} {:>17}",
        "workload", "armed", "disarmed", "slowdown", "first run a / d"
    );
    for w in &b.workloads {
        let _ = writeln!(
            out,
            "{:<55} {:>8.2}s {:>8.2}s {:>8.2}x {:>7.2}s / {:>5.2}s",
            w.workload, w.armed_s, w.disarmed_s, w.slowdown, w.first_armed_s, w.first_disarmed_s
        );
    }
    if !b.workloads.is_empty() {
        let _ = match &b.learning {
            None => writeln!(
                out,
                "armed: every guest access calls the plugin, every CXL access counted (learning off)"
            ),
            Some(l) => writeln!(
                out,
                "armed with learning: {} instructions left out, {} prunes, {} relearned (a relearned instruction's CXL accesses while left out went uncounted)",
                l.left_out, l.prunes, l.relearned
            ),
        };
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>13} {:>13} {:>13} {:>13} {:>12} {:>12}",
        "model", "latency model", "latency guest", "bw model", "bw guest", "local ns", "cxl ns"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}x"));
    for r in &b.ratios {
        let _ = writeln!(
            out,
            "{:<10} {:>13} {:>12.2}x {:>13} {:>12.2}x {:>12.1} {:>12.1}",
            r.setting,
            opt(r.model_latency_ratio),
            r.guest_latency_ratio,
            opt(r.model_bandwidth_ratio),
            r.guest_bandwidth_ratio,
            r.guest_local_ns_per_load,
            r.guest_cxl_ns_per_load
        );
    }
    match &b.application {
        Some(a) => {
            let _ = writeln!(
                out,
                "\napplication, stall on: {}\n  bound to node {} (local): {:.1} ms; to node {} ({}, CXL): {:.1} ms; slowdown {:.2}x (model latency {:.2}x)",
                a.workload,
                a.local_node,
                crate::stats::median(&a.local_ms),
                a.cxl_node,
                a.device,
                crate::stats::median(&a.cxl_ms),
                a.slowdown,
                a.model_latency_ratio
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\napplication: skipped, no system-ram region (a NUMA node; try --topology tiering)"
            );
        }
    }
    if b.workloads.is_empty() {
        let _ = writeln!(
            out,
            "armed/disarmed workloads: skipped, no devdax region (they write one)"
        );
    }
    out
}

/// `lab bench rebuild`: both paths' parts and totals, and their ratio.
pub fn bench_rebuild(b: &crate::summary::RebuildBench) -> String {
    let mut out = format!(
        "lab bench rebuild ({} build; load average {} at the start, {} at the end)\n",
        b.profile, b.loadavg_start, b.loadavg_end
    );
    let _ = writeln!(
        out,
        "image build: from scratch in a scratch cache; {} of {} pinned packages already downloaded and reused",
        b.debs_reused, b.debs_pinned
    );
    let k = &b.new_kernel;
    let _ = writeln!(
        out,
        "new kernel: {} ({}; {}): built in {:.1}s, not counted in the loop",
        k.kind, k.changed, k.build, k.build_s
    );
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>14} {:>9} {:>9}  kernel",
        "", "prepare", "boot to agent", "regions", "total"
    );
    let row = |out: &mut String, what: &str, p: &crate::summary::RebuildPath| {
        let _ = writeln!(
            out,
            "{what:<14} {:>8.1}s {:>13.1}s {:>8.1}s {:>8.1}s  {}",
            p.prepare_s, p.boot_to_agent_s, p.regions_s, p.total_s, p.kernel_release
        );
    };
    row(&mut out, "cold path", &b.cold);
    row(&mut out, "rebuild loop", &b.rebuild);
    let steps = |out: &mut String, what: &str, p: &crate::summary::RebuildPath| {
        let list: Vec<String> = p
            .steps
            .iter()
            .map(|s| format!("{} {:.1}s", s.step.label(), s.seconds))
            .collect();
        let _ = writeln!(out, "{what} steps: {}", list.join(", "));
    };
    steps(&mut out, "cold path", &b.cold);
    steps(&mut out, "rebuild loop", &b.rebuild);
    if let Some(s) = b.cold.image_build_s {
        let _ = writeln!(
            out,
            "cold path prepare: image build {s:.1}s, then lab up found it in {:.1}s",
            b.cold.prepare_s - s
        );
    }
    if let Some(s) = b.rebuild.kernel_s {
        let _ = writeln!(
            out,
            "rebuild loop prepare: the kernel (modules_install of a tree, modules layer, config check) {s:.1}s of {:.1}s",
            b.rebuild.prepare_s
        );
    }
    let _ = writeln!(
        out,
        "cold path / rebuild loop, to regions ready: {:.1}x",
        b.ratio
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::record::{CellRecord, CompareBrief, StepRecord, SuiteOutcome};
    use crate::summary::SuiteResult;

    #[test]
    fn the_timing_bench_shows_first_runs_apart_and_how_the_armed_runs_observed() {
        use crate::summary::{LearningCounts, TimingBench, WorkloadSlowdown};
        let topology = cxl_topology::Topology::embedded_default();
        let bench = |learning| TimingBench {
            loadavg_start: "0.50".into(),
            loadavg_end: "0.60".into(),
            runs: 3,
            stall: crate::stall::StallState {
                local_latency_ns: 100,
                calibration: crate::stall::Calibration::new(
                    "dax:/dev/dax0.0".into(),
                    40.0,
                    450.0,
                    &topology,
                ),
                devices: Vec::new(),
                command: String::new(),
            },
            workloads: vec![WorkloadSlowdown {
                workload: "data-generator -s 16".into(),
                armed_s: 0.89,
                disarmed_s: 0.67,
                slowdown: 0.89 / 0.67,
                first_armed_s: 1.49,
                first_disarmed_s: 0.91,
            }],
            learning,
            ratios: Vec::new(),
            application: None,
        };
        let exact = bench_timing(&bench(None));
        assert!(
            exact.contains("medians of 3 runs after a first one"),
            "{exact}"
        );
        assert!(
            exact.contains("data-generator -s 16") && exact.contains("1.33x    1.49s /  0.91s"),
            "{exact}"
        );
        assert!(
            exact.contains("every CXL access counted (learning off)"),
            "{exact}"
        );
        let learned = bench_timing(&bench(Some(LearningCounts {
            left_out: 3446,
            prunes: 6,
            relearned: 1,
        })));
        assert!(
            learned.contains("3446 instructions left out, 6 prunes, 1 relearned"),
            "{learned}"
        );
        assert!(!learned.contains("learning off"), "{learned}");
    }

    #[test]
    fn the_matrix_table_has_a_line_per_cell_and_per_suite_then_the_verdict() {
        let step = StepRecord {
            argv: vec![],
            exit_code: Some(0),
            started_s: 0.0,
            seconds: 1.0,
            log: "l".into(),
            error: None,
        };
        let suite = |name: &str, status, text: &str| SuiteOutcome {
            suite: name.into(),
            status,
            seconds: if status == SuiteStatus::Skipped {
                0.0
            } else {
                60.5
            },
            headline: if status == SuiteStatus::Passed {
                text.into()
            } else {
                String::new()
            },
            reason: (status != SuiteStatus::Passed).then(|| text.to_owned()),
        };
        let cell = |name: &str, topology: &str, suites| CellRecord {
            cell: name.into(),
            topology: topology.into(),
            kernel: "image".into(),
            suites,
            up: Some(step.clone()),
            run: Some(step.clone()),
            down: Some(step.clone()),
            run_id: None,
            run_dir: None,
            leftovers: vec![],
            compare: None,
            error: None,
            seconds: 100.0,
        };
        let mut switched = cell(
            "m-switched-image",
            "switched",
            vec![
                suite("dax", SuiteStatus::Passed, "p50 5 us"),
                suite("ras", SuiteStatus::Skipped, "no persistent device"),
            ],
        );
        switched.compare = Some(CompareBrief {
            base: "b/m-switched-image".into(),
            verdict: Verdict::Regression,
            reasons: vec![],
            digests: vec!["dax devices[0].modes".into()],
            regressions: vec![],
            notes: vec![],
        });
        let m = MatrixRecord {
            schema: 1,
            matrix_id: "20261207T000102Z".into(),
            file: "m.toml".into(),
            dir: "/s/matrix/m/20261207T000102Z".into(),
            started: "2026-12-07T00:01:02Z".into(),
            elapsed_s: 200.0,
            jobs: 2,
            bound: "cores".into(),
            load_start: Some([1.0, 2.0, 3.0]),
            load_end: None,
            baseline: Some("b".into()),
            interrupted: false,
            cells: vec![
                cell(
                    "m-default-image",
                    "default",
                    vec![suite("dax", SuiteStatus::Failed, "see dax.json")],
                ),
                switched,
            ],
            verdict: MatrixVerdict::Failed,
        };
        assert_eq!(
            matrix(&m),
            "matrix m.toml: 2 cells, 2 at a time (cores), 200 s; load average 1.00 2.00 3.00 at the start, - at the end\n\
             kept in /s/matrix/m/20261207T000102Z\n\
             cell              topology  kernel  passed failed skipped  compare        seconds\n\
             m-default-image   default   image        0      1       0  -                100.0\n\
             \x20 dax  FAIL       60.5  see dax.json\n\
             m-switched-image  switched  image        1      0       1  REGRESSION       100.0\n\
             \x20 dax  PASS       60.5  p50 5 us\n\
             \x20 ras  SKIP        0.0  no persistent device\n\
             \x20 compared with b/m-switched-image:\n\
             \x20   behaviour differs: dax devices[0].modes\n\
             FAILED (exit 1)\n"
        );
    }

    #[test]
    fn the_suite_table_names_each_suite_its_verdict_and_headline() {
        let r = |suite: &str, passed, error: Option<&str>| SuiteResult {
            suite: suite.into(),
            passed,
            seconds: 12.34,
            result_file: format!("/r/results/1/{suite}.json").into(),
            error: error.map(str::to_owned),
            skipped: None,
            headline: format!("{suite} figures"),
        };
        let mut faults = r("faults", false, None);
        faults.skipped = Some("the guest kernel lacks CONFIG_KPROBES".into());
        assert!(!faults.failed() && r("fio", false, None).failed());
        let run = RunReport {
            run_id: "20261207T000102Z".into(),
            run_dir: "/r/results/20261207T000102Z".into(),
            suites: vec![
                r("dax", true, None),
                r("ioriot", false, Some("no library")),
                faults,
            ],
        };
        assert_eq!(
            suite_table(&run),
            "run 20261207T000102Z kept in /r/results/20261207T000102Z\n\
             suite  status  seconds  figures\n\
             dax    PASS       12.3  dax figures\n\
             ioriot FAIL       12.3  no library\n\
             faults SKIP       12.3  the guest kernel lacks CONFIG_KPROBES\n"
        );
    }
}
