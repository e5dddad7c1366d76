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

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use simd_json::prelude::*;
use tiny_http::{Header, Method, Response, Server};

/// How the receiver behaves.
#[derive(Clone, Debug, Default)]
pub struct SinkSpec {
    pub out: PathBuf,
    pub fail_percent: u32,
    pub lost_percent: u32,
    pub stall_percent: u32,
    pub stall_ms: u64,
    pub seed: u64,
}

/// One company as billing sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompanyTotals {
    pub charged: i64,
    pub topups: i64,
    pub package_units: BTreeMap<String, i64>,
}

/// What the receiver holds.
#[derive(Debug, Default)]
pub struct Totals {
    pub records: u64,
    pub duplicates: u64,
    pub batches: u64,
    pub companies: BTreeMap<String, CompanyTotals>,
    ids: HashSet<String>,
}

impl Totals {
    /// Applies one record unless its id was seen; false for a duplicate. Errors name
    /// what is wrong with the line.
    fn apply(&mut self, line: &[u8]) -> Result<bool, String> {
        let mut buf = line.to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).map_err(|e| format!("not JSON: {e}"))?;
        let id = v
            .get("id")
            .and_then(|i| i.as_str())
            .ok_or("a record without an \"id\"")?;
        if self.ids.contains(id) {
            self.duplicates += 1;
            return Ok(false);
        }
        self.ids.insert(id.to_string());
        self.records += 1;
        let Some(company) = v.get("company").and_then(|c| c.as_str()) else {
            // A CCR of an unknown subscriber: nothing to bill.
            return Ok(true);
        };
        let c = self.companies.entry(company.to_string()).or_default();
        if v.get("kind").and_then(|k| k.as_str()) == Some("topup") {
            c.topups += v.get("amount").and_then(|a| a.as_i64()).unwrap_or(0);
            return Ok(true);
        }
        if let Some(services) = v.get("services").and_then(|s| s.as_array()) {
            for s in services {
                c.charged += s.get("cost").and_then(|x| x.as_i64()).unwrap_or(0);
                if let Some(p) = s.get("package").and_then(|p| p.as_str()) {
                    let units = s.get("package_units").and_then(|x| x.as_i64()).unwrap_or(0);
                    *c.package_units.entry(p.to_string()).or_default() += units;
                }
            }
        }
        Ok(true)
    }

    /// The totals as JSON.
    pub fn to_json(&self) -> String {
        let mut o = format!(
            "{{\"records\":{},\"duplicates\":{},\"batches\":{},\"companies\":{{",
            self.records, self.duplicates, self.batches
        );
        for (i, (id, c)) in self.companies.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(&format!(
                "{}:{{\"charged\":{},\"topups\":{},\"package_units\":{{",
                json_string(id),
                c.charged,
                c.topups
            ));
            for (j, (p, u)) in c.package_units.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                o.push_str(&format!("{}:{u}", json_string(p)));
            }
            o.push_str("}}");
        }
        o.push_str("}}");
        o
    }
}

fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
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
        if let Ok(f) = File::open(&spec.out) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| format!("{}: {e}", spec.out.display()))?;
                if line.is_empty() {
                    continue;
                }
                totals
                    .apply(line.as_bytes())
                    .map_err(|e| format!("{} line {}: {e}", spec.out.display(), n + 1))?;
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

    /// Takes one batch: (HTTP status, reply body).
    pub fn batch(&mut self, body: &[u8]) -> (u16, String) {
        if self.chance(self.spec.stall_percent) {
            std::thread::sleep(Duration::from_millis(self.spec.stall_ms));
        }
        if self.chance(self.spec.fail_percent) {
            return (503, "{\"error\":\"refused (--fail-percent)\"}".into());
        }
        // Check every line before applying any, so a bad batch changes nothing.
        let lines: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut fresh = Vec::with_capacity(body.len());
        let (mut accepted, mut dups) = (0u64, 0u64);
        for (i, l) in lines.iter().enumerate() {
            let mut buf = l.to_vec();
            let ok = simd_json::to_borrowed_value(&mut buf)
                .ok()
                .and_then(|v| v.get("id").and_then(|x| x.as_str()).map(|_| ()))
                .is_some();
            if !ok {
                return (
                    400,
                    format!(
                        "{{\"error\":\"line {} of the batch is not a record with an id\"}}",
                        i + 1
                    ),
                );
            }
        }
        for l in lines {
            match self.totals.apply(l) {
                Ok(true) => {
                    accepted += 1;
                    fresh.extend_from_slice(l);
                    fresh.push(b'\n');
                }
                Ok(false) => dups += 1,
                Err(e) => return (400, format!("{{\"error\":{}}}", json_string(&e))),
            }
        }
        if let Err(e) = self.out.write_all(&fresh).and_then(|()| self.out.flush()) {
            eprintln!(
                "gyro billing-sink: writing {}: {e}",
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

/// Serves until `stop`; returns the totals as JSON.
pub fn serve(server: Server, mut sink: Sink, stop: &AtomicBool) -> String {
    while !stop.load(Ordering::Relaxed) {
        let mut req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("gyro billing-sink: {e}");
                break;
            }
        };
        let (status, body) = match req.method() {
            Method::Post => {
                let mut body = Vec::new();
                match req.as_reader().read_to_end(&mut body) {
                    Ok(_) => sink.batch(&body),
                    Err(e) => (
                        400,
                        format!("{{\"error\":{}}}", json_string(&e.to_string())),
                    ),
                }
            }
            Method::Get if req.url() == "/totals" => (200, sink.totals().to_json()),
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
    sink.totals().to_json()
}
