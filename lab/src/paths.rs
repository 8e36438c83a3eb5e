//! Where the lab keeps things: the download and image cache, run
//! directories, and the workspace binaries that go into the guest.

use std::ffi::OsString;
use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// `$CXL_LAB_CACHE`, else `$XDG_CACHE_HOME/cxl-lab`, else `~/.cache/cxl-lab`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CXL_LAB_CACHE") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("cxl-lab"),
        _ => home().join(".cache/cxl-lab"),
    }
}

/// Parent of every lab instance's run directory, which holds its durable
/// state (backing files, label areas, results, topology, logs):
/// `$CXL_LAB_STATE`, else `$XDG_STATE_HOME/cxl-lab`, else
/// `~/.local/state/cxl-lab`. Never `$XDG_RUNTIME_DIR`: that is a tmpfs
/// emptied at logout, and persistent memory there would also eat RAM.
pub fn state_root() -> PathBuf {
    state_root_from(|k| std::env::var_os(k))
}

fn state_root_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(p) = var("CXL_LAB_STATE") {
        return PathBuf::from(p);
    }
    match var("XDG_STATE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("cxl-lab"),
        _ => home_from(&var).join(".local/state/cxl-lab"),
    }
}

/// Parent of the lab instances' socket directories (sockets and pid
/// files, which live only as long as the processes), when that is not
/// the run directory itself: `$XDG_RUNTIME_DIR/cxl-lab`, whose short path
/// keeps socket paths under the 108 bytes of a Unix socket address. None
/// when `$CXL_LAB_STATE` is set (everything of a lab stays in its run
/// directory, as tests and CI expect) or `$XDG_RUNTIME_DIR` is not.
pub fn socket_root() -> Option<PathBuf> {
    socket_root_from(|k| std::env::var_os(k))
}

fn socket_root_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if var("CXL_LAB_STATE").is_some() {
        return None;
    }
    match var("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => Some(PathBuf::from(x).join("cxl-lab")),
        _ => None,
    }
}

fn home_from(var: &impl Fn(&str) -> Option<OsString>) -> PathBuf {
    var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The directory holding the workspace's binaries (`cxl-regions`,
/// `cxl-memsim`, ...): `$CXL_LAB_TOOLS_DIR`, else the directory of the
/// running executable (its parent when that is cargo's `deps/`).
pub fn tools_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CXL_LAB_TOOLS_DIR") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn durable_state_never_goes_to_the_runtime_dir() {
        let runtime = ("XDG_RUNTIME_DIR", "/run/user/1000");
        let home = ("HOME", "/home/u");
        assert_eq!(
            state_root_from(env(&[runtime, home])),
            PathBuf::from("/home/u/.local/state/cxl-lab")
        );
        assert_eq!(
            state_root_from(env(&[runtime, home, ("XDG_STATE_HOME", "/s")])),
            PathBuf::from("/s/cxl-lab")
        );
        assert_eq!(
            state_root_from(env(&[runtime, home, ("CXL_LAB_STATE", "/ci/state")])),
            PathBuf::from("/ci/state")
        );
        assert_eq!(
            socket_root_from(env(&[runtime, home])),
            Some(PathBuf::from("/run/user/1000/cxl-lab"))
        );
        assert_eq!(socket_root_from(env(&[home])), None);
        assert_eq!(
            socket_root_from(env(&[runtime, ("CXL_LAB_STATE", "/ci/state")])),
            None,
            "CXL_LAB_STATE keeps a lab in one directory"
        );
    }
}
