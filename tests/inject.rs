//! `lab inject` on the default topology under TCG: poison and a General
//! Media event injected into vmem0 through QMP come back as the guest
//! kernel's `cxl_poison` and `cxl_general_media` trace events with the
//! injected DPA; QEMU's own refusal names the QMP command and the device;
//! `lab inject --json` through the binary records what was sent.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxl_lab::error::LabError;
use cxl_lab::inject::{
    EventHeader, EventLog, GeneralMediaArgs, InjectError, Injection, MediaEvent, PoisonArgs,
};
use lab_e2e::{error_chain, tools_dir, TestLab};

const NAME: &str = "e2e-inject";
const TRACE: &str = "/sys/kernel/tracing";

fn poison(dpa: u64, length: u64) -> Injection {
    Injection::Poison(PoisonArgs {
        device: "vmem0".into(),
        dpa,
        length,
    })
}

fn general_media(dpa: u64) -> Injection {
    Injection::GeneralMedia(GeneralMediaArgs {
        event: MediaEvent {
            device: "vmem0".into(),
            dpa,
            header: EventHeader {
                log: EventLog::Informational,
                flags: None,
            },
            descriptor: 0,
            event_type: 0,
            transaction_type: 1,
            channel: None,
            rank: None,
        },
        device_mask: None,
        component_id: None,
    })
}

/// The value of `field=` in a trace line, as a number (hex with or
/// without 0x, as the kernel prints it for these fields).
fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    let v: String = line[at..]
        .trim_start_matches("0x")
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&v, 16).ok()
}

/// Polls the guest's trace until a line of `event` satisfies `pick`.
fn wait_for_trace(lab: &TestLab, event: &str, pick: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let trace = lab.run(&["cat", &format!("{TRACE}/trace")]);
        if let Some(l) = trace
            .lines()
            .find(|l| l.contains(&format!(" {event}:")) && pick(l))
        {
            return l.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {event} line after 30 s; the trace is:\n{trace}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn injected_poison_and_general_media_reach_the_guest_kernel() {
    let lab = TestLab::new(NAME);
    let summary = lab.up();
    let memdev = summary
        .devices
        .iter()
        .find(|d| d.name == "vmem0")
        .and_then(|d| d.memdev.clone())
        .unwrap_or_else(|| panic!("no memdev for vmem0 in {summary:#?}"));

    lab.run(&[
        "sh",
        "-c",
        &format!(
            "[ -e {TRACE}/trace ] || mount -t tracefs tracefs {TRACE}; \
             echo 1 > {TRACE}/events/cxl/enable && echo > {TRACE}/trace"
        ),
    ]);

    // Poison: QEMU keeps it in vmem0's poison list, which the kernel reads
    // (and traces) when asked through trigger_poison_list.
    let r = lab
        .rt
        .block_on(cxl_lab::verbs::inject(NAME, &poison(0x2000, 64)))
        .unwrap_or_else(|e| panic!("inject poison: {}", error_chain(&e)));
    assert_eq!(r.command, "cxl-inject-poison");
    assert_eq!(r.path, "/machine/peripheral/vmem0");
    assert_eq!(r.answer, serde_json::json!({}));
    lab.run(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/bus/cxl/devices/{memdev}/trigger_poison_list"),
    ]);
    let line = wait_for_trace(&lab, "cxl_poison", |l| field(l, "dpa") == Some(0x2000));
    eprintln!("{line}");
    assert_eq!(field(&line, "dpa_length"), Some(64), "{line}");
    assert!(line.contains(&format!("memdev={memdev}")), "{line}");

    // A General Media event record: QEMU signals the event log, the kernel
    // reads and traces it.
    let r = lab
        .rt
        .block_on(cxl_lab::verbs::inject(NAME, &general_media(0x1000)))
        .unwrap_or_else(|e| panic!("inject general-media: {}", error_chain(&e)));
    assert_eq!(r.command, "cxl-inject-general-media-event");
    let line = wait_for_trace(&lab, "cxl_general_media", |l| {
        field(l, "dpa") == Some(0x1000)
    });
    eprintln!("{line}");

    // QEMU's own refusal (poison overlapping poison) names the step.
    let e = lab
        .rt
        .block_on(cxl_lab::verbs::inject(NAME, &poison(0x2000, 128)))
        .expect_err("QEMU refuses poison overlapping poison");
    let text = error_chain(&e);
    eprintln!("{text}");
    assert!(
        matches!(&e, LabError::Inject(i) if matches!(**i, InjectError::QemuRefused { .. })),
        "{text}"
    );
    assert_eq!(
        text,
        "QEMU refused cxl-inject-poison on device vmem0: Overlap with existing poisoned region not supported"
    );

    // A refusal of lab's own: nothing reaches QEMU.
    let e = lab
        .rt
        .block_on(cxl_lab::verbs::inject(NAME, &poison(0x2001, 64)))
        .expect_err("unaligned DPA");
    assert!(
        matches!(&e, LabError::Inject(i) if i.refused_before_qemu()),
        "{e}"
    );

    // The binary's --json record.
    let out = Command::new(tools_dir().join("lab"))
        .args([
            "inject", "--name", NAME, "--json", "dram", "--device", "vmem0",
        ])
        .args(["--dpa", "0x3000", "--log", "warning", "--row", "7"])
        .stdin(Stdio::null())
        .output()
        .expect("running lab inject");
    assert!(
        out.status.success(),
        "lab inject dram failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["command"], "cxl-inject-dram-event", "{v}");
    assert_eq!(v["device"], "vmem0", "{v}");
    assert_eq!(v["fields"]["dpa"], 0x3000, "{v}");
    assert_eq!(v["fields"]["log"], "warning", "{v}");
    assert_eq!(v["fields"]["row"], 7, "{v}");
    assert_eq!(v["answer"], serde_json::json!({}), "{v}");
    let line = wait_for_trace(&lab, "cxl_dram", |l| field(l, "dpa") == Some(0x3000));
    eprintln!("{line}");

    lab.down();
}
