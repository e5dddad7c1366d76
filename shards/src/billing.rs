//! `gyro billing-sink`: a reference billing receiver. It exists to prove the CDR
//! pipeline end to end (tests and `gyro demo`), not to bill anyone.
//!
//! It accepts the shipper's batches (HTTP POST of NDJSON, any path), deduplicates on
//! each record's `id`, appends the new records to `--out` and applies them to its own
//! copy of the balances: per company the money charged (`cost` of each service), the
//! package units used (`package_units` per `package`) and the top-ups. `GET /totals`
//! returns those totals as JSON. On start it reads `--out` back, so a restarted
//! receiver still knows what it accepted. For tests it can refuse (`--fail-percent`),
//! accept and then answer as if it had failed (`--lost-percent`: the reply is lost) or
//! stall (`--stall-percent`, `--stall-ms`) a share of the batches.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};

/// How the receiver behaves.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    pub out: PathBuf,
    pub fail_percent: u32,
    pub lost_percent: u32,
    pub stall_percent: u32,
    pub stall_ms: u64,
    pub seed: u64,
    /// Bytes of a batch, at most (more: 413, nothing read past it).
    pub body_bytes_max: u64,
}

/// The default of `SinkSpec::body_bytes_max`: 256 MiB.
pub const BODY_BYTES_MAX: u64 = 256 << 20;

impl Default for SinkSpec {
    fn default() -> SinkSpec {
        SinkSpec {
            out: PathBuf::new(),
            fail_percent: 0,
            lost_percent: 0,
            stall_percent: 0,
            stall_ms: 0,
            seed: 0,
            body_bytes_max: BODY_BYTES_MAX,
        }
    }
}

/// One company as billing sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompanyTotals {
    pub charged: i64,
    pub topups: i64,
    /// A company's opening balance (created at run time), corrections of either sign,
    /// and package units given (packages added or extended at run time).
    pub opening: i64,
    pub adjustments: i64,
    pub units_added: i64,
    pub package_units: FxHashMap<String, i64>,
}

/// What the receiver holds.
#[derive(Debug, Default)]
pub struct Totals {
    pub records: u64,
    pub duplicates: u64,
    pub batches: u64,
    pub companies: FxHashMap<String, CompanyTotals>,
    ids: FxHashSet<Box<str>>,
}

/// The fields of a record billing reads; everything else in the line is kept in the
/// file as it came.
#[derive(serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    company: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    added: Option<i64>,
    #[serde(borrow, default)]
    services: Vec<Service<'a>>,
}

#[derive(serde::Deserialize)]
struct Service<'a> {
    #[serde(default)]
    cost: Option<i64>,
    #[serde(borrow, default)]
    package: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    package_units: Option<i64>,
}

impl Totals {
    /// Applies one record unless its id was seen; false for a duplicate.
    fn apply(&mut self, r: &Record<'_>) -> bool {
        if self.ids.contains(r.id.as_ref()) {
            self.duplicates += 1;
            return false;
        }
        self.ids.insert(r.id.as_ref().into());
        self.records += 1;
        let Some(company) = r.company.as_deref() else {
            // A CCR of an unknown subscriber: nothing to bill.
            return true;
        };
        let c = match self.companies.get_mut(company) {
            Some(c) => c,
            None => self.companies.entry(company.to_string()).or_default(),
        };
        match r.kind.as_deref() {
            Some("topup") => {
                c.topups = c.topups.saturating_add(r.amount.unwrap_or(0));
                return true;
            }
            Some("company") => {
                c.opening = c.opening.saturating_add(r.amount.unwrap_or(0));
                return true;
            }
            Some("adjust") => {
                c.adjustments = c.adjustments.saturating_add(r.amount.unwrap_or(0));
                return true;
            }
            Some("package") => {
                c.units_added = c.units_added.saturating_add(r.added.unwrap_or(0));
                return true;
            }
            _ => {}
        }
        for s in &r.services {
            c.charged += s.cost.unwrap_or(0);
            if let Some(p) = s.package.as_deref() {
                let units = s.package_units.unwrap_or(0);
                match c.package_units.get_mut(p) {
                    Some(u) => *u += units,
                    None => {
                        c.package_units.insert(p.to_string(), units);
                    }
                }
            }
        }
        true
    }

    /// The totals as JSON.
    pub fn to_json(&self) -> String {
        let mut o = format!(
            "{{\"records\":{},\"duplicates\":{},\"batches\":{},\"companies\":{{",
            self.records, self.duplicates, self.batches
        );
        let companies: BTreeMap<&String, &CompanyTotals> = self.companies.iter().collect();
        for (i, (id, c)) in companies.into_iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(&format!(
                "{}:{{\"charged\":{},\"topups\":{},\"opening\":{},\"adjustments\":{},\"units_added\":{},\"package_units\":{{",
                crate::json_quote(id),
                c.charged,
                c.topups,
                c.opening,
                c.adjustments,
                c.units_added
            ));
            let units: BTreeMap<&String, &i64> = c.package_units.iter().collect();
            for (j, (p, u)) in units.into_iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                o.push_str(&format!("{}:{u}", crate::json_quote(p)));
            }
            o.push_str("}}");
        }
        o.push_str("}}");
        o
    }
}

/// Parses one line (in `scratch`, which the parser may rewrite).
fn parse<'s>(line: &[u8], scratch: &'s mut Vec<u8>) -> Result<Record<'s>, String> {
    scratch.clear();
    scratch.extend_from_slice(line);
    simd_json::serde::from_slice::<Record<'s>>(scratch)
        .map_err(|e| format!("not a record with an id: {e}"))
}

/// The receiver: totals rebuilt from `out`, ready to serve.
pub struct Sink {
    spec: SinkSpec,
    totals: Totals,
    out: File,
    rng: u64,
}

impl Sink {
    pub fn open(spec: SinkSpec) -> Result<Sink, String> {
        let mut totals = Totals::default();
        let mut scratch = Vec::new();
        if let Ok(f) = File::open(&spec.out) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| format!("{}: {e}", spec.out.display()))?;
                if line.is_empty() {
                    continue;
                }
                let r = parse(line.as_bytes(), &mut scratch)
                    .map_err(|e| format!("{} line {}: {e}", spec.out.display(), n + 1))?;
                totals.apply(&r);
            }
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.out)
            .map_err(|e| format!("{}: {e}", spec.out.display()))?;
        let rng = spec.seed ^ 0x9e37_79b9_7f4a_7c15;
        Ok(Sink {
            spec,
            totals,
            out,
            rng,
        })
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        percent > 0 && (self.rng % 100) < u64::from(percent)
    }

    /// Applies a parsed batch (`body` its text, `records` its lines in order).
    fn apply_batch(&mut self, body: &[u8], records: &[Record<'_>]) -> (u16, String) {
        if self.chance(self.spec.fail_percent) {
            return (503, "{\"error\":\"refused (--fail-percent)\"}".into());
        }
        let lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let mut fresh = Vec::with_capacity(body.len());
        let (mut accepted, mut dups) = (0u64, 0u64);
        for (l, r) in lines.zip(records) {
            if self.totals.apply(r) {
                accepted += 1;
                fresh.extend_from_slice(l);
                fresh.push(b'\n');
            } else {
                dups += 1;
            }
        }
        // On disk before the batch is acknowledged: what billing said it has, it keeps.
        if let Err(e) = self
            .out
            .write_all(&fresh)
            .and_then(|()| self.out.flush())
            .and_then(|()| self.out.sync_data())
        {
            tracing::error!(
                target: "gyro::billing",
                "writing {}: {e}; stopping",
                self.spec.out.display()
            );
            std::process::exit(70);
        }
        self.totals.batches += 1;
        if self.chance(self.spec.lost_percent) {
            return (
                503,
                "{\"error\":\"accepted, reply lost (--lost-percent)\"}".into(),
            );
        }
        (
            200,
            format!("{{\"accepted\":{accepted},\"duplicates\":{dups}}}"),
        )
    }
}

/// Parses every line of a batch in place (once), before anything is applied, so a bad
/// batch changes nothing; the error is the reply.
fn parse_batch(copy: &mut [u8]) -> Result<Vec<Record<'_>>, (u16, String)> {
    let mut records = Vec::with_capacity(copy.len() / 256 + 1);
    for (i, l) in copy
        .split_mut(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        match simd_json::serde::from_slice::<Record<'_>>(l) {
            Ok(r) => records.push(r),
            Err(e) => {
                let why = format!("line {}: not a record with an id: {e}", i + 1);
                return Err((400, format!("{{\"error\":{}}}", crate::json_quote(&why))));
            }
        }
    }
    Ok(records)
}

/// Serves until `stop` with two threads (batches are parsed in parallel, applied one
/// at a time); returns the totals as JSON.
pub fn serve(server: Server, sink: Sink, stop: &AtomicBool) -> String {
    let sink = std::sync::Mutex::new(sink);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| worker(&server, &sink, stop));
        }
    });
    let sink = sink.into_inner().unwrap_or_else(|p| p.into_inner());
    sink.totals().to_json()
}

fn worker(server: &Server, sink: &std::sync::Mutex<Sink>, stop: &AtomicBool) {
    let lock = || sink.lock().unwrap_or_else(|p| p.into_inner());
    while !stop.load(Ordering::Relaxed) {
        let mut req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(target: "gyro::billing", "{e}");
                break;
            }
        };
        let (status, body) = match req.method() {
            Method::Post => {
                let max = lock().spec.body_bytes_max;
                let mut body = Vec::new();
                let declared = req.body_length().map(|n| n as u64);
                let read = if declared.is_some_and(|n| n > max) {
                    Ok(max + 1)
                } else {
                    std::io::Read::take(req.as_reader(), max + 1)
                        .read_to_end(&mut body)
                        .map(|n| n as u64)
                };
                match read {
                    Ok(n) if n > max => (
                        413,
                        format!("{{\"error\":\"a batch is at most {max} bytes\"}}"),
                    ),
                    Ok(_) => {
                        let mut copy = body.clone();
                        match parse_batch(&mut copy) {
                            Ok(records) => {
                                let stall = {
                                    let mut s = lock();
                                    let p = s.spec.stall_percent;
                                    s.chance(p).then_some(s.spec.stall_ms)
                                };
                                if let Some(ms) = stall {
                                    std::thread::sleep(Duration::from_millis(ms));
                                }
                                lock().apply_batch(&body, &records)
                            }
                            Err(reply) => reply,
                        }
                    }
                    Err(e) => (
                        400,
                        format!("{{\"error\":{}}}", crate::json_quote(&e.to_string())),
                    ),
                }
            }
            Method::Get if req.url() == "/totals" => (200, lock().totals().to_json()),
            _ => (
                404,
                "{\"error\":\"POST a batch of NDJSON, or GET /totals\"}".into(),
            ),
        };
        let ct =
            Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("header");
        let _ = req.respond(
            Response::from_string(body + "\n")
                .with_status_code(status)
                .with_header(ct),
        );
    }
}
