//! `cxl-memsim client`: a load generator for any CXLMemSim-protocol server.
//! Each connection keeps `depth` requests in flight (a sliding window): it
//! tops the window up, then reads whatever responses have arrived.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::SplitMix64;
use crate::protocol::{Request, Response, LINE, OP_READ, OP_WRITE, REQUEST_SIZE, RESPONSE_SIZE};
use crate::stats::Histogram;

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to {addr}.")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The connection to the server failed mid-run.")]
    Io(#[from] std::io::Error),
    #[error("The server closed the connection after {done} of {ops} responses.")]
    Closed { done: u64, ops: u64 },
    #[error("--size must be 1 to 64 bytes (one request never crosses a 64-byte line), not {0}.")]
    Size(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Seq,
    Random,
}

/// The load to generate (also the `cxl-memsim client` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientConfig {
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub addr: String,
    /// Requests per connection.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,
    /// Fraction of reads (the rest are writes).
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Bytes per request, 1 to 64.
    #[arg(long, default_value_t = 64)]
    pub size: u64,
    #[arg(long, value_enum, default_value = "random")]
    pub pattern: Pattern,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Addresses fall in `base .. base + span`.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub base: u64,
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub span: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// TCP congestion control of the connections, or `system`.
    #[arg(long, default_value = crate::server::DEFAULT_CONGESTION, value_parser = crate::server::congestion_arg)]
    pub tcp_congestion: String,
}

/// Sizes and addresses as `256M`, `0x110000000` or plain numbers.
pub fn parse_size(s: &str) -> Result<u64, String> {
    cxl_topology::ByteSize::parse(s)
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub connections: usize,
    pub depth: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// From sending each request to receiving its response, ns of wall time.
    pub wall_latency_ns: Percentiles,
    /// The server's modelled latency.
    pub modelled_latency_ns: Percentiles,
}

impl std::fmt::Display for ClientReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} requests over {} connection(s), depth {}: {:.0} req/s, {} errors",
            self.requests, self.connections, self.depth, self.requests_per_second, self.errors
        )?;
        writeln!(f, "wall latency ns: {:?}", self.wall_latency_ns)?;
        writeln!(f, "modelled latency ns: {:?}", self.modelled_latency_ns)
    }
}

fn pct(h: &Histogram) -> Percentiles {
    Percentiles {
        p50: h.percentile(0.5),
        p90: h.percentile(0.9),
        p99: h.percentile(0.99),
        max: h.max(),
    }
}

#[derive(Default)]
struct ConnResult {
    wall: Histogram,
    modelled: Histogram,
    errors: u64,
}

fn one_connection(cfg: &ClientConfig, index: u64) -> Result<ConnResult, ClientError> {
    let mut s = TcpStream::connect(&cfg.addr).map_err(|source| ClientError::Connect {
        addr: cfg.addr.clone(),
        source,
    })?;
    s.set_nodelay(true)?;
    crate::server::apply_congestion(&s, crate::server::congestion(&cfg.tcp_congestion));
    let mut rng = SplitMix64(cfg.seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut next = || rng.next_u64();
    let lines = (cfg.span / LINE).max(1);
    let mut seq_line = index * lines / (cfg.connections as u64).max(1);
    let depth = cfg.depth.max(1) as u64;
    let mut res = ConnResult::default();
    let mut out = Vec::with_capacity(depth as usize * REQUEST_SIZE);
    let mut input = vec![0u8; depth as usize * RESPONSE_SIZE];
    let mut have = 0;
    // Send time of every outstanding request, oldest first.
    let mut sent_at = VecDeque::with_capacity(depth as usize);
    let (mut sent, mut done) = (0u64, 0u64);
    while done < cfg.ops {
        // Keep `depth` requests in flight: top up, then wait for responses.
        out.clear();
        let now = Instant::now();
        while sent < cfg.ops && sent - done < depth {
            let line = match cfg.pattern {
                Pattern::Seq => {
                    seq_line = (seq_line + 1) % lines;
                    seq_line
                }
                Pattern::Random => next() % lines,
            };
            let read = (next() % 10_000) as f64 / 10_000.0 < cfg.read_ratio;
            let op = if read { OP_READ } else { OP_WRITE };
            let data = [line as u8; 64];
            out.extend_from_slice(
                &Request::new(op, cfg.base + line * LINE, cfg.size, 0, data).encode(),
            );
            sent_at.push_back(now);
            sent += 1;
        }
        if !out.is_empty() {
            s.write_all(&out)?;
        }
        let n = crate::busy_poll::read(&mut s, &mut input[have..], crate::busy_poll::SPIN)?;
        if n == 0 {
            return Err(ClientError::Closed { done, ops: cfg.ops });
        }
        have += n;
        let arrived = Instant::now();
        let whole = have / RESPONSE_SIZE;
        for frame in input[..whole * RESPONSE_SIZE].chunks_exact(RESPONSE_SIZE) {
            let r = Response::decode(frame.try_into().expect("a whole frame"));
            if r.status != 0 {
                res.errors += 1;
            }
            res.modelled.record(r.latency_ns);
            let sent_time = sent_at.pop_front().expect("a response answers a request");
            let wall = arrived.duration_since(sent_time).as_nanos() as u64;
            res.wall.record(wall);
        }
        input.copy_within(whole * RESPONSE_SIZE..have, 0);
        have -= whole * RESPONSE_SIZE;
        done += whole as u64;
    }
    Ok(res)
}

/// Runs the load (one thread per connection, blocking sockets, so the
/// generator adds as little as possible to what it measures) and reports.
pub fn run(cfg: &ClientConfig) -> Result<ClientReport, ClientError> {
    if cfg.size == 0 || cfg.size > LINE {
        return Err(ClientError::Size(cfg.size));
    }
    let connections = cfg.connections.max(1);
    let start = Instant::now();
    let all = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|i| scope.spawn(move || one_connection(cfg, i as u64)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let secs = start.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
    let mut total = ConnResult::default();
    for r in &all {
        total.wall.merge(&r.wall);
        total.modelled.merge(&r.modelled);
        total.errors += r.errors;
    }
    let requests = cfg.ops * connections as u64;
    Ok(ClientReport {
        connections,
        depth: cfg.depth.max(1),
        requests,
        errors: total.errors,
        seconds: secs,
        requests_per_second: requests as f64 / secs,
        wall_latency_ns: pct(&total.wall),
        modelled_latency_ns: pct(&total.modelled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: ClientConfig,
    }

    #[test]
    fn congestion_control_is_reno_unless_told_otherwise() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("client").chain(args.iter().copied()))
                .map(|c| crate::server::congestion(&c.load.tcp_congestion).map(str::to_owned))
        };
        assert_eq!(parse(&[]).unwrap().as_deref(), Some("reno"));
        assert_eq!(parse(&["--tcp-congestion", "system"]).unwrap(), None);
        assert_eq!(
            parse(&["--tcp-congestion", "cubic"]).unwrap().as_deref(),
            Some("cubic")
        );
        assert!(parse(&["--tcp-congestion", ""]).is_err());
    }
}
