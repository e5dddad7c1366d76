//! `gyro-loadgen run`: Gy traffic against any Diameter Credit-Control server.
//!
//! Each connection is one thread and one client peer (CER/CEA, DWR answered, DPR at the
//! end) that keeps `window` sessions in flight, each with one request outstanding at a
//! time, as a network element does. Traffic is a mix of data sessions (CCR-I, U…U,
//! CCR-T with two MSCC), voice sessions (CC-Time), SMS events (CCR-EVENT, direct
//! debiting) and refunds (CCR-EVENT, REFUND_ACCOUNT). Every answer is checked: it must
//! answer an outstanding request (Hop-by-Hop and End-to-End), carry its Session-Id,
//! CC-Request-Type and CC-Request-Number, and a Result-Code. Sessions follow their
//! answers: a failed CCR-I ends the session, a failed CCR-U or a Final-Unit-Indication
//! sends the CCR-T.
//!
//! Closed loop by default (as fast as the window allows); with `--rate` an open loop on
//! a fixed schedule, latency measured from each request's scheduled time, so a server
//! that stalls shows it in the latency instead of hiding it (coordinated omission).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId,
    Units,
};
use gyro_engine::diameter::{Header, Message};
use gyro_engine::peer::{Incoming, Peer, PeerConfig, PeerState};
use hdrhistogram::Histogram;

use crate::dataset::{DATA_RATING_GROUPS, SMS_SERVICE_IDENTIFIER, VOICE_RATING_GROUP};

/// Shares of the traffic mix, in sessions or events started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub data: u32,
    pub voice: u32,
    pub sms: u32,
    pub refund: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            data: 85,
            voice: 10,
            sms: 5,
            refund: 0,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// `data=80,voice=10,sms=10,refund=0` (missing kinds are 0).
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            data: 0,
            voice: 0,
            sms: 0,
            refund: 0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KIND=SHARE"))?;
            let v: u32 = v
                .parse()
                .map_err(|_| format!("{part:?}: the share must be a whole number"))?;
            match k {
                "data" => m.data = v,
                "voice" => m.voice = v,
                "sms" => m.sms = v,
                "refund" => m.refund = v,
                _ => return Err(format!("{k:?}: kinds are data, voice, sms, refund")),
            }
        }
        if m.data + m.voice + m.sms + m.refund == 0 {
            return Err("the mix is empty".into());
        }
        Ok(m)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub target: SocketAddr,
    /// MSISDNs to charge (from the dataset).
    pub msisdns: Arc<Vec<String>>,
    pub connections: usize,
    /// Sessions in flight per connection (one request outstanding each).
    pub window: usize,
    pub duration: Option<Duration>,
    /// Sessions (and events) to run in all; with `duration`, whichever ends first.
    pub sessions: Option<u64>,
    /// CCR/s over all connections (open loop); `None` runs closed loop.
    pub rate: Option<f64>,
    pub mix: Mix,
    pub updates: u32,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_realm: String,
    pub tx_timeout: Duration,
    /// Print a progress line every second.
    pub progress: bool,
    /// Counters the caller can watch while the run goes.
    pub live: Option<Arc<Live>>,
    /// When set, the id of every answered request (`SESSION-ID#CC-REQUEST-NUMBER`, the
    /// CDR id gyro gives it) is added here: for tests that match answers to CDRs.
    pub answered_ids: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl RunSpec {
    /// A closed-loop run of `sessions` sessions and events against `target`, charging
    /// the subscribers of `gyro serve`'s built-in dataset: 1 connection, window 64, the
    /// default mix, two updates per session, a 10 s Tx timeout. Change what a run
    /// needs with struct update syntax.
    pub fn new(target: SocketAddr, sessions: u64) -> RunSpec {
        RunSpec {
            target,
            msisdns: Arc::new((0..10_000).map(crate::dataset::msisdn).collect()),
            connections: 1,
            window: 64,
            duration: None,
            sessions: Some(sessions),
            rate: None,
            mix: Mix::default(),
            updates: 2,
            origin_host: "pgw.loadgen.gyro".into(),
            origin_realm: "loadgen.gyro".into(),
            destination_realm: "gyro.local".into(),
            tx_timeout: Duration::from_secs(10),
            progress: false,
            live: None,
            answered_ids: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub elapsed: Duration,
    pub requests: u64,
    pub answers: u64,
    pub answers_by_result: Vec<(u32, u64)>,
    pub check_failures: u64,
    /// The first few check failures, described.
    pub failures: Vec<String>,
    pub timeouts: u64,
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub connection_errors: Vec<String>,
    /// Microseconds.
    pub latency: Histogram<u64>,
    /// Latency of the answers received in each second of the run (microseconds, two
    /// significant digits).
    pub per_second: Vec<Histogram<u64>>,
}

impl RunReport {
    pub fn ccr_per_s(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as JSON (`--report`).
    pub fn to_json(&self, spec: &RunSpec) -> serde_json::Value {
        let h = &self.latency;
        let answers: serde_json::Map<String, serde_json::Value> = self
            .answers_by_result
            .iter()
            .map(|(c, n)| (c.to_string(), (*n).into()))
            .collect();
        let histogram: Vec<serde_json::Value> = h
            .iter_quantiles(1)
            .map(|v| {
                serde_json::json!({
                    "value_us": v.value_iterated_to(),
                    "quantile": v.quantile_iterated_to(),
                    "count": v.count_since_last_iteration(),
                })
            })
            .collect();
        serde_json::json!({
            "target": spec.target.to_string(),
            "connections": spec.connections,
            "window": spec.window,
            "mode": if spec.rate.is_some() { "open" } else { "closed" },
            "rate": spec.rate,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "ccr_per_s": self.ccr_per_s(),
            "answers": answers,
            "check_failures": self.check_failures,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "sessions_started": self.sessions_started,
            "sessions_completed": self.sessions_completed,
            "connection_errors": self.connection_errors,
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean(),
                "histogram": histogram,
            },
            "timeline": self.per_second.iter().enumerate().map(|(s, h)| serde_json::json!({
                "second": s,
                "answers": h.len(),
                "p50_us": h.value_at_quantile(0.5),
                "p99_us": h.value_at_quantile(0.99),
                "max_us": h.max(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Voice,
    Sms,
    Refund,
}

struct Session {
    kind: Kind,
    id: String,
    subscriber: usize,
    /// Number of the next request.
    number: u32,
    /// Requests of the session still to send after the next (updates, then T).
    updates_left: u32,
    /// The next request is the CCR-T.
    terminate: bool,
}

struct Pending {
    session: usize,
    end_to_end: u32,
    request_type: RequestType,
    number: u32,
    /// When the request was due (open loop) or sent (closed loop).
    due: Instant,
}

/// Totals shared by the connections while a run goes: for progress lines and for
/// callers that draw their own (`RunSpec::live`).
#[derive(Debug, Default)]
pub struct Live {
    pub answers: AtomicU64,
    /// Check failures and timeouts.
    pub errors: AtomicU64,
    pub started: AtomicU64,
    /// The largest p99 (microseconds) any connection saw in the last whole second.
    pub p99_us: AtomicU64,
}

struct Conn<'s> {
    spec: &'s RunSpec,
    index: usize,
    live: &'s Live,
    stop: &'s AtomicBool,
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    ready: VecDeque<usize>,
    pending: HashMap<u32, Pending>,
    started_here: u64,
    seq: u64,
    report: RunReport,
    last_timeout_scan: Instant,
    start: Instant,
}

fn result_code(avps: gyro_engine::diameter::AvpIter<'_>) -> Option<u32> {
    avps.flatten()
        .find(|a| a.code == 268 && a.vendor_id == 0)
        .and_then(|a| a.u32().ok())
}

impl<'s> Conn<'s> {
    fn new_report() -> RunReport {
        RunReport {
            elapsed: Duration::ZERO,
            requests: 0,
            answers: 0,
            answers_by_result: Vec::new(),
            check_failures: 0,
            failures: Vec::new(),
            timeouts: 0,
            sessions_started: 0,
            sessions_completed: 0,
            connection_errors: Vec::new(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            per_second: Vec::new(),
        }
    }

    fn second_histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 2).expect("bounds")
    }

    fn fail(&mut self, what: String) {
        self.report.check_failures += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        if self.report.failures.len() < 20 {
            self.report.failures.push(what);
        }
    }

    /// Starts a session or an event, if the limits allow; returns its slot.
    fn start_session(&mut self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(limit) = self.spec.sessions {
            // Connections share the limit evenly.
            let mine = limit / self.spec.connections as u64
                + u64::from((self.index as u64) < limit % self.spec.connections as u64);
            if self.started_here >= mine {
                return None;
            }
        }
        let slot = self.free.pop()?;
        let m = self.spec.mix;
        let total = m.data + m.voice + m.sms + m.refund;
        let pick = (self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % u64::from(total);
        let pick = pick as u32;
        let kind = if pick < m.data {
            Kind::Data
        } else if pick < m.data + m.voice {
            Kind::Voice
        } else if pick < m.data + m.voice + m.sms {
            Kind::Sms
        } else {
            Kind::Refund
        };
        let n = self.spec.msisdns.len().max(1);
        let subscriber =
            ((self.seq.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16) as usize + self.index * 7919) % n;
        let id = format!("{};{};{}", self.spec.origin_host, self.index, self.seq);
        self.seq += 1;
        self.started_here += 1;
        self.report.sessions_started += 1;
        self.live.started.fetch_add(1, Ordering::Relaxed);
        self.sessions[slot] = Some(Session {
            kind,
            id,
            subscriber,
            number: 0,
            updates_left: self.spec.updates,
            terminate: false,
        });
        Some(slot)
    }

    /// Encodes and queues the next request of session `slot`.
    fn send(&mut self, peer: &mut Peer, slot: usize, due: Instant) -> bool {
        let Some(s) = self.sessions[slot].as_ref() else {
            return true;
        };
        // End-to-End identifiers are unique per Origin-Host (RFC 6733 §3), and all
        // connections share one: each takes its own range (8 bits of connection,
        // 24 bits of counter), so the server's duplicate detection sees no false
        // retransmissions.
        let (h2h, _) = peer.next_ids();
        let e2e = ((self.index as u32) << 24) | (self.report.requests as u32 & 0x00ff_ffff);
        let msisdn = self
            .spec
            .msisdns
            .get(s.subscriber)
            .map_or("", String::as_str);
        let request_type = match s.kind {
            Kind::Sms | Kind::Refund => RequestType::Event,
            _ if s.number == 0 => RequestType::Initial,
            _ if s.terminate => RequestType::Termination,
            _ => RequestType::Update,
        };
        let mut c = Ccr {
            session_id: &s.id,
            origin_host: &self.spec.origin_host,
            origin_realm: &self.spec.origin_realm,
            destination_realm: &self.spec.destination_realm,
            request_type,
            request_number: s.number,
            subscription_id_count: 1,
            ..Ccr::default()
        };
        c.header = Header {
            hop_by_hop: h2h,
            end_to_end: e2e,
            ..c.header
        };
        c.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: msisdn,
        };
        let first = request_type == RequestType::Initial;
        let last = request_type == RequestType::Termination;
        match s.kind {
            Kind::Data => {
                c.service_context_id = "32251@3gpp.org";
                c.multiple_services_indicator = true;
                c.mscc_count = 2;
                for (i, rg) in DATA_RATING_GROUPS.iter().enumerate() {
                    let octets = |n: u64| Units {
                        total_octets: Some(n),
                        ..Units::default()
                    };
                    c.mscc[i] = Mscc {
                        rating_group: Some(*rg),
                        requested: (!last).then(|| octets(1 << 20)),
                        used: (!first).then(|| octets(if i == 0 { 900_000 } else { 100_000 })),
                        ..Mscc::default()
                    };
                }
            }
            Kind::Voice => {
                c.service_context_id = "32260@3gpp.org";
                c.multiple_services_indicator = true;
                c.mscc_count = 1;
                let secs = |n: u32| Units {
                    time_s: Some(n),
                    ..Units::default()
                };
                c.mscc[0] = Mscc {
                    rating_group: Some(VOICE_RATING_GROUP),
                    requested: (!last).then(|| secs(60)),
                    used: (!first).then(|| secs(45)),
                    ..Mscc::default()
                };
            }
            Kind::Sms | Kind::Refund => {
                c.service_context_id = "32274@3gpp.org";
                c.requested_action = Some(if s.kind == Kind::Sms {
                    RequestedAction::DirectDebiting
                } else {
                    RequestedAction::RefundAccount
                });
                c.service_identifier = Some(SMS_SERVICE_IDENTIFIER);
                c.requested = Some(Units {
                    service_specific: Some(1),
                    ..Units::default()
                });
            }
        }
        if peer.send_with(|b| encode_ccr(&c, b)).is_err() {
            return false;
        }
        let number = s.number;
        self.pending.insert(
            h2h,
            Pending {
                session: slot,
                end_to_end: e2e,
                request_type,
                number,
                due,
            },
        );
        self.report.requests += 1;
        true
    }

    fn end_session(&mut self, slot: usize, completed: bool) {
        if self.sessions[slot].take().is_some() {
            self.free.push(slot);
            if completed {
                self.report.sessions_completed += 1;
            }
        }
    }

    /// Checks an answer and moves its session on.
    fn on_answer(&mut self, bytes: &[u8], now: Instant) {
        let Some(msg) = Message::new(bytes) else {
            return self.fail("an answer that does not frame".into());
        };
        let Some(p) = self.pending.remove(&msg.header.hop_by_hop) else {
            return self.fail(format!(
                "an answer with Hop-by-Hop {:#x} matches no request",
                msg.header.hop_by_hop
            ));
        };
        self.report.answers += 1;
        self.live.answers.fetch_add(1, Ordering::Relaxed);
        let us = now.saturating_duration_since(p.due).as_micros().max(1) as u64;
        let _ = self.report.latency.record(us);
        let second = now.saturating_duration_since(self.start).as_secs() as usize;
        if self.report.per_second.len() <= second {
            // A second ended: publish its p99 for the progress line.
            if let Some(h) = self.report.per_second.last() {
                self.live
                    .p99_us
                    .fetch_max(h.value_at_quantile(0.99), Ordering::Relaxed);
            }
        }
        while self.report.per_second.len() <= second {
            self.report.per_second.push(Conn::second_histogram());
        }
        self.report.per_second[second].saturating_record(us);
        let code = result_code(msg.avps()).unwrap_or(0);
        match self
            .report
            .answers_by_result
            .iter_mut()
            .find(|(c, _)| *c == code)
        {
            Some((_, n)) => *n += 1,
            None => self.report.answers_by_result.push((code, 1)),
        }
        let slot = p.session;
        let Some(s) = self.sessions[slot].as_ref() else {
            return;
        };
        if let Some(ids) = &self.spec.answered_ids {
            if let Ok(mut v) = ids.lock() {
                v.push(format!("{}#{}", s.id, p.number));
            }
        }
        // The checks every answer must pass.
        let (mut sid, mut rtype, mut rnum, mut fui) = (None, None, None, false);
        for a in msg.avps().flatten() {
            match (a.code, a.vendor_id) {
                (263, 0) => sid = a.utf8().ok(),
                (416, 0) => rtype = a.u32().ok(),
                (415, 0) => rnum = a.u32().ok(),
                (456, 0) => {
                    // MSCC: a Final-Unit-Indication means the session must end.
                    fui |= a
                        .group()
                        .flatten()
                        .any(|m| m.code == 430 && m.vendor_id == 0);
                }
                _ => {}
            }
        }
        let mut problems = Vec::new();
        if msg.header.end_to_end != p.end_to_end {
            problems.push(format!(
                "End-to-End {:#x} instead of {:#x}",
                msg.header.end_to_end, p.end_to_end
            ));
        }
        if sid != Some(s.id.as_str()) {
            problems.push(format!("Session-Id {sid:?} instead of {:?}", s.id));
        }
        if code == 0 {
            problems.push("no Result-Code".into());
        }
        // Error answers (E bit) carry no CC-Request-Type/Number.
        if !msg.header.is_error() {
            if rtype != Some(p.request_type as u32) {
                problems.push(format!(
                    "CC-Request-Type {rtype:?} instead of {}",
                    p.request_type as u32
                ));
            }
            if rnum != Some(p.number) {
                problems.push(format!(
                    "CC-Request-Number {rnum:?} instead of {}",
                    p.number
                ));
            }
        }
        if !problems.is_empty() {
            let what = format!(
                "answer to {} ({:?} #{}): {}",
                s.id,
                p.request_type,
                p.number,
                problems.join(", ")
            );
            self.fail(what);
        }
        // Follow the answer as a network element would.
        let ok = code == 2001;
        match p.request_type {
            RequestType::Event | RequestType::Termination => self.end_session(slot, true),
            RequestType::Initial if !ok => self.end_session(slot, false),
            _ => {
                let s = self.sessions[slot].as_mut().expect("checked above");
                s.number += 1;
                if !ok || fui || s.updates_left == 0 {
                    s.terminate = true;
                } else {
                    s.updates_left -= 1;
                }
                self.ready.push_back(slot);
            }
        }
    }

    /// Requests that waited longer than the Tx timeout: counted, their sessions dropped.
    fn scan_timeouts(&mut self, now: Instant) {
        if now.duration_since(self.last_timeout_scan) < Duration::from_millis(100) {
            return;
        }
        self.last_timeout_scan = now;
        let limit = self.spec.tx_timeout;
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.due) > limit)
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            if let Some(p) = self.pending.remove(&h) {
                self.report.timeouts += 1;
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                self.end_session(p.session, false);
            }
        }
    }
}

fn run_connection(
    spec: &RunSpec,
    index: usize,
    live: &Live,
    stop: &AtomicBool,
    start: Instant,
) -> RunReport {
    let window = spec.window.max(1);
    let mut c = Conn {
        spec,
        index,
        live,
        stop,
        sessions: (0..window).map(|_| None).collect(),
        free: (0..window).rev().collect(),
        ready: VecDeque::with_capacity(window),
        pending: HashMap::with_capacity(window * 2),
        started_here: 0,
        seq: index as u64 * 1_000_000_007,
        report: Conn::new_report(),
        last_timeout_scan: start,
        start,
    };
    let mut stream = match TcpStream::connect_timeout(&spec.target, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            c.report.connection_errors.push(format!(
                "connection {index}: connect to {}: {e}",
                spec.target
            ));
            return c.report;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let ms = |t: Instant| t.duration_since(start).as_millis() as u64;
    let mut cfg = PeerConfig::new(&spec.origin_host, &spec.origin_realm);
    cfg.tx_buffer_bytes = 8 << 20;
    cfg.seed = index as u64;
    let mut peer = Peer::initiator(cfg, ms(Instant::now()));
    peer.connection_up(ms(Instant::now()));
    // Open loop: this connection's share of the rate, on a fixed schedule.
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r.max(1e-3)));
    let mut next_due = Instant::now();
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0usize;
    let mut disconnecting = false;
    loop {
        let now = Instant::now();
        if peer.state() == PeerState::Open && !disconnecting {
            // Send what the window (and in open loop the schedule) allows.
            while c.pending.len() < window {
                let due = match interval {
                    Some(iv) => {
                        if next_due > now {
                            break;
                        }
                        let d = next_due;
                        next_due += iv;
                        d
                    }
                    None => now,
                };
                let slot = match c.ready.pop_front() {
                    Some(s) => s,
                    None => match c.start_session() {
                        Some(s) => s,
                        None => break,
                    },
                };
                if !c.send(&mut peer, slot, due) {
                    break;
                }
            }
            let done = c.pending.is_empty() && c.ready.is_empty();
            let out_of_work = stop.load(Ordering::Relaxed)
                || spec.sessions.is_some_and(|_| c.free.len() == window);
            if done && out_of_work {
                disconnecting = true;
                peer.disconnect(disconnect_cause::REBOOTING, ms(now));
            }
        }
        while !peer.transmit().is_empty() {
            match stream.write(peer.transmit()) {
                Ok(n) => peer.transmitted(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    c.report
                        .connection_errors
                        .push(format!("connection {index}: write: {e}"));
                    return finish(c, start);
                }
            }
        }
        if let Some(r) = peer.close_reason() {
            // Our own DPR answered is the normal end; anything else is reported.
            if !matches!(r, gyro_engine::peer::CloseReason::Disconnected) {
                c.report
                    .connection_errors
                    .push(format!("connection {index}: closed: {r:?}"));
            }
            return finish(c, start);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                if !disconnecting {
                    c.report.connection_errors.push(format!(
                        "connection {index}: the server closed the connection"
                    ));
                }
                return finish(c, start);
            }
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                c.report
                    .connection_errors
                    .push(format!("connection {index}: read: {e}"));
                return finish(c, start);
            }
        }
        let now = Instant::now();
        // A Gy server sends no application requests to a client: only answers count.
        let at = peer.handle_all(&buf[..filled], ms(now), |_, kind, bytes| {
            if kind == Incoming::Answer {
                c.on_answer(bytes, now);
            }
        });
        buf.copy_within(at..filled, 0);
        filled -= at;
        if peer.poll_timeout().is_some_and(|t| t <= ms(now)) {
            peer.handle_timeout(ms(now));
        }
        c.scan_timeouts(now);
    }
}

fn finish(c: Conn<'_>, start: Instant) -> RunReport {
    let mut r = c.report;
    r.elapsed = start.elapsed();
    r
}

/// Runs the load; blocks until done.
pub fn run(spec: &RunSpec) -> RunReport {
    let live = spec.live.clone().unwrap_or_default();
    let live = &*live;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let reports: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.connections.max(1))
            .map(|i| {
                let stop = &stop;
                scope.spawn(move || run_connection(spec, i, live, stop, start))
            })
            .collect();
        // The clock: ends the run at --duration, prints progress each second.
        let mut last = 0u64;
        let mut second = 0u64;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let t = start.elapsed();
            if spec.duration.is_some_and(|d| t >= d) {
                stop.store(true, Ordering::Relaxed);
            }
            if t.as_secs() > second {
                second = t.as_secs();
                let answers = live.answers.load(Ordering::Relaxed);
                if spec.progress {
                    eprintln!(
                        "[{second:>4} s] {:>10} CCR/s  p99 {:>7} us  {:>10} answers  {:>6} errors",
                        answers - last,
                        live.p99_us.swap(0, Ordering::Relaxed),
                        answers,
                        live.errors.load(Ordering::Relaxed)
                    );
                }
                last = answers;
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut r = Conn::new_report();
                    r.connection_errors
                        .push("a connection thread panicked".into());
                    r
                })
            })
            .collect()
    });
    let mut total = Conn::new_report();
    total.elapsed = start.elapsed();
    for r in reports {
        total.requests += r.requests;
        total.answers += r.answers;
        total.check_failures += r.check_failures;
        total.timeouts += r.timeouts;
        total.sessions_started += r.sessions_started;
        total.sessions_completed += r.sessions_completed;
        total.failures.extend(r.failures);
        total.connection_errors.extend(r.connection_errors);
        let _ = total.latency.add(&r.latency);
        for (i, h) in r.per_second.iter().enumerate() {
            while total.per_second.len() <= i {
                total.per_second.push(Conn::second_histogram());
            }
            let _ = total.per_second[i].add(h);
        }
        for (code, n) in r.answers_by_result {
            match total.answers_by_result.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => total.answers_by_result.push((code, n)),
            }
        }
    }
    total.answers_by_result.sort_unstable();
    total
}
