//! The errors of preparing a user's kernel (`lab up --kernel`).

use std::path::{Path, PathBuf};

use super::bzimage::BzImageError;
use crate::image::modules::ModuleError;
use crate::image::ImageError;
use crate::kconfig::KconfigError;

/// Errors preparing a user's kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("The kernel {0} does not exist; give `--kernel` a .deb, a bzImage/vmlinuz or a kernel build tree.")]
    NotFound(PathBuf),
    #[error(transparent)]
    Image(#[from] BzImageError),
    #[error("{0} is a kernel build tree without arch/x86/boot/bzImage; build it first (`make bzImage modules`), then give the tree again.")]
    TreeWithoutImage(PathBuf),
    #[error("{0} is a directory but not a kernel build tree (no arch/x86/boot/bzImage, Makefile or .config); give `--kernel` a .deb, a bzImage/vmlinuz or a kernel build tree.")]
    NotATree(PathBuf),
    #[error("{path} is a Debian package but not a kernel package: it has no /boot/vmlinuz-*. Give a linux-image-* package.")]
    NotAKernelPackage { path: PathBuf },
    #[error(
        "--modules {0} names no kernel; give the kernel with it (`--kernel PATH --modules DIR`)."
    )]
    ModulesWithoutKernel(PathBuf),
    #[error("--modules is for a bzImage/vmlinuz; {kernel} brings its own modules ({what}). Leave --modules out.")]
    ModulesNotForThis { kernel: PathBuf, what: &'static str },
    #[error("The modules in {modules} are for kernel release {found}, but the kernel {kernel} is release {release} (its setup header says so); give the lib/modules/{release} directory of this kernel.")]
    ModulesForOtherRelease {
        modules: PathBuf,
        found: String,
        kernel: PathBuf,
        release: String,
    },
    #[error("{modules} has no modules for release {release} (lib/modules holds {}); give the lib/modules/{release} directory of the kernel {kernel}.", if found.is_empty() { "nothing".to_owned() } else { found.join(", ") })]
    NoModulesForRelease {
        modules: PathBuf,
        release: String,
        kernel: PathBuf,
        found: Vec<String>,
    },
    #[error("The kernel {kernel} builds options the lab needs as modules (=m), but no modules were given:\n{}\nPass `--modules DIR` (its lib/modules/{release} tree), or build them in (=y).", .options.iter().map(|o| format!("  CONFIG_{o}=m")).collect::<Vec<_>>().join("\n"))]
    ModulesNeeded {
        kernel: PathBuf,
        release: String,
        options: Vec<String>,
    },
    #[error("Found no config of the kernel {kernel}: none beside it ({looked}) and none embedded (CONFIG_IKCONFIG). Put its config beside it as config-{release}, or give its build tree or .deb instead.")]
    NoConfig {
        kernel: PathBuf,
        release: String,
        looked: String,
    },
    #[error(transparent)]
    Config(#[from] KconfigError),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("`make -C {tree} modules_install INSTALL_MOD_PATH={dest} INSTALL_MOD_STRIP=1` failed:\n{output}\nCheck that the tree's modules are built (`make modules`).")]
    ModulesInstall {
        tree: PathBuf,
        dest: PathBuf,
        output: String,
    },
    #[error(
        "Cannot run {program} for the kernel {kernel}; is it installed? (run ci/install-deps)"
    )]
    Spawn {
        program: &'static str,
        kernel: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Unpacking the kernel package {path} failed.")]
    Unpack {
        path: PathBuf,
        #[source]
        source: crate::image::debs::DebError,
    },
    #[error("Writing the kernel's modules layer failed.")]
    Layer(#[source] Box<ImageError>),
    #[error("Cannot use {path} for the kernel.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_owned(),
        source,
    }
}
