//! Reading and writing sysfs attributes under a root that tests can replace
//! with a temporary directory.

use std::path::{Path, PathBuf};

/// Errors touching sysfs.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("Cannot read {path}.")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The kernel refused '{value}' written to {path}.")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// The sysfs tree, rooted at `/sys` in the guest.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `/sys/bus/cxl/devices/<name>`.
    pub fn cxl_dev(&self, name: &str) -> PathBuf {
        self.path("bus/cxl/devices").join(name)
    }

    pub fn read(&self, path: &Path) -> Result<String, SysfsError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| SysfsError::Read {
                path: path.to_owned(),
                source,
            })
    }

    pub fn write(&self, path: &Path, value: &str) -> Result<(), SysfsError> {
        tracing_write(path, value);
        std::fs::write(path, value).map_err(|source| SysfsError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
    }

    /// Names of the entries of a directory, sorted; empty when it is missing.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_by(|a, b| natural_cmp(a, b));
        names
    }

    /// The last path component a symlink points to.
    pub fn link_name(&self, link: &Path) -> Option<String> {
        std::fs::read_link(link)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }
}

fn tracing_write(path: &Path, value: &str) {
    debug_line(&format!("echo {value} > {}", path.display()));
}

/// With `CXL_REGIONS_DEBUG` set, `what` on stderr after the guest's
/// uptime: where a slow set-up spends its time.
pub fn debug_line(what: &str) {
    if std::env::var_os("CXL_REGIONS_DEBUG").is_some() {
        let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        eprintln!("cxl-regions: {} {what}", up.split(' ').next().unwrap_or(""));
    }
}

/// Orders `decoder2.10` after `decoder2.9`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digits = false;
        for ch in s.chars() {
            if ch.is_ascii_digit() != digits && !cur.is_empty() {
                out.push(if digits {
                    Ok(cur.parse().unwrap_or(u64::MAX))
                } else {
                    Err(cur.clone())
                });
                cur.clear();
            }
            digits = ch.is_ascii_digit();
            cur.push(ch);
        }
        if !cur.is_empty() {
            out.push(if digits {
                Ok(cur.parse().unwrap_or(u64::MAX))
            } else {
                Err(cur)
            });
        }
        out
    }
    key(a).cmp(&key(b))
}

/// Parses a sysfs number in decimal or `0x` hex.
pub fn parse_num(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["decoder2.10", "decoder2.9", "decoder2.0"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["decoder2.0", "decoder2.9", "decoder2.10"]);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_num("0x10000000\n"), Some(0x1000_0000));
        assert_eq!(parse_num("256"), Some(256));
        assert_eq!(parse_num("zz"), None);
    }
}
