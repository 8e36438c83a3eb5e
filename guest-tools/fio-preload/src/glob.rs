//! Shell-style pattern matching (`*`, `?`, `[a-z]`, `[!x]`, `\` escapes)
//! without allocation, so it can run inside interposed calls.

/// Whether `text` matches `pattern`. `*` and `?` match any byte, `/` included.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Position after the last `*` and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(&pattern[p..], text[t]) {
                        if hit {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the bracket expression at the start of `pat`.
/// Returns whether it matched and the length of the expression, or `None`
/// when the bracket is not closed (then `[` is literal).
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < pat.len() {
        let lo = pat[i];
        if lo == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            if lo <= c && c <= pat[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if lo == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches(b"fio*", b"fio-test.0.0"));
        assert!(!matches(b"fio*", b"xfio"));
        assert!(matches(b"*.dat", b"a.b.dat"));
        assert!(matches(b"/dev/shm/*", b"/dev/shm/x/y"));
        assert!(matches(b"job.[0-9].?", b"job.3.1"));
        assert!(!matches(b"job.[!0-9]", b"job.3"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"*", b""));
        assert!(matches(b"[x", b"[x"));
    }
}
