use super::*;

const BASE: &str = r#"
[[host_bridge]]
name = "hb0"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[device]]
name = "mem0"
kind = "volatile"
size = "256M"
port = "rp0"
[[window]]
size = "4G"
targets = ["hb0"]
"#;

fn invalid(text: &str) -> String {
    match Topology::parse(text, "bad.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_default_is_what_the_issue_asks() {
    let t = Topology::embedded_default();
    assert_eq!(t.host_bridges.len(), 1);
    assert_eq!(t.root_ports.len(), 2);
    assert_eq!(t.devices.len(), 2);
    assert_eq!(t.devices[0].kind, DeviceKind::Volatile);
    assert_eq!(t.devices[0].size.bytes(), 256 * MIB);
    assert_eq!(t.devices[1].kind, DeviceKind::Persistent);
    assert_eq!(t.devices[1].lsa_size, Some(ByteSize(MIB)));
    assert_eq!(t.windows[0].size.bytes(), 4 * GIB);
    assert_ne!(t.devices[0].serial, t.devices[1].serial);
    assert_eq!(t.flat_offsets()[1].1, 256 * MIB);
}

#[test]
fn round_trips_through_toml() {
    let t = Topology::embedded_default();
    let again = Topology::parse(&t.to_toml(), "again").unwrap();
    assert_eq!(t.devices, again.devices);
    assert_eq!(t.windows, again.windows);
}

#[test]
fn timing_mode_is_off_unless_asked_and_survives_the_effective_file() {
    let t = Topology::parse(BASE, "base.toml").unwrap();
    assert!(t.simulator.timing.is_off());
    assert!(
        !t.to_toml().contains("timing"),
        "the default file stays as it was"
    );
    let timed = Topology::parse(&format!("{BASE}[simulator]\ntiming = true\n"), "t.toml").unwrap();
    assert_eq!(timed.simulator.timing, TimingMode::Observe);
    assert_eq!(
        Topology::parse(&timed.to_toml(), "again")
            .unwrap()
            .simulator
            .timing,
        TimingMode::Observe
    );
    let stall = Topology::parse(
        &format!("{BASE}[simulator]\ntiming = \"stall\"\n"),
        "s.toml",
    )
    .unwrap();
    assert_eq!(stall.simulator.timing, TimingMode::Stall);
    assert_eq!(
        Topology::parse(&stall.to_toml(), "again")
            .unwrap()
            .simulator
            .timing,
        TimingMode::Stall
    );
    assert!(
        !stall.simulator.timing_learn(),
        "learning is off by default: counts are exact"
    );
    let learning = Topology::parse(
        &format!("{BASE}[simulator]\ntiming = true\ntiming_learn = true\n"),
        "x.toml",
    )
    .unwrap();
    assert!(learning.simulator.timing_learn());
    assert!(Topology::parse(&learning.to_toml(), "again")
        .unwrap()
        .simulator
        .timing_learn());
    let e =
        Topology::parse(&format!("{BASE}[simulator]\ntiming = \"fast\"\n"), "f.toml").unwrap_err();
    assert!(
        format!("{e:?}").contains("not a timing mode; write true (observe)"),
        "{e:?}"
    );
}

#[test]
fn latencies_and_bandwidths_that_are_zero_negative_or_absurd_are_refused() {
    // Each edit is put right after a section of BASE, whose fields it adds to.
    let bad = |after: &str, edit: &str, want: &[&str]| {
        let text = BASE.replacen(after, &format!("{after}\n{edit}"), 1);
        let e = Topology::parse(&text, "bad.toml").unwrap_err();
        let chain = format!(
            "{e} {:?}",
            std::error::Error::source(&e).map(|s| s.to_string())
        );
        for w in want {
            assert!(chain.contains(w), "{edit}: {chain}");
        }
    };
    let dev = "port = \"rp0\"";
    let hb = "name = \"hb0\"";
    bad(
        dev,
        "read_latency_ns = 0",
        &["device[0].read_latency_ns", "makes CXL memory free"],
    );
    bad(dev, "write_latency_ns = 0", &["device[0].write_latency_ns"]);
    bad(
        dev,
        "read_latency_ns = -250",
        &["-250 ns is negative", "e.g. 250"],
    );
    bad(
        dev,
        "read_latency_ns = 5000000",
        &["device[0].read_latency_ns", "1 to 100000"],
    );
    bad(
        hb,
        "link_bandwidth_gbps = 0.0",
        &["host_bridge[0].link_bandwidth_gbps", "0.001 to 10000"],
    );
    bad(
        hb,
        "link_bandwidth_gbps = -8.0",
        &["host_bridge[0].link_bandwidth_gbps"],
    );
    bad(
        hb,
        "link_bandwidth_gbps = 1e9",
        &["host_bridge[0].link_bandwidth_gbps"],
    );
    bad(
        hb,
        "link_latency_ns = 9000000",
        &["host_bridge[0].link_latency_ns", "0 to 100000"],
    );
    bad(
        "targets = [\"hb0\"]",
        "[simulator]\nlocal_latency_ns = 0",
        &["simulator.local_latency_ns"],
    );
    // What stays valid: the defaults, a zero link latency, a slow link.
    let ok = BASE.replacen(
        hb,
        &format!("{hb}\nlink_latency_ns = 0\nlink_bandwidth_gbps = 0.05"),
        1,
    );
    let t = Topology::parse(&ok, "ok.toml").unwrap();
    assert_eq!(t.simulator.local_latency_ns(), DEFAULT_LOCAL_LATENCY_NS);
    let m = t.modelled(&t.devices[0]);
    assert_eq!((m.read_ns, m.write_ns), (200, 100));
    assert_eq!(m.bandwidth_gbps, 0.05);
    assert!((m.ns_per_byte - 20.0).abs() < 1e-9, "{m:?}");
}

#[test]
fn switch_topology_parses_and_paths_go_through_the_switch() {
    let text = r#"
[[host_bridge]]
name = "hb0"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[switch]]
name = "sw0"
root_port = "rp0"
downstream_ports = ["dsp0", "dsp1"]
[[device]]
name = "a"
kind = "volatile"
size = "512M"
port = "dsp0"
mode = "system-ram"
[[device]]
name = "b"
kind = "dynamic"
size = "512M"
port = "dsp1"
dc_regions = 2
[[window]]
size = "1G"
targets = ["hb0"]
"#;
    let t = Topology::parse(text, "sw.toml").unwrap();
    let p = t.path_of(&t.devices[0]);
    assert_eq!(p.switch.unwrap().name, "sw0");
    assert_eq!(p.root_port.name, "rp0");
    assert_eq!(t.devices[1].effective_mode(), DeviceMode::None);
}

#[test]
fn unknown_field_names_the_file() {
    let e = Topology::parse(&format!("{BASE}\n[guest]\nram = 3\n"), "bad.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("bad.toml: the topology is not valid TOML"),
        "{e}"
    );
    let src = std::error::Error::source(&e).unwrap().to_string();
    assert!(src.contains("unknown field `ram`"), "{src}");
}

#[test]
fn bad_size_string_is_explained() {
    let e = Topology::parse(
        &BASE.replace("size = \"256M\"", "size = \"big\""),
        "bad.toml",
    )
    .unwrap_err();
    let src = std::error::Error::source(&e).unwrap().to_string();
    assert!(src.contains("'big' is not a size"), "{src}");
}

#[test]
fn device_without_a_root_port() {
    let m = invalid(&BASE.replace("port = \"rp0\"", "port = \"nowhere\""));
    assert_eq!(
        m,
        "bad.toml: device[0].port: port 'nowhere' is neither a root port nor a switch downstream port; known ports: rp0"
    );
}

#[test]
fn window_size_not_a_multiple_of_256m() {
    let m = invalid(&BASE.replace("size = \"4G\"", "size = \"300M\""));
    assert_eq!(
        m,
        "bad.toml: window[0].size: 300M is not a multiple of 256M"
    );
}

#[test]
fn interleave_target_that_does_not_exist() {
    let m = invalid(&BASE.replace("targets = [\"hb0\"]", "targets = [\"hb0\", \"hb9\"]"));
    assert_eq!(
        m,
        "bad.toml: window[0].targets[1]: interleave target 'hb9' does not exist; targets are host bridges: hb0"
    );
}

#[test]
fn three_way_interleave_is_refused() {
    let m = invalid(&BASE.replace("targets = [\"hb0\"]", "targets = [\"a\", \"b\", \"c\"]"));
    assert!(
        m.contains("window[0].targets: 3 targets is not a valid interleave"),
        "{m}"
    );
}

#[test]
fn device_size_not_a_multiple_of_256m() {
    let m = invalid(&BASE.replace("size = \"256M\"", "size = \"100M\""));
    assert!(
        m.starts_with("bad.toml: device[0].size: 100M is not a multiple of 256M"),
        "{m}"
    );
}

#[test]
fn root_port_on_a_missing_host_bridge() {
    let m = invalid(&BASE.replace("host_bridge = \"hb0\"", "host_bridge = \"hb1\""));
    assert_eq!(m, "bad.toml: root_port[0].host_bridge: host bridge 'hb1' does not exist; known host bridges: hb0");
}

#[test]
fn duplicate_names() {
    let m = invalid(&BASE.replace("name = \"mem0\"", "name = \"rp0\""));
    assert!(
        m.contains("device[0].name: name 'rp0' is used twice"),
        "{m}"
    );
}

#[test]
fn two_devices_on_one_port() {
    let text = format!("{BASE}\n[[device]]\nname = \"mem1\"\nkind = \"volatile\"\nsize = \"256M\"\nport = \"rp0\"\n");
    let m = invalid(&text);
    assert!(
        m.contains("device[1].port: port 'rp0' already holds device 'mem0'"),
        "{m}"
    );
}

#[test]
fn system_ram_persistent_is_refused() {
    let m = invalid(&BASE.replace(
        "kind = \"volatile\"",
        "kind = \"persistent\"\nmode = \"system-ram\"",
    ));
    assert!(
        m.contains("device[0].mode: mode \"system-ram\" is not possible for a persistent device"),
        "{m}"
    );
}

#[test]
fn lsa_on_volatile_is_refused() {
    let m = invalid(&BASE.replace(
        "kind = \"volatile\"",
        "kind = \"volatile\"\nlsa_size = \"1M\"",
    ));
    assert!(
        m.contains("device[0].lsa_size: only persistent devices"),
        "{m}"
    );
}

#[test]
fn window_too_small_for_devices() {
    let m = invalid(
        &BASE
            .replace("size = \"4G\"", "size = \"256M\"")
            .replace("size = \"256M\"\nport", "size = \"512M\"\nport"),
    );
    assert!(
        m.contains(
            "device[0]: no one-way fixed memory window over host bridge 'hb0' has 512M left"
        ),
        "{m}"
    );
}

#[test]
fn duplicate_serials() {
    let text = format!(
        "{}\n[[root_port]]\nname = \"rp1\"\nhost_bridge = \"hb0\"\n[[device]]\nname = \"mem1\"\nkind = \"volatile\"\nsize = \"256M\"\nport = \"rp1\"\nserial = 7\n",
        BASE.replace("port = \"rp0\"", "port = \"rp0\"\nserial = 7")
    );
    let m = invalid(&text);
    assert!(
        m.contains("device[1].serial: serial 7 is used by another device"),
        "{m}"
    );
}

#[test]
fn missing_file_is_named() {
    let e = Topology::load(Some(Path::new("/nonexistent/topo.toml"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cannot read topology file /nonexistent/topo.toml; it is not a preset name either (presets: default, switched, two-bridges, run-qemu, tiering, dcd, persistent, seed-dax)."
    );
}

#[test]
fn guest_memory_too_small() {
    let m = invalid(&format!("[guest]\nmemory = \"64M\"\n{BASE}"));
    assert!(
        m.contains("guest.memory: 64M is not usable guest RAM"),
        "{m}"
    );
}

#[test]
fn vhost_user_blk_views_name_devices() {
    let t = Topology::parse(
        &format!("{BASE}\n[simulator]\nvhost_user_blk = [\"mem0\"]\nvhost_user_blk_read_only = [\"mem0\"]\n"),
        "blk.toml",
    )
    .unwrap();
    let views = t.block_views();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].0.name.as_str(), views[0].1), ("mem0", true));
    let again = Topology::parse(&t.to_toml(), "again").unwrap();
    assert_eq!(
        again.simulator, t.simulator,
        "views survive the effective topology"
    );
    assert!(Topology::embedded_default().block_views().is_empty());

    let m = invalid(&format!(
        "{BASE}\n[simulator]\nvhost_user_blk = [\"disk9\"]\n"
    ));
    assert_eq!(
        m,
        "bad.toml: simulator.vhost_user_blk[0]: device 'disk9' does not exist; a vhost-user-blk view serves a [[device]]: mem0"
    );
    let m = invalid(&format!(
        "{BASE}\n[simulator]\nvhost_user_blk = [\"mem0\", \"mem0\"]\n"
    ));
    assert_eq!(
        m,
        "bad.toml: simulator.vhost_user_blk[1]: device 'mem0' is listed twice; a device has at most one block view"
    );
    let m = invalid(&format!(
        "{BASE}\n[simulator]\nvhost_user_blk_read_only = [\"mem0\"]\n"
    ));
    assert_eq!(
        m,
        "bad.toml: simulator.vhost_user_blk_read_only[0]: device 'mem0' has no block view; list it in simulator.vhost_user_blk too"
    );
}

#[test]
fn every_preset_parses_and_its_regions_have_the_declared_shape() {
    let shape = |name: &str| -> Vec<(String, usize, u64, String)> {
        let t = Topology::parse(preset(name).unwrap().toml, name).unwrap();
        t.region_layouts()
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.ways(),
                    r.granularity,
                    t.windows[r.window].display_name(r.window),
                )
            })
            .collect()
    };
    let s = |n: &str, w, g, win: &str| (n.to_owned(), w, g, win.to_owned());
    assert_eq!(
        shape("default"),
        [
            s("vmem0", 1, 8192, "window0"),
            s("pmem0", 1, 8192, "window0")
        ]
    );
    assert_eq!(shape("switched"), [s("stripe", 4, 4096, "x1")]);
    assert_eq!(shape("two-bridges"), [s("pair", 2, 4096, "x2")]);
    assert_eq!(
        shape("run-qemu"),
        [s("vmem", 2, 8192, "x1"), s("pmem", 2, 8192, "x2")]
    );
    assert_eq!(shape("tiering"), [s("vmem0", 1, 8192, "window0")]);
    assert!(shape("dcd").is_empty());
    assert_eq!(shape("persistent"), [s("pmem0", 1, 8192, "window0")]);
    assert_eq!(shape("seed-dax"), [s("vmem0", 1, 8192, "window0")]);
    assert_eq!(PRESETS.len(), 8);
}

#[test]
fn a_preset_name_loads_where_no_file_has_that_name() {
    let t = Topology::load(Some(Path::new("switched"))).unwrap();
    assert_eq!(t.origin, "<preset switched>");
    let e = Topology::load(Some(Path::new("no-such-preset"))).unwrap_err();
    assert!(
        e.to_string()
            .contains("it is not a preset name either (presets: default, switched, two-bridges, run-qemu, tiering, dcd, persistent, seed-dax)"),
        "{e}"
    );
}

#[test]
fn declared_regions_survive_the_effective_file_with_their_defaults_filled() {
    let t = Topology::parse(preset("two-bridges").unwrap().toml, "p").unwrap();
    let again = Topology::parse(&t.to_toml(), "again").unwrap();
    assert_eq!(again.regions, t.regions);
    assert_eq!(t.regions[0].window.as_deref(), Some("x2"));
    assert_eq!(t.regions[0].granularity, Some(ByteSize(4096)));
    assert_eq!(t.devices[1].mode, Some(DeviceMode::Devdax));
}

/// Two host bridges with two root ports each; hb0's first port has a
/// switch with two downstream ports. Devices: v0 (hb0/sw), v1 (hb0/sw),
/// v2 (hb1/rp2), v3 (hb1/rp3), p0 (hb0/rp1, persistent), v4 512M (hb1...).
const REGION_BASE: &str = r#"
[[host_bridge]]
name = "hb0"
[[host_bridge]]
name = "hb1"
[[root_port]]
name = "rp0"
host_bridge = "hb0"
[[root_port]]
name = "rp1"
host_bridge = "hb0"
[[root_port]]
name = "rp2"
host_bridge = "hb1"
[[root_port]]
name = "rp3"
host_bridge = "hb1"
[[switch]]
name = "sw0"
root_port = "rp0"
downstream_ports = ["d0", "d1", "d2"]
[[device]]
name = "v0"
kind = "volatile"
size = "256M"
port = "d0"
[[device]]
name = "v1"
kind = "volatile"
size = "256M"
port = "d1"
[[device]]
name = "v2"
kind = "volatile"
size = "256M"
port = "rp2"
[[device]]
name = "v3"
kind = "volatile"
size = "256M"
port = "rp3"
[[device]]
name = "p0"
kind = "persistent"
size = "256M"
port = "rp1"
[[device]]
name = "big"
kind = "volatile"
size = "512M"
port = "d2"
[[window]]
name = "w1"
size = "4G"
targets = ["hb0"]
[[window]]
name = "w2"
size = "4G"
targets = ["hb0", "hb1"]
interleave_granularity = "4K"
[[window]]
name = "w1b"
size = "4G"
targets = ["hb1"]
"#;

#[test]
fn valid_regions_route_at_every_level() {
    // Switch-level (v0, v1 below sw0), root-port-level (v2, v3 on hb1),
    // host-bridge-level with a switch below (v0/v2, v1/v3 across w2).
    for (devices, window) in [
        (r#"["v0", "v1"]"#, "w1"),
        (r#"["v2", "v3"]"#, "w1b"),
        (r#"["v0", "v2", "v1", "v3"]"#, "w2"),
    ] {
        let text = format!(
            "{REGION_BASE}[[region]]\nname = \"r\"\ndevices = {devices}\nwindow = \"{window}\"\n"
        );
        let t = Topology::parse(&text, "ok.toml").unwrap_or_else(|e| panic!("{devices}: {e}"));
        assert_eq!(t.regions[0].window.as_deref(), Some(window));
    }
}

#[test]
fn bad_regions_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        // (region table, field, words of the reason)
        (
            "name = \"r\"\ndevices = []",
            "region[0].devices",
            "names no device",
        ),
        (
            "name = \"r\"\ndevices = [\"nope\"]",
            "region[0].devices[0]",
            "does not exist",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v1\", \"v2\"]",
            "region[0].devices",
            "3 devices is not an interleave",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"p0\"]",
            "region[0].devices[1]",
            "all volatile or all persistent",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"big\"]",
            "region[0].devices[1]",
            "give its devices one size",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v1\"]\ngranularity = \"3K\"",
            "region[0].granularity",
            "not a CXL interleave granularity",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v1\"]\nwindow = \"w9\"",
            "region[0].window",
            "window 'w9' does not exist",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v1\"]\nmode = \"fsdax\"",
            "region[0].mode",
            "not possible for a region of volatile devices",
        ),
        (
            // Position 0 must be below w2's targets[0] = hb0.
            "name = \"r\"\ndevices = [\"v2\", \"v0\"]\nwindow = \"w2\"",
            "region[0].window",
            "sends position 0 to host bridge 'hb0'",
        ),
        (
            // An interleaved window needs the window's granularity.
            "name = \"r\"\ndevices = [\"v0\", \"v2\"]\nwindow = \"w2\"\ngranularity = \"1K\"",
            "region[0].window",
            "use the window's granularity",
        ),
        (
            // w1 decodes hb0 only; v2 is below hb1.
            "name = \"r\"\ndevices = [\"v0\", \"v2\", \"v1\", \"v3\"]\nwindow = \"w1\"",
            "region[0].window",
            "device 'v2' at position 1 is below host bridge 'hb1'",
        ),
        (
            // w2 alternates host bridges: position 1 must be below hb1.
            "name = \"r\"\ndevices = [\"v0\", \"v1\", \"v2\", \"v3\"]\nwindow = \"w2\"",
            "region[0].window",
            "sends position 1 to host bridge 'hb1'",
        ),
        (
            // Two devices behind one root port without a switch.
            "name = \"r\"\ndevices = [\"v2\", \"v3\"]\nwindow = \"w1\"",
            "region[0].window",
            "sends position 0 to host bridge 'hb0'",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v2\", \"v0\", \"v3\"]\nwindow = \"w2\"",
            "region[0].devices[2]",
            "already in region 'r'",
        ),
        (
            "name = \"v0\"\ndevices = [\"v1\"]",
            "region[0].name",
            "used twice",
        ),
        (
            "name = \"r\"\ndevices = [\"v0\", \"v1\"]\nmode = \"none\"",
            "region[0].mode",
            "not possible",
        ),
    ];
    for (table, field, words) in cases {
        let text = format!("{REGION_BASE}[[region]]\n{table}\n");
        let e = invalid(&text);
        assert!(
            e.starts_with(&format!("bad.toml: {field}: ")) && e.contains(words),
            "for\n{table}\nexpected field {field} and '{words}', got: {e}"
        );
    }
    assert!(cases.len() >= 10);
}

#[test]
fn a_device_cannot_ask_for_another_mode_than_its_region() {
    let text = format!(
        "{}[[region]]\nname = \"r\"\ndevices = [\"v0\", \"v1\"]\nmode = \"system-ram\"\n",
        REGION_BASE.replace(
            "name = \"v0\"\nkind = \"volatile\"",
            "name = \"v0\"\nmode = \"devdax\"\nkind = \"volatile\""
        )
    );
    let e = invalid(&text);
    assert!(
        e.contains("device[0].mode") && e.contains("set the mode on the [[region]] only"),
        "{e}"
    );
}

#[test]
fn a_level_whose_decoder_granularity_would_pass_16k_is_refused() {
    // At 16K over w2 (2 ways), hb1's decoder would interleave rp2 and rp3
    // at 16K x 2 = 32K.
    let text =
        format!(
        "{}[[region]]\nname = \"r\"\ndevices = [\"v0\", \"v2\", \"v1\", \"v3\"]\nwindow = \"w2\"\n",
        REGION_BASE.replace("interleave_granularity = \"4K\"", "interleave_granularity = \"16K\"")
    );
    let e = invalid(&text);
    assert!(e.contains("more than the 16K a decoder can encode"), "{e}");
}
