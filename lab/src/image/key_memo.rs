//! The image key remembered by the identity of the files it hashes: every
//! `lab up` needs the key, and reading and hashing the debug-built guest
//! tools (about 150 MB) took 0.35–0.42 s of a restored `lab up`'s 4 s. The
//! memo maps a fingerprint (the key's embedded parts, and each tool's
//! name, path, device, inode, size, modification and change time) to the
//! key computed from the files' contents; a tool rebuilt, touched or
//! replaced changes the fingerprint, and the key is computed again, the
//! same as before the memo.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Fingerprints remembered at most (the newest are kept).
const KEEP: usize = 32;

/// The fingerprint of `parts` (hashed as given) and of the files'
/// identities, or None when a file cannot be examined.
pub fn fingerprint(parts: &[&[u8]], files: &[(&str, &Path)]) -> Option<String> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    for (name, path) in files {
        let m = std::fs::metadata(path).ok()?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        for n in [m.dev(), m.ino(), m.len()] {
            h.update(n.to_le_bytes());
        }
        for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
            h.update(n.to_le_bytes());
        }
    }
    Some(hex::encode(h.finalize()))
}

/// The memo file: fingerprint -> (key, when remembered).
pub struct KeyMemo {
    path: PathBuf,
    entries: BTreeMap<String, (String, u64)>,
}

impl KeyMemo {
    /// Reads the memo (one that cannot be read is started afresh).
    pub fn load(path: &Path) -> KeyMemo {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        KeyMemo {
            path: path.to_owned(),
            entries,
        }
    }

    pub fn get(&self, fingerprint: &str) -> Option<&str> {
        self.entries.get(fingerprint).map(|(k, _)| k.as_str())
    }

    /// Remembers `key` and writes the memo (through a file of this
    /// process renamed over it: labs starting at once each write a whole
    /// one). Failing to write is harmless: the next `lab up` hashes again.
    pub fn remember(&mut self, fingerprint: String, key: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        self.entries.insert(fingerprint, (key, now));
        while self.entries.len() > KEEP {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(f, _)| f.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let Ok(json) = serde_json::to_vec(&self.entries) else {
            return;
        };
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, json).is_err() || std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_remembered_until_a_file_or_part_changes() {
        let dir = tempfile::tempdir().unwrap();
        let memo_path = dir.path().join("memo.json");
        let tool = dir.path().join("tool");
        std::fs::write(&tool, b"one").unwrap();
        let files = [("tool", tool.as_path())];
        let f1 = fingerprint(&[b"recipe"], &files).unwrap();
        assert_eq!(fingerprint(&[b"recipe"], &files).as_ref(), Some(&f1));
        assert_ne!(fingerprint(&[b"other recipe"], &files).unwrap(), f1);

        let mut memo = KeyMemo::load(&memo_path);
        assert_eq!(memo.get(&f1), None);
        memo.remember(f1.clone(), "key1".into());
        assert_eq!(KeyMemo::load(&memo_path).get(&f1), Some("key1"));

        // Rewritten with the same size: another fingerprint.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&tool, b"two").unwrap();
        let f2 = fingerprint(&[b"recipe"], &files).unwrap();
        assert_ne!(f2, f1);
        assert_eq!(KeyMemo::load(&memo_path).get(&f2), None);

        // A missing file has none; an unreadable memo starts afresh.
        assert_eq!(
            fingerprint(&[], &[("gone", &dir.path().join("gone"))]),
            None
        );
        std::fs::write(&memo_path, b"not json").unwrap();
        assert_eq!(KeyMemo::load(&memo_path).get(&f1), None);

        // Only the newest KEEP are kept.
        let mut memo = KeyMemo::load(&memo_path);
        for i in 0..KEEP + 5 {
            memo.remember(format!("f{i}"), format!("k{i}"));
        }
        let memo = KeyMemo::load(&memo_path);
        assert_eq!(memo.get("f0"), None);
        assert_eq!(
            memo.get(&format!("f{}", KEEP + 4)).map(str::to_owned),
            Some(format!("k{}", KEEP + 4))
        );
    }
}
