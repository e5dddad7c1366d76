//! One connection's traffic: the sessions it keeps in flight, the request each sends
//! next, and the checks every answer must pass. The event loop (`evloop`) owns the
//! socket and the clock; this module only builds requests and follows answers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId,
    Units,
};
use gyro_engine::diameter::{Header, Message};
use gyro_engine::peer::Peer;
use hdrhistogram::Histogram;

use crate::dataset::{DATA_RATING_GROUPS, SMS_SERVICE_IDENTIFIER, VOICE_RATING_GROUP};
use crate::run::{EventForm, Live, RunReport, RunSpec};

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

pub(crate) struct Conn<'s> {
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
    pub(crate) report: RunReport,
    /// The run's identifier base: End-to-End identifiers and Session-Ids start there.
    base: u32,
    last_timeout_scan: Instant,
    start: Instant,
}

fn result_code(avps: gyro_engine::diameter::AvpIter<'_>) -> Option<u32> {
    avps.flatten()
        .find(|a| a.code == 268 && a.vendor_id == 0)
        .and_then(|a| a.u32().ok())
}

impl<'s> Conn<'s> {
    pub(crate) fn new(
        spec: &'s RunSpec,
        index: usize,
        live: &'s Live,
        stop: &'s AtomicBool,
        start: Instant,
        base: u32,
    ) -> Conn<'s> {
        let window = spec.window.max(1);
        Conn {
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
            base,
            last_timeout_scan: start,
            start,
        }
    }

    /// Requests sent and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Nothing in flight and no session waiting to send.
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_empty() && self.ready.is_empty()
    }

    /// No more sessions will start: the run was stopped, or this connection's share of
    /// `--sessions` has started and every one has ended.
    pub(crate) fn out_of_work(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || (self.spec.sessions.is_some() && self.free.len() == self.sessions.len())
    }

    /// The session that sends next: one whose answer came back, else a new one.
    pub(crate) fn next_session(&mut self) -> Option<usize> {
        match self.ready.pop_front() {
            Some(s) => Some(s),
            None => self.start_session(),
        }
    }

    /// Records how late a scheduled send left (open loop), or that the window held it.
    pub(crate) fn record_lag(&mut self, due: Instant, sent: Instant, held: bool) {
        if held {
            self.report.held_by_window += 1;
            return;
        }
        let us = sent.saturating_duration_since(due).as_micros() as u64;
        self.report.schedule_lag.saturating_record(us);
        let second = sent.saturating_duration_since(self.start).as_secs() as usize;
        if self.report.lag_per_second.len() <= second {
            // A second ended: publish its p99 for the progress line.
            if let Some(h) = self.report.lag_per_second.last() {
                self.live
                    .lag_p99_us
                    .fetch_max(h.value_at_quantile(0.99), Ordering::Relaxed);
            }
        }
        while self.report.lag_per_second.len() <= second {
            self.report.lag_per_second.push(Conn::second_histogram());
        }
        self.report.lag_per_second[second].saturating_record(us);
    }

    pub(crate) fn new_report() -> RunReport {
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
            schedule_lag: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            lag_per_second: Vec::new(),
            held_by_window: 0,
        }
    }

    pub(crate) fn second_histogram() -> Histogram<u64> {
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
        let id = format!(
            "{};{:x};{};{}",
            self.spec.origin_host, self.base, self.index, self.seq
        );
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
    pub(crate) fn send(&mut self, peer: &mut Peer, slot: usize, due: Instant) -> bool {
        let Some(s) = self.sessions[slot].as_ref() else {
            return true;
        };
        // End-to-End identifiers are unique per Origin-Host (RFC 6733 §3), and all
        // connections share one: connection i of C takes i, i + C, i + 2C… from the
        // run's base, which follows the clock faster than any run sends (1/64 of the
        // nanoseconds), so that neither the connections nor two runs one after the other
        // against the same server repeat an identifier the server may still hold.
        let (h2h, _) = peer.next_ids();
        let e2e = self.base.wrapping_add(
            (self.report.requests as u32)
                .wrapping_mul(self.spec.connections.max(1) as u32)
                .wrapping_add(self.index as u32),
        );
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
                let one = Units {
                    service_specific: Some(1),
                    ..Units::default()
                };
                match self.spec.event_form {
                    // TS 32.299 Ro: the service and its units inside an MSCC.
                    EventForm::ThreeGpp => {
                        c.multiple_services_indicator = true;
                        c.mscc_count = 1;
                        c.mscc[0] = Mscc {
                            service_identifier: Some(SMS_SERVICE_IDENTIFIER),
                            requested: Some(one),
                            ..Mscc::default()
                        };
                    }
                    // RFC 8506 single service: both at the top level.
                    EventForm::TopLevel => {
                        c.service_identifier = Some(SMS_SERVICE_IDENTIFIER);
                        c.requested = Some(one);
                    }
                }
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
    pub(crate) fn on_answer(&mut self, bytes: &[u8], now: Instant) {
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
    pub(crate) fn scan_timeouts(&mut self, now: Instant) {
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
