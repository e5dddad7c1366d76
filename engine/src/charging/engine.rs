//! One shard's credit-control engine: finds the subscriber and its company, keeps each
//! session's reservations, grants and settles through `decide`, answers duplicates with
//! the answer already given, and says what the CCA and the CDR carry. Sans-IO: the
//! caller passes the decoded CCR and the time.
//!
//! Alone (`Engine::new`), a shard holds every balance whole. One of several
//! (`Engine::new_shard`), it grants from escrow slices of each company's balances and
//! owns the remainder of the companies with `company % shards == shard` (see
//! `escrow`): the messages it has to send wait in `outbox`, the ones it receives go to
//! `receive`, and a request its slices cannot cover yet is answered `wait` (nothing
//! changed) and is to be handled again when a lease for its company arrives.

use super::decide::{self, Ask, Grant, Need, Source, Wallet};
use super::escrow::{self, Envelope, EscrowMsg, OwnerAction, OwnerBucket, SliceState, MONEY};
use super::ledger::Bucket;
use super::rating;
use crate::cdr::CdrService;
use crate::diameter::ccr::{
    final_unit_action, subscription_id_type, AnswerMscc, Ccr, Mscc, RequestType, RequestedAction,
    Units,
};
use crate::diameter::limits::{MSCC_MAX, SESSION_ID_SIZE_MAX};
use crate::diameter::result_code as rc;
use crate::peer::DuplicateKey;
use crate::provision::{Dataset, Index, Package, Tariff, Unit};

/// What the engine needs besides the dataset.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EngineConfig {
    /// Granted when a request asks for service without saying how much.
    pub default_quota_octets: u64,
    pub default_quota_seconds: u64,
    pub default_quota_units: u64,
    /// Validity-Time of every grant; sessions silent for twice as long (Tcc) expire.
    pub validity_time_s: u32,
    /// Open sessions the table holds; more are answered 3004 (too busy).
    pub sessions_max: usize,
    /// Event answers remembered to answer retransmissions.
    pub event_answers_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_quota_octets: 10 << 20,
            default_quota_seconds: 600,
            default_quota_units: 1,
            validity_time_s: 600,
            sessions_max: 100_000,
            event_answers_max: 65_536,
        }
    }
}

struct CompanyState {
    money: Bucket,
    credit_limit: i64,
    packages: Vec<(Package, Bucket)>,
    /// Money given back by REFUND_ACCOUNT events (part of `money.credited`).
    refunded: i64,
    /// With several shards: per bucket (money, then each package) this shard's slice
    /// state; empty when the shard holds every balance whole.
    slices: Vec<SliceState>,
    /// Per bucket, the owner's remainder: only on the company's owner shard, and only
    /// with several shards.
    owner: Vec<OwnerBucket>,
}

impl CompanyState {
    fn wallet(&mut self) -> Wallet<'_> {
        let whole = self.slices.is_empty();
        Wallet {
            money: &mut self.money,
            credit_limit: if whole { self.credit_limit } else { 0 },
            packages: &mut self.packages,
            known: if whole {
                decide::ALL
            } else {
                decide::Known::Slices(&self.slices)
            },
        }
    }

    /// This shard's bucket (slice) `b`.
    fn bucket_mut(&mut self, b: u16) -> Option<&mut Bucket> {
        if b == MONEY {
            Some(&mut self.money)
        } else {
            self.packages.get_mut(usize::from(b) - 1).map(|(_, b)| b)
        }
    }

    /// Takes the unreserved part of slice `b` out of it, to send home: it leaves the
    /// slice as if settled elsewhere (`credited` shrinks with it, so the slice stays
    /// conserved). Returns the amount (0 when there is none).
    fn take_home(&mut self, b: u16) -> i64 {
        let Some(bk) = self.bucket_mut(b) else {
            return 0;
        };
        let amount = bk.available.max(0);
        bk.available -= amount;
        bk.credited -= amount;
        amount
    }
}

/// Escrow messages in and out of one shard, numbered per channel.
#[derive(Default)]
struct Mail {
    shard: u16,
    outbox: Vec<Envelope>,
    /// Per peer shard: the last number sent to it, and received from it.
    sent: Vec<u64>,
    received: Vec<u64>,
    /// Sent and not yet known to be delivered (kept for redelivery after a crash).
    retained: Vec<Envelope>,
    /// Per peer shard: a message was taken from it and no envelope has gone back since.
    owe_ack: Vec<bool>,
    counters: EscrowCounters,
}

impl Mail {
    fn send(&mut self, to: u16, msg: EscrowMsg) {
        let t = usize::from(to);
        self.sent[t] += 1;
        let env = Envelope {
            from: self.shard,
            to,
            seq: self.sent[t],
            ack: self.received[t],
            msg,
        };
        match msg {
            EscrowMsg::Refill { .. } => self.counters.refills += 1,
            EscrowMsg::Lease { .. } => self.counters.leases += 1,
            EscrowMsg::Recall { .. } => self.counters.recalls += 1,
            EscrowMsg::Return { .. } => self.counters.returns += 1,
            EscrowMsg::Ack => {}
        }
        self.owe_ack[t] = false;
        self.outbox.push(env);
        if msg != EscrowMsg::Ack {
            self.retained.push(env);
        }
    }

    /// Acknowledges what was taken from shards nothing else went back to.
    fn send_acks(&mut self) {
        for p in 0..self.owe_ack.len() {
            if self.owe_ack[p] {
                self.send(p as u16, EscrowMsg::Ack);
            }
        }
    }

    fn owner_send(&mut self, company: u32, bucket: u16) -> impl FnMut(u16, OwnerAction) + '_ {
        move |to, a| {
            let msg = match a {
                OwnerAction::Lease { amount, all_in } => EscrowMsg::Lease {
                    company,
                    bucket,
                    amount,
                    all_in,
                },
                OwnerAction::Recall => EscrowMsg::Recall { company, bucket },
            };
            self.send(to, msg);
        }
    }
}

/// Escrow messages a shard sent, by kind, and requests that waited for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EscrowCounters {
    pub refills: u64,
    pub leases: u64,
    pub recalls: u64,
    pub returns: u64,
    pub waits: u64,
}

/// How many times a request waits for escrow before it is decided on what its shard
/// holds (`Engine::decide`).
pub const WAITS_MAX: u32 = 8;

/// A slice untouched this long sends its unreserved part home.
pub const SLICE_IDLE_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Reservation {
    ask: Ask,
    grant: Grant,
}

/// One MSCC of the answer a request got, kept compactly: enough to answer the request's
/// duplicate identically.
#[derive(Clone, Copy, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct StoredMscc {
    rating_group: Option<u32>,
    service_identifier: Option<u32>,
    result_code: u32,
    /// The grant's unit and amount, when there was one.
    granted: Option<(Unit, u64)>,
    final_unit: bool,
}

/// The answer a request got.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Stored {
    result_code: u32,
    mscc_count: u8,
    mscc: [StoredMscc; MSCC_MAX],
}

impl Stored {
    /// Records the answer `o` in place: its services' entries are written and those the
    /// previous answer used beyond them cleared, so the value is the same as one built
    /// afresh (snapshots and replays see no leftovers).
    fn record(&mut self, o: &Outcome, units: &[Option<Unit>; MSCC_MAX]) {
        let n = o.mscc().len();
        for (i, m) in o.mscc().iter().enumerate() {
            let amount = m.granted.and_then(|g| {
                g.total_octets
                    .or(g.time_s.map(u64::from))
                    .or(g.service_specific)
            });
            self.mscc[i] = StoredMscc {
                rating_group: m.rating_group,
                service_identifier: m.service_identifier,
                result_code: m.result_code,
                granted: units[i].zip(amount),
                final_unit: m.final_unit_action.is_some(),
            };
        }
        let before = usize::from(self.mscc_count).min(MSCC_MAX);
        if before > n {
            self.mscc[n..before].fill(StoredMscc::default());
        }
        self.result_code = o.result_code;
        self.mscc_count = o.mscc_count as u8;
    }

    /// The answer's MSCCs again, with the Validity-Time every grant carries.
    fn answer(&self, validity_time_s: u32) -> [AnswerMscc; MSCC_MAX] {
        let mut out = [AnswerMscc::default(); MSCC_MAX];
        for (o, m) in out
            .iter_mut()
            .zip(&self.mscc[..usize::from(self.mscc_count)])
        {
            *o = AnswerMscc {
                rating_group: m.rating_group,
                service_identifier: m.service_identifier,
                result_code: m.result_code,
                granted: m.granted.map(|(unit, n)| units_for(unit, n)),
                validity_time_s: m.granted.map(|_| validity_time_s),
                final_unit_action: m.final_unit.then_some(final_unit_action::TERMINATE),
                ..AnswerMscc::default()
            };
        }
        out
    }
}

#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Session {
    id_len: usize,
    id: [u8; SESSION_ID_SIZE_MAX],
    company: u32,
    subscriber: u32,
    last_request: u32,
    last: Stored,
    reservations: [Option<Reservation>; MSCC_MAX],
    expires_ms: u64,
}

/// Open sessions: slots in a vector sized once (untouched slots cost no memory) and an
/// index from the Session-Id's hash to the slot, so memory follows the sessions that
/// are open, not the power-of-two growth of a hash table of whole sessions.
struct SessionTable {
    slots: Vec<Session>,
    free: Vec<u32>,
    index: crate::FastMap<u64, u32>,
    max: usize,
}

impl SessionTable {
    fn new(max: usize) -> SessionTable {
        SessionTable {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            index: crate::FastMap::with_capacity_and_hasher(max, Default::default()),
            max,
        }
    }
    fn len(&self) -> usize {
        self.index.len()
    }
    fn contains_key(&self, key: &u64) -> bool {
        self.index.contains_key(key)
    }
    fn get(&self, key: &u64) -> Option<&Session> {
        self.index.get(key).map(|&i| &self.slots[i as usize])
    }
    /// The slot of the session with this key (see `at` and `at_mut`).
    fn slot_of(&self, key: &u64) -> Option<u32> {
        self.index.get(key).copied()
    }
    fn at(&self, slot: u32) -> &Session {
        &self.slots[slot as usize]
    }
    fn at_mut(&mut self, slot: u32) -> &mut Session {
        &mut self.slots[slot as usize]
    }
    /// The new session's slot; `None` when the table is full.
    fn insert(&mut self, key: u64, s: Session) -> Option<u32> {
        if self.index.len() >= self.max {
            return None;
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = s;
                i
            }
            None => {
                self.slots.push(s);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        Some(slot)
    }
    fn remove(&mut self, key: &u64) {
        if let Some(i) = self.index.remove(key) {
            self.free.push(i);
        }
    }
    /// Keeps the sessions `keep` says to keep.
    fn retain(&mut self, mut keep: impl FnMut(&mut Session) -> bool) {
        let slots = &mut self.slots;
        let free = &mut self.free;
        self.index.retain(|_, &mut i| {
            let kept = keep(&mut slots[i as usize]);
            if !kept {
                free.push(i);
            }
            kept
        });
    }
}

/// The answers to recent events, by (Origin-Host, End-to-End-Identifier) (RFC 6733
/// §6.5): a retransmitted CCR-EVENT, with or without the T flag, gets the same answer
/// and is not charged again. A ring of fixed size; the oldest answer goes first.
struct EventCache {
    ring: Vec<(DuplicateKey, Outcome)>,
    next: usize,
    index: crate::FastMap<DuplicateKey, u32>,
    size: usize,
}

impl EventCache {
    fn new(size: usize) -> EventCache {
        EventCache {
            ring: Vec::with_capacity(size),
            next: 0,
            index: crate::FastMap::with_capacity_and_hasher(size, Default::default()),
            size: size.max(1),
        }
    }
    fn get(&self, key: &DuplicateKey) -> Option<&Outcome> {
        self.index.get(key).map(|&i| &self.ring[i as usize].1)
    }
    fn insert(&mut self, key: DuplicateKey, o: Outcome) {
        if self.ring.len() < self.size {
            self.index.insert(key, self.ring.len() as u32);
            self.ring.push((key, o));
            return;
        }
        let at = self.next;
        self.next = (self.next + 1) % self.size;
        let (old, _) = self.ring[at];
        self.index.remove(&old);
        self.ring[at] = (key, o);
        self.index.insert(key, at as u32);
    }
}

/// What one CCR comes to: the CCA's content and the CDR's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result_code: u32,
    pub subscriber: Option<u32>,
    pub company: Option<u32>,
    pub mscc_count: usize,
    pub mscc: [AnswerMscc; MSCC_MAX],
    pub services: [CdrService<'static>; MSCC_MAX],
    /// PRICE_ENQUIRY: the price in micro-units; CHECK_BALANCE: 0 enough, 1 no credit.
    pub cost_micros: Option<i64>,
    pub check_balance_result: Option<u32>,
    /// The same request was answered before: nothing was changed now.
    pub duplicate: bool,
    /// Per service, the company's package (see `Engine::package_id`) that paid.
    pub package: [Option<u16>; MSCC_MAX],
    /// This shard's escrow slices cannot cover the request yet: nothing was changed,
    /// refills were asked for; handle the request again when a lease for `company`
    /// arrives. No answer and no CDR for now.
    pub wait: bool,
    /// An event without MSCC is answered at the top level: no MSCC, `granted` as the
    /// top-level Granted-Service-Unit. `services` still describes it for the CDR.
    pub top_level: bool,
    pub granted: Option<Units>,
    /// Entries of `mscc`, `services` and `package` from this index on are at their
    /// defaults, so `reset` clears only those before it (see `Engine::handle_into`).
    extent: usize,
}

impl Default for Outcome {
    /// An empty outcome, for `Engine::handle_into` to fill.
    fn default() -> Self {
        Outcome::new(0)
    }
}

impl Outcome {
    fn new(result_code: u32) -> Outcome {
        Outcome {
            result_code,
            subscriber: None,
            company: None,
            mscc_count: 0,
            mscc: [AnswerMscc::default(); MSCC_MAX],
            services: [CdrService::default(); MSCC_MAX],
            cost_micros: None,
            check_balance_result: None,
            duplicate: false,
            package: [None; MSCC_MAX],
            wait: false,
            top_level: false,
            granted: None,
            extent: MSCC_MAX,
        }
    }
    /// Back to `Outcome::new(0)`, rewriting only the per-service entries in use.
    fn reset(&mut self) {
        let n = self.extent.min(MSCC_MAX);
        self.mscc[..n].fill(AnswerMscc::default());
        self.services[..n].fill(CdrService::default());
        self.package[..n].fill(None);
        self.result_code = 0;
        self.subscriber = None;
        self.company = None;
        self.mscc_count = 0;
        self.cost_micros = None;
        self.check_balance_result = None;
        self.duplicate = false;
        self.wait = false;
        self.top_level = false;
        self.granted = None;
        self.extent = 0;
    }
    /// A refusal decided before any service was looked at: `Outcome::new(result_code)`
    /// on an outcome whose per-service entries are untouched since `reset`.
    fn refuse(&mut self, result_code: u32) {
        self.result_code = result_code;
        self.subscriber = None;
        self.company = None;
    }
    /// The MSCCs of the answer (none when the request was answered at the top level).
    pub fn mscc(&self) -> &[AnswerMscc] {
        if self.top_level {
            return &[];
        }
        &self.mscc[..self.mscc_count]
    }
    pub fn services(&self) -> &[CdrService<'static>] {
        &self.services[..self.mscc_count]
    }
}

/// The engine of one shard.
pub struct Engine {
    config: EngineConfig,
    index: Index,
    subscribers: Vec<crate::provision::Subscriber>,
    tariffs: Vec<Tariff>,
    companies: Vec<CompanyState>,
    company_ids: Vec<String>,
    sessions: SessionTable,
    events: EventCache,
    shards: u16,
    mail: Mail,
    /// Inside `decide`.
    no_wait: bool,
    /// Per bucket, scratch for deciding whether a request waits.
    extra: Vec<i64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// The session table's key for a Session-Id: foldhash with a fixed seed, eight bytes at
/// a time (the ids are compared too; two ids with one key are answered 3004). Fixed, so
/// a replay of the journal meets the same keys, and the same collisions, as the live run.
fn session_key(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6779_726f_5365_7373).hash_one(id)
}

/// What each shard's slice of a bucket starts with: half of it spread evenly, the
/// rest left with the owner (so a company's first requests on every shard need no
/// round trip). The same on every shard and on every replay.
fn first_share(amount: i64, shards: u16) -> i64 {
    amount.max(0) / (2 * i64::from(shards))
}

/// The shard that owns a session: its Session-Id's hash, modulo the shards.
pub fn shard_of(session_id: &[u8], shards: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in session_id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mixed (FNV alone barely moves its high bits for a change in the last byte, and
    // Session-Ids often differ only there).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(shards.max(1))) as u16
}

/// The unit of a service: from the units it names, else from the Service-Context-Id
/// (3GPP TS 32.299: 32251 data, 32260 and 32275 voice, 32274 SMS).
pub fn unit_of(m: &Units, service_context_id: &str) -> Unit {
    if m.total_octets.is_some() || m.input_octets.is_some() || m.output_octets.is_some() {
        return Unit::Octets;
    }
    if m.time_s.is_some() {
        return Unit::Seconds;
    }
    if m.service_specific.is_some() {
        return Unit::Units;
    }
    match service_context_id.split('@').next().unwrap_or("") {
        s if s.ends_with("32260") || s.ends_with("32275") => Unit::Seconds,
        s if s.ends_with("32274") => Unit::Units,
        _ => Unit::Octets,
    }
}

fn amount_of(u: &Units, unit: Unit) -> Option<u64> {
    match unit {
        Unit::Octets => u
            .total_octets
            .or_else(|| match (u.input_octets, u.output_octets) {
                (None, None) => None,
                (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
            }),
        Unit::Seconds => u.time_s.map(u64::from),
        Unit::Units => u.service_specific,
    }
}

fn units_for(unit: Unit, amount: u64) -> Units {
    match unit {
        Unit::Octets => Units {
            total_octets: Some(amount),
            ..Units::default()
        },
        Unit::Seconds => Units {
            time_s: Some(u32::try_from(amount).unwrap_or(u32::MAX)),
            ..Units::default()
        },
        Unit::Units => Units {
            service_specific: Some(amount),
            ..Units::default()
        },
    }
}

impl Engine {
    /// Builds the engine over a provisioned dataset, holding every balance whole.
    pub fn new(dataset: Dataset, config: EngineConfig) -> Engine {
        Engine::new_shard(dataset, config, 0, 1)
    }

    /// Builds shard `shard` of `shards` (at most 64): it owns the balances of the
    /// companies with `company % shards == shard`, and starts with a slice of every
    /// company's buckets (`first_share`); leases fill them as requests need.
    pub fn new_shard(dataset: Dataset, config: EngineConfig, shard: u16, shards: u16) -> Engine {
        let shards = shards.clamp(1, 64);
        let multi = shards > 1;
        let index = Index::build(&dataset);
        let cheapest_block = dataset
            .tariffs
            .iter()
            .map(|t| t.price)
            .filter(|p| *p > 0)
            .min()
            .unwrap_or(1);
        let mut companies: Vec<CompanyState> = dataset
            .companies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let owns = multi && i % usize::from(shards) == usize::from(shard);
                CompanyState {
                    money: Bucket::new(if multi {
                        first_share(c.balance, shards)
                    } else {
                        c.balance
                    }),
                    credit_limit: c.credit_limit,
                    packages: Vec::new(),
                    refunded: 0,
                    slices: if multi {
                        vec![SliceState::default()]
                    } else {
                        Vec::new()
                    },
                    owner: if owns {
                        vec![OwnerBucket {
                            min_unit: cheapest_block,
                            ..OwnerBucket::new(
                                c.balance - i64::from(shards) * first_share(c.balance, shards),
                                c.credit_limit,
                            )
                        }]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let sessions = SessionTable::new(config.sessions_max);
        let events = EventCache::new(config.event_answers_max);
        let n = usize::from(shards);
        let mut e = Engine {
            config,
            index,
            company_ids: dataset.companies.iter().map(|c| c.id.clone()).collect(),
            subscribers: dataset.subscribers,
            tariffs: dataset.tariffs,
            companies: Vec::new(),
            sessions,
            events,
            shards,
            no_wait: false,
            extra: Vec::with_capacity(16),
            mail: Mail {
                shard,
                outbox: Vec::with_capacity(1024),
                sent: vec![0; n],
                received: vec![0; n],
                retained: Vec::with_capacity(1024),
                owe_ack: vec![false; n],
                counters: EscrowCounters::default(),
            },
        };
        for p in dataset.packages {
            let c = p.company;
            e.push_package(&mut companies[c as usize], c, p);
        }
        e.companies = companies;
        e
    }

    fn owns(&self, company: u32) -> bool {
        self.shards == 1 || company % u32::from(self.shards) == u32::from(self.mail.shard)
    }

    /// The shard that owns the company's balances.
    pub fn owner_of(&self, company: u32) -> u16 {
        (company % u32::from(self.shards)) as u16
    }

    /// This shard's number and how many there are.
    pub fn shard(&self) -> (u16, u16) {
        (self.mail.shard, self.shards)
    }

    fn push_package(&self, c: &mut CompanyState, company: u32, p: Package) {
        let amount = i64::try_from(p.amount).unwrap_or(i64::MAX);
        if self.shards == 1 {
            c.packages.push((p, Bucket::new(amount)));
            return;
        }
        let share = first_share(amount, self.shards);
        c.packages.push((p, Bucket::new(share)));
        c.slices.push(SliceState::default());
        if self.owns(company) {
            c.owner
                .push(OwnerBucket::new(amount - i64::from(self.shards) * share, 0));
        }
    }

    /// Escrow messages to send (to other shards, or to this one), oldest first.
    pub fn outbox(&mut self) -> std::vec::Drain<'_, Envelope> {
        self.mail.outbox.drain(..)
    }

    /// Whether messages wait in the outbox.
    pub fn has_mail(&self) -> bool {
        !self.mail.outbox.is_empty()
    }

    /// Escrow messages sent, by kind, and requests that waited.
    pub fn escrow_counters(&self) -> EscrowCounters {
        self.mail.counters
    }

    /// The last message number received from `from`.
    pub fn received_from(&self, from: u16) -> u64 {
        self.mail
            .received
            .get(usize::from(from))
            .copied()
            .unwrap_or(0)
    }

    /// Messages sent to `to` after its number `received` (what a crash kept from it).
    pub fn undelivered(&self, to: u16, received: u64) -> impl Iterator<Item = Envelope> + '_ {
        self.mail
            .retained
            .iter()
            .filter(move |e| e.to == to && e.seq > received)
            .copied()
    }

    /// How many sent messages are kept until their receivers acknowledge them.
    pub fn undelivered_count(&self) -> usize {
        self.mail.retained.len()
    }

    /// Handles a message from another shard (or this one). Returns the company when it
    /// brought a lease: requests of that company that waited can be handled again.
    pub fn receive(&mut self, env: Envelope, now_ms: u64) -> Option<u32> {
        let from = usize::from(env.from);
        if from >= self.mail.received.len() || env.seq <= self.mail.received[from] {
            return None; // not ours, or delivered before
        }
        self.mail.received[from] = env.seq;
        if env.msg != EscrowMsg::Ack {
            self.mail.owe_ack[from] = true;
        }
        // What `from` has received from us need not be kept any longer.
        self.mail
            .retained
            .retain(|e| !(usize::from(e.to) == from && e.seq <= env.ack));
        let shards = self.shards;
        let company = env.msg.company();
        let bucket = env.msg.bucket();
        let c = self.companies.get_mut(company as usize)?;
        let b = usize::from(bucket);
        match env.msg {
            EscrowMsg::Refill { want, urgent, .. } => {
                if let Some(o) = c.owner.get_mut(b) {
                    o.refill(
                        shards,
                        env.from,
                        want,
                        urgent,
                        &mut self.mail.owner_send(company, bucket),
                    );
                }
                None
            }
            EscrowMsg::Return {
                amount, recalled, ..
            } => {
                if let Some(o) = c.owner.get_mut(b) {
                    o.returned(
                        shards,
                        env.from,
                        amount,
                        recalled,
                        &mut self.mail.owner_send(company, bucket),
                    );
                }
                None
            }
            EscrowMsg::Lease { amount, all_in, .. } => {
                if let Some(s) = c.slices.get_mut(b) {
                    s.refill_pending = false;
                    s.urgent_pending = false;
                    // An empty lease (nothing to spare, or empty everywhere) leaves a
                    // recalled slice sending home what frees up on it.
                    if amount > 0 {
                        s.returning = false;
                    }
                    s.all_in |= all_in;
                    s.last_used_ms = now_ms;
                }
                if let Some(bk) = c.bucket_mut(bucket) {
                    let _ = bk.credit(amount);
                }
                // Nothing new to decide with after an empty lease.
                (amount > 0 || all_in).then_some(company)
            }
            EscrowMsg::Ack => None,
            EscrowMsg::Recall { .. } => {
                let amount = c.take_home(bucket);
                if let Some(s) = c.slices.get_mut(b) {
                    s.all_in = false;
                    s.returning = true;
                }
                let owner = (company % u32::from(shards)) as u16;
                self.mail.send(
                    owner,
                    EscrowMsg::Return {
                        company,
                        bucket,
                        amount,
                        recalled: true,
                    },
                );
                None
            }
        }
    }

    /// Asks for what `need` says is missing (urgent: a request waits for it).
    fn ask_refill(&mut self, company: u32, need: Need) {
        let (Some(short), Some((b, _, _))) = (need.wanting(), need.draws()) else {
            return;
        };
        let bucket = if b == 0 {
            MONEY
        } else {
            escrow::package_bucket(b - 1)
        };
        let owner = self.owner_of(company);
        let Some(s) = self.companies[company as usize]
            .slices
            .get_mut(usize::from(bucket))
        else {
            return;
        };
        if s.urgent_pending {
            return;
        }
        s.refill_pending = true;
        s.urgent_pending = true;
        self.mail.send(
            owner,
            EscrowMsg::Refill {
                company,
                bucket,
                want: short,
                urgent: true,
            },
        );
    }

    /// After a grant of `amount` from `bucket`: keep the slice above its low-water mark.
    fn keep_up(&mut self, company: u32, bucket: u16, amount: i64, now_ms: u64) {
        let owner = self.owner_of(company);
        let c = &mut self.companies[company as usize];
        let available = match c.bucket_mut(bucket) {
            Some(b) => b.available,
            None => return,
        };
        let Some(s) = c.slices.get_mut(usize::from(bucket)) else {
            return;
        };
        s.last_used_ms = now_ms;
        s.low_water = s.low_water.max(amount.saturating_mul(4));
        if s.all_in || s.refill_pending || available >= s.low_water {
            return;
        }
        s.refill_pending = true;
        let want = s
            .low_water
            .saturating_mul(2)
            .saturating_sub(available.max(0));
        self.mail.send(
            owner,
            EscrowMsg::Refill {
                company,
                bucket,
                want,
                urgent: false,
            },
        );
    }

    /// Slices untouched since `SLICE_IDLE_MS` send their unreserved part home. Returns
    /// how many went.
    fn idle_returns(&mut self, now_ms: u64) -> usize {
        if self.shards == 1 {
            return 0;
        }
        let mut n = 0;
        let shards = u32::from(self.shards);
        for (i, c) in self.companies.iter_mut().enumerate() {
            for b in 0..c.slices.len() {
                let s = c.slices[b];
                if s.last_used_ms == 0 {
                    // Never used: a starting share stays where it was spread (were it
                    // idle since 1970, every starting share would go home at the first
                    // supervision and the next request of each company would wait for
                    // it to come back). A recall still takes it when the company runs
                    // low. Nothing is changed here: a supervision round that sends
                    // nothing changes nothing, so the journal need not record it.
                    continue;
                }
                if s.all_in
                    || s.refill_pending
                    || now_ms.saturating_sub(s.last_used_ms) < SLICE_IDLE_MS
                {
                    continue;
                }
                let bucket = b as u16;
                let amount = c.take_home(bucket);
                if amount == 0 {
                    continue;
                }
                c.slices[b].last_used_ms = now_ms;
                self.mail.send(
                    (i as u32 % shards) as u16,
                    EscrowMsg::Return {
                        company: i as u32,
                        bucket,
                        amount,
                        recalled: false,
                    },
                );
                n += 1;
            }
        }
        n
    }

    /// The company's id.
    pub fn company_id(&self, company: u32) -> &str {
        &self.company_ids[company as usize]
    }

    /// The configuration the engine decides with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes the configuration (after a replay made with the one the log recorded).
    /// Open sessions keep what they were granted.
    pub fn set_config(&mut self, config: EngineConfig) {
        self.config = config;
    }

    /// The company with this id.
    pub fn company_by_id(&self, id: &str) -> Option<u32> {
        self.index.company_by_id.get(id).copied()
    }

    /// How many companies the engine holds.
    pub fn companies(&self) -> usize {
        self.company_ids.len()
    }

    /// The id of a company's package, as `Outcome::package` names it.
    pub fn package_id(&self, company: u32, index: u16) -> &str {
        self.companies
            .get(company as usize)
            .and_then(|c| c.packages.get(usize::from(index)))
            .map_or("", |(p, _)| p.id.as_str())
    }

    /// The company's money and its packages' remaining units as this shard holds
    /// them: whole on a lone shard; with several, this shard's slices, the owner's
    /// remainder counted in `available` on the owner shard (the sum over the shards is
    /// the company's balance).
    pub fn balance(&self, company: u32) -> (Bucket, Vec<(&str, Bucket)>) {
        let c = &self.companies[company as usize];
        let with_remainder = |b: Bucket, i: usize| {
            let r = c.owner.get(i).map_or(0, |o| o.remainder);
            Bucket {
                available: b.available + r,
                credited: b.credited + r,
                ..b
            }
        };
        (
            with_remainder(c.money, 0),
            c.packages
                .iter()
                .enumerate()
                .map(|(i, (p, b))| (p.id.as_str(), with_remainder(*b, i + 1)))
                .collect(),
        )
    }

    /// This shard's escrow state of a company, per bucket (money, then each package):
    /// its slice, the slice's state, and the owner's state on the owner shard.
    pub fn escrow_state(&self, company: u32) -> Vec<(Bucket, SliceState, Option<OwnerBucket>)> {
        let c = &self.companies[company as usize];
        let mut out = Vec::with_capacity(1 + c.packages.len());
        for b in 0..=c.packages.len() {
            let bucket = if b == 0 { c.money } else { c.packages[b - 1].1 };
            out.push((
                bucket,
                c.slices.get(b).copied().unwrap_or_default(),
                c.owner.get(b).copied(),
            ));
        }
        out
    }

    /// Money the company got back through REFUND_ACCOUNT events: what billing nets
    /// against `balance().0.settled` (CDRs of refunds carry a negative cost).
    pub fn refunded(&self, company: u32) -> i64 {
        self.companies
            .get(company as usize)
            .map_or(0, |c| c.refunded)
    }

    /// A package bought at run time: usable by the company's next grant. False when
    /// the company does not exist or already has a package with that id.
    pub fn add_package(&mut self, company: u32, mut package: crate::provision::Package) -> bool {
        let Some(c) = self.companies.get_mut(company as usize) else {
            return false;
        };
        if c.packages.iter().any(|(p, _)| p.id == package.id) {
            return false;
        }
        package.company = company;
        let mut c = std::mem::replace(
            c,
            CompanyState {
                money: Bucket::default(),
                credit_limit: 0,
                packages: Vec::new(),
                refunded: 0,
                slices: Vec::new(),
                owner: Vec::new(),
            },
        );
        self.push_package(&mut c, company, package);
        self.companies[company as usize] = c;
        true
    }

    /// A top-up: visible to the company's next grant. With several shards, made on the
    /// company's owner shard (false elsewhere): the remainder grows, and goes on to the
    /// shard holding the money all in, if one does.
    pub fn top_up(&mut self, company: u32, micros: i64) -> bool {
        if micros < 0 {
            return false;
        }
        let Some(c) = self.companies.get_mut(company as usize) else {
            return false;
        };
        if self.shards == 1 {
            return c.money.credit(micros).is_ok();
        }
        let Some(o) = c.owner.get_mut(usize::from(MONEY)) else {
            return false;
        };
        if o.remainder.checked_add(micros).is_none() {
            return false;
        }
        o.credit(micros, &mut self.mail.owner_send(company, MONEY));
        true
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    fn find_subscriber(&self, ccr: &Ccr<'_>) -> Option<u32> {
        let by = |t: u32| ccr.subscription(t);
        by(subscription_id_type::END_USER_E164)
            .and_then(|m| self.index.subscriber_by_msisdn(m))
            .or_else(|| {
                by(subscription_id_type::END_USER_IMSI)
                    .and_then(|i| self.index.subscriber_by_imsi(i))
            })
    }

    fn ask(&self, ccr: &Ccr<'_>, m: &Mscc, now_ms: u64) -> Ask {
        let named = m.requested.or(m.used).unwrap_or_default();
        let unit = unit_of(&named, ccr.service_context_id);
        let default = match unit {
            Unit::Octets => self.config.default_quota_octets,
            Unit::Seconds => self.config.default_quota_seconds,
            Unit::Units => self.config.default_quota_units,
        };
        let units = m
            .requested
            .and_then(|r| amount_of(&r, unit))
            .unwrap_or(default);
        Ask {
            unit,
            rating_group: m.rating_group,
            service_identifier: m.service_identifier.or(ccr.service_identifier),
            units,
            now_s: (now_ms / 1000) as i64,
        }
    }

    /// Handles a request that waited for escrow long enough: decided on what this
    /// shard holds now (what is missing here is missing), never `wait`. Requests that
    /// need several buckets of a company short everywhere can otherwise take them
    /// from each other's shards in turn; this bounds the wait.
    pub fn decide(&mut self, ccr: &Ccr<'_>, now_ms: u64) -> Outcome {
        let mut o = Outcome::new(0);
        self.decide_into(ccr, now_ms, &mut o);
        o
    }

    /// As `decide`, into `o` (see `handle_into`).
    pub fn decide_into(&mut self, ccr: &Ccr<'_>, now_ms: u64, o: &mut Outcome) {
        self.no_wait = true;
        self.handle_into(ccr, now_ms, o);
        self.no_wait = false;
    }

    /// Handles one decoded CCR at `now_ms` (Unix milliseconds).
    pub fn handle(&mut self, ccr: &Ccr<'_>, now_ms: u64) -> Outcome {
        let mut o = Outcome::new(0);
        self.handle_into(ccr, now_ms, &mut o);
        o
    }

    /// As `handle`, into an outcome the caller keeps from one request to the next: the
    /// result is the same, but only the entries the previous request used are cleared
    /// (an `Outcome` is about 2 KiB; the hot path neither builds nor moves one).
    pub fn handle_into(&mut self, ccr: &Ccr<'_>, now_ms: u64, o: &mut Outcome) {
        o.reset();
        // Nothing below writes a per-service entry at or beyond this index, except by
        // replacing the whole outcome (which then says every entry may be in use).
        o.extent = ccr.mscc().len().max(1);
        let key = session_key(ccr.session_id);
        // The open session this request belongs to, if any: a repeated
        // CC-Request-Number gets the same answer and changes nothing; a CCR-U or CCR-T
        // is charged to the session's subscriber, whose Subscription-Id the CCR-I
        // carried (RFC 8506 makes it optional after that).
        let mut open = None;
        if let Some(slot) = self.sessions.slot_of(&key) {
            let s = self.sessions.at(slot);
            if &s.id[..s.id_len] == ccr.session_id.as_bytes() {
                if s.last_request == ccr.request_number {
                    o.result_code = s.last.result_code;
                    o.mscc = s.last.answer(self.config.validity_time_s);
                    o.extent = MSCC_MAX;
                    o.mscc_count = usize::from(s.last.mscc_count);
                    o.subscriber = Some(s.subscriber);
                    o.company = Some(s.company);
                    o.duplicate = true;
                    return;
                }
                open = Some((s.subscriber, s.company, slot));
            }
        }
        let continues = matches!(
            ccr.request_type,
            RequestType::Update | RequestType::Termination
        );
        let (subscriber, company) = match open {
            Some((subscriber, company, _)) if continues => (subscriber, company),
            _ => {
                let Some(subscriber) = self.find_subscriber(ccr) else {
                    return o.refuse(rc::USER_UNKNOWN);
                };
                (subscriber, self.subscribers[subscriber as usize].company)
            }
        };
        match ccr.request_type {
            RequestType::Event => {
                let key = DuplicateKey::new(ccr.origin_host, ccr.header.end_to_end);
                if let Some(done) = self.events.get(&key) {
                    *o = Outcome {
                        duplicate: true,
                        ..*done
                    };
                    return;
                }
                *o = self.event(ccr, subscriber, company, now_ms);
                if !o.wait {
                    self.events.insert(key, *o);
                }
            }
            RequestType::Initial | RequestType::Update | RequestType::Termination => {
                let slot = open.map(|(_, _, slot)| slot);
                self.session(ccr, key, slot, subscriber, company, now_ms, o)
            }
        }
    }

    /// A CCR-I, CCR-U or CCR-T of session `key`, open already in `slot` if it has one.
    #[allow(clippy::too_many_arguments)]
    fn session(
        &mut self,
        ccr: &Ccr<'_>,
        key: u64,
        slot: Option<u32>,
        subscriber: u32,
        company: u32,
        now_ms: u64,
        o: &mut Outcome,
    ) {
        o.result_code = rc::SUCCESS;
        o.subscriber = Some(subscriber);
        o.company = Some(company);
        let exists = slot.is_some();
        let mut asks = [None; MSCC_MAX];
        for (i, m) in ccr.mscc().iter().enumerate() {
            asks[i] = Some(self.ask(ccr, m, now_ms));
        }
        if self.shards > 1 && !self.no_wait && (exists || ccr.request_type == RequestType::Initial)
        {
            if let Some(w) = self.session_wait(ccr, &asks, key, exists, company) {
                *o = w;
                return;
            }
        }
        let slot = match slot {
            Some(slot) => slot,
            None => {
                if ccr.request_type != RequestType::Initial {
                    return o.refuse(rc::UNKNOWN_SESSION_ID);
                }
                if self.sessions.len() >= self.config.sessions_max
                    || self.sessions.contains_key(&key)
                {
                    return o.refuse(rc::TOO_BUSY);
                }
                let mut id = [0u8; SESSION_ID_SIZE_MAX];
                let n = ccr.session_id.len().min(SESSION_ID_SIZE_MAX);
                id[..n].copy_from_slice(&ccr.session_id.as_bytes()[..n]);
                let inserted = self.sessions.insert(
                    key,
                    Session {
                        id_len: n,
                        id,
                        company,
                        subscriber,
                        last_request: ccr.request_number,
                        last: Stored {
                            result_code: 0,
                            mscc_count: 0,
                            mscc: [StoredMscc::default(); MSCC_MAX],
                        },
                        reservations: [None; MSCC_MAX],
                        expires_ms: 0,
                    },
                );
                let Some(slot) = inserted else {
                    return o.refuse(rc::TOO_BUSY);
                };
                slot
            }
        };
        let tariffs = &self.tariffs;
        let validity = self.config.validity_time_s;
        // Session state and the company's wallet are borrowed apart.
        let session = self.sessions.at_mut(slot);
        let c = &mut self.companies[company as usize];
        let mut wallet = c.wallet();
        let mut drawn = [None; MSCC_MAX];
        let (mut granted_any, mut all_4012) = (false, true);
        // The usage each service reports settles first...
        for (i, m) in ccr.mscc().iter().enumerate() {
            let Some(ask) = asks[i] else { continue };
            let service = &mut o.services[i];
            *service = CdrService {
                rating_group: m.rating_group,
                service_identifier: ask.service_identifier,
                unit: Some(ask.unit),
                reporting_reason: m.reporting_reason,
                ..CdrService::default()
            };
            // Settle what this service used against its open reservation.
            let used = m.used.and_then(|u| amount_of(&u, ask.unit)).unwrap_or(0);
            let slot = session.reservations.iter().position(|r| {
                r.is_some_and(|r| {
                    r.ask.rating_group == ask.rating_group
                        && r.ask.service_identifier == ask.service_identifier
                })
            });
            if let Some(j) = slot {
                if let Some(r) = session.reservations[j].take() {
                    if let Ok(charge) = decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, used)
                    {
                        service.used = used;
                        service.cost = charge.micros;
                        service.package_units = charge.package_units;
                        service.overuse = charge.overuse > 0;
                        if let Some(Source::Package { index, .. }) = r.grant.source {
                            o.package[i] = u16::try_from(index).ok();
                        }
                    }
                }
            } else if used > 0 {
                // Usage with nothing reserved (after a restart, say) is charged all the same.
                let none = Grant {
                    result_code: rc::SUCCESS,
                    units: 0,
                    source: None,
                    final_unit: false,
                };
                if let Ok(charge) = decide::settle(&mut wallet, tariffs, &ask, &none, used) {
                    service.used = used;
                    service.cost = charge.micros;
                    service.overuse = true;
                }
            }
        }
        // Then the grants: what the request's usage gave back is there to grant from.
        for (i, m) in ccr.mscc().iter().enumerate() {
            let Some(ask) = asks[i] else { continue };
            let service = &mut o.services[i];
            let mut answer = AnswerMscc {
                rating_group: m.rating_group,
                service_identifier: m.service_identifier,
                result_code: rc::SUCCESS,
                ..AnswerMscc::default()
            };
            let wants_more = ccr.request_type != RequestType::Termination
                && (m.requested.is_some()
                    || (ccr.request_type == RequestType::Initial && m.used.is_none()));
            // A session holds at most MSCC_MAX open reservations; one more is refused
            // rather than granted without a place to settle it.
            let free = session.reservations.iter().position(Option::is_none);
            if wants_more && free.is_none() {
                answer.result_code = rc::UNABLE_TO_COMPLY;
                all_4012 = false;
            } else if let (true, Some(free)) = (wants_more, free) {
                service.requested = ask.units;
                match decide::grant(&mut wallet, tariffs, &ask) {
                    Ok(g) => {
                        answer.result_code = g.result_code;
                        if g.result_code == rc::SUCCESS {
                            granted_any = true;
                            all_4012 = false;
                            answer.granted = Some(units_for(ask.unit, g.units));
                            answer.validity_time_s = Some(validity);
                            if g.final_unit {
                                answer.final_unit_action = Some(final_unit_action::TERMINATE);
                            }
                            service.granted = g.units;
                            drawn[i] = g.source;
                            session.reservations[free] = Some(Reservation { ask, grant: g });
                        } else if g.result_code != rc::CREDIT_LIMIT_REACHED {
                            all_4012 = false;
                        }
                    }
                    Err(_) => answer.result_code = rc::UNABLE_TO_COMPLY,
                }
            } else {
                all_4012 = false;
                granted_any = true;
            }
            service.result_code = answer.result_code;
            o.mscc[i] = answer;
        }
        o.mscc_count = ccr.mscc().len();
        if o.mscc_count > 0 && !granted_any {
            o.result_code = if all_4012 {
                rc::CREDIT_LIMIT_REACHED
            } else {
                o.mscc[0].result_code
            };
        }
        // A CCR-T ends the session; so does a CCR-I refused at the command level (RFC
        // 8506 §5.1: the client does not go on with a session its CCR-I failed, so
        // keeping it would only hold a slot until Tcc).
        let failed_initial =
            ccr.request_type == RequestType::Initial && o.result_code != rc::SUCCESS;
        if ccr.request_type == RequestType::Termination || failed_initial {
            // Whatever is still reserved goes back.
            for r in session.reservations.iter_mut().filter_map(Option::take) {
                let _ = decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, 0);
            }
            self.sessions.remove(&key);
        } else {
            session.last_request = ccr.request_number;
            let mut units = [None; MSCC_MAX];
            for (u, a) in units.iter_mut().zip(asks.iter()) {
                *u = a.map(|a| a.unit);
            }
            session.last.record(o, &units);
            session.expires_ms = now_ms + 2 * 1000 * u64::from(validity);
        }
        if self.shards > 1 {
            for d in drawn.iter().flatten() {
                self.drew(company, d, now_ms);
            }
            self.send_home(company);
        }
    }

    /// A recalled slice sends home what freed up on it.
    fn send_home(&mut self, company: u32) {
        let owner = self.owner_of(company);
        let c = &mut self.companies[company as usize];
        for b in 0..c.slices.len() {
            if !c.slices[b].returning {
                continue;
            }
            let bucket = b as u16;
            let amount = c.take_home(bucket);
            if amount == 0 {
                continue;
            }
            self.mail.send(
                owner,
                EscrowMsg::Return {
                    company,
                    bucket,
                    amount,
                    recalled: false,
                },
            );
        }
    }

    /// Slices were drawn on: keep them above their low-water marks.
    fn drew(&mut self, company: u32, source: &Source, now_ms: u64) {
        match *source {
            Source::Package { index, units } => self.keep_up(
                company,
                escrow::package_bucket(index),
                i64::try_from(units).unwrap_or(i64::MAX),
                now_ms,
            ),
            Source::Money { micros, .. } => self.keep_up(company, MONEY, micros, now_ms),
        }
    }

    /// With several shards: whether this shard's slices can decide the request. If
    /// not, refills are asked for and the answer is `wait` (nothing changed).
    fn session_wait(
        &mut self,
        ccr: &Ccr<'_>,
        asks: &[Option<Ask>; MSCC_MAX],
        key: u64,
        exists: bool,
        company: u32,
    ) -> Option<Outcome> {
        if ccr.request_type == RequestType::Termination {
            return None;
        }
        // What settling this request's usage gives back first, per bucket, then less
        // what the request's earlier services take (a buffer kept for this: no
        // allocation once it is as large as the most buckets a company has).
        let mut extra = std::mem::take(&mut self.extra);
        extra.clear();
        extra.resize(1 + self.companies[company as usize].packages.len(), 0);
        let released = &mut extra;
        let mut needs = [Need::Local; MSCC_MAX];
        let mut k = 0;
        {
            let tariffs = &self.tariffs;
            let session = if exists {
                self.sessions.get(&key)
            } else {
                None
            };
            for (m, ask) in ccr.mscc().iter().zip(asks) {
                let Some(ask) = ask else { continue };
                let Some(s) = session else { break };
                let Some(r) = s.reservations.iter().flatten().find(|r| {
                    r.ask.rating_group == ask.rating_group
                        && r.ask.service_identifier == ask.service_identifier
                }) else {
                    continue;
                };
                let used = m.used.and_then(|u| amount_of(&u, ask.unit)).unwrap_or(0);
                match r.grant.source {
                    Some(Source::Money { tariff, micros }) => {
                        let back = micros - rating::cost(&tariffs[tariff], used);
                        released[0] += back.max(0);
                    }
                    Some(Source::Package { index, units }) if index + 1 < released.len() => {
                        released[index + 1] += units.saturating_sub(used) as i64;
                    }
                    _ => {}
                }
            }
            // Only the services that ask for more draw on anything.
            let wanting = ccr.mscc().iter().zip(asks).filter_map(|(m, a)| {
                let wants_more = m.requested.is_some()
                    || (ccr.request_type == RequestType::Initial && m.used.is_none());
                a.filter(|_| wants_more)
            });
            let c = &mut self.companies[company as usize];
            let w = c.wallet();
            // The services of one request draw on the buckets one after the other:
            // each sees what the ones before it took.
            let extra = released;
            for ask in wanting {
                let n = decide::need(&w, tariffs, &ask, extra);
                let Some((b, amount, known)) = n.draws() else {
                    continue;
                };
                if n.wanting().is_some() && k < needs.len() {
                    needs[k] = n;
                    k += 1;
                }
                if b >= extra.len() {
                    continue;
                }
                let have = if b == 0 {
                    w.money.available
                } else {
                    w.packages.get(b - 1).map_or(0, |p| p.1.available)
                } + extra[b];
                extra[b] -= if known {
                    amount.min(have.max(0))
                } else {
                    amount
                };
            }
        }
        self.extra = extra;
        (k > 0).then(|| self.wait_for(company, &needs))
    }

    /// Asks for every missing part and answers `wait`.
    fn wait_for(&mut self, company: u32, needs: &[Need]) -> Outcome {
        for n in needs {
            self.ask_refill(company, *n);
        }
        self.mail.counters.waits += 1;
        let mut o = Outcome::new(0);
        o.company = Some(company);
        o.wait = true;
        o
    }

    /// An event's answer: as the request asked, in an MSCC or at the top level (RFC
    /// 8506 §6.3: a Granted-Service-Unit for what was debited).
    fn event(&mut self, ccr: &Ccr<'_>, subscriber: u32, company: u32, now_ms: u64) -> Outcome {
        let mut o = self.event_charge(ccr, subscriber, company, now_ms);
        let s = o.services[0];
        let debited = ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting)
            == RequestedAction::DirectDebiting
            && s.result_code == rc::SUCCESS;
        let granted = match s.unit {
            Some(unit) if debited => Some(units_for(unit, s.granted)),
            _ => None,
        };
        if ccr.mscc().is_empty() {
            o.top_level = true;
            o.granted = granted;
        } else {
            o.mscc[0] = AnswerMscc {
                rating_group: s.rating_group,
                service_identifier: s.service_identifier,
                result_code: if s.result_code == 0 {
                    o.result_code
                } else {
                    s.result_code
                },
                granted,
                ..AnswerMscc::default()
            };
        }
        o
    }

    fn event_charge(
        &mut self,
        ccr: &Ccr<'_>,
        subscriber: u32,
        company: u32,
        now_ms: u64,
    ) -> Outcome {
        let mut o = Outcome::new(rc::SUCCESS);
        o.subscriber = Some(subscriber);
        o.company = Some(company);
        // The single service of an event: the top-level RSU (or the first MSCC).
        let m = ccr.mscc().first().copied().unwrap_or(Mscc {
            rating_group: None,
            service_identifier: ccr.service_identifier,
            requested: ccr.requested,
            used: ccr.used,
            reporting_reason: None,
        });
        let ask = self.ask(ccr, &m, now_ms);
        let action = ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        if self.shards > 1
            && !self.no_wait
            && matches!(
                action,
                RequestedAction::DirectDebiting | RequestedAction::CheckBalance
            )
        {
            let c = &mut self.companies[company as usize];
            let w = c.wallet();
            let mut n = decide::need(&w, &self.tariffs, &ask, &[]);
            if action == RequestedAction::CheckBalance {
                // A balance check asks about money only.
                n = match decide::need(
                    &Wallet {
                        packages: &mut [],
                        ..w
                    },
                    &self.tariffs,
                    &ask,
                    &[],
                ) {
                    m @ Need::Money { .. } => m,
                    _ => Need::Local,
                };
            }
            if n.wanting().is_some() {
                return self.wait_for(company, &[n]);
            }
        }
        let mut refunded = 0;
        let mut drawn = None;
        let tariffs = &self.tariffs;
        let c = &mut self.companies[company as usize];
        let mut wallet = c.wallet();
        let tariff = ask
            .rating_group
            .and_then(|rg| {
                tariffs
                    .iter()
                    .find(|t| t.rating_group == Some(rg) && t.unit == ask.unit)
            })
            .or_else(|| {
                ask.service_identifier.and_then(|si| {
                    tariffs
                        .iter()
                        .find(|t| t.service_identifier == Some(si) && t.unit == ask.unit)
                })
            });
        o.mscc_count = 1;
        o.services[0] = CdrService {
            rating_group: ask.rating_group,
            service_identifier: ask.service_identifier,
            unit: Some(ask.unit),
            requested: ask.units,
            ..CdrService::default()
        };
        match action {
            RequestedAction::DirectDebiting => match decide::grant(&mut wallet, tariffs, &ask) {
                Ok(g) if g.result_code == rc::SUCCESS && g.units >= ask.units => {
                    drawn = g.source;
                    let charge = decide::settle(&mut wallet, tariffs, &ask, &g, ask.units);
                    let charge = charge.unwrap_or_default();
                    o.services[0].granted = g.units;
                    o.services[0].used = ask.units;
                    o.services[0].cost = charge.micros;
                    o.services[0].package_units = charge.package_units;
                    o.services[0].result_code = rc::SUCCESS;
                    if let Some(Source::Package { index, .. }) = g.source {
                        o.package[0] = u16::try_from(index).ok();
                    }
                }
                Ok(g) => {
                    // Not enough for the whole event: nothing is taken.
                    if g.result_code == rc::SUCCESS {
                        let _ = decide::settle(&mut wallet, tariffs, &ask, &g, 0);
                    }
                    let code = if g.result_code == rc::SUCCESS {
                        rc::CREDIT_LIMIT_REACHED
                    } else {
                        g.result_code
                    };
                    o.result_code = code;
                    o.services[0].result_code = code;
                }
                Err(_) => o.result_code = rc::UNABLE_TO_COMPLY,
            },
            RequestedAction::RefundAccount => match tariff {
                Some(t) => {
                    let micros = rating::cost(t, ask.units);
                    match wallet.money.credit(micros) {
                        Ok(()) => {
                            refunded = micros;
                            o.services[0].cost = -micros;
                            o.services[0].result_code = rc::SUCCESS;
                        }
                        Err(_) => o.result_code = rc::UNABLE_TO_COMPLY,
                    }
                }
                None => o.result_code = rc::RATING_FAILED,
            },
            RequestedAction::CheckBalance => {
                let enough = match tariff {
                    Some(t) => {
                        rating::affordable_units(
                            t,
                            wallet.money.available.saturating_add(wallet.credit_limit),
                        ) >= ask.units
                    }
                    None => false,
                };
                o.check_balance_result = Some(if enough { 0 } else { 1 });
                o.services[0].result_code = rc::SUCCESS;
            }
            RequestedAction::PriceEnquiry => match tariff {
                Some(t) => {
                    o.cost_micros = Some(rating::cost(t, ask.units));
                    o.services[0].result_code = rc::SUCCESS;
                }
                None => o.result_code = rc::RATING_FAILED,
            },
        }
        c.refunded = c.refunded.saturating_add(refunded);
        if self.shards > 1 {
            if let Some(d) = drawn {
                self.drew(company, &d, now_ms);
            }
            self.send_home(company);
        }
        o
    }

    /// Sessions whose Tcc passed: their reservations are released and their ids
    /// reported (each becomes a `supervision_timeout` CDR).
    ///
    /// With several shards, slices idle since `SLICE_IDLE_MS` also send their
    /// unreserved part home then (see `outbox`). The count returned is of sessions;
    /// when it is 0 and the outbox stayed empty, nothing changed.
    pub fn expire(&mut self, now_ms: u64, mut expired: impl FnMut(&str, u32)) -> usize {
        self.idle_returns(now_ms);
        self.mail.send_acks();
        let tariffs = &self.tariffs;
        let companies = &mut self.companies;
        let mut n = 0;
        self.sessions.retain(|s| {
            if s.expires_ms == 0 || s.expires_ms > now_ms {
                return true;
            }
            let c = &mut companies[s.company as usize];
            let mut wallet = c.wallet();
            for r in s.reservations.iter_mut().filter_map(Option::take) {
                let _ = decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, 0);
            }
            expired(
                std::str::from_utf8(&s.id[..s.id_len]).unwrap_or(""),
                s.company,
            );
            n += 1;
            false
        });
        if n > 0 && self.shards > 1 {
            for c in 0..self.companies.len() as u32 {
                self.send_home(c);
            }
        }
        n
    }
}

/// One company's changing state in a snapshot.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CompanySnapshot {
    money: Bucket,
    refunded: i64,
    /// Provisioned and added at run time, in the engine's order (grants refer to them
    /// by index).
    packages: Vec<(Package, Bucket)>,
    slices: Vec<SliceState>,
    owner: Vec<OwnerBucket>,
}

/// The engine's changing state at a point of the log: balances, packages and open
/// sessions with their reservations. With the dataset it started from, it replaces
/// the replay of the log up to `seq`. Recent event answers (duplicate detection of
/// CCR-EVENTs) are not kept: a retransmitted event older than the snapshot is charged
/// again only if it arrives after a restart.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EngineSnapshot {
    /// The log's next sequence number when it was taken: replay goes on from there.
    pub seq: u64,
    /// CRC32C of the dataset snapshot the engine started from.
    pub dataset_crc: u32,
    pub config: EngineConfig,
    companies: Vec<CompanySnapshot>,
    sessions: Vec<Session>,
    /// Escrow: this shard's number, how many there were, the message numbers per
    /// channel and what was sent and not known to be delivered.
    shard: u16,
    shards: u16,
    sent: Vec<u64>,
    received: Vec<u64>,
    retained: Vec<Envelope>,
    owe_ack: Vec<bool>,
}

impl std::fmt::Debug for EngineSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSnapshot")
            .field("seq", &self.seq)
            .field("companies", &self.companies.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl EngineSnapshot {
    /// The snapshot's bytes (rkyv).
    pub fn encode(&self) -> rkyv::util::AlignedVec {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("an engine snapshot always serializes")
    }

    /// A snapshot back from its bytes (validated).
    pub fn decode(bytes: &[u8]) -> Result<EngineSnapshot, String> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<EngineSnapshot, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

impl Engine {
    /// The state to save, as of log sequence `seq`.
    pub fn snapshot(&self, seq: u64, dataset_crc: u32) -> EngineSnapshot {
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for &i in self.sessions.index.values() {
            sessions.push(self.sessions.slots[i as usize].clone());
        }
        EngineSnapshot {
            seq,
            dataset_crc,
            config: self.config.clone(),
            companies: self
                .companies
                .iter()
                .map(|c| CompanySnapshot {
                    money: c.money,
                    refunded: c.refunded,
                    packages: c.packages.clone(),
                    slices: c.slices.clone(),
                    owner: c.owner.clone(),
                })
                .collect(),
            sessions,
            shard: self.mail.shard,
            shards: self.shards,
            sent: self.mail.sent.clone(),
            received: self.mail.received.clone(),
            retained: self.mail.retained.clone(),
            owe_ack: self.mail.owe_ack.clone(),
        }
    }

    /// An engine over `dataset` in the state `snap` saved. Fails when the snapshot does
    /// not fit the dataset (another company count).
    pub fn restore(dataset: Dataset, snap: EngineSnapshot) -> Result<Engine, String> {
        let mut e = Engine::new_shard(dataset, snap.config, snap.shard, snap.shards);
        e.mail.sent = snap.sent;
        e.mail.received = snap.received;
        e.mail.retained = snap.retained;
        e.mail.owe_ack = snap.owe_ack;
        if e.companies.len() != snap.companies.len() {
            return Err(format!(
                "the snapshot has {} companies, the dataset {}",
                snap.companies.len(),
                e.companies.len()
            ));
        }
        for (c, s) in e.companies.iter_mut().zip(snap.companies) {
            c.money = s.money;
            c.refunded = s.refunded;
            c.packages = s.packages;
            c.slices = s.slices;
            c.owner = s.owner;
        }
        for s in snap.sessions {
            let id = std::str::from_utf8(&s.id[..s.id_len.min(SESSION_ID_SIZE_MAX)]).unwrap_or("");
            let key = session_key(id);
            if e.sessions.insert(key, s).is_none() {
                return Err("the snapshot has more open sessions than sessions_max".into());
            }
        }
        Ok(e)
    }
}
