//! Proof on the host that a region is striped as the CXL interleave
//! arithmetic says: after the guest wrote a position-dependent pattern
//! through the region's dax device, each member device's backing file must
//! hold exactly the granules that [`Interleave::locate`] gives it, at the
//! offsets it gives (from the member's DPA base).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cxl_regions::plan::RegionOutcome;
use cxl_topology::Interleave;
use serde::Serialize;

/// Errors reading what the check compares.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Region {region} reports {ways} ways and granularity {granularity}, which is no interleave.")]
    Decode {
        region: String,
        ways: u64,
        granularity: u64,
    },
    #[error("Region {region} lists {members} members for {ways} ways.")]
    Members {
        region: String,
        members: usize,
        ways: u64,
    },
    #[error("Cannot open the backing file {path}.")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read {len} bytes at {offset:#x} of the backing file {path}.")]
    Read {
        path: PathBuf,
        offset: u64,
        len: usize,
        #[source]
        source: std::io::Error,
    },
}

/// What one member device holds of the tested range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberCheck {
    pub device: String,
    pub position: usize,
    /// Granules of the range the arithmetic puts on this device.
    pub granules: u64,
    /// Of those, how many differ from what the guest wrote there.
    pub wrong_granules: u64,
    /// Region offset of the first wrong granule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_wrong: Option<u64>,
}

/// The outcome of checking `len` bytes of a region from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StripeCheck {
    pub region: String,
    pub ways: u64,
    pub granularity: u64,
    pub offset: u64,
    pub len: u64,
    pub members: Vec<MemberCheck>,
}

impl StripeCheck {
    pub fn passed(&self) -> bool {
        self.members
            .iter()
            .all(|m| m.wrong_granules == 0 && m.granules > 0)
    }
}

/// Checks region bytes `[offset, offset + len)` (granule aligned) against
/// `expected(region_offset, buf)`, which fills `buf` with what the guest
/// wrote there, reading each member's bytes from `backing(device)`.
pub fn verify(
    region: &RegionOutcome,
    backing: &dyn Fn(&str) -> PathBuf,
    offset: u64,
    len: u64,
    expected: &dyn Fn(u64, &mut [u8]),
) -> Result<StripeCheck, StripeError> {
    if region.ways == 0 || region.granularity == 0 || !region.granularity.is_power_of_two() {
        return Err(StripeError::Decode {
            region: region.name.clone(),
            ways: region.ways,
            granularity: region.granularity,
        });
    }
    if region.members.len() as u64 != region.ways {
        return Err(StripeError::Members {
            region: region.name.clone(),
            members: region.members.len(),
            ways: region.ways,
        });
    }
    let decode = Interleave {
        ways: region.ways,
        granularity: region.granularity,
    };
    let g = region.granularity;
    let mut members: Vec<MemberCheck> = region
        .members
        .iter()
        .enumerate()
        .map(|(position, m)| MemberCheck {
            device: m.device.clone(),
            position,
            granules: 0,
            wrong_granules: 0,
            first_wrong: None,
        })
        .collect();
    let files = region
        .members
        .iter()
        .map(|m| {
            let path = backing(&m.device);
            std::fs::File::open(&path)
                .map(|f| (path.clone(), f))
                .map_err(|source| StripeError::Open { path, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut want = vec![0u8; g as usize];
    let mut have = vec![0u8; g as usize];
    let mut at = offset - offset % g;
    while at < offset + len {
        let place = decode.locate(at);
        let member = &region.members[place.position];
        let file_offset = member.dpa_base + place.device_offset;
        let (path, file) = &files[place.position];
        read_at(path, file, file_offset, &mut have)?;
        expected(at, &mut want);
        let m = &mut members[place.position];
        m.granules += 1;
        if have != want {
            m.wrong_granules += 1;
            m.first_wrong.get_or_insert(at);
        }
        at += g;
    }
    Ok(StripeCheck {
        region: region.name.clone(),
        ways: region.ways,
        granularity: g,
        offset,
        len,
        members,
    })
}

fn read_at(
    path: &Path,
    file: &std::fs::File,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), StripeError> {
    let len = buf.len();
    file.read_exact_at(buf, offset)
        .map_err(|source| StripeError::Read {
            path: path.to_owned(),
            offset,
            len,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxl_regions::plan::{MemberOutcome, Mode};

    fn region(ways: u64, granularity: u64) -> RegionOutcome {
        RegionOutcome {
            name: "stripe".into(),
            region: "region0".into(),
            mode: Mode::Devdax,
            start: 0x1_1000_0000,
            size: ways << 20,
            ways,
            granularity,
            members: (0..ways)
                .map(|p| MemberOutcome {
                    device: format!("m{p}"),
                    memdev: format!("mem{p}"),
                    decoder: format!("decoder{p}.0"),
                    dpa_base: 0,
                })
                .collect(),
            dax: Some("/dev/dax0.0".into()),
            dax_size: Some(ways << 20),
            pmem: None,
            numa_node: None,
            reused: false,
        }
    }

    fn byte(region_offset: u64) -> u8 {
        (region_offset / 256) as u8 ^ (region_offset as u8)
    }

    /// Writes what a correct 4-way decode would put in each backing file.
    fn striped_files(dir: &Path, r: &RegionOutcome, len: u64) {
        let d = Interleave {
            ways: r.ways,
            granularity: r.granularity,
        };
        let mut files: Vec<Vec<u8>> = vec![vec![0; (len / r.ways) as usize]; r.ways as usize];
        for off in 0..len {
            let p = d.locate(off);
            files[p.position][p.device_offset as usize] = byte(off);
        }
        for (i, data) in files.iter().enumerate() {
            std::fs::write(dir.join(format!("m{i}")), data).unwrap();
        }
    }

    fn expected(at: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(at + i as u64);
        }
    }

    #[test]
    fn a_correctly_striped_region_passes_and_counts_granules_per_member() {
        let t = tempfile::tempdir().unwrap();
        let r = region(4, 1024);
        striped_files(t.path(), &r, 64 * 1024);
        let backing = |d: &str| t.path().join(d);
        let c = verify(&r, &backing, 0, 64 * 1024, &expected).unwrap();
        assert!(c.passed(), "{c:#?}");
        assert!(c.members.iter().all(|m| m.granules == 16));
    }

    #[test]
    fn swapped_members_are_caught_with_the_first_wrong_granule() {
        let t = tempfile::tempdir().unwrap();
        let r = region(2, 4096);
        striped_files(t.path(), &r, 32 * 1024);
        let mut swapped = r.clone();
        swapped.members.swap(0, 1);
        let backing = |d: &str| t.path().join(d);
        let c = verify(&swapped, &backing, 0, 32 * 1024, &expected).unwrap();
        assert!(!c.passed());
        assert_eq!(c.members[0].wrong_granules, 4);
        assert_eq!(c.members[0].first_wrong, Some(0));
        assert_eq!(c.members[1].first_wrong, Some(4096));
    }

    #[test]
    fn a_decode_that_is_no_interleave_is_an_error() {
        let r = region(2, 0);
        let e = verify(&r, &|d| PathBuf::from(d), 0, 4096, &expected).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Region stripe reports 2 ways and granularity 0, which is no interleave."
        );
    }
}
