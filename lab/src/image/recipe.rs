//! The guest image recipe (`images/recipe.toml`) and `/init`, embedded in
//! the `lab` binary so an image always matches the harness that uses it.

use serde::Deserialize;

pub const RECIPE_TOML: &str = include_str!("../../../images/recipe.toml");
pub const INIT_SCRIPT: &str = include_str!("../../../images/init");
/// Files put into the guest as they are in the repository (guest path,
/// content): front ends the documents name that are scripts, not programs.
pub const GUEST_FILES: &[(&str, &str)] = &[(
    "/usr/lib/cxl-lab/tools/pagefault_monitor.py",
    include_str!("../../../images/guest/pagefault_monitor.py"),
)];

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
    /// Loaded before the guest agent starts, when the kernel has them as
    /// modules (the agent's virtio-serial port).
    pub early_modules: Vec<String>,
    pub boot_modules: Vec<String>,
    pub late_modules: Vec<String>,
    pub extra_modules: Vec<String>,
    pub built_modules: Vec<String>,
    /// The kernel's header packages, for `built_modules`.
    pub kernel_headers: Vec<String>,
    pub guest_tools: Vec<String>,
    pub optional_guest_tools: Vec<String>,
    /// Guest symlinks: path -> target (relative to the link's directory,
    /// or absolute); made when the target is in the image.
    pub aliases: std::collections::BTreeMap<String, String>,
}

impl Recipe {
    pub fn embedded() -> Recipe {
        toml::from_str(RECIPE_TOML).expect("images/recipe.toml is valid")
    }

    /// The Debian packages the image is made of besides the kernel
    /// (`packages` and `extra_packages`), with `{kernel}` in a name replaced
    /// by the kernel's ABI name (`linux-headers-{kernel}` ->
    /// `linux-headers-6.12.118+deb12-amd64` for that kernel package), so a
    /// package that must match the kernel follows it.
    pub fn package_names(&self, kernel_package: &str) -> Vec<String> {
        let abi = kernel_abi(kernel_package);
        self.packages
            .iter()
            .chain(&self.extra_packages)
            .map(|p| p.replace("{kernel}", abi))
            .collect()
    }

    /// The kernel's header packages (`kernel_headers`) for that kernel
    /// package: pinned like the others, not unpacked into the image, and
    /// without their dependencies (the host's compiler builds the modules).
    pub fn header_package_names(&self, kernel_package: &str) -> Vec<String> {
        let abi = kernel_abi(kernel_package);
        let version = abi.rsplit_once('-').map_or(abi, |(v, _arch)| v);
        self.kernel_headers
            .iter()
            .map(|p| {
                p.replace("{kernel}", abi)
                    .replace("{kernel_version}", version)
            })
            .collect()
    }

    /// The version number in a kernel package name, when it matches.
    pub fn kernel_version_of(&self, package: &str) -> Option<u32> {
        let mid = package
            .strip_prefix(&self.kernel_package_prefix)?
            .strip_suffix(&self.kernel_package_suffix)?;
        mid.parse().ok()
    }
}

/// A kernel package's ABI name, as in `/lib/modules/<abi>` and
/// `linux-headers-<abi>`: `linux-image-6.12.118+deb12-amd64-unsigned` ->
/// `6.12.118+deb12-amd64`.
pub fn kernel_abi(kernel_package: &str) -> &str {
    let p = kernel_package
        .strip_prefix("linux-image-")
        .unwrap_or(kernel_package);
    p.strip_suffix("-unsigned").unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipe_parses_and_matches_kernel_names() {
        let r = Recipe::embedded();
        assert!(r.boot_modules.iter().any(|m| m == "cxl_acpi"));
        assert_eq!(r.aliases["/opt/ioriot/bin/ioriot"], "/usr/bin/ioriot");
        assert_eq!(r.aliases["/usr/bin/test_mwait_dax"], "dax-tester");
        assert!(r.extra_trees.iter().any(|t| t == "/usr/lib/python3.11"));
        assert_eq!(
            r.kernel_version_of("linux-image-6.12.95+deb12-amd64-unsigned"),
            Some(95)
        );
        assert_eq!(
            kernel_abi("linux-image-6.12.118+deb12-amd64-unsigned"),
            "6.12.118+deb12-amd64"
        );
        assert_eq!(
            r.header_package_names("linux-image-6.12.118+deb12-amd64-unsigned"),
            [
                "linux-headers-6.12.118+deb12-amd64",
                "linux-headers-6.12.118+deb12-common",
                "linux-kbuild-6.12.118+deb12"
            ]
        );
        let mut with_headers = r.clone();
        with_headers.packages.push("linux-headers-{kernel}".into());
        let names = with_headers.package_names("linux-image-6.12.118+deb12-amd64-unsigned");
        assert!(names.contains(&"linux-headers-6.12.118+deb12-amd64".to_owned()));
        assert!(names.contains(&"libcap2".to_owned()), "extra packages too");
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
