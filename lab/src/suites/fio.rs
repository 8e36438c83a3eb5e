//! `lab run fio`: Debian's fio in the guest, through the LD_PRELOAD
//! library onto a dax device, randwrite then randread with crc32c verify,
//! psync, at block sizes from 64 B to 4 KiB.

use serde_json::{json, Value};

use super::{SuiteContext, SuiteError};

pub const BLOCK_SIZES: [u64; 6] = [64, 128, 256, 384, 512, 4096];
const PRELOAD: &str = "/usr/lib/cxl-lab/libfio_intercept.so";
/// Each file gets a 2 MiB slot of the device; every job writes all of it
/// at 4 KiB and 256 KiB at the small sizes (TCG is slow).
const FILE_SIZE: u64 = 2 << 20;

fn job_size(bs: u64) -> u64 {
    (bs * 1024).min(FILE_SIZE)
}

fn fio_argv(dax: &str, rw: &str, bs: u64) -> Vec<String> {
    [
        "env",
        "FIO_INTERCEPT_ENABLE=1",
        &format!("FIO_MEM_DEVICE={dax}"),
        "FIO_MEM_OFFSET=0",
        &format!("FIO_FILE_SIZE={FILE_SIZE}"),
        "FIO_INTERCEPT_PATTERN=*.cxl",
        &format!("LD_PRELOAD={PRELOAD}"),
        "fio",
        "--output-format=json",
        "--name=cxl",
        "--filename=/tmp/lab-fio.cxl",
        &format!("--size={}", job_size(bs)),
        &format!("--bs={bs}"),
        &format!("--rw={rw}"),
        "--ioengine=psync",
        "--direct=1",
        "--randrepeat=1",
        "--verify=crc32c",
        "--verify_state_save=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// iops, bandwidth and error of fio's JSON for the given direction.
fn job_figures(report: &Value, dir: &str) -> (f64, u64, i64) {
    let job = &report["jobs"][0];
    let side = &job[dir];
    (
        side["iops"].as_f64().unwrap_or(0.0),
        side["bw_bytes"].as_u64().unwrap_or(0),
        job["error"].as_i64().unwrap_or(-1),
    )
}

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let dev = ctx
        .summary
        .devices
        .iter()
        .find(|d| d.dax.is_some())
        .ok_or(SuiteError::NoDax("fio"))?;
    let dax = dev.dax.clone().unwrap_or_default();
    let mut runs = Vec::new();
    let mut all_passed = true;
    for bs in BLOCK_SIZES {
        for (rw, dir) in [("randwrite", "write"), ("randread", "read")] {
            let argv = fio_argv(&dax, rw, bs);
            let (report, code) = ctx.exec_json(&argv).await?;
            let (iops, bw, error) = job_figures(&report, dir);
            let passed = code == 0 && error == 0;
            all_passed &= passed;
            runs.push(json!({
                "bs": bs,
                "rw": rw,
                "size": job_size(bs),
                "passed": passed,
                "error": error,
                "iops": iops,
                "bw_bytes": bw,
                "fio_version": report["fio version"],
            }));
        }
    }
    Ok(json!({
        "suite": "fio",
        "device": dev.name,
        "dax": dax,
        "engine": "psync",
        "verify": "crc32c",
        "passed": all_passed,
        "runs": runs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_sets_the_preload_environment_and_verify() {
        let a = fio_argv("/dev/dax0.0", "randwrite", 64);
        assert_eq!(a[0], "env");
        assert!(a.contains(&"FIO_MEM_DEVICE=/dev/dax0.0".to_string()));
        assert!(a.contains(&"LD_PRELOAD=/usr/lib/cxl-lab/libfio_intercept.so".to_string()));
        assert!(a.contains(&"--verify=crc32c".to_string()));
        assert!(a.contains(&"--size=65536".to_string()));
        assert_eq!(job_size(4096), FILE_SIZE);
    }

    #[test]
    fn reads_figures_from_fio_json() {
        let r = json!({"jobs": [{"error": 0, "write": {"iops": 1234.5, "bw_bytes": 79008}}]});
        assert_eq!(job_figures(&r, "write"), (1234.5, 79008, 0));
        assert_eq!(job_figures(&json!({}), "read").2, -1);
    }
}
