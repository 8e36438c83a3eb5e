//! The control socket's command lines (`stats [TOP]`, `plugin …`), through
//! `control::answer`, what the socket serves each line with, on a
//! simulator with a plugin hub (no plugin connected, so `arm`, `disarm`
//! and `flush` are refused without waiting). Each answer is one line of
//! JSON, an object, with `error` for a refusal; after every line, the
//! hub's map places each region's first byte on a device and charges no
//! access outside a device.
#![no_main]

use std::sync::{Arc, OnceLock};

use cxl_lab_fuzz::BASE;
use cxl_memsim::control::answer;
use cxl_memsim::plugin::PluginHub;
use cxl_memsim::simulator::Simulator;
use libfuzzer_sys::fuzz_target;

struct State {
    sim: Arc<Simulator>,
    hub: PluginHub,
    rt: tokio::runtime::Runtime,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let sim = cxl_lab_fuzz::simulator(BASE);
        State {
            hub: PluginHub::new(sim.clone()),
            sim,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let st = state();
    let sizes: Vec<u64> = st.sim.devices().iter().map(|d| d.size).collect();
    for line in text.lines() {
        let reply = st.rt.block_on(answer(&st.sim, Some(&st.hub), line));
        assert!(!reply.contains('\n'), "one line: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("the answer is JSON");
        let obj = v.as_object().expect("the answer is an object");
        match line.split_whitespace().next() {
            Some("stats") => assert!(obj.contains_key("requests"), "{line:?}: {reply}"),
            Some("plugin") => assert!(
                obj.get("error").is_some_and(|e| e.is_string())
                    || obj.get("ok") == Some(&serde_json::Value::Bool(true))
                    || obj.contains_key("accesses"),
                "{line:?}: {reply}"
            ),
            _ => assert!(obj["error"].is_string(), "{line:?}: {reply}"),
        }
        // The map as the hub now holds it.
        for (name, &start) in &st.hub.report().regions {
            let (dev, offset) = st
                .hub
                .locate(start, 1)
                .unwrap_or_else(|| panic!("{name}'s first byte {start:#x} is on no device"));
            assert!(offset < sizes[dev]);
            for probe in [start.wrapping_sub(1), start.wrapping_add(sizes[dev] - 1)] {
                for len in [1, 64, 4096] {
                    if let Some((d, off)) = st.hub.locate(probe, len) {
                        assert!(off + len <= sizes[d], "{probe:#x}+{len} at {d}+{off:#x}");
                    }
                }
            }
        }
    }
});
