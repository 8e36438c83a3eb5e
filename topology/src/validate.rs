//! Topology validation: every rule names the field it checks and says how
//! to fix it.

use std::collections::{HashMap, HashSet};

use crate::{ByteSize, DeviceKind, DeviceMode, Topology, TopologyError, CXL_GRANULE, GIB, MIB};

const MAX_HOST_BRIDGES: usize = 4;
const MAX_PORTS_PER_BRIDGE: usize = 8;
const VALID_WAYS: [usize; 5] = [1, 2, 4, 8, 16];
/// 100 µs: beyond any memory, and beyond what stall mode can hold a vCPU
/// for per access without the guest's timers misfiring.
const MAX_LATENCY_NS: u64 = 100_000;
const MIN_GBPS: f64 = 0.001;
const MAX_GBPS: f64 = 10_000.0;

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> TopologyError {
        TopologyError::Invalid {
            file: self.file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) fn validate_and_fill(t: &mut Topology) -> Result<(), TopologyError> {
    let origin = t.origin.clone();
    let c = Checker { file: &origin };

    // Guest.
    if !(1..=64).contains(&t.guest.cpus) {
        return Err(c.err(
            "guest.cpus",
            format!("{} CPUs is out of range; use 1 to 64", t.guest.cpus),
        ));
    }
    if t.guest.memory.bytes() < 256 * MIB || !t.guest.memory.bytes().is_multiple_of(2 * MIB) {
        return Err(c.err(
            "guest.memory",
            format!(
                "{} is not usable guest RAM; use at least 256M, a multiple of 2M",
                t.guest.memory
            ),
        ));
    }

    // Names: unique across every kind, because they become QEMU ids.
    let mut names: HashSet<&str> = HashSet::new();
    let mut all_names: Vec<(String, &str)> = Vec::new();
    for (i, h) in t.host_bridges.iter().enumerate() {
        all_names.push((format!("host_bridge[{i}].name"), &h.name));
    }
    for (i, r) in t.root_ports.iter().enumerate() {
        all_names.push((format!("root_port[{i}].name"), &r.name));
    }
    for (i, s) in t.switches.iter().enumerate() {
        all_names.push((format!("switch[{i}].name"), &s.name));
        for (j, p) in s.downstream_ports.iter().enumerate() {
            all_names.push((format!("switch[{i}].downstream_ports[{j}]"), p));
        }
    }
    for (i, d) in t.devices.iter().enumerate() {
        all_names.push((format!("device[{i}].name"), &d.name));
    }
    for (i, w) in t.windows.iter().enumerate() {
        if let Some(n) = &w.name {
            all_names.push((format!("window[{i}].name"), n));
        }
    }
    for (i, r) in t.regions.iter().enumerate() {
        all_names.push((format!("region[{i}].name"), &r.name));
    }
    for (field, name) in &all_names {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            && name
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphabetic());
        if !ok {
            return Err(c.err(
                field.as_str(),
                format!("name '{name}' is not usable; start with a letter and use at most 32 letters, digits, '.', '_' or '-'"),
            ));
        }
        if !names.insert(name) {
            return Err(c.err(
                field.as_str(),
                format!("name '{name}' is used twice; every name in a topology must be unique"),
            ));
        }
    }

    // Host bridges.
    if t.host_bridges.is_empty() {
        return Err(c.err(
            "host_bridge",
            "the topology has no host bridge; add a [[host_bridge]] with a name",
        ));
    }
    if t.host_bridges.len() > MAX_HOST_BRIDGES {
        return Err(c.err(
            "host_bridge",
            format!(
                "{} host bridges is more than the {MAX_HOST_BRIDGES} supported",
                t.host_bridges.len()
            ),
        ));
    }
    let mut bus_nrs = HashSet::new();
    for (i, h) in t.host_bridges.iter_mut().enumerate() {
        let nr = *h.bus_nr.get_or_insert(12 + 32 * i as u8);
        if nr == 0 || !bus_nrs.insert(nr) {
            return Err(c.err(
                format!("host_bridge[{i}].bus_nr"),
                format!("bus number {nr} is 0 or used by another host bridge"),
            ));
        }
    }
    let bridges: HashSet<&str> = t.host_bridges.iter().map(|h| h.name.as_str()).collect();

    // Root ports.
    let mut per_bridge: HashMap<&str, usize> = HashMap::new();
    for (i, r) in t.root_ports.iter().enumerate() {
        if !bridges.contains(r.host_bridge.as_str()) {
            return Err(c.err(
                format!("root_port[{i}].host_bridge"),
                format!(
                    "host bridge '{}' does not exist; known host bridges: {}",
                    r.host_bridge,
                    list(&bridges)
                ),
            ));
        }
        let n = per_bridge.entry(&r.host_bridge).or_default();
        *n += 1;
        if *n > MAX_PORTS_PER_BRIDGE {
            return Err(c.err(
                format!("root_port[{i}].host_bridge"),
                format!(
                    "host bridge '{}' has more than {MAX_PORTS_PER_BRIDGE} root ports",
                    r.host_bridge
                ),
            ));
        }
    }
    let root_ports: HashSet<&str> = t.root_ports.iter().map(|r| r.name.as_str()).collect();

    // What sits below each port: at most one switch or device.
    let mut occupant: HashMap<&str, String> = HashMap::new();
    for (i, s) in t.switches.iter().enumerate() {
        if !root_ports.contains(s.root_port.as_str()) {
            return Err(c.err(
                format!("switch[{i}].root_port"),
                format!("root port '{}' does not exist; a switch's upstream port sits on a root port: {}", s.root_port, list(&root_ports)),
            ));
        }
        if s.downstream_ports.is_empty() {
            return Err(c.err(
                format!("switch[{i}].downstream_ports"),
                "a switch needs at least one downstream port",
            ));
        }
        if let Some(other) = occupant.insert(&s.root_port, format!("switch '{}'", s.name)) {
            return Err(c.err(
                format!("switch[{i}].root_port"),
                format!("root port '{}' already holds {other}", s.root_port),
            ));
        }
    }
    let dsps: HashSet<&str> = t
        .switches
        .iter()
        .flat_map(|s| s.downstream_ports.iter().map(String::as_str))
        .collect();

    // Devices.
    if t.devices.is_empty() {
        return Err(c.err(
            "device",
            "the topology has no type-3 device; add a [[device]]",
        ));
    }
    let mut serials = HashSet::new();
    // Modes written in the file, before defaults fill them in: a device in
    // a declared region must not ask for another mode than its region.
    let explicit_modes: Vec<Option<DeviceMode>> = t.devices.iter().map(|d| d.mode).collect();
    for (i, d) in t.devices.iter_mut().enumerate() {
        let f = |k: &str| format!("device[{i}].{k}");
        if !root_ports.contains(d.port.as_str()) && !dsps.contains(d.port.as_str()) {
            let mut ports: HashSet<&str> = root_ports.clone();
            ports.extend(dsps.iter());
            return Err(c.err(
                f("port"),
                format!("port '{}' is neither a root port nor a switch downstream port; known ports: {}", d.port, list(&ports)),
            ));
        }
        if let Some(other) = occupant.insert(&d.port, format!("device '{}'", d.name)) {
            return Err(c.err(
                f("port"),
                format!(
                    "port '{}' already holds {other}; give each device its own port",
                    d.port
                ),
            ));
        }
        if d.size.bytes() == 0 || d.size.bytes() % CXL_GRANULE != 0 {
            return Err(c.err(
                f("size"),
                format!(
                    "{} is not a multiple of 256M; CXL decoders map memory in 256 MiB units",
                    d.size
                ),
            ));
        }
        match d.kind {
            DeviceKind::Persistent => {
                let lsa = *d.lsa_size.get_or_insert(ByteSize(MIB));
                if lsa.bytes() == 0 || lsa.bytes() > 16 * MIB {
                    return Err(c.err(
                        f("lsa_size"),
                        format!("{lsa} is not a usable label storage area; use 4K to 16M"),
                    ));
                }
            }
            _ if d.lsa_size.is_some() => {
                return Err(c.err(
                    f("lsa_size"),
                    "only persistent devices have a label storage area; remove lsa_size",
                ));
            }
            _ => {}
        }
        match (d.kind, d.dc_regions) {
            (DeviceKind::Dynamic, n) => {
                let n = *d.dc_regions.get_or_insert(n.unwrap_or(1));
                if !(1..=8).contains(&n) {
                    return Err(c.err(
                        f("dc_regions"),
                        format!("{n} dynamic capacity regions is out of range; use 1 to 8"),
                    ));
                }
                if d.size.bytes() % (u64::from(n) * CXL_GRANULE) != 0 {
                    return Err(c.err(
                        f("size"),
                        format!(
                            "{} does not split into {n} regions of a multiple of 256M",
                            d.size
                        ),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(c.err(
                    f("dc_regions"),
                    "only dynamic devices have dynamic capacity regions; remove dc_regions",
                ))
            }
            _ => {}
        }
        let mode = d.effective_mode();
        let allowed = d.kind.modes();
        if !allowed.contains(&mode) {
            let names: Vec<String> = allowed
                .iter()
                .map(|m| format!("\"{}\"", m.name()))
                .collect();
            return Err(c.err(
                f("mode"),
                format!(
                    "mode \"{}\" is not possible for a {} device; use {}",
                    mode.name(),
                    d.kind.name(),
                    names.join(" or ")
                ),
            ));
        }
        d.mode = Some(mode);
    }
    // Serials: explicit ones first, then fill the gaps with distinct numbers.
    for (i, d) in t.devices.iter().enumerate() {
        if let Some(sn) = d.serial {
            if !serials.insert(sn) {
                return Err(c.err(
                    format!("device[{i}].serial"),
                    format!(
                        "serial {sn} is used by another device; QEMU needs distinct sn= values"
                    ),
                ));
            }
        }
    }
    let mut next = 0x1000_u64;
    for d in t.devices.iter_mut().filter(|d| d.serial.is_none()) {
        while serials.contains(&next) {
            next += 1;
        }
        serials.insert(next);
        d.serial = Some(next);
    }

    // Windows.
    if t.windows.is_empty() {
        return Err(c.err(
            "window",
            "the topology has no fixed memory window; add a [[window]] with a size and targets",
        ));
    }
    for (i, w) in t.windows.iter().enumerate() {
        let f = |k: &str| format!("window[{i}].{k}");
        if w.size.bytes() == 0 || w.size.bytes() % CXL_GRANULE != 0 {
            return Err(c.err(f("size"), format!("{} is not a multiple of 256M", w.size)));
        }
        if w.size.bytes() > 1024 * GIB {
            return Err(c.err(
                f("size"),
                format!("{} is larger than the 1T a window may have here", w.size),
            ));
        }
        if !VALID_WAYS.contains(&w.targets.len()) {
            return Err(c.err(
                f("targets"),
                format!(
                    "{} targets is not a valid interleave; use 1, 2, 4, 8 or 16 host bridges",
                    w.targets.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (j, target) in w.targets.iter().enumerate() {
            if !bridges.contains(target.as_str()) {
                return Err(c.err(
                    format!("window[{i}].targets[{j}]"),
                    format!(
                        "interleave target '{target}' does not exist; targets are host bridges: {}",
                        list(&bridges)
                    ),
                ));
            }
            if !seen.insert(target) {
                return Err(c.err(
                    format!("window[{i}].targets[{j}]"),
                    format!("host bridge '{target}' is listed twice"),
                ));
            }
        }
        let g = w.interleave_granularity.bytes();
        if !g.is_power_of_two() || !(256..=16384).contains(&g) {
            return Err(c.err(
                f("interleave_granularity"),
                format!(
                    "{} is not a CXL interleave granularity; use a power of two from 256 to 16K",
                    w.interleave_granularity
                ),
            ));
        }
    }

    // vhost-user-blk views name devices, each once.
    let devices: HashSet<&str> = t.devices.iter().map(|d| d.name.as_str()).collect();
    let mut views = HashSet::new();
    // The model's figures: stall mode holds vCPUs for them, so zero,
    // negative (refused while parsing) or absurd values are refused here.
    let latency = |field: String, v: Option<u64>, min: u64| {
        match v {
        Some(n) if n < min || n > MAX_LATENCY_NS => Err(c.err(
            field,
            if n == 0 && min > 0 {
                format!("a latency of 0 ns makes CXL memory free; use {min} to {MAX_LATENCY_NS} ns (published CXL devices: about 170-500 ns)")
            } else {
                format!("{n} ns is out of range; use {min} to {MAX_LATENCY_NS} ns (published CXL devices: about 170-500 ns)")
            },
        )),
        _ => Ok(()),
    }
    };
    let bandwidth = |field: String, v: Option<f64>| {
        match v {
        Some(g) if !(MIN_GBPS..=MAX_GBPS).contains(&g) => Err(c.err(
            field,
            format!("{g} GB/s is out of range; use {MIN_GBPS} to {MAX_GBPS} GB/s (a PCIe 5.0 x16 link carries about 64)"),
        )),
        _ => Ok(()),
    }
    };
    for (i, d) in t.devices.iter().enumerate() {
        latency(format!("device[{i}].read_latency_ns"), d.read_latency_ns, 1)?;
        latency(
            format!("device[{i}].write_latency_ns"),
            d.write_latency_ns,
            1,
        )?;
    }
    for (i, h) in t.host_bridges.iter().enumerate() {
        latency(
            format!("host_bridge[{i}].link_latency_ns"),
            h.link_latency_ns,
            0,
        )?;
        bandwidth(
            format!("host_bridge[{i}].link_bandwidth_gbps"),
            h.link_bandwidth_gbps,
        )?;
    }
    for (i, s) in t.switches.iter().enumerate() {
        latency(format!("switch[{i}].link_latency_ns"), s.link_latency_ns, 0)?;
        bandwidth(
            format!("switch[{i}].link_bandwidth_gbps"),
            s.link_bandwidth_gbps,
        )?;
    }
    latency(
        "simulator.local_latency_ns".into(),
        t.simulator.local_latency_ns,
        1,
    )?;

    for (i, name) in t.simulator.vhost_user_blk.iter().enumerate() {
        let field = format!("simulator.vhost_user_blk[{i}]");
        if !devices.contains(name.as_str()) {
            return Err(c.err(
                field,
                format!(
                    "device '{name}' does not exist; a vhost-user-blk view serves a [[device]]: {}",
                    list(&devices)
                ),
            ));
        }
        if !views.insert(name.as_str()) {
            return Err(c.err(
                field,
                format!("device '{name}' is listed twice; a device has at most one block view"),
            ));
        }
    }
    for (i, name) in t.simulator.vhost_user_blk_read_only.iter().enumerate() {
        if !views.contains(name.as_str()) {
            return Err(c.err(
                format!("simulator.vhost_user_blk_read_only[{i}]"),
                format!(
                    "device '{name}' has no block view; list it in simulator.vhost_user_blk too"
                ),
            ));
        }
    }

    // Regions: declared ones, then one per remaining device, each through
    // a window that can decode it and has room.
    let layouts = crate::region::layouts(t).map_err(|r| c.err(r.field, r.reason))?;
    for (i, r) in t.regions.iter().enumerate() {
        let layout = &layouts[i];
        for (j, &d) in layout.devices.iter().enumerate() {
            if let Some(m) = explicit_modes[d] {
                if m != layout.mode {
                    return Err(c.err(
                        format!("device[{d}].mode"),
                        format!(
                            "device '{}' asks for mode \"{}\" but its region '{}' (position {j}) is \"{}\"; set the mode on the [[region]] only",
                            t.devices[d].name,
                            m.name(),
                            r.name,
                            layout.mode.name()
                        ),
                    ));
                }
            }
        }
    }
    for (i, layout) in layouts.iter().enumerate().take(t.regions.len()) {
        let r = &mut t.regions[i];
        r.mode = Some(layout.mode);
        r.granularity = Some(ByteSize(layout.granularity));
        r.window = Some(t.windows[layout.window].display_name(layout.window));
        for &d in &layout.devices {
            t.devices[d].mode = Some(layout.mode);
        }
    }
    Ok(())
}

fn list(set: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = set.iter().copied().collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}
