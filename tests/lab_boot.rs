//! `lab up` on the default topology under TCG, checked end to end. One
//! booted lab is shared by the checks in order, because boots share the
//! machine's two cores; each check stays independent of the others' data.

use std::io::{Read, Write};

use cxl_memsim::protocol::{Request, Response, OP_READ, OP_WRITE, RESPONSE_SIZE};
use lab_e2e::{pid_alive, TestLab};

fn memsim_call(s: &mut std::net::TcpStream, r: Request) -> Response {
    s.write_all(&r.encode()).expect("sending to cxl-memsim");
    let mut b = [0u8; RESPONSE_SIZE];
    s.read_exact(&mut b).expect("reading from cxl-memsim");
    Response::decode(&b)
}

const MIB: u64 = 1 << 20;

fn device<'a>(s: &'a cxl_lab::summary::Summary, name: &str) -> &'a cxl_lab::summary::DeviceSummary {
    s.devices
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no device {name} in {s:#?}"))
}

#[test]
fn default_topology_boots_with_dax_devices_and_survives_restarts() {
    let lab = TestLab::new("e2e-default");
    let summary = lab.up();

    // The summary, with everything that changes from run to run redacted.
    insta::assert_json_snapshot!("default_up_summary", summary, {
        ".run_dir" => "[run_dir]",
        ".image_key" => "[key]",
        ".kernel_config" => "[path]",
        ".devices[].backing" => "[path]",
        ".qmp_socket" => "[path]",
        ".agent_socket" => "[path]",
        ".console_log" => "[path]",
        ".simulator_tcp" => "[addr]",
        ".simulator_control" => "[path]",
        ".qemu_pid" => "[pid]",
        ".simulator_pid" => "[pid]",
        ".timings.*" => "[ms]",
        ".devices[].memdev" => "[memdev]",
    });

    // lab status sees QEMU, the simulator and the agent; lab args is the
    // argv QEMU runs with.
    let status = lab
        .rt
        .block_on(cxl_lab::verbs::status(&lab.name))
        .unwrap_or_else(|e| panic!("lab status: {}", lab_e2e::error_chain(&e)));
    assert!(
        status.qemu_running && status.simulator_running && status.agent_answers,
        "{status:#?}"
    );
    assert_eq!(status.vm_status.as_deref(), Some("running"));
    // Of a running lab, `lab args` is the argv its QEMU runs with (a
    // restored one's ends in `-incoming defer`).
    let argv = cxl_lab::verbs::args(&lab.options()).expect("lab args");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", summary.qemu_pid.expect("pid")))
        .expect("QEMU cmdline");
    let running: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(argv, running, "lab args prints the argv QEMU runs with");

    // cxl list -M: two memdevs of 256 MiB, one ram and one pmem.
    let memdevs: serde_json::Value =
        serde_json::from_str(&lab.run(&["cxl", "list", "-M"])).expect("cxl list -M prints JSON");
    let memdevs = memdevs.as_array().expect("a list of memdevs");
    assert_eq!(memdevs.len(), 2, "{memdevs:?}");
    let sizes: Vec<u64> = memdevs
        .iter()
        .map(|m| {
            m.get("ram_size")
                .or(m.get("pmem_size"))
                .and_then(|v| v.as_u64())
                .expect("a size")
        })
        .collect();
    assert_eq!(sizes, [256 * MIB, 256 * MIB]);

    // Two dax devices exist.
    let ls = lab.run(&["sh", "-c", "ls /dev/dax*"]);
    let daxes: Vec<&str> = ls.split_whitespace().collect();
    assert_eq!(daxes.len(), 2, "{ls}");

    // A pattern written through the guest to the volatile dax reads back
    // in the guest and is in the host backing file at the same offset.
    let vmem = device(&summary, "vmem0");
    let vdax = vmem.dax.clone().expect("vmem0 has a dax device");
    let (off, len) = (2 * MIB, 2 * MIB);
    let pattern = |action: &str, path: &str, seed: &str| {
        let (off, len) = (off.to_string(), len.to_string());
        lab.run(&[
            "dax-pattern",
            action,
            path,
            "--offset",
            &off,
            "--len",
            &len,
            "--seed",
            seed,
        ])
    };
    pattern("write", &vdax, "11");
    pattern("verify", &vdax, "11");
    let backing = std::fs::read(&vmem.backing).expect("reading the volatile backing file");
    dax_pattern::check(&backing[off as usize..(off + len) as usize], 11, off)
        .expect("the guest's pattern is in the host backing file at the dax offset");

    // The simulator serves the same memory over TCP: the guest's pattern
    // reads back at the device's address, and a TCP write reaches the guest.
    let mut tcp =
        std::net::TcpStream::connect(summary.simulator_tcp.as_deref().expect("simulator address"))
            .expect("connecting to cxl-memsim");
    for line in [0u64, 1, 1000, 32767] {
        let at = off + line * 64;
        let r = memsim_call(
            &mut tcp,
            Request::new(OP_READ, vmem.simulator_base + at, 64, 0, [0; 64]),
        );
        assert_eq!(r.status, 0);
        let want: Vec<u8> = (0..64)
            .map(|i| dax_pattern::pattern_byte(11, at + i))
            .collect();
        assert_eq!(
            r.data.to_vec(),
            want,
            "TCP read of the guest's pattern at {at:#x}"
        );
    }
    let tcp_off = 4 * MIB;
    for line in 0..(len / 64) {
        let at = tcp_off + line * 64;
        let mut data = [0u8; 64];
        dax_pattern::fill(&mut data, 33, at);
        assert_eq!(
            memsim_call(
                &mut tcp,
                Request::new(OP_WRITE, vmem.simulator_base + at, 64, 0, data)
            )
            .status,
            0
        );
    }
    let (o, l) = (tcp_off.to_string(), len.to_string());
    lab.run(&[
        "dax-pattern",
        "verify",
        &vdax,
        "--offset",
        &o,
        "--len",
        &l,
        "--seed",
        "33",
    ]);

    // A pattern written to the pmem dax survives lab down + lab up.
    let pdax = device(&summary, "pmem0")
        .dax
        .clone()
        .expect("pmem0 has a dax device");
    pattern("write", &pdax, "22");
    let pids: Vec<u32> = [summary.qemu_pid, summary.simulator_pid]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(pids.len(), 2);
    let down = lab.down();
    assert!(down.was_up);
    for pid in &pids {
        assert!(
            !pid_alive(*pid),
            "process {pid} started by the run is still alive after lab down"
        );
    }
    for sock in [
        &summary.qmp_socket,
        &summary.agent_socket,
        &summary.simulator_control,
    ] {
        assert!(!sock.exists(), "{} is left after lab down", sock.display());
    }
    assert!(
        device(&summary, "pmem0").backing.exists(),
        "the persistent backing file is kept"
    );
    assert!(
        !vmem.backing.exists(),
        "the volatile backing file is removed"
    );

    let again = lab.up();
    let pdax_again = device(&again, "pmem0")
        .dax
        .clone()
        .expect("pmem0 has a dax device again");
    // Every device came back as a dax device, at the path of the first boot.
    let daxes = |s: &cxl_lab::summary::Summary| {
        s.devices
            .iter()
            .map(|d| (d.name.clone(), d.dax.clone()))
            .collect::<Vec<_>>()
    };
    assert!(
        again.devices.iter().all(|d| d.dax.is_some()),
        "a device has no dax path after the restart: {:?}",
        daxes(&again)
    );
    assert_eq!(daxes(&again), daxes(&summary));
    pattern("verify", &pdax_again, "22");

    // `lab up` after QEMU was killed with SIGKILL recovers.
    let qemu = again.qemu_pid.expect("QEMU pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 QEMU");
    while pid_alive(qemu) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let recovered = lab.up();
    assert_ne!(recovered.qemu_pid, Some(qemu));
    assert!(
        !again.simulator_pid.is_some_and(pid_alive),
        "the old simulator was stopped"
    );
    assert_eq!(
        lab.run(&["cat", "/proc/sys/kernel/hostname"]).trim(),
        "cxl-lab"
    );
    pattern(
        "verify",
        &device(&recovered, "pmem0").dax.clone().expect("pmem dax"),
        "22",
    );

    // A failing guest command reports its exit code.
    let out = lab.exec(&["sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!((out.exit_code, out.stderr.trim()), (7, "oops"));

    let last = lab.down();
    assert!(last.was_up);
}
