//! The engine's memory of requests: the open sessions, each with its reservations and
//! the answer it last got (`SessionTable`), and the answers to recent events
//! (`EventCache`), so that a duplicate gets the answer already given.

use super::{units_for, Decision};
use crate::charging::decide::{Ask, Grant};
use crate::diameter::ccr::{final_unit_action, AnswerMscc};
use crate::diameter::limits::{MSCC_MAX, SESSION_ID_SIZE_MAX};
use crate::peer::DuplicateKey;
use crate::provision::Unit;

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Reservation {
    pub(super) ask: Ask,
    pub(super) grant: Grant,
}

/// One MSCC of the answer a request got, kept compactly: enough to answer the request's
/// duplicate identically.
#[derive(Clone, Copy, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct StoredMscc {
    rating_group: Option<u32>,
    service_identifier: Option<u32>,
    result_code: u32,
    /// The grant's unit and amount, when there was one.
    granted: Option<(Unit, u64)>,
    final_unit: bool,
}

/// The answer a request got.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Stored {
    pub(super) result_code: u32,
    pub(super) mscc_count: u8,
    pub(super) mscc: [StoredMscc; MSCC_MAX],
}

impl Stored {
    /// Records the answer `o` in place: its services' entries are written and those the
    /// previous answer used beyond them cleared, so the value is the same as one built
    /// afresh (snapshots and replays see no leftovers).
    pub(super) fn record(&mut self, o: &Decision, units: &[Option<Unit>; MSCC_MAX]) {
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
    pub(super) fn answer(&self, validity_time_s: u32) -> [AnswerMscc; MSCC_MAX] {
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
pub(super) struct Session {
    pub(super) id_len: usize,
    pub(super) id: [u8; SESSION_ID_SIZE_MAX],
    pub(super) company: u32,
    pub(super) subscriber: u32,
    pub(super) last_request: u32,
    pub(super) last: Stored,
    pub(super) reservations: [Option<Reservation>; MSCC_MAX],
    pub(super) expires_ms: u64,
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

/// The answers to recent events, by (Origin-Host, End-to-End-Identifier) (RFC 6733
/// §6.5): a retransmitted CCR-EVENT, with or without the T flag, gets the same answer
/// and is not charged again. A ring of fixed size; the oldest answer goes first.
pub(super) struct EventCache {
    ring: Vec<(DuplicateKey, Decision)>,
    next: usize,
    index: crate::FastMap<DuplicateKey, u32>,
    size: usize,
}

impl EventCache {
    pub(super) fn new(size: usize) -> EventCache {
        EventCache {
            ring: Vec::with_capacity(size),
            next: 0,
            index: crate::FastMap::with_capacity_and_hasher(size, Default::default()),
            size: size.max(1),
        }
    }
    pub(super) fn get(&self, key: &DuplicateKey) -> Option<&Decision> {
        self.index.get(key).map(|&i| &self.ring[i as usize].1)
    }
    pub(super) fn insert(&mut self, key: DuplicateKey, o: Decision) {
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

/// Sessions closed by their CCR-T, or refused at their CCR-I, by key (a hash of the
/// Session-Id; Session-Ids are unique, RFC 6733 §8.8), with their last
/// CC-Request-Number: a copy of any of their requests that comes late is a duplicate
/// (5012, nothing changed, no CDR), not a new session. A ring of fixed size; the oldest
/// goes first.
pub(super) struct ClosedSessions {
    ring: Vec<u64>,
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
    /// The last CC-Request-Number of closed session `key`.
    pub(super) fn last_request(&self, key: u64) -> Option<u32> {
        if self.index.is_empty() {
            return None;
        }
        self.index.get(&key).copied()
    }
    pub(super) fn insert(&mut self, key: u64, last_request: u32) {
        if self.index.insert(key, last_request).is_some() {
            return;
        }
        if self.ring.len() < self.size {
            self.ring.push(key);
            return;
        }
        let old = std::mem::replace(&mut self.ring[self.next], key);
        self.next = (self.next + 1) % self.size;
        self.index.remove(&old);
    }
}
