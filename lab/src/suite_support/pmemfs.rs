//! A filesystem on the lab's CXL persistent memory, for suites that need
//! files on CXL memory (ioriot's replays). The persistent device's devdax
//! namespace is reconfigured in place to fsdax (`ndctl create-namespace -f
//! -e NS -m fsdax`), which gives a `/dev/pmemN` block device; it gets a
//! fresh ext4 (4 KiB blocks, as DAX needs the page size) mounted with
//! `-o dax`, or without when the kernel refuses (the result says so). Its
//! inode tables and journal are zeroed by mke2fs (0.6 s more under TCG),
//! not by ext4's background thread while the suite measures. When
//! the suite is done the filesystem is unmounted and the namespace goes
//! back to devdax, so the device's `/dev/daxX.Y` is there again for the
//! other suites. The data of the device's `/dev/daxX.Y` is kept
//! ([`device_data`]): copied out of the backing file before the namespace changes,
//! written back at the dax device's new place once it is devdax again (the
//! namespace's own info block stays the kernel's).

use serde::Serialize;
use serde_json::{json, Value};

use super::device_data::{self, SavedData};
use super::{sh, SuiteContext, SuiteError};
use cxl_topology::DeviceKind;

/// A mounted filesystem on a CXL pmem namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmemFs {
    /// The topology's device.
    pub device: String,
    /// The ndctl namespace, e.g. `namespace1.0`.
    pub namespace: String,
    /// The devdax character device it had and gets back, e.g. `dax1.0`.
    pub chardev: String,
    /// The fsdax block device, e.g. `/dev/pmem1`.
    pub blockdev: String,
    pub mount: String,
    pub fstype: String,
    /// Mounted with DAX (`dax=always` in /proc/mounts).
    pub dax: bool,
    /// The options /proc/mounts lists.
    pub options: String,
    /// Why DAX is off, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_dax_reason: Option<String>,
    /// The dax device's bytes, saved from the backing file until restored.
    #[serde(skip)]
    pub saved: SavedData,
    /// Where the namespace keeps its page map (`mem` or `dev`), kept
    /// through both reconfigurations: ndctl's `-e` does not keep it, and
    /// another map would move and resize the dax device.
    #[serde(skip)]
    pub map: String,
}

/// The namespaces of `ndctl list -N` output (one object, or an array).
fn items(list: &Value) -> Vec<Value> {
    cxl_regions::tools::listed(list.clone()).unwrap_or_default()
}

/// The page map (`--map`) of `namespace` in `ndctl list -N` output: `mem`
/// or `dev` (ndctl's default, also when the listing does not say).
pub fn map_of(list: &Value, namespace: &str) -> String {
    items(list)
        .iter()
        .find(|n| n.get("dev").and_then(Value::as_str) == Some(namespace))
        .and_then(|n| n.get("map").and_then(Value::as_str))
        .unwrap_or("dev")
        .to_owned()
}

/// The namespace whose devdax character device is `chardev` (`dax1.0`),
/// from `ndctl list -N` (one object, or an array of them). A namespace
/// left in another mode by an interrupted run has no character device: it
/// is found by the name ndctl gives both (`namespace1.0` for `dax1.0`).
pub fn namespace_of(list: &Value, chardev: &str) -> Option<String> {
    let items = items(list);
    let dev = |n: &Value| n.get("dev").and_then(Value::as_str).map(str::to_owned);
    let by_chardev = items.iter().find_map(|n| {
        let top = n.get("chardev").and_then(Value::as_str) == Some(chardev);
        let nested = n["daxregion"]["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["chardev"].as_str() == Some(chardev)));
        (top || nested).then(|| dev(n)).flatten()
    });
    let same_name = chardev
        .strip_prefix("dax")
        .map(|id| format!("namespace{id}"));
    by_chardev.or_else(|| {
        items
            .iter()
            .filter(|n| n.get("mode").and_then(Value::as_str) != Some("devdax"))
            .filter_map(dev)
            .find(|d| Some(d) == same_name.as_ref())
    })
}

/// The character device a devdax namespace has (`ndctl create-namespace`
/// or `ndctl list -N` output for one namespace).
pub fn chardev_of(ns: &Value) -> Option<String> {
    ns.get("chardev")
        .and_then(Value::as_str)
        .or_else(|| ns["daxregion"]["devices"][0]["chardev"].as_str())
        .map(str::to_owned)
}

/// Whether mount options from /proc/mounts have DAX on.
pub fn options_have_dax(options: &str) -> bool {
    options.split(',').any(|o| o == "dax" || o == "dax=always")
}

/// Formats `blockdev` and mounts it on `mount`, with DAX if it can; prints
/// `dax` or `nodax <mount's error>` and then the /proc/mounts line.
fn mount_script(blockdev: &str, mount: &str) -> String {
    format!(
        r#"set -e
i=0; while [ ! -b {blockdev} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
[ -b {blockdev} ] || {{ echo "{blockdev} did not appear after the namespace became fsdax" >&2; exit 1; }}
/sbin/mke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 {blockdev}
mkdir -p {mount}
if err=$(mount -t ext4 -o dax {blockdev} {mount} 2>&1); then echo dax; else echo "nodax $err" | tr '\n' ' '; echo; mount -t ext4 {blockdev} {mount}; fi
grep " {mount} " /proc/mounts"#
    )
}

/// Turns the lab's persistent device into an ext4 filesystem on CXL
/// memory mounted at `mount`; `restore` undoes it.
pub async fn mount(
    ctx: &SuiteContext<'_>,
    suite: &'static str,
    mount: &str,
) -> Result<PmemFs, SuiteError> {
    let dev = ctx
        .summary
        .devices
        .iter()
        .find(|d| d.kind == DeviceKind::Persistent && d.dax.is_some())
        .ok_or(SuiteError::NoPmem(suite))?;
    let dax = dev.dax.clone().expect("filtered on dax");
    let chardev = dax.trim_start_matches("/dev/").to_owned();
    // A mount left by an interrupted run goes first.
    ctx.exec_checked(&sh(format!(
        "if grep -q ' {mount} ' /proc/mounts; then umount {mount}; fi"
    )))
    .await?;
    let (list, _) = ctx.exec_json(&sh("ndctl list -N")).await?;
    let namespace = namespace_of(&list, &chardev).ok_or_else(|| SuiteError::Setup {
        what: format!("find the namespace of {dax} in `ndctl list -N`"),
        detail: list.to_string(),
    })?;
    let map = map_of(&list, &namespace);
    let saved = device_data::save(ctx, dev, &chardev, suite, 0, None).await?;
    // From here on the namespace may be fsdax: a failure gives it back.
    match make_fs(ctx, &namespace, &map, mount).await {
        Ok((blockdev, out)) => {
            let mut lines = out.lines();
            let first = lines.next().unwrap_or_default().trim();
            let no_dax_reason = first.strip_prefix("nodax").map(|r| r.trim().to_owned());
            let line = lines.next().unwrap_or_default();
            let f: Vec<&str> = line.split(' ').collect();
            let (fstype, options) = (
                f.get(2).copied().unwrap_or_default(),
                f.get(3).copied().unwrap_or_default(),
            );
            Ok(PmemFs {
                device: dev.name.clone(),
                namespace,
                chardev,
                blockdev,
                mount: mount.to_owned(),
                fstype: fstype.to_owned(),
                dax: options_have_dax(options),
                options: options.to_owned(),
                no_dax_reason,
                saved,
                map,
            })
        }
        Err(e) => {
            let back = give_back(ctx, &namespace, &map, mount).await;
            match back {
                Ok(ns) => {
                    if let Err(r) = put_data_back(ctx, &saved, &ns).await {
                        tracing::warn!("after a failed set-up: {r}");
                    }
                }
                Err(back) => tracing::warn!(
                    "{namespace} could not be made devdax again after a failed set-up ({back}); its data is saved in {}",
                    saved.copy.display()
                ),
            }
            Err(e)
        }
    }
}

/// Writes the saved data back where the devdax namespace `ns` now has its
/// dax device.
async fn put_data_back(
    ctx: &SuiteContext<'_>,
    saved: &SavedData,
    ns: &Value,
) -> Result<u64, SuiteError> {
    let chardev = chardev_of(ns).ok_or_else(|| SuiteError::Setup {
        what: format!(
            "find the dax device to restore {}'s data into (kept in {})",
            saved.device,
            saved.copy.display()
        ),
        detail: ns.to_string(),
    })?;
    device_data::restore(ctx, saved, &chardev).await
}

/// Makes `namespace` fsdax, formats its block device and mounts it; the
/// block device and what `mount_script` printed.
async fn make_fs(
    ctx: &SuiteContext<'_>,
    namespace: &str,
    map: &str,
    mount: &str,
) -> Result<(String, String), SuiteError> {
    let (created, _) = ctx
        .exec_json(&sh(format!(
            "ndctl create-namespace -f -e {namespace} -m fsdax --map={map}"
        )))
        .await?;
    let blockdev = created["blockdev"]
        .as_str()
        .map(|b| format!("/dev/{b}"))
        .ok_or_else(|| SuiteError::Setup {
            what: format!("make {namespace} an fsdax namespace"),
            detail: created.to_string(),
        })?;
    let out = ctx
        .exec_checked(&sh(mount_script(&blockdev, mount)))
        .await?;
    Ok((blockdev, out))
}

/// Unmounts `mount` if mounted and makes `namespace` devdax again; what
/// ndctl printed for it.
async fn give_back(
    ctx: &SuiteContext<'_>,
    namespace: &str,
    map: &str,
    mount: &str,
) -> Result<Value, SuiteError> {
    ctx.exec_checked(&sh(format!(
        "if grep -q ' {mount} ' /proc/mounts; then umount {mount}; fi"
    )))
    .await?;
    let (ns, _) = ctx
        .exec_json(&sh(format!(
            "ndctl create-namespace -f -e {namespace} -m devdax --map={map}"
        )))
        .await?;
    Ok(ns)
}

/// Unmounts the filesystem, gives the namespace its devdax character
/// device back and the dax device its data; an error if it comes back under
/// another name or size.
pub async fn restore(ctx: &SuiteContext<'_>, fs: &PmemFs) -> Result<Value, SuiteError> {
    let ns = give_back(ctx, &fs.namespace, &fs.map, &fs.mount).await?;
    let chardev = chardev_of(&ns);
    let written = put_data_back(ctx, &fs.saved, &ns).await?;
    if chardev.as_deref() != Some(fs.chardev.as_str()) {
        return Err(SuiteError::Setup {
            what: format!(
                "give {} its devdax device /dev/{} back",
                fs.namespace, fs.chardev
            ),
            detail: ns.to_string(),
        });
    }
    Ok(json!({
        "namespace": fs.namespace,
        "dax": format!("/dev/{}", fs.chardev),
        "data_bytes": fs.saved.len,
        "data_bytes_rewritten": written,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_found_by_their_dax_device_in_ndctl_output() {
        // `ndctl list -N` as the lab guest prints it, and the nested form
        // `create-namespace` prints.
        let list = json!([
            {"dev": "namespace0.0", "mode": "fsdax", "blockdev": "pmem0"},
            {"dev": "namespace1.0", "mode": "devdax", "chardev": "dax1.0"},
        ]);
        assert_eq!(
            namespace_of(&list, "dax1.0").as_deref(),
            Some("namespace1.0")
        );
        assert_eq!(namespace_of(&list, "dax2.0"), None);
        // Left fsdax by an interrupted run: found by its name.
        assert_eq!(
            namespace_of(&list, "dax0.0").as_deref(),
            Some("namespace0.0")
        );
        let other_devdax = json!([{"dev": "namespace3.0", "mode": "devdax", "chardev": "dax3.1"}]);
        assert_eq!(namespace_of(&other_devdax, "dax3.0"), None);
        let one = json!({"dev": "namespace1.0", "mode": "devdax",
            "daxregion": {"id": 1, "devices": [{"chardev": "dax1.0", "mode": "devdax"}]}});
        assert_eq!(
            namespace_of(&one, "dax1.0").as_deref(),
            Some("namespace1.0")
        );
        assert_eq!(chardev_of(&one).as_deref(), Some("dax1.0"));
        assert_eq!(chardev_of(&list[1]).as_deref(), Some("dax1.0"));
        assert_eq!(chardev_of(&list[0]), None);
    }

    #[test]
    fn the_page_map_is_read_from_the_listing() {
        let list = json!([
            {"dev": "namespace0.0", "mode": "devdax", "map": "mem", "chardev": "dax0.0"},
            {"dev": "namespace1.0", "mode": "fsdax", "blockdev": "pmem1"},
        ]);
        assert_eq!(map_of(&list, "namespace0.0"), "mem");
        assert_eq!(map_of(&list, "namespace1.0"), "dev", "ndctl's default");
        assert_eq!(map_of(&list[0], "namespace0.0"), "mem");
    }

    #[test]
    fn dax_mount_options_are_recognised() {
        assert!(options_have_dax("rw,relatime,dax=always"));
        assert!(options_have_dax("rw,dax"));
        assert!(!options_have_dax("rw,relatime"));
        assert!(!options_have_dax("rw,dax=never"));
    }

    #[test]
    fn the_mount_script_formats_with_page_sized_blocks_and_falls_back() {
        let s = mount_script("/dev/pmem1", "/mnt/x");
        assert!(s.contains(
            "/sbin/mke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 /dev/pmem1"
        ));
        assert!(s.contains("mount -t ext4 -o dax /dev/pmem1 /mnt/x"));
        assert!(s.contains("else echo \"nodax $err\""));
        assert!(s.ends_with("grep \" /mnt/x \" /proc/mounts"));
    }
}
