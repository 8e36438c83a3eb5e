//! `lab run ras`: each step injects one CXL error or event through the
//! same code as `lab inject` and compares what the guest kernel reports
//! (its `cxl` trace events, AER lines in the kernel log) with what was
//! injected.
//!
//! Poison is read back by triggering the memdev's poison list
//! (`cxl_poison`: dpa, dpa_length, and inside a one-device region the hpa
//! at the region's start + dpa and the kernel's region name); General
//! Media, DRAM and Memory Module records come back as `cxl_general_media`,
//! `cxl_dram` and `cxl_memory_module`.
//!
//! Protocol errors: QEMU signals the CXL RAS capability's errors as PCIe
//! *internal* errors, and Debian's 6.12 kernel leaves Corrected and
//! Uncorrectable Internal Error masked in a CXL 2.0 endpoint's AER
//! capability (it unmasks them only for RCH devices), so by default no AER
//! message reaches the root port and nothing is traced (measured: CEMsk
//! 0xe000, UEMsk 0x02400000, with the status bit set). The correctable step
//! shows that, then clears the mask bit, injects again, finds
//! `cxl_aer_correctable_error` and the AER lines, and restores the mask.
//! An uncorrectable error, once unmasked, is fatal to the kernel (UESvrt
//! bit 22): it resets the link and releases the driver, which tears down
//! the device's region; so that step injects with the kernel's mask only
//! and reports "skipped" with the registers that show why.

use std::time::{Duration, Instant};

use cxl_topology::DeviceKind;
use serde_json::{json, Value};

use crate::inject::{
    CorrectableArgs, CorrectableType, DramArgs, EventHeader, EventLog, GeneralMediaArgs, Injection,
    MediaEvent, MemoryModuleArgs, PoisonArgs, UncorrectableArgs, UncorrectableType,
};
use crate::suite_support::{sh, SuiteContext, SuiteError};
use crate::summary::DeviceSummary;

const TRACE: &str = "/sys/kernel/tracing";
/// How long a step waits for the event it expects.
const WAIT: Duration = Duration::from_secs(30);
/// Where the guest kernel's debugfs is (poison clearing lives there).
const DEBUGFS: &str = "/sys/kernel/debug";

/// How long a step waits to be sure an event does not come.
const QUIET: Duration = Duration::from_secs(5);

/// AER capability (PCIe extended capability ID 1) register offsets.
const AER_UNCOR_STATUS: usize = 0x04;
const AER_UNCOR_MASK: usize = 0x08;
const AER_UNCOR_SEVERITY: usize = 0x0c;
const AER_COR_STATUS: usize = 0x10;
const AER_COR_MASK: usize = 0x14;
/// Uncorrectable Internal Error (bit 22) and Corrected Internal Error (bit 14).
const UNCOR_INTERNAL: u32 = 1 << 22;
const COR_INTERNAL: u32 = 1 << 14;

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    // The cxl trace events and AER: without them nothing can be compared.
    if let Some(skipped) = ctx.skipped_for_kernel("ras") {
        return Ok(skipped);
    }
    let vmem = device(ctx, DeviceKind::Volatile)?;
    let pmem = device(ctx, DeviceKind::Persistent)?;
    ctx.exec_checked(&sh(format!(
        "[ -e {TRACE}/trace ] || mount -t tracefs tracefs {TRACE}; \
         echo 1 > {TRACE}/events/cxl/enable && \
         {{ [ ! -e {TRACE}/events/ras/aer_event/enable ] || echo 1 > {TRACE}/events/ras/aer_event/enable; }} && \
         echo > {TRACE}/trace"
    )))
    .await?;
    let ras = Ras { ctx };
    let mut steps = vec![
        ras.poison(vmem, 0x2000, 64).await?,
        ras.poison(pmem, 0x4000, 128).await?,
        ras.general_media(vmem, 0x1000).await?,
        ras.dram(vmem, 0x3000, 300, 12).await?,
        ras.memory_module(pmem, 95).await?,
    ];
    for d in [vmem, pmem] {
        steps.push(ras.correctable(d).await?);
    }
    steps.push(ras.uncorrectable(pmem).await?);
    let count = |o: &str| steps.iter().filter(|s| s["outcome"] == o).count();
    let (passed, skipped, failed) = (count("passed"), count("skipped"), count("failed"));
    Ok(json!({
        "suite": "ras",
        "passed": failed == 0,
        "counts": { "passed": passed, "skipped": skipped, "failed": failed },
        "steps": steps,
    }))
}

/// The first device of `kind` the kernel made a memdev of.
fn device<'a>(ctx: &SuiteContext<'a>, kind: DeviceKind) -> Result<&'a DeviceSummary, SuiteError> {
    ctx.summary
        .devices
        .iter()
        .find(|d| d.kind == kind && d.memdev.is_some())
        .ok_or(SuiteError::NoMemdev {
            suite: "ras",
            kind: match kind {
                DeviceKind::Volatile => "volatile",
                DeviceKind::Persistent => "persistent",
                _ => "dynamic",
            },
        })
}

fn memdev(d: &DeviceSummary) -> &str {
    d.memdev.as_deref().unwrap_or_default()
}

/// One comparison of a step: the value injected (or expected from it)
/// against the one the kernel reported.
fn check(field: &str, expected: impl Into<Value>, reported: Option<impl Into<Value>>) -> Value {
    let expected = expected.into();
    let reported = reported.map(Into::into).unwrap_or(Value::Null);
    json!({ "field": field, "expected": expected, "reported": reported, "ok": expected == reported })
}

/// A step's JSON; its outcome follows from the checks unless given.
fn step(name: String, injected: Value, reported: Value, checks: Vec<Value>) -> Value {
    let bad: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] != true)
        .filter_map(|c| c["field"].as_str())
        .collect();
    let (outcome, reason) = match bad.is_empty() {
        true => ("passed", Value::Null),
        false => (
            "failed",
            format!("reported differs from injected in: {}", bad.join(", ")).into(),
        ),
    };
    json!({ "step": name, "injected": injected, "reported": reported, "checks": checks,
            "outcome": outcome, "reason": reason })
}

fn failed(name: String, injected: Value, reason: String) -> Value {
    json!({ "step": name, "injected": injected, "reported": Value::Null, "checks": [],
            "outcome": "failed", "reason": reason })
}

fn media_event(device: &str, dpa: u64, log: EventLog) -> MediaEvent {
    MediaEvent {
        device: device.to_owned(),
        dpa,
        header: EventHeader { log, flags: None },
        descriptor: 0,
        event_type: 0,
        transaction_type: 1,
        channel: None,
        rank: None,
    }
}

struct Ras<'c, 'a> {
    ctx: &'c SuiteContext<'a>,
}

impl Ras<'_, '_> {
    /// Injects through `lab inject`'s code; what was sent, or why not.
    async fn inject(&self, injection: &Injection) -> Result<Value, String> {
        let r = crate::inject::inject(&self.ctx.summary.qmp_socket, self.ctx.topology, injection)
            .await
            .map_err(|e| format!("injection failed: {}", crate::error::error_chain(&e)))?;
        Ok(
            json!({ "form": injection.form(), "command": r.command, "device": r.device, "fields": r.fields }),
        )
    }

    async fn trace(&self) -> Result<String, SuiteError> {
        self.ctx
            .exec_checked(&["cat".into(), format!("{TRACE}/trace")])
            .await
    }

    /// The first `event` line satisfying `pick`, polled for `within`.
    async fn wait(
        &self,
        event: &str,
        within: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, SuiteError> {
        let start = Instant::now();
        loop {
            let trace = self.trace().await?;
            if let Some(l) = event_lines(&trace, event).find(|l| pick(l)) {
                return Ok(Some(l.trim().to_owned()));
            }
            if start.elapsed() >= within {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The first `event` line `pick` accepts within [`WAIT`], or the
    /// failed step saying that no line `what` came.
    async fn line_or_failed(
        &self,
        name: &str,
        injected: &Value,
        event: &str,
        what: String,
        pick: impl Fn(&str) -> bool,
    ) -> Result<Result<String, Value>, SuiteError> {
        Ok(match self.wait(event, WAIT, pick).await? {
            Some(line) => Ok(line),
            None => Err(failed(
                name.to_owned(),
                injected.clone(),
                format!("no {event} line {what} within {} s", WAIT.as_secs()),
            )),
        })
    }

    /// The region holding `d`'s byte `dpa`: its kernel name and the HPA
    /// the kernel should report, through the region's interleave (each
    /// device here is in one region, from DPA 0).
    fn region_hpa(&self, d: &DeviceSummary, dpa: u64) -> Option<(String, u64)> {
        self.ctx.summary.regions.iter().find_map(|r| {
            let position = r.devices.iter().position(|n| *n == d.name)?;
            let ways = r.devices.len() as u64;
            (dpa < r.size / ways).then(|| {
                let decode = cxl_topology::Interleave {
                    ways,
                    granularity: r.granularity,
                };
                (
                    r.region.clone(),
                    r.start + decode.region_offset(position, dpa),
                )
            })
        })
    }

    async fn poison(&self, d: &DeviceSummary, dpa: u64, length: u64) -> Result<Value, SuiteError> {
        let name = format!("poison {} dpa {dpa:#x}", d.name);
        let injection = Injection::Poison(PoisonArgs {
            device: d.name.clone(),
            dpa,
            length,
        });
        // Poison an earlier run left (before the suite cleared its own)
        // would make QEMU refuse the injection as an overlap.
        if let Err(reason) = self.clear_poison(d, dpa, length).await {
            return Ok(failed(name, Value::Null, reason));
        }
        let injected = match self.inject(&injection).await {
            Ok(v) => v,
            Err(reason) => return Ok(failed(name, Value::Null, reason)),
        };
        let md = memdev(d);
        self.ctx
            .exec_checked(&sh(format!(
                "echo 1 > /sys/bus/cxl/devices/{md}/trigger_poison_list"
            )))
            .await?;
        let what = format!("for {md} with dpa={dpa:#x} after trigger_poison_list");
        let line = match self
            .line_or_failed(&name, &injected, "cxl_poison", what, |l| {
                field(l, "memdev") == Some(md)
                    && field(l, "trace_type") == Some("List")
                    && hex(l, "dpa") == Some(dpa)
            })
            .await?
        {
            Ok(line) => line,
            Err(failed) => return Ok(failed),
        };
        let mut checks = vec![
            check("dpa", dpa, hex(&line, "dpa")),
            check("dpa_length", length, hex(&line, "dpa_length")),
        ];
        if let Some((region, hpa)) = self.region_hpa(d, dpa) {
            checks.push(check("hpa", hpa, hex(&line, "hpa")));
            checks.push(check("region", region, field(&line, "region")));
        }
        // QEMU keeps injected poison in the device's list and refuses to
        // inject over it, so the suite could not run twice on one lab.
        if let Err(reason) = self.clear_poison(d, dpa, length).await {
            return Ok(failed(name, injected, reason));
        }
        Ok(step(name, injected, line.into(), checks))
    }

    /// Clears `d`'s poison at `dpa..dpa + length` through the guest
    /// kernel's debugfs `cxl/<memdev>/clear_poison` (the Clear Poison
    /// mailbox command, 64 bytes each). The command writes the 64 bytes it clears (zeros from the
    /// kernel), so the host copies them out of the device's backing file
    /// first (the DPA is the file offset) and puts them back after: the
    /// device's data is as before.
    async fn clear_poison(&self, d: &DeviceSummary, dpa: u64, length: u64) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        let md = memdev(d);
        let backing = d.backing.display();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&d.backing)
            .map_err(|e| format!("clearing the poison: opening {backing} failed: {e}"))?;
        let mut saved = vec![0u8; length as usize];
        file.read_exact_at(&mut saved, dpa)
            .map_err(|e| format!("clearing the poison: reading {backing} failed: {e}"))?;
        let clears = (dpa..dpa + length)
            .step_by(64)
            .map(|a| format!("echo {a:#x} > {DEBUGFS}/cxl/{md}/clear_poison"))
            .collect::<Vec<_>>()
            .join(" && ");
        let script = format!(
            "{{ [ -e {DEBUGFS}/cxl ] || mount -t debugfs debugfs {DEBUGFS}; }} && {clears}"
        );
        let cleared = self.ctx.exec_checked(&sh(script)).await;
        file.write_all_at(&saved, dpa).map_err(|e| {
            format!("clearing the poison: writing the device's bytes back to {backing} failed: {e}")
        })?;
        cleared.map(drop).map_err(|e| {
            format!(
                "clearing the poison failed: {}",
                crate::error::error_chain(&e)
            )
        })
    }

    async fn general_media(&self, d: &DeviceSummary, dpa: u64) -> Result<Value, SuiteError> {
        let name = format!("general-media {} dpa {dpa:#x}", d.name);
        let injection = Injection::GeneralMedia(GeneralMediaArgs {
            event: media_event(&d.name, dpa, EventLog::Warning),
            device_mask: None,
            component_id: None,
        });
        self.media(name, d, dpa, "cxl_general_media", injection, "Warning", &[])
            .await
    }

    async fn dram(
        &self,
        d: &DeviceSummary,
        dpa: u64,
        row: u32,
        column: u16,
    ) -> Result<Value, SuiteError> {
        let name = format!("dram {} dpa {dpa:#x}", d.name);
        let injection = Injection::Dram(DramArgs {
            event: media_event(&d.name, dpa, EventLog::Informational),
            nibble_mask: None,
            bank_group: None,
            bank: None,
            row: Some(row),
            column: Some(column),
            correction_mask: Vec::new(),
        });
        let extra = [("row", u64::from(row)), ("column", u64::from(column))];
        self.media(name, d, dpa, "cxl_dram", injection, "Informational", &extra)
            .await
    }

    /// A General Media or DRAM record: dpa, log, hpa and region, and
    /// `extra` decimal fields.
    #[allow(clippy::too_many_arguments)]
    async fn media(
        &self,
        name: String,
        d: &DeviceSummary,
        dpa: u64,
        event: &str,
        injection: Injection,
        log: &str,
        extra: &[(&str, u64)],
    ) -> Result<Value, SuiteError> {
        let injected = match self.inject(&injection).await {
            Ok(v) => v,
            Err(reason) => return Ok(failed(name, Value::Null, reason)),
        };
        let md = memdev(d);
        let what = format!("for {md} with dpa={dpa:#x}");
        let line = match self
            .line_or_failed(&name, &injected, event, what, |l| {
                field(l, "memdev") == Some(md) && hex(l, "dpa") == Some(dpa)
            })
            .await?
        {
            Ok(line) => line,
            Err(failed) => return Ok(failed),
        };
        let mut checks = vec![
            check("dpa", dpa, hex(&line, "dpa")),
            check("log", log, field(&line, "log")),
        ];
        for (f, v) in extra {
            checks.push(check(f, *v, dec(&line, f)));
        }
        if let Some((region, hpa)) = self.region_hpa(d, dpa) {
            checks.push(check("hpa", hpa, hex(&line, "hpa")));
            checks.push(check("region", region, field(&line, "region")));
        }
        Ok(step(name, injected, line.into(), checks))
    }

    async fn memory_module(
        &self,
        d: &DeviceSummary,
        temperature: i16,
    ) -> Result<Value, SuiteError> {
        let name = format!("memory-module {} temperature {temperature}", d.name);
        let injection = Injection::MemoryModule(MemoryModuleArgs {
            device: d.name.clone(),
            header: EventHeader {
                log: EventLog::Failure,
                flags: None,
            },
            event_type: 3,
            health_status: 0,
            media_status: 0,
            additional_status: 0,
            life_used: 0,
            temperature,
            dirty_shutdown_count: 0,
            corrected_volatile_error_count: 0,
            corrected_persistent_error_count: 0,
        });
        let injected = match self.inject(&injection).await {
            Ok(v) => v,
            Err(reason) => return Ok(failed(name, Value::Null, reason)),
        };
        let md = memdev(d);
        let want = u64::try_from(temperature).ok();
        let what = format!("for {md} with device_temp={temperature}");
        let line = match self
            .line_or_failed(&name, &injected, "cxl_memory_module", what, |l| {
                field(l, "memdev") == Some(md) && dec(l, "device_temp") == want
            })
            .await?
        {
            Ok(line) => line,
            Err(failed) => return Ok(failed),
        };
        let checks = vec![
            check("device_temp", temperature, dec(&line, "device_temp")),
            check(
                "event_type",
                "Temperature Change",
                field(&line, "event_type"),
            ),
            check("log", "Failure", field(&line, "log")),
        ];
        Ok(step(name, injected, line.into(), checks))
    }

    /// The PCI address of a memdev's device (`0000:0d:00.0`).
    async fn pci(&self, md: &str) -> Result<String, SuiteError> {
        let out = self
            .ctx
            .exec_checked(&sh(format!(
                "basename \"$(dirname \"$(readlink -f /sys/bus/cxl/devices/{md})\")\""
            )))
            .await?;
        Ok(out.trim().to_owned())
    }

    /// The device's AER capability: its offset and registers.
    async fn aer(&self, pci: &str) -> Result<Aer, SuiteError> {
        let out = self
            .ctx
            .exec_checked(&[
                "od".into(),
                "-An".into(),
                "-v".into(),
                "-tx1".into(),
                format!("/sys/bus/pci/devices/{pci}/config"),
            ])
            .await?;
        let bytes = od_bytes(&out);
        Aer::find(&bytes).ok_or_else(|| SuiteError::Setup {
            what: format!("find the AER capability of {pci}"),
            detail: format!("{} bytes of config space without it", bytes.len()),
        })
    }

    /// Writes a config space dword of the device.
    async fn write_dword(&self, pci: &str, offset: usize, value: u32) -> Result<(), SuiteError> {
        let octal: String = value
            .to_le_bytes()
            .iter()
            .map(|b| format!("\\{b:03o}"))
            .collect();
        self.ctx
            .exec_checked(&sh(format!(
                "printf '{octal}' | dd of=/sys/bus/pci/devices/{pci}/config bs=1 seek={offset} conv=notrunc 2>/dev/null"
            )))
            .await
            .map(drop)
    }

    /// AER lines of the kernel log about `pci` after the first `skip`.
    fn aer_lines(log: &[String], skip: usize, pci: &str) -> Vec<String> {
        log.iter()
            .skip(skip)
            .filter(|l| l.contains(pci) || l.contains("AER"))
            .filter(|l| {
                l.contains("AER")
                    || l.contains("Bus Error")
                    || l.contains("IntErr")
                    || l.contains("error status")
            })
            .cloned()
            .collect()
    }

    async fn correctable(&self, d: &DeviceSummary) -> Result<Value, SuiteError> {
        let name = format!("correctable {} mem-data-ecc", d.name);
        let md = memdev(d);
        let pci = self.pci(md).await?;
        let injection = Injection::Correctable(CorrectableArgs {
            device: d.name.clone(),
            error_type: CorrectableType::MemDataEcc,
        });
        let traced = |l: &str| field(l, "memdev") == Some(md);
        // As the kernel left the mask.
        let before = self.aer(&pci).await?;
        let log0 = self.ctx.dmesg().await?.len();
        let injected = match self.inject(&injection).await {
            Ok(v) => v,
            Err(reason) => return Ok(failed(name, Value::Null, reason)),
        };
        let masked_line = self
            .wait("cxl_aer_correctable_error", QUIET, traced)
            .await?;
        let after = self.aer(&pci).await?;
        let masked_log = Self::aer_lines(&self.ctx.dmesg().await?, log0, &pci);
        let kernel_mask = json!({
            "cor_mask": format!("{:#010x}", before.cor_mask),
            "cor_status_after": format!("{:#010x}", after.cor_status),
            "internal_masked": before.cor_mask & COR_INTERNAL != 0,
            "trace": masked_line,
            "dmesg": masked_log,
        });
        if masked_line.is_some() {
            let line = masked_line.unwrap_or_default();
            let checks = vec![check("status", "Memory Data ECC Error", status(&line))];
            let mut s = step(name, injected, line.into(), checks);
            s["kernel_mask"] = kernel_mask;
            return Ok(s);
        }
        // Clear the status the first injection left, unmask Corrected
        // Internal Error, inject again, put the mask back.
        let at = before.offset;
        self.write_dword(&pci, at + AER_COR_STATUS, COR_INTERNAL)
            .await?;
        self.write_dword(&pci, at + AER_COR_MASK, before.cor_mask & !COR_INTERNAL)
            .await?;
        let log1 = self.ctx.dmesg().await?.len();
        self.ctx
            .exec_checked(&sh(format!("echo > {TRACE}/trace")))
            .await?;
        let again = self.inject(&injection).await;
        let line = match again {
            Ok(_) => self.wait("cxl_aer_correctable_error", WAIT, traced).await?,
            Err(_) => None,
        };
        let log = Self::aer_lines(&self.ctx.dmesg().await?, log1, &pci);
        self.write_dword(&pci, at + AER_COR_MASK, before.cor_mask)
            .await?;
        let mut s = match (again, line) {
            (Err(reason), _) => failed(name, injected, reason),
            (Ok(_), None) => failed(name, injected, format!("no cxl_aer_correctable_error for {md} within {} s even with Corrected Internal Error unmasked", WAIT.as_secs())),
            (Ok(_), Some(line)) => {
                let checks = vec![
                    check("status", "Memory Data ECC Error", status(&line)),
                    check("dmesg CorrIntErr", true, Some(log.iter().any(|l| l.contains("CorrIntErr")))),
                ];
                let mut s = step(name, injected, line.into(), checks);
                if s["outcome"] == "passed" && before.cor_mask & COR_INTERNAL != 0 {
                    s["reason"] = format!("traced only with Corrected Internal Error unmasked: the kernel masks it (CEMsk {:#010x}), so as booted the error sets CESta {:#010x} and nothing is reported", before.cor_mask, after.cor_status).into();
                }
                s
            }
        };
        s["dmesg"] = log.into();
        s["kernel_mask"] = kernel_mask;
        Ok(s)
    }

    async fn uncorrectable(&self, d: &DeviceSummary) -> Result<Value, SuiteError> {
        let name = format!("uncorrectable {} mem-data-ecc", d.name);
        let md = memdev(d);
        let pci = self.pci(md).await?;
        let before = self.aer(&pci).await?;
        let log0 = self.ctx.dmesg().await?.len();
        let injection = Injection::Uncorrectable(UncorrectableArgs {
            device: d.name.clone(),
            types: vec![UncorrectableType::MemDataEcc],
            header: Vec::new(),
        });
        let injected = match self.inject(&injection).await {
            Ok(v) => v,
            Err(reason) => return Ok(failed(name, Value::Null, reason)),
        };
        let line = self
            .wait("cxl_aer_uncorrectable_error", QUIET, |l| {
                field(l, "memdev") == Some(md)
            })
            .await?;
        let after = self.aer(&pci).await?;
        let log = Self::aer_lines(&self.ctx.dmesg().await?, log0, &pci);
        let registers = json!({
            "uncor_mask": format!("{:#010x}", before.uncor_mask),
            "uncor_severity": format!("{:#010x}", before.uncor_severity),
            "uncor_status_after": format!("{:#010x}", after.uncor_status),
        });
        let mut s = match line {
            Some(line) => {
                let checks = vec![check("status", "Memory Data ECC Error", status(&line))];
                step(name, injected, line.into(), checks)
            }
            None if before.uncor_mask & UNCOR_INTERNAL != 0 && after.uncor_status & UNCOR_INTERNAL != 0 => {
                // Leave no status behind for a later unmask to report.
                self.write_dword(&pci, before.offset + AER_UNCOR_STATUS, UNCOR_INTERNAL).await?;
                json!({ "step": name, "injected": injected, "reported": Value::Null, "checks": [],
                    "outcome": "skipped",
                    "reason": format!("the kernel masks Uncorrectable Internal Error (UEMsk {:#010x}, bit 22): the error set UESta {:#010x} and no AER message was sent; unmasked it is fatal (UESvrt {:#010x}) and the kernel's recovery releases the driver and tears down the device's region, so the suite does not unmask it", before.uncor_mask, after.uncor_status, before.uncor_severity) })
            }
            None => failed(name, injected, format!("no cxl_aer_uncorrectable_error for {md} within {} s, and Uncorrectable Internal Error is not masked (UEMsk {:#010x}, UESta {:#010x})", QUIET.as_secs(), before.uncor_mask, after.uncor_status)),
        };
        s["dmesg"] = log.into();
        s["registers"] = registers;
        Ok(s)
    }
}

/// The AER registers of a device's config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aer {
    pub offset: usize,
    pub uncor_status: u32,
    pub uncor_mask: u32,
    pub uncor_severity: u32,
    pub cor_status: u32,
    pub cor_mask: u32,
}

impl Aer {
    /// Walks the PCIe extended capabilities (from 0x100) to AER's.
    pub fn find(config: &[u8]) -> Option<Aer> {
        let dword = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(config.get(at..at + 4)?.try_into().ok()?))
        };
        let mut at = 0x100;
        for _ in 0..64 {
            let header = dword(at)?;
            if header & 0xffff == 1 {
                return Some(Aer {
                    offset: at,
                    uncor_status: dword(at + AER_UNCOR_STATUS)?,
                    uncor_mask: dword(at + AER_UNCOR_MASK)?,
                    uncor_severity: dword(at + AER_UNCOR_SEVERITY)?,
                    cor_status: dword(at + AER_COR_STATUS)?,
                    cor_mask: dword(at + AER_COR_MASK)?,
                });
            }
            at = (header >> 20) as usize;
            if at < 0x100 {
                return None;
            }
        }
        None
    }
}

/// The bytes `od -An -v -tx1` printed.
pub fn od_bytes(out: &str) -> Vec<u8> {
    out.split_whitespace()
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

/// The lines of `event` in a tracefs `trace` file.
pub fn event_lines<'a>(trace: &'a str, event: &str) -> impl Iterator<Item = &'a str> {
    let tag = format!(" {event}: ");
    trace
        .lines()
        .filter(move |l| !l.starts_with('#') && l.contains(&tag))
}

/// The value of ` name=` in a trace line: up to the next space, or
/// between quotes (`type='ECC Error'`), without a trailing `:`; an empty
/// value (`region= `) is `Some("")`.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        return quoted.split('\'').next();
    }
    let v = rest.split(' ').next().unwrap_or_default();
    Some(v.strip_suffix(':').unwrap_or(v))
}

/// A hex field (`dpa=0x2000` and `dpa=2000` alike, as the kernel prints them).
pub fn hex(line: &str, name: &str) -> Option<u64> {
    let v = field(line, name)?;
    u64::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()
}

/// A decimal field (`row=7`, `device_temp=95`).
pub fn dec(line: &str, name: &str) -> Option<u64> {
    field(line, name)?.parse().ok()
}

/// The `status: '…'` of a `cxl_aer_*` line.
pub fn status(line: &str) -> Option<&str> {
    let at = line.find(" status: '")? + " status: '".len();
    line[at..].split('\'').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines from a run of the suite's injections on the default topology
    // (Debian's 6.12 kernel).
    const POISON: &str = "              sh-210     [000] .....    14.455484: cxl_poison: memdev=mem0 host=0000:0d:00.0 serial=4096 trace_type=List region=region0 region_uuid=00000000-0000-0000-0000-000000000000 hpa=0x110002000 dpa=0x2000 dpa_length=0x40 source=Internal flags= overflow_time=0";
    const GM: &str = " irq/31-0000:0d:-170     [000] .....    14.484115: cxl_general_media: memdev=mem0 host=0000:0d:00.0 serial=4096 log=Warning : time=1796596024745012521 uuid=fbcd0a77-c260-417f-85a9-088b1621eba6 len=128 flags='0x1' handle=1 related_handle=0 maint_op_class=0 : dpa=1000 dpa_flags='' descriptor='' type='ECC Error' transaction_type='Host Read' channel=0 rank=0 device=0 comp_id=00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 validity_flags='' hpa=110001000 region=region0 region_uuid=00000000-0000-0000-0000-000000000000";
    const DRAM: &str = " irq/30-0000:0d:-169     [001] .....    14.492933: cxl_dram: memdev=mem0 host=0000:0d:00.0 serial=4096 log=Informational : time=1796596024755120562 uuid=601dcbb3-9c06-4eab-b8af-4e9bfb5c9624 len=128 flags='' handle=1 related_handle=0 maint_op_class=0 : dpa=3000 dpa_flags='' descriptor='' type='ECC Error' transaction_type='Host Read' channel=0 rank=0 nibble_mask=0 bank_group=0 bank=0 row=7 column=2 cor_mask=00 00 validity_flags='ROW|COLUMN' hpa=110003000 region=region0 region_uuid=00000000-0000-0000-0000-000000000000";
    const MM: &str = " irq/40-0000:0e:-176     [000] .....    14.501756: cxl_memory_module: memdev=mem1 host=0000:0e:00.0 serial=4097 log=Failure : time=1796596024764265410 uuid=fe927475-dd59-4339-a586-79bab113b774 len=128 flags='0x2' handle=1 related_handle=0 maint_op_class=0 : event_type='Temperature Change' health_status='' media_status='Normal' as_life_used=Normal as_dev_temp=Normal as_cor_vol_err_cnt=Normal as_cor_per_err_cnt=Normal life_used=0 device_temp=95 dirty_shutdown_cnt=0 cor_vol_err_cnt=0 cor_per_err_cnt=0";
    const COR: &str = "   irq/25-aerdrv-67      [001] .....    42.252046: cxl_aer_correctable_error: memdev=mem1 host=0000:0e:00.0 serial=4097: status: 'Memory Data ECC Error'";
    const UNCOR: &str = "   irq/25-aerdrv-67      [001] .....    44.501239: cxl_aer_uncorrectable_error: memdev=mem1 host=0000:0e:00.0 serial=4097: status: 'Memory Data ECC Error' first_error: 'Memory Data ECC Error'";

    #[test]
    fn trace_fields_of_real_lines() {
        assert_eq!(field(POISON, "memdev"), Some("mem0"));
        assert_eq!(hex(POISON, "hpa"), Some(0x1_1000_2000));
        assert_eq!(hex(POISON, "dpa"), Some(0x2000));
        assert_eq!(hex(POISON, "dpa_length"), Some(0x40));
        assert_eq!(field(POISON, "region"), Some("region0"));
        assert_eq!(field(POISON, "flags"), Some(""));
        assert_eq!(hex(GM, "dpa"), Some(0x1000));
        assert_eq!(hex(GM, "hpa"), Some(0x1_1000_1000));
        assert_eq!(field(GM, "log"), Some("Warning"));
        assert_eq!(field(GM, "type"), Some("ECC Error"));
        assert_eq!(field(GM, "serial"), Some("4096"));
        assert_eq!(dec(DRAM, "row"), Some(7));
        assert_eq!(dec(DRAM, "column"), Some(2));
        assert_eq!(field(DRAM, "validity_flags"), Some("ROW|COLUMN"));
        assert_eq!(dec(MM, "device_temp"), Some(95));
        assert_eq!(field(MM, "event_type"), Some("Temperature Change"));
        assert_eq!(field(MM, "log"), Some("Failure"));
        assert_eq!(field(COR, "serial"), Some("4097"));
        assert_eq!(status(COR), Some("Memory Data ECC Error"));
        assert_eq!(status(UNCOR), Some("Memory Data ECC Error"));
        assert_eq!(field(POISON, "nope"), None);
        assert_eq!(hex(MM, "dpa"), None);
    }

    #[test]
    fn event_lines_pick_the_event() {
        let trace = format!("# tracer: nop\n#\n{POISON}\n{GM}\n{DRAM}\n");
        assert_eq!(event_lines(&trace, "cxl_dram").collect::<Vec<_>>(), [DRAM]);
        assert_eq!(event_lines(&trace, "cxl_poison").count(), 1);
        assert_eq!(event_lines(&trace, "cxl_memory_module").count(), 0);
    }

    #[test]
    fn aer_registers_from_config_space() {
        // vmem0's config space as measured: AER at 0x200 behind a
        // capability at 0x100.
        let mut config = vec![0u8; 4096];
        config[0x100..0x104].copy_from_slice(&(0x2000_0023u32).to_le_bytes());
        let regs = [0x0001_0001u32, 0, 0x0240_0000, 0x0046_2030, 0x4000, 0xe000];
        for (i, r) in regs.iter().enumerate() {
            config[0x200 + 4 * i..0x204 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        let od: String = config.iter().map(|b| format!(" {b:02x}")).collect();
        let aer = Aer::find(&od_bytes(&od)).unwrap();
        assert_eq!(
            aer,
            Aer {
                offset: 0x200,
                uncor_status: 0,
                uncor_mask: 0x0240_0000,
                uncor_severity: 0x0046_2030,
                cor_status: 0x4000,
                cor_mask: 0xe000,
            }
        );
        assert!(aer.cor_mask & COR_INTERNAL != 0 && aer.uncor_mask & UNCOR_INTERNAL != 0);
        assert_eq!(Aer::find(&[0; 4096]), None);
    }
}
