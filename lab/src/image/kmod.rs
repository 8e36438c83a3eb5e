//! Out-of-tree kernel modules built against the guest kernel while the image
//! is built: the Debian headers of the exact kernel release the image took
//! (`linux-headers-<release>` and the `-common` and `linux-kbuild-*`
//! packages it depends on) are downloaded and extracted into the cache, and
//! `make -C <headers> M=<module> modules` runs with the host's compiler of
//! the version the kernel was built with.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::debs::{self, DebError};
use super::modules::ImageModule;

/// A module whose source is in the repository, embedded in `lab` so that a
/// change to it changes the image key.
pub struct ModuleSource {
    pub name: &'static str,
    /// Where it lives in the repository (for messages).
    pub repo_dir: &'static str,
    /// File name and contents.
    pub files: &'static [(&'static str, &'static str)],
}

/// The modules `built_modules` in `images/recipe.toml` may name.
pub const SOURCES: &[ModuleSource] = &[ModuleSource {
    name: "seq_page_faults",
    repo_dir: "guest-tools/seq-page-faults-kmod",
    files: &[
        (
            "Kbuild",
            include_str!("../../../guest-tools/seq-page-faults-kmod/Kbuild"),
        ),
        (
            "seq_page_faults.c",
            include_str!("../../../guest-tools/seq-page-faults-kmod/seq_page_faults.c"),
        ),
    ],
}];

/// Where built modules go under `/lib/modules/<release>/`.
pub const EXTRA_DIR: &str = "extra";

/// Errors building a module.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error(
        "images/recipe.toml names built module {0}, which has no source in lab/src/image/kmod.rs."
    )]
    UnknownSource(String),
    #[error("The kernel headers of release {release} could not be extracted.")]
    Headers {
        release: String,
        #[source]
        source: DebError,
    },
    #[error("The headers in {0} have no CONFIG_CC_VERSION_TEXT in their .config.")]
    NoCompilerText(PathBuf),
    #[error("The guest kernel was built with `{kernel_compiler}`, but {program} is not on this host's PATH; install it (ci/install-deps installs gcc-12 and make) and build the image again.")]
    NoCompiler {
        kernel_compiler: String,
        program: String,
    },
    #[error("The host's {program} is `{host}`, but the guest kernel was built with `{kernel}`: a module built by another major version may not load. Install the kernel's compiler (ci/install-deps).")]
    CompilerMismatch {
        program: String,
        host: String,
        kernel: String,
    },
    #[error("Cannot run make to build module {module}; is make installed? (run ci/install-deps)")]
    Spawn {
        module: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Building kernel module {module} ({repo_dir}) against the headers of {release} failed:\n{output}")]
    Build {
        module: String,
        repo_dir: String,
        release: String,
        output: String,
    },
    #[error("Cannot prepare {path} for the module build.")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KmodError + '_ {
    move |source| KmodError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A module built for the image, and the compilers involved.
pub struct BuiltModule {
    pub module: ImageModule,
    /// The host compiler's `--version` first line.
    pub compiler: String,
    /// The headers' CONFIG_CC_VERSION_TEXT.
    pub kernel_compiler: String,
}

/// The headers of `release`, extracted once into `<cache>/kernel-headers/`
/// from the given `.deb`s; returns the directory `make -C` wants.
pub fn extract_headers(
    cache: &Path,
    release: &str,
    debs_: &[PathBuf],
) -> Result<PathBuf, KmodError> {
    let root = cache.join("kernel-headers").join(release);
    let build_dir = root.join(format!("usr/src/linux-headers-{release}"));
    let done = root.join(".complete");
    if done.is_file() {
        return Ok(build_dir);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    for d in debs_ {
        debs::extract(d, &root).map_err(|source| KmodError::Headers {
            release: release.to_owned(),
            source,
        })?;
    }
    // Debian's Makefile includes the -common tree by its absolute path
    // under /usr/src; the symlinks between the packages are relative.
    let makefile = build_dir.join("Makefile");
    let text = std::fs::read_to_string(&makefile).map_err(io_err(&makefile))?;
    let prefix = format!("{}/usr/src/", root.display());
    std::fs::write(&makefile, relocate_makefile(&text, &prefix)).map_err(io_err(&makefile))?;
    std::fs::write(&done, b"").map_err(io_err(&done))?;
    Ok(build_dir)
}

/// Points the headers Makefile's `include /usr/src/…` lines at `prefix`.
fn relocate_makefile(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {prefix}{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

/// The compiler the kernel was built with: CONFIG_CC_VERSION_TEXT, e.g.
/// `x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`.
fn kernel_compiler(headers: &Path) -> Result<String, KmodError> {
    let config = headers.join(".config");
    let text = std::fs::read_to_string(&config).map_err(io_err(&config))?;
    cc_version_text(&text).ok_or_else(|| KmodError::NoCompilerText(headers.to_owned()))
}

fn cc_version_text(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        l.strip_prefix("CONFIG_CC_VERSION_TEXT=")
            .map(|v| v.trim_matches('"').to_owned())
    })
}

/// The version (last word) of a compiler's version line.
fn version_word(line: &str) -> &str {
    line.split_whitespace().last().unwrap_or_default()
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or_default()
}

/// Checks that the kernel's compiler program is here, of the same major
/// version; returns the host's version line.
fn check_compiler(kernel: &str) -> Result<String, KmodError> {
    let program = kernel.split_whitespace().next().unwrap_or("gcc").to_owned();
    let out = Command::new(&program).arg("--version").output();
    let host = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => {
            return Err(KmodError::NoCompiler {
                kernel_compiler: kernel.to_owned(),
                program,
            })
        }
    };
    if major(version_word(&host)) != major(version_word(kernel)) {
        return Err(KmodError::CompilerMismatch {
            program,
            host,
            kernel: kernel.to_owned(),
        });
    }
    Ok(host)
}

/// Builds `src` in `work` against `headers`; the module's bytes.
pub fn build(
    src: &ModuleSource,
    headers: &Path,
    release: &str,
    work: &Path,
) -> Result<BuiltModule, KmodError> {
    let kernel = kernel_compiler(headers)?;
    let compiler = check_compiler(&kernel)?;
    let dir = work.join(src.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    for (name, text) in src.files {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io_err(&p))?;
    }
    let out = Command::new("make")
        .arg("-C")
        .arg(headers)
        .arg(format!("M={}", dir.display()))
        // Module BTF needs pahole and is of no use to these modules.
        .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
        .arg("modules")
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| KmodError::Spawn {
            module: src.name.to_owned(),
            source,
        })?;
    let ko = dir.join(format!("{}.ko", src.name));
    if !out.status.success() || !ko.is_file() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(KmodError::Build {
            module: src.name.to_owned(),
            repo_dir: src.repo_dir.to_owned(),
            release: release.to_owned(),
            output: output.trim().to_owned(),
        });
    }
    let bytes = std::fs::read(&ko).map_err(io_err(&ko))?;
    Ok(BuiltModule {
        module: ImageModule {
            name: src.name.to_owned(),
            rel_path: format!("{EXTRA_DIR}/{}.ko", src.name),
            bytes,
            depends: Vec::new(),
        },
        compiler,
        kernel_compiler: kernel,
    })
}

/// The embedded source of a module named in the recipe.
pub fn source(name: &str) -> Result<&'static ModuleSource, KmodError> {
    SOURCES
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| KmodError::UnknownSource(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_makefile_is_pointed_at_the_extracted_tree() {
        let debian = "include /usr/src/linux-headers-6.12.118+deb12-common/Makefile\n";
        assert_eq!(
            relocate_makefile(debian, "/c/kernel-headers/r/usr/src/"),
            "include /c/kernel-headers/r/usr/src/linux-headers-6.12.118+deb12-common/Makefile\n"
        );
        assert_eq!(relocate_makefile("x = 1\n", "/p/"), "x = 1\n");
    }

    #[test]
    fn compiler_versions_compare_by_major() {
        let kernel = cc_version_text(
            "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\nCONFIG_CC_IS_GCC=y\n",
        )
        .unwrap();
        assert_eq!(
            kernel,
            "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
        );
        assert_eq!(major(version_word(&kernel)), "12");
        assert_eq!(
            major(version_word(
                "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0"
            )),
            "12"
        );
        assert_eq!(cc_version_text("CONFIG_X=y\n"), None);
    }

    /// A stand-in headers tree: a .config naming `compiler` and a Makefile
    /// whose `modules` target fails the way a compile error does.
    fn failing_headers(compiler: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".config"),
            format!("CONFIG_CC_VERSION_TEXT=\"{compiler}\"\n"),
        )
        .unwrap();
        std::fs::write(
            d.path().join("Makefile"),
            "modules:\n\t@echo 'seq_page_faults.c:42:1: error: expected declaration' >&2; exit 2\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn a_failed_build_names_the_module_the_release_and_the_compiler_output() {
        let host = Command::new("cc").arg("--version").output().unwrap();
        let host = String::from_utf8_lossy(&host.stdout)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        let headers = failing_headers(&host);
        let work = tempfile::tempdir().unwrap();
        let src = source("seq_page_faults").unwrap();
        let e = build(src, headers.path(), "6.12.118+deb12-amd64", work.path())
            .err()
            .expect("the build fails");
        let text = e.to_string();
        assert!(
            text.starts_with("Building kernel module seq_page_faults (guest-tools/seq-page-faults-kmod) against the headers of 6.12.118+deb12-amd64 failed:\n"),
            "{text}"
        );
        assert!(
            text.contains("seq_page_faults.c:42:1: error: expected declaration"),
            "{text}"
        );
        assert!(
            work.path().join("seq_page_faults/Kbuild").is_file(),
            "the sources were written for make"
        );
    }

    #[test]
    fn a_missing_compiler_is_named_with_the_fix() {
        let headers = failing_headers("no-such-gcc-99 (Debian 99.1.0-1) 99.1.0");
        let work = tempfile::tempdir().unwrap();
        let e = build(
            source("seq_page_faults").unwrap(),
            headers.path(),
            "r",
            work.path(),
        )
        .err()
        .expect("no compiler");
        assert_eq!(
            e.to_string(),
            "The guest kernel was built with `no-such-gcc-99 (Debian 99.1.0-1) 99.1.0`, but no-such-gcc-99 is not on this host's PATH; install it (ci/install-deps installs gcc-12 and make) and build the image again."
        );
    }

    #[test]
    fn every_source_has_a_kbuild_naming_its_object() {
        for s in SOURCES {
            let kbuild = s
                .files
                .iter()
                .find(|(n, _)| *n == "Kbuild")
                .map(|(_, t)| *t)
                .unwrap_or_else(|| panic!("{} has no Kbuild", s.name));
            assert!(
                kbuild.contains(&format!("obj-m := {}.o", s.name)),
                "{kbuild}"
            );
        }
        assert!(source("seq_page_faults").is_ok());
        assert!(matches!(source("nope"), Err(KmodError::UnknownSource(_))));
    }
}
