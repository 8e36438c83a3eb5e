//! The `.capture` text format, version 1 (see README.md): a header of
//! `#key value` lines, one event per line, a `#end` trailer with the lost
//! event count.

use std::io::{BufRead, Write};

use crate::escape::{self, EscapeError};
use crate::op::Op;

pub const MAGIC: &str = "#ioriot-capture";
pub const VERSION: u32 = 1;

/// One traced call, its paths already resolved to absolute ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Monotonic ns at entry.
    pub t_ns: u64,
    pub dur_ns: u64,
    /// Process (thread group) id and thread id.
    pub pid: u32,
    pub tid: u32,
    pub op: Op,
    /// Return value (negative errno on failure; the child pid for `fork`).
    pub ret: i64,
    /// The descriptor argument (the dirfd for `*at` calls), -1 if none.
    pub fd: i64,
    pub path: Option<Vec<u8>>,
    pub path2: Option<Vec<u8>>,
    /// Numeric arguments; their meaning per operation is in README.md.
    pub a: i64,
    pub b: i64,
    pub c: i64,
}

/// A mounted filesystem at capture time (from /proc/self/mounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub fstype: String,
    pub point: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The traced pid, if capture followed one.
    pub follow: Option<u32>,
    pub mounts: Vec<Mount>,
    pub events: Vec<Event>,
    /// Events the kernel could not hand over (ring buffer full); `None`
    /// when the file has no trailer (capture did not finish).
    pub lost: Option<u64>,
    /// Paths truncated at the eBPF buffer size.
    pub truncated: u64,
    /// Paths the kernel could not read (written as `-`).
    pub unreadable: u64,
}

/// Errors of reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureFormatError {
    #[error("Line {line}: the file does not start with '{MAGIC} {VERSION}'.")]
    Magic { line: usize },
    #[error("Line {line}: capture format version {found} is not supported (this ioriot reads {VERSION}).")]
    Version { line: usize, found: String },
    #[error("Line {line}: expected 12 fields, found {found}.")]
    Fields { line: usize, found: usize },
    #[error("Line {line}: field {field} '{value}' is not a number.")]
    Number {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("Line {line}: unknown operation '{op}'.")]
    Op { line: usize, op: String },
    #[error("Line {line}: a path field is malformed.")]
    Path {
        line: usize,
        #[source]
        source: EscapeError,
    },
    #[error("Reading or writing the capture failed.")]
    Io(#[from] std::io::Error),
}

pub fn write_header(
    w: &mut impl Write,
    follow: Option<u32>,
    mounts: &[Mount],
) -> std::io::Result<()> {
    writeln!(w, "{MAGIC} {VERSION}")?;
    writeln!(w, "#fields t_ns dur_ns pid tid op ret fd path path2 a b c")?;
    if let Some(p) = follow {
        writeln!(w, "#follow {p}")?;
    }
    for m in mounts {
        writeln!(w, "#mount {} {}", m.fstype, escape::encode(&m.point))?;
    }
    Ok(())
}

pub fn write_event(w: &mut impl Write, e: &Event) -> std::io::Result<()> {
    writeln!(
        w,
        "{} {} {} {} {} {} {} {} {} {} {} {}",
        e.t_ns,
        e.dur_ns,
        e.pid,
        e.tid,
        e.op,
        e.ret,
        e.fd,
        escape::encode_opt(e.path.as_deref()),
        escape::encode_opt(e.path2.as_deref()),
        e.a,
        e.b,
        e.c
    )
}

pub fn write_trailer(
    w: &mut impl Write,
    events: u64,
    lost: u64,
    truncated: u64,
    unreadable: u64,
) -> std::io::Result<()> {
    writeln!(
        w,
        "#end events={events} lost={lost} truncated={truncated} unreadable={unreadable}"
    )
}

fn num<T: std::str::FromStr>(
    line: usize,
    field: &'static str,
    v: &str,
) -> Result<T, CaptureFormatError> {
    v.parse().map_err(|_| CaptureFormatError::Number {
        line,
        field,
        value: v.to_owned(),
    })
}

pub fn parse_event(line: usize, s: &str) -> Result<Event, CaptureFormatError> {
    let f: Vec<&str> = s.split(' ').collect();
    if f.len() != 12 {
        return Err(CaptureFormatError::Fields {
            line,
            found: f.len(),
        });
    }
    let path =
        |v: &str| escape::decode(v).map_err(|source| CaptureFormatError::Path { line, source });
    Ok(Event {
        t_ns: num(line, "t_ns", f[0])?,
        dur_ns: num(line, "dur_ns", f[1])?,
        pid: num(line, "pid", f[2])?,
        tid: num(line, "tid", f[3])?,
        op: Op::from_name(f[4]).ok_or_else(|| CaptureFormatError::Op {
            line,
            op: f[4].to_owned(),
        })?,
        ret: num(line, "ret", f[5])?,
        fd: num(line, "fd", f[6])?,
        path: path(f[7])?,
        path2: path(f[8])?,
        a: num(line, "a", f[9])?,
        b: num(line, "b", f[10])?,
        c: num(line, "c", f[11])?,
    })
}

pub fn read(r: impl BufRead) -> Result<Capture, CaptureFormatError> {
    let mut cap = Capture::default();
    for (i, line) in r.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if i == 0 {
            let mut it = line.split(' ');
            if it.next() != Some(MAGIC) {
                return Err(CaptureFormatError::Magic { line: 1 });
            }
            let v = it.next().unwrap_or("");
            if v != VERSION.to_string() {
                return Err(CaptureFormatError::Version {
                    line: 1,
                    found: v.to_owned(),
                });
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let (key, val) = rest.split_once(' ').unwrap_or((rest, ""));
            match key {
                "follow" => cap.follow = Some(num(line_no, "follow", val)?),
                "mount" => {
                    let (fstype, point) = val.split_once(' ').unwrap_or((val, "/"));
                    let point = escape::decode(point)
                        .map_err(|source| CaptureFormatError::Path {
                            line: line_no,
                            source,
                        })?
                        .unwrap_or_default();
                    cap.mounts.push(Mount {
                        fstype: fstype.to_owned(),
                        point,
                    });
                }
                "end" => {
                    for kv in val.split(' ') {
                        match kv.split_once('=') {
                            Some(("lost", v)) => cap.lost = Some(num(line_no, "lost", v)?),
                            Some(("truncated", v)) => cap.truncated = num(line_no, "truncated", v)?,
                            Some(("unreadable", v)) => {
                                cap.unreadable = num(line_no, "unreadable", v)?
                            }
                            _ => {}
                        }
                    }
                }
                // Comments and keys of later minor revisions are skipped.
                _ => {}
            }
            continue;
        }
        cap.events.push(parse_event(line_no, &line)?);
    }
    Ok(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_round_trips() {
        let ev = Event {
            t_ns: 10,
            dur_ns: 2,
            pid: 7,
            tid: 8,
            op: Op::Renameat2,
            ret: 0,
            fd: -100,
            path: Some(b"/a b".to_vec()),
            path2: Some(b"/c".to_vec()),
            a: 1,
            b: 0,
            c: 0,
        };
        let mut buf = Vec::new();
        let mounts = vec![Mount {
            fstype: "proc".into(),
            point: b"/proc".to_vec(),
        }];
        write_header(&mut buf, Some(7), &mounts).unwrap();
        write_event(&mut buf, &ev).unwrap();
        write_trailer(&mut buf, 1, 3, 0, 2).unwrap();
        let cap = read(&buf[..]).unwrap();
        assert_eq!(cap.events, vec![ev]);
        assert_eq!(cap.follow, Some(7));
        assert_eq!(cap.mounts, mounts);
        assert_eq!(cap.lost, Some(3));
        assert_eq!(cap.unreadable, 2);
    }

    #[test]
    fn bad_lines_name_their_line_and_field() {
        let e = read(&b"#ioriot-capture 2\n"[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Line 1: capture format version 2 is not supported (this ioriot reads 1)."
        );
        let e = read(&b"#ioriot-capture 1\n1 2 3 4 read x 0 - - 0 0 0\n"[..]).unwrap_err();
        assert_eq!(e.to_string(), "Line 2: field ret 'x' is not a number.");
    }
}
