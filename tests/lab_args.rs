//! `lab args` for a lab that is not running prints the command line `lab
//! up` then starts QEMU with, element for element (on a cold boot: a
//! restoring one adds `-incoming defer`, and `lab args` of the running lab
//! says so).

use lab_e2e::{error_chain, TestLab};

#[test]
fn args_before_up_is_the_argv_qemu_then_runs_with() {
    let lab = TestLab::new("e2e-args");
    let printed = cxl_lab::verbs::args(&lab.options())
        .unwrap_or_else(|e| panic!("lab args: {}", error_chain(&e)));
    let events = cxl_lab::events::Events::new(lab.recorder.clone());
    let opts = cxl_lab::verbs::UpOptions {
        cold: true,
        save: false,
        ..lab.options()
    };
    let summary = lab
        .rt
        .block_on(cxl_lab::verbs::up(&opts, &events))
        .unwrap_or_else(|e| panic!("lab up --cold --no-save: {}", error_chain(&e)));

    // The pid QEMU wrote itself (-pidfile), checked against the state's.
    let run = cxl_lab::verbs::run_dir(&lab.name).expect("run dir");
    let pid_file = cxl_lab::qemu::pid_file(&run.sockets);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("QEMU's pid file holds a pid");
    assert_eq!(Some(pid), summary.qemu_pid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("QEMU's cmdline");
    // Each argument ends with a NUL; an empty argument stays one.
    let running: Vec<String> = cmdline
        .strip_suffix(&[0])
        .expect("cmdline ends with a NUL")
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    for (i, (p, r)) in printed.iter().zip(&running).enumerate() {
        assert_eq!(
            p, r,
            "argument {i}: lab args printed {p:?}, QEMU runs with {r:?}"
        );
    }
    assert_eq!(
        printed.len(),
        running.len(),
        "lab args printed {printed:?}\nQEMU runs with {running:?}"
    );
    lab.down();
}
