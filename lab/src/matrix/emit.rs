//! `lab matrix FILE --emit github|gitlab`: the matrix as a CI system's own,
//! one job per cell, each running `lab matrix FILE --cell NAME`, so the
//! cells spread over the CI system's runners when one machine is not
//! enough.

use serde::Serialize;

use super::spec::MatrixSpec;

/// One CI job: a cell and the command that runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub cell: String,
    pub topology: String,
    pub kernel: String,
    pub command: String,
}

/// The jobs of `spec`, each command `<lab> matrix <file> --cell <cell>`
/// (shell-quoted), `lab` being the program as the user called it.
pub fn jobs(spec: &MatrixSpec, lab: &str) -> Vec<Job> {
    let file = spec.file.display().to_string();
    spec.cells
        .iter()
        .map(|c| Job {
            cell: c.name.clone(),
            topology: c.topology.entry.clone(),
            kernel: c.kernel.entry.clone(),
            command: shell_words::join([lab, "matrix", &file, "--cell", &c.name]),
        })
        .collect()
}

/// A YAML scalar: a JSON string is a YAML double-quoted one.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// GitHub Actions: a job's `strategy` with one `include` entry per cell.
pub fn github(spec: &MatrixSpec, lab: &str) -> String {
    let jobs = jobs(spec, lab);
    let mut out = format!(
        "# {} cells of {}; in a job: runs-on, then `run: ${{{{ matrix.command }}}}`\n# (or `{} --emit github --json` into a job output and `matrix: ${{{{ fromJSON(...) }}}}`).\nstrategy:\n  fail-fast: false\n  matrix:\n    include:\n",
        jobs.len(),
        spec.file.display(),
        shell_words::join([lab, "matrix", &spec.file.display().to_string()]),
    );
    for j in &jobs {
        out.push_str(&format!(
            "      - cell: {}\n        topology: {}\n        kernel: {}\n        command: {}\n",
            quoted(&j.cell),
            quoted(&j.topology),
            quoted(&j.kernel),
            quoted(&j.command)
        ));
    }
    out
}

/// GitHub Actions, as JSON for `fromJSON`: `{"include": [...]}`.
pub fn github_json(spec: &MatrixSpec, lab: &str) -> serde_json::Value {
    serde_json::json!({ "include": jobs(spec, lab) })
}

/// The variable that names a GitLab job's cell.
pub const GITLAB_VARIABLE: &str = "LAB_MATRIX_CELL";

/// GitLab CI: a job's `parallel:matrix`, one entry per cell, and the
/// script line that runs it.
pub fn gitlab(spec: &MatrixSpec, lab: &str) -> String {
    let file = spec.file.display().to_string();
    let mut out = format!(
        "# {} cells of {file}, one job each.\nparallel:\n  matrix:\n",
        spec.cells.len(),
    );
    for c in &spec.cells {
        out.push_str(&format!("    - {GITLAB_VARIABLE}: {}\n", quoted(&c.name)));
    }
    out.push_str(&format!(
        "script:\n  - {}\n",
        quoted(&format!(
            "{} --cell \"${GITLAB_VARIABLE}\"",
            shell_words::join([lab, "matrix", &file])
        ))
    ));
    out
}

/// GitLab CI, as JSON (GitLab reads JSON as YAML).
pub fn gitlab_json(spec: &MatrixSpec, lab: &str) -> serde_json::Value {
    let file = spec.file.display().to_string();
    let cells: Vec<serde_json::Value> = spec
        .cells
        .iter()
        .map(|c| serde_json::json!({ GITLAB_VARIABLE: c.name }))
        .collect();
    serde_json::json!({
        "parallel": { "matrix": cells },
        "script": [format!("{} --cell \"${GITLAB_VARIABLE}\"", shell_words::join([lab, "matrix", &file]))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> MatrixSpec {
        MatrixSpec::parse(
            "topologies = [\"default\", \"switched\"]\nsuites = [\"dax\", \"ras\"]\n",
            Path::new("ci/examples/matrix.toml"),
        )
        .unwrap()
    }

    #[test]
    fn github_gets_one_include_entry_per_cell_with_its_command() {
        assert_eq!(
            github(&spec(), "target/debug/lab"),
            "# 2 cells of ci/examples/matrix.toml; in a job: runs-on, then `run: ${{ matrix.command }}`\n\
             # (or `target/debug/lab matrix ci/examples/matrix.toml --emit github --json` into a job output and `matrix: ${{ fromJSON(...) }}`).\n\
             strategy:\n  fail-fast: false\n  matrix:\n    include:\n\
             \x20     - cell: \"m-default-image\"\n        topology: \"default\"\n        kernel: \"image\"\n\
             \x20       command: \"target/debug/lab matrix ci/examples/matrix.toml --cell m-default-image\"\n\
             \x20     - cell: \"m-switched-image\"\n        topology: \"switched\"\n        kernel: \"image\"\n\
             \x20       command: \"target/debug/lab matrix ci/examples/matrix.toml --cell m-switched-image\"\n"
        );
        let json = github_json(&spec(), "lab");
        assert_eq!(json["include"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["include"][1],
            serde_json::json!({"cell": "m-switched-image", "topology": "switched", "kernel": "image",
                               "command": "lab matrix ci/examples/matrix.toml --cell m-switched-image"})
        );
    }

    #[test]
    fn gitlab_gets_a_parallel_matrix_and_the_script_line() {
        assert_eq!(
            gitlab(&spec(), "target/debug/lab"),
            "# 2 cells of ci/examples/matrix.toml, one job each.\n\
             parallel:\n  matrix:\n\
             \x20   - LAB_MATRIX_CELL: \"m-default-image\"\n\
             \x20   - LAB_MATRIX_CELL: \"m-switched-image\"\n\
             script:\n  - \"target/debug/lab matrix ci/examples/matrix.toml --cell \\\"$LAB_MATRIX_CELL\\\"\"\n"
        );
        let json = gitlab_json(&spec(), "lab");
        assert_eq!(
            json["parallel"]["matrix"],
            serde_json::json!([{"LAB_MATRIX_CELL": "m-default-image"}, {"LAB_MATRIX_CELL": "m-switched-image"}])
        );
    }

    #[test]
    fn the_ci_examples_run_the_cells_of_the_example_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
        let file = "ci/examples/matrix.toml";
        let spec = MatrixSpec::parse(&read(file), Path::new(file)).unwrap();
        let lab = "target/debug/lab";
        let gitlab_example = read("ci/examples/gitlab-ci-matrix.yml");
        let cells: Vec<String> = gitlab(&spec, lab)
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("- {GITLAB_VARIABLE}:")))
            .map(|l| l.trim().to_owned())
            .collect();
        let listed: Vec<String> = gitlab_example
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("- {GITLAB_VARIABLE}:")))
            .map(|l| l.trim().to_owned())
            .collect();
        assert_eq!(
            listed, cells,
            "run `{lab} matrix {file} --emit gitlab` and update the example"
        );
        assert!(gitlab_example.contains(&format!(
            "{lab} matrix {file} --cell \"${GITLAB_VARIABLE}\""
        )));
        let github_example = read("ci/examples/github-actions-matrix.yml");
        assert!(github_example.contains(&format!("{lab} matrix {file} --emit github --json")));
        assert!(github_example.contains("${{ matrix.command }}"));
    }

    #[test]
    fn commands_are_shell_quoted() {
        let s = MatrixSpec::parse(
            "topologies = [\"default\"]\nsuites = [\"dax\"]\n",
            Path::new("my matrix.toml"),
        )
        .unwrap();
        assert_eq!(
            jobs(&s, "lab")[0].command,
            "lab matrix 'my matrix.toml' --cell m-default-image"
        );
    }
}
