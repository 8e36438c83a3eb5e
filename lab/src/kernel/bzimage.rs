//! What a kernel image file is, read from its headers: an x86 bzImage's
//! setup header (boot protocol, 64-bit flag, the kernel version string the
//! header points at), or what else it is (an ELF vmlinux of some machine,
//! an arm64 or RISC-V `Image`), so a wrong file is refused by name.

use std::path::{Path, PathBuf};

/// Errors reading a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("Cannot read the kernel image {path}.")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kernel: it is neither an x86 bzImage/vmlinuz (no `HdrS` setup header), a Debian kernel package (.deb) nor a kernel build tree. Give `--kernel` one of those.")]
    NotAKernel { path: PathBuf },
    #[error("{path} is a 32-bit x86 kernel (its setup header lacks XLF_KERNEL_64); the lab's guest is x86-64: build it with ARCH=x86_64 (CONFIG_64BIT=y).")]
    Not64Bit { path: PathBuf },
    #[error("{path} is {what}; the lab's guest is x86-64: give an x86-64 bzImage (arch/x86/boot/bzImage).")]
    OtherArch { path: PathBuf, what: String },
    #[error("{path} is an uncompressed x86-64 vmlinux (ELF); the lab boots the compressed image: give arch/x86/boot/bzImage (or /boot/vmlinuz-*) instead.")]
    Vmlinux { path: PathBuf },
    #[error("{path} uses x86 boot protocol {major}.{minor:02}, older than 2.12, which says nothing of 64-bit support; give a kernel newer than 3.8.")]
    OldProtocol { path: PathBuf, major: u8, minor: u8 },
    #[error("{path} has no kernel version string in its setup header, so its release (`uname -r`) is unknown; give a kernel built by Kbuild (make bzImage).")]
    NoVersion { path: PathBuf },
}

/// An x86-64 bzImage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImage {
    /// `uname -r`: the first word of the version string.
    pub release: String,
    /// The whole version string (`6.1.0-50-amd64 (debian-kernel@…) #1 SMP …`).
    pub version: String,
    /// Boot protocol, e.g. 0x020f.
    pub protocol: u16,
}

const HDRS_AT: usize = 0x202;
const PROTOCOL_AT: usize = 0x206;
const KERNEL_VERSION_AT: usize = 0x20e;
const XLOADFLAGS_AT: usize = 0x236;
/// xloadflags bit 0: the kernel has a 64-bit entry point at 0x200.
const XLF_KERNEL_64: u16 = 1;

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The kernel image at `path`: an x86-64 bzImage, or the error that says
/// what it is instead.
pub fn read(path: &Path) -> Result<BzImage, BzImageError> {
    let bytes = std::fs::read(path).map_err(|source| BzImageError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes, path)
}

/// As [`read`], from the file's bytes.
pub fn parse(bytes: &[u8], path: &Path) -> Result<BzImage, BzImageError> {
    let path = path.to_owned();
    if bytes.get(HDRS_AT..HDRS_AT + 4) != Some(b"HdrS") {
        return Err(match other_kind(bytes) {
            Some(Other::Vmlinux) => BzImageError::Vmlinux { path },
            Some(Other::Arch(what)) => BzImageError::OtherArch { path, what },
            None => BzImageError::NotAKernel { path },
        });
    }
    let protocol = le16(bytes, PROTOCOL_AT).unwrap_or(0);
    let (major, minor) = ((protocol >> 8) as u8, protocol as u8);
    if protocol < 0x020c {
        return Err(BzImageError::OldProtocol { path, major, minor });
    }
    if le16(bytes, XLOADFLAGS_AT).unwrap_or(0) & XLF_KERNEL_64 == 0 {
        return Err(BzImageError::Not64Bit { path });
    }
    let version = match le16(bytes, KERNEL_VERSION_AT) {
        Some(0) | None => None,
        Some(p) => {
            let at = p as usize + 0x200;
            bytes.get(at..).map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len().min(256));
                String::from_utf8_lossy(&s[..end]).trim().to_owned()
            })
        }
    }
    .filter(|v| !v.is_empty())
    .ok_or_else(|| BzImageError::NoVersion { path: path.clone() })?;
    let release = version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(BzImage {
        release,
        version,
        protocol,
    })
}

enum Other {
    Vmlinux,
    Arch(String),
}

/// What a file without an x86 setup header is, when it is a kernel of
/// another form or machine.
fn other_kind(bytes: &[u8]) -> Option<Other> {
    if bytes.starts_with(b"\x7fELF") {
        let class = match bytes.get(4) {
            Some(1) => "32-bit",
            Some(2) => "64-bit",
            _ => "",
        };
        let big_endian = bytes.get(5) == Some(&2);
        let machine = bytes.get(0x12..0x14).map(|m| {
            if big_endian {
                u16::from_be_bytes([m[0], m[1]])
            } else {
                u16::from_le_bytes([m[0], m[1]])
            }
        })?;
        return Some(match (machine, class) {
            (0x3e, "64-bit") => Other::Vmlinux,
            (m, c) => Other::Arch(format!("a {c} ELF file for {}", machine_name(m))),
        });
    }
    // The arm64 and RISC-V `Image` headers carry their magic at fixed
    // offsets (Documentation/arch/{arm64,riscv}/booting.rst).
    if bytes.get(0x38..0x3c) == Some(b"ARM\x64") {
        return Some(Other::Arch("an arm64 kernel Image".into()));
    }
    if bytes.get(0x30..0x38) == Some(b"RISCV\0\0\0") || bytes.get(0x38..0x3c) == Some(b"RSC\x05") {
        return Some(Other::Arch("a RISC-V kernel Image".into()));
    }
    if bytes.get(0x24..0x28) == Some(&[0x18, 0x28, 0x6f, 0x01]) {
        return Some(Other::Arch("a 32-bit ARM zImage".into()));
    }
    None
}

fn machine_name(m: u16) -> String {
    match m {
        0x03 => "x86 (i386)".into(),
        0x3e => "x86-64".into(),
        0x28 => "ARM".into(),
        0xb7 => "AArch64 (arm64)".into(),
        0xf3 => "RISC-V".into(),
        0x15 => "PowerPC64".into(),
        0x16 => "s390".into(),
        0x08 => "MIPS".into(),
        0x102 => "LoongArch".into(),
        m => format!("machine {m:#x}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bzImage setup header as Kbuild writes it: `HdrS`, protocol
    /// 2.15, xloadflags and the version string the header points at.
    pub(crate) fn fake_bzimage(version: &str, xloadflags: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x800];
        b[0x1f1] = 3;
        b[HDRS_AT..HDRS_AT + 4].copy_from_slice(b"HdrS");
        b[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        b[XLOADFLAGS_AT..XLOADFLAGS_AT + 2].copy_from_slice(&xloadflags.to_le_bytes());
        let at = 0x400usize;
        b[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2]
            .copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        b[at..at + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn the_release_is_the_first_word_of_the_header_s_version_string() {
        let v = "6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-01)";
        let k = parse(&fake_bzimage(v, 0x7f), Path::new("/k/vmlinuz")).unwrap();
        assert_eq!(k.release, "6.1.0-50-amd64");
        assert_eq!(k.version, v);
        assert_eq!(k.protocol, 0x020f);
    }

    #[test]
    fn a_32_bit_image_is_refused_by_name() {
        let e = parse(&fake_bzimage("6.1.0 #1", 0), Path::new("/k/bzImage")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/k/bzImage is a 32-bit x86 kernel (its setup header lacks XLF_KERNEL_64); the lab's guest is x86-64: build it with ARCH=x86_64 (CONFIG_64BIT=y)."
        );
    }

    #[test]
    fn other_machines_and_forms_are_named() {
        let p = Path::new("/k/x");
        let mut arm64 = vec![0u8; 0x100];
        arm64[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(parse(&arm64, p)
            .unwrap_err()
            .to_string()
            .contains("is an arm64 kernel Image; the lab's guest is x86-64"));

        let mut elf = vec![0u8; 0x40];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x12..0x14].copy_from_slice(&0xb7u16.to_le_bytes());
        assert!(parse(&elf, p)
            .unwrap_err()
            .to_string()
            .contains("is a 64-bit ELF file for AArch64 (arm64); the lab's guest is x86-64"));
        elf[4] = 1;
        elf[0x12..0x14].copy_from_slice(&3u16.to_le_bytes());
        assert!(parse(&elf, p)
            .unwrap_err()
            .to_string()
            .contains("is a 32-bit ELF file for x86 (i386)"));
        elf[4] = 2;
        elf[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes());
        assert!(matches!(
            parse(&elf, p).unwrap_err(),
            BzImageError::Vmlinux { .. }
        ));

        let e = parse(b"just some text\n", p).unwrap_err();
        assert!(matches!(e, BzImageError::NotAKernel { .. }), "{e}");
        assert!(e.to_string().starts_with("/k/x is not a kernel:"));
    }

    #[test]
    fn an_image_without_a_version_string_is_refused() {
        let mut b = fake_bzimage("x", 1);
        b[KERNEL_VERSION_AT..KERNEL_VERSION_AT + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            parse(&b, Path::new("/k")).unwrap_err(),
            BzImageError::NoVersion { .. }
        ));
        let mut old = fake_bzimage("x", 1);
        old[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020au16.to_le_bytes());
        assert!(parse(&old, Path::new("/k"))
            .unwrap_err()
            .to_string()
            .contains("boot protocol 2.10, older than 2.12"));
    }
}
