//! The regression gate: what of a suite's JSON is behaviour (`digest.rs`)
//! and what is a figure with its tolerance (`figures.rs`), the kept runs
//! and saved baselines (`record.rs`), comparing two of them (`compare.rs`)
//! and the JUnit report of a run (`junit.rs`). All pure, no lab needed:
//! the verbs `run`, `compare` and `baseline` put them to work.

pub mod compare;
pub mod digest;
pub mod figures;
pub mod junit;
pub mod record;

/// A suite's JSON from one of two real runs of every suite on the default
/// topology, kept in `fixtures/` (`run1/dax`, `run2/ioriot`, ...).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/src/gate/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}
