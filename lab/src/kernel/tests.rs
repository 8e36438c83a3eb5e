//! Each form of `--kernel` and each bad input, with small files made in a
//! temporary directory (no VM, no real kernel).

use super::bzimage::tests::fake_bzimage;
use super::*;

const DEBIAN_6_12: &str = include_str!("../kconfig/debian-6.12.118-amd64.config");
const RELEASE: &str = "6.1.0-50-amd64";
const VERSION: &str =
    "6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1";

/// A minimal ELF64 relocatable object with a `.modinfo` section, as
/// `modinfo_depends` reads a module.
fn fake_module(depends: &str) -> Vec<u8> {
    let modinfo = format!("license=GPL\0depends={depends}\0");
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    b[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    let modinfo_at = b.len();
    b.extend(modinfo.as_bytes());
    let shstr_at = b.len();
    b.extend(shstrtab);
    while !b.len().is_multiple_of(8) {
        b.push(0);
    }
    let shoff = b.len();
    b[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    b[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
    b[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
    let section = |name: u32, kind: u32, offset: usize, size: usize| {
        let mut s = vec![0u8; 64];
        s[0..4].copy_from_slice(&name.to_le_bytes());
        s[4..8].copy_from_slice(&kind.to_le_bytes());
        s[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
        s[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        s[48..56].copy_from_slice(&1u64.to_le_bytes());
        s
    };
    b.extend(vec![0u8; 64]);
    b.extend(section(1, 1, modinfo_at, modinfo.len()));
    b.extend(section(10, 3, shstr_at, shstrtab.len()));
    b
}

/// `dir/lib/modules/<release>` with every module the recipe loads
/// (dependencies as Debian's tree has none of these), cxl_port built in.
fn module_tree(root: &Path, release: &str) -> PathBuf {
    let dir = root.join("lib/modules").join(release);
    let recipe = Recipe::embedded();
    for m in recipe
        .early_modules
        .iter()
        .chain(&recipe.boot_modules)
        .chain(&recipe.late_modules)
        .chain(&recipe.extra_modules)
    {
        if m == "cxl_port" || m == "dax_cxl" {
            continue;
        }
        let p = dir.join("kernel/drivers").join(format!("{m}.ko"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let deps = if m == "cxl_pci" { "cxl_acpi" } else { "" };
        std::fs::write(p, fake_module(deps)).unwrap();
    }
    std::fs::write(
        dir.join("modules.builtin"),
        "kernel/drivers/cxl/cxl_port.ko\n",
    )
    .unwrap();
    // depmod's index of it (content not read by the lab).
    std::fs::write(dir.join("modules.builtin.bin"), b"index").unwrap();
    dir
}

/// A /boot like a kernel package's: vmlinuz-R and config-R.
fn boot_dir(root: &Path, config: &str) -> PathBuf {
    let boot = root.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let image = boot.join(format!("vmlinuz-{RELEASE}"));
    std::fs::write(&image, fake_bzimage(VERSION, 0x7f)).unwrap();
    std::fs::write(boot.join(format!("config-{RELEASE}")), config).unwrap();
    image
}

/// A stand-in for the image: its initramfs and manifest key.
fn fake_image(dir: &Path) -> Image {
    std::fs::create_dir_all(dir).unwrap();
    let initrd = dir.join("image-initrd.lz4");
    std::fs::write(&initrd, b"BASE").unwrap();
    let manifest: crate::image::Manifest = serde_json::from_value(serde_json::json!({
        "key": "imagekey", "kernel_package": "linux-image-6.12.118+deb12-amd64-unsigned",
        "kernel_version": "6.12.118-1~deb12u1", "kernel_release": "6.12.118+deb12-amd64",
        "packages": {}, "modules": [], "boot_modules": [],
        "built_modules": [{"name": "seq_page_faults", "path": "extra/seq_page_faults.ko", "compiler": "gcc-12", "kernel_compiler": "gcc-12"}],
        "guest_tools": [], "extras": [], "files": 0, "initrd_bytes": 4
    }))
    .unwrap();
    Image {
        dir: dir.to_owned(),
        kernel: dir.join("vmlinuz"),
        config: dir.join("config"),
        initrd,
        extras: dir.join("extras"),
        manifest,
        cached: true,
    }
}

fn prepare_path(
    path: &Path,
    modules: Option<&Path>,
    cache: &Path,
) -> Result<BootKernel, KernelError> {
    let input = KernelInput::detect(path, modules)?;
    prepare(&input, &fake_image(cache), cache)
}

#[test]
fn a_vmlinuz_with_its_modules_becomes_a_cached_kernel_with_a_modules_layer() {
    let d = tempfile::tempdir().unwrap();
    let image = boot_dir(d.path(), DEBIAN_6_12);
    let modules = module_tree(d.path(), RELEASE);
    let cache = d.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let k = prepare_path(&image, Some(&modules), &cache).unwrap();
    assert_eq!(k.release, RELEASE);
    assert_eq!(k.origin.kind, KernelKind::Bzimage);
    assert_eq!(
        k.origin.describe(),
        format!(
            "bzimage {} with modules {}",
            image.display(),
            modules.display()
        )
    );
    assert!(k.modules.contains(&"cxl_acpi".to_owned()));
    assert!(!k.modules.contains(&"cxl_port".to_owned()), "built in");
    assert_eq!(k.absent_modules, ["dax_cxl"]);
    assert_eq!(k.foreign_built_modules, ["seq_page_faults"]);
    assert_eq!(
        std::fs::read(&k.kernel).unwrap(),
        std::fs::read(&image).unwrap()
    );
    assert_eq!(std::fs::read_to_string(&k.config).unwrap(), DEBIAN_6_12);
    // The initramfs: the image's, then the modules layer (an lz4 legacy
    // frame starts with 0x184c2102).
    let initrd = std::fs::read(&k.initrd).unwrap();
    assert!(initrd.starts_with(b"BASE"));
    assert_eq!(&initrd[4..8], &[0x02, 0x21, 0x4c, 0x18]);
    let out = Command::new("lz4")
        .args(["-dc"])
        .arg(k.kernel.with_file_name("modules.lz4"))
        .output()
        .unwrap();
    let cpio = String::from_utf8_lossy(&out.stdout);
    assert!(cpio.contains(&format!("lib/modules/{RELEASE}/kernel/drivers/cxl_pci.ko")));
    assert!(cpio.contains(&format!("lib/modules/{RELEASE}/modules.dep")));
    // What is built in, for the guest's libkmod (daxctl).
    assert!(cpio.contains(&format!("lib/modules/{RELEASE}/modules.builtin.bin")));
    assert!(cpio.contains("kernel/drivers/cxl/cxl_port.ko"));
    assert!(cpio.contains("kernel/drivers/cxl_pci.ko: kernel/drivers/cxl_acpi.ko"));
    assert!(cpio.contains("etc/cxl-lab/modules"));
    // Again: the same entry, from the cache.
    let again = prepare_path(&image, Some(&modules), &cache).unwrap();
    assert_eq!(again, k);
}

#[test]
fn a_path_that_is_not_a_kernel_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let notes = d.path().join("notes.txt");
    std::fs::write(&notes, "hello\n").unwrap();
    let e = prepare_path(&notes, None, d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is not a kernel: it is neither an x86 bzImage/vmlinuz (no `HdrS` setup header), a Debian kernel package (.deb) nor a kernel build tree. Give `--kernel` one of those.", notes.display())
    );
    let e = prepare_path(&d.path().join("missing"), None, d.path()).unwrap_err();
    assert!(matches!(e, KernelError::NotFound(_)), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = prepare_path(&empty, None, d.path()).unwrap_err();
    assert!(matches!(e, KernelError::NotATree(_)), "{e}");
    assert!(
        !d.path().join("kernels").exists(),
        "nothing cached for a bad kernel"
    );
}

#[test]
fn a_32_bit_or_foreign_image_is_refused_before_anything_is_cached() {
    let d = tempfile::tempdir().unwrap();
    let i386 = d.path().join("bzImage-i386");
    std::fs::write(&i386, fake_bzimage("6.1.0 #1", 0)).unwrap();
    let e = prepare_path(&i386, None, d.path()).unwrap_err();
    assert!(e.to_string().contains("is a 32-bit x86 kernel"), "{e}");
    let mut arm = vec![0u8; 0x100];
    arm[0x38..0x3c].copy_from_slice(b"ARM\x64");
    let arm64 = d.path().join("Image");
    std::fs::write(&arm64, arm).unwrap();
    let e = prepare_path(&arm64, None, d.path()).unwrap_err();
    assert!(e.to_string().contains("is an arm64 kernel Image"), "{e}");
    assert!(!d.path().join("kernels").join("x").exists());
}

#[test]
fn a_tree_without_a_bzimage_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("linux");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("Makefile"), "all:\n").unwrap();
    std::fs::write(tree.join(".config"), DEBIAN_6_12).unwrap();
    let e = prepare_path(&tree, None, d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is a kernel build tree without arch/x86/boot/bzImage; build it first (`make bzImage modules`), then give the tree again.", tree.display())
    );
}

#[test]
fn modules_of_another_release_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let image = boot_dir(d.path(), DEBIAN_6_12);
    let other = module_tree(d.path(), "6.12.118+deb12-amd64");
    let e = prepare_path(&image, Some(&other), d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("The modules in {} are for kernel release 6.12.118+deb12-amd64, but the kernel {} is release {RELEASE} (its setup header says so); give the lib/modules/{RELEASE} directory of this kernel.", other.display(), image.display())
    );
    // A root holding lib/modules/ without this release: what is there.
    let e = prepare_path(&image, Some(d.path()), d.path()).unwrap_err();
    assert!(
        e.to_string().contains(
            "has no modules for release 6.1.0-50-amd64 (lib/modules holds 6.12.118+deb12-amd64)"
        ),
        "{e}"
    );
}

#[test]
fn a_config_missing_required_options_is_refused_with_the_list() {
    let d = tempfile::tempdir().unwrap();
    let config = DEBIAN_6_12
        .replace("CONFIG_CXL_REGION=y\n", "# CONFIG_CXL_REGION is not set\n")
        .replace("CONFIG_DEV_DAX=m\n", "");
    let image = boot_dir(d.path(), &config);
    let modules = module_tree(d.path(), RELEASE);
    let e = prepare_path(&image, Some(&modules), d.path()).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with(&format!(
        "The kernel (config: {}) lacks options the lab needs to boot:\n",
        image.with_file_name(format!("config-{RELEASE}")).display()
    )));
    assert!(text.contains("\n  CONFIG_CXL_REGION (y or m): "), "{text}");
    assert!(text.contains("\n  CONFIG_DEV_DAX (y or m): "), "{text}");
}

#[test]
fn a_modular_kernel_without_modules_is_refused_and_a_built_in_one_boots() {
    let d = tempfile::tempdir().unwrap();
    let image = boot_dir(d.path(), DEBIAN_6_12);
    let e = prepare_path(&image, None, d.path()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("builds options the lab needs as modules (=m), but no modules were given:\n  CONFIG_CXL_ACPI=m\n"),
        "{text}"
    );
    assert!(text.ends_with(&format!(
        "Pass `--modules DIR` (its lib/modules/{RELEASE} tree), or build them in (=y)."
    )));
    let built_in = DEBIAN_6_12.replace("=m\n", "=y\n");
    std::fs::write(image.with_file_name(format!("config-{RELEASE}")), &built_in).unwrap();
    let k = prepare_path(&image, None, d.path()).unwrap();
    assert!(k.modules.is_empty() && k.absent_modules.is_empty());
    assert_eq!(k.origin.modules, None);
}

#[test]
fn a_package_that_is_not_a_kernel_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/doc/x")).unwrap();
    std::fs::write(pkg.join("usr/share/doc/x/README"), "x\n").unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: x\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
    )
    .unwrap();
    let deb = d.path().join("x_1_all.deb");
    let ok = Command::new("dpkg-deb")
        .args(["-b", "-Zgzip"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let e = prepare_path(&deb, None, d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} is a Debian package but not a kernel package: it has no /boot/vmlinuz-*. Give a linux-image-* package.",
            deb.display()
        )
    );
    let e = prepare_path(&deb, Some(d.path()), d.path()).unwrap_err();
    assert!(matches!(e, KernelError::ModulesNotForThis { .. }), "{e}");
}

#[test]
fn a_kernel_package_is_unpacked_once() {
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    boot_dir(&pkg, DEBIAN_6_12);
    module_tree(&pkg, RELEASE);
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: linux-image-test\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n",
    )
    .unwrap();
    let deb = d.path().join("linux-image-test_1_amd64.deb");
    let ok = Command::new("dpkg-deb")
        .args(["-b", "-Zgzip"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let cache = d.path().join("cache");
    let k = prepare_path(&deb, None, &cache).unwrap();
    assert_eq!(k.release, RELEASE);
    assert_eq!(k.origin.kind, KernelKind::Deb);
    assert!(k.kernel.starts_with(cache.join("kernels")));
    assert!(k.modules.contains(&"nd_pmem".to_owned()));
    let entries: Vec<_> = std::fs::read_dir(cache.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}: no staging left");
    assert!(entries[0].starts_with("deb-"));
}

#[test]
fn a_build_tree_installs_its_modules_with_its_own_make() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("linux");
    std::fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
    std::fs::write(
        tree.join("arch/x86/boot/bzImage"),
        fake_bzimage(VERSION, 0x7f),
    )
    .unwrap();
    std::fs::write(
        tree.join(".config"),
        format!("CONFIG_MODULES=y\n{DEBIAN_6_12}"),
    )
    .unwrap();
    // A stand-in for Kbuild's modules_install: copies a prepared tree to
    // $(INSTALL_MOD_PATH)/lib/modules/<release>, stripping as asked.
    let staged = d.path().join("staged");
    module_tree(&staged, RELEASE);
    std::fs::write(
        tree.join("Makefile"),
        format!(
            "modules_install:\n\ttest \"$(INSTALL_MOD_STRIP)\" = 1\n\tmkdir -p $(INSTALL_MOD_PATH)/lib\n\tcp -r {}/lib/modules $(INSTALL_MOD_PATH)/lib/\n",
            staged.display()
        ),
    )
    .unwrap();
    let cache = d.path().join("cache");
    let k = prepare_path(&tree, None, &cache).unwrap();
    assert_eq!(k.origin.kind, KernelKind::Tree);
    assert_eq!(k.release, RELEASE);
    assert!(k.modules.contains(&"cxl_mem".to_owned()));
    let installs = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache.join("kernels"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tree-"))
            .collect();
        v.sort();
        v
    };
    let first = installs();
    assert_eq!(first.len(), 1);
    // A tree that built a module: installed once, reused while unchanged.
    let log = d.path().join("installs.log");
    let makefile = format!(
        "modules_install:\n\techo install >> {}\n\tmkdir -p $(INSTALL_MOD_PATH)/lib\n\tcp -r {}/lib/modules $(INSTALL_MOD_PATH)/lib/\n",
        log.display(),
        staged.display()
    );
    std::fs::write(tree.join("Makefile"), makefile).unwrap();
    std::fs::write(tree.join("modules.order"), "drivers/dax/kmem.o\n").unwrap();
    std::fs::create_dir_all(tree.join("drivers/dax")).unwrap();
    let ko = tree.join("drivers/dax/kmem.ko");
    std::fs::write(&ko, b"built").unwrap();
    prepare_path(&tree, None, &cache).unwrap();
    let second = installs();
    assert_eq!(second.len(), 1, "{second:?}: the earlier install removed");
    assert_ne!(second, first, "a new module list is a new install");
    prepare_path(&tree, None, &cache).unwrap();
    assert_eq!(installs(), second, "unchanged: the install is reused");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    // One module rebuilt (bzImage and .config the same): installed again.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .append(true)
        .open(&ko)
        .unwrap()
        .set_modified(later)
        .unwrap();
    prepare_path(&tree, None, &cache).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    let third = installs();
    assert_eq!(third.len(), 1, "{third:?}");
    assert_ne!(third, second);
    let e = prepare_path(&tree, Some(&staged), &cache).unwrap_err();
    assert!(matches!(e, KernelError::ModulesNotForThis { .. }), "{e}");
    // A failing modules_install: named with its output.
    std::fs::write(
        tree.join("Makefile"),
        "modules_install:\n\t@echo 'no modules.order: run make modules' >&2; exit 2\n",
    )
    .unwrap();
    std::fs::write(
        tree.join(".config"),
        format!("CONFIG_MODULES=y\nCONFIG_X=y\n{DEBIAN_6_12}"),
    )
    .unwrap();
    let e = prepare_path(&tree, None, &cache).unwrap_err();
    assert!(
        e.to_string().contains("no modules.order: run make modules"),
        "{e}"
    );
}
