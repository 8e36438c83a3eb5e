//! The matrix file and its cells. A small TOML file:
//!
//! ```toml
//! topologies = ["default", "switched"]   # presets, or topology files
//! kernels = ["image"]                    # optional; "image" is the image's kernel
//! suites = ["dax", "ras"]
//! baseline = "baselines/matrix"          # optional: one baseline per cell name
//! name = "m"                             # optional: the cells' name prefix
//! [guest]                                # optional: every cell's guest
//! cpus = 2
//! memory = "1G"
//! ```
//!
//! Each (topology, kernel) pair is a cell: one lab named
//! `<name>-<topology>-<kernel>` that runs the suites. Paths in the file
//! are relative to the file.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use cxl_topology::{ByteSize, Topology, TopologyError};
use serde::{Deserialize, Serialize};

use crate::rundir::{check_name, RunDirError};
use crate::suites::{expand, Suite, SuiteArg};

/// The kernel entry that means the image's own kernel (no `lab up --kernel`).
pub const IMAGE_KERNEL: &str = "image";
/// The cells' name prefix when the file names none.
pub const DEFAULT_NAME: &str = "m";

/// What is wrong with a matrix file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("Reading the matrix file {} failed.", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a matrix file lab can read; its keys are topologies, suites, and optionally kernels, baseline, name and a [guest] table with cpus and memory.", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{}: {axis} is empty; list at least one {what}.", path.display())]
    EmptyAxis {
        path: PathBuf,
        axis: &'static str,
        what: &'static str,
    },
    #[error("{}: {axis} lists '{entry}' twice; list each once.", path.display())]
    Repeated {
        path: PathBuf,
        axis: &'static str,
        entry: String,
    },
    #[error("{}: topology '{entry}' is not a preset ({presets}); name a preset, or a topology file by a path with '/' or ending in .toml (relative to the matrix file).", path.display())]
    UnknownPreset {
        path: PathBuf,
        entry: String,
        presets: String,
    },
    #[error("{}: topology '{entry}' cannot be used.", path.display())]
    Topology {
        path: PathBuf,
        entry: String,
        #[source]
        source: TopologyError,
    },
    #[error("{}: suite '{entry}' is not one of {known}.", path.display())]
    UnknownSuite {
        path: PathBuf,
        entry: String,
        known: String,
    },
    #[error("{}: kernel '{entry}' gives no name for its cells; name the kernel by a file or directory, or by a release such as 6.13.0.", path.display())]
    UnnamedKernel { path: PathBuf, entry: String },
    #[error("{}: the cells' name '{name}' cannot name a lab.", path.display())]
    BadName {
        path: PathBuf,
        name: String,
        #[source]
        source: RunDirError,
    },
    #[error("{}: {first} and {second} both make cell '{cell}' (cells are named <name>-<topology>-<kernel>, a file by its stem); rename one of the files.", path.display())]
    DuplicateCell {
        path: PathBuf,
        cell: String,
        first: String,
        second: String,
    },
    #[error("{}: the baseline {} is not a directory; keep one baseline per cell there (`lab baseline save --name CELL --baselines DIR CELL`), or name the results directory of an earlier `lab matrix`.", path.display(), dir.display())]
    NoBaseline { path: PathBuf, dir: PathBuf },
    #[error("{} has no cell '{cell}'; its cells are {cells}.", path.display())]
    UnknownCell {
        path: PathBuf,
        cell: String,
        cells: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    #[serde(default)]
    name: Option<String>,
    topologies: Vec<String>,
    #[serde(default)]
    kernels: Option<Vec<String>>,
    suites: Vec<String>,
    #[serde(default)]
    baseline: Option<PathBuf>,
    #[serde(default)]
    guest: GuestOverride,
}

/// `[guest]`: what every cell's guest gets instead of its topology's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestOverride {
    pub cpus: Option<u32>,
    pub memory: Option<ByteSize>,
}

/// A topology of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopologyEntry {
    /// As written in the file.
    pub entry: String,
    /// What `lab up --topology` gets: the preset's name, or the file's path.
    pub arg: String,
    /// Its part of cell names: the preset's name or the file's stem.
    pub slug: String,
}

/// A kernel of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelEntry {
    /// As written in the file.
    pub entry: String,
    /// What `lab up --kernel` gets; None for the image's kernel.
    pub arg: Option<String>,
    /// Its part of cell names.
    pub slug: String,
}

/// One lab of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The lab's name, `<name>-<topology>-<kernel>`.
    pub name: String,
    pub topology: TopologyEntry,
    pub kernel: KernelEntry,
    /// The topology the lab runs ([guest] applied).
    pub effective: Topology,
    /// Whether [guest] changed the topology: `lab up` then gets the
    /// effective topology written to a file.
    pub guest_changed: bool,
    /// The suites in order, each with why it does not apply to the
    /// topology (`Suite::not_for`), None for one to run.
    pub plan: Vec<(Suite, Option<String>)>,
}

impl Cell {
    /// The suites the lab runs.
    pub fn to_run(&self) -> Vec<Suite> {
        self.plan
            .iter()
            .filter(|(_, skip)| skip.is_none())
            .map(|(s, _)| *s)
            .collect()
    }
}

/// A validated matrix file.
#[derive(Debug, Clone)]
pub struct MatrixSpec {
    /// The file, as given.
    pub file: PathBuf,
    /// The cells' name prefix.
    pub name: String,
    pub suites: Vec<Suite>,
    /// One baseline per cell name (`<baseline>/<cell>`), when given.
    pub baseline: Option<PathBuf>,
    pub guest: GuestOverride,
    /// Topologies × kernels, topologies outermost.
    pub cells: Vec<Cell>,
}

/// `entry` as a part of a lab name: letters, digits, '-' and '_' kept,
/// anything else a '-', none at either end.
fn slug(entry: &str) -> String {
    let s: String = entry
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_owned()
}

/// Whether a topology or kernel entry names a file rather than a preset
/// or a release.
fn is_path(entry: &str) -> bool {
    entry.contains('/') || entry.ends_with(".toml")
}

fn repeated<'a>(
    path: &Path,
    axis: &'static str,
    entries: &'a [String],
) -> Result<&'a [String], SpecError> {
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].contains(e) {
            return Err(SpecError::Repeated {
                path: path.to_owned(),
                axis,
                entry: e.clone(),
            });
        }
    }
    Ok(entries)
}

fn nonempty<'a>(
    path: &Path,
    axis: &'static str,
    what: &'static str,
    entries: &'a [String],
) -> Result<&'a [String], SpecError> {
    if entries.is_empty() {
        return Err(SpecError::EmptyAxis {
            path: path.to_owned(),
            axis,
            what,
        });
    }
    repeated(path, axis, entries)
}

impl MatrixSpec {
    /// Reads and validates the matrix file at `path`.
    pub fn load(path: &Path) -> Result<MatrixSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        MatrixSpec::parse(&text, path)
    }

    /// Validates the text of the matrix file at `path` (relative paths in
    /// it are taken from `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<MatrixSpec, SpecError> {
        let file: MatrixFile = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let name = file.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
        check_name(&name).map_err(|source| SpecError::BadName {
            path: path.to_owned(),
            name: name.clone(),
            source,
        })?;
        let topologies = nonempty(
            path,
            "topologies",
            "preset name (`lab topologies`) or topology file",
            &file.topologies,
        )?
        .iter()
        .map(|e| topology_entry(path, base, e))
        .collect::<Result<Vec<_>, _>>()?;
        let kernels = match &file.kernels {
            None => vec![IMAGE_KERNEL.to_owned()],
            Some(k) => {
                nonempty(path, "kernels", "kernel (\"image\" for the image's own)", k)?.to_vec()
            }
        };
        let kernels = kernels
            .iter()
            .map(|e| kernel_entry(path, base, e))
            .collect::<Result<Vec<_>, _>>()?;
        let suites = suites(path, &file.suites)?;
        let baseline = file.baseline.map(|b| base.join(b));
        if let Some(dir) = baseline.as_ref().filter(|d| !d.is_dir()) {
            return Err(SpecError::NoBaseline {
                path: path.to_owned(),
                dir: dir.clone(),
            });
        }
        let mut cells: Vec<Cell> = Vec::new();
        for t in &topologies {
            let (effective, guest_changed) = effective_topology(path, t, file.guest)?;
            for k in &kernels {
                let cell = format!("{name}-{}-{}", t.slug, k.slug);
                check_name(&cell).map_err(|source| SpecError::BadName {
                    path: path.to_owned(),
                    name: cell.clone(),
                    source,
                })?;
                if let Some(c) = cells.iter().find(|c| c.name == cell) {
                    return Err(SpecError::DuplicateCell {
                        path: path.to_owned(),
                        cell,
                        first: describe(&c.topology, &c.kernel),
                        second: describe(t, k),
                    });
                }
                let plan = suites.iter().map(|s| (*s, s.not_for(&effective))).collect();
                cells.push(Cell {
                    name: cell,
                    topology: t.clone(),
                    kernel: k.clone(),
                    effective: effective.clone(),
                    guest_changed,
                    plan,
                });
            }
        }
        Ok(MatrixSpec {
            file: path.to_owned(),
            name,
            suites,
            baseline,
            guest: file.guest,
            cells,
        })
    }

    /// The matrix of cell `cell` alone (`lab matrix FILE --cell NAME`).
    pub fn select(mut self, cell: &str) -> Result<MatrixSpec, SpecError> {
        match self.cells.iter().position(|c| c.name == cell) {
            Some(i) => {
                self.cells = vec![self.cells.swap_remove(i)];
                Ok(self)
            }
            None => Err(SpecError::UnknownCell {
                path: self.file.clone(),
                cell: cell.to_owned(),
                cells: self.cell_names().join(", "),
            }),
        }
    }

    pub fn cell_names(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.name.clone()).collect()
    }

    /// The file's stem: where its runs are kept by default.
    pub fn stem(&self) -> String {
        let stem = self
            .file
            .file_stem()
            .map(|s| slug(&s.to_string_lossy()))
            .unwrap_or_default();
        if stem.is_empty() {
            "matrix".to_owned()
        } else {
            stem
        }
    }
}

fn describe(t: &TopologyEntry, k: &KernelEntry) -> String {
    format!("topology '{}' with kernel '{}'", t.entry, k.entry)
}

fn topology_entry(path: &Path, base: &Path, entry: &str) -> Result<TopologyEntry, SpecError> {
    if is_path(entry) {
        let file = base.join(entry);
        let stem = file
            .file_stem()
            .map(|s| slug(&s.to_string_lossy()))
            .unwrap_or_default();
        Ok(TopologyEntry {
            entry: entry.to_owned(),
            arg: file.display().to_string(),
            slug: if stem.is_empty() {
                "topology".into()
            } else {
                stem
            },
        })
    } else if cxl_topology::preset(entry).is_some() {
        Ok(TopologyEntry {
            entry: entry.to_owned(),
            arg: entry.to_owned(),
            slug: slug(entry),
        })
    } else {
        Err(SpecError::UnknownPreset {
            path: path.to_owned(),
            entry: entry.to_owned(),
            presets: cxl_topology::PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn kernel_entry(path: &Path, base: &Path, entry: &str) -> Result<KernelEntry, SpecError> {
    let (arg, named) = if entry == IMAGE_KERNEL {
        (None, entry.to_owned())
    } else if entry.contains('/') {
        let file = base.join(entry);
        let named = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (Some(file.display().to_string()), named)
    } else {
        (Some(entry.to_owned()), entry.to_owned())
    };
    let slug = slug(&named);
    if slug.is_empty() {
        return Err(SpecError::UnnamedKernel {
            path: path.to_owned(),
            entry: entry.to_owned(),
        });
    }
    Ok(KernelEntry {
        entry: entry.to_owned(),
        arg,
        slug,
    })
}

/// The topology with [guest] applied, validated again, and whether it
/// changed.
fn effective_topology(
    path: &Path,
    t: &TopologyEntry,
    guest: GuestOverride,
) -> Result<(Topology, bool), SpecError> {
    let err = |source| SpecError::Topology {
        path: path.to_owned(),
        entry: t.entry.clone(),
        source,
    };
    let loaded = match cxl_topology::preset(&t.arg).filter(|_| !is_path(&t.entry)) {
        Some(p) => Topology::parse(p.toml, &format!("<preset {}>", p.name)),
        None => Topology::load(Some(Path::new(&t.arg))),
    }
    .map_err(err)?;
    let mut changed = loaded.clone();
    if let Some(cpus) = guest.cpus {
        changed.guest.cpus = cpus;
    }
    if let Some(memory) = guest.memory {
        changed.guest.memory = memory;
    }
    if changed == loaded {
        return Ok((loaded, false));
    }
    let origin = format!("{} with the matrix's [guest]", loaded.origin);
    let checked = Topology::parse(&changed.to_toml(), &origin).map_err(err)?;
    Ok((checked, true))
}

fn suites(path: &Path, entries: &[String]) -> Result<Vec<Suite>, SpecError> {
    let entries = nonempty(path, "suites", "suite (`lab run --help`)", entries)?;
    let args = entries
        .iter()
        .map(|e| {
            SuiteArg::from_str(e, false).map_err(|_| SpecError::UnknownSuite {
                path: path.to_owned(),
                entry: e.clone(),
                known: SuiteArg::value_variants()
                    .iter()
                    .filter_map(|a| a.to_possible_value())
                    .map(|v| v.get_name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(expand(&args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MatrixSpec, String> {
        MatrixSpec::parse(text, Path::new("ci/matrix.toml"))
            .map_err(|e| crate::error::error_chain(&e))
    }

    #[test]
    fn cells_are_topologies_times_kernels_named_by_both() {
        let m = parse(
            "topologies = [\"default\", \"switched\"]\nkernels = [\"image\", \"6.13.0\", \"/boot/vmlinuz-6.14+x\"]\nsuites = [\"dax\", \"ras\"]\n",
        )
        .unwrap();
        assert_eq!(
            m.cell_names(),
            [
                "m-default-image",
                "m-default-6-13-0",
                "m-default-vmlinuz-6-14-x",
                "m-switched-image",
                "m-switched-6-13-0",
                "m-switched-vmlinuz-6-14-x",
            ]
        );
        let c = &m.cells[4];
        assert_eq!(c.topology.arg, "switched");
        assert_eq!(c.kernel.arg.as_deref(), Some("6.13.0"));
        assert_eq!(m.cells[0].kernel.arg, None, "image: no --kernel");
        assert_eq!(
            m.cells[2].kernel.arg.as_deref(),
            Some("/boot/vmlinuz-6.14+x")
        );
        assert!(!c.guest_changed);
        assert_eq!(m.suites, [Suite::Dax, Suite::Ras]);
        assert_eq!(m.stem(), "matrix");
    }

    #[test]
    fn kernels_default_to_the_image_and_the_prefix_is_the_name() {
        let m =
            parse("name = \"nightly\"\ntopologies = [\"tiering\"]\nsuites = [\"all\"]\n").unwrap();
        assert_eq!(m.cell_names(), ["nightly-tiering-image"]);
        // `all` as `lab run all`: every suite but seeds; those that do not
        // apply to the topology are skipped with the reason.
        let plan: Vec<(&str, bool)> = m.cells[0]
            .plan
            .iter()
            .map(|(s, why)| (s.name(), why.is_some()))
            .collect();
        assert_eq!(
            plan,
            [
                ("dax", false),
                ("fio", false),
                ("faults", false),
                ("ioriot", false),
                ("ras", true),
                ("dcd", true)
            ]
        );
        assert_eq!(m.cells[0].to_run().len(), 4);
    }

    #[test]
    fn a_suite_that_does_not_apply_to_a_topology_is_skipped_there_only() {
        let m = parse("topologies = [\"default\", \"switched\"]\nsuites = [\"dax\", \"ras\"]\n")
            .unwrap();
        assert_eq!(m.cells[0].to_run(), [Suite::Dax, Suite::Ras]);
        assert_eq!(m.cells[1].to_run(), [Suite::Dax]);
        let why = m.cells[1].plan[1].1.as_deref().unwrap();
        assert!(why.contains("no persistent device"), "{why}");
    }

    #[test]
    fn topology_files_are_relative_to_the_matrix_file_and_named_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let topo = dir.path().join("topos");
        std::fs::create_dir(&topo).unwrap();
        std::fs::write(topo.join("wide.toml"), cxl_topology::DEFAULT_TOPOLOGY_TOML).unwrap();
        let file = dir.path().join("m.toml");
        let m = MatrixSpec::parse(
            "topologies = [\"topos/wide.toml\"]\nsuites = [\"fio\"]\n",
            &file,
        )
        .unwrap();
        assert_eq!(m.cell_names(), ["m-wide-image"]);
        assert_eq!(
            m.cells[0].topology.arg,
            topo.join("wide.toml").display().to_string()
        );
        assert_eq!(m.stem(), "m");
        // Missing: the topology's own error, under the entry's name.
        let e = MatrixSpec::parse(
            "topologies = [\"topos/nope.toml\"]\nsuites = [\"fio\"]\n",
            &file,
        )
        .map_err(|e| crate::error::error_chain(&e))
        .unwrap_err();
        assert!(
            e.contains("topology 'topos/nope.toml' cannot be used") && e.contains("nope.toml"),
            "{e}"
        );
    }

    #[test]
    fn guest_cpus_and_memory_apply_to_every_cell_and_are_validated() {
        let m = parse("topologies = [\"default\", \"switched\"]\nsuites = [\"dax\"]\n[guest]\ncpus = 1\nmemory = \"2G\"\n").unwrap();
        for c in &m.cells {
            assert!(c.guest_changed);
            assert_eq!(
                (c.effective.guest.cpus, c.effective.guest.memory.bytes()),
                (1, 2 << 30)
            );
        }
        let same =
            parse("topologies = [\"default\"]\nsuites = [\"dax\"]\n[guest]\ncpus = 2\n").unwrap();
        assert!(
            !same.cells[0].guest_changed,
            "the preset already has 2 CPUs"
        );
        let e =
            parse("topologies = [\"default\"]\nsuites = [\"dax\"]\n[guest]\nmemory = \"64M\"\n")
                .unwrap_err();
        assert!(
            e.contains("topology 'default' cannot be used") && e.contains("guest.memory: 64M"),
            "{e}"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_problem_and_the_fix() {
        let cases = [
            ("topologies = [\"default\"]\nsuites = [\"dax\"]\ntopology = \"x\"\n", "unknown field `topology`"),
            ("topologies = [\"default\"]\n", "missing field `suites`"),
            ("topologies = []\nsuites = [\"dax\"]\n", "topologies is empty; list at least one preset name"),
            ("topologies = [\"default\"]\nkernels = []\nsuites = [\"dax\"]\n", "kernels is empty"),
            ("topologies = [\"default\"]\nsuites = []\n", "suites is empty"),
            ("topologies = [\"defualt\"]\nsuites = [\"dax\"]\n", "topology 'defualt' is not a preset (default, switched, two-bridges"),
            ("topologies = [\"default\"]\nsuites = [\"dax\", \"dma\"]\n", "suite 'dma' is not one of dax, fio, faults, ioriot, ras, dcd, seeds, all"),
            ("topologies = [\"default\", \"default\"]\nsuites = [\"dax\"]\n", "topologies lists 'default' twice"),
            ("topologies = [\"default\"]\nsuites = [\"dax\", \"dax\"]\n", "suites lists 'dax' twice"),
            ("topologies = [\"default\"]\nkernels = [\"6.13\", \"6-13\"]\nsuites = [\"dax\"]\n", "topology 'default' with kernel '6.13' and topology 'default' with kernel '6-13' both make cell 'm-default-6-13'"),
            ("topologies = [\"default\"]\nkernels = [\"+\"]\nsuites = [\"dax\"]\n", "kernel '+' gives no name"),
            ("name = \"a b\"\ntopologies = [\"default\"]\nsuites = [\"dax\"]\n", "the cells' name 'a b' cannot name a lab"),
            ("topologies = [\"default\"]\nsuites = [\"dax\"]\nbaseline = \"no/such/dir\"\n", "the baseline ci/no/such/dir is not a directory"),
            ("topologies = [\"default\"]\nsuites = [\"dax\"]\n[guest]\ncpu = 2\n", "unknown field `cpu`"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("ci/matrix.toml"), "names the file: {e}");
        }
    }

    #[test]
    fn one_cell_is_selected_by_name() {
        let m = parse("topologies = [\"default\", \"switched\"]\nsuites = [\"dax\"]\n").unwrap();
        let one = m.clone().select("m-switched-image").unwrap();
        assert_eq!(one.cell_names(), ["m-switched-image"]);
        let e = m.select("m-tiering-image").unwrap_err().to_string();
        assert_eq!(
            e,
            "ci/matrix.toml has no cell 'm-tiering-image'; its cells are m-default-image, m-switched-image."
        );
    }
}
