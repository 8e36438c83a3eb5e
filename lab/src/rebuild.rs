//! The new kernel of the rebuild loop (`lab bench rebuild`): a kernel
//! tree's source touched and its `make` run, or, with no compiler, a
//! stand-in made from the image's kernel package; and the scratch image
//! cache the bench works in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::image::debs::{self, DebError};
use crate::image::lock::PackageLock;
use crate::image::modules::{ModuleError, ModuleTree};
use crate::image::Manifest;

/// The file `--touch` defaults to: the source of `kmem`, a module every
/// lab loads.
pub const DEFAULT_TOUCH: &str = "drivers/dax/kmem.c";

/// Errors making the rebuild loop's kernel or the bench's scratch cache.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("lab bench rebuild --kernel takes a kernel build tree (it runs the tree's make), but {0} is not one; without --kernel it makes a stand-in kernel from the image's.")]
    NotATree(PathBuf),
    #[error("--touch {file} is not a file of the kernel tree {tree}; give the source file of a module the lab loads, relative to the tree (default {DEFAULT_TOUCH}).")]
    NoSuchSource { file: PathBuf, tree: PathBuf },
    #[error("`make -C {tree} -j{jobs}` failed:\n{output}")]
    Make {
        tree: PathBuf,
        jobs: usize,
        output: String,
    },
    #[error("Cannot run {program}; is it installed? (run ci/install-deps)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The image's kernel package {package} {version} is not in {dir}, so no stand-in kernel can be made from it; run `lab image build` first.")]
    NoKernelPackage {
        package: String,
        version: String,
        dir: PathBuf,
    },
    #[error("Unpacking the kernel package {path} failed.")]
    Unpack {
        path: PathBuf,
        #[source]
        source: DebError,
    },
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("Cannot use {path} for the bench.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RebuildError + '_ {
    move |source| RebuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A scratch image cache inside `cache` (same disk), whose `debs` is the
/// user's download cache: returned with how many of `lock`'s packages
/// were already there.
pub fn scratch_cache(
    cache: &Path,
    lock: &PackageLock,
) -> Result<(tempfile::TempDir, usize), RebuildError> {
    let debs_dir = cache.join("debs");
    std::fs::create_dir_all(&debs_dir).map_err(io_err(&debs_dir))?;
    let reused = lock.packages.len() - debs::not_cached(&debs_dir, &lock.packages).len();
    let scratch = tempfile::Builder::new()
        .prefix("bench-rebuild-")
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    let link = scratch.path().join("debs");
    std::os::unix::fs::symlink(&debs_dir, &link).map_err(io_err(&link))?;
    Ok((scratch, reused))
}

/// Sets `file`'s modification time to now, as an editor's save does.
pub fn touch(tree: &Path, file: &Path) -> Result<(), RebuildError> {
    let path = tree.join(file);
    if !path.is_file() {
        return Err(RebuildError::NoSuchSource {
            file: file.to_owned(),
            tree: tree.to_owned(),
        });
    }
    std::fs::File::options()
        .append(true)
        .open(&path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(io_err(&path))
}

/// Runs the tree's `make -jN` (its default target: bzImage and modules on
/// x86), returning its seconds.
pub fn make(tree: &Path, jobs: usize) -> Result<f64, RebuildError> {
    let t = Instant::now();
    let out = Command::new("make")
        .arg("-C")
        .arg(tree)
        .arg(format!("-j{jobs}"))
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| RebuildError::Spawn {
            program: "make".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(RebuildError::Make {
            tree: tree.to_owned(),
            jobs,
            output: crate::process::output_tail(&out, 20),
        });
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The stand-in kernel, as `lab up --kernel` takes it.
#[derive(Debug, Clone)]
pub struct StandIn {
    /// `boot/vmlinuz-<release>` (its `config-<release>` beside it).
    pub kernel: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
    /// What makes it a kernel the lab has not seen.
    pub changed: String,
    /// What it was made from.
    pub made_from: String,
}

/// The stand-in for "a new build" that needs no compiler: the image's
/// kernel package (found in `deb_dir`) unpacked into `dir` (its vmlinuz
/// and config in `boot/`, its modules in `lib/modules/<release>`, as `make
/// install modules_install` would leave them). It is new to the lab
/// because the bench runs in a scratch cache: rewriting a module file
/// would not change it further, as the modules layer holds modules
/// decompressed.
pub fn stand_in(image: &Manifest, deb_dir: &Path, dir: &Path) -> Result<StandIn, RebuildError> {
    let m = image;
    let deb = debs::cached_deb(deb_dir, &m.kernel_package, &m.kernel_version).ok_or_else(|| {
        RebuildError::NoKernelPackage {
            package: m.kernel_package.clone(),
            version: m.kernel_version.clone(),
            dir: deb_dir.to_owned(),
        }
    })?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    debs::extract(&deb, dir).map_err(|source| RebuildError::Unpack {
        path: deb.clone(),
        source,
    })?;
    let kernel = dir
        .join("boot")
        .join(format!("vmlinuz-{}", m.kernel_release));
    let modules = dir.join("lib/modules").join(&m.kernel_release);
    // Checked as `lab up --kernel` will read it.
    ModuleTree::open_release(&modules)?;
    Ok(StandIn {
        changed: "nothing: the image's kernel, new to the bench's scratch cache".into(),
        made_from: format!("{} {} unpacked", m.kernel_package, m.kernel_version),
        kernel,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn touch_makes_the_source_newer_and_names_a_missing_one() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("drivers/dax/kmem.c");
        std::fs::create_dir_all(src.parent().unwrap()).unwrap();
        std::fs::write(&src, "int x;\n").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .append(true)
            .open(&src)
            .unwrap()
            .set_modified(old)
            .unwrap();
        touch(d.path(), Path::new(DEFAULT_TOUCH)).unwrap();
        let now = std::fs::metadata(&src).unwrap().modified().unwrap();
        assert!(now > old + Duration::from_secs(3000));
        assert_eq!(std::fs::read(&src).unwrap(), b"int x;\n", "content kept");

        let e = touch(d.path(), Path::new("drivers/dax/none.c")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--touch drivers/dax/none.c is not a file of the kernel tree {}; give the source file of a module the lab loads, relative to the tree (default drivers/dax/kmem.c).",
                d.path().display()
            )
        );
    }

    #[test]
    fn make_runs_the_tree_s_make_with_jobs_and_reports_its_failure() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("Makefile"),
            "all:\n\techo $(MAKEFLAGS) > made\n",
        )
        .unwrap();
        let s = make(d.path(), 3).unwrap();
        assert!(s >= 0.0);
        let made = std::fs::read_to_string(d.path().join("made")).unwrap();
        assert!(made.contains("-j3") || made.contains("j3"), "{made}");

        std::fs::write(
            d.path().join("Makefile"),
            "all:\n\t@echo drivers/dax/kmem.c:1: error: broken\n\t@false\n",
        )
        .unwrap();
        let e = make(d.path(), 2).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("`make -C {} -j2` failed:", d.path().display())),
            "{e}"
        );
        assert!(e.contains("kmem.c:1: error: broken"), "{e}");
    }

    #[test]
    fn the_scratch_cache_shares_the_downloads_and_goes_without_them() {
        let cache = tempfile::tempdir().unwrap();
        let lock = PackageLock::embedded().unwrap();
        let (name, version) = lock.packages.iter().next().unwrap();
        let debs_dir = cache.path().join("debs");
        std::fs::create_dir_all(&debs_dir).unwrap();
        let deb = debs_dir.join(format!("{name}_{}_amd64.deb", version.replace(':', "%3a")));
        std::fs::write(&deb, b"deb").unwrap();
        let (scratch, reused) = scratch_cache(cache.path(), &lock).unwrap();
        assert_eq!(reused, 1);
        let path = scratch.path().to_owned();
        assert!(path.starts_with(cache.path()));
        assert!(debs::cached_deb(&path.join("debs"), name, version).is_some());
        std::fs::create_dir_all(path.join("images/k")).unwrap();
        scratch.close().unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(&deb).unwrap(), b"deb", "the download kept");
    }
}
