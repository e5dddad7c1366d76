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
//!
//! This file holds the configuration, the companies' state, `Decision`, and the
//! `Engine` itself: its construction, what it tells about balances and companies, the
//! dispatch of a request (`handle_into`) and the supervision of sessions (`expire`).
//! The rest is in child modules, each adding to `impl Engine` where it acts:
//!
//! - `sessions`: the session table (open sessions, their reservations and the answer
//!   each last got) and the cache of recent event answers.
//! - `session`: session charging (CCR-I, CCR-U, CCR-T), with the check of whether
//!   this shard's slices can decide a request or it waits for escrow.
//! - `event`: event charging (CCR-EVENT): direct debiting, refunds, balance checks
//!   and price enquiries.
//! - `escrow_side`: the shard side of escrow: the mail to and from other shards, the
//!   messages received, refills asked for, slices kept up and sent home when idle.
//! - `snapshot`: `EngineSnapshot`, the state saved and restored.

use super::decide::{self, Ask, Wallet};
use super::escrow::{OwnerBucket, SliceState, MONEY};
use super::invariant::{broken, must};
use super::ledger::Bucket;
use crate::cdr::CdrService;
use crate::diameter::ccr::{subscription_id_type, AnswerMscc, Ccr, Mscc, RequestType, Units};
use crate::diameter::limits::MSCC_MAX;
use crate::diameter::result_code as rc;
use crate::peer::DuplicateKey;
use crate::provision::{Dataset, Index, Package, Tariff, Unit};

mod escrow_side;
mod event;
mod provisioning;
mod session;
mod sessions;
mod snapshot;

use escrow_side::Mail;
use sessions::{ClosedSessions, Done, EventCache, Kept, SessionTable};

pub use provisioning::{
    Applied, KeyEntry, OpKey, OpKeys, ANSWER_NOT_KEPT, KEYS_MAX, KEYS_WINDOW_MS,
    KEY_ANSWERS_BYTES_MAX, TARIFFS_MAX,
};
pub use snapshot::{
    ArchivedEngineSnapshot, EngineSnapshot, EngineSnapshotResolver, SnapshotError, SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
};

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

impl EngineConfig {
    /// What a request that asks for `unit` without saying how much is granted.
    pub fn default_quota(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Octets => self.default_quota_octets,
            Unit::Seconds => self.default_quota_seconds,
            Unit::Units => self.default_quota_units,
        }
    }
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

/// Bounds on what a peer's values may move, applied before anything is priced
/// (`docs/charging.md`, "Bounds"). Journaled (`journal::Control::Bounds`) when the
/// server starts and after every snapshot, so replay decides with the bounds that were
/// in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Usage a service may report beyond its grant, as a share of the grant (percent);
    /// with nothing granted, of one default grant of its unit. Usage within it is
    /// charged (the CDR says `overuse`); beyond it the service is answered 5004 and
    /// nothing of it is charged.
    pub overuse_allowance_percent: u32,
    /// The most one grant gives, per unit kind: larger requests are granted this.
    pub grant_max_octets: u64,
    pub grant_max_seconds: u64,
    pub grant_max_units: u64,
    /// The most one refund (REFUND_ACCOUNT) may credit, in micro-units: more is
    /// answered 5004 and nothing is credited.
    pub refund_max_micros: i64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            overuse_allowance_percent: 10,
            grant_max_octets: 10 << 30,
            grant_max_seconds: 86_400,
            grant_max_units: 1_000_000,
            refund_max_micros: 1_000_000_000,
        }
    }
}

impl Bounds {
    /// The most one grant gives of `unit`.
    pub fn grant_max(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Octets => self.grant_max_octets,
            Unit::Seconds => self.grant_max_seconds,
            Unit::Units => self.grant_max_units,
        }
    }

    /// The most usage of a grant of `granted` units that is charged.
    pub fn usage_max(&self, granted: u64) -> u64 {
        let allowed =
            u128::from(granted) * (100 + u128::from(self.overuse_allowance_percent)) / 100;
        u64::try_from(allowed).unwrap_or(u64::MAX)
    }
}

struct CompanyState {
    money: Bucket,
    credit_limit: i64,
    /// Refused service (4010).
    barred: bool,
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
    fn take_home(&mut self, b: u16, company: &str) -> i64 {
        let Some(bk) = self.bucket_mut(b) else {
            return 0;
        };
        let amount = bk.available.max(0);
        // 0 <= amount <= available, and credited covers available (conservation).
        let (Some(available), Some(credited)) = (
            bk.available.checked_sub(amount),
            bk.credited.checked_sub(amount),
        ) else {
            broken("a slice's unreserved part sent home", company, &(b, *bk));
        };
        bk.available = available;
        bk.credited = credited;
        amount
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

/// What the engine did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Decided now: answer it with the `Decision` and write its CDR.
    Charged,
    /// The same request was answered before: the `Decision` is that answer (or 5012
    /// when it is no longer kept); nothing changed, and no CDR is written.
    Duplicate,
    /// This shard's escrow slices cannot cover it yet: nothing changed, refills were
    /// asked for; handle it again when a lease for `company` arrives. No answer and no
    /// CDR for now.
    Wait { company: u32 },
}

/// How the answer carries its units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerForm {
    /// In MSCCs, one per service.
    Mscc,
    /// At the top level (an event without MSCC): no MSCC, `granted` as the top-level
    /// Granted-Service-Unit. `services` still describes it for the CDR.
    TopLevel,
}

/// What one CCR comes to: the outcome, the CCA's content and the CDR's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub result_code: u32,
    pub subscriber: Option<u32>,
    pub company: Option<u32>,
    pub mscc_count: usize,
    pub mscc: [AnswerMscc; MSCC_MAX],
    pub services: [CdrService<'static>; MSCC_MAX],
    /// PRICE_ENQUIRY: the price in micro-units; CHECK_BALANCE: 0 enough, 1 no credit.
    pub cost_micros: Option<i64>,
    pub check_balance_result: Option<u32>,
    /// Per service, the company's package (see `Engine::package_id`) that paid.
    pub package: [Option<u16>; MSCC_MAX],
    pub form: AnswerForm,
    pub granted: Option<Units>,
    /// Entries of `mscc`, `services` and `package` from this index on are at their
    /// defaults, so `reset` clears only those before it (see `Engine::handle_into`).
    extent: usize,
}

impl Default for Decision {
    /// An empty outcome, for `Engine::handle_into` to fill.
    fn default() -> Self {
        Decision::new(0)
    }
}

impl Decision {
    fn new(result_code: u32) -> Decision {
        Decision {
            outcome: Outcome::Charged,
            result_code,
            subscriber: None,
            company: None,
            mscc_count: 0,
            mscc: [AnswerMscc::default(); MSCC_MAX],
            services: [CdrService::default(); MSCC_MAX],
            cost_micros: None,
            check_balance_result: None,
            package: [None; MSCC_MAX],
            form: AnswerForm::Mscc,
            granted: None,
            extent: MSCC_MAX,
        }
    }
    /// Back to `Decision::new(0)`, rewriting only the per-service entries in use.
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
        self.outcome = Outcome::Charged;
        self.form = AnswerForm::Mscc;
        self.granted = None;
        self.extent = 0;
    }
    /// A refusal decided before any service was looked at: `Decision::new(result_code)`
    /// on an outcome whose per-service entries are untouched since `reset`.
    fn refuse(&mut self, result_code: u32) {
        self.result_code = result_code;
        self.subscriber = None;
        self.company = None;
    }
    /// The MSCCs of the answer (none when the request was answered at the top level).
    pub fn mscc(&self) -> &[AnswerMscc] {
        if self.form == AnswerForm::TopLevel {
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
    /// The company of every package, by package id (ids are unique over companies).
    package_company: crate::FastMap<String, u32>,
    /// How many subscribers and companies are barred (when none is, requests skip the
    /// check).
    barred_count: usize,
    /// Idempotency keys of operations changes (`provisioning`).
    keys: provisioning::OpKeys,
    subscribers: Vec<crate::provision::Subscriber>,
    tariffs: Vec<Tariff>,
    companies: Vec<CompanyState>,
    company_ids: Vec<String>,
    sessions: SessionTable,
    events: EventCache,
    closed: ClosedSessions,
    shards: u16,
    mail: Mail,
    bounds: Bounds,
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

/// Company `i`'s state on shard `shard` of `shards` when it is provisioned:
/// whole on a lone shard; with several, a first share of its balance in this shard's
/// slice and, on its owner shard, the remainder.
fn company_state(
    c: &crate::provision::Company,
    i: usize,
    shard: u16,
    shards: u16,
    cheapest_block: i64,
) -> CompanyState {
    let multi = shards > 1;
    let owns = multi && i % usize::from(shards) == usize::from(shard);
    CompanyState {
        money: Bucket::new(if multi {
            first_share(c.balance, shards)
        } else {
            c.balance
        }),
        credit_limit: c.credit_limit,
        barred: c.barred,
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
}

/// The cheapest block of any tariff (what the owner counts a bucket of money empty
/// below).
fn cheapest_block(tariffs: &[Tariff]) -> i64 {
    tariffs
        .iter()
        .map(|t| t.price)
        .filter(|p| *p > 0)
        .min()
        .unwrap_or(1)
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
        let index = Index::build(&dataset);
        let cheapest_block = cheapest_block(&dataset.tariffs);
        let mut companies: Vec<CompanyState> = dataset
            .companies
            .iter()
            .enumerate()
            .map(|(i, c)| company_state(c, i, shard, shards, cheapest_block))
            .collect();
        let sessions = SessionTable::new(config.sessions_max);
        let events = EventCache::new(config.event_answers_max);
        let closed = ClosedSessions::new(config.event_answers_max);
        let n = usize::from(shards);
        let barred = dataset.companies.iter().filter(|c| c.barred).count()
            + dataset.subscribers.iter().filter(|s| s.barred).count();
        let mut e = Engine {
            config,
            index,
            package_company: crate::FastMap::default(),
            barred_count: barred,
            keys: provisioning::OpKeys::default(),
            company_ids: dataset.companies.iter().map(|c| c.id.clone()).collect(),
            subscribers: dataset.subscribers,
            tariffs: dataset.tariffs,
            companies: Vec::new(),
            sessions,
            events,
            closed,
            shards,
            bounds: Bounds::default(),
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
            e.package_company.insert(p.id.clone(), c);
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

    /// The bounds requests are held to.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Changes the bounds from the next request on (journal them: `ShardCore::set_bounds`).
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    /// A default grant of `unit`.
    fn default_quota(&self, unit: Unit) -> u64 {
        self.config.default_quota(unit)
    }

    /// The company with this id.
    pub fn company_by_id(&self, id: &str) -> Option<u32> {
        self.index.company_by_id.get(id).copied()
    }

    /// How many companies the engine holds.
    pub fn companies(&self) -> usize {
        self.company_ids.len()
    }

    /// The id of a company's package, as `Decision::package` names it.
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
    /// the company does not exist or a package with that id exists (of any company).
    pub fn add_package(&mut self, company: u32, mut package: crate::provision::Package) -> bool {
        let Some(c) = self.companies.get_mut(company as usize) else {
            return false;
        };
        // Package ids are unique over every company (provisioning upserts by id).
        if self.package_company.contains_key(&package.id) {
            return false;
        }
        self.package_company.insert(package.id.clone(), company);
        package.company = company;
        let mut c = std::mem::replace(c, provisioning::placeholder());
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
        let id = &self.company_ids[company as usize];
        o.credit(id, micros, &mut self.mail.owner_send(company, MONEY));
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
        // What a peer asks for is capped before anything is priced.
        let units = m
            .requested
            .and_then(|r| amount_of(&r, unit))
            .unwrap_or(self.default_quota(unit))
            .min(self.bounds.grant_max(unit));
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
    pub fn decide(&mut self, ccr: &Ccr<'_>, now_ms: u64) -> Decision {
        let mut o = Decision::new(0);
        self.decide_into(ccr, now_ms, &mut o);
        o
    }

    /// As `decide`, into `o` (see `handle_into`); returns `o.outcome`.
    pub fn decide_into(&mut self, ccr: &Ccr<'_>, now_ms: u64, o: &mut Decision) -> Outcome {
        self.charge(ccr, now_ms, false, o);
        o.outcome
    }

    /// Handles one decoded CCR at `now_ms` (Unix milliseconds).
    pub fn handle(&mut self, ccr: &Ccr<'_>, now_ms: u64) -> Decision {
        let mut o = Decision::new(0);
        self.handle_into(ccr, now_ms, &mut o);
        o
    }

    /// As `handle`, into a decision the caller keeps from one request to the next: the
    /// result is the same, but only the entries the previous request used are cleared
    /// (a `Decision` is about 2 KiB; the hot path neither builds nor moves one).
    /// Returns `o.outcome`.
    pub fn handle_into(&mut self, ccr: &Ccr<'_>, now_ms: u64, o: &mut Decision) -> Outcome {
        self.charge(ccr, now_ms, true, o);
        o.outcome
    }

    /// `handle_into` (`may_wait`: a request this shard's slices cannot cover yet waits
    /// for escrow) or `decide_into` (it is decided on what the shard holds).
    fn charge(&mut self, ccr: &Ccr<'_>, now_ms: u64, may_wait: bool, o: &mut Decision) {
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
        let dup = DuplicateKey::new(ccr.origin_host, ccr.header.end_to_end);
        if let Some(slot) = self.sessions.slot_of(&key) {
            let s = self.sessions.at(slot);
            if &s.id[..s.id_len] == ccr.session_id.as_bytes() {
                // A copy of one of the session's last two requests (by
                // CC-Request-Number or by (Origin-Host, End-to-End-Identifier)): the
                // answer it got, and nothing changes (RFC 6733 §6.5; no CDR).
                // (A later CC-Request-Number is a new request: nothing to look up.)
                if ccr.request_number <= s.last().request_number {
                    if let Some(k) = s.kept_for(ccr, &dup) {
                        return k.replay(Some(s.subscriber), Some(s.company), o);
                    }
                    // An older request of the session, come again after later ones
                    // were handled (a retransmission that took the long way): its
                    // answer is not kept, so it gets 5012 and changes nothing.
                    if ccr.request_number < s.last().request_number {
                        o.refuse(rc::UNABLE_TO_COMPLY);
                        o.outcome = Outcome::Duplicate;
                        return;
                    }
                }
                open = Some((s.subscriber, s.company, slot));
            }
        }
        // A copy, come late, of a request of a session that was closed: its last
        // request gets the answer it got; any earlier one (its CCR-I included) 5012. A
        // later request of it goes on to be answered 5002 as for any session that does
        // not exist.
        if open.is_none() && ccr.request_type != RequestType::Event {
            if let Some(d) = self.closed.get(key) {
                if d.answer.answers(ccr, &dup) {
                    return d.answer.replay(d.subscriber, d.company, o);
                }
                let last = d.answer.request_number;
                if ccr.request_type == RequestType::Initial || ccr.request_number <= last {
                    o.refuse(rc::UNABLE_TO_COMPLY);
                    o.outcome = Outcome::Duplicate;
                    return;
                }
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
        // A barred subscriber or company gets no new session or event (4010); its open
        // sessions have their usage settled and get no more units.
        let barred = self.barred_count != 0 && self.is_barred(subscriber, company);
        if barred && ccr.request_type == RequestType::Initial && open.is_none() {
            return o.refuse(rc::END_USER_SERVICE_DENIED);
        }
        match ccr.request_type {
            RequestType::Event => {
                if let Some(d) = self.events.get(key, ccr, &dup) {
                    return d.answer.replay(d.subscriber, d.company, o);
                }
                if barred {
                    return o.refuse(rc::END_USER_SERVICE_DENIED);
                }
                *o = self.event(ccr, subscriber, company, now_ms, may_wait);
                if !matches!(o.outcome, Outcome::Wait { .. }) {
                    let mut answer = Kept::default();
                    answer.record(ccr, &dup, o);
                    self.events.insert(Done {
                        session: key,
                        subscriber: o.subscriber,
                        company: o.company,
                        answer,
                    });
                }
            }
            RequestType::Initial | RequestType::Update | RequestType::Termination => {
                let slot = open.map(|(_, _, slot)| slot);
                self.session(
                    ccr, key, &dup, slot, subscriber, company, now_ms, may_wait, barred, o,
                )
            }
        }
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
        let company_ids = &self.company_ids;
        let mut n = 0;
        self.sessions.retain(|s| {
            if s.expires_ms == 0 || s.expires_ms > now_ms {
                return true;
            }
            let c = &mut companies[s.company as usize];
            let mut wallet = c.wallet();
            for r in s.reservations.iter_mut().filter_map(Option::take) {
                let released = decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, 0);
                let id = &company_ids[s.company as usize];
                must(released, "a reservation released by supervision (Tcc)", id);
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
