//! Sizes and offsets such as `4096`, `256M`, `16G`, `0x100000000`.

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{0}' is not a size: use decimal or 0x hex with an optional K, M, G or T suffix (powers of 1024).")]
    Invalid(String),
    #[error("'{0}' does not fit in 64 bits.")]
    Overflow(String),
}

/// Parses a decimal or `0x` hexadecimal number with an optional suffix
/// `K`, `M`, `G`, `T` (or `KiB`...; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(rest) => (rest, 16),
        None => (t, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return Err(SizeError::Invalid(text.to_string()));
    }
    let value = u64::from_str_radix(&digits[..end], radix)
        .map_err(|_| SizeError::Overflow(text.to_string()))?;
    let shift = match &digits[end..] {
        "" | "B" | "b" => 0,
        "K" | "k" | "KiB" | "KB" | "kB" => 10,
        "M" | "m" | "MiB" | "MB" => 20,
        "G" | "g" | "GiB" | "GB" => 30,
        "T" | "t" | "TiB" | "TB" => 40,
        _ => return Err(SizeError::Invalid(text.to_string())),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(text.to_string()))
}

/// Human form of a byte count: `64 MiB`, `384 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_size("16G").unwrap(), 16 << 30);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("0x100000000").unwrap(), 1 << 32);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("0xffffffffffffffffff").is_err());
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(384), "384 B");
    }
}
