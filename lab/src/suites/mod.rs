//! `lab run <suite>`: real tools run in the guest, their JSON comes back to
//! the run's `results/<run id>/` directory on the host. One module per suite, each
//! with `pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError>`,
//! registered in [`Suite`]; what several suites share is in
//! `suite_support/`.

pub mod dax;
pub mod dcd;
pub mod faults;
pub mod fio;
pub mod ioriot;
pub mod ioriot_procedure;
pub mod ras;
pub mod seeds;

use std::sync::LazyLock;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use cxl_topology::{DeviceKind, Topology};
use serde_json::Value;

use crate::suite_support::{SuiteContext, SuiteError};

/// A suite of `lab run`; `all` runs them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// dax-tester on every dax device.
    Dax,
    /// fio through the LD_PRELOAD library onto a dax device.
    Fio,
    /// fault-monitor and madvise-collector on mmap workloads.
    Faults,
    /// ioriot capture, generate and replay on a filesystem on CXL memory.
    Ioriot,
    /// CXL poison, event records and AER errors injected through QMP,
    /// compared with what the guest kernel reports.
    Ras,
    /// Dynamic capacity extents added and released through QMP; the
    /// guest's side where its kernel has it (`all` skips it on a topology
    /// without a dynamic device).
    Dcd,
    /// Every command line of the five documents of the tools we
    /// re-implement, as written or with its adaptation named (not in
    /// `all`: it repeats what the suites above measure, for minutes).
    Seeds,
}

impl Suite {
    /// The suite's name on the command line and in results
    /// (`results/<run id>/<name>.json`).
    pub fn name(self) -> &'static str {
        match self {
            Suite::Dax => "dax",
            Suite::Fio => "fio",
            Suite::Faults => "faults",
            Suite::Ioriot => "ioriot",
            Suite::Ras => "ras",
            Suite::Dcd => "dcd",
            Suite::Seeds => "seeds",
        }
    }

    /// Runs the suite in the guest; its JSON result.
    pub async fn run(self, ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
        match self {
            Suite::Dax => dax::run(ctx).await,
            Suite::Fio => fio::run(ctx).await,
            Suite::Faults => faults::run(ctx).await,
            Suite::Ioriot => ioriot::run(ctx).await,
            Suite::Ras => ras::run(ctx).await,
            Suite::Dcd => dcd::run(ctx).await,
            Suite::Seeds => seeds::run(ctx).await,
        }
    }

    /// Whether `all` includes the suite: seeds is a check of the
    /// documents' command lines, run when named.
    pub fn in_all(self) -> bool {
        self != Suite::Seeds
    }

    /// Why `all` leaves the suite out on `topology`, or None when it
    /// applies. Named on its own, a suite runs anyway (and fails with the
    /// same reason).
    pub fn not_for(self, topology: &Topology) -> Option<String> {
        match self {
            Suite::Dcd if !topology.devices.iter().any(|d| d.kind == DeviceKind::Dynamic) => {
                Some("the topology has no dynamic capacity device (kind = \"dynamic\"; `lab up --topology dcd` has one)".into())
            }
            Suite::Ras => [DeviceKind::Volatile, DeviceKind::Persistent]
                .into_iter()
                .find(|k| !topology.devices.iter().any(|d| d.kind == *k))
                .map(|k| {
                    format!(
                        "the topology has no {} device; ras injects into a volatile and a persistent one (the default topology has both)",
                        k.name()
                    )
                }),
            _ => None,
        }
    }
}

/// What `lab run` takes: one suite, or `all` of them (but seeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteArg {
    One(Suite),
    All,
}

impl ValueEnum for SuiteArg {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: LazyLock<Vec<SuiteArg>> = LazyLock::new(|| {
            Suite::value_variants()
                .iter()
                .map(|s| SuiteArg::One(*s))
                .chain([SuiteArg::All])
                .collect()
        });
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            SuiteArg::One(s) => s.to_possible_value(),
            SuiteArg::All => {
                Some(PossibleValue::new("all").help("every suite but seeds, in the order above"))
            }
        }
    }
}

/// The suites `args` name, `all` expanded, each once in the order first
/// named (`dax all` runs dax once).
pub fn expand(args: &[SuiteArg]) -> Vec<Suite> {
    let mut out: Vec<Suite> = Vec::new();
    for a in args {
        let named: Vec<Suite> = match a {
            SuiteArg::One(s) => vec![*s],
            SuiteArg::All => Suite::value_variants()
                .iter()
                .copied()
                .filter(|s| s.in_all())
                .collect(),
        };
        for s in &named {
            if !out.contains(s) {
                out.push(*s);
            }
        }
    }
    out
}

/// [`expand`] for a lab's `topology`: each suite with the reason `all`
/// leaves it out there ([`Suite::not_for`]), None for a suite to run. A
/// suite named on its own always runs.
pub fn expand_for(args: &[SuiteArg], topology: &Topology) -> Vec<(Suite, Option<String>)> {
    expand(args)
        .into_iter()
        .map(|s| {
            let named = args.contains(&SuiteArg::One(s));
            (s, if named { None } else { s.not_for(topology) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct RunArgs {
        #[arg(required = true)]
        suites: Vec<SuiteArg>,
    }

    fn parse(words: &[&str]) -> Result<Vec<Suite>, String> {
        RunArgs::try_parse_from(std::iter::once("run").chain(words.iter().copied()))
            .map(|a| expand(&a.suites))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_kernel_option_table_names_real_suites() {
        for o in crate::kconfig::OPTIONS {
            for s in o.suites {
                assert!(
                    Suite::value_variants().iter().any(|v| v.name() == *s),
                    "CONFIG_{} names suite {s}, which lab run does not have",
                    o.name
                );
            }
        }
    }

    #[test]
    fn names_are_the_command_line_values() {
        for s in Suite::value_variants() {
            let value = s.to_possible_value().unwrap();
            assert_eq!(value.get_name(), s.name());
        }
    }

    #[test]
    fn all_expands_and_unknown_names_are_refused() {
        use Suite::*;
        assert_eq!(
            parse(&["all"]).unwrap(),
            [Dax, Fio, Faults, Ioriot, Ras, Dcd]
        );
        assert_eq!(parse(&["fio"]).unwrap(), [Fio]);
        assert_eq!(
            parse(&["dax", "all"]).unwrap(),
            [Dax, Fio, Faults, Ioriot, Ras, Dcd]
        );
        assert_eq!(parse(&["faults", "dax", "faults"]).unwrap(), [Faults, Dax]);
        assert_eq!(
            parse(&["seeds", "all"]).unwrap(),
            [Seeds, Dax, Fio, Faults, Ioriot, Ras, Dcd]
        );
        let e = parse(&["nope"]).unwrap_err();
        assert!(
            e.contains("invalid value 'nope'")
                && e.contains("[possible values: dax, fio, faults, ioriot, ras, dcd, seeds, all]"),
            "{e}"
        );
    }

    #[test]
    fn all_skips_dcd_without_a_dynamic_device_but_a_named_dcd_runs() {
        use Suite::*;
        let default = Topology::embedded_default();
        let p = cxl_topology::preset("dcd").unwrap();
        let dcd = Topology::parse(p.toml, "dcd").unwrap();
        let all = [SuiteArg::All];
        let skipped: Vec<(Suite, bool)> = expand_for(&all, &default)
            .into_iter()
            .map(|(s, why)| (s, why.is_some()))
            .collect();
        assert_eq!(
            skipped,
            [
                (Dax, false),
                (Fio, false),
                (Faults, false),
                (Ioriot, false),
                (Ras, false),
                (Dcd, true)
            ]
        );
        let why = expand_for(&all, &default)[5].1.clone().unwrap();
        assert!(why.contains("no dynamic capacity device"), "{why}");
        // ras needs a volatile and a persistent device, which dcd lacks.
        assert!(expand_for(&all, &dcd)
            .iter()
            .all(|(s, why)| why.is_none() == (*s != Ras)));
        let named = [SuiteArg::One(Dcd), SuiteArg::All];
        assert_eq!(expand_for(&named, &default)[0], (Dcd, None));
    }

    #[test]
    fn all_skips_ras_without_a_volatile_and_a_persistent_device() {
        use Suite::*;
        let p = cxl_topology::preset("switched").unwrap();
        let switched = Topology::parse(p.toml, "switched").unwrap();
        let plan = expand_for(&[SuiteArg::All], &switched);
        let ras = plan.iter().find(|(s, _)| *s == Ras).unwrap();
        assert_eq!(
            ras.1.as_deref(),
            Some("the topology has no persistent device; ras injects into a volatile and a persistent one (the default topology has both)")
        );
        let default = Topology::embedded_default();
        assert_eq!(Ras.not_for(&default), None);
        assert_eq!(expand_for(&[SuiteArg::One(Ras)], &switched)[0], (Ras, None));
    }
}
