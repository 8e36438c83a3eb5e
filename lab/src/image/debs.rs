//! Debian packages: resolving names and dependencies with apt-cache,
//! downloading with `apt-get download`, extracting with `dpkg-deb -x`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of the package steps.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("Cannot run {program}; this needs a Debian system with apt (run ci/install-deps).")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}\nRun ci/install-deps (it enables bookworm-backports) and check the apt sources.")]
    Failed { command: String, stderr: String },
    #[error("No package named {prefix}<number>{suffix} is known to apt; run ci/install-deps to enable bookworm-backports, then `apt-get update`.")]
    NoKernel { prefix: String, suffix: String },
    #[error("apt-get download left no .deb for package {package} in {dir}.")]
    Missing { package: String, dir: PathBuf },
}

fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, DebError> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().map_err(|source| DebError::Spawn {
        program: program.into(),
        source,
    })?;
    if !out.status.success() {
        return Err(DebError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every package name apt knows that starts with `prefix`.
pub fn package_names(prefix: &str) -> Result<Vec<String>, DebError> {
    Ok(run("apt-cache", &["pkgnames", prefix], None)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The packages plus the shared-library packages they depend on,
/// recursively (programs' libraries; not perl, python or debconf).
pub fn with_library_dependencies(packages: &[String]) -> Result<BTreeSet<String>, DebError> {
    let mut args = vec![
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
    ];
    args.extend(packages.iter().map(String::as_str));
    let out = run("apt-cache", &args, None)?;
    let mut set: BTreeSet<String> = packages.iter().cloned().collect();
    for line in out.lines() {
        if line.starts_with(' ') || line.starts_with('<') || line.is_empty() {
            continue;
        }
        let name = line.trim();
        if name.starts_with("lib")
            && !name.ends_with("-perl")
            && !name.starts_with("libpython")
            && !name.starts_with("libperl")
            || name == "zlib1g"
        {
            set.insert(name.to_owned());
        }
    }
    Ok(set)
}

/// The packages `package` depends on directly (first of each
/// alternative), as `apt-cache depends` lists them.
pub fn depends_of(package: &str) -> Result<Vec<String>, DebError> {
    let out = run(
        "apt-cache",
        &["depends", "--no-recommends", "--no-suggests", package],
        None,
    )?;
    Ok(parse_depends(&out))
}

fn parse_depends(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches('|');
            l.strip_prefix("Depends:")
        })
        .map(|n| {
            n.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
        .collect()
}

/// The cached `.deb` of `package` in `dir`, if any.
pub fn cached_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads the packages not yet in `dir` (preferring bookworm-backports
/// versions), calling `progress(done, total)` as they arrive.
pub fn download(
    dir: &Path,
    packages: &BTreeSet<String>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<PathBuf>, DebError> {
    std::fs::create_dir_all(dir).map_err(|source| DebError::Spawn {
        program: "mkdir".into(),
        source,
    })?;
    let missing: Vec<&str> = packages
        .iter()
        .filter(|p| cached_deb(dir, p).is_none())
        .map(String::as_str)
        .collect();
    let total = packages.len() as u64;
    progress(total - missing.len() as u64, total);
    for (i, chunk) in missing.chunks(16).enumerate() {
        let mut args = vec!["download", "-q", "-t", "bookworm-backports"];
        args.extend(chunk.iter().copied());
        run("apt-get", &args, Some(dir))?;
        progress(
            total - missing.len() as u64 + ((i + 1) * 16).min(missing.len()) as u64,
            total,
        );
    }
    packages
        .iter()
        .map(|p| {
            cached_deb(dir, p).ok_or_else(|| DebError::Missing {
                package: p.clone(),
                dir: dir.to_owned(),
            })
        })
        .collect()
}

/// Extracts a `.deb` into `root`.
pub fn extract(deb: &Path, root: &Path) -> Result<(), DebError> {
    run(
        "dpkg-deb",
        &["-x", &deb.to_string_lossy(), &root.to_string_lossy()],
        None,
    )
    .map(drop)
}

/// `name_version_arch.deb` -> (name, version).
pub fn name_and_version(deb: &Path) -> (String, String) {
    let stem = deb.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let mut parts = stem.splitn(3, '_');
    let name = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or_default().replace("%3a", ":");
    (name, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb_file_names() {
        let (n, v) = name_and_version(Path::new(
            "/c/busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb",
        ));
        assert_eq!(n, "busybox-static");
        assert_eq!(v, "1:1.35.0-4+deb12u1+b1");
    }

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-headers-6.12.118+deb12-amd64\n  Depends: linux-base\n  Depends: linux-headers-6.12.118+deb12-common\n |Depends: linux-image-6.12.118+deb12-amd64\n  Depends: <linux-kbuild-6.12.118+deb12>\n  Depends: gcc-12\n";
        assert_eq!(
            parse_depends(out),
            [
                "linux-base",
                "linux-headers-6.12.118+deb12-common",
                "linux-image-6.12.118+deb12-amd64",
                "linux-kbuild-6.12.118+deb12",
                "gcc-12"
            ]
        );
    }

    #[test]
    fn finds_cached_debs_by_exact_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("libcxl1_76.1-1_amd64.deb"), b"").unwrap();
        std::fs::write(d.path().join("libcxl1-dev_76.1-1_amd64.deb"), b"").unwrap();
        assert!(cached_deb(d.path(), "libcxl1")
            .unwrap()
            .ends_with("libcxl1_76.1-1_amd64.deb"));
        assert!(cached_deb(d.path(), "ndctl").is_none());
    }
}
