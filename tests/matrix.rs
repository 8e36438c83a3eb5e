//! `lab matrix` through the `lab` binary: a two-cell matrix (the default
//! and switched presets, the faults suite in each: the quickest suite
//! that runs on both, as the test is about the matrix, not the suite) runs both cells' labs at once, each
//! under its own name, runs the suite in each, brings both down with
//! nothing left, keeps a copy of each cell's run beside `matrix.json`, and
//! exits 0. The record, redacted, is a snapshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use cxl_lab::rundir::RunDir;
use lab_e2e::tools_dir;
use serde_json::Value;

const CELLS: [&str; 2] = ["e2e-matrix-default-image", "e2e-matrix-switched-image"];

fn lab(args: &[&str]) -> std::process::Output {
    let out = Command::new(tools_dir().join("lab"))
        .args(args)
        .output()
        .expect("running lab");
    eprintln!(
        "lab {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxl-lab-matrix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Digit runs as `N`: headline figures vary from run to run, their form
/// does not.
fn digits_as_n(v: insta::internals::Content, _: insta::internals::ContentPath<'_>) -> String {
    let text = v.as_str().unwrap_or_default();
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn step_started(cell: &Value, step: &str) -> f64 {
    cell[step]["started_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{} has no {step} step: {cell:#}", cell["cell"]))
}

#[test]
fn a_two_cell_matrix_runs_both_cells_at_once_and_brings_them_down() {
    let dir = scratch();
    let file = dir.join("matrix.toml");
    std::fs::write(
        &file,
        "name = \"e2e-matrix\"\ntopologies = [\"default\", \"switched\"]\nsuites = [\"faults\"]\n",
    )
    .unwrap();
    // A cell compares with its lab's earlier run: start with none, and
    // with no lab of that name left up by an interrupted test.
    for cell in CELLS {
        lab(&["down", "--name", cell]);
        let results = RunDir::new(cell).unwrap().results_dir();
        let _ = std::fs::remove_dir_all(results);
    }
    let out_dir = dir.join("out");
    let out = lab(&[
        "matrix",
        file.to_str().unwrap(),
        "--jobs",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lab matrix --json printed no record ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{m:#}");
    let cells = m["cells"].as_array().expect("cells");
    let names: Vec<&str> = cells.iter().filter_map(|c| c["cell"].as_str()).collect();
    assert_eq!(names, CELLS);
    for c in cells {
        for step in ["up", "run", "down"] {
            assert_eq!(c[step]["exit_code"], 0, "{} {step}: {c:#}", c["cell"]);
        }
        assert_eq!(c["leftovers"], serde_json::json!([]), "{c:#}");
        assert_eq!(c["suites"][0]["status"], "passed", "{c:#}");
        let run_dir = Path::new(c["run_dir"].as_str().expect("run_dir"));
        assert!(run_dir.join("faults.json").is_file(), "{c:#}");
        // The copy beside matrix.json, usable as a later matrix's baseline.
        let copy = Path::new(m["dir"].as_str().unwrap()).join(c["cell"].as_str().unwrap());
        assert!(copy.join("summary.json").is_file() && copy.join("faults.json").is_file());
    }
    // Both labs were brought down: nothing of theirs runs or is left.
    for cell in CELLS {
        let left = cxl_lab::leftovers::of_lab(&RunDir::new(cell).unwrap());
        assert!(left.is_empty(), "{cell}: {left:?}");
    }
    // Two at a time: the second cell's lab came up before the first one's
    // went down.
    assert!(step_started(&cells[1], "up") < step_started(&cells[0], "down"));
    let kept: Value = serde_json::from_slice(
        &std::fs::read(Path::new(m["dir"].as_str().unwrap()).join("matrix.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, m, "matrix.json is what --json printed");
    insta::assert_json_snapshot!("matrix_record", m, {
        ".matrix_id" => "[id]",
        ".file" => "[file]",
        ".dir" => "[dir]",
        ".started" => "[time]",
        ".elapsed_s" => "[s]",
        ".load_start" => "[load]",
        ".load_end" => "[load]",
        ".cells[].seconds" => "[s]",
        ".cells[].run_id" => "[run id]",
        ".cells[].run_dir" => "[run dir]",
        ".cells[].suites[].seconds" => "[s]",
        ".cells[].suites[].headline" => insta::dynamic_redaction(digits_as_n),
        ".cells[].*.seconds" => "[s]",
        ".cells[].*.started_s" => "[s]",
        ".cells[].*.log" => "[log]",
    });
    let _ = std::fs::remove_dir_all(&dir);
}
