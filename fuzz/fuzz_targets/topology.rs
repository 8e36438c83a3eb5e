//! Topology text, through `Topology::parse` (TOML, then validation and
//! defaults). A refusal is an error, never a panic; an accepted topology
//! serialises to TOML that parses to the same topology and the same text,
//! and the queries the lab and the simulator make of a validated topology
//! (each device's path, the regions, the flat offsets, the block views)
//! answer without panicking.
#![no_main]

use cxl_topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t = match Topology::parse(text, "fuzz") {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let toml = t.to_toml();
    let again = Topology::parse(&toml, "fuzz")
        .unwrap_or_else(|e| panic!("an accepted topology re-parses: {e:?}\n{toml}"));
    assert_eq!(again, t, "{toml}");
    assert_eq!(again.to_toml(), toml);
    for d in &t.devices {
        let path = t.path_of(d);
        assert!(t
            .host_bridges
            .iter()
            .any(|h| h.name == path.host_bridge.name));
        let _ = d.serial_number();
    }
    let layouts = t.region_layouts();
    for r in &layouts {
        assert!(r.devices.iter().all(|&i| i < t.devices.len()));
    }
    for d in &t.devices {
        let _ = t.region_of(&d.name);
    }
    let mut end = 0u64;
    for (d, offset) in t.flat_offsets() {
        assert_eq!(offset, end);
        end = offset
            .checked_add(d.size.bytes())
            .expect("the flat space fits 64 bits");
    }
    let _ = t.block_views();
});
