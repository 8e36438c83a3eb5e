//! Guest-side CXL region set-up for cxl-lab: given the devices of the
//! topology (a [`plan::Plan`]), create one region per device and bring it up
//! as a `/dev/daxX.Y` or as system RAM, and report what became of each.

pub mod discover;
pub mod plan;
pub mod setup;
pub mod sysfs;
pub mod tools;
