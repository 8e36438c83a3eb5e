//! Path fields of the text formats. I/O Riot's `.capture` and `.replay`
//! lines (`encode_token`): `%`, `|`, `;`, control bytes and bytes outside
//! ASCII are percent-encoded, so a path never contains a separator (`;:,`
//! or `|`) or a line break and any Linux path (any bytes but NUL)
//! round-trips, while ordinary paths, spaces included, stay as they are.
//! The version 1 capture of earlier ioriot (`encode`): also space and a
//! lone `-`.

/// How an absent path is written.
pub const NONE: &str = "-";

/// Errors of decoding a path field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EscapeError {
    #[error("The field '{0}' has a '%' not followed by two hex digits.")]
    BadPercent(String),
}

pub fn encode(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "%".to_owned();
    }
    if bytes == b"-" {
        return "%2D".to_owned();
    }
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

pub fn encode_opt(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => NONE.to_owned(),
        Some(b) => encode(b),
    }
}

/// A path as a token of I/O Riot's formats.
pub fn encode_token(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b' '..0x7f).contains(&b) && !b"%|;".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Decodes a token of I/O Riot's formats.
pub fn decode_token(s: &str) -> Result<Vec<u8>, EscapeError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| EscapeError::BadPercent(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Decodes a field; `-` is no path and a lone `%` is the empty path.
pub fn decode(s: &str) -> Result<Option<Vec<u8>>, EscapeError> {
    if s == NONE {
        return Ok(None);
    }
    if s == "%" {
        return Ok(Some(Vec::new()));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| EscapeError::BadPercent(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_fields() {
        for p in [&b"/a b/%c"[..], b"-", b"", b"/x\ny\xff", b"/plain/path"] {
            let e = encode_opt(Some(p));
            assert!(!e.contains(' ') && !e.contains('\n'), "{e}");
            assert_eq!(decode(&e).unwrap().as_deref(), Some(p), "{e}");
        }
        assert_eq!(decode("-").unwrap(), None);
        assert!(decode("%4").is_err());
    }

    #[test]
    fn paths_round_trip_through_tokens() {
        for p in [
            &b"/a b/%c"[..],
            b"/x|y;:,z",
            b"",
            b"/x\ny\xff",
            b"/plain/path",
        ] {
            let e = encode_token(p);
            assert!(
                !e.contains('|') && !e.contains(";:,") && !e.contains('\n'),
                "{e}"
            );
            assert_eq!(decode_token(&e).unwrap(), p, "{e}");
        }
        assert_eq!(encode_token(b"/home/a b"), "/home/a b");
        assert!(decode_token("%4").is_err());
        assert!(decode_token("%\u{e9}").is_err());
    }
}
