//! Regions: which devices the guest's CXL decoders stripe together, through
//! which window, and how the topology's ports route each interleave position.
//!
//! A `[[region]]` names its devices in interleave-position order. Every
//! device that no region names gets a one-device region of its own (what
//! `lab` did before regions could be declared). [`layouts`] resolves both
//! into [`RegionLayout`]s: the window each uses and the decoder settings
//! every level needs, checked against the decode rules the Linux CXL region
//! driver enforces (drivers/cxl/core/region.c) and what QEMU's decoders
//! implement (hw/cxl: host bridge and switch decoders do 1, 2, 4 or 8 ways;
//! endpoints up to 16).

use std::collections::HashMap;

use crate::{DeviceKind, DeviceMode, Topology, CXL_GRANULE};

/// Region ways (endpoint decoders): the power-of-two counts the CXL spec
/// allows. The spec's 3, 6 and 12 ways need 3-way decoders above the
/// endpoint, which QEMU's host bridges and switches do not implement.
pub const REGION_WAYS: [usize; 5] = [1, 2, 4, 8, 16];
/// Ways a host bridge or switch decoder can do in QEMU.
pub const PORT_WAYS: [usize; 4] = [1, 2, 4, 8];
/// Interleave granularities the CXL HDM decoders encode: 256 B to 16 KiB.
pub const MIN_GRANULARITY: u64 = 256;
pub const MAX_GRANULARITY: u64 = 16 * 1024;

/// A region as resolved from the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionLayout {
    /// The `[[region]]` name, or the device's name for a one-device region.
    pub name: String,
    /// Indexes into `Topology::devices`, in interleave-position order.
    pub devices: Vec<usize>,
    pub kind: DeviceKind,
    pub mode: DeviceMode,
    /// Index into `Topology::windows`.
    pub window: usize,
    pub granularity: u64,
    /// Bytes each device contributes (its whole capacity).
    pub device_size: u64,
}

impl RegionLayout {
    pub fn ways(&self) -> usize {
        self.devices.len()
    }
}

/// A refusal: the field it concerns and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        reason: reason.into(),
    }
}

fn size_text(b: u64) -> String {
    crate::ByteSize(b).to_string()
}

/// The route of one device: host bridge, root port, switch downstream port.
struct Route<'a> {
    host_bridge: &'a str,
    root_port: &'a str,
    downstream_port: Option<&'a str>,
}

fn route<'a>(t: &'a Topology, device: usize) -> Route<'a> {
    let d = &t.devices[device];
    let path = t.path_of(d);
    Route {
        host_bridge: &path.host_bridge.name,
        root_port: &path.root_port.name,
        downstream_port: path.switch.map(|_| d.port.as_str()),
    }
}

/// Why window `w` cannot decode a region of `devices` (in position order)
/// at granularity `g`, or `None` when it can.
///
/// Position `p` goes to the window's target `p % W0`; below a host bridge
/// its devices (in position order, `k = p / W0`) go to root port `k % W1`
/// of the ports they use, and below a switch, `j = k / W1`, to downstream
/// port `j % W2`. Each level's decoder granularity is the one above times
/// the ways above (the kernel's rule, with the region's granularity at the
/// root), and must stay encodable.
pub(crate) fn route_problem(
    t: &Topology,
    window: usize,
    devices: &[usize],
    granularity: u64,
) -> Option<String> {
    let w = &t.windows[window];
    let name = |i: usize| t.devices[i].name.as_str();
    let ways = devices.len();
    let w0 = w.targets.len();
    if !ways.is_multiple_of(w0) {
        return Some(format!(
            "window '{}' interleaves {w0} host bridges, so a region through it needs a multiple of {w0} devices, not {ways}",
            w.display_name(window)
        ));
    }
    if w0 > 1 && granularity != w.interleave_granularity.bytes() {
        return Some(format!(
            "window '{}' interleaves host bridges at {}, and the kernel requires a region through an interleaved window to use the window's granularity, not {}",
            w.display_name(window),
            w.interleave_granularity,
            size_text(granularity)
        ));
    }
    let routes: Vec<Route> = devices.iter().map(|&i| route(t, i)).collect();
    for (p, r) in routes.iter().enumerate() {
        let want = &w.targets[p % w0];
        if r.host_bridge != want {
            return Some(format!(
                "device '{}' at position {p} is below host bridge '{}', but window '{}' sends position {p} to host bridge '{want}' (targets[{}]); order the devices so position p is below targets[p % {w0}]",
                name(devices[p]),
                r.host_bridge,
                w.display_name(window),
                p % w0
            ));
        }
    }
    let level_granularity = |ways_above: usize| granularity * ways_above as u64;
    for h in 0..w0 {
        let below: Vec<usize> = (h..ways).step_by(w0).collect();
        let problem = check_level(
            &below,
            |p| routes[p].root_port,
            |p| name(devices[p]),
            &format!("host bridge '{}'", w.targets[h]),
            "root ports",
        );
        if let Some(p) = problem {
            return Some(p);
        }
        let mut ports: Vec<&str> = Vec::new();
        for &p in &below {
            if !ports.contains(&routes[p].root_port) {
                ports.push(routes[p].root_port);
            }
        }
        let w1 = ports.len();
        if w1 > 1 && level_granularity(w0) > MAX_GRANULARITY {
            return Some(format!(
                "host bridge '{}' would interleave its root ports at {} x {w0} = {}, more than the 16K a decoder can encode; use a smaller granularity",
                w.targets[h],
                size_text(granularity),
                size_text(level_granularity(w0))
            ));
        }
        for port in &ports {
            let under: Vec<usize> = below
                .iter()
                .copied()
                .filter(|&p| routes[p].root_port == *port)
                .collect();
            let switched = routes[under[0]].downstream_port.is_some();
            if !switched {
                if under.len() > 1 {
                    return Some(format!(
                        "root port '{port}' holds one device but the region needs it at {} positions",
                        under.len()
                    ));
                }
                continue;
            }
            let problem = check_level(
                &under,
                |p| routes[p].downstream_port.unwrap_or(""),
                |p| name(devices[p]),
                &format!("the switch below root port '{port}'"),
                "downstream ports",
            );
            if let Some(p) = problem {
                return Some(p);
            }
            if under.len() > 1 && level_granularity(w0 * w1) > MAX_GRANULARITY {
                return Some(format!(
                    "the switch below root port '{port}' would interleave at {} x {} = {}, more than the 16K a decoder can encode; use a smaller granularity",
                    size_text(granularity),
                    w0 * w1,
                    size_text(level_granularity(w0 * w1))
                ));
            }
        }
    }
    None
}

/// Checks one decode level: the positions `below` (in order) are spread
/// over the children `child(p)` round robin, each child used by a fixed
/// residue, with a child count a port decoder can do.
fn check_level<'a>(
    below: &[usize],
    child: impl Fn(usize) -> &'a str,
    device: impl Fn(usize) -> &'a str,
    what: &str,
    children: &str,
) -> Option<String> {
    let mut order: Vec<&str> = Vec::new();
    for &p in below {
        if !order.contains(&child(p)) {
            order.push(child(p));
        }
    }
    let n = order.len();
    if !PORT_WAYS.contains(&n) {
        return Some(format!(
            "{what} would interleave {n} {children}; its decoder does 1, 2, 4 or 8"
        ));
    }
    if !below.len().is_multiple_of(n) {
        return Some(format!(
            "{what} has {} of the region's positions over {n} {children}; each of its {children} needs the same number",
            below.len()
        ));
    }
    for (k, &p) in below.iter().enumerate() {
        let want = order[k % n];
        if child(p) != want {
            return Some(format!(
                "{what} sends its positions to its {children} round robin ({}), so device '{}' at position {p} must be below '{want}', not '{}'; reorder the region's devices",
                order.join(", "),
                device(p),
                child(p)
            ));
        }
    }
    None
}

/// Resolves every region of a topology whose devices, ports and windows are
/// already valid: declared regions first, in order, then one region per
/// device that no region names (devices whose mode is `none`, dynamic
/// capacity devices, get none).
pub(crate) fn layouts(t: &Topology) -> Result<Vec<RegionLayout>, Refusal> {
    let by_name: HashMap<&str, usize> = t
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    let windows_by_name: HashMap<String, usize> = t
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| (w.display_name(i), i))
        .collect();
    let mut room: Vec<u64> = t.windows.iter().map(|w| w.size.bytes()).collect();
    let mut claimed: HashMap<usize, String> = HashMap::new();
    let mut out = Vec::new();

    for (ri, r) in t.regions.iter().enumerate() {
        let f = |k: &str| format!("region[{ri}].{k}");
        if r.devices.is_empty() {
            return Err(refuse(
                f("devices"),
                format!(
                    "region '{}' names no device; list its devices in interleave order",
                    r.name
                ),
            ));
        }
        let mut devices = Vec::new();
        for (j, dn) in r.devices.iter().enumerate() {
            let Some(&i) = by_name.get(dn.as_str()) else {
                let mut known: Vec<&str> = by_name.keys().copied().collect();
                known.sort_unstable();
                return Err(refuse(
                    format!("region[{ri}].devices[{j}]"),
                    format!(
                        "device '{dn}' does not exist; known devices: {}",
                        known.join(", ")
                    ),
                ));
            };
            if let Some(other) = claimed.insert(i, r.name.clone()) {
                return Err(refuse(
                    format!("region[{ri}].devices[{j}]"),
                    format!("device '{dn}' is already in region '{other}'; a device belongs to at most one region"),
                ));
            }
            devices.push(i);
        }
        let ways = devices.len();
        if !REGION_WAYS.contains(&ways) {
            return Err(refuse(
                f("devices"),
                format!("{ways} devices is not an interleave the lab can build; use 1, 2, 4, 8 or 16 (the spec's 3, 6 and 12 need 3-way host bridge or switch decoders, which QEMU does not have)"),
            ));
        }
        let kind = t.devices[devices[0]].kind;
        for (j, &i) in devices.iter().enumerate() {
            let d = &t.devices[i];
            if d.kind == DeviceKind::Dynamic {
                return Err(refuse(
                    format!("region[{ri}].devices[{j}]"),
                    format!("device '{}' is a dynamic capacity device; its capacity comes as extents, not as a region declared here", d.name),
                ));
            }
            if d.kind != kind {
                return Err(refuse(
                    format!("region[{ri}].devices[{j}]"),
                    format!(
                        "device '{}' is {} but '{}' is {}; a region's devices are all volatile or all persistent",
                        d.name,
                        d.kind.name(),
                        t.devices[devices[0]].name,
                        kind.name()
                    ),
                ));
            }
            if d.size != t.devices[devices[0]].size {
                return Err(refuse(
                    format!("region[{ri}].devices[{j}]"),
                    format!(
                        "device '{}' has {} but '{}' has {}; an interleaved region takes the same capacity from every device, so give its devices one size",
                        d.name, d.size, t.devices[devices[0]].name, t.devices[devices[0]].size
                    ),
                ));
            }
        }
        let mode = r.mode.unwrap_or(DeviceMode::Devdax);
        let allowed = kind.modes();
        if !allowed.contains(&mode) {
            return Err(refuse(
                f("mode"),
                format!(
                    "mode \"{}\" is not possible for a region of {} devices; use \"{}\" or \"{}\"",
                    mode.name(),
                    kind.name(),
                    allowed[0].name(),
                    allowed[1].name()
                ),
            ));
        }
        if let Some(g) = r.granularity {
            let g = g.bytes();
            if !g.is_power_of_two() || !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&g) {
                return Err(refuse(
                    f("granularity"),
                    format!("{} is not a CXL interleave granularity; use a power of two from 256 to 16K", crate::ByteSize(g)),
                ));
            }
        }
        let device_size = t.devices[devices[0]].size.bytes();
        let size = device_size * ways as u64;
        let candidates: Vec<usize> = match &r.window {
            Some(wn) => match windows_by_name.get(wn) {
                Some(&w) => vec![w],
                None => {
                    let mut known: Vec<&str> = windows_by_name.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(refuse(
                        f("window"),
                        format!(
                            "window '{wn}' does not exist; windows: {}",
                            known.join(", ")
                        ),
                    ));
                }
            },
            None => (0..t.windows.len()).collect(),
        };
        let mut first_problem: Option<String> = None;
        let mut chosen = None;
        for w in candidates {
            let g = r
                .granularity
                .map_or(t.windows[w].interleave_granularity.bytes(), |g| g.bytes());
            if let Some(p) = route_problem(t, w, &devices, g) {
                first_problem.get_or_insert(p);
                continue;
            }
            if room[w] < size {
                first_problem.get_or_insert(format!(
                    "window '{}' has {} left, and the region needs {} ({ways} x {}); enlarge the window",
                    t.windows[w].display_name(w),
                    size_text(room[w]),
                    size_text(size),
                    size_text(device_size)
                ));
                continue;
            }
            chosen = Some((w, g));
            break;
        }
        let Some((window, granularity)) = chosen else {
            let field = if r.window.is_some() {
                f("window")
            } else {
                f("devices")
            };
            return Err(refuse(
                field,
                first_problem.unwrap_or_else(|| {
                    "no window can decode this region; add a [[window]] over its host bridges"
                        .into()
                }),
            ));
        };
        room[window] -= size;
        out.push(RegionLayout {
            name: r.name.clone(),
            devices,
            kind,
            mode,
            window,
            granularity,
            device_size,
        });
    }

    // Every other device: a one-device region in the first one-way window
    // over its host bridge with room left.
    for (i, d) in t.devices.iter().enumerate() {
        if claimed.contains_key(&i) || d.effective_mode() == DeviceMode::None {
            continue;
        }
        let hb = t.path_of(d).host_bridge.name.clone();
        let slot = (0..t.windows.len())
            .find(|&k| t.windows[k].targets == [hb.clone()] && room[k] >= d.size.bytes());
        let Some(k) = slot else {
            return Err(refuse(
                format!("device[{i}]"),
                format!(
                    "no one-way fixed memory window over host bridge '{hb}' has {} left for device '{}'; add or enlarge a [[window]] with targets = [\"{hb}\"], or put the device in a [[region]]",
                    size_text(d.size.bytes()),
                    d.name
                ),
            ));
        };
        room[k] -= d.size.bytes();
        out.push(RegionLayout {
            name: d.name.clone(),
            devices: vec![i],
            kind: d.kind,
            mode: d.effective_mode(),
            window: k,
            granularity: t.windows[k].interleave_granularity.bytes(),
            device_size: d.size.bytes(),
        });
    }
    debug_assert!(out.iter().all(|r| r.device_size % CXL_GRANULE == 0));
    Ok(out)
}
