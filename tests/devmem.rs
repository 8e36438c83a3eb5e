//! `/dev/mem` with a physical offset, on the default topology under TCG
//! (one boot): `dax-tester /dev/mem PHYS 20M byte` at vmem0's dax device's
//! physical range passes, and the pattern it leaves is in cxl-memsim's
//! backing file at PHYS minus the region's start; fio through the preload
//! with `FIO_MEM_DEVICE=/dev/mem` writes and verifies, and each block's
//! verify header is in the backing file at its own offset; a System RAM
//! offset and one outside every region are refused, by both tools, with the
//! range, what it overlaps and the ranges that would do.

use std::os::unix::fs::FileExt;

use dax_tester::modes::byte;
use devmem::{Entry, Iomem};
use lab_e2e::{tools_dir, TestLab};
use serde_json::{json, Value};

const NAME: &str = "e2e-devmem";
const PRELOAD: &str = "/usr/lib/cxl-lab/libfio_intercept.so";
const MIB: u64 = 1 << 20;
/// Where dax-tester's range starts in the dax device, and its size: room
/// for the byte check's sizes up to 16 MiB.
const TESTER_AT: u64 = 2 * MIB;
const TESTER_SIZE: u64 = 20 * MIB;
/// Where the preload's window starts in the dax device, past the tester's.
const FIO_AT: u64 = 32 * MIB;
const FIO_BLOCKS: u64 = 256;
/// fio's `struct verify_header`: magic 0xacca, then its type and length;
/// the block's file offset at byte 16.
const FIO_HDR_MAGIC: u16 = 0xacca;

fn fio_env(offset: u64) -> String {
    format!(
        "FIO_INTERCEPT_ENABLE=1 FIO_MEM_DEVICE=/dev/mem FIO_MEM_OFFSET={offset:#x} FIO_MEM_SIZE=4M FIO_FILE_SIZE=4M FIO_DEBUG=1 LD_PRELOAD={PRELOAD}"
    )
}

fn fio_line(offset: u64) -> Vec<String> {
    let script = format!(
        "cd /tmp && rm -f devmem.0.0 && {} fio --name=devmem --rw=write --bs=4k --size={} --direct=1 --ioengine=psync --verify=crc32c --verify_state_save=0 --output-format=json",
        fio_env(offset),
        FIO_BLOCKS * 4096
    );
    vec!["sh".into(), "-c".into(), script]
}

fn exec(lab: &TestLab, argv: &[String]) -> cxl_lab::qga::ExecOutput {
    lab.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The lines of `stderr` that contain `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// An `{name, start, end}` of dax-tester's report as `name [0xstart-0xend]`.
fn iomem_entry(v: &Value) -> String {
    match (v["name"].as_str(), v["start"].as_u64(), v["end"].as_u64()) {
        (Some(name), Some(start), Some(end)) => format!("{name} [{start:#x}-{end:#x}]"),
        _ => format!("not an iomem entry: {v}"),
    }
}

/// `dax-tester /dev/mem OFFSET SIZE byte` must be refused (exit 2); its message.
fn tester_refusal(lab: &TestLab, offset: u64) -> String {
    let out = lab.exec(&[
        "dax-tester",
        "/dev/mem",
        &format!("{offset:#x}"),
        "1M",
        "byte",
    ]);
    assert_eq!(
        out.exit_code, 2,
        "dax-tester at {offset:#x} was not refused:\n{}\n{}",
        out.stdout, out.stderr
    );
    out.stderr.trim().to_owned()
}

#[test]
fn dev_mem_maps_a_cxl_region_and_refuses_system_ram_and_other_ranges() {
    for tool in ["dax-tester", "libfio_intercept.so"] {
        assert!(
            tools_dir().join(tool).is_file(),
            "{tool} is missing in {}: run `cargo build --workspace` first",
            tools_dir().display()
        );
    }
    let lab = TestLab::new(NAME);
    let summary = lab.up();
    let vmem = summary
        .devices
        .iter()
        .find(|d| d.name == "vmem0")
        .expect("the default topology has vmem0");
    let dax_name = vmem
        .dax
        .as_deref()
        .and_then(|d| d.strip_prefix("/dev/"))
        .expect("vmem0 is a dax device");
    let cmdline = lab.run(&["cat", "/proc/cmdline"]);
    assert!(
        cmdline.split_whitespace().any(|w| w == "iomem=relaxed"),
        "{cmdline}"
    );
    let iomem_text = lab.run(&["cat", "/proc/iomem"]);
    let iomem = Iomem::new(&iomem_text);
    let dax: Entry = iomem
        .entries()
        .find(|e| e.name == dax_name)
        .unwrap_or_else(|| panic!("no {dax_name} in the guest's /proc/iomem:\n{iomem_text}"));
    let region = iomem.region_of(dax).expect("the dax device is in a region");
    // vmem0's region is its alone: the backing file's offset is the
    // physical address less the region's start.
    let backing_offset = |phys: u64| phys - region.region.start;
    let backing = std::fs::File::open(&vmem.backing).expect("vmem0's backing file opens");
    let read_backing = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        backing
            .read_exact_at(&mut buf, offset)
            .expect("the backing file reads");
        buf
    };

    // dax-tester on the dax device's physical range.
    let phys = dax.start + TESTER_AT;
    let out = lab.run(&[
        "dax-tester",
        "/dev/mem",
        &format!("{phys:#x}"),
        &format!("{TESTER_SIZE}"),
        "byte",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).expect("dax-tester --json prints JSON");
    assert_eq!(report["passed"], true, "{report:#}");
    // The largest byte size that fits the range is written last; it stays.
    let last = (0..byte::SIZES.len())
        .rev()
        .find(|&i| byte::fits(i, TESTER_SIZE))
        .expect("some size fits");
    let want = byte::pattern(last);
    let at = backing_offset(phys) + byte::offset_of(last);
    let found = read_backing(at, want.len());
    let differing = found.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing,
        0,
        "{differing} of the {} bytes dax-tester wrote at {:#x} differ in {} at {at:#x}",
        want.len(),
        phys + byte::offset_of(last),
        vmem.backing.display()
    );

    // fio through the preload.
    let fio_phys = dax.start + FIO_AT;
    let out = exec(&lab, &fio_line(fio_phys));
    assert!(
        out.success(),
        "fio through the preload on /dev/mem failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let fio: Value = serde_json::from_str(&out.stdout).expect("fio prints JSON");
    let job = &fio["jobs"][0];
    assert_eq!(job["error"], 0, "{job:#}");
    assert_eq!(job["write"]["total_ios"], FIO_BLOCKS, "{job:#}");
    let enabled = lines_with(&out.stderr, "enabled: device /dev/mem (dev-mem: ");
    assert_eq!(enabled.len(), 1, "{}", out.stderr);
    let counters = lines_with(&out.stderr, "intercepted calls in pid");
    let pwrites: u64 = counters
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.strip_prefix("pwrite="))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    assert!(pwrites >= FIO_BLOCKS, "{}", out.stderr);
    let mut headers = 0;
    for block in 0..FIO_BLOCKS {
        let h = read_backing(backing_offset(fio_phys) + block * 4096, 24);
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let offset = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        assert_eq!(
            (magic, offset),
            (FIO_HDR_MAGIC, block * 4096),
            "block {block}: no fio verify header for file offset {:#x} at {:#x} of {}",
            block * 4096,
            backing_offset(fio_phys) + block * 4096,
            vmem.backing.display()
        );
        headers += 1;
    }

    // Refusals: System RAM, and the last MiB of the window, past its regions.
    let ram = iomem
        .entries()
        .filter(|e| e.name == "System RAM" && e.size() >= 32 * MIB)
        .last()
        .expect("the guest has System RAM");
    let ram_at = ram.start + 16 * MIB;
    let outside = region.window.end + 1 - MIB;
    assert!(iomem
        .regions()
        .all(|r| !r.region.overlaps(outside, outside + MIB - 1)));
    let fio_refused = exec(&lab, &fio_line(ram_at));
    assert!(
        !fio_refused.success() || fio_refused.stdout.contains("\"error\" : 19"),
        "fio on System RAM was not refused:\n{}\n{}",
        fio_refused.stdout,
        fio_refused.stderr
    );
    let no_file = lab.exec(&["test", "-e", "/tmp/devmem.0.0"]);
    assert!(
        !no_file.success(),
        "the refused fio run left a file on disk"
    );
    let fio_refusal = lines_with(
        &fio_refused.stderr,
        "refused: interception is enabled but not usable",
    )
    .first()
    .map(|l| l.to_string())
    .unwrap_or_else(|| panic!("no refusal line:\n{}", fio_refused.stderr));

    let physical =
        ["window", "region", "dax"].map(|k| iomem_entry(&report["device"]["physical"][k]));
    let digest = json!({
        "dax_tester": {
            "kind": report["device"]["kind"],
            "physical": physical,
            "map": report["device"]["map"]["flags"],
            "byte": report["modes"]["byte"]["results"]
                .as_array()
                .expect("byte results")
                .iter()
                .map(|r| format!("{} {}", r["size"], r["status"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>(),
            "pattern_in_backing_file": {
                "size": want.len(),
                "backing_offset": format!("{at:#x}"),
            },
        },
        "fio": {
            "placement": enabled[0].split_once("(dev-mem: ").map(|(_, p)| p.split_once(", ").map_or(p, |(p, _)| p)),
            "write_ios": job["write"]["total_ios"],
            "verify_headers_in_backing_file": headers,
        },
        "refusals": {
            "dax_tester_system_ram": tester_refusal(&lab, ram_at),
            "dax_tester_outside_regions": tester_refusal(&lab, outside),
            "fio_system_ram": fio_refusal.split_once(" refused: ").map_or(fio_refusal.as_str(), |(_, m)| m),
        },
    });
    insta::assert_json_snapshot!("devmem_digest", digest);
    lab.down();
}
