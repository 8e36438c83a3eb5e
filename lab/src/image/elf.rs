//! The shared-library closure of a program (what `ldd` would list),
//! resolved inside the extracted package tree rather than on the host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Errors resolving libraries.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("Cannot read {path}.")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file the lab can read.")]
    Parse {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("{binary} needs {library}, which no downloaded package provides; add its package to extra_packages in images/recipe.toml.")]
    MissingLibrary { binary: String, library: String },
    #[error(
        "{path} does not exist in the extracted packages; fix `programs` in images/recipe.toml."
    )]
    MissingProgram { path: String },
}

/// Directories searched for DT_NEEDED libraries (Debian multiarch).
const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Resolves `guest_path` inside `root`, following symlinks (absolute ones
/// relative to `root`). Returns the host path of the final file.
pub fn resolve_in(root: &Path, guest_path: &str) -> Option<PathBuf> {
    let mut current = guest_path.to_owned();
    for _ in 0..40 {
        let host = root.join(current.trim_start_matches('/'));
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).ok()?;
                let target = target.to_string_lossy();
                current = if target.starts_with('/') {
                    target.into_owned()
                } else {
                    let parent = Path::new(&current).parent().unwrap_or(Path::new("/"));
                    normalize(&parent.join(target.as_ref()))
                };
            }
            Ok(_) => return Some(host),
            Err(_) => {
                // A symlinked directory in the middle (usrmerge): resolve parents.
                let p = Path::new(&current);
                let parent = p.parent()?;
                if parent == Path::new("/") {
                    return None;
                }
                let resolved_parent = resolve_dir_in(root, &parent.to_string_lossy())?;
                let candidate = resolved_parent.join(p.file_name()?);
                return candidate.exists().then_some(candidate);
            }
        }
    }
    None
}

fn resolve_dir_in(root: &Path, guest_dir: &str) -> Option<PathBuf> {
    resolve_in(root, guest_dir).filter(|p| p.is_dir())
}

fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// What an ELF file asks of the dynamic loader.
#[derive(Debug, Default)]
pub struct Needs {
    pub interpreter: Option<String>,
    pub libraries: Vec<String>,
    /// DT_RUNPATH and DT_RPATH entries, `$ORIGIN` not yet substituted.
    pub search: Vec<String>,
}

/// The interpreter, DT_NEEDED names and run paths of an ELF file.
pub fn needed(path: &Path) -> Result<Needs, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|source| ElfError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let search = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|p| p.split(':'))
        .map(str::to_owned)
        .collect();
    Ok(Needs {
        interpreter: elf.interpreter.map(str::to_owned),
        libraries: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search,
    })
}

/// Guest paths of every library (and the interpreter) that the ELF files
/// `binaries` (host paths) need, resolved inside `root`.
pub fn library_closure(
    root: &Path,
    binaries: &[(String, PathBuf)],
) -> Result<BTreeSet<String>, ElfError> {
    let mut out = BTreeSet::new();
    let mut queue: Vec<(String, PathBuf)> = binaries.to_vec();
    let mut seen_names = BTreeSet::new();
    while let Some((name, host)) = queue.pop() {
        let needs = needed(&host)?;
        let origin = Path::new(&name)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut dirs: Vec<String> = needs
            .search
            .iter()
            .map(|d| d.replace("$ORIGIN", &origin))
            .collect();
        dirs.extend(LIBRARY_DIRS.iter().map(|d| d.to_string()));
        if let Some(i) = needs.interpreter {
            if out.insert(i.clone()) {
                let h = resolve_in(root, &i).ok_or_else(|| ElfError::MissingLibrary {
                    binary: name.clone(),
                    library: i.clone(),
                })?;
                queue.push((i, h));
            }
        }
        for lib in needs.libraries {
            if !seen_names.insert(lib.clone()) {
                continue;
            }
            let found = dirs.iter().find_map(|d| {
                let guest = format!("{d}/{lib}");
                resolve_in(root, &guest).map(|h| (guest, h))
            });
            let (guest, h) = found.ok_or_else(|| ElfError::MissingLibrary {
                binary: name.clone(),
                library: lib.clone(),
            })?;
            out.insert(guest.clone());
            queue.push((guest, h));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_absolute_and_relative_symlinks_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::write(r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), b"x").unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink("ld-linux-x86-64.so.2", r.join("lib/x86_64-linux-gnu/ld.so"))
            .unwrap();
        assert_eq!(
            resolve_in(r, "/lib64/ld-linux-x86-64.so.2").unwrap(),
            r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert!(resolve_in(r, "/lib/x86_64-linux-gnu/ld.so").is_some());
        assert!(resolve_in(r, "/lib/nope.so").is_none());
    }

    #[test]
    fn reads_the_needed_libraries_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let n = needed(&exe).unwrap();
        assert_eq!(
            n.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(
            n.libraries.iter().any(|l| l == "libc.so.6"),
            "{:?}",
            n.libraries
        );
    }
}
