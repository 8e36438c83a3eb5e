//! CXL interleave arithmetic: which device of a region holds a byte of the
//! region, and where on that device.
//!
//! A region of `ways` devices with granularity `g` stripes its host physical
//! range in `g`-byte granules: granule `k` goes to interleave position
//! `k % ways`, at device offset `(k / ways) * g` (plus the byte's offset in
//! the granule). The host bridges, root ports and switches on the way each
//! decode one factor of `ways` (CXL 3.1 8.2.4.20.13, "Interleave
//! arithmetic"); the product is what the endpoints see, so this is all a
//! reader of the devices' backing files needs.

use serde::{Deserialize, Serialize};

/// The decode of one region: its ways and granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interleave {
    pub ways: u64,
    pub granularity: u64,
}

/// Where one byte of a region lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Interleave position: the index of the device in the region.
    pub position: usize,
    /// Offset on that device, from the start of the device's part of the
    /// region (its endpoint decoder's DPA base).
    pub device_offset: u64,
}

impl Interleave {
    /// The device and device offset of byte `offset` of the region.
    pub fn locate(&self, offset: u64) -> Placement {
        let granule = offset / self.granularity;
        let within = offset % self.granularity;
        Placement {
            position: (granule % self.ways) as usize,
            device_offset: (granule / self.ways) * self.granularity + within,
        }
    }

    /// The region offset of byte `device_offset` of the device at
    /// `position`: the inverse of [`Interleave::locate`].
    pub fn region_offset(&self, position: usize, device_offset: u64) -> u64 {
        let row = device_offset / self.granularity;
        let within = device_offset % self.granularity;
        (row * self.ways + position as u64) * self.granularity + within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_way_4k_stripes_granules_round_robin() {
        let i = Interleave {
            ways: 4,
            granularity: 4096,
        };
        let at = |o| {
            let p = i.locate(o);
            (p.position, p.device_offset)
        };
        assert_eq!(at(0), (0, 0));
        assert_eq!(at(4095), (0, 4095));
        assert_eq!(at(4096), (1, 0));
        assert_eq!(at(3 * 4096 + 7), (3, 7));
        assert_eq!(at(4 * 4096), (0, 4096));
        assert_eq!(at(9 * 4096 + 1), (1, 2 * 4096 + 1));
        // One way: every offset stays where it is.
        let one = Interleave {
            ways: 1,
            granularity: 256,
        };
        assert_eq!(one.locate(123_456_789).device_offset, 123_456_789);
    }

    #[test]
    fn region_offset_inverts_locate() {
        for (ways, g) in [(1, 256), (2, 8192), (4, 4096), (8, 256), (16, 1024)] {
            let i = Interleave {
                ways,
                granularity: g,
            };
            for off in [0, 1, g - 1, g, 3 * g + 5, 1 << 20, (1 << 28) - 1] {
                let p = i.locate(off);
                assert_eq!(i.region_offset(p.position, p.device_offset), off);
            }
        }
    }
}
