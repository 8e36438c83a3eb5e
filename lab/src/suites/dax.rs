//! `lab run dax`: `dax-tester … all --json` on every dax device.
//!
//! dax-tester writes its whole range. On a volatile device that is scratch
//! memory; a persistent device's data must outlive the suite, so its range
//! is first saved to a guest file (`dax-pattern save`), and after the test
//! written back, flushed and compared (`dax-pattern restore`). A failed
//! restore is a suite error that says where the saved copy is.

use cxl_topology::DeviceKind;
use serde_json::{json, Value};

use super::{sh, SuiteContext, SuiteError};

/// How much of each device the tester uses. QEMU serves CXL windows
/// through MMIO callbacks, so under TCG every guest access to CXL memory is
/// slow (measured: the 64 MiB byte test alone takes about 45 s per device).
/// 20 MiB runs the byte sizes up to 16 MiB; dax-tester reports the 64 MiB
/// size as SKIP with its reason (the host tests cover it).
const RANGE: &str = "20M";

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let devices: Vec<_> = ctx
        .summary
        .devices
        .iter()
        .filter(|d| d.dax.is_some())
        .collect();
    if devices.is_empty() {
        return Err(SuiteError::NoDax("dax"));
    }
    let mut results = Vec::new();
    let mut all_passed = true;
    for d in devices {
        let dax = d.dax.clone().unwrap_or_default();
        // Short timings: the guest runs under TCG on a shared machine.
        let argv: Vec<String> = [
            "dax-tester",
            &dax,
            "0",
            RANGE,
            "all",
            "--json",
            "--threads",
            "2",
            "--duration-ms",
            "300",
            "--latency-samples",
            "2000",
            "--atomic-ops",
            "20000",
            "--wakeups",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let persistent = d.kind == DeviceKind::Persistent;
        let (report, code) = if persistent {
            ctx.exec_json(&sh(preserving_script(&d.name, &dax, &argv.join(" "))))
                .await?
        } else {
            ctx.exec_json(&argv).await?
        };
        let passed = code == 0 && report.get("passed").and_then(Value::as_bool) == Some(true);
        all_passed &= passed;
        results.push(json!({
            "device": d.name,
            "kind": d.kind,
            "dax": dax,
            "range": { "offset": 0, "size": RANGE },
            // Reached only when the restore succeeded (else the suite errs).
            "data": if persistent { "saved and restored" } else { "overwritten (volatile)" },
            "passed": passed,
            "report": report,
        }));
    }
    Ok(json!({ "suite": "dax", "passed": all_passed, "devices": results }))
}

/// Saves the first `RANGE` of `dax` to a guest file, runs `tester`, restores
/// and checks the range, and prints the tester's JSON with its exit code.
/// Exit 3: nothing was run (the save failed); exit 4: the restore failed.
pub fn preserving_script(name: &str, dax: &str, tester: &str) -> String {
    format!(
        r#"saved=/tmp/lab-dax-{name}.saved
out=/tmp/lab-dax-{name}.json
dax-pattern save {dax} --offset 0 --len {RANGE} --file "$saved" >&2 || {{ echo "Saving the first {RANGE} of {dax} failed; dax-tester was not run." >&2; exit 3; }}
{tester} > "$out"
rc=$?
if ! dax-pattern restore {dax} --offset 0 --len {RANGE} --file "$saved" >&2; then
  echo "Restoring the first {RANGE} of {dax} failed; the saved copy stays in the guest at $saved." >&2
  exit 4
fi
rm -f "$saved"
cat "$out"
exit $rc
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_ranges_are_saved_before_and_restored_after_the_tester() {
        let s = preserving_script(
            "pmem0",
            "/dev/dax1.0",
            "dax-tester /dev/dax1.0 0 20M all --json",
        );
        let save = s
            .find("dax-pattern save /dev/dax1.0 --offset 0 --len 20M --file \"$saved\"")
            .expect("save");
        let test = s
            .find("dax-tester /dev/dax1.0 0 20M all --json > \"$out\"")
            .expect("tester");
        let restore = s
            .find("dax-pattern restore /dev/dax1.0 --offset 0 --len 20M --file \"$saved\"")
            .expect("restore");
        assert!(save < test && test < restore, "{s}");
        assert!(s.contains("|| { echo \"Saving the first 20M of /dev/dax1.0 failed; dax-tester was not run.\" >&2; exit 3; }"));
        assert!(s.contains("stays in the guest at $saved.\" >&2\n  exit 4"));
        assert!(
            s.ends_with("cat \"$out\"\nexit $rc\n"),
            "the tester's verdict is kept"
        );
    }
}
