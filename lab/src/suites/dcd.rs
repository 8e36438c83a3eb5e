//! `lab run dcd`: dynamic capacity on a lab with a dynamic device (`lab up
//! --topology dcd`). Extents are added through QMP, the guest is to see
//! them, use the new capacity as a dax device, and give it back when they
//! are released.
//!
//! Two halves. The QMP half runs on any kernel: QEMU accepts valid extents
//! (`cxl-add-dynamic-capacity` to the running QEMU) and refuses invalid
//! ones, each with the text of QEMU's check (hw/mem/cxl_type3.c,
//! `qmp_cxl_process_dynamic_capacity_prescriptive`); the lab's own checks
//! (`inject::plan`) are recorded beside QEMU's. What the guest logs
//! meanwhile (cxl lines of the kernel log, `cxl` trace events, `cxl list`
//! of the memdev) is recorded.
//!
//! The guest half needs the kernel's dynamic capacity support (the DCD
//! series: a memdev's `dynamic_ram_a/size`, a root decoder's
//! `create_dynamic_ram_a_region`, extents as `dax_regionX/extentX.Y`).
//! The suite looks for those in the running kernel: with them it creates a
//! DC region before adding, waits for the extent, sizes the dax region's
//! seed device over it, writes and verifies a pattern, shrinks the device,
//! releases the extent through QMP and waits for it to go. Without them
//! (Debian's 6.12) each guest step is reported as skipped with the reason,
//! and the extents QEMU offered stay pending: QEMU then refuses to release
//! them, which the suite checks instead.

use std::time::{Duration, Instant};

use cxl_topology::DeviceKind;
use qapi::qmp;
use serde_json::{json, Value};

use crate::inject::{self, Command, DcAddArgs, DcReleaseArgs, Extent, Injection};
use crate::qmp::{Qmp, QmpError};
use crate::suite_support::{sh, SuiteContext, SuiteError};
use crate::summary::DeviceSummary;

const TRACE: &str = "/sys/kernel/tracing";
/// QEMU's DC block size: extents start and end on it.
const BLOCK: u64 = 2 << 20;
/// How long a guest step waits for the kernel to act on an extent.
const WAIT: Duration = Duration::from_secs(30);
/// How long the suite lets the guest react to the added extents before it
/// records the guest's logs.
const SETTLE: Duration = Duration::from_secs(5);

/// The extent the guest half uses: the first block of DC region 0 (the
/// DCD series' `dynamic_ram_a` is the device's first DC region).
const GUEST_EXTENT: Extent = Extent {
    offset: 0,
    len: BLOCK,
};
/// A valid extent in DC region 1 (QMP half only).
const SECOND_EXTENT: Extent = Extent {
    offset: 4 * BLOCK,
    len: 2 * BLOCK,
};

pub async fn run(ctx: &SuiteContext<'_>) -> Result<Value, SuiteError> {
    let d = ctx
        .summary
        .devices
        .iter()
        .find(|d| d.kind == DeviceKind::Dynamic && d.memdev.is_some())
        .ok_or(SuiteError::NoDynamic("dcd"))?;
    let dev = ctx
        .topology
        .device(&d.name)
        .ok_or(SuiteError::NoDynamic("dcd"))?;
    let dc = Dcd {
        ctx,
        device: d,
        memdev: d.memdev.clone().unwrap_or_default(),
        region_size: inject::dc_region_size(dev),
        dc_regions: dev.dc_regions.unwrap_or(1).max(1),
    };
    ctx.exec_checked(&sh(format!(
        "[ -e {TRACE}/trace ] || mount -t tracefs tracefs {TRACE}; \
         echo 1 > {TRACE}/events/cxl/enable && echo > {TRACE}/trace"
    )))
    .await?;
    let log0 = dc.ctx.dmesg().await?.len();
    let support = dc.support().await?;
    let mut steps = Vec::new();

    // The guest half's region comes first: the kernel takes extents only
    // into a region that covers them.
    let mut guest = None;
    if support.present {
        let (step, region) = dc.create_region().await?;
        steps.push(step);
        guest = region;
    }
    steps.push(dc.add(0, GUEST_EXTENT).await?);
    if dc.dc_regions > 1 {
        steps.push(dc.add(1, SECOND_EXTENT).await?);
    }
    let mut accepted = false;
    match &guest {
        Some(g) => {
            let step = dc.sees_extent(g).await?;
            accepted = step["outcome"] == "passed";
            steps.push(step);
        }
        None => steps.push(skipped(
            "guest sees the added extent",
            &support.reason(&guest),
        )),
    }
    for case in refusals(&d.name, dc.region_size, dc.dc_regions, accepted) {
        steps.push(dc.refused(case).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let guest_log = dc.guest_log(log0).await?;
    match &guest {
        Some(g) if accepted => {
            let (use_steps, dax) = dc.use_capacity(g).await?;
            steps.extend(use_steps);
            steps.extend(dc.release(g, dax.as_deref()).await?);
        }
        _ => {
            let reason = support.reason(&guest);
            for name in [
                "dax device over the added capacity",
                "use the dax device",
                "release the extent",
                "extent gone",
            ] {
                steps.push(skipped(name, &reason));
            }
            if !support.present {
                steps.push(dc.pending_release().await?);
            }
        }
    }
    let count = |o: &str| steps.iter().filter(|s| s["outcome"] == o).count();
    let (passed, skipped, failed) = (count("passed"), count("skipped"), count("failed"));
    Ok(json!({
        "suite": "dcd",
        "passed": failed == 0,
        "device": d.name,
        "memdev": dc.memdev,
        "dc_region_size": dc.region_size,
        "guest_support": support.json(),
        "counts": { "passed": passed, "skipped": skipped, "failed": failed },
        "steps": steps,
        "guest_log": guest_log,
    }))
}

fn skipped(name: &str, reason: &str) -> Value {
    json!({ "step": name, "outcome": "skipped", "reason": reason, "checks": [] })
}

/// One comparison of a step.
fn check(field: &str, expected: impl Into<Value>, reported: impl Into<Value>) -> Value {
    let (expected, reported) = (expected.into(), reported.into());
    json!({ "field": field, "expected": expected, "reported": reported, "ok": expected == reported })
}

/// A step whose outcome follows from its checks.
fn step(name: &str, mut fields: Value, checks: Vec<Value>) -> Value {
    let bad: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] != true)
        .filter_map(|c| c["field"].as_str())
        .collect();
    fields["step"] = name.into();
    fields["outcome"] = if bad.is_empty() { "passed" } else { "failed" }.into();
    fields["reason"] = if bad.is_empty() {
        Value::Null
    } else {
        format!("differs from expected in: {}", bad.join(", ")).into()
    };
    fields["checks"] = checks.into();
    fields
}

/// What the running kernel shows of dynamic capacity support.
struct Support {
    kernel: String,
    /// `memX/dynamic_ram_a/size`, when the memdev has it.
    dynamic_ram_a_size: Option<String>,
    /// Root decoders with `create_dynamic_ram_a_region`.
    dc_root_decoders: Vec<String>,
    present: bool,
    memdev: String,
}

impl Support {
    fn reason(&self, region: &Option<GuestRegion>) -> String {
        if !self.present {
            return format!(
                "kernel {} has no guest side of dynamic capacity: /sys/bus/cxl/devices/{}/dynamic_ram_a/size{} missing (the DCD series adds them); the extents QEMU offers stay pending, since no host accepts them",
                self.kernel,
                self.memdev,
                if self.dc_root_decoders.is_empty() {
                    " and a root decoder's create_dynamic_ram_a_region are"
                } else {
                    " is"
                }
            );
        }
        match region {
            None => "the DC region could not be created (see that step)".into(),
            Some(_) => {
                "the guest did not take the extent (see \"guest sees the added extent\")".into()
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "kernel": self.kernel,
            "dynamic_capacity": self.present,
            "dynamic_ram_a_size": self.dynamic_ram_a_size,
            "dc_root_decoders": self.dc_root_decoders,
            "looked_for": [
                format!("/sys/bus/cxl/devices/{}/dynamic_ram_a/size", self.memdev),
                "/sys/bus/cxl/devices/decoderX.Y/create_dynamic_ram_a_region",
            ],
        })
    }
}

/// The guest's DC region: its dax region (`dax_regionN`).
struct GuestRegion {
    dax_region: String,
}

/// A refusal to check: the command as sent, the lab's own verdict on the
/// same injection, and QEMU's expected text.
struct Refusal {
    name: &'static str,
    command: Command,
    lab: Injection,
    /// Whether `inject::plan` refuses it too.
    lab_refuses: bool,
    qemu: &'static str,
}

fn extents(extents: &[Extent]) -> Vec<qmp::CxlDynamicCapacityExtent> {
    extents
        .iter()
        .map(|e| qmp::CxlDynamicCapacityExtent {
            offset: e.offset,
            len: e.len,
        })
        .collect()
}

/// `cxl-add-dynamic-capacity` as it is, unchecked.
fn add_command(device: &str, region: u8, list: &[Extent]) -> Command {
    Command::DcAdd(qmp::cxl_add_dynamic_capacity {
        path: inject::qom_path(device),
        host_id: 0,
        selection_policy: qmp::CxlExtentSelectionPolicy::prescriptive,
        region,
        tag: None,
        extents: extents(list),
    })
}

/// `cxl-release-dynamic-capacity` as it is, unchecked.
fn release_command(device: &str, region: u8, list: &[Extent]) -> Command {
    Command::DcRelease(qmp::cxl_release_dynamic_capacity {
        path: inject::qom_path(device),
        host_id: 0,
        removal_policy: qmp::CxlExtentRemovalPolicy::prescriptive,
        forced_removal: None,
        sanitize_on_release: None,
        region,
        tag: None,
        extents: extents(list),
    })
}

/// The same add as `lab inject dc-add` takes it.
fn add_injection(device: &str, region: u8, extents: &[Extent]) -> Injection {
    Injection::DcAdd(DcAddArgs {
        device: device.to_owned(),
        region,
        extents: extents.to_vec(),
        host_id: 0,
        selection_policy: inject::SelectionPolicy::Prescriptive,
        tag: None,
    })
}

/// The same release as `lab inject dc-release` takes it.
fn release_injection(device: &str, region: u8, extents: &[Extent]) -> Injection {
    Injection::DcRelease(DcReleaseArgs {
        device: device.to_owned(),
        region,
        extents: extents.to_vec(),
        host_id: 0,
        removal_policy: inject::RemovalPolicy::Prescriptive,
        forced_removal: false,
        sanitize_on_release: false,
        tag: None,
    })
}

/// What QEMU refuses (its checks in the order it makes them), for a
/// dynamic `device` with `dc_regions` regions of `region_size` bytes;
/// `accepted`: whether the guest took [`GUEST_EXTENT`].
fn refusals(device: &str, region_size: u64, dc_regions: u8, accepted: bool) -> Vec<Refusal> {
    let past_end = Extent {
        offset: region_size - BLOCK,
        len: 2 * BLOCK,
    };
    let half_block = Extent {
        offset: BLOCK,
        len: BLOCK / 2,
    };
    let overlapping = [
        Extent {
            offset: 8 * BLOCK,
            len: 2 * BLOCK,
        },
        Extent {
            offset: 9 * BLOCK,
            len: BLOCK,
        },
    ];
    let zero = Extent {
        offset: 8 * BLOCK,
        len: 0,
    };
    let never_added = Extent {
        offset: 16 * BLOCK,
        len: BLOCK,
    };
    let add = |name, region, list: &[Extent], lab_refuses, qemu| Refusal {
        name,
        command: add_command(device, region, list),
        lab: add_injection(device, region, list),
        lab_refuses,
        qemu,
    };
    vec![
        add(
            "add past the end of DC region 0",
            0,
            &[past_end],
            true,
            "extent range is beyond the region end",
        ),
        add(
            "add to a DC region the device does not have",
            dc_regions,
            &[GUEST_EXTENT],
            true,
            "region id is too large",
        ),
        add(
            "add an extent of zero length",
            0,
            &[zero],
            true,
            "extent with 0 length is not allowed",
        ),
        add(
            "add an extent not aligned to the 2 MiB block",
            0,
            &[half_block],
            false,
            "dpa or len is not aligned to region block size",
        ),
        add(
            "add overlapping extents in one request",
            0,
            &overlapping,
            false,
            "duplicate or overlapped extents are detected",
        ),
        add(
            "add the added extent again",
            0,
            &[GUEST_EXTENT],
            false,
            if accepted {
                "cannot add DPA already accessible to the same LD"
            } else {
                "cannot add DPA again while still pending"
            },
        ),
        Refusal {
            name: "release an extent never added",
            command: release_command(device, 0, &[never_added]),
            lab: release_injection(device, 0, &[never_added]),
            lab_refuses: false,
            qemu: "cannot release extent with non-existing DPA range",
        },
    ]
}

struct Dcd<'c, 'a> {
    ctx: &'c SuiteContext<'a>,
    device: &'c DeviceSummary,
    memdev: String,
    region_size: u64,
    dc_regions: u8,
}

impl Dcd<'_, '_> {
    /// `key=value` lines of a guest script.
    async fn script(&self, script: String) -> Result<Vec<(String, String)>, SuiteError> {
        let out = self.ctx.exec(&sh(script)).await?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .chain((!out.success()).then(|| {
                (
                    "error".to_owned(),
                    format!("exit {}: {}", out.exit_code, out.stderr.trim()),
                )
            }))
            .collect())
    }

    async fn support(&self) -> Result<Support, SuiteError> {
        let md = &self.memdev;
        let kv = self
            .script(format!(
                "echo kernel=$(uname -r); \
                 m=/sys/bus/cxl/devices/{md}/dynamic_ram_a/size; \
                 [ ! -e $m ] || echo dynamic_ram_a_size=$(cat $m); \
                 for d in /sys/bus/cxl/devices/decoder*; do \
                 [ ! -e $d/create_dynamic_ram_a_region ] || echo dc_root=${{d##*/}}; done"
            ))
            .await?;
        let get = |k: &str| -> Vec<String> {
            kv.iter()
                .filter(|(x, _)| x == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let dynamic_ram_a_size = get("dynamic_ram_a_size").into_iter().next();
        let dc_root_decoders = get("dc_root");
        Ok(Support {
            kernel: get("kernel").into_iter().next().unwrap_or_default(),
            present: dynamic_ram_a_size.is_some() && !dc_root_decoders.is_empty(),
            dynamic_ram_a_size,
            dc_root_decoders,
            memdev: md.clone(),
        })
    }

    /// QEMU's answer to `command`: `Ok` with its answer, `Err` with its
    /// refusal's text; a broken connection is the suite's error. A
    /// connection per command: QEMU's monitor serves one client at a time,
    /// and `inject::inject` opens its own.
    async fn send(&self, command: Command) -> Result<Result<Value, String>, SuiteError> {
        let qmp = Qmp::connect(&self.ctx.summary.qmp_socket)
            .await
            .map_err(SuiteError::Qmp)?;
        match inject::send(&qmp, command).await {
            Ok(answer) => Ok(Ok(answer)),
            Err(QmpError::Refused { source, .. }) => Ok(Err(source.desc)),
            Err(e) => Err(SuiteError::Qmp(e)),
        }
    }

    /// A valid add through the lab's checked path (`inject::inject`).
    async fn add(&self, region: u8, extent: Extent) -> Result<Value, SuiteError> {
        let name = format!(
            "add region {region} extent {:#x}:{:#x}",
            extent.offset, extent.len
        );
        let injection = add_injection(&self.device.name, region, &[extent]);
        let sent =
            inject::inject(&self.ctx.summary.qmp_socket, self.ctx.topology, &injection).await;
        Ok(match sent {
            Ok(r) => step(
                &name,
                json!({ "command": r.command, "fields": r.fields, "answer": r.answer }),
                vec![check("qemu accepts", true, true)],
            ),
            Err(e) => step(
                &name,
                json!({ "error": crate::error::error_chain(&e) }),
                vec![check("qemu accepts", true, false)],
            ),
        })
    }

    /// Sends a refusal case to QEMU as it is (past the lab's own checks,
    /// which are recorded beside it).
    async fn refused(&self, case: Refusal) -> Result<Value, SuiteError> {
        let lab = match inject::plan(self.ctx.topology, &case.lab) {
            Ok(_) => Value::Null,
            Err(e) => e.to_string().into(),
        };
        let fields = case.command.arguments();
        let command = case.command.name();
        let qemu = match self.send(case.command).await? {
            Ok(answer) => json!({ "accepted": answer }),
            Err(text) => text.into(),
        };
        let checks = vec![
            check("qemu refuses with", case.qemu, qemu.clone()),
            check("lab refuses first", case.lab_refuses, !lab.is_null()),
        ];
        Ok(step(
            case.name,
            json!({ "command": command, "fields": fields, "qemu": qemu, "lab": lab }),
            checks,
        ))
    }

    /// On a kernel without dynamic capacity: the added extent was never
    /// accepted, so QEMU refuses to release it.
    async fn pending_release(&self) -> Result<Value, SuiteError> {
        let command = release_command(&self.device.name, 0, &[GUEST_EXTENT]);
        let fields = command.arguments();
        let name = command.name();
        let qemu = match self.send(command).await? {
            Ok(answer) => json!({ "accepted": answer }),
            Err(text) => text.into(),
        };
        Ok(step(
            "release the added extent the guest never accepted",
            json!({ "command": name, "fields": fields, "qemu": qemu }),
            vec![check(
                "qemu refuses with",
                "cannot release extent with pending DPA range",
                qemu,
            )],
        ))
    }

    /// What the guest logged since the suite began: the kernel log's cxl
    /// lines, `cxl` trace events (event records, if any were read), and
    /// what `cxl list` and sysfs show of the memdev.
    async fn guest_log(&self, log0: usize) -> Result<Value, SuiteError> {
        let md = &self.memdev;
        let pci = self
            .ctx
            .exec_checked(&sh(format!(
                "basename $(readlink -f /sys/bus/cxl/devices/{md}/..)"
            )))
            .await?
            .trim()
            .to_owned();
        let dmesg: Vec<String> = self
            .ctx
            .dmesg()
            .await?
            .into_iter()
            .skip(log0)
            .filter(|l| {
                let low = l.to_lowercase();
                low.contains("cxl") || l.contains(md.as_str()) || l.contains(&pci)
            })
            .collect();
        let trace: Vec<String> = self
            .ctx
            .exec_checked(&["cat".into(), format!("{TRACE}/trace")])
            .await?
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .collect();
        let list = self
            .ctx
            .exec_checked(&[
                "cxl".into(),
                "list".into(),
                "-I".into(),
                "-m".into(),
                md.clone(),
            ])
            .await?;
        let cxl_list: Value =
            serde_json::from_str(list.trim()).unwrap_or_else(|_| list.trim().into());
        let sysfs: Vec<String> = self
            .ctx
            .exec_checked(&["ls".into(), format!("/sys/bus/cxl/devices/{md}")])
            .await?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Ok(json!({ "dmesg": dmesg, "trace": trace, "cxl_list": cxl_list, "memdev_sysfs": sysfs }))
    }

    /// A DC region over the memdev's `dynamic_ram_a` partition, made
    /// through sysfs as the DCD series' ABI describes (endpoint decoder
    /// mode `dynamic_ram_a`, the root decoder's
    /// `create_dynamic_ram_a_region`), with its dax region.
    async fn create_region(&self) -> Result<(Value, Option<GuestRegion>), SuiteError> {
        let md = &self.memdev;
        let kv = self
            .script(format!(
                "set -e; cd /sys/bus/cxl/devices; \
                 for e in endpoint*; do [ \"$(basename $(readlink -f $e/uport))\" != {md} ] || ep=$e; done; \
                 ed=decoder${{ep#endpoint}}.0; size=$(cat {md}/dynamic_ram_a/size); \
                 echo dynamic_ram_a > $ed/mode; echo $size > $ed/dpa_size; \
                 for d in decoder*; do [ ! -e $d/create_dynamic_ram_a_region ] || {{ rd=$d; break; }}; done; \
                 r=$(cat $rd/create_dynamic_ram_a_region); echo $r > $rd/create_dynamic_ram_a_region; \
                 cat $rd/interleave_granularity > $r/interleave_granularity; \
                 echo 1 > $r/interleave_ways; echo $size > $r/size; echo $ed > $r/target0; \
                 echo 1 > $r/commit; echo $r > /sys/bus/cxl/drivers/cxl_region/bind; \
                 echo region=$r; echo size=$size; \
                 for i in $(seq 50); do dr=$(ls -d $r/dax_region* 2>/dev/null || true); [ -z \"$dr\" ] || break; sleep 0.2; done; \
                 echo dax_region=${{dr##*/}}"
            ))
            .await?;
        let get = |k: &str| kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let region = GuestRegion {
            dax_region: get("dax_region").unwrap_or_default(),
        };
        let ok = get("error").is_none() && !region.dax_region.is_empty();
        let s = step(
            "create the DC region",
            json!({ "region": get("region"), "size": get("size"), "dax_region": get("dax_region"), "error": get("error") }),
            vec![check("dax region", true, ok)],
        );
        Ok((s, ok.then_some(region)))
    }

    /// The extents the guest's dax region shows: (name, offset, length).
    async fn extents(&self, g: &GuestRegion) -> Result<Vec<(String, Value, Value)>, SuiteError> {
        let kv = self
            .script(format!(
                "for x in /sys/bus/cxl/devices/{}/extent*; do [ -e $x ] || continue; \
                 echo extent=${{x##*/}},$(cat $x/offset),$(cat $x/length); done",
                g.dax_region
            ))
            .await?;
        Ok(kv
            .into_iter()
            .filter(|(k, _)| k == "extent")
            .map(|(_, v)| {
                let mut p = v.split(',');
                let name = p.next().unwrap_or_default().to_owned();
                let num = |s: Option<&str>| {
                    s.and_then(|s| inject::parse_u64(s).ok())
                        .map_or(Value::Null, Value::from)
                };
                (name, num(p.next()), num(p.next()))
            })
            .collect())
    }

    async fn sees_extent(&self, g: &GuestRegion) -> Result<Value, SuiteError> {
        let start = Instant::now();
        let found = loop {
            let x = self.extents(g).await?;
            if !x.is_empty() || start.elapsed() >= WAIT {
                break x;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let first = found.first();
        Ok(step(
            "guest sees the added extent",
            json!({ "extents": found.iter().map(|(n, o, l)| json!({"extent": n, "offset": o, "length": l})).collect::<Vec<_>>() }),
            vec![
                check("extents", 1, found.len()),
                check(
                    "offset",
                    GUEST_EXTENT.offset,
                    first.map_or(Value::Null, |x| x.1.clone()),
                ),
                check(
                    "length",
                    GUEST_EXTENT.len,
                    first.map_or(Value::Null, |x| x.2.clone()),
                ),
            ],
        ))
    }

    /// Sizes the dax region's seed device over the added capacity, writes
    /// and verifies a pattern through it; the steps and the device.
    async fn use_capacity(
        &self,
        g: &GuestRegion,
    ) -> Result<(Vec<Value>, Option<String>), SuiteError> {
        let kv = self
            .script(format!(
                "set -e; dr=/sys/bus/cxl/devices/{}/dax_region; \
                 echo available=$(cat $dr/available_size); seed=$(cat $dr/seed); echo seed=$seed; \
                 cat $dr/available_size > /sys/bus/dax/devices/$seed/size; \
                 echo size=$(cat /sys/bus/dax/devices/$seed/size); \
                 for i in $(seq 50); do [ ! -e /dev/$seed ] || break; sleep 0.2; done; \
                 [ -e /dev/$seed ] && echo dev=/dev/$seed",
                g.dax_region
            ))
            .await?;
        let get = |k: &str| kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let num = |k: &str| {
            get(k)
                .and_then(|v| inject::parse_u64(&v).ok())
                .map_or(Value::Null, Value::from)
        };
        let dev = get("dev");
        let sized = step(
            "dax device over the added capacity",
            json!({ "seed": get("seed"), "device": dev, "error": get("error") }),
            vec![
                check("available_size", GUEST_EXTENT.len, num("available")),
                check("size", GUEST_EXTENT.len, num("size")),
                check("device node", true, dev.is_some()),
            ],
        );
        let used = match &dev {
            Some(path) => {
                let len = GUEST_EXTENT.len.to_string();
                let mut outs = Vec::new();
                for action in ["write", "verify"] {
                    let argv: Vec<String> =
                        ["dax-pattern", action, path, "--len", &len, "--seed", "16"]
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                    let out = self.ctx.exec(&argv).await?;
                    outs.push((action, out));
                }
                step(
                    "use the dax device",
                    json!({ "output": outs.iter().map(|(a, o)| json!({"action": a, "exit": o.exit_code, "stderr": o.stderr.trim()})).collect::<Vec<_>>() }),
                    outs.iter()
                        .map(|(a, o)| check(&format!("dax-pattern {a}"), 0, o.exit_code))
                        .collect(),
                )
            }
            None => skipped(
                "use the dax device",
                "no dax device over the added capacity",
            ),
        };
        Ok((vec![sized, used], get("seed")))
    }

    /// Frees the dax device's capacity, releases the extent through QMP
    /// and waits for the guest to give it back.
    async fn release(&self, g: &GuestRegion, seed: Option<&str>) -> Result<Vec<Value>, SuiteError> {
        if let Some(seed) = seed {
            self.ctx
                .exec_checked(&sh(format!("echo 0 > /sys/bus/dax/devices/{seed}/size")))
                .await?;
        }
        let injection = release_injection(&self.device.name, 0, &[GUEST_EXTENT]);
        let sent =
            inject::inject(&self.ctx.summary.qmp_socket, self.ctx.topology, &injection).await;
        let released = match sent {
            Ok(r) => step(
                "release the extent",
                json!({ "command": r.command, "fields": r.fields, "answer": r.answer }),
                vec![check("qemu accepts", true, true)],
            ),
            Err(e) => step(
                "release the extent",
                json!({ "error": crate::error::error_chain(&e) }),
                vec![check("qemu accepts", true, false)],
            ),
        };
        let start = Instant::now();
        let left = loop {
            let x = self.extents(g).await?;
            if x.is_empty() || start.elapsed() >= WAIT {
                break x;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // QEMU's view: the range is no longer backed.
        let again = self
            .send(release_command(&self.device.name, 0, &[GUEST_EXTENT]))
            .await?
            .err();
        let gone = step(
            "extent gone",
            json!({ "extents_left": left.len(), "qemu_on_second_release": again }),
            vec![
                check("extents", 0, left.len()),
                check(
                    "qemu refuses a second release with",
                    "cannot release extent with non-existing DPA range",
                    again,
                ),
            ],
        );
        Ok(vec![released, gone])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dcd_topology() -> cxl_topology::Topology {
        let p = cxl_topology::preset("dcd").expect("the dcd preset");
        cxl_topology::Topology::parse(p.toml, "dcd").expect("the dcd preset parses")
    }

    #[test]
    fn the_lab_refuses_first_exactly_the_cases_it_can_know() {
        let t = dcd_topology();
        let dev = t.device("dcd0").unwrap();
        let cases = refusals("dcd0", inject::dc_region_size(dev), 2, false);
        assert_eq!(cases.len(), 7);
        for c in &cases {
            match inject::plan(&t, &c.lab) {
                Err(e) => assert!(c.lab_refuses, "{}: the lab refuses it: {e}", c.name),
                Ok(planned) => {
                    assert!(!c.lab_refuses, "{}: the lab accepts it", c.name);
                    // Past the lab's checks, the suite sends what
                    // `lab inject` would.
                    assert_eq!(planned.name(), c.command.name(), "{}", c.name);
                    assert_eq!(planned.arguments(), c.command.arguments(), "{}", c.name);
                }
            }
        }
        let past = &cases[0].command.arguments();
        assert_eq!(
            past["extents"],
            json!([{"offset": (256u64 << 20) - BLOCK, "len": 2 * BLOCK}])
        );
        assert_eq!(cases[1].command.arguments()["region"], 2);
        for (accepted, text) in [
            (false, "cannot add DPA again while still pending"),
            (true, "cannot add DPA already accessible to the same LD"),
        ] {
            let c = &refusals("dcd0", 256 << 20, 2, accepted)[5];
            assert_eq!(c.qemu, text);
        }
    }

    #[test]
    fn steps_fail_on_any_differing_check() {
        let ok = step("s", json!({}), vec![check("a", 1, 1)]);
        assert_eq!(ok["outcome"], "passed");
        assert_eq!(ok["reason"], Value::Null);
        let bad = step(
            "s",
            json!({}),
            vec![check("a", 1, 1), check("b", "x", Value::Null)],
        );
        assert_eq!(bad["outcome"], "failed");
        assert_eq!(bad["reason"], "differs from expected in: b");
        let s = skipped("s", "why");
        assert_eq!(
            (s["outcome"].as_str(), s["reason"].as_str()),
            (Some("skipped"), Some("why"))
        );
    }
}
