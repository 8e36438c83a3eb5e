//! Parsing of sizes and offsets such as `4096`, `256M`, `16G`, `0x100000000`.

/// Why a number in the environment could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumError {
    #[error("The value is empty.")]
    Empty,
    #[error(
        "The value is not a number (use decimal, 0x hex, and an optional K, M, G or T suffix)."
    )]
    Invalid,
    #[error("The value does not fit in 64 bits.")]
    Overflow,
}

/// Parses a decimal or `0x` hexadecimal number with an optional binary
/// suffix `K`, `M`, `G`, `T` (also `KiB`, `KB`, `k`...), meaning powers of 1024.
pub fn parse_size(text: &[u8]) -> Result<u64, NumError> {
    let text = trim(text);
    if text.is_empty() {
        return Err(NumError::Empty);
    }
    let (digits, radix) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (text, 10),
    };
    let mut value: u64 = 0;
    let mut used = 0;
    for &c in digits {
        let d = match (c as char).to_digit(radix) {
            Some(d) => d as u64,
            None => break,
        };
        value = value
            .checked_mul(radix as u64)
            .and_then(|v| v.checked_add(d))
            .ok_or(NumError::Overflow)?;
        used += 1;
    }
    if used == 0 {
        return Err(NumError::Invalid);
    }
    let shift = match &digits[used..] {
        b"" | b"B" | b"b" => 0,
        b"K" | b"k" | b"KiB" | b"KB" | b"kB" | b"kb" => 10,
        b"M" | b"m" | b"MiB" | b"MB" | b"mb" => 20,
        b"G" | b"g" | b"GiB" | b"GB" | b"gb" => 30,
        b"T" | b"t" | b"TiB" | b"TB" | b"tb" => 40,
        _ => return Err(NumError::Invalid),
    };
    value.checked_mul(1u64 << shift).ok_or(NumError::Overflow)
}

fn trim(mut text: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = text {
        if first.is_ascii_whitespace() {
            text = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = text {
        if last.is_ascii_whitespace() {
            text = rest;
        } else {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_hex() {
        assert_eq!(parse_size(b"4096"), Ok(4096));
        assert_eq!(parse_size(b"256M"), Ok(256 << 20));
        assert_eq!(parse_size(b"16G"), Ok(16 << 30));
        assert_eq!(parse_size(b"0x100000000"), Ok(1 << 32));
        assert_eq!(parse_size(b"2MiB"), Ok(2 << 20));
        assert_eq!(parse_size(b""), Err(NumError::Empty));
        assert_eq!(parse_size(b"12Q"), Err(NumError::Invalid));
        assert_eq!(parse_size(b"99999999999T"), Err(NumError::Overflow));
    }
}
