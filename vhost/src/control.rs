//! The Unix control socket: one command per line, one JSON line back.
//!
//! - `stats [TOP]`: the stats report.
//! - `plugin`: the TCG plugin stream's counters.
//! - `plugin map NAME=ADDRESS…`: where devices appear in guest physical
//!   addresses: a one-device region's start, or for an interleaved region
//!   `NAME,NAME…=ADDRESS/GRANULARITY` (its devices in position order).
//! - `plugin arm BASE+SIZE…` / `plugin disarm` / `plugin flush` /
//!   `plugin stall off|[local=COST] [BASE+SIZE=COST…]` (stall mode): relayed to
//!   every connected plugin; the answer comes once each acknowledged
//!   (`{"ok":true,"plugins":N}`), or `{"error":…}`.
//!
//! `cxl-memsim stats` and `cxl-memsim plugin` are its clients, through
//! [`request`] (the one client, in `cxl-memsim-wire`, shared with the lab).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cxl_memsim_wire::Command;
use serde_json::json;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::plugin::PluginHub;
use crate::simulator::Simulator;
use crate::stats::Report;

pub use cxl_memsim_wire::control::{request, ControlError};

/// The stats report with the plugin stream's part when there is one: what
/// `stats` answers, and what `serve` prints in its report lines.
pub fn full_report(sim: &Simulator, hub: Option<&PluginHub>, top: usize) -> Report {
    let mut r = sim.report(top);
    r.plugin = hub.map(PluginHub::report);
    r
}

/// `cxl-memsim stats` without `--json`: the stats answer as text lines.
pub fn stats_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "requests {}  errors {}", v["requests"], v["errors"]);
    let p = &v["plugin"];
    if !p.is_null() {
        let _ = writeln!(
            out,
            "plugin: {} connected, {} armed, {} accesses ({} reads, {} writes), {} unmapped, {} dropped",
            p["connections"], p["armed"], p["accesses"], p["reads"], p["writes"], p["unmapped"], p["plugin_dropped"]
        );
    }
    let _ = writeln!(out, "latency ns: {}", v["latency_ns"]);
    for d in v["devices"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}: {} reads, {} writes, {} pages touched",
            d["name"], d["reads"], d["writes"], d["pages_touched"]
        );
    }
    for p in v["hot_pages"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  hot {} +{:#x}: {} accesses",
            p["device"],
            p["offset"].as_u64().unwrap_or(0),
            p["accesses"]
        );
    }
    out
}

/// How long `plugin arm|disarm|flush` waits for the plugins.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves control connections forever.
pub async fn serve(listener: UnixListener, sim: Arc<Simulator>, hub: Option<Arc<PluginHub>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let sim = sim.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = answer(&sim, hub.as_deref(), &line).await;
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The answer to one command line: one line of JSON (no newline), a
/// refusal being `{"error": …}`.
pub async fn answer(sim: &Simulator, hub: Option<&PluginHub>, line: &str) -> String {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("stats") => {
            let top = words.next().and_then(|t| t.parse().ok()).unwrap_or(10);
            serde_json::to_string(&full_report(sim, hub, top)).expect("report serialises")
        }
        Some("plugin") => {
            let rest: Vec<&str> = words.collect();
            plugin_command(hub, &rest).await.to_string()
        }
        _ => json!({"error": format!("unknown command '{line}'; try 'stats [TOP]' or 'plugin [map|arm|disarm|flush|stall]'")}).to_string(),
    }
}

async fn plugin_command(hub: Option<&PluginHub>, words: &[&str]) -> serde_json::Value {
    let Some(hub) = hub else {
        return json!({"error": "this simulator has no plugin socket; start it with --plugin-socket PATH"});
    };
    let relay = |cmd: Command| async move {
        match hub.command(&cmd, PLUGIN_TIMEOUT).await {
            Ok(n) => json!({"ok": true, "plugins": n}),
            Err(e) => json!({"error": e.to_string()}),
        }
    };
    match words.split_first() {
        None => serde_json::to_value(hub.report()).expect("report serialises"),
        Some((&"map", rest)) => match hub.map(rest) {
            Ok(()) => json!({"ok": true}),
            Err(e) => json!({"error": e.to_string()}),
        },
        Some(_) => match Command::parse(&words.join(" ")) {
            Ok(cmd) => relay(cmd).await,
            Err(e) => json!({"error": e}),
        },
    }
}

/// Asks a running simulator for its stats.
pub async fn query_stats(path: &Path, top: usize) -> Result<serde_json::Value, ControlError> {
    request(path, &format!("stats {top}")).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    #[test]
    fn each_line_gets_one_json_object() {
        let dir = tempfile::tempdir().unwrap();
        let sim = Arc::new(Simulator::open(None, dir.path(), None, None, 0).unwrap());
        let hub = PluginHub::new(sim.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ask = |hub: Option<&PluginHub>, line: &str| -> serde_json::Value {
            serde_json::from_str(&rt.block_on(answer(&sim, hub, line))).unwrap()
        };
        assert_eq!(ask(None, "stats 3")["requests"], 0);
        assert!(ask(None, "plugin")["error"]
            .as_str()
            .unwrap()
            .contains("--plugin-socket"));
        assert!(ask(Some(&hub), "fire")["error"]
            .as_str()
            .unwrap()
            .contains("unknown command 'fire'"));
        assert_eq!(ask(Some(&hub), "plugin map pmem0=0x200000000")["ok"], true);
        assert_eq!(
            ask(Some(&hub), "plugin")["regions"]["pmem0"],
            0x2_0000_0000u64
        );
        assert_eq!(hub.locate(0x2_0000_0040, 8), Some((1, 0x40)));
        assert!(ask(Some(&hub), "plugin flush")["error"]
            .as_str()
            .unwrap()
            .contains("No QEMU plugin is connected"));
    }

    #[test]
    fn stats_text_lists_requests_devices_and_hot_pages() {
        let mut s = Stats::new(vec!["vmem0".into()]);
        s.record(0, 0x2040, false, 64, 201);
        s.record(0, 0x2080, true, 64, 101);
        let v = serde_json::to_value(s.report(5)).unwrap();
        let text = stats_text(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "requests 2  errors {}");
        assert!(lines[1].starts_with("latency ns: {"), "{text}");
        assert_eq!(lines[2], "  \"vmem0\": 1 reads, 1 writes, 1 pages touched");
        assert_eq!(lines[3], "  hot \"vmem0\" +0x2000: 2 accesses");
        assert_eq!(lines.len(), 4, "no plugin line without a plugin: {text}");
    }
}
