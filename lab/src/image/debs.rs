//! Debian packages: resolving names, versions and dependencies with
//! apt-cache, downloading exact versions with `apt-get download
//! name=version`, extracting with `dpkg-deb -x`.

use std::collections::{BTreeMap, BTreeSet};
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

/// The release whose versions apt prefers when resolving (the guest kernel
/// and QEMU come from there; other packages from bookworm).
const TARGET_RELEASE: &str = "bookworm-backports";

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
        "-t",
        TARGET_RELEASE,
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

/// The version apt would download now for each package (its candidate,
/// preferring bookworm-backports); packages apt does not know are absent.
pub fn candidates(packages: &BTreeSet<String>) -> Result<BTreeMap<String, String>, DebError> {
    if packages.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec!["-t", TARGET_RELEASE, "policy"];
    args.extend(packages.iter().map(String::as_str));
    Ok(parse_policy(&run("apt-cache", &args, None)?))
}

/// `apt-cache policy` output -> package -> candidate version.
pub fn parse_policy(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = line
                .strip_suffix(':')
                .map(|n| n.split(':').next().unwrap_or(n));
        } else if let (Some(name), Some(v)) = (current, line.trim().strip_prefix("Candidate: ")) {
            if v != "(none)" {
                out.insert(name.to_owned(), v.to_owned());
            }
        }
    }
    out
}

/// Every version of each package the apt archive offers now (not what is
/// merely installed), newest first; packages apt does not know are absent.
pub fn available(packages: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<String>>, DebError> {
    if packages.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec!["madison"];
    args.extend(packages.iter().map(String::as_str));
    Ok(parse_madison(&run("apt-cache", &args, None)?))
}

/// `apt-cache madison` output (`name | version | source`) -> package ->
/// binary versions in the order listed; source package lines are skipped.
pub fn parse_madison(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut cols = line.split('|').map(str::trim);
        let (Some(name), Some(version), Some(source)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if !source.ends_with("Packages") {
            continue;
        }
        let versions = out.entry(name.to_owned()).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_owned());
        }
    }
    out
}

/// The cached `.deb` of exactly `package` at `version` in `dir`, if any
/// (apt writes an epoch's `:` as `%3a` in the file name).
pub fn cached_deb(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .find(|p| {
            let (n, v) = name_and_version(p);
            n == package && v == version
        })
}

/// Downloads the pinned packages (name -> exact version) not yet in `dir`,
/// calling `progress(done, total)` as they arrive; the `.deb` of each pin.
pub fn download(
    dir: &Path,
    pins: &BTreeMap<String, String>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<PathBuf>, DebError> {
    std::fs::create_dir_all(dir).map_err(|source| DebError::Spawn {
        program: "mkdir".into(),
        source,
    })?;
    let missing: Vec<String> = not_cached(dir, pins)
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect();
    let total = pins.len() as u64;
    progress(total - missing.len() as u64, total);
    for (i, chunk) in missing.chunks(16).enumerate() {
        let mut args = vec!["download", "-q"];
        args.extend(chunk.iter().map(String::as_str));
        run("apt-get", &args, Some(dir))?;
        progress(
            total - missing.len() as u64 + ((i + 1) * 16).min(missing.len()) as u64,
            total,
        );
    }
    pins.iter()
        .map(|(p, v)| {
            cached_deb(dir, p, v).ok_or_else(|| DebError::Missing {
                package: format!("{p}={v}"),
                dir: dir.to_owned(),
            })
        })
        .collect()
}

/// The pins with no `.deb` in `dir` yet.
pub fn not_cached(dir: &Path, pins: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    pins.iter()
        .filter(|(p, v)| cached_deb(dir, p, v).is_none())
        .map(|(p, v)| (p.clone(), v.clone()))
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
    fn finds_cached_debs_by_exact_name_and_version() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "libcxl1_76.1-1_amd64.deb",
            "libcxl1-dev_76.1-1_amd64.deb",
            "libcap2_1%3a2.66-4+deb12u2_amd64.deb",
            "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb",
        ] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        assert!(cached_deb(d.path(), "libcxl1", "76.1-1")
            .unwrap()
            .ends_with("libcxl1_76.1-1_amd64.deb"));
        assert!(cached_deb(d.path(), "libcxl1", "76.2-1").is_none());
        assert!(cached_deb(d.path(), "ndctl", "76.1-1").is_none());
        assert!(cached_deb(d.path(), "libcap2", "1:2.66-4+deb12u2")
            .unwrap()
            .ends_with("libcap2_1%3a2.66-4+deb12u2_amd64.deb"));
        let pins: BTreeMap<String, String> = [
            ("libcap2".to_owned(), "1:2.66-4+deb12u3+b1".to_owned()),
            ("ndctl".to_owned(), "76.1-1".to_owned()),
        ]
        .into();
        assert_eq!(
            not_cached(d.path(), &pins).into_keys().collect::<Vec<_>>(),
            ["ndctl"]
        );
    }

    #[test]
    fn parses_policy_candidates_and_madison_versions() {
        let policy = "e2fsprogs:\n  Installed: 1.47.0-2\n  Candidate: 1.47.2-3~bpo12+1\n  Version table:\n     1.47.2-3~bpo12+1 990\n        990 http://m bookworm-backports/main amd64 Packages\n *** 1.47.0-2 100\n        100 /var/lib/dpkg/status\ngone:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n";
        let c = parse_policy(policy);
        assert_eq!(c.len(), 1);
        assert_eq!(c["e2fsprogs"], "1.47.2-3~bpo12+1");
        let madison = " e2fsprogs | 1.47.2-3~bpo12+1 | http://m bookworm-backports/main amd64 Packages\n e2fsprogs | 1.47.0-2+b2 | http://m bookworm/main amd64 Packages\n e2fsprogs | 1.47.0-2 | http://m bookworm/main Sources\n     libc6 | 2.36-9+deb12u14 | http://m bookworm/main amd64 Packages\n";
        let a = parse_madison(madison);
        assert_eq!(a["e2fsprogs"], ["1.47.2-3~bpo12+1", "1.47.0-2+b2"]);
        assert_eq!(a["libc6"], ["2.36-9+deb12u14"]);
    }
}
