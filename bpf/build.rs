//! Compiles every `*.bpf.c` in this directory with clang into
//! `$OUT_DIR/<name>.bpf.o`, which `src/lib.rs` embeds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading the bpf directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        compile(&dir, &src, &out);
    }
}

fn compile(dir: &Path, src: &Path, out: &Path) {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    let obj = out.join(name.replace(".bpf.c", ".bpf.o"));
    // -g keeps BTF (aya needs it for BTF-defined maps such as ring buffers);
    // the asm headers come from the host's multiarch include directory.
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"])
        .arg("-I")
        .arg(dir.join("include"))
        .args(["-I", "/usr/include/x86_64-linux-gnu", "-c"])
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run clang to build {name} ({e}); install it with ci/install-deps (packages clang, llvm, libbpf-dev)")
        });
    assert!(
        status.success(),
        "clang failed to compile {name}; if bpf/bpf_helpers.h is missing, run ci/install-deps (libbpf-dev)"
    );
}
