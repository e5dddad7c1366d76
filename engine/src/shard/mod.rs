//! The shard core: everything one shard decides, as a sans-IO state machine in the shape
//! of quinn-proto's `Connection`. Bytes and time go in; actions come out.
//!
//! - `handle_request(now, from, bytes, out)`: a Diameter request a connection of this
//!   shard received (the peer state machine framed it and kept the base protocol).
//!   It goes to the shard that owns its Session-Id (`Action::Post`), or is journaled,
//!   charged, answered and logged here.
//! - `handle_mesh(now, msg, out)`: what another shard sent (a request for a session this
//!   shard owns, the answer to a request this shard forwarded, an escrow message).
//! - `flush(now, out)`: the end of a batch. Escrow messages taken (after the requests at
//!   hand: they have a lower priority), then the log barrier (`WriteOut`, or `Sync` with
//!   the `tick` policy) when anything was appended, then what waited for it: answers and
//!   escrow messages for the other shards.
//! - `handle_timeout(now, out)` when `poll_timeout()` is due: session supervision (Tcc)
//!   with its CDRs, idle escrow slices going home, the `interval` policy's sync.
//! - `top_up`, `add_package` and `confirm`: changes from the operations endpoint.
//! - `replay(kind, seq, payload)`: recovery feeds the log back through the same code.
//!
//! `out` (see `Out`) is a queue of actions for the runtime: append a record to the log,
//! queue an answer on a connection, post to another shard, write out or sync the log.
//! The runtime performs them in order and owns every socket, file, clock and thread;
//! the order of the queue is the journal order (the request before its CDR) and the
//! release order (nothing that depends on a record before the barrier that covers it).
//!
//! A request that the shard's escrow slices cannot cover yet waits ("parked") until a
//! lease for its company arrives, at most `WAITS_MAX` times; then it is decided on what
//! the shard holds.

mod ops;
mod out;

use std::collections::VecDeque;

pub use ops::{KEY_REUSED, LINE_BYTES_MAX, REASON_BYTES_MAX};
pub use out::{Action, Out, Span};

use crate::cdr::{write_cdr, write_expired, Cdr, CdrKind};
use crate::charging::engine::{shard_of, AnswerForm, Bounds, Decision, Engine, Outcome, WAITS_MAX};
use crate::charging::escrow::Envelope;
use crate::charging::invariant::broken;
use crate::diameter::answer::{encode_error_answer, Origin as AnswerOrigin};
use crate::diameter::ccr::{encode_cca, subscription_id_type, Cca, Ccr, RequestType};
use crate::diameter::dict::{AvpId, DEFS};
use crate::diameter::{result_code, FailedAvp, Message, ProtocolError};
use crate::journal::{self, Control, PackageRecord, ReplayError, Replayed, TopUpRecord};
use crate::segment::RecordKind;

/// A connection of a shard: its slot, and the generation that tells a new connection in
/// the same slot from the one a late answer was meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub conn: u32,
    pub gen: u32,
}

/// What shards send each other.
#[derive(Debug)]
pub enum MeshMsg {
    /// A request for the shard that owns its session, from connection `to` of shard
    /// `from`. The buffer comes back with the answer.
    Request {
        from: u16,
        to: ConnRef,
        bytes: Vec<u8>,
    },
    /// The answer to a `Request`, for connection `to` of the receiving shard.
    Answer { to: ConnRef, bytes: Vec<u8> },
    /// An escrow message (see `charging::escrow`).
    Escrow(Envelope),
}

/// When the log is written out or synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPolicy {
    /// Written out at every barrier (the page cache holds it; a crash of the process
    /// loses nothing, a power loss may).
    None,
    /// Written out at every barrier, synced every so many milliseconds.
    Interval(u64),
    /// Synced at every barrier (group commit): nothing is answered before it is on disk.
    Tick,
}

/// What a shard core is.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub shard: u16,
    pub shards: u16,
    /// Origin-Host and Origin-Realm of gyro's answers.
    pub origin_host: String,
    pub origin_realm: String,
    pub log: LogPolicy,
    /// This run of the server, drawn at random at every start: part of the ids of the
    /// records the core makes itself (top-ups, packages), so they never repeat.
    pub run: u64,
}

/// Messages waiting for room in the mesh beyond which a request for another shard is
/// answered 3004 (too busy).
pub const MESH_BACKLOG_MAX: usize = 8192;

/// How often sessions are supervised (Tcc) and idle escrow slices go home.
pub const SUPERVISION_MS: u64 = 1000;

/// Room for one CDR line.
const CDR_ROOM: usize = 64 * 1024;

/// Counters of what the core did (the runtime renders them).
#[derive(Clone, Debug, Default)]
pub struct CoreMetrics {
    /// CCRs by CC-Request-Type (initial, update, termination, event).
    pub ccr: [u64; 4],
    /// Answers by Result-Code (error answers included).
    pub answers: Vec<(u32, u64)>,
    pub expired_sessions: u64,
    pub topups: u64,
    /// Provisioning changes and money corrections made at run time.
    pub provisioned: u64,
    pub adjustments: u64,
    /// Requests sent to the shard owning their session.
    pub forwarded: u64,
    /// Requests that waited for escrow, and those decided after waiting long enough.
    pub waits: u64,
    pub decided_after_waiting: u64,
    /// Escrow messages taken.
    pub escrow_taken: u64,
    /// CDR and balance records appended (what billing gets).
    pub billing_records: u64,
}

impl CoreMetrics {
    fn answer(&mut self, code: u32) {
        match self.answers.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.answers.push((code, 1)),
        }
    }
}

/// Where a request came from, for its answer.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Local(ConnRef),
    Remote { shard: u16, to: ConnRef },
}

/// A request waiting for escrow (its bytes, and how often it waited).
#[derive(Debug)]
struct Parked {
    company: u32,
    origin: Origin,
    bytes: Vec<u8>,
    waits: u32,
}

/// What charging one request came to.
enum Charged {
    /// The answer, in the arena.
    Answer(Span),
    /// Waits for escrow (the company).
    Wait(u32),
}

/// One shard's core. See the module documentation.
#[derive(Debug)]
pub struct ShardCore {
    config: CoreConfig,
    engine: Engine,
    /// The sequence the next appended record gets.
    next_seq: u64,
    /// Records appended since the last barrier.
    unflushed: bool,
    parked: Vec<Parked>,
    /// Answers and escrow messages for other shards, held until the barrier.
    held: Vec<(u16, MeshMsg)>,
    /// Escrow messages from other shards not taken yet (see `flush`).
    escrow_inbox: VecDeque<Envelope>,
    /// Buffers for requests sent to other shards (they come back with the answers).
    pool: Vec<Vec<u8>>,
    /// Escrow messages being routed (scratch).
    mail: Vec<Envelope>,
    /// What the engine decided for the request being charged (reused).
    decision: Box<Decision>,
    /// Messages the runtime has waiting for room in the mesh.
    mesh_backlog: usize,
    next_supervision: u64,
    next_sync: u64,
    metrics: CoreMetrics,
    /// Replaying the log: nothing is appended, answered or sent; the CDR of the last
    /// request replayed is kept until its record is seen (`finish_replay`).
    replaying: bool,
    pending_cdr: Option<Vec<u8>>,
    scratch: Option<Box<Out>>,
}

impl ShardCore {
    /// A core over `engine` (fresh or recovered) whose log goes on at `next_seq`.
    pub fn new(engine: Engine, config: CoreConfig, next_seq: u64, now_ms: u64) -> ShardCore {
        ShardCore {
            next_supervision: now_ms + SUPERVISION_MS,
            next_sync: match config.log {
                LogPolicy::Interval(ms) => now_ms + ms,
                _ => u64::MAX,
            },
            config,
            engine,
            next_seq,
            unflushed: false,
            parked: Vec::new(),
            held: Vec::with_capacity(256),
            escrow_inbox: VecDeque::with_capacity(4096),
            pool: Vec::new(),
            mail: Vec::with_capacity(64),
            decision: Box::default(),
            mesh_backlog: 0,
            metrics: CoreMetrics::default(),
            replaying: false,
            pending_cdr: None,
            scratch: None,
        }
    }

    /// A core that rebuilds `engine`'s state from a log starting at `next_seq`
    /// (`replay`, then `finish_replay`).
    pub fn replaying(engine: Engine, next_seq: u64) -> ShardCore {
        let (shard, shards) = engine.shard();
        let config = CoreConfig {
            shard,
            shards,
            origin_host: String::new(),
            origin_realm: String::new(),
            log: LogPolicy::None,
            run: 0,
        };
        let mut core = ShardCore::new(engine, config, next_seq, 0);
        core.replaying = true;
        core.scratch = Some(Box::default());
        core
    }

    /// This core's state as a standby that follows its log from here on (`replay`):
    /// what was in flight (requests waiting for escrow, answers and messages held for
    /// the barrier, escrow messages not taken, the engine's unsent mail) is dropped, as
    /// a crash drops it.
    pub fn into_standby(mut self) -> ShardCore {
        self.parked.clear();
        self.held.clear();
        self.escrow_inbox.clear();
        self.engine.outbox().for_each(drop);
        self.pending_cdr = None;
        self.replaying = true;
        self.scratch = Some(Box::default());
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn into_engine(self) -> Engine {
        self.engine
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// The sequence the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Requests waiting for escrow.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// How many messages the runtime has waiting for room in the mesh: beyond
    /// `MESH_BACKLOG_MAX`, requests for other shards are answered 3004.
    pub fn set_mesh_backlog(&mut self, n: usize) {
        self.mesh_backlog = n;
    }

    /// A buffer back from the runtime (the bytes of a mesh message it is done with).
    pub fn recycle(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < 4 * MESH_BACKLOG_MAX {
            v.clear();
            self.pool.push(v);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(2048))
    }

    fn append(&mut self, kind: RecordKind, at: Span, out: &mut Out) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unflushed = true;
        if matches!(kind, RecordKind::Cdr | RecordKind::Balance) {
            self.metrics.billing_records += 1;
        }
        out.push(Action::Append { kind, seq, at });
    }

    /// An error answer to `request` in the arena (`None`: the request is not even a
    /// header; nothing can answer it).
    fn error_answer(&mut self, request: &[u8], e: &ProtocolError, out: &mut Out) -> Option<Span> {
        self.metrics.answer(e.result_code);
        let origin = AnswerOrigin {
            host: &self.config.origin_host,
            realm: &self.config.origin_realm,
        };
        out.write(request.len() + 4096, |b| {
            encode_error_answer(request, e, &origin, b)
        })
        .ok()
    }

    /// A request a connection of this shard received.
    pub fn handle_request(&mut self, now_ms: u64, from: ConnRef, bytes: &[u8], out: &mut Out) {
        let Some(msg) = Message::new(bytes) else {
            return;
        };
        // The owner from the Session-Id alone: a request for another shard is decoded
        // (and, if bad, answered) there.
        let owner = if self.config.shards > 1 {
            let code = DEFS[AvpId::SessionId as usize].code;
            msg.avps()
                .map_while(Result::ok)
                .find(|a| a.code == code && a.vendor_id == 0)
                .map_or(self.config.shard, |a| {
                    shard_of(a.data(), self.config.shards)
                })
        } else {
            self.config.shard
        };
        if owner != self.config.shard {
            if self.mesh_backlog >= MESH_BACKLOG_MAX {
                let busy = ProtocolError::new(result_code::TOO_BUSY, FailedAvp::None);
                if let Some(at) = self.error_answer(bytes, &busy, out) {
                    out.push(Action::Answer { to: from, at });
                }
                return;
            }
            let mut v = self.buffer();
            v.extend_from_slice(bytes);
            self.metrics.forwarded += 1;
            out.push(Action::Post {
                to: owner,
                msg: MeshMsg::Request {
                    from: self.config.shard,
                    to: from,
                    bytes: v,
                },
            });
            return;
        }
        // Decoded in place: `Ccr::decode` would move the 2 KiB value out.
        let mut ccr = Ccr::default();
        if let Err(e) = ccr.decode_into(&msg) {
            if let Some(at) = self.error_answer(bytes, &e, out) {
                out.push(Action::Answer { to: from, at });
            }
            return;
        }
        match self.charge(now_ms, &ccr, bytes, 0, out) {
            Charged::Answer(at) => out.push(Action::Answer { to: from, at }),
            Charged::Wait(company) => {
                let mut v = self.buffer();
                v.extend_from_slice(bytes);
                self.parked.push(Parked {
                    company,
                    origin: Origin::Local(from),
                    bytes: v,
                    waits: 1,
                });
            }
        }
    }

    /// Journals, charges and logs one request this shard owns; the answer is left in the
    /// arena. A request that waited `WAITS_MAX` times is decided on what the shard holds.
    fn charge(
        &mut self,
        now_ms: u64,
        ccr: &Ccr<'_>,
        bytes: &[u8],
        waits: u32,
        out: &mut Out,
    ) -> Charged {
        let decided = waits >= WAITS_MAX;
        // The journal first: the request as received, so recovery replays it.
        if !self.replaying {
            let at = out.write(9 + bytes.len(), |b| {
                journal::encode_input_as(now_ms, bytes, decided, b).ok_or(())
            });
            match at {
                Ok(at) => self.append(RecordKind::Input, at, out),
                Err(()) => unreachable!("the arena makes room for the record"),
            }
        }
        let outcome = if decided {
            self.metrics.decided_after_waiting += 1;
            self.engine.decide_into(ccr, now_ms, &mut self.decision)
        } else {
            self.engine.handle_into(ccr, now_ms, &mut self.decision)
        };
        if let Outcome::Wait { company } = outcome {
            self.metrics.waits += 1;
            return Charged::Wait(company);
        }
        let o = &*self.decision;
        // 5031 names the AVP it could not rate (RFC 8506 §9.1); 5004 the units out of
        // bounds (RFC 6733 §7.5).
        let rating_failed = result_code::RATING_FAILED;
        let invalid = result_code::INVALID_AVP_VALUE;
        let mscc_with = |code: u32| o.mscc().iter().position(|m| m.result_code == code);
        let failed_avp = if let Some(i) = mscc_with(rating_failed) {
            crate::diameter::ccr::rating_failed_avp(bytes, Some(i))
        } else if o.result_code == rating_failed {
            crate::diameter::ccr::rating_failed_avp(bytes, None)
        } else if let Some(i) = mscc_with(invalid) {
            crate::diameter::ccr::units_failed_avp(bytes, Some(i))
        } else if o.result_code == invalid {
            crate::diameter::ccr::units_failed_avp(bytes, None)
        } else {
            None
        };
        // A single-service answer carries its service's Validity-Time and
        // Final-Unit-Indication at the top level.
        let (validity_time_s, final_unit_action) = match o.form {
            AnswerForm::TopLevel => (o.mscc[0].validity_time_s, o.mscc[0].final_unit_action),
            AnswerForm::Mscc => (None, None),
        };
        let cca = Cca {
            cost_micros: o.cost_micros,
            check_balance_result: o.check_balance_result,
            granted: o.granted,
            validity_time_s,
            final_unit_action,
            failed_avp,
            ..Cca::answering(
                ccr,
                o.result_code,
                &self.config.origin_host,
                &self.config.origin_realm,
                o.mscc(),
            )
        };
        let answer = out.write(bytes.len() + 16 * 1024, |b| {
            encode_cca(&ccr.header, &cca, b)
        });
        self.metrics.ccr[match ccr.request_type {
            RequestType::Initial => 0,
            RequestType::Update => 1,
            RequestType::Termination => 2,
            RequestType::Event => 3,
        }] += 1;
        self.metrics.answer(o.result_code);
        if outcome == Outcome::Charged {
            let seq = self.next_seq;
            let shard = self.config.shard;
            let (engine, o) = (&self.engine, &*self.decision);
            // Room for the line's fixed parts and every string of the request
            // escaped at its longest (`\u00XX`, six bytes a byte).
            let room = CDR_ROOM + 6 * bytes.len();
            match out.write(room, |b| cdr_line(engine, ccr, o, seq, shard, now_ms, b)) {
                Ok(at) => self.append(RecordKind::Cdr, at, out),
                // A charge without its CDR would be money billing never sees.
                Err(e) => broken(
                    "a charged request's CDR line fits its room",
                    o.company.map_or("", |c| engine.company_id(c)),
                    &e,
                ),
            }
        }
        match answer {
            Ok(at) => Charged::Answer(at),
            // Cannot be with the room given; answered 5012 rather than not at all.
            Err(_) => {
                let e = ProtocolError::new(result_code::UNABLE_TO_COMPLY, FailedAvp::None);
                match self.error_answer(bytes, &e, out) {
                    Some(at) => Charged::Answer(at),
                    None => Charged::Answer(out.copy(&[])),
                }
            }
        }
    }

    /// Sends the answer at `at` to where its request came from; `bytes` is the
    /// request's buffer (it carries a remote answer back).
    fn answer(&mut self, origin: Origin, at: Span, mut bytes: Vec<u8>, out: &mut Out) {
        match origin {
            Origin::Local(to) => {
                out.push(Action::Answer { to, at });
                self.recycle(bytes);
            }
            Origin::Remote { shard, to } => {
                bytes.clear();
                bytes.extend_from_slice(out.bytes(at));
                // Held until what it depends on is in the log.
                self.held.push((shard, MeshMsg::Answer { to, bytes }));
            }
        }
    }

    /// Charges a request held in a buffer (from another shard, or waiting) and answers
    /// it, or parks it again.
    fn run_request(
        &mut self,
        now_ms: u64,
        origin: Origin,
        bytes: Vec<u8>,
        waits: u32,
        out: &mut Out,
    ) {
        let charged = {
            let Some(msg) = Message::new(&bytes) else {
                self.recycle(bytes);
                return;
            };
            let mut ccr = Ccr::default();
            match ccr.decode_into(&msg) {
                Ok(()) => self.charge(now_ms, &ccr, &bytes, waits, out),
                Err(e) => match self.error_answer(&bytes, &e, out) {
                    Some(at) => Charged::Answer(at),
                    None => {
                        self.recycle(bytes);
                        return;
                    }
                },
            }
        };
        match charged {
            Charged::Answer(at) => self.answer(origin, at, bytes, out),
            Charged::Wait(company) => self.parked.push(Parked {
                company,
                origin,
                bytes,
                waits: waits + 1,
            }),
        }
    }

    /// A message from another shard.
    pub fn handle_mesh(&mut self, now_ms: u64, msg: MeshMsg, out: &mut Out) {
        match msg {
            MeshMsg::Request { from, to, bytes } => {
                self.run_request(now_ms, Origin::Remote { shard: from, to }, bytes, 0, out);
            }
            MeshMsg::Answer { to, bytes } => {
                let at = out.copy(&bytes);
                out.push(Action::Answer { to, at });
                self.recycle(bytes);
            }
            // Taken at `flush`, after the requests at hand: escrow work has a lower
            // priority than request handling.
            MeshMsg::Escrow(env) => self.escrow_inbox.push_back(env),
        }
        self.pump(now_ms, out);
    }

    /// An escrow message taken: journaled, then handed to the engine; a lease lets the
    /// company's waiting requests go again.
    fn take_escrow(&mut self, now_ms: u64, env: Envelope, out: &mut Out) {
        let mut rec = [0u8; journal::ESCROW_LEN];
        journal::encode_escrow(now_ms, &env, &mut rec);
        let at = out.copy(&rec);
        self.append(RecordKind::Control, at, out);
        self.metrics.escrow_taken += 1;
        if let Some(company) = self.engine.receive(env, now_ms) {
            let mut i = 0;
            while i < self.parked.len() {
                if self.parked[i].company == company {
                    let p = self.parked.swap_remove(i);
                    self.run_request(now_ms, p.origin, p.bytes, p.waits, out);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Routes the engine's escrow messages: to this shard at once, to the others once
    /// what caused them is in the log (`flush`).
    fn pump(&mut self, now_ms: u64, out: &mut Out) {
        while self.engine.has_mail() {
            let mut mail = std::mem::take(&mut self.mail);
            mail.extend(self.engine.outbox());
            for env in mail.drain(..) {
                if self.replaying {
                    // Sent when the log was written; taken from the `Escrow` records.
                } else if env.to == self.config.shard {
                    self.take_escrow(now_ms, env, out);
                } else {
                    self.held.push((env.to, MeshMsg::Escrow(env)));
                }
            }
            self.mail = mail;
        }
    }

    /// The end of a batch: the escrow messages other shards sent are taken, then the log
    /// barrier, then what waited for it.
    pub fn flush(&mut self, now_ms: u64, out: &mut Out) {
        while let Some(env) = self.escrow_inbox.pop_front() {
            self.take_escrow(now_ms, env, out);
        }
        self.pump(now_ms, out);
        self.barrier(out);
    }

    fn barrier(&mut self, out: &mut Out) {
        if self.unflushed || !self.held.is_empty() {
            self.unflushed = false;
            out.push(match self.config.log {
                LogPolicy::Tick => Action::Sync,
                LogPolicy::None | LogPolicy::Interval(_) => Action::WriteOut,
            });
        }
        for (to, msg) in self.held.drain(..) {
            out.push(Action::Post { to, msg });
        }
    }

    /// When `handle_timeout` wants to run (milliseconds, the clock `now_ms` is on).
    pub fn poll_timeout(&self) -> u64 {
        self.next_supervision.min(self.next_sync)
    }

    /// Session supervision (Tcc) and idle escrow slices going home, once a second; the
    /// `interval` policy's sync.
    pub fn handle_timeout(&mut self, now_ms: u64, out: &mut Out) {
        if now_ms >= self.next_supervision {
            self.next_supervision = now_ms + SUPERVISION_MS;
            self.supervise(now_ms, out);
        }
        if now_ms >= self.next_sync {
            if let LogPolicy::Interval(ms) = self.config.log {
                self.next_sync = now_ms + ms;
                self.unflushed = false;
                out.push(Action::Sync);
            }
        }
    }

    fn supervise(&mut self, now_ms: u64, out: &mut Out) {
        let mut gone: Vec<(String, u32)> = Vec::new();
        let n = self
            .engine
            .expire(now_ms, |id, company| gone.push((id.to_string(), company)));
        self.metrics.expired_sessions += n as u64;
        if self.replaying {
            return;
        }
        if n > 0 || self.engine.has_mail() {
            // Supervision changed balances: the journal says when, for replay.
            let rec = Control::Expired { now_ms }.encode();
            let at = out.copy(&rec);
            self.append(RecordKind::Control, at, out);
        }
        // Billing gets a CDR per session closed without its CCR-T (its reservations
        // went back; nothing was charged).
        for (id, company) in &gone {
            let seq = self.next_seq;
            let (shard, company) = (self.config.shard, self.engine.company_id(*company));
            match out.write(512 + 12 * (id.len() + company.len()), |b| {
                write_expired(id, seq, shard, now_ms, company, b)
            }) {
                Ok(at) => self.append(RecordKind::Cdr, at, out),
                Err(e) => broken("a supervision CDR line fits its room", company, &e),
            }
        }
        self.pump(now_ms, out);
    }

    /// A top-up of `amount` micro-units for company `id`, on the company's owner shard
    /// (`Ok(true)`; `Ok(false)` on the others), or why not. Follow with `confirm`.
    pub fn top_up(
        &mut self,
        now_ms: u64,
        id: &str,
        amount: i64,
        op: Option<crate::charging::engine::OpKey>,
        out: &mut Out,
    ) -> Result<bool, String> {
        let Some(c) = self.engine.company_by_id(id) else {
            return Err(format!("no company {id:?}"));
        };
        if amount <= 0 {
            return Err("amount must be a positive integer (micro-units)".into());
        }
        if self.engine.owner_of(c) != self.config.shard {
            return Ok(false);
        }
        // Made already under this idempotency key: not again.
        if self.seen(op)? {
            return Ok(true);
        }
        // The record first: a top-up that cannot be recorded is not made.
        let (money, _) = self.engine.balance(c);
        let balance = money
            .available
            .checked_add(amount)
            .ok_or("the balance would overflow")?;
        let rec = TopUpRecord {
            seq: self.next_seq,
            shard: self.config.shard,
            run: self.config.run,
            ts_ms: now_ms,
            company: id,
            amount,
            balance,
            op,
        };
        let at = out
            .write(TopUpRecord::room(id.len()), |b| rec.encode(b))
            .map_err(|_| "company id too long".to_string())?;
        if !self.engine.top_up(c, amount) {
            // The record written into the arena is not appended.
            return Err("the balance would overflow".into());
        }
        self.append(RecordKind::Balance, at, out);
        if let Some(op) = op {
            self.engine.keys_mut().insert(
                op,
                now_ms,
                0,
                Vec::new(),
                crate::charging::engine::KEYS_WINDOW_MS,
            );
        }
        self.metrics.topups += 1;
        Ok(true)
    }

    /// A package (an object in the provisioning format) for company `id`, added on
    /// every shard (the owner holds its units), or the HTTP status (400, 404) and why
    /// not. Follow with `confirm`.
    pub fn add_package(
        &mut self,
        now_ms: u64,
        id: &str,
        mut body: Vec<u8>,
        out: &mut Out,
    ) -> Result<(), (u16, String)> {
        let Some(c) = self.engine.company_by_id(id) else {
            return Err((404, format!("no company {id:?}")));
        };
        // The object as one compact line, for the log.
        let compact = {
            let mut copy = body.clone();
            simd_json::to_owned_value(&mut copy)
                .map(|v| simd_json::to_string(&v).unwrap_or_default())
                .map_err(|e| (400, format!("not JSON: {e}")))?
        };
        let (package, company) = crate::provision::parse_package(&mut body).map_err(|errs| {
            let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            (400, list.join("; "))
        })?;
        if company != id {
            return Err((
                400,
                format!("the package names company {company:?}, the path {id:?}"),
            ));
        }
        let rec = PackageRecord {
            seq: self.next_seq,
            shard: self.config.shard,
            run: self.config.run,
            ts_ms: now_ms,
            company: id,
            package: compact.as_bytes(),
            added: Some(package.amount),
        };
        let mut line = vec![0u8; rec.room()];
        let n = rec
            .encode(&mut line)
            .map_err(|_| (400, "the package does not fit a record".to_string()))?;
        line.truncate(n);
        let package_id = package.id.clone();
        if !self.engine.add_package(c, package) {
            return Err((
                400,
                format!("a package {package_id:?} exists already (package ids are unique over every company; change one with POST /provisioning)"),
            ));
        }
        // Billing reads the owner's record; the other shards journal it for replay.
        if self.engine.owner_of(c) == self.config.shard {
            let at = out.copy(&line);
            self.append(RecordKind::Balance, at, out);
        } else {
            let at = out.copy(&Control::Package { line }.encode());
            self.append(RecordKind::Control, at, out);
        }
        Ok(())
    }

    /// Holds requests to `bounds` from now on, journaled so that replay does the same.
    pub fn set_bounds(&mut self, bounds: Bounds, out: &mut Out) {
        self.engine.set_bounds(bounds);
        let at = out.copy(&Control::Bounds(bounds).encode());
        self.append(RecordKind::Control, at, out);
    }

    /// Before a change from the operations endpoint is confirmed: synced (`interval`,
    /// `tick`) or written out (`none`); the escrow messages it caused go.
    pub fn confirm(&mut self, now_ms: u64, out: &mut Out) {
        self.pump(now_ms, out);
        self.unflushed = false;
        out.push(match self.config.log {
            LogPolicy::None => Action::WriteOut,
            LogPolicy::Interval(_) | LogPolicy::Tick => Action::Sync,
        });
        for (to, msg) in self.held.drain(..) {
            out.push(Action::Post { to, msg });
        }
    }

    /// Replays record `seq` of the log through the code that wrote it (recovery). A
    /// request's CDR is kept until the record that follows shows whether the log has it
    /// (a crash can come between the two): see `finish_replay`.
    pub fn replay(
        &mut self,
        kind: RecordKind,
        seq: u64,
        payload: &[u8],
    ) -> Result<Replayed, ReplayError> {
        debug_assert!(self.replaying);
        self.next_seq = seq + 1;
        if kind == RecordKind::Cdr {
            self.pending_cdr = None;
        }
        let mut out = self.scratch.take().unwrap_or_default();
        let r = self.replay_into(kind, payload, &mut out);
        // What replay appended is in the log already (or is the pending CDR).
        self.next_seq = seq + 1;
        // A request's CDR is the one Cdr append its charging made.
        if kind == RecordKind::Input {
            self.pending_cdr = out.actions().iter().find_map(|a| match a {
                Action::Append {
                    kind: RecordKind::Cdr,
                    at,
                    ..
                } => Some(out.bytes(*at).to_vec()),
                _ => None,
            });
        }
        out.clear();
        self.scratch = Some(out);
        r
    }

    fn replay_into(
        &mut self,
        kind: RecordKind,
        payload: &[u8],
        out: &mut Out,
    ) -> Result<Replayed, ReplayError> {
        match kind {
            RecordKind::Input => {
                let (now_ms, request, decided) = journal::decode_input_as(payload)?;
                let msg = Message::new(request).ok_or(ReplayError::Malformed(
                    "input record without a whole request",
                ))?;
                let mut ccr = Ccr::default();
                // A request that does not decode changed nothing when it came either.
                // Its CDR gets the sequence after the request's record, as it did.
                if ccr.decode_into(&msg).is_ok() {
                    let waits = if decided { WAITS_MAX } else { 0 };
                    match self.charge(now_ms, &ccr, request, waits, out) {
                        // The answer went (or was lost) when the request came; a request
                        // that waited then waits for nothing now (its peer asks again).
                        Charged::Answer(_) | Charged::Wait(_) => {}
                    }
                }
                self.pump(now_ms, out);
                Ok(Replayed::Request)
            }
            RecordKind::Control => match Control::decode(payload)? {
                Control::Bounds(b) => {
                    self.engine.set_bounds(b);
                    Ok(Replayed::Nothing)
                }
                Control::Expired { now_ms } => {
                    let before = self.metrics.expired_sessions;
                    self.supervise(now_ms, out);
                    self.pump(now_ms, out);
                    Ok(Replayed::Expired(
                        (self.metrics.expired_sessions - before) as usize,
                    ))
                }
                Control::Escrow { now_ms, envelope } => {
                    self.engine.receive(envelope, now_ms);
                    self.pump(now_ms, out);
                    Ok(Replayed::Escrow)
                }
                Control::Package { line } => self.replay_into(RecordKind::Balance, &line, out),
                Control::Provision { line } => {
                    let r = journal::replay_provision(&mut self.engine, &line);
                    self.pump(0, out);
                    r
                }
                Control::Key {
                    key,
                    ts_ms,
                    status,
                    answer,
                } => {
                    self.engine.keys_mut().insert(
                        key,
                        ts_ms,
                        status,
                        answer,
                        crate::charging::engine::KEYS_WINDOW_MS,
                    );
                    Ok(Replayed::Nothing)
                }
                Control::Provisioned { .. } => Ok(Replayed::Nothing),
            },
            RecordKind::Balance => {
                let r = journal::replay_balance(&mut self.engine, payload);
                // The escrow messages a top-up caused went when it was made: the ones
                // replay makes again are dropped here, as after any other record (a
                // message left in the outbox would go twice after the replay).
                self.pump(0, out);
                r
            }
            _ => Ok(Replayed::Nothing),
        }
    }

    /// The end of replay: the CDR of the last request, if the log lacks it (the crash
    /// came between the request's record and its CDR; the engine has charged it, here as
    /// then, so billing gets its CDR now). The core then runs live.
    pub fn finish_replay(&mut self, out: &mut Out) {
        self.replaying = false;
        self.scratch = None;
        if let Some(line) = self.pending_cdr.take() {
            let at = out.copy(&line);
            self.append(RecordKind::Cdr, at, out);
        }
        self.unflushed = false;
    }
}

/// The CDR line of a charged request into `buf`.
pub fn cdr_line(
    engine: &Engine,
    ccr: &Ccr<'_>,
    o: &Decision,
    seq: u64,
    shard: u16,
    now_ms: u64,
    buf: &mut [u8],
) -> Result<usize, crate::cdr::BufferFull> {
    let mut services = o.services;
    for (i, s) in services.iter_mut().enumerate().take(o.mscc_count) {
        if let (Some(c), Some(p)) = (o.company, o.package[i]) {
            s.package = Some(engine.package_id(c, p));
        }
    }
    let cdr = Cdr {
        kind: CdrKind::Ccr,
        seq,
        shard,
        ts_ms: now_ms,
        ccr,
        msisdn: ccr.subscription(subscription_id_type::END_USER_E164),
        imsi: ccr.subscription(subscription_id_type::END_USER_IMSI),
        company: o.company.map(|c| engine.company_id(c)),
        result_code: o.result_code,
        services: &services[..o.mscc_count],
    };
    write_cdr(&cdr, buf)
}
