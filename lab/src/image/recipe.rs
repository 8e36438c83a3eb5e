//! The guest image recipe (`images/recipe.toml`) and `/init`, embedded in
//! the `lab` binary so an image always matches the harness that uses it.

use serde::Deserialize;

pub const RECIPE_TOML: &str = include_str!("../../../images/recipe.toml");
pub const INIT_SCRIPT: &str = include_str!("../../../images/init");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub kernel_package_prefix: String,
    pub kernel_package_suffix: String,
    pub packages: Vec<String>,
    pub extra_packages: Vec<String>,
    pub programs: Vec<String>,
    pub extra_programs: Vec<String>,
    /// Directory trees served over virtio-9p, each a symlink in the initramfs.
    pub extra_trees: Vec<String>,
    pub boot_modules: Vec<String>,
    pub late_modules: Vec<String>,
    pub extra_modules: Vec<String>,
    pub guest_tools: Vec<String>,
    pub optional_guest_tools: Vec<String>,
    /// Guest symlinks: path → target.
    pub aliases: std::collections::BTreeMap<String, String>,
}

impl Recipe {
    pub fn embedded() -> Recipe {
        toml::from_str(RECIPE_TOML).expect("images/recipe.toml is valid")
    }

    /// The version number in a kernel package name, when it matches.
    pub fn kernel_version_of(&self, package: &str) -> Option<u32> {
        let mid = package
            .strip_prefix(&self.kernel_package_prefix)?
            .strip_suffix(&self.kernel_package_suffix)?;
        mid.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipe_parses_and_matches_kernel_names() {
        let r = Recipe::embedded();
        assert!(r.boot_modules.iter().any(|m| m == "cxl_acpi"));
        assert_eq!(r.aliases["/opt/ioriot/bin/ioriot"], "/usr/bin/ioriot");
        assert!(r.extra_trees.iter().any(|t| t == "/usr/lib/python3.11"));
        assert_eq!(
            r.kernel_version_of("linux-image-6.12.95+deb12-amd64-unsigned"),
            Some(95)
        );
        assert_eq!(
            r.kernel_version_of("linux-image-6.12.95+deb12-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            r.kernel_version_of("linux-image-6.12.95+deb12-amd64-dbg"),
            None
        );
    }
}
