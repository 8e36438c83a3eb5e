//! Where the lab keeps things: the download and image cache, run
//! directories, and the workspace binaries that go into the guest.

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

/// Parent of every lab instance's run directory: `$CXL_LAB_STATE`, else
/// `$XDG_RUNTIME_DIR/cxl-lab`, else `~/.local/state/cxl-lab`.
pub fn state_root() -> PathBuf {
    if let Some(p) = std::env::var_os("CXL_LAB_STATE") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("cxl-lab"),
        _ => home().join(".local/state/cxl-lab"),
    }
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
