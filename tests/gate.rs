//! The regression gate through the `lab` binary on one booted default lab:
//! `lab run ras faults --junit` twice keeps two runs whose digests are
//! equal, so `lab compare` exits 0; a baseline saved from the latest run
//! with an edited digest, or with a figure beyond its tolerance, makes it
//! exit 1 naming the field; a baseline of another topology, or a run
//! missing one of the baseline's suites (`lab run ras --compare`), exit 2
//! with the reason. The JUnit report validates against ci/junit/JUnit.xsd
//! (xmllint) and has one case per step, ras's masked uncorrectable error
//! skipped with its reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab_e2e::{tools_dir, TestLab};
use serde_json::Value;

fn lab(args: &[&str]) -> Output {
    let out = Command::new(tools_dir().join("lab"))
        .args(args)
        .output()
        .expect("running lab");
    eprintln!(
        "lab {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("lab exited by a signal")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of baseline `from` named `name`, its summary changed by `edit`.
fn edited(baselines: &Path, from: &str, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = baselines.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut summary = read_json(&baselines.join(from).join("summary.json"));
    edit(&mut summary);
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary).unwrap(),
    )
    .unwrap();
    dir
}

fn suite<'a>(summary: &'a mut Value, name: &str) -> &'a mut Value {
    summary["suites"]
        .as_array_mut()
        .expect("suites")
        .iter_mut()
        .find(|s| s["suite"] == name)
        .unwrap_or_else(|| panic!("no suite {name}"))
}

#[test]
fn runs_compare_equal_and_edits_regress_or_are_not_comparable() {
    let test = TestLab::new("e2e-gate");
    test.up();
    let name = test.name.as_str();
    let tmp = tempfile_dir();
    let junit = tmp.join("junit.xml");
    let baselines = tmp.join("baselines");
    let b = baselines.to_str().unwrap();

    for _ in 0..2 {
        let out = lab(&[
            "run",
            "--name",
            name,
            "ras",
            "faults",
            "--junit",
            junit.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "both suites pass");
        let table = stdout(&out);
        assert!(
            table.contains("steps: 7 passed, 1 skipped, 0 failed"),
            "{table}"
        );
        assert!(table.contains("sequential faults seq/random"), "{table}");
    }
    let out = lab(&["compare", "--name", name, "--json"]);
    let c: Value = serde_json::from_slice(&out.stdout).expect("compare --json");
    assert_eq!(c["verdict"], "equal", "{c:#}");
    assert_eq!(c["digests"], serde_json::json!([]));
    assert_eq!(code(&out), 0);

    let out = lab(&["baseline", "save", "main", "--name", name, "--baselines", b]);
    assert_eq!(code(&out), 0);
    assert!(
        baselines.join("main/summary.json").is_file() && baselines.join("main/ras.json").is_file()
    );
    let out = lab(&["compare", "--name", name, "main", "--baselines", b]);
    assert_eq!(code(&out), 0, "the latest run against its own baseline");

    // A behaviour change: the base says the first ras step failed.
    edited(&baselines, "main", "other-outcome", |s| {
        suite(s, "ras")["digest"]["steps"][0]["outcome"] = "failed".into();
    });
    let out = lab(&["compare", "--name", name, "other-outcome", "--baselines", b]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("ras steps[0].outcome: \"failed\" -> \"passed\""),
        "{}",
        stdout(&out)
    );

    // A figure beyond its tolerance: the base saw 100 times the ratio.
    edited(&baselines, "main", "better-ratio", |s| {
        let f = &mut suite(s, "faults")["figures"]["sequential_over_random"];
        *f = (f.as_f64().expect("the ratio") * 100.0).into();
    });
    let out = lab(&["compare", "--name", name, "better-ratio", "--baselines", b]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains("figures worse beyond tolerance:\n  faults sequential_over_random: "),
        "{text}"
    );

    // Another topology cannot be compared.
    edited(&baselines, "main", "other-topology", |s| {
        s["environment"]["topology"]["sha256"] = "0".repeat(64).into();
    });
    let out = lab(&[
        "compare",
        "--name",
        name,
        "other-topology",
        "--baselines",
        b,
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stdout(&out).contains("NOT COMPARABLE:\n  different topologies: "),
        "{}",
        stdout(&out)
    );

    // Nor a run without one of the baseline's suites.
    let out = lab(&[
        "run",
        "--name",
        name,
        "ras",
        "--compare",
        "main",
        "--baselines",
        b,
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stdout(&out).contains("suite faults is in "),
        "{}",
        stdout(&out)
    );

    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/junit/JUnit.xsd");
    let v = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&junit)
        .output()
        .expect("xmllint (package libxml2-utils; ci/install-deps installs it)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="ras" tests="8" skipped="1" errors="0" failures="0""#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testcase name="uncorrectable pmem0 mem-data-ecc" classname="cxl-lab.ras">"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<skipped message=\"the kernel masks Uncorrectable Internal Error"),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testcase name="sequential far above random" classname="cxl-lab.faults"/>"#
        ),
        "{xml}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// A fresh directory for the test's files.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxl-lab-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
