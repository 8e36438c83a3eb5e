//! Finding CXL objects in sysfs: memdevs by serial, their endpoint
//! decoders, the root decoder of a host bridge, and what a region became.

use std::collections::HashMap;
use std::path::Path;

use crate::plan::Kind;
use crate::sysfs::{parse_num, Sysfs};

/// Memdev names (`mem0`) keyed by serial number, for memdevs whose endpoint
/// port is already enumerated (only then can a region use them).
pub fn memdevs_by_serial(sys: &Sysfs) -> HashMap<u64, String> {
    let devices = sys.path("bus/cxl/devices");
    let endpoints: Vec<String> = sys
        .list(&devices)
        .into_iter()
        .filter(|n| n.starts_with("endpoint"))
        .filter_map(|e| sys.link_name(&devices.join(&e).join("uport")))
        .collect();
    sys.list(&devices)
        .into_iter()
        .filter(|n| is_numbered(n, "mem"))
        .filter(|m| endpoints.contains(m))
        .filter_map(|m| {
            let serial = sys.read(&devices.join(&m).join("serial")).ok()?;
            Some((parse_num(&serial)?, m))
        })
        .collect()
}

/// The endpoint port (`endpoint3`) whose upstream device is `memdev`.
pub fn endpoint_of(sys: &Sysfs, memdev: &str) -> Option<String> {
    let devices = sys.path("bus/cxl/devices");
    sys.list(&devices)
        .into_iter()
        .filter(|n| n.starts_with("endpoint"))
        .find(|e| sys.link_name(&devices.join(e).join("uport")).as_deref() == Some(memdev))
}

/// An endpoint decoder's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderUse {
    /// No DPA allocated: free to use.
    Free(String),
    /// Already part of a region.
    InRegion { decoder: String, region: String },
}

/// The first endpoint decoder of `endpoint` that is in a region, else the
/// first free one (decoders must be used in order).
pub fn endpoint_decoder(sys: &Sysfs, endpoint: &str) -> Option<DecoderUse> {
    let dir = sys.cxl_dev(endpoint);
    let decoders: Vec<String> = sys
        .list(&dir)
        .into_iter()
        .filter(|n| n.starts_with("decoder"))
        .collect();
    for d in &decoders {
        let region = sys.read(&dir.join(d).join("region")).unwrap_or_default();
        if !region.is_empty() {
            return Some(DecoderUse::InRegion {
                decoder: d.clone(),
                region,
            });
        }
    }
    decoders.into_iter().find_map(|d| {
        let dpa = sys
            .read(&dir.join(&d).join("dpa_size"))
            .ok()
            .and_then(|s| parse_num(&s));
        (dpa == Some(0)).then_some(DecoderUse::Free(d))
    })
}

/// The root decoders (one per fixed memory window), in the order the
/// kernel enumerated the CEDT's windows: QEMU's `cxl-fmw.N` order.
pub fn root_decoders(sys: &Sysfs) -> Vec<String> {
    let devices = sys.path("bus/cxl/devices");
    sys.list(&devices)
        .into_iter()
        .filter(|n| n.starts_with("decoder"))
        .filter(|d| {
            sys.read(&devices.join(d).join("devtype"))
                .unwrap_or_default()
                == "cxl_decoder_root"
        })
        .collect()
}

/// The root decoder of window `window`, checked against what the host
/// planned: its host bridge targets, in order, and that it takes memory of
/// `kind`. The error says what differs.
pub fn root_decoder_of_window(
    sys: &Sysfs,
    window: usize,
    targets: &[u64],
    kind: Kind,
) -> Result<String, String> {
    let roots = root_decoders(sys);
    let Some(d) = roots.get(window) else {
        return Err(format!(
            "the kernel shows {} root decoder(s) ({}), not a window {window}",
            roots.len(),
            roots.join(", ")
        ));
    };
    let dir = sys.cxl_dev(d);
    let attr = |a: &str| sys.read(&dir.join(a)).unwrap_or_default();
    let found: Vec<u64> = attr("target_list")
        .split(',')
        .filter_map(parse_num)
        .collect();
    if found != targets {
        return Err(format!(
            "root decoder {d} targets host bridges {found:?}, but window {window} was planned over {targets:?}"
        ));
    }
    let cap = match kind {
        Kind::Volatile | Kind::Dynamic => "cap_ram",
        Kind::Persistent => "cap_pmem",
    };
    if attr(cap) != "1" {
        return Err(format!(
            "root decoder {d} does not take {kind:?} memory ({cap} is not 1)"
        ));
    }
    Ok(d.clone())
}

/// The device-dax instance (`dax0.0`) somewhere below a CXL region.
pub fn dax_below(sys: &Sysfs, region: &str) -> Option<String> {
    let real = std::fs::canonicalize(sys.cxl_dev(region)).ok()?;
    find_dir(&real, 3, &|n| is_dax_instance(n))
}

/// The libnvdimm region (`region1` on the nd bus) starting at `start`.
pub fn nd_region_at(sys: &Sysfs, start: u64) -> Option<String> {
    let devices = sys.path("bus/nd/devices");
    sys.list(&devices)
        .into_iter()
        .filter(|n| is_numbered(n, "region"))
        .find(|r| {
            sys.read(&devices.join(r).join("resource"))
                .ok()
                .and_then(|s| parse_num(&s))
                == Some(start)
        })
}

/// `daxN.M`.
pub fn is_dax_instance(name: &str) -> bool {
    name.strip_prefix("dax")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(a, b)| is_digits(a) && is_digits(b))
}

fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(is_digits)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn find_dir(dir: &Path, depth: u32, pred: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in &entries {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only real directories: sysfs symlinks (subsystem, driver) loop.
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && pred(&name) {
            return Some(name);
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .find_map(|e| find_dir(&e.path(), depth - 1, pred))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A sysfs tree shaped like the one Debian's 6.12 kernel shows for the
    /// default lab topology (taken from a real guest).
    fn fake_sysfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let real = r.join("devices/platform/ACPI0017:00/root0");
        let bus = r.join("bus/cxl/devices");
        fs::create_dir_all(&bus).unwrap();
        let attr = |p: &Path, k: &str, v: &str| {
            fs::create_dir_all(p).unwrap();
            fs::write(p.join(k), format!("{v}\n")).unwrap();
        };
        let root_dec = real.join("decoder0.0");
        for (k, v) in [
            ("devtype", "cxl_decoder_root"),
            ("cap_ram", "1"),
            ("cap_pmem", "1"),
            ("interleave_ways", "1"),
            ("interleave_granularity", "256"),
            ("target_list", "12"),
        ] {
            attr(&root_dec, k, v);
        }
        symlink(&root_dec, bus.join("decoder0.0")).unwrap();
        for (mem, serial, ep) in [
            ("mem0", "0x1001", "endpoint2"),
            ("mem1", "0x1000", "endpoint3"),
        ] {
            let memdir = r.join("devices/pci/").join(mem);
            attr(&memdir, "serial", serial);
            symlink(&memdir, bus.join(mem)).unwrap();
            let epdir = real.join(ep);
            fs::create_dir_all(&epdir).unwrap();
            symlink(&memdir, epdir.join("uport")).unwrap();
            symlink(&epdir, bus.join(ep)).unwrap();
            let n = &ep["endpoint".len()..];
            for i in 0..4 {
                let d = epdir.join(format!("decoder{n}.{i}"));
                attr(&d, "dpa_size", "0x0");
                attr(&d, "region", "");
            }
        }
        t
    }

    #[test]
    fn finds_memdevs_by_serial_and_their_endpoints() {
        let t = fake_sysfs();
        let sys = Sysfs::new(t.path());
        let m = memdevs_by_serial(&sys);
        assert_eq!(m[&0x1000], "mem1");
        assert_eq!(m[&0x1001], "mem0");
        assert_eq!(endpoint_of(&sys, "mem1").as_deref(), Some("endpoint3"));
        assert_eq!(
            endpoint_decoder(&sys, "endpoint3"),
            Some(DecoderUse::Free("decoder3.0".into()))
        );
    }

    #[test]
    fn a_decoder_in_a_region_is_reported() {
        let t = fake_sysfs();
        let sys = Sysfs::new(t.path());
        fs::write(
            sys.cxl_dev("endpoint2").join("decoder2.0/region"),
            "region4\n",
        )
        .unwrap();
        assert_eq!(
            endpoint_decoder(&sys, "endpoint2"),
            Some(DecoderUse::InRegion {
                decoder: "decoder2.0".into(),
                region: "region4".into()
            })
        );
    }

    #[test]
    fn root_decoder_of_a_window_is_checked_against_the_plan() {
        let t = fake_sysfs();
        let sys = Sysfs::new(t.path());
        assert_eq!(
            root_decoder_of_window(&sys, 0, &[12], Kind::Volatile).as_deref(),
            Ok("decoder0.0")
        );
        assert_eq!(
            root_decoder_of_window(&sys, 0, &[13], Kind::Volatile).unwrap_err(),
            "root decoder decoder0.0 targets host bridges [12], but window 0 was planned over [13]"
        );
        assert!(root_decoder_of_window(&sys, 1, &[12], Kind::Volatile)
            .unwrap_err()
            .contains("not a window 1"));
        fs::write(sys.cxl_dev("decoder0.0").join("cap_pmem"), "0\n").unwrap();
        assert!(root_decoder_of_window(&sys, 0, &[12], Kind::Persistent).is_err());
    }

    #[test]
    fn dax_instance_below_a_region() {
        let t = fake_sysfs();
        let sys = Sysfs::new(t.path());
        let region = t
            .path()
            .join("devices/platform/ACPI0017:00/root0/decoder0.0/region0");
        fs::create_dir_all(region.join("dax_region0/dax0.0")).unwrap();
        symlink(&region, sys.cxl_dev("region0")).unwrap();
        assert_eq!(dax_below(&sys, "region0").as_deref(), Some("dax0.0"));
        assert!(is_dax_instance("dax12.3"));
        assert!(!is_dax_instance("dax_region0"));
    }

    #[test]
    fn nd_region_by_start_address() {
        let t = fake_sysfs();
        let sys = Sysfs::new(t.path());
        let nd = t.path().join("bus/nd/devices/region1");
        fs::create_dir_all(&nd).unwrap();
        fs::write(nd.join("resource"), "0x120000000\n").unwrap();
        assert_eq!(
            nd_region_at(&sys, 0x1_2000_0000).as_deref(),
            Some("region1")
        );
        assert_eq!(nd_region_at(&sys, 0x1_1000_0000), None);
    }
}
