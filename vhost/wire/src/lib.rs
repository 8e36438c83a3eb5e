//! The stream between cxl-memsim's QEMU TCG plugin and the simulator.
//!
//! The plugin connects to the simulator's plugin socket (a Unix stream) and
//! sends messages; the simulator sends text command lines back.
//!
//! Plugin to simulator: messages, each a [`BatchHeader`] (32 bytes) followed
//! by `count` [`AccessRecord`]s (24 bytes each). Native little-endian C
//! structs, natural alignment, no padding between them:
//!
//! | offset | header field | |
//! | --- | --- | --- |
//! | 0 | `magic: [u8; 4]` | `b"CXLP"` |
//! | 4 | `version: u16` | [`VERSION`] (1) |
//! | 6 | `kind: u16` | [`Kind`]: 0 accesses, 1 armed, 2 disarmed, 3 flushed, 4 stalled, 5 learning |
//! | 8 | `count: u32` | records that follow (accesses: at most [`MAX_RECORDS`]; learning: 1, [`LearnCounts`]; others 0) |
//! | 12 | `record_size: u32` | 24: lets a decoder refuse a format it does not know |
//! | 16 | `seq: u64` | message number on this connection, from 0 |
//! | 24 | `dropped: u64` | accesses the plugin could not send so far (cumulative) |
//!
//! | offset | record field | |
//! | --- | --- | --- |
//! | 0 | `addr: u64` | guest physical address of the access |
//! | 8 | `icount: u64` | instructions the vCPU had executed under instrumentation before this one |
//! | 16 | `vcpu: u32` | vCPU index |
//! | 20 | `size: u16` | bytes accessed |
//! | 22 | `flags: u16` | bit 0: store |
//!
//! Simulator to plugin: text lines, `arm BASE+SIZE[ BASE+SIZE…]` (install
//! the instrumentation, keeping accesses inside these guest physical
//! ranges), `disarm` (remove it), `flush` (send buffered records now). The
//! plugin answers `arm`/`disarm` with an armed/disarmed message once QEMU has
//! actually swapped the instrumentation, and `flush` with a flushed message
//! after the records.

use std::fmt;

pub mod args;
#[cfg(feature = "control")]
pub mod control;

/// `b"CXLP"`.
pub const MAGIC: [u8; 4] = *b"CXLP";
pub const VERSION: u16 = 1;
pub const HEADER_SIZE: usize = 32;
pub const RECORD_SIZE: usize = 24;
/// The most records one message may carry (a decoder refuses more: the
/// count is then garbage, not a real batch).
pub const MAX_RECORDS: u32 = 1 << 16;
/// `flags` bit of a store.
pub const FLAG_WRITE: u16 = 1;

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// `count` access records follow.
    Accesses = 0,
    /// The instrumentation is installed: accesses from now on are streamed.
    Armed = 1,
    /// The instrumentation is removed.
    Disarmed = 2,
    /// Every access made before the `flush` command has been sent.
    Flushed = 3,
    /// The stall table of a `stall` command is in force.
    Stalled = 4,
    /// One record follows, the plugin's learning counters ([`LearnCounts`]).
    Learning = 5,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        match v {
            0 => Some(Kind::Accesses),
            1 => Some(Kind::Armed),
            2 => Some(Kind::Disarmed),
            3 => Some(Kind::Flushed),
            4 => Some(Kind::Stalled),
            5 => Some(Kind::Learning),
            _ => None,
        }
    }
}

/// The header of every plugin message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BatchHeader {
    pub magic: [u8; 4],
    pub version: u16,
    pub kind: u16,
    pub count: u32,
    pub record_size: u32,
    pub seq: u64,
    pub dropped: u64,
}

/// One guest access to a watched window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct AccessRecord {
    pub addr: u64,
    pub icount: u64,
    pub vcpu: u32,
    pub size: u16,
    pub flags: u16,
}

impl AccessRecord {
    pub fn is_write(&self) -> bool {
        self.flags & FLAG_WRITE != 0
    }

    /// Appends the record's 24 bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.icount.to_le_bytes());
        out.extend_from_slice(&self.vcpu.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
    }

    pub fn decode(b: &[u8; RECORD_SIZE]) -> AccessRecord {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        AccessRecord {
            addr: u64_at(0),
            icount: u64_at(8),
            vcpu: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            size: u16::from_le_bytes([b[20], b[21]]),
            flags: u16::from_le_bytes([b[22], b[23]]),
        }
    }
}

impl BatchHeader {
    pub fn new(kind: Kind, count: u32, seq: u64, dropped: u64) -> BatchHeader {
        BatchHeader {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u16,
            count,
            record_size: RECORD_SIZE as u32,
            seq,
            dropped,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.record_size.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.dropped.to_le_bytes());
    }

    /// Sets `seq` and `dropped` in the header of an encoded message (the
    /// plugin encodes a batch first and numbers it only when it writes it,
    /// under the socket lock). `msg` holds at least a header.
    pub fn set_seq_and_dropped(msg: &mut [u8], seq: u64, dropped: u64) {
        const SEQ: usize = std::mem::offset_of!(BatchHeader, seq);
        const DROPPED: usize = std::mem::offset_of!(BatchHeader, dropped);
        msg[SEQ..SEQ + 8].copy_from_slice(&seq.to_le_bytes());
        msg[DROPPED..DROPPED + 8].copy_from_slice(&dropped.to_le_bytes());
    }

    /// Reads and checks a header.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Result<BatchHeader, WireError> {
        let h = BatchHeader {
            magic: b[0..4].try_into().expect("4 bytes"),
            version: u16::from_le_bytes([b[4], b[5]]),
            kind: u16::from_le_bytes([b[6], b[7]]),
            count: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            record_size: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            dropped: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        };
        if h.magic != MAGIC {
            return Err(WireError::Magic(h.magic));
        }
        if h.version != VERSION || h.record_size != RECORD_SIZE as u32 {
            return Err(WireError::Version {
                version: h.version,
                record_size: h.record_size,
            });
        }
        let kind = Kind::from_u16(h.kind).ok_or(WireError::Kind(h.kind))?;
        let fits = match kind {
            Kind::Accesses => h.count <= MAX_RECORDS,
            Kind::Learning => h.count == 1,
            _ => h.count == 0,
        };
        if !fits {
            return Err(WireError::Count(h.count));
        }
        Ok(h)
    }

    pub fn kind(&self) -> Kind {
        Kind::from_u16(self.kind).expect("checked by decode")
    }

    /// Bytes of the whole message, header included.
    pub fn message_len(&self) -> usize {
        HEADER_SIZE + self.count as usize * RECORD_SIZE
    }
}

/// The plugin's learning counters (cumulative since it loaded), carried
/// by a learning message as its one 24-byte record: three `u64`s at
/// offsets 0, 8 and 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LearnCounts {
    /// Distinct instructions left out of a translation at least once
    /// (seen: many RAM accesses, none to a watched window).
    pub left_out: u64,
    /// Instructions left out that later touched a watched window under
    /// instrumentation: their accesses while left out went uncounted.
    pub relearned: u64,
    /// Re-translations the plugin made to leave seen instructions out.
    pub prunes: u64,
}

impl LearnCounts {
    /// Appends the whole learning message (header, sequence number and
    /// dropped count 0: the sender patches them in).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        BatchHeader::new(Kind::Learning, 1, 0, 0).encode_into(out);
        for v in [self.left_out, self.relearned, self.prunes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// The counters of a learning message's record (decoded as an
    /// [`AccessRecord`], whose last 8 bytes are `vcpu`, `size`, `flags`).
    pub fn from_record(r: &AccessRecord) -> LearnCounts {
        LearnCounts {
            left_out: r.addr,
            relearned: r.icount,
            prunes: u64::from(r.vcpu) | u64::from(r.size) << 32 | u64::from(r.flags) << 48,
        }
    }
}

/// Encodes one message of access records.
pub fn encode_batch(seq: u64, dropped: u64, records: &[AccessRecord], out: &mut Vec<u8>) {
    let count = u32::try_from(records.len()).expect("a batch fits in u32");
    BatchHeader::new(Kind::Accesses, count, seq, dropped).encode_into(out);
    out.reserve(records.len() * RECORD_SIZE);
    for r in records {
        r.encode_into(out);
    }
}

/// A stream that cannot be decoded further: the connection must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("The stream does not start a message with \"CXLP\" (got {0:02x?}); it is not a cxl-memsim plugin stream or it lost its framing.")]
    Magic([u8; 4]),
    #[error("The plugin speaks wire version {version} with {record_size}-byte records; this simulator reads version 1 with 24-byte records. Build the plugin and the simulator from the same tree.")]
    Version { version: u16, record_size: u32 },
    #[error("Unknown message kind {0}.")]
    Kind(u16),
    #[error("A message announces {0} records, more than any plugin sends (or records on a control message).")]
    Count(u32),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: BatchHeader,
    pub records: Vec<AccessRecord>,
}

/// Splits a byte stream into messages: feed it whatever the socket gave,
/// take every whole message out; a partial one waits for its remaining
/// bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next message starts in `buf`: consumed bytes are dropped
    /// once per `push`, not once per message (a read holds many).
    start: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes of an incomplete message still waiting (a truncated stream
    /// ends with some).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let rest = &self.buf[self.start..];
        let Some(head) = rest.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        let header = BatchHeader::decode(head)?;
        let len = header.message_len();
        if rest.len() < len {
            return Ok(None);
        }
        let records = rest[HEADER_SIZE..len]
            .chunks_exact(RECORD_SIZE)
            .map(|c| AccessRecord::decode(c.try_into().expect("a whole record")))
            .collect();
        self.start += len;
        Ok(Some(Message { header, records }))
    }
}

/// A guest physical range `base .. base + size`, written `BASE+SIZE` (hex
/// with 0x, or decimal) in plugin arguments and `arm` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

impl Window {
    pub fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.base) < self.size
    }

    pub fn parse(s: &str) -> Result<Window, String> {
        let num = |t: &str| {
            let t = t.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse(),
            }
            .map_err(|_| format!("'{t}' is not a number"))
        };
        let (b, s2) = s.split_once('+').ok_or_else(|| {
            format!("window '{s}' is not BASE+SIZE (e.g. 0x110000000+0x100000000)")
        })?;
        let w = Window {
            base: num(b)?,
            size: num(s2)?,
        };
        if w.size == 0 || w.base.checked_add(w.size - 1).is_none() {
            return Err(format!("window '{s}' is empty or wraps past 2^64"));
        }
        Ok(w)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x}", self.base, self.size)
    }
}

/// What stall mode holds a vCPU for one access: `read_ps` or `write_ps`
/// plus `ps_per_byte` times the access's size, in wall picoseconds.
/// Written `READ/WRITE/PER_BYTE` (picoseconds, decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StallCost {
    pub read_ps: u64,
    pub write_ps: u64,
    pub ps_per_byte: u64,
}

impl StallCost {
    /// The stall of one access of `size` bytes.
    #[inline]
    pub fn of(&self, store: bool, size: u64) -> u64 {
        let fixed = if store { self.write_ps } else { self.read_ps };
        fixed.saturating_add(self.ps_per_byte.saturating_mul(size))
    }

    pub fn parse(s: &str) -> Result<StallCost, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let [r, w, b] = parts[..] else {
            return Err(format!(
                "stall cost '{s}' is not READ_PS/WRITE_PS/PS_PER_BYTE (e.g. 150000/60000/100)"
            ));
        };
        let num = |t: &str| {
            t.parse::<u64>()
                .map_err(|_| format!("'{t}' in stall cost '{s}' is not a count of picoseconds"))
        };
        Ok(StallCost {
            read_ps: num(r)?,
            write_ps: num(w)?,
            ps_per_byte: num(b)?,
        })
    }
}

impl fmt::Display for StallCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.read_ps, self.write_ps, self.ps_per_byte)
    }
}

/// The most ranges a stall table holds (each costs a compare per access).
pub const MAX_STALL_RANGES: usize = 16;

/// Stall mode's table: the cost of an access to each range (a CXL
/// region), and of any other user-space access (`local`, guest RAM; the
/// plugin leaves the guest kernel's local accesses alone). Empty ranges
/// and a zero `local`: stall mode is off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StallTable {
    pub local: StallCost,
    pub ranges: Vec<(Window, StallCost)>,
}

impl StallTable {
    pub fn is_off(&self) -> bool {
        self.ranges.is_empty() && self.local == StallCost::default()
    }
}

/// A command the simulator sends the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Arm(Vec<Window>),
    Disarm,
    Flush,
    /// `stall off`, or `stall [local=COST] [BASE+SIZE=COST…]`.
    Stall(StallTable),
}

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("arm") => {
                let windows = words.map(Window::parse).collect::<Result<Vec<_>, _>>()?;
                if windows.is_empty() {
                    return Err("arm needs at least one window BASE+SIZE".into());
                }
                Ok(Command::Arm(windows))
            }
            Some("disarm") => Ok(Command::Disarm),
            Some("flush") => Ok(Command::Flush),
            Some("stall") => {
                let words: Vec<&str> = words.collect();
                let mut t = StallTable::default();
                if words == ["off"] {
                    return Ok(Command::Stall(t));
                }
                if words.is_empty() {
                    return Err(
                        "stall needs 'off' or ranges BASE+SIZE=READ_PS/WRITE_PS/PS_PER_BYTE".into(),
                    );
                }
                for w in words {
                    let (what, cost) = w.split_once('=').ok_or_else(|| {
                        format!("stall word '{w}' is not local=COST or BASE+SIZE=COST")
                    })?;
                    let cost = StallCost::parse(cost)?;
                    if what == "local" {
                        t.local = cost;
                    } else {
                        t.ranges.push((Window::parse(what)?, cost));
                    }
                }
                if t.ranges.len() > MAX_STALL_RANGES {
                    return Err(format!(
                        "stall takes at most {MAX_STALL_RANGES} ranges, got {}",
                        t.ranges.len()
                    ));
                }
                Ok(Command::Stall(t))
            }
            _ => Err(format!("unknown command '{}'", line.trim())),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Arm(ws) => {
                f.write_str("arm")?;
                for w in ws {
                    write!(f, " {w}")?;
                }
                Ok(())
            }
            Command::Disarm => f.write_str("disarm"),
            Command::Flush => f.write_str("flush"),
            Command::Stall(t) if t.is_off() => f.write_str("stall off"),
            Command::Stall(t) => {
                write!(f, "stall local={}", t.local)?;
                for (w, c) in &t.ranges {
                    write!(f, " {w}={c}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<BatchHeader>(), HEADER_SIZE);
        assert_eq!(std::mem::align_of::<BatchHeader>(), 8);
        assert_eq!(std::mem::size_of::<AccessRecord>(), RECORD_SIZE);
        assert_eq!(std::mem::align_of::<AccessRecord>(), 8);
        assert_eq!(std::mem::offset_of!(BatchHeader, count), 8);
        assert_eq!(std::mem::offset_of!(BatchHeader, seq), 16);
        assert_eq!(std::mem::offset_of!(BatchHeader, dropped), 24);
        assert_eq!(std::mem::offset_of!(AccessRecord, vcpu), 16);
        assert_eq!(std::mem::offset_of!(AccessRecord, size), 20);
        assert_eq!(std::mem::offset_of!(AccessRecord, flags), 22);
    }

    #[test]
    fn golden_bytes_of_a_batch() {
        let mut out = Vec::new();
        encode_batch(
            0x0102,
            3,
            &[AccessRecord {
                addr: 0x1_1000_0040,
                icount: 0x0a0b_0c0d,
                vcpu: 1,
                size: 8,
                flags: FLAG_WRITE,
            }],
            &mut out,
        );
        #[rustfmt::skip]
        let golden: [u8; 56] = [
            b'C', b'X', b'L', b'P', 1, 0, 0, 0,          // magic, version 1, kind 0
            1, 0, 0, 0, 24, 0, 0, 0,                     // count 1, record_size 24
            0x02, 0x01, 0, 0, 0, 0, 0, 0,                // seq 0x102
            3, 0, 0, 0, 0, 0, 0, 0,                      // dropped 3
            0x40, 0, 0, 0x10, 1, 0, 0, 0,                // addr 0x1_1000_0040
            0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0, 0,          // icount
            1, 0, 0, 0, 8, 0, 1, 0,                      // vcpu 1, size 8, flags write
        ];
        assert_eq!(out, golden);
        // The struct in memory is the same bytes (x86-64 is little-endian).
        let h = BatchHeader::new(Kind::Accesses, 1, 0x0102, 3);
        // SAFETY: BatchHeader is repr(C), its fields (4, 2, 2, 4, 4, 8, 8
        // bytes) each at its natural alignment: 32 bytes without padding,
        // so every byte is initialised; transmute checks the sizes match.
        let raw: [u8; HEADER_SIZE] = unsafe { std::mem::transmute(h) };
        assert_eq!(raw, golden[..HEADER_SIZE]);
    }

    #[test]
    fn sequence_and_dropped_are_set_in_an_encoded_message() {
        let rec = AccessRecord {
            addr: 0x1_1000_0040,
            icount: 0x0a0b_0c0d,
            vcpu: 1,
            size: 8,
            flags: FLAG_WRITE,
        };
        let mut numbered = Vec::new();
        encode_batch(0x0102, 3, &[rec], &mut numbered);
        let mut patched = Vec::new();
        encode_batch(0, 0, &[rec], &mut patched);
        BatchHeader::set_seq_and_dropped(&mut patched, 0x0102, 3);
        assert_eq!(patched, numbered, "the golden bytes above");
        let mut event = Vec::new();
        BatchHeader::new(Kind::Flushed, 0, 0, 0).encode_into(&mut event);
        BatchHeader::set_seq_and_dropped(&mut event, 9, 4);
        let h = BatchHeader::decode(event[..].try_into().unwrap()).unwrap();
        assert_eq!((h.kind(), h.seq, h.dropped), (Kind::Flushed, 9, 4));
    }

    #[test]
    fn decodes_whole_messages_from_any_split() {
        let recs: Vec<AccessRecord> = (0..5)
            .map(|i| AccessRecord {
                addr: 0x1000 * i,
                icount: i,
                vcpu: (i % 2) as u32,
                size: 64,
                flags: (i % 2) as u16,
            })
            .collect();
        let mut stream = Vec::new();
        encode_batch(0, 0, &recs[..2], &mut stream);
        BatchHeader::new(Kind::Armed, 0, 1, 0).encode_into(&mut stream);
        encode_batch(2, 7, &recs[2..], &mut stream);
        for split in [1, 7, 31, 32, 33, 100, stream.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(split) {
                d.push(chunk);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0].records, recs[..2]);
            assert_eq!(got[1].header.kind(), Kind::Armed);
            assert_eq!(got[2].records, recs[2..]);
            assert_eq!(got[2].header.dropped, 7);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_truncated_batch_waits_and_stays_pending() {
        let mut stream = Vec::new();
        encode_batch(0, 0, &[AccessRecord::default(); 3], &mut stream);
        let mut d = Decoder::new();
        d.push(&stream[..stream.len() - 1]);
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.pending(), stream.len() - 1);
        d.push(&stream[stream.len() - 1..]);
        assert_eq!(d.next_message().unwrap().unwrap().records.len(), 3);
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut good = Vec::new();
        BatchHeader::new(Kind::Accesses, 0, 0, 0).encode_into(&mut good);
        let head = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            patch(&mut b);
            BatchHeader::decode(b[..HEADER_SIZE].try_into().unwrap())
        };
        assert!(head(&|_| {}).is_ok());
        assert_eq!(head(&|b| b[0] = b'X'), Err(WireError::Magic(*b"XXLP")));
        assert!(matches!(
            head(&|b| b[4] = 2),
            Err(WireError::Version { version: 2, .. })
        ));
        assert!(matches!(
            head(&|b| b[12] = 16),
            Err(WireError::Version {
                record_size: 16,
                ..
            })
        ));
        assert_eq!(head(&|b| b[6] = 9), Err(WireError::Kind(9)));
        assert_eq!(
            head(&|b| b[8..12].copy_from_slice(&(MAX_RECORDS + 1).to_le_bytes())),
            Err(WireError::Count(MAX_RECORDS + 1))
        );
        assert_eq!(
            head(&|b| {
                b[6] = 1;
                b[8] = 1;
            }),
            Err(WireError::Count(1))
        );
    }

    #[test]
    fn a_learning_message_carries_three_counters() {
        let c = LearnCounts {
            left_out: 0x0102,
            relearned: 3,
            prunes: 0x0807_0605_0403_0201,
        };
        let mut b = Vec::new();
        c.encode_into(&mut b);
        assert_eq!(b.len(), HEADER_SIZE + RECORD_SIZE);
        assert_eq!(&b[6..8], &[5, 0], "kind 5");
        assert_eq!(&b[8..12], &[1, 0, 0, 0], "one record");
        assert_eq!(&b[32..34], &[2, 1]);
        assert_eq!(&b[48..56], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut d = Decoder::new();
        d.push(&b);
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(m.header.kind(), Kind::Learning);
        assert_eq!(LearnCounts::from_record(&m.records[0]), c);
        // Only one record: more is garbage.
        b[8] = 2;
        assert_eq!(
            BatchHeader::decode(b[..HEADER_SIZE].try_into().unwrap()),
            Err(WireError::Count(2))
        );
    }

    #[test]
    fn windows_and_commands_round_trip() {
        let w = Window::parse("0x110000000+0x100000000").unwrap();
        assert_eq!((w.base, w.size), (0x1_1000_0000, 0x1_0000_0000));
        assert!(w.contains(0x1_1000_0000));
        assert!(w.contains(0x2_0fff_ffff));
        assert!(!w.contains(0x2_1000_0000));
        assert!(!w.contains(0x1_0fff_ffff));
        assert_eq!(Window::parse("4096+10").unwrap().to_string(), "0x1000+0xa");
        assert!(Window::parse("0x10").is_err());
        assert!(Window::parse("0x10+0").is_err());
        assert!(Window::parse("0xffffffffffffffff+2").is_err());
        let c = Command::parse("arm 0x1000+0x10 0x4000+0x20").unwrap();
        assert_eq!(c.to_string(), "arm 0x1000+0x10 0x4000+0x20");
        assert_eq!(Command::parse(&c.to_string()).unwrap(), c);
        assert_eq!(Command::parse("disarm\n").unwrap(), Command::Disarm);
        assert_eq!(Command::parse("flush").unwrap(), Command::Flush);
        assert!(Command::parse("arm").is_err());
        assert!(Command::parse("fire").is_err());
    }

    #[test]
    fn stall_commands_round_trip_and_say_what_is_wrong() {
        let c =
            Command::parse("stall local=1/2/0 0x110000000+0x10000000=150000/60000/100").unwrap();
        let Command::Stall(t) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(t.local.write_ps, 2);
        assert_eq!(t.ranges[0].0.base, 0x1_1000_0000);
        assert_eq!(t.ranges[0].1.of(false, 8), 150_800);
        assert_eq!(t.ranges[0].1.of(true, 1), 60_100);
        assert_eq!(Command::parse(&c.to_string()).unwrap(), c);
        let off = Command::parse("stall off").unwrap();
        assert_eq!(off, Command::Stall(StallTable::default()));
        assert_eq!(off.to_string(), "stall off");
        assert!(Command::parse("stall").unwrap_err().contains("off"));
        assert!(Command::parse("stall 0x1000+0x10=5")
            .unwrap_err()
            .contains("READ_PS/WRITE_PS/PS_PER_BYTE"));
        assert!(Command::parse("stall 0x1000+0x10=-5/1/1")
            .unwrap_err()
            .contains("not a count of picoseconds"));
        assert!(Command::parse("stall 0x1000")
            .unwrap_err()
            .contains("local=COST"));
    }
}
