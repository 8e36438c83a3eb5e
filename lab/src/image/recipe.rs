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
    pub boot_modules: Vec<String>,
    pub late_modules: Vec<String>,
    pub extra_modules: Vec<String>,
    pub built_modules: Vec<String>,
    pub guest_tools: Vec<String>,
    pub optional_guest_tools: Vec<String>,
    /// Documented program name -> guest tool it runs.
    pub tool_aliases: std::collections::BTreeMap<String, String>,
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
        for (alias, tool) in &r.tool_aliases {
            assert!(
                r.guest_tools.contains(tool) || r.optional_guest_tools.contains(tool),
                "alias {alias} names {tool}, which is no guest tool"
            );
        }
        assert_eq!(r.tool_aliases["test_mwait_dax"], "dax-tester");
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
