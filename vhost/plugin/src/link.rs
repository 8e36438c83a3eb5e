//! The plugin's side of the socket: per-vCPU record buffers, batch sends,
//! the flusher thread and the command reader thread.
//!
//! Locking: a vCPU appends to its own buffer (an uncontended mutex) and,
//! when it is full, writes the batch while still holding it, so one vCPU's
//! batches reach the socket in order; the flusher and `flush` take the same
//! buffer lock, then the socket lock, in that order everywhere.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cxl_memsim_wire::{encode_batch, AccessRecord, BatchHeader, Command, Kind, LearnCounts};

/// One vCPU's unsent records.
#[derive(Default)]
struct Slot {
    records: Vec<AccessRecord>,
    bytes: Vec<u8>,
}

struct Socket {
    stream: Option<UnixStream>,
    seq: u64,
}

pub struct Link {
    slots: Box<[Mutex<Slot>]>,
    socket: Mutex<Socket>,
    batch: usize,
    /// Accesses that could not be sent (the simulator went away).
    dropped: AtomicU64,
}

impl Link {
    pub fn connect(path: &Path, vcpus: usize, batch: usize) -> Result<(Link, UnixStream), String> {
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to the simulator's plugin socket {}: {e} (start cxl-memsim serve --plugin-socket first)",
                path.display()
            )
        })?;
        let reader = stream
            .try_clone()
            .map_err(|e| format!("cannot clone the plugin socket: {e}"))?;
        let slots = (0..vcpus)
            .map(|_| {
                Mutex::new(Slot {
                    records: Vec::with_capacity(batch),
                    bytes: Vec::new(),
                })
            })
            .collect();
        Ok((
            Link {
                slots,
                socket: Mutex::new(Socket {
                    stream: Some(stream),
                    seq: 0,
                }),
                batch,
                dropped: AtomicU64::new(0),
            },
            reader,
        ))
    }

    pub fn connected(&self) -> bool {
        self.socket.lock().is_ok_and(|s| s.stream.is_some())
    }

    /// Buffers one record of `vcpu`; sends the buffer when it is full.
    pub fn push(&self, vcpu: usize, rec: AccessRecord) {
        let Some(slot) = self.slots.get(vcpu) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.records.push(rec);
        if slot.records.len() >= self.batch {
            self.send_slot(&mut slot);
        }
    }

    /// Sends what `vcpu` has buffered (when it goes idle).
    pub fn flush_vcpu(&self, vcpu: usize) {
        if let Some(slot) = self.slots.get(vcpu) {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if !slot.records.is_empty() {
                self.send_slot(&mut slot);
            }
        }
    }

    /// Sends every buffer.
    pub fn flush_all(&self) {
        for v in 0..self.slots.len() {
            self.flush_vcpu(v);
        }
    }

    fn send_slot(&self, slot: &mut Slot) {
        let Slot { records, bytes } = slot;
        bytes.clear();
        // The sequence number is patched in under the socket lock.
        encode_batch(0, 0, records, bytes);
        let n = records.len() as u64;
        records.clear();
        if !self.write(bytes) {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sends a message without records.
    pub fn send_event(&self, kind: Kind) {
        let mut b = Vec::with_capacity(cxl_memsim_wire::HEADER_SIZE);
        BatchHeader::new(kind, 0, 0, 0).encode_into(&mut b);
        self.write(&mut b);
    }

    /// Sends the learning counters (a learning message).
    pub fn send_learning(&self, c: LearnCounts) {
        let mut b = Vec::with_capacity(cxl_memsim_wire::HEADER_SIZE + cxl_memsim_wire::RECORD_SIZE);
        c.encode_into(&mut b);
        self.write(&mut b);
    }

    /// Writes one encoded message, filling in its sequence number and the
    /// dropped count; false (and the socket is closed) when it fails.
    fn write(&self, msg: &mut [u8]) -> bool {
        let mut s = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        BatchHeader::set_seq_and_dropped(msg, s.seq, self.dropped.load(Ordering::Relaxed));
        let Some(stream) = s.stream.as_mut() else {
            return false;
        };
        match stream.write_all(msg) {
            Ok(()) => {
                s.seq += 1;
                true
            }
            Err(e) => {
                eprintln!("cxl-memsim-plugin: the simulator's socket failed ({e}); accesses are dropped from now on");
                s.stream = None;
                false
            }
        }
    }

    /// Sends partly filled buffers every `every`, forever.
    pub fn spawn_flusher(&'static self, every: Duration) {
        std::thread::Builder::new()
            .name("cxl-plugin-flush".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                self.flush_all();
            })
            .expect("cannot start the plugin's flush thread");
    }

    /// Reads command lines until the simulator closes the socket, handing
    /// each to `on_command` (`flush` after the records went out and before
    /// the flushed message); calls `on_close` at the end.
    pub fn spawn_reader(
        &'static self,
        reader: UnixStream,
        on_command: impl Fn(Command) + Send + 'static,
        on_close: impl FnOnce() + Send + 'static,
    ) {
        std::thread::Builder::new()
            .name("cxl-plugin-cmd".into())
            .spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    if line.trim().is_empty() {
                        continue;
                    }
                    match Command::parse(&line) {
                        Ok(Command::Flush) => {
                            self.flush_all();
                            on_command(Command::Flush);
                            self.send_event(Kind::Flushed);
                        }
                        Ok(c) => on_command(c),
                        Err(e) => eprintln!("cxl-memsim-plugin: ignoring a command: {e}"),
                    }
                }
                on_close();
            })
            .expect("cannot start the plugin's command thread");
    }
}
