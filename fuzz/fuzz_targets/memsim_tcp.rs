//! cxl-memsim's TCP request frames, through the real decoder and handler
//! (`Simulator::handle_frames`, what each connection's read is served by)
//! on real device memory. Every frame gets one response; its status is the
//! one an independent check of op, size, line and range gives; an accepted
//! write lands exactly at its device offset and a read returns what was
//! written there; no byte of device memory next to an access changes.
//! Device memory is zeroed again after each input, so inputs do not depend
//! on each other.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cxl_lab_fuzz::BASE;
use cxl_memsim::protocol::{Request, Response, REQUEST_SIZE, RESPONSE_SIZE};
use cxl_memsim::simulator::Simulator;
use libfuzzer_sys::fuzz_target;

const LINE: u64 = 64;

/// The status the protocol's documentation gives `r`, or the device and
/// offset it accesses.
fn expected(r: &Request, devices: &[(u64, u64)]) -> Result<(usize, u64), u8> {
    if r.op_type > 1 {
        return Err(4);
    }
    if r.size == 0 || r.size > LINE {
        return Err(3);
    }
    if r.addr % LINE + r.size > LINE {
        return Err(2);
    }
    let flat = r.addr.checked_sub(BASE).ok_or(1u8)?;
    devices
        .iter()
        .position(|&(base, size)| flat >= base && flat - base + r.size <= size)
        .map(|d| (d, flat - devices[d].0))
        .ok_or(1)
}

fn sim() -> &'static Arc<Simulator> {
    static SIM: OnceLock<Arc<Simulator>> = OnceLock::new();
    SIM.get_or_init(|| cxl_lab_fuzz::simulator(BASE))
}

fn line_bytes(sim: &Simulator, dev: usize, line: u64) -> [u8; 64] {
    let b = sim.devices()[dev].bytes();
    b[line as usize..line as usize + 64].try_into().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let sim = sim();
    let devices: Vec<(u64, u64)> = sim.devices().iter().map(|d| (d.base, d.size)).collect();
    let mut out = Vec::new();
    sim.handle_frames(data, &mut out);
    let frames = data.len() / REQUEST_SIZE;
    assert_eq!(
        out.len(),
        frames * RESPONSE_SIZE,
        "one response per whole frame"
    );

    // What each touched line should hold: device memory starts zeroed.
    let mut shadow: BTreeMap<(usize, u64), [u8; 64]> = BTreeMap::new();
    for (req, resp) in data
        .chunks_exact(REQUEST_SIZE)
        .zip(out.chunks_exact(RESPONSE_SIZE))
    {
        let req = Request::decode(req.try_into().unwrap());
        let resp = Response::decode(resp.try_into().unwrap());
        assert_eq!(resp.encode()[1..8], [0; 7], "padding is zero");
        match expected(&req, &devices) {
            Err(status) => {
                assert_eq!(resp.status, status, "{req:?}");
                assert_eq!((resp.latency_ns, resp.data), (0, [0; 64]), "{req:?}");
            }
            Ok((dev, offset)) => {
                assert_eq!(resp.status, 0, "{req:?}");
                let line = offset - offset % LINE;
                let at = (offset % LINE) as usize;
                let len = req.size as usize;
                let held = shadow.entry((dev, line)).or_insert([0; 64]);
                if req.op_type == 1 {
                    held[at..at + len].copy_from_slice(&req.data[..len]);
                    assert_eq!(resp.data, [0; 64], "a write returns no data");
                } else {
                    assert_eq!(resp.data[..len], held[at..at + len], "{req:?}");
                    assert!(resp.data[len..] == [0; 64][len..], "{req:?}");
                }
            }
        }
    }
    for (&(dev, line), held) in &shadow {
        assert_eq!(&line_bytes(sim, dev, line), held, "{dev} line {line:#x}");
        for next in [line.checked_sub(LINE), line.checked_add(LINE)]
            .into_iter()
            .flatten()
            .filter(|&l| l < devices[dev].1 && !shadow.contains_key(&(dev, l)))
        {
            assert_eq!(line_bytes(sim, dev, next), [0; 64], "{dev} line {next:#x}");
        }
    }
    // Zero what was written, through the same path.
    let zeroing: Vec<u8> = shadow
        .keys()
        .flat_map(|&(dev, line)| {
            Request::new(1, BASE + devices[dev].0 + line, 64, 0, [0; 64]).encode()
        })
        .collect();
    out.clear();
    sim.handle_frames(&zeroing, &mut out);
    assert!(out.chunks_exact(RESPONSE_SIZE).all(|r| r[0] == 0));
});
