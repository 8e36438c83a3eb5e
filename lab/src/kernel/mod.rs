//! The kernel a lab boots: the image's own (Debian's, from the recipe), or
//! a user's, given to `lab up --kernel PATH [--modules DIR]` (or `[guest]
//! kernel`) as a Debian kernel package, a bzImage/vmlinuz with or without
//! a `lib/modules/<release>` tree, or a kernel build tree.
//!
//! A user's kernel is checked before anything starts (its header says an
//! x86-64 bzImage and its release, the modules are of that release, its
//! config has what the boot needs) and becomes a cache entry
//! `<cache>/kernels/<key>/`, keyed by a hash of its content: `vmlinuz`,
//! `config`, `kernel.json` and `modules.lz4`, a small initramfs layer with
//! the recipe's modules of that kernel (only those it builds as modules),
//! their modules.dep and the guest /init's module lists. The layer is
//! appended to the image's initramfs (the kernel unpacks concatenated
//! archives in order, later files replacing earlier ones), so the
//! userland and tools are never repacked for a new kernel.

pub mod bzimage;
mod error;
mod source;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::image::kmod;
use crate::image::modules::{self, ModuleTree};
use crate::image::recipe::Recipe;
use crate::image::{self, Image, Source};
use crate::kconfig::{KconfigError, KernelConfig, Need, OPTIONS};
use error::io_err;
pub use error::KernelError;
pub use source::KernelInput;

/// How a kernel reached the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    /// The image's own (the recipe's Debian package).
    Image,
    /// `--kernel` a Debian kernel package.
    Deb,
    /// `--kernel` a bzImage/vmlinuz (with `--modules` or none).
    Bzimage,
    /// `--kernel` a kernel build tree.
    Tree,
}

/// Where the booted kernel came from: `lab status`, `summary.json` and
/// every suite's JSON name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelOrigin {
    pub kind: KernelKind,
    /// The path given (`--kernel` or `[guest] kernel`), absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `--modules`, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<PathBuf>,
    /// The image's kernel package and version (`kind` image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

impl KernelOrigin {
    /// One line: `image (linux-image-… 6.12.118-1~deb12u1)`, `deb /p/x.deb`,
    /// `bzimage /p/vmlinuz with modules /p/lib/modules/R`, `tree /p/linux`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            KernelKind::Image => "image",
            KernelKind::Deb => "deb",
            KernelKind::Bzimage => "bzimage",
            KernelKind::Tree => "tree",
        };
        let mut s = kind.to_owned();
        if let Some(p) = &self.package {
            s.push_str(&format!(" ({p})"));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(" {}", p.display()));
        }
        if let Some(m) = &self.modules {
            s.push_str(&format!(" with modules {}", m.display()));
        }
        s
    }
}

/// What QEMU boots: kernel, initramfs, the config checked before boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub config: PathBuf,
    /// `uname -r`.
    pub release: String,
    pub origin: KernelOrigin,
    /// The recipe's modules this kernel has as modules (in the initramfs).
    pub modules: Vec<String>,
    /// The recipe's modules it has neither as a module nor built in: the
    /// config check decides whether the lab can do without them.
    pub absent_modules: Vec<String>,
    /// The image's out-of-tree modules (built against the image's kernel)
    /// that this kernel cannot load.
    pub foreign_built_modules: Vec<String>,
}

impl BootKernel {
    /// The image's own kernel.
    pub fn of_image(img: &Image) -> BootKernel {
        BootKernel {
            kernel: img.kernel.clone(),
            initrd: img.initrd.clone(),
            config: img.config.clone(),
            release: img.manifest.kernel_release.clone(),
            origin: KernelOrigin {
                kind: KernelKind::Image,
                path: None,
                modules: None,
                package: Some(format!(
                    "{} {}",
                    img.manifest.kernel_package, img.manifest.kernel_version
                )),
            },
            modules: img.manifest.modules.clone(),
            absent_modules: Vec::new(),
            foreign_built_modules: Vec::new(),
        }
    }
}

/// What a cache entry records of its kernel (`kernel.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    release: String,
    version: String,
    kind: KernelKind,
    modules: Vec<String>,
    absent_modules: Vec<String>,
    /// The image's out-of-tree modules built against this kernel (a build
    /// tree's), in its layer.
    #[serde(default)]
    built_modules: Vec<String>,
}

/// The files of a user's kernel before it is cached.
struct Found {
    image: PathBuf,
    bz: bzimage::BzImage,
    config: KernelConfig,
    config_text: Vec<u8>,
    modules: Option<ModuleTree>,
    /// The recipe's out-of-tree modules built against this kernel (only a
    /// build tree can: it has what `make M=` needs).
    built: Vec<modules::ImageModule>,
}

/// Prepares a user's kernel for `image`: checks it, caches it under
/// `<cache_dir>/kernels/` and returns what QEMU boots. Starts nothing.
pub fn prepare(
    input: &KernelInput,
    image: &Image,
    cache_dir: &Path,
) -> Result<BootKernel, KernelError> {
    // Made by the first entry written: a refused kernel leaves nothing.
    let kernels = cache_dir.join("kernels");
    let recipe = Recipe::embedded();
    let (dir, entry) = match input {
        KernelInput::Deb(deb) => prepare_deb(deb, &kernels, &recipe)?,
        KernelInput::Bzimage { image, modules } => {
            let found = find_bzimage(image, modules.as_deref())?;
            store(found, KernelKind::Bzimage, &kernels, &recipe, None)?
        }
        KernelInput::Tree(tree) => {
            let found = find_tree(tree, &kernels)?;
            store(found, KernelKind::Tree, &kernels, &recipe, None)?
        }
    };
    let layer = dir.join("modules.lz4");
    let initrd = dir.join(format!("initrd-{}.lz4", image.manifest.key));
    if !initrd.is_file() {
        concatenate(&[&image.initrd, &layer], &initrd)?;
    }
    let (path, modules) = input.paths();
    Ok(BootKernel {
        kernel: dir.join("vmlinuz"),
        initrd,
        config: dir.join("config"),
        release: entry.release.clone(),
        origin: KernelOrigin {
            kind: entry.kind,
            path: Some(path),
            modules,
            package: None,
        },
        modules: entry.modules,
        absent_modules: entry.absent_modules,
        foreign_built_modules: if entry.release == image.manifest.kernel_release {
            Vec::new()
        } else {
            image
                .manifest
                .built_modules
                .iter()
                .filter(|m| !entry.built_modules.contains(&m.name))
                .map(|m| m.name.clone())
                .collect()
        },
    })
}

fn load_entry(dir: &Path) -> Option<Entry> {
    let e: Entry = serde_json::from_slice(&std::fs::read(dir.join("kernel.json")).ok()?).ok()?;
    ["vmlinuz", "config", "modules.lz4"]
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(e)
}

fn sha256_file(path: &Path, h: &mut Sha256) -> Result<(), KernelError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    std::io::copy(&mut f, h).map_err(io_err(path))?;
    Ok(())
}

/// Bump when the way a kernel's entry is made changes.
const LAYER_VERSION: &str = "2";

/// A .deb is keyed by its bytes and what chooses the layer's modules (the
/// recipe): a cached one is not unpacked again.
fn prepare_deb(
    deb: &Path,
    kernels: &Path,
    recipe: &Recipe,
) -> Result<(PathBuf, Entry), KernelError> {
    let mut h = Sha256::new();
    h.update(LAYER_VERSION.as_bytes());
    h.update(crate::image::recipe::RECIPE_TOML.as_bytes());
    sha256_file(deb, &mut h)?;
    let key = format!("deb-{}", hex::encode(&h.finalize()[..12]));
    let dir = kernels.join(&key);
    if let Some(e) = load_entry(&dir) {
        return Ok((dir, e));
    }
    let staging = kernels.join(format!("{key}.unpack"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let result = (|| {
        crate::image::debs::extract(deb, &staging).map_err(|source| KernelError::Unpack {
            path: deb.to_owned(),
            source,
        })?;
        let boot = staging.join("boot");
        let vmlinuz =
            first_with_prefix(&boot, "vmlinuz-").ok_or_else(|| KernelError::NotAKernelPackage {
                path: deb.to_owned(),
            })?;
        let has_modules = staging.join("lib/modules").is_dir();
        let found = find_bzimage(&vmlinuz, has_modules.then_some(staging.as_path()))?;
        store(found, KernelKind::Deb, kernels, recipe, Some(&key))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn first_with_prefix(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    v.sort();
    v.pop()
}

/// A bzImage, its config and its modules (a `lib/modules/<release>`
/// directory, or a directory with `lib/modules/` in it).
fn find_bzimage(image: &Path, modules: Option<&Path>) -> Result<Found, KernelError> {
    let bz = bzimage::read(image)?;
    let config_path = find_config(image, &bz);
    let config_text = match &config_path {
        Some(p) => std::fs::read(p).map_err(io_err(p))?,
        None => Vec::new(),
    };
    let config = match &config_path {
        Some(p) => KernelConfig::read(p)?,
        None => KernelConfig::read(image).map_err(|e| match e {
            KconfigError::NoEmbeddedConfig { .. } => KernelError::NoConfig {
                kernel: image.to_owned(),
                release: bz.release.clone(),
                looked: config_candidates(image, &bz)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            e => e.into(),
        })?,
    };
    let config_text = if config_text.is_empty() {
        // The embedded config, as text for the cache entry.
        config
            .values
            .iter()
            .map(|(k, v)| format!("CONFIG_{k}={v}\n"))
            .collect::<String>()
            .into_bytes()
    } else {
        config_text
    };
    let modules = match modules {
        None => None,
        Some(m) => Some(open_modules(m, image, &bz.release)?),
    };
    Ok(Found {
        image: image.to_owned(),
        bz,
        config,
        config_text,
        modules,
        built: Vec::new(),
    })
}

/// Where a kernel's config may lie beside its image: Debian's
/// `config-<release>` (next to `vmlinuz-<release>` in /boot), a tree's
/// `.config` (the image being `arch/x86/boot/bzImage`).
fn config_candidates(image: &Path, bz: &bzimage::BzImage) -> Vec<PathBuf> {
    let dir = image.parent().unwrap_or(Path::new("."));
    vec![
        dir.join(format!("config-{}", bz.release)),
        dir.join("config"),
        dir.join("../../../.config"),
    ]
}

fn find_config(image: &Path, bz: &bzimage::BzImage) -> Option<PathBuf> {
    config_candidates(image, bz)
        .into_iter()
        .find(|p| p.is_file())
}

/// The modules of `release` in `dir`: `dir` is `lib/modules/<release>`
/// itself, or a root with `lib/modules/<release>` in it.
fn open_modules(dir: &Path, kernel: &Path, release: &str) -> Result<ModuleTree, KernelError> {
    if !dir.is_dir() {
        return Err(KernelError::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let root = dir.join("lib/modules");
    if root.is_dir() {
        let found: Vec<String> = std::fs::read_dir(&root)
            .map_err(io_err(&root))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !found.iter().any(|f| f == release) {
            let mut found = found;
            found.sort();
            return Err(KernelError::NoModulesForRelease {
                modules: dir.to_owned(),
                release: release.to_owned(),
                kernel: kernel.to_owned(),
                found,
            });
        }
        return Ok(ModuleTree::open_release(&root.join(release))?);
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if name != release {
        return Err(KernelError::ModulesForOtherRelease {
            modules: dir.to_owned(),
            found: name,
            kernel: kernel.to_owned(),
            release: release.to_owned(),
        });
    }
    Ok(ModuleTree::open_release(dir)?)
}

/// A build tree: its bzImage and .config, and (when it builds modules)
/// its modules installed by its own `make modules_install` into the cache.
fn find_tree(tree: &Path, kernels: &Path) -> Result<Found, KernelError> {
    let image = tree.join("arch/x86/boot/bzImage");
    let config_path = tree.join(".config");
    if !image.is_file() {
        return Err(KernelError::TreeWithoutImage(tree.to_owned()));
    }
    let mut found = find_bzimage(&image, None)?;
    found.config = KernelConfig::read(&config_path)?;
    found.config_text = std::fs::read(&config_path).map_err(io_err(&config_path))?;
    if found.config.value("MODULES") != Some("y") {
        return Ok(found);
    }
    let mut h = Sha256::new();
    sha256_file(&image, &mut h)?;
    h.update(&found.config_text);
    // A module rebuilt since the last install (bzImage and .config the
    // same, as after touching one module's source) is installed again.
    built_modules_state(tree, &mut h);
    let dest = kernels.join(format!("tree-{}", hex::encode(&h.finalize()[..12])));
    let done = dest.join(".installed");
    if !done.is_file() {
        remove_installs_of(tree, kernels);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest).map_err(io_err(&dest))?;
        let out = Command::new("make")
            .arg("-C")
            .arg(tree)
            .arg("modules_install")
            .arg(format!("INSTALL_MOD_PATH={}", dest.display()))
            .arg("INSTALL_MOD_STRIP=1")
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| KernelError::Spawn {
                program: "make",
                kernel: tree.to_owned(),
                source,
            })?;
        if !out.status.success() {
            return Err(KernelError::ModulesInstall {
                tree: tree.to_owned(),
                dest,
                output: crate::process::output_tail(&out, 20),
            });
        }
        let record = tree.as_os_str().as_encoded_bytes();
        std::fs::write(&done, record).map_err(io_err(&done))?;
    }
    found.modules = Some(open_modules(&dest, &image, &found.bz.release)?);
    found.built = build_against_tree(tree, &dest, &found.bz.release);
    Ok(found)
}

/// Each module the tree has built (its `modules.order`) by path, size and
/// modification time: what a `make` that rebuilds a module changes.
fn built_modules_state(tree: &Path, h: &mut Sha256) {
    let order = std::fs::read_to_string(tree.join("modules.order")).unwrap_or_default();
    for line in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ko = match line.strip_suffix(".o") {
            Some(stem) => format!("{stem}.ko"),
            None => line.to_owned(),
        };
        h.update(ko.as_bytes());
        if let Ok(m) = std::fs::metadata(tree.join(&ko)) {
            h.update(m.len().to_le_bytes());
            let since = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            if let Some(d) = since {
                h.update(d.as_nanos().to_le_bytes());
            }
        }
        h.update([0]);
    }
}

/// Removes the earlier modules_install copies of `tree` (their
/// `.installed` names it): its kernel entries already hold the modules
/// they boot, and a rebuild loop would otherwise keep one per build.
fn remove_installs_of(tree: &Path, kernels: &Path) {
    let Ok(dir) = std::fs::read_dir(kernels) else {
        return;
    };
    let record = tree.as_os_str().as_encoded_bytes();
    for e in dir.filter_map(Result::ok) {
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with("tree-")
            && std::fs::read(path.join(".installed")).is_ok_and(|r| r == record)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The recipe's out-of-tree modules (seq_page_faults), built against the
/// tree with `make -C <tree> M=…` once per installed-modules entry, so a
/// user's kernel loads them as the image's kernel does. A module that does
/// not build is left out, saying why; the suites that need it skip.
fn build_against_tree(tree: &Path, dest: &Path, release: &str) -> Vec<modules::ImageModule> {
    let recipe = Recipe::embedded();
    let mut built = Vec::new();
    for name in &recipe.built_modules {
        let cached = dest.join("built").join(format!("{name}.ko"));
        if let Ok(bytes) = std::fs::read(&cached) {
            built.push(modules::ImageModule {
                name: name.clone(),
                rel_path: format!("{}/{name}.ko", kmod::EXTRA_DIR),
                bytes,
                depends: Vec::new(),
            });
            continue;
        }
        let result = kmod::source(name)
            .and_then(|src| kmod::build(src, tree, release, &dest.join("built-work")));
        let _ = std::fs::remove_dir_all(dest.join("built-work"));
        match result {
            Ok(b) => {
                let _ = std::fs::create_dir_all(dest.join("built"));
                if let Err(e) = std::fs::write(&cached, &b.module.bytes) {
                    tracing::warn!("cannot cache {}: {e}", cached.display());
                }
                built.push(b.module);
            }
            Err(e) => {
                tracing::warn!(
                    "module {name} does not build against {}; suites that need it skip: {}",
                    tree.display(),
                    crate::error_chain::error_chain(&e)
                )
            }
        }
    }
    built
}

/// The modules layer of `found`: the recipe's module lists resolved in its
/// tree (those it has as modules, with their dependencies), modules.dep,
/// and the /init lists of what to load, which replace the image's.
struct Layer {
    files: BTreeMap<String, Source>,
    modules: Vec<String>,
    absent: Vec<String>,
}

fn modules_layer(found: &Found, recipe: &Recipe) -> Result<Layer, KernelError> {
    let mut files = BTreeMap::new();
    let Some(tree) = &found.modules else {
        // No modules: every option the boot needs must be built in.
        let modular: Vec<String> = OPTIONS
            .iter()
            .filter(|o| o.need == Need::Required && found.config.value(o.name) == Some("m"))
            .map(|o| o.name.to_owned())
            .collect();
        if !modular.is_empty() {
            return Err(KernelError::ModulesNeeded {
                kernel: found.image.clone(),
                release: found.bz.release.clone(),
                options: modular,
            });
        }
        for list in ["early-modules", "modules", "late-modules"] {
            files.insert(
                format!("/etc/cxl-lab/{list}"),
                Source::Bytes(Vec::new(), 0o644),
            );
        }
        return Ok(Layer {
            files,
            modules: Vec::new(),
            absent: Vec::new(),
        });
    };
    let all: Vec<&String> = recipe
        .early_modules
        .iter()
        .chain(&recipe.boot_modules)
        .chain(&recipe.late_modules)
        .chain(&recipe.extra_modules)
        .collect();
    let absent: Vec<String> = all
        .iter()
        .map(|m| modules::canonical(m))
        .filter(|m| !tree.has_module(m) && !tree.is_builtin(m))
        .collect();
    let present: Vec<String> = all
        .iter()
        .map(|m| modules::canonical(m))
        .filter(|m| tree.has_module(m))
        .collect();
    let mut mods = tree.closure(&present)?;
    mods.extend(found.built.iter().cloned());
    let base = format!("/lib/modules/{}", tree.kernel_release);
    // modules.dep from each module's own `depends` (what busybox modprobe
    // reads), and depmod's other indexes beside it.
    files.insert(
        format!("{base}/modules.dep"),
        Source::Bytes(modules::modules_dep(&mods).into_bytes(), 0o644),
    );
    match module_indexes(tree, &mods) {
        Ok(indexes) => {
            for (name, bytes) in indexes {
                files.insert(format!("{base}/{name}"), Source::Bytes(bytes, 0o644));
            }
        }
        // libkmod (daxctl) then cannot tell a built-in driver from a
        // missing one.
        Err(why) => tracing::warn!("no module indexes in the kernel's layer: {why}"),
    }
    let listed = |list: &[String]| -> Vec<u8> {
        let names: Vec<String> = list
            .iter()
            .map(|m| modules::canonical(m))
            .filter(|m| mods.iter().any(|x| &x.name == m))
            .collect();
        if names.is_empty() {
            Vec::new()
        } else {
            format!("{}\n", names.join("\n")).into_bytes()
        }
    };
    files.insert(
        "/etc/cxl-lab/early-modules".into(),
        Source::Bytes(listed(&recipe.early_modules), 0o644),
    );
    files.insert(
        "/etc/cxl-lab/modules".into(),
        Source::Bytes(listed(&recipe.boot_modules), 0o644),
    );
    files.insert(
        "/etc/cxl-lab/late-modules".into(),
        Source::Bytes(listed(&recipe.late_modules), 0o644),
    );
    let names = mods.iter().map(|m| m.name.clone()).collect();
    for m in mods {
        files.insert(
            format!("{base}/{}", m.rel_path),
            Source::Bytes(m.bytes, 0o644),
        );
    }
    Ok(Layer {
        files,
        modules: names,
        absent,
    })
}

/// The module indexes of the layer's modules but modules.dep, made by the
/// host's `depmod` in a scratch tree: the `.bin` indexes libkmod reads (daxctl loads a dax mode's driver
/// through it), with `modules.builtin` so that a driver built in (`=y`)
/// is known as such rather than missing: without it, `daxctl
/// reconfigure-device` failed with "insert failure: -2" on a kernel with
/// device_dax built in.
fn module_indexes(
    tree: &ModuleTree,
    mods: &[modules::ImageModule],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let rel = &tree.kernel_release;
    let dir = scratch.path().join("lib/modules").join(rel);
    for m in mods {
        let p = dir.join(&m.rel_path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&p, &m.bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if tree.dir.join(f).is_file() {
            std::fs::copy(tree.dir.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
    }
    let out = Command::new("depmod")
        .arg("-b")
        .arg(scratch.path())
        .arg(rel)
        .output()
        .map_err(|e| {
            format!("cannot run depmod (the kmod package; ci/install-deps installs it): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "depmod failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut indexes = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && name != "modules.dep" && e.path().is_file() {
            let bytes = std::fs::read(e.path()).map_err(|e| format!("{name}: {e}"))?;
            indexes.push((name, bytes));
        }
    }
    indexes.sort();
    Ok(indexes)
}

/// Writes `found` as a cache entry (unless one with the same content is
/// there) and returns its directory and record. `key` names the entry of
/// a .deb (keyed by the package's bytes); others are keyed by the hash of
/// the image, the config and the layer.
fn store(
    found: Found,
    kind: KernelKind,
    kernels: &Path,
    recipe: &Recipe,
    key: Option<&str>,
) -> Result<(PathBuf, Entry), KernelError> {
    found.config.check_boot()?;
    let layer = modules_layer(&found, recipe)?;
    let key = match key {
        Some(k) => k.to_owned(),
        None => {
            let mut h = Sha256::new();
            sha256_file(&found.image, &mut h)?;
            h.update(&found.config_text);
            for (path, src) in &layer.files {
                h.update(path.as_bytes());
                if let Source::Bytes(b, _) = src {
                    h.update(b);
                }
                h.update([0]);
            }
            hex::encode(&h.finalize()[..12])
        }
    };
    let dir = kernels.join(&key);
    if let Some(e) = load_entry(&dir) {
        return Ok((dir, e));
    }
    let tmp = kernels.join(format!("{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let vmlinuz = tmp.join("vmlinuz");
    std::fs::copy(&found.image, &vmlinuz).map_err(io_err(&vmlinuz))?;
    let config = tmp.join("config");
    std::fs::write(&config, &found.config_text).map_err(io_err(&config))?;
    image::write_initramfs(&layer.files, &tmp.join("modules.lz4"))
        .map_err(|e| KernelError::Layer(Box::new(e)))?;
    let entry = Entry {
        release: found.bz.release.clone(),
        version: found.bz.version.clone(),
        kind,
        modules: layer.modules,
        absent_modules: layer.absent,
        built_modules: found.built.iter().map(|m| m.name.clone()).collect(),
    };
    let record = tmp.join("kernel.json");
    std::fs::write(
        &record,
        serde_json::to_vec_pretty(&entry).expect("the entry serialises"),
    )
    .map_err(io_err(&record))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok((dir, entry))
}

/// `out` = the files of `parts` one after another (written beside it,
/// then renamed, so a reader never sees half of it).
fn concatenate(parts: &[&Path], out: &Path) -> Result<(), KernelError> {
    let tmp = out.with_extension("tmp");
    let mut w = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    for p in parts {
        let mut r = std::fs::File::open(p).map_err(io_err(p))?;
        std::io::copy(&mut r, &mut w).map_err(io_err(&tmp))?;
    }
    w.flush().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_err(out))
}

#[cfg(test)]
mod tests;
