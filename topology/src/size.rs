//! Byte sizes as written in topology files: `256M`, `4G`, `1M`, `8K`,
//! `0x10000000` or a plain integer.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a size; write a number with an optional K, M, G or T suffix (powers of 1024), such as 256M, or a 0x hex number")]
pub struct ParseSizeError {
    pub text: String,
}

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, ParseSizeError> {
        let err = || ParseSizeError {
            text: text.to_owned(),
        };
        let t = text.trim();
        if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16)
                .map(ByteSize)
                .map_err(|_| err());
        }
        let (digits, suffix) = match t.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        if digits.is_empty() {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let mult = match suffix.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => KIB,
            "M" | "MB" | "MIB" => MIB,
            "G" | "GB" | "GIB" => GIB,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form that QEMU also accepts (`256M`, `4G`, `8K`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, div) in [("T", 1u64 << 40), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if b >= div && b.is_multiple_of(div) {
                return write!(f, "{}{}", b / div, unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"256M\" or an integer number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_hex() {
        assert_eq!(ByteSize::parse("256M").unwrap().0, 256 * MIB);
        assert_eq!(ByteSize::parse("4G").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse("8k").unwrap().0, 8 * KIB);
        assert_eq!(ByteSize::parse("0x100000000").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("16GiB").unwrap().0, 16 * GIB);
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let e = ByteSize::parse("lots").unwrap_err();
        assert!(e.to_string().contains("'lots' is not a size"), "{e}");
        assert!(ByteSize::parse("12X").is_err());
        assert!(ByteSize::parse("99999999999T").is_err());
    }

    #[test]
    fn displays_shortest_exact_form() {
        assert_eq!(ByteSize(256 * MIB).to_string(), "256M");
        assert_eq!(ByteSize(4 * GIB).to_string(), "4G");
        assert_eq!(ByteSize(1536 * MIB).to_string(), "1536M");
        assert_eq!(ByteSize(100).to_string(), "100");
    }
}
