//! Running ndctl's `cxl`, `ndctl` and `daxctl` and reading their JSON.

use std::process::Command;

use serde_json::Value;

/// Errors from the ndctl tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Cannot run `{command}`; is ndctl in the guest image?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed something that is not the JSON expected: {output}")]
    Output { command: String, output: String },
}

/// Runs a command and returns its standard output.
pub fn run(program: &str, args: &[&str]) -> Result<String, ToolError> {
    let command = format!("{program} {}", args.join(" "));
    crate::sysfs::debug_line(&format!("run {command}"));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    crate::sysfs::debug_line(&format!("ran {command}"));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// ndctl's tools print one object, an array, or nothing: always a list.
pub fn json_list(command: &str, text: &str) -> Result<Vec<Value>, ToolError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(listed)
        .ok_or_else(|| ToolError::Output {
            command: command.to_owned(),
            output: text.trim().to_owned(),
        })
}

/// The items of an ndctl or cxl listing, which prints one object alone
/// and several as an array; None for anything else.
pub fn listed(list: Value) -> Option<Vec<Value>> {
    match list {
        Value::Array(v) => Some(v),
        v @ Value::Object(_) => Some(vec![v]),
        _ => None,
    }
}

/// The devdax chardev (`dax1.0`) of the first devdax namespace in
/// `ndctl list -N -X` or `ndctl create-namespace` output.
pub fn devdax_chardev(namespaces: &[Value]) -> Option<(String, u64)> {
    namespaces
        .iter()
        .filter(|n| n.get("mode").and_then(Value::as_str) == Some("devdax"))
        .find_map(|n| {
            let dev = n.get("daxregion")?.get("devices")?.as_array()?.first()?;
            let chardev = dev.get("chardev")?.as_str()?.to_owned();
            let size = dev.get("size").and_then(size_of).unwrap_or(0);
            Some((chardev, size))
        })
}

/// The block device (`pmem1`) of the first fsdax namespace.
pub fn fsdax_blockdev(namespaces: &[Value]) -> Option<(String, u64)> {
    namespaces
        .iter()
        .filter(|n| n.get("mode").and_then(Value::as_str) == Some("fsdax"))
        .find_map(|n| {
            let dev = n.get("blockdev")?.as_str()?.to_owned();
            let size = n.get("size").and_then(size_of).unwrap_or(0);
            Some((dev, size))
        })
}

/// A namespace in another mode than `mode` (`namespace1.0`), e.g. the
/// fsdax one a suite made and could not give back (the lab was stopped
/// during it): its labels bring it back at boot, and a new namespace next
/// to it would find no room.
pub fn other_namespace(namespaces: &[Value], mode: &str) -> Option<(String, String)> {
    namespaces
        .iter()
        .filter(|n| n.get("mode").and_then(Value::as_str) != Some(mode))
        .filter(|n| n.get("size").and_then(Value::as_u64).unwrap_or(0) > 0)
        .find_map(|n| {
            let dev = n.get("dev").and_then(Value::as_str)?.to_owned();
            // Its page map is kept (ndctl's -e would reset it to dev);
            // a raw namespace has none yet, and gets the RAM one.
            let map = n.get("map").and_then(Value::as_str).unwrap_or("mem");
            Some((dev, map.to_owned()))
        })
}

/// ndctl prints sizes as numbers in `list` and as "250.00 MiB (262.14 MB)"
/// with human output; only exact numbers are used.
fn size_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_devdax_chardev_in_namespace_list() {
        let out = r#"[{"dev":"namespace1.0","mode":"devdax","map":"dev","size":262144000,
          "daxregion":{"id":1,"size":262144000,"align":2097152,
          "devices":[{"chardev":"dax1.0","size":262144000,"target_node":0,"align":2097152,"mode":"devdax"}]},
          "align":2097152}]"#;
        let list = json_list("ndctl list", out).unwrap();
        assert_eq!(devdax_chardev(&list), Some(("dax1.0".into(), 262_144_000)));
        assert_eq!(devdax_chardev(&json_list("ndctl list", "").unwrap()), None);
        let raw = json_list("ndctl list", r#"{"dev":"namespace1.0","mode":"raw"}"#).unwrap();
        assert_eq!(devdax_chardev(&raw), None);
    }

    #[test]
    fn finds_a_namespace_left_in_another_mode() {
        let fsdax = json_list(
            "ndctl list",
            r#"[{"dev":"namespace1.0","mode":"fsdax","map":"dev","size":262144000,"blockdev":"pmem1"}]"#,
        )
        .unwrap();
        assert_eq!(
            other_namespace(&fsdax, "devdax"),
            Some(("namespace1.0".to_owned(), "dev".to_owned())),
            "its page map is kept"
        );
        let raw = json_list(
            "ndctl list",
            r#"{"dev":"namespace1.0","mode":"raw","size":268435456}"#,
        )
        .unwrap();
        assert_eq!(
            other_namespace(&raw, "devdax"),
            Some(("namespace1.0".to_owned(), "mem".to_owned()))
        );
        let devdax = json_list(
            "ndctl list",
            r#"[{"dev":"namespace1.0","mode":"devdax","size":262144000}]"#,
        )
        .unwrap();
        assert_eq!(other_namespace(&devdax, "devdax"), None);
        let empty = json_list(
            "ndctl list",
            r#"{"dev":"namespace1.1","mode":"raw","size":0}"#,
        )
        .unwrap();
        assert_eq!(other_namespace(&empty, "devdax"), None);
    }
}
