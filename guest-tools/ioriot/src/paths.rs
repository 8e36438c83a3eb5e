//! Lexical path handling for captured paths: join relative paths onto their
//! base, collapse `.`, `..` and repeated slashes. (Confinement of replayed
//! paths is `confine.rs`.)

/// Normalises an absolute path lexically: `..` at `/` stays at `/`, as the
/// kernel does.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Resolves `path` against `base` (an absolute directory) and normalises it.
pub fn resolve(base: &[u8], path: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return normalize(path);
    }
    let mut joined = base.to_vec();
    joined.push(b'/');
    joined.extend_from_slice(path);
    normalize(&joined)
}

/// Whether `path` is `prefix` or lies below it (both normalised).
pub fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return true;
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// The parent directory of a normalised absolute path (`/` for `/`).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &path[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalize(b"/a//b/./c/../d"), b"/a/b/d");
        assert_eq!(normalize(b"/../../etc"), b"/etc");
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(resolve(b"/w", b"x/../y"), b"/w/y");
        assert_eq!(resolve(b"/w", b"/abs"), b"/abs");
        assert!(is_under(b"/proc/1", b"/proc"));
        assert!(!is_under(b"/procx", b"/proc"));
        assert_eq!(parent(b"/a/b"), b"/a");
        assert_eq!(parent(b"/a"), b"/");
    }
}
