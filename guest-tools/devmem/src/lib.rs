//! `/dev/mem` with a physical offset, as dax-tester and the fio preload
//! take it (`dax-tester /dev/mem 0x110000000 16G all`,
//! `FIO_MEM_DEVICE=/dev/mem FIO_MEM_OFFSET=0x110000000`): `/proc/iomem`
//! parsed ([`iomem`]), the range checked to lie in one CXL region's
//! device-dax memory and never System RAM ([`range`]), and mapped
//! ([`map`]). Nothing here allocates: the preload calls it from its
//! load-time constructor with static buffers.

pub mod iomem;
pub mod map;
pub mod range;

pub use iomem::{Entry, Iomem, Region};
pub use map::{is_dev_mem, map, read_iomem, Errno, MapError, ReadError, IOMEM_MAX};
pub use range::{check, Placement, RangeError, Span};
