//! The guest image: Debian's 6.12 kernel and an lz4-compressed newc
//! initramfs with busybox, the CXL/DAX modules, qemu-ga, ndctl, fio and the
//! workspace's guest tools. Built from `images/recipe.toml` with exactly
//! the package versions of `images/packages.lock`, cached under the cache
//! directory keyed by a hash of the recipe, the lock and every input.

pub mod cpio;
pub mod debs;
pub mod elf;
pub mod key_memo;
pub mod kmod;
pub mod lock;
pub mod modules;
pub mod recipe;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::{Event, Events, Step};
use debs::DebError;
use elf::ElfError;
use kmod::KmodError;
use lock::{LockDiff, LockError, PackageLock, UpdatePolicy};
use modules::ModuleError;
use recipe::Recipe;

/// Bump when the way images are assembled changes.
const BUILDER_VERSION: &str = "4";

/// Errors building the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("apt knows no version of {}; check the names in images/recipe.toml (or run `apt-get update`).", .0.join(", "))]
    UnknownPackages(Vec<String>),
    #[error(
        "Cannot read the package lock {path}; give the lock of the source tree with `--lock PATH`."
    )]
    ReadLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kmod(#[from] KmodError),
    #[error("Guest tool {name} is not built in {dir}; run `cargo build --workspace` first (or set CXL_LAB_TOOLS_DIR).")]
    MissingTool { name: String, dir: PathBuf },
    #[error("The kernel package has no /boot/vmlinuz-*.")]
    NoKernelImage,
    #[error("The kernel package has no /boot/config-*; the lab checks the kernel's options before boot.")]
    NoKernelConfig,
    #[error("Cannot write {path}.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lz4 failed while compressing the initramfs; is lz4 installed? (run ci/install-deps)")]
    Compress(#[source] std::io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where and how to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub cache_dir: PathBuf,
    pub tools_dir: PathBuf,
    /// Rebuild even when a cached image matches.
    pub force: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            cache_dir: crate::paths::cache_dir(),
            tools_dir: crate::paths::tools_dir(),
            force: false,
        }
    }
}

/// What an image holds, saved beside it as manifest.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub key: String,
    pub kernel_package: String,
    /// The kernel package's Debian version (as pinned).
    pub kernel_version: String,
    pub kernel_release: String,
    pub packages: BTreeMap<String, String>,
    pub modules: Vec<String>,
    pub boot_modules: Vec<String>,
    /// Out-of-tree modules built against this kernel's headers.
    #[serde(default)]
    pub built_modules: Vec<BuiltModuleInfo>,
    pub guest_tools: Vec<String>,
    /// Documented program names made symlinks to guest tools.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Libraries served from `extras/` over virtio-9p.
    pub extras: Vec<String>,
    pub files: usize,
    pub initrd_bytes: u64,
}

/// An out-of-tree module of the image and the compilers that made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuiltModuleInfo {
    pub name: String,
    /// Under `/lib/modules/<release>/`.
    pub path: String,
    pub compiler: String,
    pub kernel_compiler: String,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    /// The kernel's config (the package's /boot/config-*).
    pub config: PathBuf,
    pub initrd: PathBuf,
    /// Shared read-only with the guest over virtio-9p.
    pub extras: PathBuf,
    pub manifest: Manifest,
    /// True when it came from the cache.
    pub cached: bool,
}

/// A guest tool found in the tools directory.
struct Tool {
    name: String,
    host: PathBuf,
    guest: String,
}

fn find_tools(recipe: &Recipe, dir: &Path) -> Result<Vec<Tool>, ImageError> {
    let guest_path = |n: &str| {
        if n.ends_with(".so") {
            format!("/usr/lib/cxl-lab/{n}")
        } else {
            format!("/usr/bin/{n}")
        }
    };
    let mut out = Vec::new();
    for n in &recipe.guest_tools {
        let host = dir.join(n);
        if !host.is_file() {
            return Err(ImageError::MissingTool {
                name: n.clone(),
                dir: dir.to_owned(),
            });
        }
        out.push(Tool {
            name: n.clone(),
            host,
            guest: guest_path(n),
        });
    }
    for n in &recipe.optional_guest_tools {
        let host = dir.join(n);
        if host.is_file() {
            out.push(Tool {
                name: n.clone(),
                host,
                guest: guest_path(n),
            });
        }
    }
    Ok(out)
}

fn newest_kernel_package(recipe: &Recipe) -> Result<String, ImageError> {
    debs::package_names(&recipe.kernel_package_prefix)?
        .into_iter()
        .filter_map(|p| recipe.kernel_version_of(&p).map(|v| (v, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            DebError::NoKernel {
                prefix: recipe.kernel_package_prefix.clone(),
                suffix: recipe.kernel_package_suffix.clone(),
            }
            .into()
        })
}

/// The image key: the recipe, the package lock, /init and guest tools.
fn cache_key(tools: &[Tool]) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    for part in [
        BUILDER_VERSION,
        recipe::RECIPE_TOML,
        lock::LOCK_TOML,
        recipe::INIT_SCRIPT,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (path, text) in recipe::GUEST_FILES {
        h.update(path.as_bytes());
        h.update(text.as_bytes());
        h.update([0]);
    }
    for src in kmod::SOURCES {
        for (name, text) in src.files {
            h.update(name.as_bytes());
            h.update(text.as_bytes());
            h.update([0]);
        }
    }
    for t in tools {
        h.update(t.name.as_bytes());
        h.update(std::fs::read(&t.host).map_err(io_err(&t.host))?);
    }
    Ok(hex::encode(&h.finalize()[..12]))
}

/// [`cache_key`], remembered in the cache by the identity of the tools
/// ([`key_memo`]): the same key, without reading the tools when none
/// changed since it was computed.
fn remembered_cache_key(tools: &[Tool], cache_dir: &Path) -> Result<String, ImageError> {
    let kmod_files: Vec<&[u8]> = kmod::SOURCES
        .iter()
        .flat_map(|src| src.files.iter())
        .flat_map(|(name, text)| [name.as_bytes(), text.as_bytes()])
        .collect();
    let mut parts: Vec<&[u8]> = vec![
        BUILDER_VERSION.as_bytes(),
        recipe::RECIPE_TOML.as_bytes(),
        lock::LOCK_TOML.as_bytes(),
        recipe::INIT_SCRIPT.as_bytes(),
    ];
    for (path, text) in recipe::GUEST_FILES {
        parts.extend([path.as_bytes(), text.as_bytes()]);
    }
    parts.extend(kmod_files);
    let files: Vec<(&str, &Path)> = tools
        .iter()
        .map(|t| (t.name.as_str(), t.host.as_path()))
        .collect();
    let Some(fingerprint) = key_memo::fingerprint(&parts, &files) else {
        return cache_key(tools);
    };
    let mut memo = key_memo::KeyMemo::load(&cache_dir.join("image-key-memo.json"));
    if let Some(key) = memo.get(&fingerprint) {
        return Ok(key.to_owned());
    }
    let key = cache_key(tools)?;
    memo.remember(fingerprint, key.clone());
    Ok(key)
}

/// Builds the image, or returns the cached one when nothing changed.
pub fn build(opts: &ImageOptions, events: &Events) -> Result<Image, ImageError> {
    let recipe = Recipe::embedded();
    let (tools, key) = events.step(Step::ImageResolve, "", || -> Result<_, ImageError> {
        let tools = find_tools(&recipe, &opts.tools_dir)?;
        let key = remembered_cache_key(&tools, &opts.cache_dir)?;
        Ok((tools, key))
    })?;
    let images = opts.cache_dir.join("images");
    let dir = images.join(&key);
    std::fs::create_dir_all(&images).map_err(io_err(&images))?;
    // One builder at a time per cache (tests and users may race).
    let lock_path = opts.cache_dir.join("image.lock");
    let lock_file = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| ImageError::Io {
            path: lock_path.clone(),
            source: e.into(),
        },
    )?;
    if !opts.force {
        if let Some(img) = load(&dir) {
            events.emit(Event::Skipped {
                step: Step::ImagePack,
                reason: format!("cached image {key}"),
            });
            return Ok(img);
        }
    }

    let lock = PackageLock::embedded()?;
    let deb_dir = opts.cache_dir.join("debs");
    check_lock(&recipe, &lock, &deb_dir)?;
    let kernel_package = lock.kernel.clone();
    let packages = &lock.packages;
    let deb_files = events.step(
        Step::ImageDownload,
        format!("{} pinned packages", packages.len()),
        || {
            debs::download(&deb_dir, packages, |done, total| {
                events.emit(Event::Progress {
                    step: Step::ImageDownload,
                    done,
                    total,
                })
            })
        },
    )?;

    let staging = opts.cache_dir.join("staging").join(&key);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    // The headers are for building modules on the host, not for the guest.
    let header_names = recipe.header_package_names(&kernel_package);
    let (header_debs, deb_files): (Vec<PathBuf>, Vec<PathBuf>) = deb_files
        .into_iter()
        .partition(|d| header_names.contains(&debs::name_and_version(d).0));
    events.step(Step::ImageExtract, "", || -> Result<(), ImageError> {
        let total = deb_files.len() as u64;
        for (i, deb) in deb_files.iter().enumerate() {
            debs::extract(deb, &staging)?;
            events.emit(Event::Progress {
                step: Step::ImageExtract,
                done: i as u64 + 1,
                total,
            });
        }
        Ok(())
    })?;

    let built = events.step(Step::ImageModules, recipe.built_modules.join(", "), || {
        build_modules(&recipe, &opts.cache_dir, &header_debs, &staging)
    })?;

    let tmp = images.join(format!("{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let manifest = events.step(Step::ImagePack, "", || {
        pack(
            &recipe,
            &staging,
            &tools,
            &tmp,
            &Provenance {
                key: &key,
                kernel_package: &kernel_package,
                debs_used: &deb_files,
            },
            built,
        )
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    let _ = std::fs::remove_dir_all(&staging);
    let mut img = load(&dir).ok_or_else(|| ImageError::Io {
        path: dir.clone(),
        source: std::io::Error::other("image vanished after build"),
    })?;
    img.cached = false;
    img.manifest = manifest;
    Ok(img)
}

/// Before downloading: the lock pins every package the recipe names, and
/// apt still offers every pinned version the download cache lacks. Either
/// failure names the packages, what apt offers now and the fix, rather
/// than building from other versions.
fn check_lock(recipe: &Recipe, lock: &PackageLock, deb_dir: &Path) -> Result<(), ImageError> {
    let mut roots = recipe.package_names(&lock.kernel);
    roots.extend(recipe.header_package_names(&lock.kernel));
    let uncovered = lock.uncovered(recipe, &roots);
    if !uncovered.is_empty() {
        let names: BTreeSet<String> = uncovered.iter().cloned().collect();
        let offers = debs::candidates(&names).unwrap_or_default();
        return Err(LockError::NotCovered(
            uncovered
                .into_iter()
                .map(|package| lock::Uncovered {
                    apt_offers: offers.get(&package).cloned(),
                    package,
                })
                .collect(),
        )
        .into());
    }
    let wanted = debs::not_cached(deb_dir, &lock.packages);
    if wanted.is_empty() {
        return Ok(());
    }
    let names: BTreeSet<String> = wanted.keys().cloned().collect();
    let mut gone = lock::gone(&wanted, &debs::available(&names)?);
    if gone.is_empty() {
        return Ok(());
    }
    for g in gone.iter_mut().filter(|g| g.package == lock.kernel) {
        g.instead = newest_kernel_package(recipe).ok();
    }
    Err(LockError::Gone(gone).into())
}

/// Options of `lab image update`.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// The lock file to read and write (the source tree's
    /// `images/packages.lock`).
    pub lock_path: PathBuf,
    pub policy: UpdatePolicy,
    /// Print what would change; write nothing.
    pub dry_run: bool,
}

/// What `lab image update` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    pub lock_path: PathBuf,
    pub kernel: String,
    pub kernel_version: String,
    pub packages: usize,
    pub diff: LockDiff,
    /// False for `--dry-run` or when nothing changed.
    pub written: bool,
}

/// `lab image update`: resolves the packages the recipe needs (kernel and
/// library closure) and pins them in the lock file, keeping every pin apt
/// still offers unless the policy is `Newest`.
pub fn update(opts: &UpdateOptions) -> Result<UpdateReport, ImageError> {
    let recipe = Recipe::embedded();
    let old = match std::fs::read_to_string(&opts.lock_path) {
        Ok(text) => Some(PackageLock::parse(
            &text,
            &opts.lock_path.display().to_string(),
        )?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ImageError::ReadLock {
                path: opts.lock_path.clone(),
                source,
            })
        }
    };
    let old_pins: BTreeSet<String> = old
        .iter()
        .flat_map(|o| o.packages.keys().cloned())
        .collect();
    let available = match opts.policy {
        UpdatePolicy::KeepPins => debs::available(&old_pins)?,
        UpdatePolicy::Newest => BTreeMap::new(),
    };
    let kernel = match &old {
        Some(o)
            if opts.policy == UpdatePolicy::KeepPins
                && recipe.kernel_version_of(&o.kernel).is_some()
                && available
                    .get(&o.kernel)
                    .is_some_and(|v| v.iter().any(|x| x == o.kernel_version())) =>
        {
            o.kernel.clone()
        }
        _ => newest_kernel_package(&recipe)?,
    };
    let mut wanted = debs::with_library_dependencies(&recipe.package_names(&kernel))?;
    wanted.extend(recipe.header_package_names(&kernel));
    wanted.insert(kernel.clone());
    let candidates = debs::candidates(&wanted)?;
    let new = lock::merge(
        old.as_ref(),
        &kernel,
        &wanted,
        &candidates,
        &available,
        opts.policy,
    )
    .map_err(ImageError::UnknownPackages)?;
    let diff = lock::diff(old.as_ref(), &new);
    let written = !opts.dry_run && (old.is_none() || !diff.is_empty());
    if written {
        std::fs::write(&opts.lock_path, new.to_file_text()).map_err(io_err(&opts.lock_path))?;
    }
    Ok(UpdateReport {
        lock_path: opts.lock_path.clone(),
        kernel_version: new.kernel_version().to_owned(),
        kernel: new.kernel,
        packages: new.packages.len(),
        diff,
        written,
    })
}

fn load(dir: &Path) -> Option<Image> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
    let kernel = dir.join("vmlinuz");
    let config = dir.join("config");
    let initrd = dir.join("initrd.lz4");
    let extras = dir.join("extras");
    (kernel.is_file() && config.is_file() && initrd.is_file() && extras.is_dir()).then(|| Image {
        dir: dir.to_owned(),
        kernel,
        config,
        initrd,
        extras,
        manifest,
        cached: true,
    })
}

/// Builds the recipe's out-of-tree modules against the headers of the
/// kernel release extracted in `staging`.
fn build_modules(
    recipe: &Recipe,
    cache_dir: &Path,
    header_debs: &[PathBuf],
    staging: &Path,
) -> Result<Vec<kmod::BuiltModule>, ImageError> {
    if recipe.built_modules.is_empty() {
        return Ok(Vec::new());
    }
    let sources = recipe
        .built_modules
        .iter()
        .map(|n| kmod::source(n))
        .collect::<Result<Vec<_>, _>>()?;
    let release = modules::ModuleTree::open(staging)?.kernel_release;
    let headers = kmod::extract_headers(cache_dir, &release, header_debs)?;
    let work = staging.join("kmod-build");
    sources
        .into_iter()
        .map(|s| kmod::build(s, &headers, &release, &work).map_err(ImageError::from))
        .collect()
}

/// Contents of one initramfs entry.
pub enum Source {
    Host(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
}

/// Where the guest mounts the image's extras (virtio-9p, tag below).
pub const EXTRAS_MOUNT: &str = "/extras";
pub const EXTRAS_TAG: &str = "cxl-lab-extras";

/// What an image is made from, for its manifest.
struct Provenance<'a> {
    key: &'a str,
    kernel_package: &'a str,
    debs_used: &'a [PathBuf],
}

fn pack(
    recipe: &Recipe,
    staging: &Path,
    tools: &[Tool],
    out_dir: &Path,
    from: &Provenance,
    built: Vec<kmod::BuiltModule>,
) -> Result<Manifest, ImageError> {
    let Provenance {
        key,
        kernel_package,
        debs_used,
    } = *from;
    let mut files: BTreeMap<String, Source> = BTreeMap::new();
    let missing = |p: &str| ElfError::MissingProgram { path: p.to_owned() };

    let busybox =
        elf::resolve_in(staging, "/bin/busybox").ok_or_else(|| missing("/bin/busybox"))?;
    files.insert("/bin/busybox".into(), Source::Host(busybox, 0o755));
    let mut elves: Vec<(String, PathBuf)> = Vec::new();
    for p in &recipe.programs {
        let host = elf::resolve_in(staging, p).ok_or_else(|| missing(p))?;
        elves.push((p.clone(), host.clone()));
        files.insert(p.clone(), Source::Host(host, 0o755));
    }
    let stripped = out_dir.join("stripped");
    std::fs::create_dir_all(&stripped).map_err(io_err(&stripped))?;
    for t in tools {
        elves.push((t.guest.clone(), t.host.clone()));
        // Debug builds carry megabytes of DWARF the guest never reads, and
        // every byte costs boot time under TCG.
        let small = stripped.join(&t.name);
        let ok = Command::new("strip")
            .args(["--strip-debug", "-o"])
            .arg(&small)
            .arg(&t.host)
            .status()
            .is_ok_and(|s| s.success());
        let src = if ok { small } else { t.host.clone() };
        files.insert(t.guest.clone(), Source::Host(src, 0o755));
    }
    let boot_libs = elf::library_closure(staging, &elves)?;
    for lib in &boot_libs {
        let host = elf::resolve_in(staging, lib).ok_or_else(|| missing(lib))?;
        files.insert(lib.clone(), Source::Host(host, 0o755));
    }
    // Extra programs are in the initramfs, but the libraries only they need
    // (fio's ceph, gluster and ICU: about 50 MB) are served from the image
    // directory over virtio-9p: unpacking them costs ~0.6 s of every boot
    // under TCG. The initramfs holds symlinks into the 9p mount.
    let mut extra_elves = Vec::new();
    for p in &recipe.extra_programs {
        let host = elf::resolve_in(staging, p).ok_or_else(|| missing(p))?;
        extra_elves.push((p.clone(), host.clone()));
        files.insert(p.clone(), Source::Host(host, 0o755));
    }
    let extras_dir = out_dir.join("extras");
    let mut extras = Vec::new();
    for lib in elf::library_closure(staging, &extra_elves)?.difference(&boot_libs) {
        let host = elf::resolve_in(staging, lib).ok_or_else(|| missing(lib))?;
        let dest = extras_dir.join(lib.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::copy(&host, &dest).map_err(io_err(&dest))?;
        files.insert(lib.clone(), Source::Symlink(format!("{EXTRAS_MOUNT}{lib}")));
        extras.push(lib.clone());
    }

    for t in &recipe.extra_trees {
        let host = staging.join(t.trim_start_matches('/'));
        let dest = extras_dir.join(t.trim_start_matches('/'));
        copy_tree(&host, &dest)?;
        files.insert(t.clone(), Source::Symlink(format!("{EXTRAS_MOUNT}{t}")));
        extras.push(t.clone());
    }
    let mut aliases = Vec::new();
    for (path, target) in &recipe.aliases {
        let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
        let resolved = dir.join(target).to_string_lossy().into_owned();
        if files.contains_key(&resolved) {
            files.insert(path.clone(), Source::Symlink(target.clone()));
            aliases.push(format!("{path} -> {target}"));
        }
    }

    let tree = modules::ModuleTree::open(staging)?;
    let mut all_mods = recipe.early_modules.clone();
    all_mods.extend(recipe.boot_modules.iter().cloned());
    all_mods.extend(recipe.late_modules.iter().cloned());
    all_mods.extend(recipe.extra_modules.iter().cloned());
    let mut mods = tree.closure(&all_mods)?;
    let built_modules: Vec<BuiltModuleInfo> = built
        .iter()
        .map(|b| BuiltModuleInfo {
            name: b.module.name.clone(),
            path: b.module.rel_path.clone(),
            compiler: b.compiler.clone(),
            kernel_compiler: b.kernel_compiler.clone(),
        })
        .collect();
    mods.extend(built.into_iter().map(|b| b.module));
    let mod_base = format!("/lib/modules/{}", tree.kernel_release);
    files.insert(
        format!("{mod_base}/modules.dep"),
        Source::Bytes(modules::modules_dep(&mods).into_bytes(), 0o644),
    );
    let present = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|m| modules::canonical(m))
            .filter(|m| mods.iter().any(|x| &x.name == m))
            .collect()
    };
    let early = present(&recipe.early_modules);
    let boot = present(&recipe.boot_modules);
    let late = present(&recipe.late_modules);
    let module_names: Vec<String> = mods.iter().map(|m| m.name.clone()).collect();
    for m in mods {
        files.insert(
            format!("{mod_base}/{}", m.rel_path),
            Source::Bytes(m.bytes, 0o644),
        );
    }
    files.insert(
        "/etc/cxl-lab/early-modules".into(),
        Source::Bytes(
            early
                .iter()
                .map(|m| format!("{m}\n"))
                .collect::<String>()
                .into_bytes(),
            0o644,
        ),
    );
    files.insert(
        "/etc/cxl-lab/modules".into(),
        Source::Bytes(format!("{}\n", boot.join("\n")).into_bytes(), 0o644),
    );
    files.insert(
        "/etc/cxl-lab/late-modules".into(),
        Source::Bytes(format!("{}\n", late.join("\n")).into_bytes(), 0o644),
    );
    files.insert(
        "/init".into(),
        Source::Bytes(recipe::INIT_SCRIPT.as_bytes().to_vec(), 0o755),
    );
    for (path, text) in recipe::GUEST_FILES {
        files.insert(
            (*path).into(),
            Source::Bytes(text.as_bytes().to_vec(), 0o755),
        );
    }
    // `ioriot` is the unprivileged user of the documented I/O Riot
    // procedure (its home lives on the suite's /home disk); `nobody` is
    // ioriot's own default replay user.
    files.insert(
        "/etc/passwd".into(),
        Source::Bytes(
            b"root:x:0:0:root:/root:/bin/sh\nioriot:x:1000:1000:ioriot:/home/ioriot:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
            0o644,
        ),
    );
    files.insert(
        "/etc/group".into(),
        Source::Bytes(
            b"root:x:0:\nioriot:x:1000:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    );
    // sudo for the documented procedures, which the guest runs as root:
    // root needs no password (pam_rootok), and Debian's PAM stack
    // (common-auth …, made by pam-auth-update at install) is not in the image.
    files.insert(
        "/etc/sudoers".into(),
        Source::Bytes(
            b"Defaults !fqdn, !syslog, !lecture\nroot ALL=(ALL:ALL) ALL\n".to_vec(),
            0o440,
        ),
    );
    files.insert(
        "/etc/pam.d/sudo".into(),
        Source::Bytes(
            b"auth sufficient pam_rootok.so\nauth required pam_deny.so\naccount required pam_permit.so\nsession required pam_permit.so\n".to_vec(),
            0o644,
        ),
    );

    let boot_dir = staging.join("boot");
    let in_boot = |prefix: &str| -> Result<Option<PathBuf>, ImageError> {
        Ok(std::fs::read_dir(&boot_dir)
            .map_err(io_err(&boot_dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            }))
    };
    let vmlinuz = in_boot("vmlinuz-")?.ok_or(ImageError::NoKernelImage)?;
    let kernel_out = out_dir.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kernel_out).map_err(io_err(&kernel_out))?;
    // Kept beside the kernel: `lab up` checks its options before boot.
    let config = in_boot("config-")?.ok_or(ImageError::NoKernelConfig)?;
    let config_out = out_dir.join("config");
    std::fs::copy(&config, &config_out).map_err(io_err(&config_out))?;
    // And in the guest where Debian keeps it: the documents' troubleshooting
    // lines read /boot/config-$(uname -r).
    files.insert(
        format!("/boot/config-{}", tree.kernel_release),
        Source::Host(config.clone(), 0o644),
    );

    let packages: BTreeMap<String, String> = debs_used
        .iter()
        .map(|d| debs::name_and_version(d))
        .collect();
    let mut manifest = Manifest {
        key: key.to_owned(),
        kernel_version: packages.get(kernel_package).cloned().unwrap_or_default(),
        kernel_package: kernel_package.to_owned(),
        kernel_release: tree.kernel_release.clone(),
        packages,
        modules: module_names,
        boot_modules: boot,
        built_modules,
        guest_tools: tools.iter().map(|t| t.name.clone()).collect(),
        aliases,
        extras,
        files: files.len(),
        initrd_bytes: 0,
    };
    files.insert(
        "/etc/cxl-lab/image.json".into(),
        Source::Bytes(
            serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
            0o644,
        ),
    );

    let initrd = out_dir.join("initrd.lz4");
    write_initramfs(&files, &initrd)?;
    let _ = std::fs::remove_dir_all(&stripped);
    manifest.initrd_bytes = std::fs::metadata(&initrd).map_err(io_err(&initrd))?.len();
    let mpath = out_dir.join("manifest.json");
    std::fs::write(
        &mpath,
        serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
    )
    .map_err(io_err(&mpath))?;
    Ok(manifest)
}

/// Copies a directory tree of the extracted packages (symlinks kept as
/// symlinks).
fn copy_tree(from: &Path, to: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io_err(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dest)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(io_err(&src))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io_err(&dest))?;
        } else {
            std::fs::copy(&src, &dest).map_err(io_err(&dest))?;
        }
    }
    Ok(())
}

/// Writes `files` (guest path -> contents) as an lz4 (legacy frame) newc
/// archive at `out`, with every parent directory. Archives written by it
/// may be concatenated: the kernel unpacks them in order, later files
/// replacing earlier ones.
pub fn write_initramfs(files: &BTreeMap<String, Source>, out: &Path) -> Result<(), ImageError> {
    let mut dirs: BTreeSet<String> = [
        "/bin",
        "/sbin",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/mnt",
        "/root",
        "/etc",
        "/var",
        "/lib",
        "/lib64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            if d != Path::new("/") {
                dirs.insert(d.to_string_lossy().into_owned());
            }
            p = d.parent();
        }
    }
    // lz4 (legacy frame, as the kernel wants): under TCG the guest unpacks a
    // 60 MB lz4 image in about half the time of a 40 MB zstd one (measured:
    // modules loaded at 3.6 s against 6.9 s).
    let out_file = std::fs::File::create(out).map_err(io_err(out))?;
    let mut child = Command::new("lz4")
        .args(["-q", "-l", "-1", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(out_file)
        .spawn()
        .map_err(ImageError::Compress)?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut w = cpio::CpioWriter::new(std::io::BufWriter::with_capacity(1 << 20, stdin));
    let write = || -> std::io::Result<()> {
        // BTreeSet order puts every parent before its children.
        for d in &dirs {
            w.dir(d)?;
        }
        for (path, src) in files {
            match src {
                Source::Host(p, perm) => w.file(path, *perm, &std::fs::read(p)?)?,
                Source::Bytes(b, perm) => w.file(path, *perm, b)?,
                Source::Symlink(target) => w.symlink(path, target)?,
            }
        }
        w.finish()?.flush()
    };
    write().map_err(io_err(out))?;
    let status = child.wait().map_err(ImageError::Compress)?;
    if !status.success() {
        return Err(ImageError::Compress(std::io::Error::other(format!(
            "lz4 exited with {status}"
        ))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remembered_key_is_the_computed_one_until_a_tool_changes() {
        let dir = tempfile::tempdir().unwrap();
        let tool = |name: &str, text: &[u8]| {
            let host = dir.path().join(name);
            std::fs::write(&host, text).unwrap();
            Tool {
                name: name.into(),
                guest: format!("/usr/bin/{name}"),
                host,
            }
        };
        let tools = vec![tool("a", b"one"), tool("b", b"two")];
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let key = cache_key(&tools).unwrap();
        assert_eq!(remembered_cache_key(&tools, &cache).unwrap(), key);
        assert!(cache.join("image-key-memo.json").is_file());
        assert_eq!(remembered_cache_key(&tools, &cache).unwrap(), key);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let tools = vec![tool("a", b"one"), tool("b", b"TWO")];
        let changed = cache_key(&tools).unwrap();
        assert_ne!(changed, key);
        assert_eq!(remembered_cache_key(&tools, &cache).unwrap(), changed);
    }
}
