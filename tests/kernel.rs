//! `lab up --kernel` with a second, different kernel, given as a user would
//! give theirs: Debian bookworm's 6.1 package (pinned in
//! images/test-kernels.lock, downloaded by ci/test-kernels), once as the
//! `.deb` and once unpacked as a vmlinuz plus its `lib/modules/<release>`.
//! The guest's `uname -r` is that release; on it every suite passes or is
//! skipped with a named reason, and what 6.1 cannot do is reported: the
//! default topology's volatile device is refused before anything starts
//! (no volatile CXL regions before 6.3), ras is skipped for
//! CONFIG_PCIEAER_CXL, and the seq_page_faults module, built against the
//! image kernel's headers, is not loaded.
//!
//! Run one at a time: `cargo test -p lab-e2e --test kernel -- --test-threads=1`.

use std::path::PathBuf;
use std::process::Command;

use cxl_lab::events::Events;
use cxl_lab::suites::SuiteArg;
use cxl_lab::verbs::{self, UpOptions};
use lab_e2e::{error_chain, TestLab};
use serde_json::{json, Value};

/// The pinned test kernel: its `.deb` in the cache and its release.
struct TestKernel {
    deb: PathBuf,
    release: String,
}

fn test_kernel() -> TestKernel {
    let lock = include_str!("../images/test-kernels.lock");
    let field = |name: &str| {
        lock.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("images/test-kernels.lock has no {name}"))
            .to_owned()
    };
    let (package, version) = (field("package"), field("version"));
    let deb = cxl_lab::paths::cache_dir()
        .join("test-kernels")
        .join(format!(
            "{package}_{}_amd64.deb",
            version.replace(':', "%3a")
        ));
    assert!(
        deb.is_file(),
        "{} is missing: run ci/test-kernels (ci/test does) to download {package}={version}",
        deb.display()
    );
    TestKernel {
        deb,
        release: field("release"),
    }
}

fn up_with(lab: &TestLab, opts: UpOptions) -> cxl_lab::summary::Summary {
    let events = Events::new(lab.recorder.clone());
    lab.rt
        .block_on(verbs::up(&opts, &events))
        .unwrap_or_else(|e| panic!("lab up {} failed: {}", lab.name, error_chain(&e)))
}

/// Each suite's verdict, and a skip's reason with the kernel's paths
/// (cache entries, the run directory) left out.
fn outcome(report: &cxl_lab::summary::RunReport) -> Value {
    let suites: Vec<Value> = report
        .suites
        .iter()
        .map(|s| {
            let verdict = match (&s.skipped, s.passed) {
                (Some(_), _) => "skipped",
                (None, true) => "passed",
                (None, false) => "FAILED",
            };
            let v: Value = serde_json::from_slice(&std::fs::read(&s.result_file).unwrap())
                .unwrap_or(Value::Null);
            let mut o = json!({
                "suite": s.suite,
                "verdict": verdict,
                "skipped": s.skipped,
                "missing_options": v.get("missing_options"),
                "error": s.error,
                "kernel_release": v["kernel"]["release"],
                "kernel_from": v["kernel"]["origin"]["kind"],
            });
            if s.suite == "faults" {
                o["collectors_compared"] = redact_paths(&v["collectors_compared"]);
                o["checks"] = v["checks"].clone();
                o["checks"]["sequential_over_random"] = json!("[figure]");
            }
            o
        })
        .collect();
    json!(suites)
}

/// Paths in strings replaced by `[path]` (they name this machine's cache),
/// the punctuation after them kept.
fn redact_paths(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(
            s.split(' ')
                .map(|w| match w.strip_prefix('/') {
                    Some(p) => {
                        let path = p.trim_end_matches([')', ',', ';', ':']);
                        format!("[path]{}", &p[path.len()..])
                    }
                    None => w.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), redact_paths(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn run(lab: &TestLab, suites: &[SuiteArg]) -> cxl_lab::summary::RunReport {
    lab.rt
        .block_on(verbs::run_selection(&lab.name, suites, &Events::none()))
        .unwrap_or_else(|e| panic!("lab run failed: {}", error_chain(&e)))
}

fn assert_nothing_failed(report: &cxl_lab::summary::RunReport) {
    for s in &report.suites {
        assert!(
            !s.failed(),
            "suite {} failed on the test kernel: {:?} ({})",
            s.suite,
            s.error,
            s.result_file.display()
        );
        if let Some(reason) = &s.skipped {
            assert!(
                reason.contains("CONFIG_") || reason.contains("topology"),
                "suite {} skipped without a named reason: {reason}",
                s.suite
            );
        }
    }
}

#[test]
fn debian_6_1_as_a_package_runs_every_suite_or_names_what_it_lacks() {
    let k = test_kernel();
    let lab = TestLab::new("e2e-kernel-deb");
    let opts = UpOptions {
        kernel: Some(k.deb.clone()),
        // A user's kernel boots once here: cold, saving no state.
        cold: true,
        save: false,
        ..lab.options()
    };
    // The default topology's volatile device needs volatile regions (6.3):
    // refused before anything starts.
    // An earlier run of this test left its (stopped) run directory; without
    // it, "nothing was started" is "no lab state at all".
    let run_dir = cxl_lab::rundir::RunDir::new(&lab.name)
        .expect("run dir")
        .dir;
    let _ = std::fs::remove_dir_all(&run_dir);
    let e = lab
        .rt
        .block_on(verbs::up(&opts, &Events::none()))
        .expect_err("6.1 cannot make the default topology's ram region");
    let text = error_chain(&e);
    assert!(
        text.contains("has volatile devices (vmem0)") && text.contains("CONFIG_DEV_DAX_CXL"),
        "{text}"
    );
    let state = lab.rt.block_on(verbs::status(&lab.name));
    assert!(state.is_err(), "nothing was started: no lab state");

    let summary = up_with(
        &lab,
        UpOptions {
            topology: Some(PathBuf::from("persistent")),
            ..opts
        },
    );
    assert_eq!(summary.kernel_release.as_deref(), Some(k.release.as_str()));
    let origin = summary.kernel_origin.clone().expect("the kernel's origin");
    assert_eq!(origin.kind, cxl_lab::kernel::KernelKind::Deb);
    assert_eq!(origin.path.as_deref(), Some(k.deb.as_path()));
    assert_eq!(summary.foreign_built_modules, ["seq_page_faults"]);
    assert_eq!(lab.run(&["uname", "-r"]).trim(), k.release);
    let status = lab
        .rt
        .block_on(verbs::status(&lab.name))
        .expect("lab status");
    assert_eq!(status.summary.kernel_origin, Some(origin.clone()));

    let report = run(&lab, &[SuiteArg::All]);
    assert_nothing_failed(&report);
    let record: Value = serde_json::from_slice(
        &std::fs::read(report.run_dir.join("summary.json")).expect("summary.json"),
    )
    .unwrap();
    assert_eq!(record["environment"]["kernel"], json!(k.release));
    assert_eq!(record["environment"]["kernel_origin"]["kind"], "deb");
    insta::assert_json_snapshot!("debian_6_1_deb_outcome", outcome(&report));
}

#[test]
fn debian_6_1_unpacked_as_vmlinuz_and_modules_boots_the_same_release() {
    let k = test_kernel();
    let unpacked = std::env::temp_dir().join(format!("cxl-lab-e2e-kernel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&unpacked);
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&k.deb)
        .arg(&unpacked)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb -x: {out:?}");
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{}", k.release));
    let modules = unpacked.join(format!("lib/modules/{}", k.release));
    let lab = TestLab::new("e2e-kernel-vmlinuz");
    let summary = up_with(
        &lab,
        UpOptions {
            kernel: Some(vmlinuz.clone()),
            modules: Some(modules.clone()),
            topology: Some(PathBuf::from("persistent")),
            // A user's kernel boots once here: cold, saving no state.
            cold: true,
            save: false,
            ..lab.options()
        },
    );
    let origin = summary.kernel_origin.clone().expect("origin");
    assert_eq!(origin.kind, cxl_lab::kernel::KernelKind::Bzimage);
    assert_eq!(origin.path.as_deref(), Some(vmlinuz.as_path()));
    assert_eq!(origin.modules.as_deref(), Some(modules.as_path()));
    assert_eq!(lab.run(&["uname", "-r"]).trim(), k.release);
    // Modules the guest /init loaded are this kernel's.
    let loaded = lab.run(&["cat", "/proc/modules"]);
    assert!(loaded.contains("cxl_pmem"), "{loaded}");
    assert!(lab
        .run(&["ls", &format!("/lib/modules/{}", k.release)])
        .contains("modules.dep"));
    // The dax suite reads and writes every region through this kernel's
    // drivers; the package test above runs them all.
    let report = run(&lab, &[SuiteArg::One(cxl_lab::suites::Suite::Dax)]);
    assert_nothing_failed(&report);
    insta::assert_json_snapshot!("debian_6_1_vmlinuz_outcome", outcome(&report));
    drop(lab);
    let _ = std::fs::remove_dir_all(&unpacked);
}
