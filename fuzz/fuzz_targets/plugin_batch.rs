//! The TCG plugin's batch stream, through the wire decoder and the
//! simulator's plugin hub (`PluginHub::receive`, what a plugin connection's
//! reads go through). The first byte splits the rest into reads of that
//! many bytes, as a socket may. Every decoded message re-encodes to exactly
//! the bytes it was decoded from, and these plus what stays pending are
//! the stream's start; a stream error happens only where a header is bad;
//! every access is charged or counted unmapped, and one charged lies inside
//! its device. A learning message carries one record, the plugin's
//! counters, which is not an access.
#![no_main]

use std::sync::OnceLock;

use cxl_lab_fuzz::BASE;
use cxl_memsim::plugin::PluginHub;
use cxl_memsim_wire::{BatchHeader, Decoder, Kind, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;

fn hub() -> &'static PluginHub {
    static HUB: OnceLock<PluginHub> = OnceLock::new();
    HUB.get_or_init(|| PluginHub::new(cxl_lab_fuzz::simulator(BASE)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1);

    // The wire decoder alone: what it yields re-encodes to the stream.
    let mut dec = Decoder::new();
    let mut reencoded = Vec::new();
    let mut failed = false;
    let mut records = 0;
    'stream: for chunk in stream.chunks(split) {
        dec.push(chunk);
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    assert_eq!(m.records.len(), m.header.count as usize);
                    // Access records are charged; a learning message's one
                    // record is the plugin's counters; control messages have none.
                    match m.header.kind() {
                        Kind::Accesses => records += m.records.len() as u64,
                        Kind::Learning => assert_eq!(m.records.len(), 1),
                        _ => assert!(m.records.is_empty()),
                    }
                    let before = reencoded.len();
                    m.header.encode_into(&mut reencoded);
                    for r in &m.records {
                        r.encode_into(&mut reencoded);
                    }
                    assert_eq!(reencoded.len() - before, m.header.message_len());
                }
                Ok(None) => break,
                Err(_) => {
                    // Only a whole header that does not decode is an error.
                    let at = &stream[reencoded.len()..];
                    let head: &[u8; HEADER_SIZE] = at[..HEADER_SIZE].try_into().unwrap();
                    assert!(BatchHeader::decode(head).is_err());
                    failed = true;
                    break 'stream;
                }
            }
        }
    }
    assert_eq!(
        reencoded,
        stream[..reencoded.len()],
        "messages re-encode to their bytes"
    );
    if !failed {
        assert_eq!(reencoded.len() + dec.pending(), stream.len());
        assert!(
            dec.pending() < HEADER_SIZE || {
                let head: &[u8; HEADER_SIZE] =
                    stream[reencoded.len()..][..HEADER_SIZE].try_into().unwrap();
                let h = BatchHeader::decode(head).expect("a pending header decodes");
                dec.pending() < h.message_len()
            }
        );
    }

    // The simulator's side: the same reads charged through the hub.
    let hub = hub();
    let before = hub.report();
    let mut dec = Decoder::new();
    let mut refused = false;
    for chunk in stream.chunks(split) {
        if hub.receive(u64::MAX, &mut dec, chunk).is_err() {
            refused = true;
            break;
        }
    }
    assert_eq!(refused, failed);
    let after = hub.report();
    assert_eq!(
        after.decode_errors - before.decode_errors,
        u64::from(failed)
    );
    let charged = after.accesses - before.accesses;
    assert_eq!(charged + after.unmapped - before.unmapped, records);
    assert_eq!(
        after.reads + after.writes - before.reads - before.writes,
        records
    );

    let devices = device_sizes();
    // Every record's address, as the hub maps it, lies inside its device.
    let mut dec = Decoder::new();
    dec.push(&stream[..reencoded.len()]);
    while let Ok(Some(m)) = dec.next_message() {
        if m.header.kind() != Kind::Accesses {
            continue;
        }
        for r in &m.records {
            if let Some((dev, offset)) = hub.locate(r.addr, u64::from(r.size)) {
                assert!(
                    offset + u64::from(r.size) <= devices[dev],
                    "{r:?} charged at {dev}+{offset:#x}"
                );
            }
        }
    }
});

/// The devices' sizes, from the topology rather than the simulator.
fn device_sizes() -> &'static [u64] {
    static SIZES: OnceLock<Vec<u64>> = OnceLock::new();
    SIZES.get_or_init(|| {
        cxl_topology::Topology::embedded_default()
            .devices
            .iter()
            .map(|d| d.size.bytes())
            .collect()
    })
}
