//! The package lock (`images/packages.lock`): the exact Debian packages and
//! versions the guest image is built from, kernel and every library
//! included, so one commit always tests the same kernel and userland. It is
//! embedded in the `lab` binary like the recipe and is part of the image's
//! cache key. `lab image build` downloads exactly these versions;
//! `lab image update` re-resolves them. Everything here is pure: apt is
//! asked in `debs.rs`, and `mod.rs` joins the two.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::recipe::Recipe;

/// The lock as the `lab` binary was built with it.
pub const LOCK_TOML: &str = include_str!("../../../images/packages.lock");

/// Where `lab image update` writes by default: `images/packages.lock` of the
/// source tree this `lab` was built from.
pub fn source_lock_path() -> std::path::PathBuf {
    let lab_crate = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    lab_crate
        .parent()
        .unwrap_or(lab_crate)
        .join("images/packages.lock")
}

const HEADER: &str = "\
# The exact Debian packages (name = version) the cxl-lab guest image is
# built from: the kernel, the recipe's packages and every library they need.
# Written by `lab image update` (new recipe packages and versions gone from
# the archive only; `--newest` moves every package); read by `lab image build`,
# which downloads exactly these versions. It is embedded in the `lab`
# binary: rebuild lab after changing it (`cargo build -p cxl-lab`), and
# commit it with the recipe.
";

/// Errors reading the lock or holding it against the recipe and apt.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("The package lock {origin} is not valid TOML of the expected shape; regenerate it with `lab image update`.")]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("The package lock names kernel {kernel} but pins no version of it; regenerate it with `lab image update`.")]
    KernelUnpinned { kernel: String },
    #[error("images/recipe.toml needs packages that images/packages.lock does not pin:\n{}\nRun `lab image update` (it pins new packages and keeps the others), rebuild lab (`cargo build -p cxl-lab`) and commit images/packages.lock.", list_uncovered(.0))]
    NotCovered(Vec<Uncovered>),
    #[error("Pinned package versions are no longer in the apt archive (and not in the download cache):\n{}\nRun `lab image update` (it re-pins only these), rebuild lab (`cargo build -p cxl-lab`) and commit images/packages.lock; or `apt-get update` if the package lists are stale.", list_gone(.0))]
    Gone(Vec<GonePin>),
}

/// A package the recipe needs and the lock does not pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    pub package: String,
    /// The version apt would take now, when it knows the package.
    pub apt_offers: Option<String>,
}

/// A pin whose version apt can no longer download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GonePin {
    pub package: String,
    pub pinned: String,
    /// The versions apt offers now (none when the package itself is gone).
    pub apt_offers: Vec<String>,
    /// For the kernel: the newest kernel package apt offers instead.
    pub instead: Option<String>,
}

fn list_uncovered(v: &[Uncovered]) -> String {
    v.iter()
        .map(|u| match &u.apt_offers {
            Some(ver) => format!("  {}: not pinned; apt offers {ver}", u.package),
            None => format!("  {}: not pinned; apt does not know it either", u.package),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_gone(v: &[GonePin]) -> String {
    v.iter()
        .map(|g| {
            let offers = if g.apt_offers.is_empty() {
                "apt offers no version of it".to_owned()
            } else {
                format!("apt offers {}", g.apt_offers.join(", "))
            };
            let instead = g
                .instead
                .as_ref()
                .map(|k| format!("; the newest kernel package is {k}"))
                .unwrap_or_default();
            format!("  {} {}: {offers}{instead}", g.package, g.pinned)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lock file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageLock {
    /// The kernel package (also pinned in `packages`).
    pub kernel: String,
    /// Package name -> exact Debian version (epoch included, `1:…`).
    pub packages: BTreeMap<String, String>,
}

impl PackageLock {
    pub fn parse(text: &str, origin: &str) -> Result<PackageLock, LockError> {
        let lock: PackageLock = toml::from_str(text).map_err(|source| LockError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        if !lock.packages.contains_key(&lock.kernel) {
            return Err(LockError::KernelUnpinned {
                kernel: lock.kernel.clone(),
            });
        }
        Ok(lock)
    }

    /// The lock embedded in this `lab` binary.
    pub fn embedded() -> Result<PackageLock, LockError> {
        PackageLock::parse(LOCK_TOML, "embedded in lab (images/packages.lock)")
    }

    /// The file's text: a header saying what it is, then the TOML.
    pub fn to_file_text(&self) -> String {
        format!(
            "{HEADER}\n{}",
            toml::to_string(self).expect("a package lock serialises")
        )
    }

    pub fn kernel_version(&self) -> &str {
        &self.packages[&self.kernel]
    }

    /// The recipe's packages and kernel kind that this lock does not pin:
    /// `roots` are the recipe's package names (kernel placeholders filled in
    /// with this lock's kernel). A kernel of another series than the
    /// recipe's is not covered either.
    pub fn uncovered(&self, recipe: &Recipe, roots: &[String]) -> Vec<String> {
        let mut out: Vec<String> = roots
            .iter()
            .filter(|p| !self.packages.contains_key(*p))
            .cloned()
            .collect();
        if recipe.kernel_version_of(&self.kernel).is_none() {
            out.push(format!(
                "{}<number>{} (the lock's kernel {} is not one)",
                recipe.kernel_package_prefix, recipe.kernel_package_suffix, self.kernel
            ));
        }
        out
    }
}

/// The pins apt can no longer download: `available` holds, per package,
/// the versions apt offers now (a package apt does not know has no entry).
pub fn gone(
    pins: &BTreeMap<String, String>,
    available: &BTreeMap<String, Vec<String>>,
) -> Vec<GonePin> {
    pins.iter()
        .filter_map(|(name, pinned)| {
            let offers = available.get(name).cloned().unwrap_or_default();
            (!offers.contains(pinned)).then(|| GonePin {
                package: name.clone(),
                pinned: pinned.clone(),
                apt_offers: offers,
                instead: None,
            })
        })
        .collect()
}

/// How `lab image update` moves pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdatePolicy {
    /// Keep every pin apt can still download; pin what is new or gone.
    KeepPins,
    /// Take apt's current version of everything.
    Newest,
}

/// The new lock: `wanted` (every package name the image needs, kernel
/// included) each at its old pin when the policy keeps pins and apt still
/// offers it (`available`), else at apt's `candidates` version. Names
/// without a candidate are returned as the error.
pub fn merge(
    old: Option<&PackageLock>,
    kernel: &str,
    wanted: &BTreeSet<String>,
    candidates: &BTreeMap<String, String>,
    available: &BTreeMap<String, Vec<String>>,
    policy: UpdatePolicy,
) -> Result<PackageLock, Vec<String>> {
    let mut packages = BTreeMap::new();
    let mut unknown = Vec::new();
    for name in wanted {
        let kept = old
            .filter(|_| policy == UpdatePolicy::KeepPins)
            .and_then(|o| o.packages.get(name))
            .filter(|v| available.get(name).is_some_and(|a| a.contains(v)));
        match kept.or_else(|| candidates.get(name)) {
            Some(v) => {
                packages.insert(name.clone(), v.clone());
            }
            None => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown);
    }
    Ok(PackageLock {
        kernel: kernel.to_owned(),
        packages,
    })
}

/// What moved between two locks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockDiff {
    /// (package, old version, new version).
    pub changed: Vec<(String, String, String)>,
    /// (package, version).
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    /// (old, new) kernel package, when it changed.
    pub kernel: Option<(String, String)>,
}

impl LockDiff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.kernel.is_none()
    }
}

/// What moved from `old` (none: a first lock) to `new`.
pub fn diff(old: Option<&PackageLock>, new: &PackageLock) -> LockDiff {
    let empty = BTreeMap::new();
    let before = old.map(|o| &o.packages).unwrap_or(&empty);
    let mut d = LockDiff::default();
    for (name, v) in &new.packages {
        match before.get(name) {
            Some(was) if was != v => d.changed.push((name.clone(), was.clone(), v.clone())),
            Some(_) => {}
            None => d.added.push((name.clone(), v.clone())),
        }
    }
    for (name, v) in before {
        if !new.packages.contains_key(name) {
            d.removed.push((name.clone(), v.clone()));
        }
    }
    d.kernel = old
        .filter(|o| o.kernel != new.kernel)
        .map(|o| (o.kernel.clone(), new.kernel.clone()));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn offers(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    const K: &str = "linux-image-6.12.118+deb12-amd64-unsigned";

    fn lock(pairs: &[(&str, &str)]) -> PackageLock {
        PackageLock {
            kernel: K.into(),
            packages: map(pairs),
        }
    }

    #[test]
    fn the_committed_lock_parses_and_covers_the_recipe() {
        let lock = PackageLock::embedded().unwrap();
        let recipe = Recipe::embedded();
        let roots = recipe.package_names(&lock.kernel);
        assert_eq!(lock.uncovered(&recipe, &roots), Vec::<String>::new());
        assert!(lock.packages.contains_key("libc6"), "libraries are pinned");
    }

    #[test]
    fn a_lock_round_trips_through_its_file_text_with_epochs() {
        let l = lock(&[
            (K, "6.12.118-1~deb12u1"),
            ("libcap2", "1:2.66-4+deb12u3+b1"),
        ]);
        let text = l.to_file_text();
        assert!(text.starts_with("# The exact Debian packages"));
        assert!(
            text.contains("\"linux-image-6.12.118+deb12-amd64-unsigned\" = \"6.12.118-1~deb12u1\"")
        );
        assert_eq!(PackageLock::parse(&text, "t").unwrap(), l);
    }

    #[test]
    fn malformed_locks_are_refused_with_the_fix() {
        let e = PackageLock::parse("kernel = 3", "images/packages.lock").unwrap_err();
        assert!(e.to_string().contains("images/packages.lock"));
        assert!(e.to_string().contains("lab image update"));
        let e = PackageLock::parse(
            &format!("kernel = \"{K}\"\n[packages]\nfio = \"3.33-3\"\n"),
            "t",
        )
        .unwrap_err();
        assert!(matches!(e, LockError::KernelUnpinned { .. }), "{e}");
    }

    #[test]
    fn recipe_packages_the_lock_does_not_pin_are_named() {
        let recipe = Recipe::embedded();
        let l = lock(&[(K, "6.12.118-1~deb12u1"), ("fio", "3.33-3")]);
        let roots = vec!["fio".to_owned(), "strace".to_owned()];
        assert_eq!(l.uncovered(&recipe, &roots), vec!["strace".to_owned()]);
        let other = PackageLock {
            kernel: "linux-image-6.1.0-28-amd64".into(),
            packages: map(&[("linux-image-6.1.0-28-amd64", "6.1.119-1")]),
        };
        let u = other.uncovered(&recipe, &[]);
        assert_eq!(u.len(), 1);
        assert!(u[0].contains("is not one"), "{u:?}");
        let msg = LockError::NotCovered(vec![
            Uncovered {
                package: "strace".into(),
                apt_offers: Some("6.1-0.1".into()),
            },
            Uncovered {
                package: "no-such".into(),
                apt_offers: None,
            },
        ])
        .to_string();
        assert!(
            msg.contains("  strace: not pinned; apt offers 6.1-0.1\n"),
            "{msg}"
        );
        assert!(
            msg.contains("  no-such: not pinned; apt does not know it either"),
            "{msg}"
        );
        assert!(msg.contains("Run `lab image update`"), "{msg}");
        assert!(msg.contains("commit images/packages.lock"), "{msg}");
    }

    #[test]
    fn pins_apt_no_longer_offers_are_gone_with_what_it_offers_instead() {
        let pins = map(&[
            ("fio", "3.33-3"),
            ("libc6", "2.36-9+deb12u7"),
            (K, "6.12.118-1~deb12u1"),
        ]);
        let available = offers(&[
            ("fio", &["3.33-3"]),
            ("libc6", &["2.36-9+deb12u14", "2.36-9+deb12u13"]),
        ]);
        let mut g = gone(&pins, &available);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].package, "libc6");
        assert_eq!(g[0].apt_offers, ["2.36-9+deb12u14", "2.36-9+deb12u13"]);
        assert_eq!(g[1].package, K);
        assert!(g[1].apt_offers.is_empty());
        g[1].instead = Some("linux-image-6.12.130+deb12-amd64-unsigned".into());
        let msg = LockError::Gone(g).to_string();
        assert!(
            msg.contains("  libc6 2.36-9+deb12u7: apt offers 2.36-9+deb12u14, 2.36-9+deb12u13\n"),
            "{msg}"
        );
        assert!(msg.contains(&format!(
            "  {K} 6.12.118-1~deb12u1: apt offers no version of it; the newest kernel package is linux-image-6.12.130+deb12-amd64-unsigned"
        )), "{msg}");
        assert!(msg.contains("Run `lab image update`"), "{msg}");
    }

    #[test]
    fn update_keeps_pins_apt_still_offers_and_pins_new_and_gone_ones() {
        let old = lock(&[
            (K, "6.12.118-1~deb12u1"),
            ("fio", "3.33-3"),
            ("libc6", "2.36-9+deb12u7"),
            ("libold", "1.0"),
        ]);
        let wanted: BTreeSet<String> = [K, "fio", "libc6", "strace"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let candidates = map(&[
            (K, "6.12.118-1~deb12u2"),
            ("fio", "3.34-1"),
            ("libc6", "2.36-9+deb12u14"),
            ("strace", "6.1-0.1"),
        ]);
        let available = offers(&[
            (K, &["6.12.118-1~deb12u2", "6.12.118-1~deb12u1"]),
            ("fio", &["3.34-1", "3.33-3"]),
            ("libc6", &["2.36-9+deb12u14"]),
        ]);
        let kept = merge(
            Some(&old),
            K,
            &wanted,
            &candidates,
            &available,
            UpdatePolicy::KeepPins,
        )
        .unwrap();
        assert_eq!(
            kept.packages,
            map(&[
                (K, "6.12.118-1~deb12u1"),
                ("fio", "3.33-3"),
                ("libc6", "2.36-9+deb12u14"),
                ("strace", "6.1-0.1"),
            ])
        );
        let d = diff(Some(&old), &kept);
        assert_eq!(
            d.changed,
            [(
                "libc6".into(),
                "2.36-9+deb12u7".into(),
                "2.36-9+deb12u14".into()
            )]
        );
        assert_eq!(d.added, [("strace".into(), "6.1-0.1".into())]);
        assert_eq!(d.removed, [("libold".into(), "1.0".into())]);
        assert_eq!(d.kernel, None);

        let newest = merge(
            Some(&old),
            K,
            &wanted,
            &candidates,
            &available,
            UpdatePolicy::Newest,
        )
        .unwrap();
        assert_eq!(newest.packages, candidates);
        assert_eq!(diff(Some(&old), &newest).changed.len(), 3);
        assert!(diff(Some(&newest), &newest).is_empty());
    }

    #[test]
    fn a_first_lock_adds_everything_and_unknown_packages_are_named() {
        let wanted: BTreeSet<String> = [K, "fio", "nope"].iter().map(|s| s.to_string()).collect();
        let candidates = map(&[(K, "6.12.118-1~deb12u1"), ("fio", "3.33-3")]);
        let e = merge(
            None,
            K,
            &wanted,
            &candidates,
            &BTreeMap::new(),
            UpdatePolicy::KeepPins,
        )
        .unwrap_err();
        assert_eq!(e, ["nope"]);
        let w2: BTreeSet<String> = [K, "fio"].iter().map(|s| s.to_string()).collect();
        let l = merge(
            None,
            K,
            &w2,
            &candidates,
            &BTreeMap::new(),
            UpdatePolicy::KeepPins,
        )
        .unwrap();
        let d = diff(None, &l);
        assert_eq!(d.added.len(), 2);
        assert!(d.changed.is_empty() && d.removed.is_empty() && d.kernel.is_none());
        let other = PackageLock {
            kernel: "linux-image-6.12.130+deb12-amd64-unsigned".into(),
            packages: map(&[("linux-image-6.12.130+deb12-amd64-unsigned", "6.12.130-1")]),
        };
        assert_eq!(
            diff(Some(&l), &other).kernel,
            Some((K.into(), "linux-image-6.12.130+deb12-amd64-unsigned".into()))
        );
    }
}
