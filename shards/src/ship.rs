//! `gyro ship`: delivers every shard's CDR log to the billing service.
//!
//! Each shard directory (`DATA_DIR/shard-N`) is read in sequence order, record by
//! record, following the live segment as it grows. Records go out in batches as NDJSON
//! over HTTP POST (`--to URL`), each batch with an `Idempotency-Key` of
//! `gyro-{shard}-{first}-{last}` (its shard and sequence range) and an
//! `X-Gyro-Shard`/`X-Gyro-Seq` pair for the same; a 2xx reply means billing accepted it.
//! Up to `window` batches per shard are in flight at once; a refused or failed batch is
//! retried with exponential back-off (capped), forever, until it is accepted or the
//! shipper is stopped. Only after every batch of a round was accepted does the shard's
//! checkpoint move, written atomically (temporary file, fsync, rename, fsync of the
//! directory). A shipper restarted at any moment resumes from the checkpoint, so billing
//! sees every CDR at least once; billing deduplicates on the CDR `id` for exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyro_engine::segment::{self, SegmentHeader};

use crate::cdr_files::{map, segment_files};

/// What to ship, where, how.
#[derive(Clone, Debug)]
pub struct ShipSpec {
    pub data_dir: PathBuf,
    /// Billing endpoint, `http://host:port/path`.
    pub to: String,
    /// Where the checkpoints are kept (`shard-N.checkpoint`).
    pub checkpoint_dir: PathBuf,
    /// Records per batch at most.
    pub batch_max: usize,
    /// Batches in flight per shard at most.
    pub window: usize,
    /// Keep following the logs; without it, stop once everything written is shipped.
    pub follow: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest pause between retries.
    pub backoff_max: Duration,
    /// Print a progress line per shard this often (none if zero).
    pub progress_every: Duration,
    /// Retention: remove sealed segments that are both shipped and covered by an engine
    /// snapshot; `Some(None)` deletes them, `Some(Some(dir))` moves them there.
    pub retain: Option<Option<PathBuf>>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address while shipping.
    pub metrics: Option<String>,
}

/// One metric: name, type, help, and how to read it from a shard's figures.
type Series = (
    &'static str,
    crate::prom::Kind,
    &'static str,
    fn(&ShardStats) -> u64,
);

/// The shipper's metrics (OpenMetrics text).
fn render(shards: &[(u16, PathBuf)], stats: &[Arc<ShardStats>]) -> String {
    use crate::prom::{Family, Kind, Value};
    let series: [Series; 6] = [
        (
            "gyro_ship_shipped_seq",
            Kind::Gauge,
            "Next sequence number billing has not accepted (the checkpoint).",
            |s| s.shipped.load(Ordering::Relaxed),
        ),
        (
            "gyro_ship_seen_seq",
            Kind::Gauge,
            "Next sequence number after the last record read from the log.",
            |s| s.seen.load(Ordering::Relaxed),
        ),
        (
            "gyro_ship_lag_records",
            Kind::Gauge,
            "Records read but not yet accepted by billing.",
            |s| {
                s.seen
                    .load(Ordering::Relaxed)
                    .saturating_sub(s.shipped.load(Ordering::Relaxed))
            },
        ),
        (
            "gyro_ship_batches",
            Kind::Counter,
            "Batches billing accepted.",
            |s| s.batches.load(Ordering::Relaxed),
        ),
        (
            "gyro_ship_retries",
            Kind::Counter,
            "Deliveries retried (refused, failed or timed out).",
            |s| s.retries.load(Ordering::Relaxed),
        ),
        (
            "gyro_ship_dead_letters",
            Kind::Counter,
            "Records billing refused for good, written to the dead-letter file.",
            |s| s.dead_letters.load(Ordering::Relaxed),
        ),
    ];
    let mut families: Vec<Family> = series
        .iter()
        .map(|(name, kind, help, get)| {
            let mut f = Family::new(name, help, *kind);
            for ((shard, _), st) in shards.iter().zip(stats) {
                f.push(&[("shard", &shard.to_string())], Value::Int(get(st)));
            }
            f
        })
        .collect();
    families.push(crate::prom::build_info());
    crate::prom::encode(families)
}

/// Removes (or moves to `archive`) the sealed segments of `dir` whose every record is
/// below `upto`; returns how many.
pub fn retire(dir: &Path, upto: u64, archive: Option<&Path>) -> Result<usize, String> {
    let files = segment_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut n = 0;
    // A segment ends where the next begins; the last one is never sealed.
    for pair in files.windows(2) {
        let ((_, path), (next_base, _)) = (&pair[0], &pair[1]);
        if *next_base > upto {
            break;
        }
        let done = match archive {
            Some(a) => std::fs::create_dir_all(a)
                .and_then(|()| std::fs::rename(path, a.join(path.file_name().unwrap_or_default()))),
            None => std::fs::remove_file(path),
        };
        done.map_err(|e| format!("{}: {e}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

/// Live figures of one shard, for progress lines and tests.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Next sequence number to ship (the checkpoint).
    pub shipped: AtomicU64,
    /// Next sequence number after the last record seen in the log.
    pub seen: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    /// Records billing refused for good, written to the dead-letter file.
    pub dead_letters: AtomicU64,
}

/// A shard's checkpoint: the next sequence number billing has not accepted.
pub fn read_checkpoint(path: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .strip_prefix("next_seq ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{}: not a checkpoint (\"next_seq N\")", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes a checkpoint so that a crash leaves either the old or the new one.
pub fn write_checkpoint(path: &Path, next_seq: u64) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("checkpoint.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "next_seq {next_seq}")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The shard directories of a data directory, by shard number.
pub fn shard_dirs(data_dir: &Path) -> Result<Vec<(u16, PathBuf)>, String> {
    let rd = std::fs::read_dir(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut v = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("shard-")) else {
            continue;
        };
        if let Ok(n) = n.parse::<u16>() {
            v.push((n, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// A reader of one shard's log from a sequence number on.
struct Reader {
    dir: PathBuf,
    /// The segment being read: its base, its map, the next record's offset.
    current: Option<(u64, memmap2::Mmap, usize)>,
    next_seq: u64,
}

impl Reader {
    fn new(dir: PathBuf, next_seq: u64) -> Reader {
        Reader {
            dir,
            current: None,
            next_seq,
        }
    }

    /// Reads up to `max` records, appending those for billing (CDRs and balance records)
    /// to `out` as lines and skipping the journal's; returns how many were read.
    fn read(&mut self, max: usize, out: &mut Vec<u8>) -> Result<usize, String> {
        let mut n = 0;
        while n < max {
            if self.current.is_none() && !self.open()? {
                return Ok(n);
            }
            let Some((base, seg, at)) = self.current.as_mut() else {
                return Ok(n);
            };
            match segment::record_at(seg, *at, self.next_seq) {
                Ok(Some(r)) => {
                    if r.kind.is_billing() {
                        out.extend_from_slice(r.payload);
                        if !r.payload.ends_with(b"\n") {
                            out.push(b'\n');
                        }
                    }
                    *at += segment::record_size(r.payload.len());
                    self.next_seq += 1;
                    n += 1;
                }
                Ok(None) | Err(_) => {
                    // Nothing more here yet, or the end of a rolled segment: the next
                    // segment starting at our sequence number takes over.
                    let base = *base;
                    let files = segment_files(&self.dir).map_err(|e| e.to_string())?;
                    if files.iter().any(|(b, _)| *b == self.next_seq && *b != base) {
                        self.current = None;
                        continue;
                    }
                    if files.iter().any(|(b, _)| *b > self.next_seq) {
                        return Err(format!(
                            "{}: the log has a gap or damage after sequence {} (see `gyro cdr verify`)",
                            self.dir.display(),
                            self.next_seq
                        ));
                    }
                    // The live segment: map it again next time to see what was added.
                    self.remap()?;
                    return Ok(n);
                }
            }
        }
        Ok(n)
    }

    /// Opens the segment holding `next_seq`; false when it does not exist yet.
    fn open(&mut self) -> Result<bool, String> {
        let files = segment_files(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let Some((base, path)) = files.iter().rev().find(|(b, _)| *b <= self.next_seq) else {
            return Ok(false);
        };
        let seg = map(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if seg.len() < segment::HEADER_LEN || seg[..segment::HEADER_LEN].iter().all(|&b| b == 0) {
            // Created but without its header yet: not readable yet.
            return Ok(false);
        }
        SegmentHeader::decode(&seg).map_err(|e| format!("{}: {e:?}", path.display()))?;
        // Skip to `next_seq` (a resumed shipper).
        let mut at = segment::HEADER_LEN;
        let mut seq = *base;
        while seq < self.next_seq {
            match segment::record_at(&seg, at, seq) {
                Ok(Some(r)) => {
                    at += segment::record_size(r.payload.len());
                    seq += 1;
                }
                _ => {
                    return Err(format!(
                        "{}: the checkpoint says {} but the log ends at {seq}",
                        path.display(),
                        self.next_seq
                    ))
                }
            }
        }
        self.current = Some((*base, seg, at));
        Ok(true)
    }

    fn remap(&mut self) -> Result<(), String> {
        if let Some((base, seg, at)) = self.current.take() {
            let path = self.dir.join(crate::cdr_files::segment_name(base));
            let fresh = map(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            drop(seg);
            self.current = Some((base, fresh, at));
        }
        Ok(())
    }
}

/// What every delivery of one shard shares.
struct Courier<'a> {
    agent: ureq::Agent,
    spec: &'a ShipSpec,
    shard: u16,
    stats: &'a ShardStats,
    stop: &'a AtomicBool,
    /// Set when the shard's loop ends for any reason: retries give up.
    quit: AtomicBool,
}

/// How one post of a batch ended.
enum Posted {
    Accepted,
    /// Refused for good (a 4xx other than 408, 409 and 429): status and reason.
    Refused(u16, String),
    /// Stopped while retrying.
    Stopped,
}

/// Whether an answer refuses the batch for good: retrying the same bytes cannot help.
fn refuses_for_good(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 409 | 429)
}

/// Posts one batch until billing accepts it (or `stop`); false if stopped first. A
/// batch refused for good is split in halves, each posted on its own, down to the
/// records billing refuses, which go to the shard's dead-letter file with the reason
/// (`dead_letter`); delivery goes on.
fn deliver(c: &Courier<'_>, first: u64, last: u64, body: &[u8]) -> bool {
    let key = format!("gyro-{}-{first}-{last}", c.shard);
    deliver_part(c, &key, first, last, body)
}

fn deliver_part(c: &Courier<'_>, key: &str, first: u64, last: u64, body: &[u8]) -> bool {
    match post(c, key, first, last, body) {
        Posted::Accepted => true,
        Posted::Stopped => false,
        Posted::Refused(status, reason) => {
            let lines: Vec<&[u8]> = body
                .split_inclusive(|&b| b == b'\n')
                .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                .collect();
            if lines.len() <= 1 {
                return dead_letter(c, key, status, &reason, body);
            }
            let (a, b) = lines.split_at(lines.len() / 2);
            let (a, b) = (a.concat(), b.concat());
            deliver_part(c, &format!("{key}.0"), first, last, &a)
                && deliver_part(c, &format!("{key}.1"), first, last, &b)
        }
    }
}

/// Writes a record billing refused for good to `CHECKPOINT_DIR/shard-N.dead-letter.ndjson`
/// (synced), with the batch key, status and reason; false if it cannot be written (the
/// shard stops rather than skip it silently).
fn dead_letter(c: &Courier<'_>, key: &str, status: u16, reason: &str, record: &[u8]) -> bool {
    use std::io::Write as _;
    let path = c
        .spec
        .checkpoint_dir
        .join(format!("shard-{}.dead-letter.ndjson", c.shard));
    let record = String::from_utf8_lossy(record);
    let line = format!(
        "{{\"batch\":{},\"status\":{status},\"reason\":{},\"record\":{}}}\n",
        crate::json_quote(key),
        crate::json_quote(reason),
        crate::json_quote(record.trim_end())
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_data()));
    match written {
        Ok(()) => {
            c.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                target: "gyro::ship",
                shard = c.shard,
                batch = %key,
                status,
                "billing refused a record for good ({reason}): written to {}",
                path.display()
            );
            true
        }
        Err(e) => {
            tracing::error!(
                target: "gyro::ship",
                shard = c.shard,
                "writing the dead-letter file {}: {e}; stopping",
                path.display()
            );
            c.quit.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// Most bytes of a refusal's reason kept.
const REASON_BYTES: u64 = 4096;

/// Posts `body` until billing accepts it, refuses it for good, or `stop`.
fn post(c: &Courier<'_>, key: &str, first: u64, last: u64, body: &[u8]) -> Posted {
    let Courier {
        agent,
        spec,
        shard,
        stats,
        stop,
        quit,
    } = c;
    let shard = *shard;
    let mut pause = Duration::from_millis(10);
    loop {
        let result = agent
            .post(&spec.to)
            .set("Content-Type", "application/x-ndjson")
            .set("Idempotency-Key", key)
            .set("X-Gyro-Shard", &shard.to_string())
            .set("X-Gyro-Seq", &format!("{first}-{last}"))
            .send_bytes(body);
        match result {
            Ok(r) if (200..300).contains(&r.status()) => return Posted::Accepted,
            Ok(r) => tracing::warn!(
                target: "gyro::ship",
                shard,
                batch = %key,
                status = r.status(),
                "billing answered {}; retrying",
                r.status()
            ),
            Err(ureq::Error::Status(code, r)) if refuses_for_good(code) => {
                let mut reason = String::new();
                let _partial = std::io::Read::read_to_string(
                    &mut std::io::Read::take(r.into_reader(), REASON_BYTES),
                    &mut reason,
                );
                return Posted::Refused(code, reason);
            }
            Err(ureq::Error::Status(code, _)) => tracing::warn!(
                target: "gyro::ship",
                shard,
                batch = %key,
                status = code,
                "billing answered {code}; retrying"
            ),
            Err(e) => tracing::warn!(
                target: "gyro::ship",
                shard,
                batch = %key,
                "{e}; retrying"
            ),
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) || quit.load(Ordering::Relaxed) {
                return Posted::Stopped;
            }
            std::thread::sleep(Duration::from_millis(5).min(pause));
        }
        pause = (pause * 2).min(spec.backoff_max);
    }
}

/// Ships one shard until done (or `stop`).
fn ship_shard(
    spec: &ShipSpec,
    shard: u16,
    dir: PathBuf,
    stats: &ShardStats,
    stop: &AtomicBool,
) -> Result<(), String> {
    std::fs::create_dir_all(&spec.checkpoint_dir)
        .map_err(|e| format!("{}: {e}", spec.checkpoint_dir.display()))?;
    let checkpoint = spec
        .checkpoint_dir
        .join(format!("shard-{shard}.checkpoint"));
    let start = read_checkpoint(&checkpoint)?;
    stats.shipped.store(start, Ordering::Relaxed);
    stats.seen.store(start, Ordering::Relaxed);
    let mut reader = Reader::new(dir, start);
    let courier = Courier {
        agent: ureq::AgentBuilder::new().timeout(spec.timeout).build(),
        spec,
        shard,
        stats,
        stop,
        quit: AtomicBool::new(false),
    };
    let window = spec.window.max(1);
    // Retention: only what billing has and an engine snapshot covers may go.
    let retain = |next: u64| -> Result<(), String> {
        let Some(archive) = &spec.retain else {
            return Ok(());
        };
        let covered = crate::recovery::snapshots(&spec.data_dir, shard)
            .last()
            .map_or(0, |(seq, _)| *seq);
        let dir = spec.data_dir.join(format!("shard-{shard}"));
        let upto = next.min(covered);
        let n = retire(&dir, upto, archive.as_deref())?;
        if n > 0 {
            tracing::info!(
                target: "gyro::ship",
                "shard {shard}: {} {n} segments before sequence {upto}",
                if archive.is_some() {
                    "archived"
                } else {
                    "deleted"
                }
            );
        }
        Ok(())
    };
    let save = |next: u64| -> Result<(), String> {
        write_checkpoint(&checkpoint, next)
            .map_err(|e| format!("{}: writing the checkpoint: {e}", checkpoint.display()))?;
        retain(next)
    };
    retain(start)?;
    // A sliding window: `window` couriers deliver batches as they come; the checkpoint
    // follows the longest prefix of accepted batches, written at most every 200 ms (and
    // at the end). An older checkpoint only means more duplicates after a restart.
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<(u64, u64, u64, Vec<u8>)>(window);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(u64, bool, Vec<u8>)>();
    std::thread::scope(|s| {
        for _ in 0..window {
            let (jobs, done, courier) = (jobs_rx.clone(), done_tx.clone(), &courier);
            s.spawn(move || {
                for (index, first, last, body) in jobs {
                    let ok = deliver(courier, first, last, &body);
                    if done.send((index, ok, body)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let result = (|| -> Result<(), String> {
            let mut free: Vec<Vec<u8>> = (0..window).map(|_| Vec::with_capacity(1 << 20)).collect();
            // Batches in flight by index: (last sequence, accepted).
            let mut flight: std::collections::BTreeMap<u64, (u64, bool)> = Default::default();
            let mut next_index = 0u64;
            let mut shipped = start;
            let mut saved = (start, Instant::now());
            let mut idle_since: Option<Instant> = None;
            // Moves `shipped` past the batches accepted in a row.
            let advance = |flight: &mut std::collections::BTreeMap<u64, (u64, bool)>,
                           shipped: &mut u64| {
                while let Some((_, &(last, true))) = flight.first_key_value() {
                    flight.pop_first();
                    *shipped = last + 1;
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                }
                stats.shipped.store(*shipped, Ordering::Relaxed);
            };
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut consumed = false;
                while flight.len() < window {
                    let Some(mut body) = free.pop() else { break };
                    body.clear();
                    let first = reader.next_seq;
                    let n = reader.read(spec.batch_max.max(1), &mut body)?;
                    if n == 0 {
                        free.push(body);
                        break;
                    }
                    consumed = true;
                    let last = first + n as u64 - 1;
                    if body.is_empty() {
                        // Only journal records: nothing for billing, done already.
                        flight.insert(next_index, (last, true));
                        free.push(body);
                    } else {
                        flight.insert(next_index, (last, false));
                        jobs_tx
                            .send((next_index, first, last, body))
                            .map_err(|_| "the couriers stopped".to_string())?;
                    }
                    next_index += 1;
                }
                advance(&mut flight, &mut shipped);
                stats.seen.store(reader.next_seq, Ordering::Relaxed);
                if consumed {
                    idle_since = None;
                }
                if flight.is_empty() {
                    if shipped != saved.0 {
                        save(shipped)?;
                        saved = (shipped, Instant::now());
                    }
                    if !spec.follow
                        && idle_since.is_some_and(|t| t.elapsed() > Duration::from_millis(200))
                    {
                        return Ok(());
                    }
                    if !consumed {
                        idle_since.get_or_insert_with(Instant::now);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                }
                idle_since = None;
                let Ok((index, ok, body)) = done_rx.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                free.push(body);
                if !ok {
                    // Stopped while retrying: billing is known to hold the prefix.
                    break;
                }
                if let Some(f) = flight.get_mut(&index) {
                    f.1 = true;
                }
                advance(&mut flight, &mut shipped);
                if shipped != saved.0 && saved.1.elapsed() >= Duration::from_millis(200) {
                    save(shipped)?;
                    saved = (shipped, Instant::now());
                }
            }
            if shipped != saved.0 {
                save(shipped)?;
            }
            Ok(())
        })();
        // Couriers still retrying give up; idle ones see the end of the jobs.
        courier.quit.store(true, Ordering::Relaxed);
        drop(jobs_tx);
        result
    })
}

/// Ships every shard of `spec.data_dir`; returns the next sequence per shard when done.
pub fn run(spec: &ShipSpec, stop: &AtomicBool) -> Result<Vec<(u16, u64)>, String> {
    let shards = shard_dirs(&spec.data_dir)?;
    if shards.is_empty() {
        return Err(format!(
            "{}: no shard-N directories",
            spec.data_dir.display()
        ));
    }
    let stats: Vec<Arc<ShardStats>> = shards.iter().map(|_| Arc::default()).collect();
    let started = Instant::now();
    let metrics = match &spec.metrics {
        Some(addr) => Some(
            tiny_http::Server::http(addr.as_str())
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?,
        ),
        None => None,
    };
    let serving = AtomicBool::new(true);
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        if let Some(server) = &metrics {
            let (shards, stats, serving) = (&shards, &stats, &serving);
            s.spawn(move || {
                while serving.load(Ordering::Relaxed) {
                    if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) {
                        let (code, body) = if req.url() == "/metrics" {
                            (200, render(shards, stats))
                        } else {
                            (404, "GET /metrics\n".to_string())
                        };
                        let kind = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            crate::prom::CONTENT_TYPE.as_bytes(),
                        );
                        let mut answer =
                            tiny_http::Response::from_string(body).with_status_code(code);
                        if let Ok(h) = kind {
                            answer.add_header(h);
                        }
                        let _ = req.respond(answer);
                    }
                }
            });
        }
        let handles: Vec<_> = shards
            .iter()
            .zip(&stats)
            .map(|((shard, dir), st)| {
                let (shard, dir) = (*shard, dir.clone());
                s.spawn(move || ship_shard(spec, shard, dir, st, stop))
            })
            .collect();
        let mut last = Instant::now();
        let mut last_shipped: Vec<u64> = vec![0; stats.len()];
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if spec.progress_every.is_zero() || last.elapsed() < spec.progress_every {
                continue;
            }
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            for (i, ((shard, _), st)) in shards.iter().zip(&stats).enumerate() {
                let shipped = st.shipped.load(Ordering::Relaxed);
                let seen = st.seen.load(Ordering::Relaxed);
                let rate = (shipped.saturating_sub(last_shipped[i])) as f64 / secs;
                last_shipped[i] = shipped;
                tracing::info!(
                    target: "gyro::ship",
                    "shard {shard}: shipped up to {shipped}, lag {} records, {rate:.0} CDR/s, {} retries ({:.0} s)",
                    seen.saturating_sub(shipped),
                    st.retries.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let results = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a shard thread failed".into()))
            })
            .collect();
        serving.store(false, Ordering::Relaxed);
        results
    });
    for r in results {
        r?;
    }
    Ok(shards
        .iter()
        .zip(&stats)
        .map(|((s, _), st)| (*s, st.shipped.load(Ordering::Relaxed)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyro_engine::segment::RecordKind;

    #[test]
    fn a_next_segment_without_its_header_yet_is_waited_for() {
        let dir = std::env::temp_dir().join(format!("gyro-ship-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = crate::segments::SegmentWriter::create(&dir, 0, 8192, 0).unwrap();
        w.append(RecordKind::Cdr, b"{\"id\":\"a\"}").unwrap();
        w.flush().unwrap();
        // A file named like the next segment but still all zeros, as a writer that
        // created it and has not written its header would leave it.
        let next = dir.join(crate::cdr_files::segment_name(1));
        std::fs::File::create(&next).unwrap().set_len(8192).unwrap();
        let mut r = Reader::new(dir.clone(), 0);
        let mut out = Vec::new();
        assert_eq!(r.read(10, &mut out).unwrap(), 1);
        assert_eq!(
            r.read(10, &mut out).unwrap(),
            0,
            "nothing more yet, and no error"
        );
        // The header arrives with a record.
        std::fs::remove_file(&next).unwrap();
        let mut w2 = crate::segments::SegmentWriter::create(&dir, 0, 8192, 1).unwrap();
        w2.append(RecordKind::Cdr, b"{\"id\":\"b\"}").unwrap();
        w2.flush().unwrap();
        assert_eq!(r.read(10, &mut out).unwrap(), 1);
        assert_eq!(out, b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
