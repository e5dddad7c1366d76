//! The log as the engine's journal: what a shard writes besides its CDRs so that its
//! state (balances, packages, open sessions with their reservations, the recent event
//! answers) can be rebuilt after a crash by replaying the log through the shard core
//! (`ShardCore::replay`) over a fresh engine.
//!
//! The engine is deterministic: the same dataset, configuration and inputs in the same
//! order give the same state. So the log carries the inputs, in the order the shard
//! took them:
//!
//! - `Control` `Provisioned` first: a checksum of the dataset snapshot the shard started
//!   from and the engine configuration it decided with.
//! - `Input` for every request the engine handled: the time it was handled (Unix
//!   milliseconds) and the request's bytes as received.
//! - `Control` `Expired` when session supervision closed sessions (or, with several
//!   shards, idle escrow slices went home) at a time.
//! - `Control` `Escrow` for every escrow message the shard received from a shard
//!   (itself included), as it took it. What it sent is not recorded: replaying what it
//!   took sends the same messages again, with the same numbers.
//! - `Balance` records (JSON lines billing reads too) are replayed: top-ups and
//!   corrections (`adjust`) from their `company` and `amount` (and their idempotency
//!   key, `op`), companies created at run time (`company`, with the opening balance)
//!   and packages added or extended (`package`, `added` units) from the object they
//!   carry, through `Engine::provision`.
//! - `Control` `Provision` for a provisioning change that gave no money or units on
//!   this shard (the object, one NDJSON line); `Control` `Key` for the answer given
//!   under an idempotency key (shard 0).
//!
//! CDR lines are outputs, not inputs: replay does not read them.
//!
//! Payloads (little-endian):
//!
//! | record | bytes |
//! | --- | --- |
//! | Input | version u8 (1; 2: handled without waiting for escrow), now_ms u64, the Diameter request |
//! | Control Provisioned | op 1 u8, dataset CRC32C u32, default quota octets u64, seconds u64, units u64, Validity-Time u32, sessions max u64, event answers max u64, shard u16, shards u16 (absent: shard 0 of 1) |
//! | Control Package | op 4 u8, the package's balance record (JSON) |
//! | Control Provision | op 6 u8, the provisioning object (one JSON line) |
//! | Control Key | op 7 u8, key u64, body u64, ts_ms u64, HTTP status u16, the answer's bytes |
//! | Control Bounds | op 5 u8, overuse allowance percent u32, grant max octets u64, seconds u64, units u64, refund max micro-units i64 |
//! | Control Expired | op 2 u8, now_ms u64 |
//! | Control Escrow | op 3 u8, now_ms u64, from u16, to u16, seq u64, ack u64, kind u8 (1 Refill, 2 Lease, 3 Recall, 4 Return, 5 Ack), company u32, bucket u16, amount or want i64, flag u8 (urgent, all in, recalled) |

use crate::charging::engine::{Applied, Bounds, Engine, EngineConfig, OpKey, KEYS_WINDOW_MS};
use crate::charging::escrow::{Envelope, EscrowMsg};
use crate::provision::{parse_change, Change};

const INPUT_VERSION: u8 = 1;
const INPUT_DECIDED: u8 = 2;
const OP_PROVISIONED: u8 = 1;
const OP_EXPIRED: u8 = 2;
const OP_ESCROW: u8 = 3;
const OP_PACKAGE: u8 = 4;
const OP_BOUNDS: u8 = 5;
const OP_PROVISION: u8 = 6;
const OP_KEY: u8 = 7;

/// Writes an Input payload into `out`; returns its length, or `None` if it does not fit.
pub fn encode_input(now_ms: u64, request: &[u8], out: &mut [u8]) -> Option<usize> {
    encode_input_as(now_ms, request, false, out)
}

/// An Input payload; `decided`: the request was handled with `Engine::decide` (it had
/// waited for escrow long enough).
pub fn encode_input_as(
    now_ms: u64,
    request: &[u8],
    decided: bool,
    out: &mut [u8],
) -> Option<usize> {
    let n = 9 + request.len();
    let out = out.get_mut(..n)?;
    out[0] = if decided {
        INPUT_DECIDED
    } else {
        INPUT_VERSION
    };
    out[1..9].copy_from_slice(&now_ms.to_le_bytes());
    out[9..].copy_from_slice(request);
    Some(n)
}

/// A `Control` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Provisioned {
        dataset_crc: u32,
        config: EngineConfig,
        /// This shard's number and how many shards share the companies.
        shard: u16,
        shards: u16,
    },
    Expired {
        now_ms: u64,
    },
    Escrow {
        now_ms: u64,
        envelope: Envelope,
    },
    /// A package bought at run time, on a shard that is not the company's owner: the
    /// same JSON line as the owner's `Balance` record (which billing reads), for replay
    /// only.
    Package {
        line: Vec<u8>,
    },
    /// The bounds requests are held to from here on (at every start, and after every
    /// snapshot so that replay from one finds them).
    Bounds(Bounds),
    /// A provisioning change made at run time that gave no money or units on this
    /// shard: the object, one NDJSON line in the provisioning format (replayed through
    /// `Engine::provision`).
    Provision {
        line: Vec<u8>,
    },
    /// An idempotency key of an operations call, with the answer given (shard 0).
    Key {
        key: OpKey,
        ts_ms: u64,
        status: u16,
        answer: Vec<u8>,
    },
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        match self {
            Control::Provisioned {
                dataset_crc,
                config,
                shard,
                shards,
            } => {
                v.push(OP_PROVISIONED);
                v.extend_from_slice(&dataset_crc.to_le_bytes());
                v.extend_from_slice(&config.default_quota_octets.to_le_bytes());
                v.extend_from_slice(&config.default_quota_seconds.to_le_bytes());
                v.extend_from_slice(&config.default_quota_units.to_le_bytes());
                v.extend_from_slice(&config.validity_time_s.to_le_bytes());
                v.extend_from_slice(&(config.sessions_max as u64).to_le_bytes());
                v.extend_from_slice(&(config.event_answers_max as u64).to_le_bytes());
                v.extend_from_slice(&shard.to_le_bytes());
                v.extend_from_slice(&shards.to_le_bytes());
            }
            Control::Package { line } => {
                v.push(OP_PACKAGE);
                v.extend_from_slice(line);
            }
            Control::Provision { line } => {
                v.push(OP_PROVISION);
                v.extend_from_slice(line);
            }
            Control::Key {
                key,
                ts_ms,
                status,
                answer,
            } => {
                v.push(OP_KEY);
                v.extend_from_slice(&key.key.to_le_bytes());
                v.extend_from_slice(&key.body.to_le_bytes());
                v.extend_from_slice(&ts_ms.to_le_bytes());
                v.extend_from_slice(&status.to_le_bytes());
                v.extend_from_slice(answer);
            }
            Control::Bounds(b) => {
                v.push(OP_BOUNDS);
                v.extend_from_slice(&b.overuse_allowance_percent.to_le_bytes());
                v.extend_from_slice(&b.grant_max_octets.to_le_bytes());
                v.extend_from_slice(&b.grant_max_seconds.to_le_bytes());
                v.extend_from_slice(&b.grant_max_units.to_le_bytes());
                v.extend_from_slice(&b.refund_max_micros.to_le_bytes());
            }
            Control::Expired { now_ms } => {
                v.push(OP_EXPIRED);
                v.extend_from_slice(&now_ms.to_le_bytes());
            }
            Control::Escrow { now_ms, envelope } => {
                let mut b = [0u8; ESCROW_LEN];
                encode_escrow(*now_ms, envelope, &mut b);
                v.extend_from_slice(&b);
            }
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<Control, ReplayError> {
        let u64_at = |i: usize| -> Result<u64, ReplayError> {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(ReplayError::Malformed("control record too short"))
        };
        match b.first() {
            Some(&OP_PROVISIONED) => {
                let crc = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or(ReplayError::Malformed("control record too short"))?;
                let validity = b
                    .get(29..33)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or(ReplayError::Malformed("control record too short"))?;
                // Logs from before several shards: one shard.
                let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
                Ok(Control::Provisioned {
                    shard: u16_at(49).unwrap_or(0),
                    shards: u16_at(51).unwrap_or(1),
                    dataset_crc: crc,
                    config: EngineConfig {
                        default_quota_octets: u64_at(5)?,
                        default_quota_seconds: u64_at(13)?,
                        default_quota_units: u64_at(21)?,
                        validity_time_s: validity,
                        sessions_max: u64_at(33)? as usize,
                        event_answers_max: u64_at(41)? as usize,
                    },
                })
            }
            Some(&OP_EXPIRED) => Ok(Control::Expired { now_ms: u64_at(1)? }),
            Some(&OP_PROVISION) => Ok(Control::Provision {
                line: b[1..].to_vec(),
            }),
            Some(&OP_KEY) => Ok(Control::Key {
                key: OpKey {
                    key: u64_at(1)?,
                    body: u64_at(9)?,
                },
                ts_ms: u64_at(17)?,
                status: b
                    .get(25..27)
                    .map(|s| u16::from_le_bytes([s[0], s[1]]))
                    .ok_or(ReplayError::Malformed("control record too short"))?,
                answer: b[27..].to_vec(),
            }),
            Some(&OP_PACKAGE) => Ok(Control::Package {
                line: b[1..].to_vec(),
            }),
            Some(&OP_BOUNDS) => Ok(Control::Bounds(Bounds {
                overuse_allowance_percent: b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or(ReplayError::Malformed("control record too short"))?,
                grant_max_octets: u64_at(5)?,
                grant_max_seconds: u64_at(13)?,
                grant_max_units: u64_at(21)?,
                refund_max_micros: u64_at(29)? as i64,
            })),
            Some(&OP_ESCROW) => {
                if b.len() != ESCROW_LEN {
                    return Err(ReplayError::Malformed("escrow record length"));
                }
                let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
                let company = u32::from_le_bytes([b[30], b[31], b[32], b[33]]);
                let bucket = u16_at(34);
                let amount = u64_at(36)? as i64;
                let flag = b[44] != 0;
                let msg = match b[29] {
                    1 => EscrowMsg::Refill {
                        company,
                        bucket,
                        want: amount,
                        urgent: flag,
                    },
                    2 => EscrowMsg::Lease {
                        company,
                        bucket,
                        amount,
                        all_in: flag,
                    },
                    3 => EscrowMsg::Recall { company, bucket },
                    4 => EscrowMsg::Return {
                        company,
                        bucket,
                        amount,
                        recalled: flag,
                    },
                    5 => EscrowMsg::Ack,
                    _ => return Err(ReplayError::Malformed("escrow message kind")),
                };
                Ok(Control::Escrow {
                    now_ms: u64_at(1)?,
                    envelope: Envelope {
                        from: u16_at(9),
                        to: u16_at(11),
                        seq: u64_at(13)?,
                        ack: u64_at(21)?,
                        msg,
                    },
                })
            }
            _ => Err(ReplayError::Malformed("unknown control operation")),
        }
    }
}

/// Length of a `Control` `Escrow` payload.
pub const ESCROW_LEN: usize = 45;

/// Writes a `Control` `Escrow` payload (no allocation: the runtime journals every
/// escrow message it takes).
pub fn encode_escrow(now_ms: u64, e: &Envelope, out: &mut [u8; ESCROW_LEN]) {
    let (kind, amount, flag) = match e.msg {
        EscrowMsg::Refill { want, urgent, .. } => (1u8, want, urgent),
        EscrowMsg::Lease { amount, all_in, .. } => (2, amount, all_in),
        EscrowMsg::Recall { .. } => (3, 0, false),
        EscrowMsg::Return {
            amount, recalled, ..
        } => (4, amount, recalled),
        EscrowMsg::Ack => (5, 0, false),
    };
    out[0] = OP_ESCROW;
    out[1..9].copy_from_slice(&now_ms.to_le_bytes());
    out[9..11].copy_from_slice(&e.from.to_le_bytes());
    out[11..13].copy_from_slice(&e.to.to_le_bytes());
    out[13..21].copy_from_slice(&e.seq.to_le_bytes());
    out[21..29].copy_from_slice(&e.ack.to_le_bytes());
    out[29] = kind;
    out[30..34].copy_from_slice(&e.msg.company().to_le_bytes());
    out[34..36].copy_from_slice(&e.msg.bucket().to_le_bytes());
    out[36..44].copy_from_slice(&amount.to_le_bytes());
    out[44] = u8::from(flag);
}

/// Why a record cannot be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    Malformed(&'static str),
    /// A top-up for a company the dataset does not have.
    UnknownCompany(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Malformed(why) => write!(f, "malformed record: {why}"),
            ReplayError::UnknownCompany(c) => write!(f, "top-up of unknown company {c:?}"),
        }
    }
}

/// What replaying one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    Request,
    Expired(usize),
    /// An escrow message taken.
    Escrow,
    /// A top-up or a package added at run time.
    Balance,
    /// An output (CDR) or the provisioning marker: nothing to do.
    Nothing,
}

/// An Input record's time and request bytes.
pub fn decode_input(payload: &[u8]) -> Result<(u64, &[u8]), ReplayError> {
    decode_input_as(payload).map(|(t, r, _)| (t, r))
}

/// An Input record's time, request bytes and whether it was decided without waiting.
pub fn decode_input_as(payload: &[u8]) -> Result<(u64, &[u8], bool), ReplayError> {
    let decided = match payload.first() {
        Some(&INPUT_VERSION) => false,
        Some(&INPUT_DECIDED) => true,
        _ => return Err(ReplayError::Malformed("input record header")),
    };
    if payload.len() < 9 {
        return Err(ReplayError::Malformed("input record header"));
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&payload[1..9]);
    Ok((u64::from_le_bytes(t), &payload[9..], decided))
}

/// Replays a `Balance` record (a top-up, a package added at run time) into `engine`.
/// The other records are replayed by the shard core (`ShardCore::replay`), through
/// the code that wrote them. A change the engine refuses now was made when the record
/// was written: the log and the state disagree, and replay stops.
pub fn replay_balance(engine: &mut Engine, payload: &[u8]) -> Result<Replayed, ReplayError> {
    let known = |engine: &Engine, company: String| {
        engine
            .company_by_id(&company)
            .ok_or(ReplayError::UnknownCompany(company))
    };
    match Balance::decode(payload)? {
        Balance::TopUp {
            company,
            amount,
            ts_ms,
            op,
        } => {
            let c = known(engine, company)?;
            if !engine.top_up(c, amount) {
                return Err(ReplayError::Malformed("a top-up the balance cannot take"));
            }
            if let Some(op) = op {
                engine
                    .keys_mut()
                    .insert(op, ts_ms, 0, Vec::new(), KEYS_WINDOW_MS);
            }
            Ok(Replayed::Balance)
        }
        Balance::Adjust {
            company,
            amount,
            ts_ms,
            op,
        } => {
            let c = known(engine, company)?;
            if engine.adjust(c, amount) != Ok(true) {
                return Err(ReplayError::Malformed(
                    "an adjustment the balance cannot take",
                ));
            }
            if let Some(op) = op {
                engine
                    .keys_mut()
                    .insert(op, ts_ms, 0, Vec::new(), KEYS_WINDOW_MS);
            }
            Ok(Replayed::Balance)
        }
        Balance::Package { company, package } => {
            known(engine, company.clone())?;
            replay_change(engine, &Change::Package { package, company })
        }
        Balance::Company { mut object } => {
            let change = parse_change(&mut object, 1, Some("company"))
                .map_err(|_| ReplayError::Malformed("company record's company"))?;
            replay_change(engine, &change)
        }
        Balance::Other => Ok(Replayed::Nothing),
    }
}

/// Replays a provisioning change, which the engine took when it was made.
pub fn replay_change(engine: &mut Engine, change: &Change) -> Result<Replayed, ReplayError> {
    match engine.provision(change) {
        Ok(Applied::Unchanged) => Ok(Replayed::Nothing),
        Ok(_) => Ok(Replayed::Balance),
        Err(_) => Err(ReplayError::Malformed(
            "a provisioning change the engine refuses now",
        )),
    }
}

/// Replays a `Control::Provision` line.
pub fn replay_provision(engine: &mut Engine, line: &[u8]) -> Result<Replayed, ReplayError> {
    let change = parse_change(&mut line.to_vec(), 1, None)
        .map_err(|_| ReplayError::Malformed("provisioning line"))?;
    replay_change(engine, &change)
}

/// A top-up's `Balance` record: billing reads it as a JSON line, replay credits
/// `amount` again. `balance` is the company's money on its owner shard after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopUpRecord<'a> {
    pub seq: u64,
    pub shard: u16,
    /// The server run that made it (`CoreConfig::run`).
    pub run: u64,
    pub ts_ms: u64,
    pub company: &'a str,
    pub amount: i64,
    pub balance: i64,
    /// The idempotency key it was made under, if any.
    pub op: Option<OpKey>,
}

impl TopUpRecord<'_> {
    /// Room enough for the record of a company id of `company_len` bytes.
    pub fn room(company_len: usize) -> usize {
        256 + 6 * company_len
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, crate::cdr::BufferFull> {
        let mut w = crate::cdr::JsonWriter::new(buf);
        balance_head(
            &mut w,
            "topup",
            (self.shard, self.run, self.seq),
            self.ts_ms,
            self.company,
        );
        w.field_i64("amount", self.amount);
        w.field_i64("balance", self.balance);
        field_op(&mut w, self.op);
        w.end_object();
        w.finish()
    }
}

/// The `op` member of a balance record made under an idempotency key.
fn field_op(w: &mut crate::cdr::JsonWriter<'_>, op: Option<OpKey>) {
    if let Some(op) = op {
        let mut hex = [0u8; 64];
        let hex = crate::cdr::fmt_into(&mut hex, format_args!("{:016x}{:016x}", op.key, op.body));
        w.field_str("op", hex);
    }
}

/// An `op` member back as a key.
fn parse_op(s: &str) -> Option<OpKey> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    Some(OpKey {
        key: u64::from_str_radix(&s[..16], 16).ok()?,
        body: u64::from_str_radix(&s[16..], 16).ok()?,
    })
}

/// A company created at run time, on its owner shard: its opening balance as a
/// balance record billing reads (`amount`), and the company object (`object`) replay
/// provisions again. The other shards journal the object as `Control::Provision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompanyRecord<'a> {
    pub seq: u64,
    pub shard: u16,
    pub run: u64,
    pub ts_ms: u64,
    pub company: &'a str,
    pub amount: i64,
    /// The company object, one JSON line in the provisioning format.
    pub object: &'a [u8],
}

impl CompanyRecord<'_> {
    pub fn room(&self) -> usize {
        256 + 6 * self.company.len() + self.object.len()
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, crate::cdr::BufferFull> {
        let mut w = crate::cdr::JsonWriter::new(buf);
        balance_head(
            &mut w,
            "company",
            (self.shard, self.run, self.seq),
            self.ts_ms,
            self.company,
        );
        w.field_i64("amount", self.amount);
        w.field_raw("object", self.object);
        w.end_object();
        w.finish()
    }
}

/// A correction of a company's money (`POST /companies/{id}/adjust`), on its owner
/// shard: billing reads `amount` (either sign) and `reason`; replay makes it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdjustRecord<'a> {
    pub seq: u64,
    pub shard: u16,
    pub run: u64,
    pub ts_ms: u64,
    pub company: &'a str,
    pub amount: i64,
    pub reason: &'a str,
    /// The company's money on its owner shard after it.
    pub balance: i64,
    pub op: Option<OpKey>,
}

impl AdjustRecord<'_> {
    pub fn room(&self) -> usize {
        256 + 6 * (self.company.len() + self.reason.len())
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, crate::cdr::BufferFull> {
        let mut w = crate::cdr::JsonWriter::new(buf);
        balance_head(
            &mut w,
            "adjust",
            (self.shard, self.run, self.seq),
            self.ts_ms,
            self.company,
        );
        w.field_i64("amount", self.amount);
        w.field_str("reason", self.reason);
        w.field_i64("balance", self.balance);
        field_op(&mut w, self.op);
        w.end_object();
        w.finish()
    }
}

/// The members every balance record starts with: its id, kind, sequence, shard, time
/// and company. The id is `KIND-SHARD-RUN-SEQ` (RUN as 16 hex digits): a run is drawn
/// at random at every start, so an id never comes again, not after a power loss took
/// the last records and their sequence numbers are given again, nor in a new data
/// directory; a record replayed keeps the id it was written with.
fn balance_head(
    w: &mut crate::cdr::JsonWriter<'_>,
    kind: &str,
    (shard, run, seq): (u16, u64, u64),
    ts_ms: u64,
    company: &str,
) {
    let mut id = [0u8; 64];
    let id = crate::cdr::fmt_into(&mut id, format_args!("{kind}-{shard}-{run:016x}-{seq}"));
    w.begin_object();
    w.field_str("id", id);
    w.field_str("kind", kind);
    w.field_u64("seq", seq);
    w.field_u64("shard", u64::from(shard));
    w.field_u64("ts", ts_ms);
    w.field_str("company", company);
}

/// A package bought at run time, as its `Balance` record (on the company's owner shard,
/// which billing reads) or inside a `Control` `Package` record (the other shards).
/// `package` is the package object in the provisioning format, compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackageRecord<'a> {
    pub seq: u64,
    pub shard: u16,
    /// The server run that made it (`CoreConfig::run`).
    pub run: u64,
    pub ts_ms: u64,
    pub company: &'a str,
    pub package: &'a [u8],
    /// Units the record gives: all of a new package's, or what an extension added
    /// (absent in records written before packages could be changed: all of them).
    pub added: Option<u64>,
}

impl PackageRecord<'_> {
    pub fn room(&self) -> usize {
        256 + 6 * self.company.len() + self.package.len()
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, crate::cdr::BufferFull> {
        let mut w = crate::cdr::JsonWriter::new(buf);
        balance_head(
            &mut w,
            "package",
            (self.shard, self.run, self.seq),
            self.ts_ms,
            self.company,
        );
        w.field_raw("package", self.package);
        if let Some(added) = self.added {
            w.field_u64("added", added);
        }
        w.end_object();
        w.finish()
    }
}

/// A `Balance` record as replay reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Balance {
    TopUp {
        company: String,
        amount: i64,
        ts_ms: u64,
        op: Option<OpKey>,
    },
    /// A package added or changed (an upsert by its id).
    Package {
        company: String,
        package: crate::provision::Package,
    },
    /// A company created, with its opening balance: the company object.
    Company { object: Vec<u8> },
    Adjust {
        company: String,
        amount: i64,
        ts_ms: u64,
        op: Option<OpKey>,
    },
    /// A kind replay does not act on.
    Other,
}

impl Balance {
    pub fn decode(payload: &[u8]) -> Result<Balance, ReplayError> {
        use simd_json::prelude::*;
        let mut b = payload.to_vec();
        let v = simd_json::to_borrowed_value(&mut b)
            .map_err(|_| ReplayError::Malformed("balance record is not JSON"))?;
        let company = || {
            v.get("company")
                .and_then(|c| c.as_str())
                .map(str::to_string)
                .ok_or(ReplayError::Malformed("balance record without a company"))
        };
        match v.get("kind").and_then(|k| k.as_str()) {
            Some(kind @ ("topup" | "adjust")) => {
                let company = company()?;
                let amount = v
                    .get("amount")
                    .and_then(|a| a.as_i64())
                    .ok_or(ReplayError::Malformed("balance record without an amount"))?;
                let ts_ms = v.get("ts").and_then(|t| t.as_u64()).unwrap_or(0);
                let op = match v.get("op") {
                    None => None,
                    Some(o) => Some(
                        o.as_str()
                            .and_then(parse_op)
                            .ok_or(ReplayError::Malformed("balance record's op"))?,
                    ),
                };
                Ok(if kind == "topup" {
                    Balance::TopUp {
                        company,
                        amount,
                        ts_ms,
                        op,
                    }
                } else {
                    Balance::Adjust {
                        company,
                        amount,
                        ts_ms,
                        op,
                    }
                })
            }
            Some("company") => Ok(Balance::Company {
                object: v
                    .get("object")
                    .map(|o| simd_json::to_vec(o).unwrap_or_default())
                    .ok_or(ReplayError::Malformed("company record without the company"))?,
            }),
            Some("package") => {
                let mut object = v
                    .get("package")
                    .map(|p| simd_json::to_vec(p).unwrap_or_default())
                    .ok_or(ReplayError::Malformed("package record without the package"))?;
                let (package, _) = crate::provision::parse_package(&mut object)
                    .map_err(|_| ReplayError::Malformed("package record's package"))?;
                Ok(Balance::Package {
                    company: company()?,
                    package,
                })
            }
            _ => Ok(Balance::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_up_record_reads_back_as_it_was_written() {
        let r = TopUpRecord {
            seq: 42,
            shard: 1,
            run: 0xfeed,
            ts_ms: 1_790_000_000_000,
            company: "acme \"east\"",
            amount: 5_000_000,
            balance: 12_000_000,
            op: Some(OpKey {
                key: 0x0123_4567_89ab_cdef,
                body: 7,
            }),
        };
        let mut buf = vec![0u8; TopUpRecord::room(r.company.len())];
        let n = r.encode(&mut buf).expect("fits");
        assert_eq!(
            Balance::decode(&buf[..n]),
            Ok(Balance::TopUp {
                company: "acme \"east\"".into(),
                amount: 5_000_000,
                ts_ms: 1_790_000_000_000,
                op: r.op,
            })
        );
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        assert!(
            text.starts_with("{\"id\":\"topup-1-000000000000feed-42\",\"kind\":\"topup\""),
            "{text}"
        );
        assert!(text.contains("\"balance\":12000000"), "{text}");
        // Too small a buffer is refused, not cut.
        assert!(r.encode(&mut buf[..20]).is_err());
    }

    #[test]
    fn company_adjust_provision_and_key_records_read_back_as_they_were_written() {
        let object = br#"{"type":"company","id":"beta","balance":5000000}"#;
        let r = CompanyRecord {
            seq: 3,
            shard: 1,
            run: 2,
            ts_ms: 1_790_000_000_000,
            company: "beta",
            amount: 5_000_000,
            object,
        };
        let mut buf = vec![0u8; r.room()];
        let n = r.encode(&mut buf).expect("fits");
        let Ok(Balance::Company { object: back }) = Balance::decode(&buf[..n]) else {
            panic!("a company record");
        };
        assert_eq!(
            parse_change(&mut back.clone(), 1, None),
            parse_change(&mut object.to_vec(), 1, None)
        );
        let a = AdjustRecord {
            seq: 4,
            shard: 0,
            run: 2,
            ts_ms: 1_790_000_000_001,
            company: "beta",
            amount: -1500,
            reason: "ticket \"4711\"\n",
            balance: 4_998_500,
            op: None,
        };
        let mut buf = vec![0u8; a.room()];
        let n = a.encode(&mut buf).expect("fits");
        assert_eq!(
            Balance::decode(&buf[..n]),
            Ok(Balance::Adjust {
                company: "beta".into(),
                amount: -1500,
                ts_ms: 1_790_000_000_001,
                op: None,
            })
        );
        let p = Control::Provision {
            line: br#"{"type":"subscriber","msisdn":"1","delete":true}"#.to_vec(),
        };
        assert_eq!(Control::decode(&p.encode()), Ok(p));
        let k = Control::Key {
            key: OpKey { key: 1, body: 2 },
            ts_ms: 3,
            status: 200,
            answer: b"{}".to_vec(),
        };
        assert_eq!(Control::decode(&k.encode()), Ok(k));
        // A key record cut short is refused, not misread.
        assert!(Control::decode(&[OP_KEY, 1, 2, 3]).is_err());
    }

    #[test]
    fn a_package_record_reads_back_as_it_was_written() {
        let object = br#"{"type":"package","id":"extra","company":"acme","unit":"octets","amount":1048576,"rating_groups":[10],"priority":1}"#;
        let r = PackageRecord {
            seq: 7,
            shard: 0,
            run: 1,
            ts_ms: 1_790_000_000_000,
            company: "acme",
            package: object,
            added: Some(1_048_576),
        };
        let mut buf = vec![0u8; r.room()];
        let n = r.encode(&mut buf).expect("fits");
        let (expected, _) =
            crate::provision::parse_package(&mut object.to_vec()).expect("a package");
        assert_eq!(
            Balance::decode(&buf[..n]),
            Ok(Balance::Package {
                company: "acme".into(),
                package: expected
            })
        );
        // Inside a Control record on the other shards.
        let c = Control::Package {
            line: buf[..n].to_vec(),
        };
        assert_eq!(Control::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn an_escrow_record_reads_back_as_it_was_written() {
        let env = Envelope {
            from: 2,
            to: 0,
            seq: 9,
            ack: 8,
            msg: EscrowMsg::Lease {
                company: 3,
                bucket: 1,
                amount: 77,
                all_in: true,
            },
        };
        let c = Control::Escrow {
            now_ms: 5,
            envelope: env,
        };
        assert_eq!(Control::decode(&c.encode()), Ok(c));
        let b = Control::Bounds(Bounds {
            overuse_allowance_percent: 25,
            grant_max_octets: 1 << 40,
            grant_max_seconds: 3_600,
            grant_max_units: 7,
            refund_max_micros: i64::MAX,
        });
        assert_eq!(Control::decode(&b.encode()), Ok(b));
        let (t, req, decided) = decode_input_as(&{
            let mut b = [0u8; 32];
            let n = encode_input_as(3, b"abc", true, &mut b).expect("fits");
            b[..n].to_vec()
        })
        .map(|(t, r, d)| (t, r.to_vec(), d))
        .expect("input");
        assert_eq!((t, req.as_slice(), decided), (3, &b"abc"[..], true));
    }
}
