//! The engine's memory of requests: the open sessions, each with its reservations and
//! the answers its last two requests got (`SessionTable`), the answers to recent events
//! (`EventCache`) and the last answers of recently closed sessions (`ClosedSessions`),
//! so that a duplicate gets the answer already given and changes nothing.

use super::{units_for, AnswerForm, Decision, Outcome};
use crate::charging::decide::{Ask, Grant};
use crate::diameter::ccr::{AnswerMscc, Ccr};
use crate::diameter::limits::{MSCC_MAX, SESSION_ID_SIZE_MAX};
use crate::peer::DuplicateKey;
use crate::provision::Unit;

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Reservation {
    pub(super) ask: Ask,
    pub(super) grant: Grant,
}

/// One MSCC of an answer, kept compactly (32 bytes): enough to answer the request's
/// duplicate identically.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct StoredMscc {
    rating_group: u32,
    service_identifier: u32,
    result_code: u32,
    validity_time_s: u32,
    granted: u64,
    unit: Unit,
    /// Which of the optional fields are present (`HAS_*`) and whether the MSCC carried
    /// a Final-Unit-Indication.
    flags: u8,
}

const HAS_RATING_GROUP: u8 = 1;
const HAS_SERVICE_IDENTIFIER: u8 = 2;
const HAS_GRANT: u8 = 4;
const HAS_VALIDITY: u8 = 8;
const FINAL_UNIT: u8 = 16;

impl Default for StoredMscc {
    fn default() -> Self {
        StoredMscc {
            rating_group: 0,
            service_identifier: 0,
            result_code: 0,
            validity_time_s: 0,
            granted: 0,
            unit: Unit::Octets,
            flags: 0,
        }
    }
}

impl StoredMscc {
    fn new(m: &AnswerMscc, granted: Option<(Unit, u64)>) -> StoredMscc {
        let flag = |present: bool, bit: u8| if present { bit } else { 0 };
        StoredMscc {
            rating_group: m.rating_group.unwrap_or(0),
            service_identifier: m.service_identifier.unwrap_or(0),
            result_code: m.result_code,
            validity_time_s: m.validity_time_s.unwrap_or(0),
            granted: granted.map_or(0, |g| g.1),
            unit: granted.map_or(Unit::Octets, |g| g.0),
            flags: flag(m.rating_group.is_some(), HAS_RATING_GROUP)
                | flag(m.service_identifier.is_some(), HAS_SERVICE_IDENTIFIER)
                | flag(granted.is_some(), HAS_GRANT)
                | flag(m.validity_time_s.is_some(), HAS_VALIDITY)
                | flag(m.final_unit_action.is_some(), FINAL_UNIT),
        }
    }
    fn answer(&self) -> AnswerMscc {
        let has = |bit: u8| self.flags & bit != 0;
        AnswerMscc {
            rating_group: has(HAS_RATING_GROUP).then_some(self.rating_group),
            service_identifier: has(HAS_SERVICE_IDENTIFIER).then_some(self.service_identifier),
            result_code: self.result_code,
            granted: has(HAS_GRANT).then(|| units_for(self.unit, self.granted)),
            validity_time_s: has(HAS_VALIDITY).then_some(self.validity_time_s),
            final_unit_action: has(FINAL_UNIT)
                .then_some(crate::diameter::ccr::final_unit_action::TERMINATE),
            ..AnswerMscc::default()
        }
    }
}

/// The answer a request got, with the two keys that find its duplicates (RFC 6733
/// §6.5 and RFC 8506 §5.1): (Origin-Host, End-to-End-Identifier) and the
/// CC-Request-Number (of its session).
#[derive(Clone, Copy, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Kept {
    /// False until an answer is recorded.
    valid: bool,
    top_level: bool,
    mscc_count: u8,
    pub(super) request_number: u32,
    end_to_end: u32,
    result_code: u32,
    origin_host_hash: u64,
    cost_micros: Option<i64>,
    check_balance_result: Option<u32>,
    mscc: [StoredMscc; MSCC_MAX],
}

impl Kept {
    /// Records the answer `o` to `ccr` in place: its services' entries are written and
    /// those the previous answer used beyond them cleared, so the value is the same as
    /// one built afresh (snapshots and replays see no leftovers).
    pub(super) fn record(&mut self, ccr: &Ccr<'_>, key: &DuplicateKey, o: &Decision) {
        let n = o.mscc_count.min(MSCC_MAX);
        for i in 0..n {
            let m = &o.mscc[i];
            // An event answered at the top level has its grant there only.
            let units = match (o.form, i) {
                (AnswerForm::TopLevel, 0) => o.granted,
                _ => m.granted,
            };
            let amount = units.and_then(|g| {
                g.total_octets
                    .or(g.time_s.map(u64::from))
                    .or(g.service_specific)
            });
            self.mscc[i] = StoredMscc::new(m, o.services[i].unit.zip(amount));
        }
        let before = usize::from(self.mscc_count).min(MSCC_MAX);
        if before > n {
            self.mscc[n..before].fill(StoredMscc::default());
        }
        self.valid = true;
        self.top_level = o.form == AnswerForm::TopLevel;
        self.mscc_count = n as u8;
        self.request_number = ccr.request_number;
        self.end_to_end = key.end_to_end;
        self.origin_host_hash = key.origin_host_hash;
        self.result_code = o.result_code;
        self.cost_micros = o.cost_micros;
        self.check_balance_result = o.check_balance_result;
    }

    /// Whether `ccr` is a copy of the request this answered: the same
    /// CC-Request-Number, or the same (Origin-Host, End-to-End-Identifier) on a request
    /// that is not a later one of the session (a CC-Request-Number only grows, so a
    /// higher one is a new request, whatever identifier a peer reuses).
    pub(super) fn answers(&self, ccr: &Ccr<'_>, key: &DuplicateKey) -> bool {
        self.valid
            && (self.request_number == ccr.request_number
                || (ccr.request_number < self.request_number
                    && self.end_to_end == key.end_to_end
                    && self.origin_host_hash == key.origin_host_hash))
    }

    /// The answer again, as a duplicate's decision: nothing changed, no CDR.
    pub(super) fn replay(&self, subscriber: Option<u32>, company: Option<u32>, o: &mut Decision) {
        let n = usize::from(self.mscc_count).min(MSCC_MAX);
        for (out, m) in o.mscc.iter_mut().zip(&self.mscc[..n]) {
            *out = m.answer();
        }
        o.extent = MSCC_MAX;
        o.mscc_count = n;
        o.result_code = self.result_code;
        o.subscriber = subscriber;
        o.company = company;
        o.cost_micros = self.cost_micros;
        o.check_balance_result = self.check_balance_result;
        o.outcome = Outcome::Duplicate;
        if self.top_level {
            o.form = AnswerForm::TopLevel;
            o.granted = if n > 0 { o.mscc[0].granted } else { None };
        }
    }
}

#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Session {
    pub(super) id_len: usize,
    pub(super) id: [u8; SESSION_ID_SIZE_MAX],
    pub(super) company: u32,
    pub(super) subscriber: u32,
    /// The answers to the session's last two requests; `answers[newest]` is the last.
    pub(super) answers: [Kept; 2],
    pub(super) newest: u8,
    pub(super) reservations: [Option<Reservation>; MSCC_MAX],
    pub(super) expires_ms: u64,
}

impl Session {
    /// The answer to the session's last request.
    pub(super) fn last(&self) -> &Kept {
        &self.answers[usize::from(self.newest & 1)]
    }
    /// The kept answer `ccr` is a copy of, if any.
    pub(super) fn kept_for(&self, ccr: &Ccr<'_>, key: &DuplicateKey) -> Option<&Kept> {
        let last = self.last();
        let before = &self.answers[usize::from(!self.newest & 1)];
        [last, before].into_iter().find(|k| k.answers(ccr, key))
    }
    /// Records the answer to the session's newest request, keeping the one before.
    pub(super) fn record(&mut self, ccr: &Ccr<'_>, key: &DuplicateKey, o: &Decision) {
        self.newest = !self.newest & 1;
        self.answers[usize::from(self.newest)].record(ccr, key, o);
    }
}

/// Open sessions: slots in a vector sized once (untouched slots cost no memory) and an
/// index from the Session-Id's hash to the slot, so memory follows the sessions that
/// are open, not the power-of-two growth of a hash table of whole sessions.
pub(super) struct SessionTable {
    pub(super) slots: Vec<Session>,
    free: Vec<u32>,
    pub(super) index: crate::FastMap<u64, u32>,
    max: usize,
}

impl SessionTable {
    pub(super) fn new(max: usize) -> SessionTable {
        SessionTable {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            index: crate::FastMap::with_capacity_and_hasher(max, Default::default()),
            max,
        }
    }
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
    pub(super) fn contains_key(&self, key: &u64) -> bool {
        self.index.contains_key(key)
    }
    pub(super) fn get(&self, key: &u64) -> Option<&Session> {
        self.index.get(key).map(|&i| &self.slots[i as usize])
    }
    /// The slot of the session with this key (see `at` and `at_mut`).
    pub(super) fn slot_of(&self, key: &u64) -> Option<u32> {
        self.index.get(key).copied()
    }
    pub(super) fn at(&self, slot: u32) -> &Session {
        &self.slots[slot as usize]
    }
    pub(super) fn at_mut(&mut self, slot: u32) -> &mut Session {
        &mut self.slots[slot as usize]
    }
    /// The new session's slot; `None` when the table is full.
    pub(super) fn insert(&mut self, key: u64, s: Session) -> Option<u32> {
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
    pub(super) fn remove(&mut self, key: &u64) {
        if let Some(i) = self.index.remove(key) {
            self.free.push(i);
        }
    }
    /// Keeps the sessions `keep` says to keep.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut Session) -> bool) {
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

/// An answer kept after its request is done with: an event's, or the last of a closed
/// session, with the session's key and whom it charged.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Done {
    pub(super) session: u64,
    pub(super) subscriber: Option<u32>,
    pub(super) company: Option<u32>,
    pub(super) answer: Kept,
}

/// The answers to recent events (RFC 6733 §6.5, RFC 8506 §5.1), found by
/// (Origin-Host, End-to-End-Identifier) or by (Session-Id, CC-Request-Number): a
/// retransmitted CCR-EVENT, with or without the T flag, with the same or a new
/// End-to-End-Identifier, gets the same answer and is not charged again. A ring of
/// fixed size; the oldest answer goes first.
pub(super) struct EventCache {
    ring: Vec<Done>,
    next: usize,
    by_end_to_end: crate::FastMap<DuplicateKey, u32>,
    by_request: crate::FastMap<(u64, u32), u32>,
    size: usize,
}

impl EventCache {
    pub(super) fn new(size: usize) -> EventCache {
        EventCache {
            ring: Vec::with_capacity(size),
            next: 0,
            by_end_to_end: crate::FastMap::with_capacity_and_hasher(size, Default::default()),
            by_request: crate::FastMap::with_capacity_and_hasher(size, Default::default()),
            size: size.max(1),
        }
    }
    /// The answer kept for a copy of event `ccr` of session `session`.
    pub(super) fn get(&self, session: u64, ccr: &Ccr<'_>, key: &DuplicateKey) -> Option<&Done> {
        let hit = |at: &u32| {
            let d = &self.ring[*at as usize];
            (d.session == session && d.answer.answers(ccr, key)).then_some(d)
        };
        self.by_request
            .get(&(session, ccr.request_number))
            .and_then(hit)
            .or_else(|| self.by_end_to_end.get(key).and_then(hit))
    }
    pub(super) fn insert(&mut self, d: Done) {
        let at = if self.ring.len() < self.size {
            self.ring.push(d);
            self.ring.len() - 1
        } else {
            let at = self.next;
            self.next = (self.next + 1) % self.size;
            let old = std::mem::replace(&mut self.ring[at], d);
            self.forget(&old, at);
            at
        };
        let a = &d.answer;
        let key = DuplicateKey {
            origin_host_hash: a.origin_host_hash,
            end_to_end: a.end_to_end,
        };
        self.by_end_to_end.insert(key, at as u32);
        self.by_request
            .insert((d.session, a.request_number), at as u32);
    }
    fn forget(&mut self, old: &Done, at: usize) {
        let a = &old.answer;
        let key = DuplicateKey {
            origin_host_hash: a.origin_host_hash,
            end_to_end: a.end_to_end,
        };
        // Only where the index still points at this entry (a later answer with the same
        // key replaced it there).
        if self.by_end_to_end.get(&key) == Some(&(at as u32)) {
            self.by_end_to_end.remove(&key);
        }
        let req = (old.session, a.request_number);
        if self.by_request.get(&req) == Some(&(at as u32)) {
            self.by_request.remove(&req);
        }
    }
    /// The kept answers, oldest first (snapshots).
    pub(super) fn oldest_first(&self) -> impl Iterator<Item = &Done> {
        let (a, b) = self.ring.split_at(self.next.min(self.ring.len()));
        b.iter().chain(a)
    }
}

/// Sessions closed by their CCR-T, or refused at their CCR-I, by key (a hash of the
/// Session-Id; Session-Ids are unique, RFC 6733 §8.8), with the answer to their last
/// request: a copy of that request gets that answer again; a copy of any earlier one,
/// come late, is a duplicate whose answer is gone (5012, nothing changed, no CDR), not
/// a new session. A ring of fixed size; the oldest goes first.
pub(super) struct ClosedSessions {
    ring: Vec<Done>,
    next: usize,
    index: crate::FastMap<u64, u32>,
    size: usize,
}

impl ClosedSessions {
    pub(super) fn new(size: usize) -> ClosedSessions {
        ClosedSessions {
            ring: Vec::with_capacity(size),
            next: 0,
            index: crate::FastMap::with_capacity_and_hasher(size, Default::default()),
            size: size.max(1),
        }
    }
    /// Closed session `key`, with its last answer.
    pub(super) fn get(&self, key: u64) -> Option<&Done> {
        if self.index.is_empty() {
            return None;
        }
        self.index.get(&key).map(|&at| &self.ring[at as usize])
    }
    pub(super) fn insert(&mut self, d: Done) {
        if let Some(&at) = self.index.get(&d.session) {
            self.ring[at as usize] = d;
            return;
        }
        if self.ring.len() < self.size {
            self.index.insert(d.session, self.ring.len() as u32);
            self.ring.push(d);
            return;
        }
        let at = self.next;
        self.next = (self.next + 1) % self.size;
        let old = std::mem::replace(&mut self.ring[at], d);
        self.index.remove(&old.session);
        self.index.insert(d.session, at as u32);
    }
    /// The closed sessions, oldest first (snapshots).
    pub(super) fn oldest_first(&self) -> impl Iterator<Item = &Done> {
        let (a, b) = self.ring.split_at(self.next.min(self.ring.len()));
        b.iter().chain(a)
    }
}
