//! The record the eBPF program sends (`struct event` in
//! bpf/ioriot_capture.bpf.c), decoded from the ring buffer's bytes.

pub const PATH_LEN: usize = 256;
pub const SIZE: usize = 608;
pub const KIND_SYSCALL: u32 = 1;
pub const KIND_FORK: u32 = 2;
/// A followed task exited (`tgid`, `tid`; the process when they are equal).
pub const KIND_EXIT: u32 = 3;
pub const FLAG_TRUNC1: u32 = 1;
pub const FLAG_TRUNC2: u32 = 2;
/// The string could not be read (bpf_probe_read_user_str failed).
pub const FLAG_FAULT1: u32 = 4;
pub const FLAG_FAULT2: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub t_enter: u64,
    pub t_exit: u64,
    pub tgid: u32,
    pub tid: u32,
    pub kind: u32,
    pub nr: u32,
    pub ret: i64,
    pub args: [u64; 6],
    pub flags: u32,
    pub path1: Vec<u8>,
    pub path2: Vec<u8>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn cstr(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

// Offsets: t_enter 0, t_exit 8, tgid 16, tid 20, kind 24, nr 28, ret 32,
// args 40..88, flags 88, pad 92, path1 96..352, path2 352..608.
impl RawEvent {
    /// Decodes one record; `None` if it is shorter than the struct.
    pub fn decode(b: &[u8]) -> Option<RawEvent> {
        if b.len() < SIZE {
            return None;
        }
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(b, 40 + 8 * i);
        }
        Some(RawEvent {
            t_enter: u64_at(b, 0),
            t_exit: u64_at(b, 8),
            tgid: u32_at(b, 16),
            tid: u32_at(b, 20),
            kind: u32_at(b, 24),
            nr: u32_at(b, 28),
            ret: u64_at(b, 32) as i64,
            args,
            flags: u32_at(b, 88),
            path1: cstr(&b[96..96 + PATH_LEN]),
            path2: cstr(&b[96 + PATH_LEN..96 + 2 * PATH_LEN]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_at_the_c_offsets() {
        let mut b = vec![0u8; SIZE];
        b[0..8].copy_from_slice(&5u64.to_le_bytes());
        b[16..20].copy_from_slice(&42u32.to_le_bytes());
        b[28..32].copy_from_slice(&257u32.to_le_bytes());
        b[32..40].copy_from_slice(&(-2i64).to_le_bytes());
        b[40 + 8 * 5..88].copy_from_slice(&9u64.to_le_bytes());
        b[88..92].copy_from_slice(&FLAG_TRUNC2.to_le_bytes());
        b[96..98].copy_from_slice(b"/a");
        b[352..354].copy_from_slice(b"/b");
        let e = RawEvent::decode(&b).unwrap();
        assert_eq!(
            (e.t_enter, e.tgid, e.nr, e.ret, e.args[5], e.flags),
            (5, 42, 257, -2, 9, 2)
        );
        assert_eq!(
            (e.path1.as_slice(), e.path2.as_slice()),
            (&b"/a"[..], &b"/b"[..])
        );
        assert!(RawEvent::decode(&b[..100]).is_none());
    }
}
