//! One shard's credit-control engine, whole balances (no escrow yet): finds the
//! subscriber and its company, keeps each session's reservations, grants and settles
//! through `decide`, answers duplicates with the answer already given, and says what
//! the CCA and the CDR carry. Sans-IO: the caller passes the decoded CCR and the time.

use std::collections::HashMap;

use super::decide::{self, Ask, Grant, Source, Wallet};
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
}

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
    fn of(o: &Outcome, units: &[Option<Unit>; MSCC_MAX]) -> Stored {
        let mut mscc = [StoredMscc::default(); MSCC_MAX];
        for (i, m) in o.mscc().iter().enumerate() {
            let amount = m.granted.and_then(|g| {
                g.total_octets
                    .or(g.time_s.map(u64::from))
                    .or(g.service_specific)
            });
            mscc[i] = StoredMscc {
                rating_group: m.rating_group,
                service_identifier: m.service_identifier,
                result_code: m.result_code,
                granted: units[i].zip(amount),
                final_unit: m.final_unit_action.is_some(),
            };
        }
        Stored {
            result_code: o.result_code,
            mscc_count: o.mscc_count as u8,
            mscc,
        }
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
    index: HashMap<u64, u32>,
    max: usize,
}

impl SessionTable {
    fn new(max: usize) -> SessionTable {
        SessionTable {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            index: HashMap::with_capacity(max),
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
    fn get_mut(&mut self, key: &u64) -> Option<&mut Session> {
        self.index.get(key).map(|&i| &mut self.slots[i as usize])
    }
    /// False when the table is full.
    fn insert(&mut self, key: u64, s: Session) -> bool {
        if self.index.len() >= self.max {
            return false;
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
        true
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
    index: HashMap<DuplicateKey, u32>,
    size: usize,
}

impl EventCache {
    fn new(size: usize) -> EventCache {
        EventCache {
            ring: Vec::with_capacity(size),
            next: 0,
            index: HashMap::with_capacity(size),
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
#[derive(Clone, Copy, Debug)]
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
    /// An event without MSCC is answered at the top level: no MSCC, `granted` as the
    /// top-level Granted-Service-Unit. `services` still describes it for the CDR.
    pub top_level: bool,
    pub granted: Option<Units>,
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
            top_level: false,
            granted: None,
        }
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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

fn session_key(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
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
    /// Builds the engine over a provisioned dataset.
    pub fn new(dataset: Dataset, config: EngineConfig) -> Engine {
        let index = Index::build(&dataset);
        let mut companies: Vec<CompanyState> = dataset
            .companies
            .iter()
            .map(|c| CompanyState {
                money: Bucket::new(c.balance),
                credit_limit: c.credit_limit,
                packages: Vec::new(),
                refunded: 0,
            })
            .collect();
        for p in &dataset.packages {
            let amount = i64::try_from(p.amount).unwrap_or(i64::MAX);
            companies[p.company as usize]
                .packages
                .push((p.clone(), Bucket::new(amount)));
        }
        let sessions = SessionTable::new(config.sessions_max);
        let events = EventCache::new(config.event_answers_max);
        Engine {
            config,
            index,
            company_ids: dataset.companies.iter().map(|c| c.id.clone()).collect(),
            subscribers: dataset.subscribers,
            tariffs: dataset.tariffs,
            companies,
            sessions,
            events,
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

    /// The company's money and its packages' remaining units.
    pub fn balance(&self, company: u32) -> (Bucket, Vec<(&str, Bucket)>) {
        let c = &self.companies[company as usize];
        (
            c.money,
            c.packages
                .iter()
                .map(|(p, b)| (p.id.as_str(), *b))
                .collect(),
        )
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
        let amount = i64::try_from(package.amount).unwrap_or(i64::MAX);
        c.packages.push((package, Bucket::new(amount)));
        true
    }

    /// A top-up: visible to the company's next grant.
    pub fn top_up(&mut self, company: u32, micros: i64) -> bool {
        self.companies
            .get_mut(company as usize)
            .is_some_and(|c| c.money.credit(micros).is_ok())
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

    /// Handles one decoded CCR at `now_ms` (Unix milliseconds).
    pub fn handle(&mut self, ccr: &Ccr<'_>, now_ms: u64) -> Outcome {
        let key = session_key(ccr.session_id);
        // A repeated CC-Request-Number of an open session: the same answer, no change.
        if let Some(s) = self.sessions.get(&key) {
            if &s.id[..s.id_len] == ccr.session_id.as_bytes()
                && s.last_request == ccr.request_number
            {
                let mut o = Outcome::new(s.last.result_code);
                o.mscc = s.last.answer(self.config.validity_time_s);
                o.mscc_count = usize::from(s.last.mscc_count);
                o.subscriber = Some(s.subscriber);
                o.company = Some(s.company);
                o.duplicate = true;
                return o;
            }
        }
        let Some(subscriber) = self.find_subscriber(ccr) else {
            return Outcome::new(rc::USER_UNKNOWN);
        };
        let company = self.subscribers[subscriber as usize].company;
        match ccr.request_type {
            RequestType::Event => {
                let key = DuplicateKey::new(ccr.origin_host, ccr.header.end_to_end);
                if let Some(done) = self.events.get(&key) {
                    return Outcome {
                        duplicate: true,
                        ..*done
                    };
                }
                let o = self.event(ccr, subscriber, company, now_ms);
                self.events.insert(key, o);
                o
            }
            RequestType::Initial | RequestType::Update | RequestType::Termination => {
                self.session(ccr, key, subscriber, company, now_ms)
            }
        }
    }

    fn session(
        &mut self,
        ccr: &Ccr<'_>,
        key: u64,
        subscriber: u32,
        company: u32,
        now_ms: u64,
    ) -> Outcome {
        let mut o = Outcome::new(rc::SUCCESS);
        o.subscriber = Some(subscriber);
        o.company = Some(company);
        let exists = self
            .sessions
            .get(&key)
            .is_some_and(|s| &s.id[..s.id_len] == ccr.session_id.as_bytes());
        if !exists {
            if ccr.request_type != RequestType::Initial {
                return Outcome::new(rc::UNKNOWN_SESSION_ID);
            }
            if self.sessions.len() >= self.config.sessions_max || self.sessions.contains_key(&key) {
                return Outcome::new(rc::TOO_BUSY);
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
            if !inserted {
                return Outcome::new(rc::TOO_BUSY);
            }
        }
        let tariffs = &self.tariffs;
        let validity = self.config.validity_time_s;
        let mut asks = [None; MSCC_MAX];
        for (i, m) in ccr.mscc().iter().enumerate() {
            asks[i] = Some(self.ask(ccr, m, now_ms));
        }
        // Session state and the company's wallet are borrowed apart.
        let Some(session) = self.sessions.get_mut(&key) else {
            return Outcome::new(rc::UNABLE_TO_COMPLY);
        };
        let c = &mut self.companies[company as usize];
        let mut wallet = Wallet {
            money: &mut c.money,
            credit_limit: c.credit_limit,
            packages: &mut c.packages,
        };
        let (mut granted_any, mut all_4012) = (false, true);
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
            session.last = Stored::of(&o, &units);
            session.expires_ms = now_ms + 2 * 1000 * u64::from(validity);
        }
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
        let tariffs = &self.tariffs;
        let c = &mut self.companies[company as usize];
        let mut wallet = Wallet {
            money: &mut c.money,
            credit_limit: c.credit_limit,
            packages: &mut c.packages,
        };
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
        match ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting)
        {
            RequestedAction::DirectDebiting => match decide::grant(&mut wallet, tariffs, &ask) {
                Ok(g) if g.result_code == rc::SUCCESS && g.units >= ask.units => {
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
                            c.refunded = c.refunded.saturating_add(micros);
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
        o
    }

    /// Sessions whose Tcc passed: their reservations are released and their ids
    /// reported (each becomes a `supervision_timeout` CDR).
    pub fn expire(&mut self, now_ms: u64, mut expired: impl FnMut(&str, u32)) -> usize {
        let tariffs = &self.tariffs;
        let companies = &mut self.companies;
        let mut n = 0;
        self.sessions.retain(|s| {
            if s.expires_ms == 0 || s.expires_ms > now_ms {
                return true;
            }
            let c = &mut companies[s.company as usize];
            let mut wallet = Wallet {
                money: &mut c.money,
                credit_limit: c.credit_limit,
                packages: &mut c.packages,
            };
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
                })
                .collect(),
            sessions,
        }
    }

    /// An engine over `dataset` in the state `snap` saved. Fails when the snapshot does
    /// not fit the dataset (another company count).
    pub fn restore(dataset: Dataset, snap: EngineSnapshot) -> Result<Engine, String> {
        let mut e = Engine::new(dataset, snap.config);
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
        }
        for s in snap.sessions {
            let id = std::str::from_utf8(&s.id[..s.id_len.min(SESSION_ID_SIZE_MAX)]).unwrap_or("");
            let key = session_key(id);
            if !e.sessions.insert(key, s) {
                return Err("the snapshot has more open sessions than sessions_max".into());
            }
        }
        Ok(e)
    }
}
