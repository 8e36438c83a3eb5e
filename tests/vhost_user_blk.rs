//! The simulator's vhost-user-blk view, end to end under TCG: a topology
//! that asks for block views of pmem0 (read-write) and vmem0 (read-only);
//! in the guest the disks are found by serial, and data crosses between the
//! disk, the TCP server, the dax device and the host backing file; a
//! discard and a write-zeroes zero their ranges. The
//! host bridge's link is slowed to 0.05 GB/s so that the modelled
//! bandwidth is visible in wall time.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cxl_memsim::protocol::{Request, Response, OP_READ, OP_WRITE, RESPONSE_SIZE};
use lab_e2e::TestLab;
use sha2::{Digest, Sha256};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn memsim_call(s: &mut std::net::TcpStream, r: Request) -> Response {
    s.write_all(&r.encode()).expect("sending to cxl-memsim");
    let mut b = [0u8; RESPONSE_SIZE];
    s.read_exact(&mut b).expect("reading from cxl-memsim");
    Response::decode(&b)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn device<'a>(s: &'a cxl_lab::summary::Summary, name: &str) -> &'a cxl_lab::summary::DeviceSummary {
    s.devices
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no device {name} in {s:#?}"))
}

/// The guest's block device whose virtio serial is `serial`.
fn disk_by_serial(lab: &TestLab, serial: &str) -> String {
    let script = format!(
        "for b in /sys/block/vd*; do [ \"$(cat $b/serial 2>/dev/null)\" = {serial} ] && echo ${{b##*/}}; done; true"
    );
    let out = lab.run(&["sh", "-c", &script]);
    let names: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(names.len(), 1, "one disk with serial {serial}: {out:?}");
    names[0].to_owned()
}

/// sha256 of `len` bytes at `offset` of a guest block device, read with
/// O_DIRECT so the data comes from the device, not the page cache.
fn guest_sha256(lab: &TestLab, disk: &str, offset: u64, len: u64) -> String {
    let cmd = format!(
        "dd if=/dev/{disk} bs={} skip={} count=1 iflag=direct 2>/dev/null | sha256sum",
        len,
        offset / len
    );
    let out = lab.run(&["sh", "-c", &cmd]);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn block_views_share_the_device_memory() {
    let topology = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vublk-e2e.toml");
    std::fs::write(
        &topology,
        format!(
            "{}\n[simulator]\nvhost_user_blk = [\"pmem0\", \"vmem0\"]\nvhost_user_blk_read_only = [\"vmem0\"]\n",
            cxl_topology::DEFAULT_TOPOLOGY_TOML.replacen(
                "name = \"cxl.1\"",
                "name = \"cxl.1\"\nlink_bandwidth_gbps = 0.05",
                1
            )
        ),
    )
    .expect("writing the topology");
    let lab = TestLab::new("e2e-vublk");
    // Blank persistent memory: an earlier run's block writes may have
    // landed on pmem0's namespace metadata (the view is the raw device).
    let backing = cxl_lab::verbs::run_dir(&lab.name)
        .expect("run dir")
        .backing_dir();
    let _ = std::fs::remove_dir_all(&backing);
    let summary = lab.up_with_topology(&topology);
    let pmem = device(&summary, "pmem0");
    let vmem = device(&summary, "vmem0");

    let view = pmem
        .vhost_user_blk
        .as_ref()
        .expect("pmem0's view in the summary");
    assert_eq!((view.serial.as_str(), view.read_only), ("pmem0", false));
    assert!(
        vmem.vhost_user_blk
            .as_ref()
            .expect("vmem0's view")
            .read_only
    );

    // Both disks are there, named by serial, sized like their devices.
    let pdisk = disk_by_serial(&lab, "pmem0");
    let vdisk = disk_by_serial(&lab, "vmem0");
    let sysfs = |disk: &str, attr: &str| {
        lab.run(&["cat", &format!("/sys/block/{disk}/{attr}")])
            .trim()
            .to_owned()
    };
    assert_eq!(sysfs(&pdisk, "size"), (256 * MIB / 512).to_string());
    assert_eq!(sysfs(&pdisk, "ro"), "0");
    assert_eq!(sysfs(&vdisk, "ro"), "1", "vmem0's view is read-only");

    // 64 KiB written through the TCP server read back from the disk.
    let mut tcp = std::net::TcpStream::connect(summary.simulator_tcp.as_deref().expect("TCP"))
        .expect("connecting to cxl-memsim");
    let (tcp_off, len) = (64 * MIB, 64 * KIB);
    let mut want = vec![0u8; len as usize];
    dax_pattern::fill(&mut want, 44, tcp_off);
    for (i, line) in want.chunks(64).enumerate() {
        let mut data = [0u8; 64];
        data.copy_from_slice(line);
        let at = pmem.simulator_base + tcp_off + 64 * i as u64;
        let r = memsim_call(&mut tcp, Request::new(OP_WRITE, at, 64, 0, data));
        assert_eq!(r.status, 0);
    }
    assert_eq!(
        guest_sha256(&lab, &pdisk, tcp_off, len),
        sha256(&want),
        "the disk reads what TCP wrote"
    );

    // 64 KiB of random data written with dd (O_DIRECT, then fsync: a
    // flush) to the disk land in the host backing file and are served over
    // TCP.
    let dd_off = 68 * MIB;
    let guest_sum = lab.run(&[
        "sh",
        "-c",
        &format!(
            "dd if=/dev/urandom of=/tmp/blk.bin bs={len} count=1 2>/dev/null && \
             dd if=/tmp/blk.bin of=/dev/{pdisk} bs={len} seek={} count=1 oflag=direct conv=notrunc,fsync 2>/dev/null && \
             sha256sum /tmp/blk.bin",
            dd_off / len
        ),
    ]);
    let guest_sum = guest_sum.split_whitespace().next().unwrap_or_default();
    let backing = std::fs::read(&pmem.backing).expect("reading pmem0's backing file");
    let written = &backing[dd_off as usize..(dd_off + len) as usize];
    assert_eq!(
        sha256(written),
        guest_sum,
        "dd's data is in the backing file"
    );
    let r = memsim_call(
        &mut tcp,
        Request::new(OP_READ, pmem.simulator_base + dd_off + 640, 64, 0, [0; 64]),
    );
    assert_eq!((r.status, &r.data[..]), (0, &written[640..704]));

    // busybox's blkdiscard (BLKDISCARD: a DISCARD request) on the middle
    // 16 KiB of dd's data: the view zeroes them in the backing file and
    // leaves the rest.
    let (discard_off, discard_len) = (dd_off + 16 * KIB, 16 * KIB);
    lab.run(&[
        "blkdiscard",
        "-o",
        &discard_off.to_string(),
        "-l",
        &discard_len.to_string(),
        &format!("/dev/{pdisk}"),
    ]);
    let backing = std::fs::read(&pmem.backing).expect("reading pmem0's backing file");
    let mut want_after = written.to_vec();
    want_after[16 * KIB as usize..32 * KIB as usize].fill(0);
    assert_eq!(
        sha256(&backing[dd_off as usize..(dd_off + len) as usize]),
        sha256(&want_after),
        "the discarded 16 KiB are zeros in the backing file, the rest kept"
    );
    assert_eq!(
        guest_sha256(&lab, &pdisk, discard_off, discard_len),
        sha256(&vec![0u8; discard_len as usize]),
        "and read back as zeros"
    );

    // util-linux's blkdiscard -z (BLKZEROOUT: WRITE_ZEROES) on the last
    // 8 KiB of dd's data.
    let (zero_off, zero_len) = (dd_off + 56 * KIB, 8 * KIB);
    lab.run(&[
        "/sbin/blkdiscard",
        "-z",
        "-o",
        &zero_off.to_string(),
        "-l",
        &zero_len.to_string(),
        &format!("/dev/{pdisk}"),
    ]);
    let backing = std::fs::read(&pmem.backing).expect("reading pmem0's backing file");
    want_after[56 * KIB as usize..].fill(0);
    assert_eq!(
        sha256(&backing[dd_off as usize..(dd_off + len) as usize]),
        sha256(&want_after),
        "the write-zeroes range is zeros in the backing file, the rest kept"
    );

    // fio with 16 requests in flight writes 8 MiB of random 4 KiB blocks
    // and verifies each one's checksum on read-back.
    let terse = lab.run(&[
        "fio",
        "--name=verify",
        &format!("--filename=/dev/{pdisk}"),
        "--rw=randwrite",
        "--bs=4k",
        "--size=8M",
        "--offset=96M",
        "--direct=1",
        "--ioengine=libaio",
        "--iodepth=16",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--output-format=terse",
        "--terse-version=3",
    ]);
    let fields: Vec<&str> = terse.trim().split(';').collect();
    assert_eq!(fields.get(4), Some(&"0"), "fio reports no error: {terse}");

    // The read-only view of vmem0 shows what the guest stored through its
    // dax device, and refuses writes.
    let vdax = vmem.dax.clone().expect("vmem0 has a dax device");
    let dax_off = 2 * MIB;
    lab.run(&[
        "dax-pattern",
        "write",
        &vdax,
        "--offset",
        &dax_off.to_string(),
        "--len",
        &len.to_string(),
        "--seed",
        "66",
    ]);
    let mut dax_want = vec![0u8; len as usize];
    dax_pattern::fill(&mut dax_want, 66, dax_off);
    assert_eq!(
        guest_sha256(&lab, &vdisk, dax_off, len),
        sha256(&dax_want),
        "the block view reads what the guest stored through dax"
    );
    let refused = lab.exec(&[
        "sh",
        "-c",
        &format!("dd if=/dev/zero of=/dev/{vdisk} bs=4096 count=1 oflag=direct"),
    ]);
    assert_ne!(refused.exit_code, 0, "a write to the read-only disk fails");
    assert_eq!(
        guest_sha256(&lab, &vdisk, dax_off, len),
        sha256(&dax_want),
        "and changes nothing"
    );

    // Completions follow the model: 16 MiB over a 0.05 GB/s link take at
    // least 335 ms of wall time, and each 1 MiB request is modelled at
    // 200 ns + 1 MiB / 0.05 GB/s = 20.97 ms.
    let t = Instant::now();
    lab.run(&[
        "dd",
        &format!("if=/dev/{pdisk}"),
        "of=/dev/null",
        "bs=1M",
        "count=16",
        "iflag=direct",
    ]);
    let took = t.elapsed();
    let floor = Duration::from_nanos(16 * MIB * 20);
    assert!(
        took >= floor,
        "16 MiB in {took:?}, under the modelled {floor:?}"
    );
    eprintln!("16 MiB through the 0.05 GB/s view: {took:?} (modelled at least {floor:?})");

    // Every block request was charged to the model and counted.
    let stats = lab
        .rt
        .block_on(cxl_memsim::control::query_stats(
            &summary.simulator_control,
            10,
        ))
        .expect("simulator stats");
    let block = &stats["block"];
    assert!(block["pmem0"]["writes"].as_u64() >= Some(1), "{block}");
    assert!(
        block["pmem0"]["write_bytes"].as_u64() >= Some(len),
        "{block}"
    );
    assert!(block["pmem0"]["reads"].as_u64() >= Some(1), "{block}");
    assert!(block["vmem0"]["reads"].as_u64() >= Some(1), "{block}");
    assert!(block["pmem0"]["get_ids"].as_u64() >= Some(1), "{block}");
    assert!(block["pmem0"]["flushes"].as_u64() >= Some(1), "{block}");
    assert!(block["pmem0"]["discards"].as_u64() >= Some(1), "{block}");
    assert!(
        block["pmem0"]["discard_bytes"].as_u64() >= Some(discard_len),
        "{block}"
    );
    assert!(
        block["pmem0"]["write_zeroes"].as_u64() >= Some(1),
        "{block}"
    );
    assert!(
        block["pmem0"]["write_zeroes_bytes"].as_u64() >= Some(zero_len),
        "{block}"
    );
    assert_eq!(block["vmem0"]["writes"].as_u64(), Some(0), "{block}");
    assert!(
        stats["latency_ns"]["max"].as_u64() >= Some(20_971_720),
        "a 1 MiB request is modelled at 20.97 ms: {}",
        stats["latency_ns"]
    );

    let sockets: Vec<_> = [pmem, vmem]
        .iter()
        .map(|d| d.vhost_user_blk.as_ref().expect("a view").socket.clone())
        .collect();
    assert_eq!(
        sockets[0],
        cxl_lab::qemu::vhost_user_blk_socket(
            &cxl_lab::verbs::run_dir(&lab.name).expect("run dir").sockets,
            "pmem0"
        )
    );
    assert!(sockets.iter().all(|s| s.exists()));
    assert!(lab.down().was_up);
    for s in &sockets {
        assert!(!s.exists(), "{} is left after lab down", s.display());
    }
}
