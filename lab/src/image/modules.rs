//! Kernel modules for the initramfs: find them in the extracted kernel
//! package, read each one's `depends=` from its `.modinfo` section (Debian's
//! package ships no modules.dep), order dependencies first, and write a
//! modules.dep for the subset so busybox `modprobe` works in the guest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors while collecting modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("The kernel package has no /lib/modules directory under {0}.")]
    NoModules(PathBuf),
    #[error("Module {module} is neither in the kernel package nor built in; fix the module lists in images/recipe.toml.")]
    Unknown { module: String },
    #[error("Cannot decompress module {path} (is xz-utils installed? run ci/install-deps).")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Module {path} is not a readable ELF object.")]
    Elf {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
}

/// Module names use `_` and `-` interchangeably; `_` is canonical.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of one extracted kernel.
pub struct ModuleTree {
    pub kernel_release: String,
    /// `/lib/modules/<release>` inside the extracted package.
    pub dir: PathBuf,
    /// Canonical name -> path relative to `dir` (with .xz/.zst suffix).
    files: HashMap<String, String>,
    builtin: HashSet<String>,
}

/// A module ready for the image.
#[derive(Debug, Clone)]
pub struct ImageModule {
    pub name: String,
    /// Path relative to `/lib/modules/<release>/`, without compression suffix.
    pub rel_path: String,
    pub bytes: Vec<u8>,
    pub depends: Vec<String>,
}

impl ModuleTree {
    pub fn open(root: &Path) -> Result<ModuleTree, ModuleError> {
        let base = root.join("lib/modules");
        let release = std::fs::read_dir(&base)
            .ok()
            .and_then(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .max()
            })
            .ok_or_else(|| ModuleError::NoModules(root.to_owned()))?;
        ModuleTree::open_release(&base.join(&release))
    }

    /// The modules of `dir`, a `lib/modules/<release>` directory: its name
    /// is the release.
    pub fn open_release(dir: &Path) -> Result<ModuleTree, ModuleError> {
        let release = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|_| dir.is_dir())
            .ok_or_else(|| ModuleError::NoModules(dir.to_owned()))?;
        let dir = dir.to_owned();
        let mut files = HashMap::new();
        walk(&dir, &dir, &mut files);
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                Path::new(l)
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".ko")
                    .map(canonical)
            })
            .collect();
        Ok(ModuleTree {
            kernel_release: release,
            dir,
            files,
            builtin,
        })
    }

    /// The file of module `name` (compressed as it lies in the tree).
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.files
            .get(&canonical(name))
            .map(|rel| self.dir.join(rel))
    }

    /// Whether the tree has `name` as a module file.
    pub fn has_module(&self, name: &str) -> bool {
        self.files.contains_key(&canonical(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    fn load(&self, name: &str) -> Result<ImageModule, ModuleError> {
        let rel = self.files.get(name).ok_or_else(|| ModuleError::Unknown {
            module: name.into(),
        })?;
        let path = self.dir.join(rel);
        let bytes = decompress(&path)?;
        let depends = modinfo_depends(&bytes).map_err(|source| ModuleError::Elf {
            path: path.clone(),
            source,
        })?;
        let rel_path = rel
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz")
            .to_owned();
        Ok(ImageModule {
            name: name.into(),
            rel_path,
            bytes,
            depends,
        })
    }

    /// `wanted` and everything they depend on, dependencies before users;
    /// built-in modules are skipped.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<ImageModule>, ModuleError> {
        let mut loaded: BTreeMap<String, ImageModule> = BTreeMap::new();
        let mut order = Vec::new();
        for w in wanted {
            self.visit(&canonical(w), &mut loaded, &mut order, &mut HashSet::new())?;
        }
        Ok(order
            .into_iter()
            .filter_map(|n| loaded.remove(&n))
            .collect())
    }

    fn visit(
        &self,
        name: &str,
        loaded: &mut BTreeMap<String, ImageModule>,
        order: &mut Vec<String>,
        visiting: &mut HashSet<String>,
    ) -> Result<(), ModuleError> {
        if loaded.contains_key(name) || visiting.contains(name) {
            return Ok(());
        }
        if !self.files.contains_key(name) {
            return if self.is_builtin(name) {
                Ok(())
            } else {
                Err(ModuleError::Unknown {
                    module: name.into(),
                })
            };
        }
        visiting.insert(name.to_owned());
        let m = self.load(name)?;
        for d in m.depends.clone() {
            self.visit(&canonical(&d), loaded, order, visiting)?;
        }
        loaded.insert(name.to_owned(), m);
        order.push(name.to_owned());
        Ok(())
    }
}

/// A modules.dep for the given modules (paths relative to the release dir).
/// Like depmod, each line lists every transitive dependency, the one to load
/// first last (modprobe loads them from the end).
pub fn modules_dep(modules: &[ImageModule]) -> String {
    let by_name: HashMap<&str, &ImageModule> =
        modules.iter().map(|m| (m.name.as_str(), m)).collect();
    fn load_order<'a>(
        m: &'a ImageModule,
        by_name: &HashMap<&str, &'a ImageModule>,
        out: &mut Vec<&'a str>,
    ) {
        for d in &m.depends {
            if let Some(dm) = by_name.get(canonical(d).as_str()) {
                if !out.contains(&dm.rel_path.as_str()) {
                    load_order(dm, by_name, out);
                    out.push(dm.rel_path.as_str());
                }
            }
        }
    }
    let mut out = String::new();
    for m in modules {
        let mut deps = Vec::new();
        load_order(m, &by_name, &mut deps);
        deps.reverse();
        out.push_str(&format!(
            "{}:{}{}\n",
            m.rel_path,
            if deps.is_empty() { "" } else { " " },
            deps.join(" ")
        ));
    }
    out
}

fn walk(base: &Path, dir: &Path, out: &mut HashMap<String, String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(base, &p, out);
            continue;
        }
        let fname = e.file_name().to_string_lossy().into_owned();
        let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
            .iter()
            .find_map(|s| fname.strip_suffix(s));
        if let (Some(stem), Ok(rel)) = (stem, p.strip_prefix(base)) {
            out.insert(canonical(stem), rel.to_string_lossy().into_owned());
        }
    }
}

fn decompress(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let err = |source| ModuleError::Decompress {
        path: path.to_owned(),
        source,
    };
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return std::fs::read(path).map_err(err),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(err)?;
    if !out.status.success() {
        return Err(err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )));
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn modinfo_depends(bytes: &[u8]) -> Result<Vec<String>, goblin::error::Error> {
    let elf = goblin::elf::Elf::parse(bytes)?;
    for sh in &elf.section_headers {
        if elf.shdr_strtab.get_at(sh.sh_name) != Some(".modinfo") {
            continue;
        }
        let start = sh.sh_offset as usize;
        let end = start.saturating_add(sh.sh_size as usize).min(bytes.len());
        for entry in bytes[start.min(end)..end].split(|&b| b == 0) {
            if let Some(d) = entry.strip_prefix(b"depends=") {
                let s = String::from_utf8_lossy(d);
                return Ok(s
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect());
            }
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_dep_lists_dependencies_by_path() {
        let m = |name: &str, rel: &str, deps: &[&str]| ImageModule {
            name: name.into(),
            rel_path: rel.into(),
            bytes: vec![],
            depends: deps.iter().map(|s| s.to_string()).collect(),
        };
        let mods = [
            m("netfs", "kernel/fs/netfs/netfs.ko", &[]),
            m("9pnet", "kernel/net/9p/9pnet.ko", &["netfs"]),
            m(
                "9p",
                "kernel/fs/9p/9p.ko",
                &["9pnet", "netfs", "builtin_thing"],
            ),
        ];
        assert_eq!(
            modules_dep(&mods),
            "kernel/fs/netfs/netfs.ko:\n\
             kernel/net/9p/9pnet.ko: kernel/fs/netfs/netfs.ko\n\
             kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        );
        assert_eq!(canonical("dax-pmem"), "dax_pmem");
    }
}
