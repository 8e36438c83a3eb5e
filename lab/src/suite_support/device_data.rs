//! Keeping a persistent device's data while a suite overwrites it: the
//! host copies the bytes of a range of the device's `/dev/daxX.Y` out of
//! the device's backing file (into a sparse file beside it) before, and
//! writes them back after, whatever the suite did in between; the guest
//! sees them at once (QEMU maps the same file, shared). Kept on the host,
//! the copy outlives a guest crash and costs no guest memory. The dax
//! device's place in the backing file is its physical start minus its CXL
//! region's, which holds for the one-device regions the lab makes; other
//! layouts are refused before anything is touched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{sh, SuiteContext, SuiteError};
use crate::summary::DeviceSummary;

/// The dax device's data, copied out of the device's backing file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedData {
    pub device: String,
    pub backing: PathBuf,
    /// Where the copy is (a sparse file beside the backing file).
    pub copy: PathBuf,
    /// Where the range starts in the dax device, and its length.
    pub dax_offset: u64,
    pub len: u64,
    /// The dax device's size when saved: it must be the same when restored.
    pub dax_len: u64,
    /// Where the dax device started in the backing file when saved: where
    /// the data goes back when the guest cannot be asked any more.
    pub window_offset: u64,
}

/// Where a dax device's data is in its memory device: (offset, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaxWindow {
    pub offset: u64,
    pub len: u64,
}

/// Prints the dax device's physical start and size, then each CXL
/// region's name, start, size and interleave ways.
fn window_script(chardev: &str) -> String {
    format!(
        r#"set -e
d=/sys/bus/dax/devices/{chardev}
echo dax $(cat $d/resource) $(cat $d/size)
for r in /sys/bus/cxl/devices/region*; do
  [ -e $r/resource ] && echo region ${{r##*/}} $(cat $r/resource) $(cat $r/size) $(cat $r/interleave_ways)
done"#
    )
}

/// A sysfs number: `0x…` hex or decimal.
fn sysfs_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The dax device's window in its memory device, from `window_script`'s
/// output; an error text when it is not in exactly one one-way region.
pub fn parse_window(out: &str) -> Result<DaxWindow, String> {
    let mut dax = None;
    let mut regions = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["dax", start, size] => dax = sysfs_number(start).zip(sysfs_number(size)),
            ["region", name, start, size, ways] => {
                if let (Some(s), Some(z), Some(w)) =
                    (sysfs_number(start), sysfs_number(size), sysfs_number(ways))
                {
                    regions.push((name.to_string(), s, z, w));
                }
            }
            _ => {}
        }
    }
    let (start, len) = dax.ok_or("no dax device start and size")?;
    let (name, rstart, _, ways) = regions
        .into_iter()
        .find(|(_, s, z, _)| start >= *s && start + len <= s + z)
        .ok_or("no CXL region holds the dax device")?;
    if ways != 1 {
        return Err(format!(
            "{name} interleaves {ways} devices, so the dax device's bytes are not one range of one backing file"
        ));
    }
    Ok(DaxWindow {
        offset: start - rstart,
        len,
    })
}

pub async fn window(ctx: &SuiteContext<'_>, chardev: &str) -> Result<DaxWindow, SuiteError> {
    let out = ctx.exec_checked(&sh(window_script(chardev))).await?;
    parse_window(&out).map_err(|why| SuiteError::Setup {
        what: format!("place /dev/{chardev} in its backing file ({why})"),
        detail: out,
    })
}

const CHUNK: usize = 1 << 20;

/// Copies `len` bytes at `offset` of `backing` into a new sparse file
/// `copy` (all-zero chunks become holes).
pub fn save_range(backing: &Path, offset: u64, len: u64, copy: &Path) -> std::io::Result<()> {
    let src = File::open(backing)?;
    let mut dst = File::create(copy)?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min((len - done) as usize);
        src.read_exact_at(&mut buf[..n], offset + done)?;
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    dst.set_len(len)?;
    dst.sync_all()
}

/// Writes `copy` back into `backing` at `offset`, only the chunks that
/// differ; the number of bytes written.
pub fn restore_range(copy: &Path, backing: &Path, offset: u64) -> std::io::Result<u64> {
    let mut src = File::open(copy)?;
    let len = src.metadata()?.len();
    let dst = OpenOptions::new().read(true).write(true).open(backing)?;
    let (mut want, mut have) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut done, mut written) = (0, 0);
    while done < len {
        let n = CHUNK.min((len - done) as usize);
        src.read_exact(&mut want[..n])?;
        dst.read_exact_at(&mut have[..n], offset + done)?;
        if want[..n] != have[..n] {
            dst.write_all_at(&want[..n], offset + done)?;
            written += n as u64;
        }
        done += n as u64;
    }
    dst.sync_all()?;
    Ok(written)
}

/// What a suite's result says became of a device's data: kept when
/// persistent (the suite errs if the restore fails), else scratch.
pub fn data_fate(persistent: bool) -> &'static str {
    if persistent {
        "saved and restored"
    } else {
        "overwritten (volatile)"
    }
}

/// Saves `len` bytes (None: to the end) at `dax_offset` of the dax device
/// `chardev` of `dev`, for `suite`.
pub async fn save(
    ctx: &SuiteContext<'_>,
    dev: &DeviceSummary,
    chardev: &str,
    suite: &str,
    dax_offset: u64,
    len: Option<u64>,
) -> Result<SavedData, SuiteError> {
    let at = window(ctx, chardev).await?;
    let len = len.unwrap_or(at.len.saturating_sub(dax_offset));
    let saved = SavedData {
        device: dev.name.clone(),
        backing: dev.backing.clone(),
        copy: dev.backing.with_extension(format!("{suite}.saved")),
        dax_offset,
        len,
        dax_len: at.len,
        window_offset: at.offset,
    };
    let fail = |source| {
        let _ = std::fs::remove_file(&saved.copy);
        SuiteError::Preserve {
            what: "save",
            device: saved.device.clone(),
            path: saved.copy.clone(),
            hint: "nothing was changed; free space beside the backing file and run again".into(),
            source,
        }
    };
    if dax_offset + len > at.len {
        return Err(fail(std::io::Error::other(format!(
            "{len} bytes at {dax_offset} do not fit in /dev/{chardev} ({} bytes)",
            at.len
        ))));
    }
    save_range(&saved.backing, at.offset + dax_offset, len, &saved.copy).map_err(fail)?;
    Ok(saved)
}

/// Writes `saved` back into the dax device `chardev` (where the device's
/// data is now) and removes the copy; the bytes that had changed.
pub async fn restore(
    ctx: &SuiteContext<'_>,
    saved: &SavedData,
    chardev: &str,
) -> Result<u64, SuiteError> {
    let kept = |what: &'static str, source: std::io::Error| {
        SuiteError::Preserve {
        what,
        device: saved.device.clone(),
        path: saved.copy.clone(),
        hint: format!(
            "the data is kept in {}; with the lab down, write it back into {} at the dax device's offset plus {}",
            saved.copy.display(),
            saved.backing.display(),
            saved.dax_offset
        ),
        source,
    }
    };
    let at = match window(ctx, chardev).await {
        Ok(at) => at,
        // The guest cannot be asked (QEMU was killed, the agent hangs):
        // only the guest moves a dax device, so it is where it was.
        Err(SuiteError::Agent { .. }) => DaxWindow {
            offset: saved.window_offset,
            len: saved.dax_len,
        },
        Err(e) => return Err(e),
    };
    if at.len != saved.dax_len {
        return Err(kept(
            "restore",
            std::io::Error::other(format!(
                "/dev/{chardev} is {} bytes now, {} before",
                at.len, saved.dax_len
            )),
        ));
    }
    let written = restore_range(&saved.copy, &saved.backing, at.offset + saved.dax_offset)
        .map_err(|e| kept("restore", e))?;
    std::fs::remove_file(&saved.copy).map_err(|e| kept("remove the copy of", e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dax_window_is_its_offset_in_a_one_way_region() {
        let out = "dax 0x390200000 266338304\n\
                   region region0 0x380000000 0x10000000 1\n\
                   region region1 0x390000000 0x10000000 1\n";
        assert_eq!(
            parse_window(out),
            Ok(DaxWindow {
                offset: 0x200000,
                len: 266338304
            })
        );
        let interleaved = "dax 0x390200000 4096\nregion region1 0x390000000 0x20000000 2\n";
        assert!(parse_window(interleaved)
            .unwrap_err()
            .contains("region1 interleaves 2 devices"));
        assert_eq!(
            parse_window("dax 0x10 16\nregion region0 0x1000 0x1000 1\n"),
            Err("no CXL region holds the dax device".into())
        );
        assert!(parse_window("").is_err());
    }

    #[test]
    fn saved_data_is_sparse_and_comes_back_where_the_dax_device_is_now() {
        let d = tempfile::tempdir().unwrap();
        let backing = d.path().join("pmem0.mem");
        let copy = d.path().join("pmem0.dax-data.saved");
        let mut data = vec![0u8; 8 * CHUNK];
        data[CHUNK + 5] = 1; // chunk 1: data; the rest zero
        data[6 * CHUNK..6 * CHUNK + 3].copy_from_slice(b"abc");
        std::fs::write(&backing, &data).unwrap();
        // The window: chunks 1..7.
        save_range(&backing, CHUNK as u64, 6 * CHUNK as u64, &copy).unwrap();
        let meta = std::fs::metadata(&copy).unwrap();
        assert_eq!(meta.len(), 6 * CHUNK as u64);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 6 * CHUNK as u64,
            "zero chunks are holes: {} bytes allocated",
            meta.blocks() * 512
        );
        // The namespace changes: the filesystem overwrites everything.
        std::fs::write(&backing, vec![0xee; 8 * CHUNK]).unwrap();
        // Back as devdax one chunk further on: written at the new offset.
        let written = restore_range(&copy, &backing, 2 * CHUNK as u64).unwrap();
        assert_eq!(written, 6 * CHUNK as u64);
        let now = std::fs::read(&backing).unwrap();
        assert_eq!(
            &now[2 * CHUNK..8 * CHUNK],
            &data[CHUNK..7 * CHUNK],
            "the window's bytes"
        );
        assert!(
            now[..2 * CHUNK].iter().all(|&b| b == 0xee),
            "outside untouched"
        );
        // Restoring again finds nothing to write.
        assert_eq!(restore_range(&copy, &backing, 2 * CHUNK as u64).unwrap(), 0);
    }
}
