//! What `--kernel PATH [--modules DIR]` names: a Debian kernel package, a
//! bzImage/vmlinuz (with or without a modules tree) or a kernel build tree,
//! told apart by what is there, not by the name.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::bzimage::BzImageError;
use super::error::KernelError;

/// A user's kernel, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelInput {
    /// A Debian kernel package (`linux-image-*.deb`).
    Deb(PathBuf),
    /// A bzImage/vmlinuz file, and its `lib/modules/<release>` tree (none
    /// when the drivers the lab needs are built in).
    Bzimage {
        image: PathBuf,
        modules: Option<PathBuf>,
    },
    /// A kernel build tree (`arch/x86/boot/bzImage`, `.config`).
    Tree(PathBuf),
}

/// A `.deb` is an `ar` archive.
const AR_MAGIC: &[u8] = b"!<arch>\n";

impl KernelInput {
    /// Classifies `path` (and `modules`), absolute; the kernel's own
    /// checks (its header, release and config) come when it is prepared.
    pub fn detect(path: &Path, modules: Option<&Path>) -> Result<KernelInput, KernelError> {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let path = abs(path);
        let modules = modules.map(abs);
        if !path.exists() {
            return Err(KernelError::NotFound(path));
        }
        if path.is_dir() {
            let looks_like_tree = ["Makefile", "Kconfig", ".config"]
                .iter()
                .any(|f| path.join(f).is_file());
            if modules.is_some() {
                return Err(KernelError::ModulesNotForThis {
                    kernel: path,
                    what: "a build tree installs its own with `make modules_install`",
                });
            }
            return if path.join("arch/x86/boot/bzImage").is_file() {
                Ok(KernelInput::Tree(path))
            } else if looks_like_tree {
                Err(KernelError::TreeWithoutImage(path))
            } else {
                Err(KernelError::NotATree(path))
            };
        }
        let mut head = [0u8; 8];
        let n = std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|source| KernelError::Io {
                path: path.clone(),
                source,
            })?;
        if &head[..n] == AR_MAGIC {
            if modules.is_some() {
                return Err(KernelError::ModulesNotForThis {
                    kernel: path,
                    what: "a kernel package carries lib/modules/<release>",
                });
            }
            return Ok(KernelInput::Deb(path));
        }
        if n == 0 {
            return Err(BzImageError::NotAKernel { path }.into());
        }
        Ok(KernelInput::Bzimage {
            image: path,
            modules,
        })
    }

    /// The kernel path and the modules path, as given (absolute).
    pub fn paths(&self) -> (PathBuf, Option<PathBuf>) {
        match self {
            KernelInput::Deb(p) | KernelInput::Tree(p) => (p.clone(), None),
            KernelInput::Bzimage { image, modules } => (image.clone(), modules.clone()),
        }
    }
}
