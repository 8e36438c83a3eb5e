//! Reads enum constants from the kernel's BTF (`/sys/kernel/btf/vmlinux`):
//! the fault return bits (`enum vm_fault_reason`) and fault flags (`enum
//! fault_flag`) the BPF programs test are taken from the running kernel
//! rather than from one version's headers. Only the type section's layout
//! is parsed, enough to walk it and read enums.

use std::collections::HashMap;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("The kernel exposes no BTF at {path}; the fault tools need a kernel built with CONFIG_DEBUG_INFO_BTF.")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The BTF data is malformed: {0}.")]
    Malformed(&'static str),
    #[error("The kernel's BTF has no constant {name} in enum {enum_name}.")]
    NoConstant { enum_name: String, name: String },
}

/// The enums of a BTF blob: enum name → (constant name → value).
#[derive(Debug, Default)]
pub struct Enums(HashMap<String, HashMap<String, i64>>);

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or(BtfError::Malformed("truncated"))
}

fn str_at(strings: &[u8], off: u32) -> Result<String, BtfError> {
    let s = strings
        .get(off as usize..)
        .ok_or(BtfError::Malformed("string offset out of range"))?;
    let end = s
        .iter()
        .position(|b| *b == 0)
        .ok_or(BtfError::Malformed("unterminated string"))?;
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

impl Enums {
    pub fn from_kernel() -> Result<Enums, BtfError> {
        let data = std::fs::read(VMLINUX).map_err(|source| BtfError::Missing {
            path: VMLINUX.into(),
            source,
        })?;
        Enums::parse(&data)
    }

    /// Parses a little-endian BTF blob (header, type section, string section).
    pub fn parse(d: &[u8]) -> Result<Enums, BtfError> {
        if d.len() < 24 || u16::from_le_bytes([d[0], d[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let (type_off, type_len) = (u32_at(d, 8)? as usize, u32_at(d, 12)? as usize);
        let (str_off, str_len) = (u32_at(d, 16)? as usize, u32_at(d, 20)? as usize);
        let types = d
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of range"))?;
        let strings = d
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?;
        let mut out = Enums::default();
        let mut p = 0;
        while p < types.len() {
            let name_off = u32_at(types, p)?;
            let info = u32_at(types, p + 4)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            // Bytes that follow the common 12-byte header, per kind.
            let extra = match kind {
                1 | 14 | 17 => 4,        // int, var, decl_tag
                3 => 12,                 // array
                4 | 5 | 15 => 12 * vlen, // struct, union, datasec
                6 | 13 => 8 * vlen,      // enum, func_proto
                19 => 12 * vlen,         // enum64
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            if kind == 6 || kind == 19 {
                let name = str_at(strings, name_off)?;
                let mut consts = HashMap::new();
                let step = if kind == 6 { 8 } else { 12 };
                for i in 0..vlen {
                    let at = p + i * step;
                    let cname = str_at(strings, u32_at(types, at)?)?;
                    let value = if kind == 6 {
                        u32_at(types, at + 4)? as i32 as i64
                    } else {
                        ((u32_at(types, at + 8)? as u64) << 32 | u32_at(types, at + 4)? as u64)
                            as i64
                    };
                    consts.insert(cname, value);
                }
                if !name.is_empty() {
                    out.0.entry(name).or_default().extend(consts);
                }
            }
            p += extra;
        }
        Ok(out)
    }

    pub fn constant(&self, enum_name: &str, name: &str) -> Result<i64, BtfError> {
        self.0
            .get(enum_name)
            .and_then(|e| e.get(name))
            .copied()
            .ok_or_else(|| BtfError::NoConstant {
                enum_name: enum_name.into(),
                name: name.into(),
            })
    }
}

/// The fault bits the monitor needs, as the running kernel defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FaultBits {
    pub vm_fault_major: u32,
    pub vm_fault_retry: u32,
    /// VM_FAULT_ERROR as include/linux/mm_types.h composes it.
    pub vm_fault_error: u32,
    pub fault_flag_tried: u32,
}

impl FaultBits {
    pub fn from_enums(e: &Enums) -> Result<FaultBits, BtfError> {
        let r = |n| e.constant("vm_fault_reason", n).map(|v| v as u32);
        Ok(FaultBits {
            vm_fault_major: r("VM_FAULT_MAJOR")?,
            vm_fault_retry: r("VM_FAULT_RETRY")?,
            vm_fault_error: r("VM_FAULT_OOM")?
                | r("VM_FAULT_SIGBUS")?
                | r("VM_FAULT_SIGSEGV")?
                | r("VM_FAULT_HWPOISON")?
                | r("VM_FAULT_HWPOISON_LARGE")?
                | r("VM_FAULT_FALLBACK")?,
            fault_flag_tried: e.constant("fault_flag", "FAULT_FLAG_TRIED")? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with an int, a struct and two enums, built by hand.
    fn blob() -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut s = |t: &str| {
            let off = strings.len() as u32;
            strings.extend_from_slice(t.as_bytes());
            strings.push(0);
            off
        };
        let (int, st, field) = (s("int"), s("pair"), s("a"));
        let (reason, major, retry) = (
            s("vm_fault_reason"),
            s("VM_FAULT_MAJOR"),
            s("VM_FAULT_RETRY"),
        );
        let (flag, tried, big) = (s("fault_flag"), s("FAULT_FLAG_TRIED"), s("BIG"));
        let mut t = Vec::new();
        let mut w = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // int: header + 4
        w(int);
        w(1 << 24);
        w(4);
        w(32);
        // struct with one member: header + 12
        w(st);
        w((4 << 24) | 1);
        w(4);
        w(field);
        w(1);
        w(0);
        // enum with two constants
        w(reason);
        w((6 << 24) | 2);
        w(4);
        w(major);
        w(4);
        w(retry);
        w(0x400);
        // enum64 with two constants
        w(flag);
        w((19 << 24) | 2);
        w(8);
        w(tried);
        w(0x20);
        w(0);
        w(big);
        w(0);
        w(1);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&t);
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn reads_enum_and_enum64_constants() {
        let e = Enums::parse(&blob()).unwrap();
        assert_eq!(e.constant("vm_fault_reason", "VM_FAULT_MAJOR").unwrap(), 4);
        assert_eq!(
            e.constant("vm_fault_reason", "VM_FAULT_RETRY").unwrap(),
            0x400
        );
        assert_eq!(e.constant("fault_flag", "FAULT_FLAG_TRIED").unwrap(), 0x20);
        assert_eq!(e.constant("fault_flag", "BIG").unwrap(), 1 << 32);
        let err = e.constant("vm_fault_reason", "VM_FAULT_OOM").unwrap_err();
        assert_eq!(
            err.to_string(),
            "The kernel's BTF has no constant VM_FAULT_OOM in enum vm_fault_reason."
        );
        assert!(FaultBits::from_enums(&e).is_err());
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(matches!(
            Enums::parse(b"not btf at all, not at all"),
            Err(BtfError::Malformed(_))
        ));
        let mut d = blob();
        d.truncate(40);
        assert!(Enums::parse(&d).is_err());
    }

    /// On a host that has BTF (CI machines do), the kernel agrees with the
    /// values documented for 6.12's include/linux/mm_types.h.
    #[test]
    fn the_running_kernel_has_the_fault_bits() {
        let Ok(e) = Enums::from_kernel() else {
            assert!(
                std::env::var_os("CXL_LAB_NO_SKIP").is_none(),
                "no {VMLINUX} here, and CXL_LAB_NO_SKIP forbids skipping"
            );
            eprintln!("no {VMLINUX} here; skipped");
            return;
        };
        let b = FaultBits::from_enums(&e).unwrap();
        assert_eq!(b.vm_fault_major, 0x4);
        assert_eq!(b.vm_fault_retry, 0x400);
        assert_eq!(b.vm_fault_error, 0x873);
        assert_eq!(b.fault_flag_tried, 0x20);
    }
}
