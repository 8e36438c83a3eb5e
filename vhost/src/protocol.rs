//! The wire protocol, compatible with CXLMemSim's qemu_integration server:
//! native little-endian C structs with natural alignment and no header.
//!
//! request (96 bytes):  u8 op_type (0 read, 1 write), 7 pad, u64 addr,
//!                      u64 size (1..=64), u64 timestamp_ns, u8 data[64]
//! response (80 bytes): u8 status (0 ok), 7 pad, u64 latency_ns, u8 data[64]

pub const REQUEST_SIZE: usize = 96;
pub const RESPONSE_SIZE: usize = 80;
/// Largest access; an access may not cross a line of this size.
pub const LINE: u64 = 64;

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;

/// Response status codes. Non-zero statuses touch no memory and keep the
/// connection usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The address (or its last byte) is outside every device.
    OutOfRange = 1,
    /// `addr .. addr + size` crosses a 64-byte line.
    CrossesLine = 2,
    /// `size` is 0 or larger than 64.
    BadSize = 3,
    /// `op_type` is neither 0 (read) nor 1 (write).
    BadOp = 4,
}

/// A request as on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub op_type: u8,
    pub _pad: [u8; 7],
    pub addr: u64,
    pub size: u64,
    pub timestamp_ns: u64,
    pub data: [u8; 64],
}

/// A response as on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u8,
    pub _pad: [u8; 7],
    pub latency_ns: u64,
    pub data: [u8; 64],
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Request {
    pub fn new(op_type: u8, addr: u64, size: u64, timestamp_ns: u64, data: [u8; 64]) -> Self {
        Request {
            op_type,
            _pad: [0; 7],
            addr,
            size,
            timestamp_ns,
            data,
        }
    }

    pub fn decode(b: &[u8; REQUEST_SIZE]) -> Self {
        let mut data = [0; 64];
        data.copy_from_slice(&b[32..96]);
        Request {
            op_type: b[0],
            _pad: [0; 7],
            addr: u64_at(b, 8),
            size: u64_at(b, 16),
            timestamp_ns: u64_at(b, 24),
            data,
        }
    }

    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0; REQUEST_SIZE];
        b[0] = self.op_type;
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..32].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b[32..96].copy_from_slice(&self.data);
        b
    }

    /// Checks size, op and line crossing (the range check needs the
    /// address map and is done by the caller).
    pub fn validate(&self) -> Result<(), Status> {
        if self.op_type != OP_READ && self.op_type != OP_WRITE {
            return Err(Status::BadOp);
        }
        if self.size == 0 || self.size > LINE {
            return Err(Status::BadSize);
        }
        if self.addr % LINE + self.size > LINE {
            return Err(Status::CrossesLine);
        }
        Ok(())
    }
}

impl Response {
    pub fn new(status: Status, latency_ns: u64, data: [u8; 64]) -> Self {
        Response {
            status: status as u8,
            _pad: [0; 7],
            latency_ns,
            data,
        }
    }

    pub fn decode(b: &[u8; RESPONSE_SIZE]) -> Self {
        let mut data = [0; 64];
        data.copy_from_slice(&b[16..80]);
        Response {
            status: b[0],
            _pad: [0; 7],
            latency_ns: u64_at(b, 8),
            data,
        }
    }

    pub fn encode(&self) -> [u8; RESPONSE_SIZE] {
        let mut b = [0; RESPONSE_SIZE];
        b[0] = self.status;
        b[8..16].copy_from_slice(&self.latency_ns.to_le_bytes());
        b[16..80].copy_from_slice(&self.data);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn golden_layout_matches_the_c_structs() {
        assert_eq!(size_of::<Request>(), 96);
        assert_eq!(align_of::<Request>(), 8);
        assert_eq!(offset_of!(Request, op_type), 0);
        assert_eq!(offset_of!(Request, addr), 8);
        assert_eq!(offset_of!(Request, size), 16);
        assert_eq!(offset_of!(Request, timestamp_ns), 24);
        assert_eq!(offset_of!(Request, data), 32);
        assert_eq!(size_of::<Response>(), 80);
        assert_eq!(offset_of!(Response, status), 0);
        assert_eq!(offset_of!(Response, latency_ns), 8);
        assert_eq!(offset_of!(Response, data), 16);
    }

    #[test]
    fn golden_request_bytes() {
        let mut data = [0u8; 64];
        data[0] = 0xAA;
        data[63] = 0x55;
        let r = Request::new(
            OP_WRITE,
            0x1122_3344_5566_7788,
            8,
            0x0102_0304_0506_0708,
            data,
        );
        let b = r.encode();
        let mut want = [0u8; 96];
        want[0] = 1;
        want[8..16].copy_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        want[16] = 8;
        want[24..32].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        want[32] = 0xAA;
        want[95] = 0x55;
        assert_eq!(b, want);
        assert_eq!(Request::decode(&want), r);
        // The in-memory repr(C) bytes are the wire bytes on little-endian.
        // SAFETY: Request is repr(C) with its padding spelled out (`_pad`):
        // 96 bytes, every one a field's, so all are initialised; transmute
        // checks the sizes match.
        let raw: [u8; 96] = unsafe { std::mem::transmute(r) };
        assert_eq!(raw, want);
    }

    #[test]
    fn golden_response_bytes() {
        let mut data = [0u8; 64];
        data[5] = 9;
        let r = Response::new(Status::CrossesLine, 300, data);
        let b = r.encode();
        let mut want = [0u8; 80];
        want[0] = 2;
        want[8..16].copy_from_slice(&300u64.to_le_bytes());
        want[21] = 9;
        assert_eq!(b, want);
        assert_eq!(Response::decode(&want), r);
        // SAFETY: Response is repr(C) with its padding spelled out (`_pad`):
        // 80 bytes, every one a field's, so all are initialised; transmute
        // checks the sizes match.
        let raw: [u8; 80] = unsafe { std::mem::transmute(r) };
        assert_eq!(raw, want);
    }

    #[test]
    fn validation_distinguishes_each_bad_kind() {
        let ok = Request::new(OP_READ, 0, 64, 0, [0; 64]);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(Request { op_type: 7, ..ok }.validate(), Err(Status::BadOp));
        assert_eq!(Request { size: 0, ..ok }.validate(), Err(Status::BadSize));
        assert_eq!(Request { size: 65, ..ok }.validate(), Err(Status::BadSize));
        assert_eq!(
            Request {
                addr: 60,
                size: 8,
                ..ok
            }
            .validate(),
            Err(Status::CrossesLine)
        );
        assert_eq!(
            Request {
                addr: 56,
                size: 8,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }
}
