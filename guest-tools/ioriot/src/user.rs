//! The user a replay runs as (`generate -u USER`): init gives the test tree
//! to that user and replay switches to it before the first operation, so
//! permission checks are the captured workload's, not root's.

use std::ffi::{CStr, CString};
use std::path::Path;

/// Errors of user handling.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("There is no user '{0}' on this machine.")]
    Unknown(String),
    #[error("Replaying as user '{0}' needs root (ioriot runs as uid {1}).")]
    NotRoot(String, u32),
    #[error("Switching to user '{name}' failed.")]
    Switch {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Giving {} to user '{name}' failed.", path.display())]
    Chown {
        name: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A user's name, uid and primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn lookup(name: &str) -> Result<User, UserError> {
    let c = CString::new(name).map_err(|_| UserError::Unknown(name.to_owned()))?;
    // SAFETY: libc::passwd is C integers and pointers, for which all-zero
    // bytes (null pointers) are a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes passed; pw's strings
    // point into buf, which outlives their use here.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return Err(UserError::Unknown(name.to_owned()));
    }
    // SAFETY: pw_name is a NUL-terminated string in buf.
    let n = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Ok(User {
        name: n,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Gives `dir` and everything below it to the user (links themselves, not their targets).
pub fn chown_tree(dir: &Path, u: &User) -> Result<(), UserError> {
    let err = |path: &Path, source| UserError::Chown {
        name: u.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::lchown(dir, Some(u.uid), Some(u.gid)).map_err(|e| err(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(dir, e))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
            let p = e.map_err(|e| err(dir, e))?.path();
            chown_tree(&p, u)?;
        }
    }
    Ok(())
}

/// Switches this process (all its threads) to the user; a no-op when it
/// already runs as that user.
pub fn switch(u: &User) -> Result<(), UserError> {
    // SAFETY: plain id queries and changes.
    unsafe {
        if libc::geteuid() == u.uid && libc::getegid() == u.gid {
            return Ok(());
        }
        if libc::geteuid() != 0 {
            return Err(UserError::NotRoot(u.name.clone(), libc::geteuid()));
        }
        let fail = |name: &str| UserError::Switch {
            name: name.to_owned(),
            source: std::io::Error::last_os_error(),
        };
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(u.gid) != 0
            || libc::setuid(u.uid) != 0
        {
            return Err(fail(&u.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name() {
        assert_eq!(lookup("root").unwrap().uid, 0);
        assert_eq!(
            lookup("no-such-user-ioriot").unwrap_err().to_string(),
            "There is no user 'no-such-user-ioriot' on this machine."
        );
    }
}
