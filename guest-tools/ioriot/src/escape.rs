//! Path fields of the text formats: bytes outside printable ASCII, space,
//! `%` and a lone `-` are percent-encoded, so a field never contains a
//! separator and any Linux path (any bytes but NUL) round-trips.

/// How an absent path is written.
pub const NONE: &str = "-";

/// Errors of decoding a path field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
}
