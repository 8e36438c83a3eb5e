//! The `.replay` text format, version 1 (see README.md): a header, the
//! `#INIT` skeleton (directories and files with sizes that must exist
//! before the first operation), then `#REPLAY` operations on virtual
//! processes, threads and descriptors. Every path is relative to the test
//! root and starts with the test name.

use std::io::{BufRead, Write};

use crate::escape::{self, EscapeError};
use crate::op::Op;

pub const MAGIC: &str = "#ioriot-replay";
pub const VERSION: u32 = 1;

/// One entry of the skeleton.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InitEntry {
    Dir(Vec<u8>),
    File { size: u64, path: Vec<u8> },
}

/// One operation to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOp {
    /// ns since the first captured operation.
    pub t_ns: u64,
    pub vpid: u32,
    pub vtid: u32,
    pub op: Op,
    /// Virtual descriptor: the one used, or for opens the one created; 0 if none.
    pub vfd: u64,
    /// The captured return value, to tell a replay that went differently.
    pub ret: i64,
    pub path: Option<Vec<u8>>,
    pub path2: Option<Vec<u8>>,
    pub a: i64,
    pub b: i64,
    pub c: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub name: String,
    /// The user to replay as (`generate -u`), if any.
    pub user: Option<String>,
    pub vpids: u32,
    pub vtids: u32,
    /// The captured run: its operation count and span (first entry to last exit).
    pub source_ops: u64,
    pub source_span_ns: u64,
    pub init: Vec<InitEntry>,
    pub ops: Vec<ReplayOp>,
}

/// Errors of reading a replay file.
#[derive(Debug, thiserror::Error)]
pub enum ReplayFormatError {
    #[error("Line 1: the file does not start with '{MAGIC} {VERSION}'.")]
    Magic,
    #[error("Line 1: replay format version {0} is not supported (this ioriot reads {VERSION}).")]
    Version(String),
    #[error("Line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("Line {line}: a path field is malformed.")]
    Path {
        line: usize,
        #[source]
        source: EscapeError,
    },
    #[error("The replay file has no '#name' line.")]
    NoName,
    #[error("Line {line}: the #name '{name}' is not a single path component (letters, digits, '-', '_', '.'; not '.' or '..'), so the replay could leave its test root; regenerate it with -n NAME.")]
    Name { line: usize, name: String },
    #[error("Reading or writing the replay file failed.")]
    Io(#[from] std::io::Error),
}

pub fn write(w: &mut impl Write, r: &Replay) -> std::io::Result<()> {
    writeln!(w, "{MAGIC} {VERSION}")?;
    writeln!(w, "#name {}", r.name)?;
    if let Some(u) = &r.user {
        writeln!(w, "#user {u}")?;
    }
    writeln!(w, "#vpids {}", r.vpids)?;
    writeln!(w, "#vtids {}", r.vtids)?;
    writeln!(w, "#source_ops {}", r.source_ops)?;
    writeln!(w, "#source_span_ns {}", r.source_span_ns)?;
    writeln!(w, "#INIT")?;
    for e in &r.init {
        match e {
            InitEntry::Dir(p) => writeln!(w, "d {}", escape::encode(p))?,
            InitEntry::File { size, path } => writeln!(w, "f {size} {}", escape::encode(path))?,
        }
    }
    writeln!(w, "#REPLAY t_ns vpid vtid op vfd ret path path2 a b c")?;
    for o in &r.ops {
        writeln!(
            w,
            "{} {} {} {} {} {} {} {} {} {} {}",
            o.t_ns,
            o.vpid,
            o.vtid,
            o.op,
            o.vfd,
            o.ret,
            escape::encode_opt(o.path.as_deref()),
            escape::encode_opt(o.path2.as_deref()),
            o.a,
            o.b,
            o.c
        )?;
    }
    writeln!(w, "#end ops={}", r.ops.len())
}

fn syntax(line: usize, what: impl Into<String>) -> ReplayFormatError {
    ReplayFormatError::Syntax {
        line,
        what: what.into(),
    }
}

fn num<T: std::str::FromStr>(line: usize, field: &str, v: &str) -> Result<T, ReplayFormatError> {
    v.parse()
        .map_err(|_| syntax(line, format!("field {field} '{v}' is not a number.")))
}

fn path(line: usize, v: &str) -> Result<Option<Vec<u8>>, ReplayFormatError> {
    escape::decode(v).map_err(|source| ReplayFormatError::Path { line, source })
}

pub fn read(r: impl BufRead) -> Result<Replay, ReplayFormatError> {
    #[derive(PartialEq)]
    enum Section {
        Header,
        Init,
        Ops,
    }
    let mut rep = Replay::default();
    let mut section = Section::Header;
    let mut named = false;
    for (i, line) in r.lines().enumerate() {
        let n = i + 1;
        let line = line?;
        // `lines()` drops one '\r' before a '\n' but keeps it on a last
        // line without one, so values ending in '\r' would not read back
        // as written (found by fuzzing): trailing carriage returns are never
        // part of a line, and a file saved with CRLF line ends reads the same.
        let line = line.trim_end_matches('\r');
        if i == 0 {
            let mut it = line.split(' ');
            if it.next() != Some(MAGIC) {
                return Err(ReplayFormatError::Magic);
            }
            let v = it.next().unwrap_or("");
            if v != VERSION.to_string() {
                return Err(ReplayFormatError::Version(v.to_owned()));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let (key, val) = rest.split_once(' ').unwrap_or((rest, ""));
            match key {
                "name" => {
                    if !crate::confine::valid_name(val) {
                        return Err(ReplayFormatError::Name {
                            line: n,
                            name: val.to_owned(),
                        });
                    }
                    rep.name = val.to_owned();
                    named = true;
                }
                "user" => rep.user = Some(val.to_owned()),
                "vpids" => rep.vpids = num(n, "vpids", val)?,
                "vtids" => rep.vtids = num(n, "vtids", val)?,
                "source_ops" => rep.source_ops = num(n, "source_ops", val)?,
                "source_span_ns" => rep.source_span_ns = num(n, "source_span_ns", val)?,
                "INIT" => section = Section::Init,
                "REPLAY" => section = Section::Ops,
                _ => {}
            }
            continue;
        }
        match section {
            Section::Header => return Err(syntax(n, "an entry before '#INIT'.")),
            Section::Init => {
                let f: Vec<&str> = line.split(' ').collect();
                let entry = match f.as_slice() {
                    ["d", p] => InitEntry::Dir(path(n, p)?.unwrap_or_default()),
                    ["f", size, p] => InitEntry::File {
                        size: num(n, "size", size)?,
                        path: path(n, p)?.unwrap_or_default(),
                    },
                    _ => return Err(syntax(n, "an #INIT entry is 'd PATH' or 'f SIZE PATH'.")),
                };
                rep.init.push(entry);
            }
            Section::Ops => {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() != 11 {
                    return Err(syntax(n, format!("expected 11 fields, found {}.", f.len())));
                }
                rep.ops.push(ReplayOp {
                    t_ns: num(n, "t_ns", f[0])?,
                    vpid: num(n, "vpid", f[1])?,
                    vtid: num(n, "vtid", f[2])?,
                    op: Op::from_name(f[3])
                        .ok_or_else(|| syntax(n, format!("unknown operation '{}'.", f[3])))?,
                    vfd: num(n, "vfd", f[4])?,
                    ret: num(n, "ret", f[5])?,
                    path: path(n, f[6])?,
                    path2: path(n, f[7])?,
                    a: num(n, "a", f[8])?,
                    b: num(n, "b", f[9])?,
                    c: num(n, "c", f[10])?,
                });
            }
        }
    }
    if !named {
        return Err(ReplayFormatError::NoName);
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_round_trips() {
        let r = Replay {
            name: "t".into(),
            user: Some("nobody".into()),
            vpids: 1,
            vtids: 2,
            source_ops: 3,
            source_span_ns: 1000,
            init: vec![
                InitEntry::Dir(b"t/d".to_vec()),
                InitEntry::File {
                    size: 5,
                    path: b"t/d/f x".to_vec(),
                },
            ],
            ops: vec![ReplayOp {
                t_ns: 0,
                vpid: 1,
                vtid: 2,
                op: Op::Openat,
                vfd: 1,
                ret: 3,
                path: Some(b"t/d/f x".to_vec()),
                path2: None,
                a: 0,
                b: 0,
                c: 0,
            }],
        };
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        assert_eq!(read(&buf[..]).unwrap(), r);
    }

    #[test]
    fn trailing_carriage_returns_are_not_part_of_a_value() {
        // The fuzz target ioriot_lines' crash: "#user no\r\r\n" read as
        // "no\r", written and read back as "no".
        let file = b"#ioriot-replay 1\r\n#name t\n#user no\r\r\n#vpids 1\r";
        let r = read(&file[..]).unwrap();
        assert_eq!(
            (r.name.as_str(), r.user.as_deref(), r.vpids),
            ("t", Some("no"), 1)
        );
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        assert_eq!(read(&buf[..]).unwrap(), r);
    }

    #[test]
    fn malformed_entries_are_refused_with_their_line() {
        let e = read(&b"#ioriot-replay 1\n#name t\n#INIT\nx y\n"[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Line 4: an #INIT entry is 'd PATH' or 'f SIZE PATH'."
        );
    }
}
