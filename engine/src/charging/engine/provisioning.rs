//! Provisioning at run time: tariffs, companies, packages and subscribers upserted or
//! removed while the engine charges (`Engine::provision`), corrections to a company's
//! money (`Engine::adjust`), barring, the state exported as a dataset
//! (`Engine::export`), and the idempotency keys of operations changes (`OpKeys`).
//!
//! Every shard holds the same provisioning (companies, packages, subscribers,
//! tariffs, in the same order: escrow refers to companies and packages by index), so
//! every shard is given every change, in the same order, and judges it alike. Money
//! and units a change gives (a new company's opening balance, a package added or
//! extended) go where a top-up goes: whole on a lone shard, to the owner's remainder
//! with several. A change is checked whole before anything of it is made.

use std::collections::VecDeque;

use super::escrow_side::Mail;
use super::{cheapest_block, company_state, Engine, MONEY};
use crate::charging::escrow::package_bucket;
use crate::provision::{digits_of, Change, Company, Dataset, Package, Subscriber, Tariff};

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The object was as it is already: nothing to record.
    Unchanged,
    /// Provisioning changed (the same on every shard); no money or units moved.
    Changed,
    /// The company got money (`package: None`: a new company's opening balance) or
    /// units of a package (added, or extended by a larger `amount`): `amount`, as
    /// billing is to learn from the owner shard's balance record.
    Credited {
        company: u32,
        package: Option<u16>,
        amount: i64,
    },
}

/// Most tariff entries the engine holds: a changed tariff is a new entry (grants made
/// before it settle at the price they were made at), the old one kept unmatched.
pub const TARIFFS_MAX: usize = 65_536;

impl Engine {
    /// Whether subscriber `s` or company `c` is barred.
    pub fn is_barred(&self, s: u32, c: u32) -> bool {
        self.subscribers.get(s as usize).is_some_and(|s| s.barred)
            || self.companies.get(c as usize).is_some_and(|c| c.barred)
    }

    /// Applies one provisioning object (an upsert by its key, or a subscriber's
    /// deletion), or says why not (nothing changed then).
    pub fn provision(&mut self, change: &Change) -> Result<Applied, String> {
        match change {
            Change::Tariff(t) => self.upsert_tariff(t),
            Change::Company {
                company,
                balance_given,
            } => self.upsert_company(company, *balance_given),
            Change::Package { package, company } => self.upsert_package(package, company),
            Change::Subscriber {
                msisdn,
                imsi,
                company,
                barred,
            } => self.upsert_subscriber(*msisdn, *imsi, company, *barred),
            Change::DeleteSubscriber { msisdn, imsi } => self.delete_subscriber(*msisdn, *imsi),
        }
    }

    fn upsert_tariff(&mut self, t: &Tariff) -> Result<Applied, String> {
        let current = match (t.rating_group, t.service_identifier) {
            (Some(rg), _) => self.tariffs.iter().rposition(|x| {
                x.rating_group == Some(rg) && x.service_identifier == t.service_identifier
            }),
            (None, Some(si)) => self
                .tariffs
                .iter()
                .rposition(|x| x.rating_group.is_none() && x.service_identifier == Some(si)),
            (None, None) => {
                return Err("a tariff needs a rating_group or a service_identifier".into())
            }
        };
        if let Some(i) = current {
            if self.tariffs[i] == *t {
                return Ok(Applied::Unchanged);
            }
        }
        if self.tariffs.len() >= TARIFFS_MAX {
            return Err(format!(
                "{TARIFFS_MAX} tariff versions held: export the dataset and start a new data directory from it"
            ));
        }
        // Tariffs of the same rating group after the old version keep their order
        // after the new one (a rating group is priced by the first that matches): they
        // move to the end behind it, their old places kept for the grants made at them.
        let after: Vec<usize> = match (current, t.rating_group) {
            (Some(i), Some(rg)) => (i + 1..self.tariffs.len())
                .filter(|&j| self.tariffs[j].rating_group == Some(rg))
                .collect(),
            _ => Vec::new(),
        };
        if self.tariffs.len() + 1 + after.len() > TARIFFS_MAX {
            return Err(format!(
                "{TARIFFS_MAX} tariff versions held: export the dataset and start a new data directory from it"
            ));
        }
        // The old version stays, matched by nothing, for the grants made at its price.
        if let Some(i) = current {
            self.tariffs[i].rating_group = None;
            self.tariffs[i].service_identifier = None;
        }
        self.tariffs.push(t.clone());
        for j in after {
            let moved = self.tariffs[j].clone();
            self.tariffs[j].rating_group = None;
            self.tariffs[j].service_identifier = None;
            self.tariffs.push(moved);
        }
        self.index.index_tariffs(&self.tariffs);
        Ok(Applied::Changed)
    }

    fn upsert_company(
        &mut self,
        company: &Company,
        balance_given: bool,
    ) -> Result<Applied, String> {
        if let Some(c) = self.company_by_id(&company.id) {
            // Money moves only by top-ups and adjustments: a balance here is not taken.
            let state = &mut self.companies[c as usize];
            if state.credit_limit == company.credit_limit && state.barred == company.barred {
                return Ok(Applied::Unchanged);
            }
            let was = state.barred;
            state.credit_limit = company.credit_limit;
            if let Some(o) = state.owner.get_mut(usize::from(MONEY)) {
                o.floor = company.credit_limit;
            }
            state.barred = company.barred;
            self.note_barred(was, company.barred);
            return Ok(Applied::Changed);
        }
        if !balance_given {
            return Err("balance: missing (a new company needs its opening balance)".into());
        }
        if self.companies.len() >= u32::MAX as usize {
            return Err("too many companies".into());
        }
        let i = self.companies.len();
        let (shard, shards) = self.shard();
        let state = company_state(company, i, shard, shards, cheapest_block(&self.tariffs));
        self.companies.push(state);
        self.company_ids.push(company.id.clone());
        self.index
            .company_by_id
            .insert(company.id.clone(), i as u32);
        self.note_barred(false, company.barred);
        Ok(Applied::Credited {
            company: i as u32,
            package: None,
            amount: company.balance,
        })
    }

    fn upsert_package(&mut self, package: &Package, company_id: &str) -> Result<Applied, String> {
        let Some(c) = self.company_by_id(company_id) else {
            return Err(format!("company: no company {company_id:?}"));
        };
        let amount = i64::try_from(package.amount)
            .map_err(|_| format!("amount: at most {} units", i64::MAX))?;
        let Some(&owner) = self.package_company.get(&package.id) else {
            let mut p = package.clone();
            p.company = c;
            let mut state = std::mem::replace(&mut self.companies[c as usize], placeholder());
            if state.packages.len() >= usize::from(u16::MAX) - 1 {
                self.companies[c as usize] = state;
                return Err("the company holds too many packages".into());
            }
            self.push_package(&mut state, c, p);
            let index = (state.packages.len() - 1) as u16;
            self.companies[c as usize] = state;
            self.package_company.insert(package.id.clone(), c);
            return Ok(Applied::Credited {
                company: c,
                package: Some(index),
                amount,
            });
        };
        if owner != c {
            return Err(format!(
                "id: package {:?} belongs to company {:?}",
                package.id,
                self.company_id(owner)
            ));
        }
        let state = &self.companies[c as usize];
        let Some(index) = state.packages.iter().position(|(p, _)| p.id == package.id) else {
            return Err(format!("id: package {:?} not found", package.id));
        };
        let old = &state.packages[index].0;
        if old.unit != package.unit {
            return Err(format!(
                "unit: package {:?} counts {}; a package's unit does not change",
                package.id,
                old.unit.as_str()
            ));
        }
        let Some(added) = package.amount.checked_sub(old.amount) else {
            return Err(format!(
                "amount: package {:?} has {} units; its amount may grow, not shrink",
                package.id, old.amount
            ));
        };
        let added = i64::try_from(added).unwrap_or(i64::MAX);
        // A later expiry or more units is an extension: billing gets a record of it.
        let longer = old.valid_until != package.valid_until;
        let same = old.rating_groups == package.rating_groups
            && !longer
            && old.priority == package.priority;
        if added == 0 && same {
            return Ok(Applied::Unchanged);
        }
        // Units added: checked before anything changes.
        let bucket = package_bucket(index);
        let id = self.company_ids[c as usize].clone();
        if added > 0 {
            let state = &self.companies[c as usize];
            let fits = if self.shards == 1 {
                state.packages[index]
                    .1
                    .available
                    .checked_add(added)
                    .is_some()
                    && state.packages[index]
                        .1
                        .credited
                        .checked_add(added)
                        .is_some()
            } else {
                state
                    .owner
                    .get(usize::from(bucket))
                    .is_none_or(|o| o.remainder.checked_add(added).is_some())
            };
            if !fits {
                return Err("amount: the package's units would overflow".into());
            }
        }
        let shards = self.shards;
        let Engine {
            companies, mail, ..
        } = self;
        let state = &mut companies[c as usize];
        {
            let p = &mut state.packages[index].0;
            p.amount = package.amount;
            p.rating_groups.clone_from(&package.rating_groups);
            p.valid_until = package.valid_until;
            p.priority = package.priority;
        }
        if added > 0 {
            credit(state, shards, mail, c, bucket, &id, added);
        }
        Ok(if added > 0 || longer {
            Applied::Credited {
                company: c,
                package: Some(index as u16),
                amount: added,
            }
        } else {
            Applied::Changed
        })
    }

    fn upsert_subscriber(
        &mut self,
        msisdn: Option<u64>,
        imsi: Option<u64>,
        company_id: &str,
        barred: bool,
    ) -> Result<Applied, String> {
        let Some(company) = self.company_by_id(company_id) else {
            return Err(format!("company: no company {company_id:?}"));
        };
        let existing = match msisdn {
            Some(m) => self.index.by_msisdn.get(&m).copied(),
            None => imsi.and_then(|i| self.index.by_imsi.get(&i).copied()),
        };
        if let Some(i) = imsi {
            if let Some(&other) = self.index.by_imsi.get(&i) {
                if Some(other) != existing {
                    return Err(format!(
                        "imsi: {} belongs to another subscriber",
                        digits_of(i)
                    ));
                }
            }
        }
        let new = Subscriber {
            msisdn,
            imsi,
            company,
            barred,
        };
        let mut was = false;
        let s = match existing {
            Some(s) => {
                let old = self.subscribers[s as usize];
                if old == new {
                    return Ok(Applied::Unchanged);
                }
                was = old.barred;
                // Its open sessions finish on the company they started on.
                if let Some(m) = old.msisdn.filter(|m| Some(*m) != msisdn) {
                    self.index.by_msisdn.remove(&m);
                }
                if let Some(i) = old.imsi.filter(|i| Some(*i) != imsi) {
                    self.index.by_imsi.remove(&i);
                }
                self.subscribers[s as usize] = new;
                s
            }
            None => {
                if self.subscribers.len() >= u32::MAX as usize {
                    return Err("too many subscribers".into());
                }
                self.subscribers.push(new);
                (self.subscribers.len() - 1) as u32
            }
        };
        if let Some(m) = msisdn {
            self.index.by_msisdn.insert(m, s);
        }
        if let Some(i) = imsi {
            self.index.by_imsi.insert(i, s);
        }
        self.note_barred(was, barred);
        Ok(Applied::Changed)
    }

    fn delete_subscriber(
        &mut self,
        msisdn: Option<u64>,
        imsi: Option<u64>,
    ) -> Result<Applied, String> {
        let found = match msisdn {
            Some(m) => self.index.by_msisdn.get(&m).copied(),
            None => imsi.and_then(|i| self.index.by_imsi.get(&i).copied()),
        };
        let Some(s) = found else {
            let key = msisdn.map_or_else(
                || format!("imsi {}", imsi.map(digits_of).unwrap_or_default()),
                |m| format!("msisdn {}", digits_of(m)),
            );
            return Err(format!("no subscriber with {key}"));
        };
        let old = self.subscribers[s as usize];
        if let Some(m) = old.msisdn {
            self.index.by_msisdn.remove(&m);
        }
        if let Some(i) = old.imsi {
            self.index.by_imsi.remove(&i);
        }
        // The slot stays (open sessions refer to it), unreachable and barred: its open
        // sessions have their usage settled and get no more units.
        self.subscribers[s as usize] = Subscriber {
            msisdn: None,
            imsi: None,
            company: old.company,
            barred: true,
        };
        self.note_barred(old.barred, true);
        Ok(Applied::Changed)
    }

    fn note_barred(&mut self, was: bool, is: bool) {
        match (was, is) {
            (false, true) => self.barred_count += 1,
            (true, false) => self.barred_count -= 1,
            _ => {}
        }
    }

    /// A correction of `amount` micro-units (either sign) to company `c`'s money, on
    /// its owner shard (`Ok(false)` elsewhere: nothing to do). A negative one takes at
    /// most what is not reserved or leased out (down to the credit limit).
    pub fn adjust(&mut self, c: u32, amount: i64) -> Result<bool, String> {
        if c as usize >= self.companies.len() {
            return Err("no such company".into());
        }
        if self.shards > 1 && self.owner_of(c) != self.mail.shard {
            return Ok(false);
        }
        if amount >= 0 {
            return if self.top_up(c, amount) {
                Ok(true)
            } else {
                Err("the balance would overflow".into())
            };
        }
        let take = amount.checked_neg().ok_or("amount out of range")?;
        let state = &mut self.companies[c as usize];
        if self.shards == 1 {
            let room = state.money.available.saturating_add(state.credit_limit);
            if take > room {
                return Err(format!(
                    "the company has {room} micro-units it could still be granted; a correction takes no more"
                ));
            }
            let (Some(available), Some(credited)) = (
                state.money.available.checked_sub(take),
                state.money.credited.checked_sub(take),
            ) else {
                return Err("the balance would overflow".into());
            };
            state.money.available = available;
            state.money.credited = credited;
            return Ok(true);
        }
        let Some(o) = state.owner.get_mut(usize::from(MONEY)) else {
            return Err("no owner state for the company".into());
        };
        let room = o.room();
        if take > room {
            return Err(format!(
                "{room} micro-units are at the owner shard now (the rest is leased to shards serving sessions); a correction takes no more: retry later or take less"
            ));
        }
        o.remainder -= take;
        Ok(true)
    }

    /// What this shard holds of the provisioning, as a dataset: companies with the
    /// money this shard holds of them (available plus reserved; the owner's remainder
    /// on the owner shard), packages with the units likewise. The sum over the shards
    /// (`Dataset` lines merged by key) is the company's.
    pub fn export(&self) -> Dataset {
        self.export_with(&[])
    }

    /// Escrow money and units this shard sent to shard `to` that `to` has not taken
    /// (it took up to message `received`): `(company, bucket, amount)`, to be counted
    /// in an export made while they are on their way (`export_with`).
    pub fn in_flight_to(&self, to: u16, received: u64) -> Vec<(u32, u16, i64)> {
        use crate::charging::escrow::EscrowMsg;
        self.undelivered(to, received)
            .filter_map(|e| match e.msg {
                EscrowMsg::Lease {
                    company,
                    bucket,
                    amount,
                    ..
                }
                | EscrowMsg::Return {
                    company,
                    bucket,
                    amount,
                    ..
                } => Some((company, bucket, amount)),
                _ => None,
            })
            .collect()
    }

    /// As `export`, with `extra` (company, bucket, amount) counted in: escrow in flight
    /// between shards (`in_flight_to`).
    pub fn export_with(&self, extra: &[(u32, u16, i64)]) -> Dataset {
        let more = |c: usize, b: u16| -> i64 {
            extra
                .iter()
                .filter(|(ec, eb, _)| *ec as usize == c && *eb == b)
                .fold(0i64, |t, (_, _, a)| t.saturating_add(*a))
        };
        let mut d = Dataset {
            tariffs: self
                .tariffs
                .iter()
                .filter(|t| t.rating_group.is_some() || t.service_identifier.is_some())
                .cloned()
                .collect(),
            ..Dataset::default()
        };
        for (i, c) in self.companies.iter().enumerate() {
            let remainder = |b: usize| c.owner.get(b).map_or(0, |o| o.remainder);
            d.companies.push(Company {
                id: self.company_ids[i].clone(),
                balance: c
                    .money
                    .available
                    .saturating_add(c.money.reserved)
                    .saturating_add(remainder(0))
                    .saturating_add(more(i, 0)),
                credit_limit: c.credit_limit,
                barred: c.barred,
            });
            for (k, (p, b)) in c.packages.iter().enumerate() {
                let units = b
                    .available
                    .saturating_add(b.reserved)
                    .saturating_add(remainder(k + 1))
                    .saturating_add(more(i, (k + 1) as u16));
                d.packages.push(Package {
                    amount: u64::try_from(units).unwrap_or(0),
                    ..p.clone()
                });
            }
        }
        d.subscribers = self
            .subscribers
            .iter()
            .filter(|s| s.msisdn.is_some() || s.imsi.is_some())
            .copied()
            .collect();
        d
    }

    /// The subscriber with this MSISDN (packed digits), with its company's id.
    pub fn subscriber_by_msisdn_key(&self, msisdn: u64) -> Option<(Subscriber, &str)> {
        let s = *self
            .subscribers
            .get(*self.index.by_msisdn.get(&msisdn)? as usize)?;
        Some((s, self.company_id(s.company)))
    }

    /// Company `c`'s provisioning (its balance left 0).
    pub fn company_meta(&self, c: u32) -> Option<Company> {
        let state = self.companies.get(c as usize)?;
        Some(Company {
            id: self.company_ids[c as usize].clone(),
            balance: 0,
            credit_limit: state.credit_limit,
            barred: state.barred,
        })
    }

    /// The idempotency keys of operations changes.
    pub fn keys(&self) -> &OpKeys {
        &self.keys
    }

    pub fn keys_mut(&mut self) -> &mut OpKeys {
        &mut self.keys
    }
}

/// An empty company state, held while the real one is worked on.
pub(super) fn placeholder() -> super::CompanyState {
    super::CompanyState {
        money: Default::default(),
        credit_limit: 0,
        barred: false,
        packages: Vec::new(),
        refunded: 0,
        slices: Vec::new(),
        owner: Vec::new(),
    }
}

/// Credits `amount` to bucket `bucket` of company `c`: whole on a lone shard, to the
/// owner's remainder with several (nothing on the other shards). Checked by the caller.
fn credit(
    state: &mut super::CompanyState,
    shards: u16,
    mail: &mut Mail,
    c: u32,
    bucket: u16,
    id: &str,
    amount: i64,
) {
    if shards == 1 {
        if let Some(b) = state.bucket_mut(bucket) {
            let credited = b.credit(amount);
            super::must(credited, "units added to a package", id);
        }
        return;
    }
    if let Some(o) = state.owner.get_mut(usize::from(bucket)) {
        o.credit(id, amount, &mut mail.owner_send(c, bucket));
    }
}

/// An operations change's idempotency key as the shards keep it: a hash of the route
/// and the `Idempotency-Key` header, and a hash of the body it came with.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OpKey {
    pub key: u64,
    pub body: u64,
}

/// Keys kept per shard, at most (the oldest go first).
pub const KEYS_MAX: usize = 1 << 20;

/// How long an idempotency key is kept: 24 hours.
pub const KEYS_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// A key's entry: when it was used, and (on shard 0) the answer given.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyEntry {
    pub key: OpKey,
    pub ts_ms: u64,
    /// HTTP status and body of the answer (empty until it is known).
    pub status: u16,
    pub answer: Vec<u8>,
}

/// Bytes of answers kept under idempotency keys, at most, per shard: beyond it the
/// oldest answers give way to a note (their keys stay, so nothing is made twice).
pub const KEY_ANSWERS_BYTES_MAX: usize = 64 << 20;

/// What an answer that gave way says.
pub const ANSWER_NOT_KEPT: &[u8] =
    b"{\"error\":\"the first answer under this Idempotency-Key is no longer kept; the change was made\"}\n";

/// The idempotency keys a shard has seen within the window, oldest first.
#[derive(Debug, Default)]
pub struct OpKeys {
    order: VecDeque<KeyEntry>,
    by_key: crate::FastMap<u64, u64>,
    /// Entries dropped from the front so far (positions in `by_key` count from it).
    dropped: u64,
    /// Bytes of the answers held, and how many entries from the front have given
    /// theirs way.
    answer_bytes: usize,
    trimmed: usize,
}

impl OpKeys {
    /// The entry of `key`, if seen within the window.
    pub fn get(&self, key: u64) -> Option<&KeyEntry> {
        let pos = *self.by_key.get(&key)?;
        self.order.get(usize::try_from(pos - self.dropped).ok()?)
    }

    /// Records `key` used at `ts_ms` (its answer, if known), dropping entries older
    /// than `window_ms` and the oldest beyond `KEYS_MAX`.
    pub fn insert(&mut self, key: OpKey, ts_ms: u64, status: u16, answer: Vec<u8>, window_ms: u64) {
        self.expire(ts_ms, window_ms);
        if let Some(&pos) = self.by_key.get(&key.key) {
            if let Some(e) = usize::try_from(pos - self.dropped)
                .ok()
                .and_then(|i| self.order.get_mut(i))
            {
                if status != 0 {
                    self.answer_bytes = self.answer_bytes - e.answer.len() + answer.len();
                    e.status = status;
                    e.answer = answer;
                }
                self.trim();
                return;
            }
        }
        while self.order.len() >= KEYS_MAX {
            self.pop();
        }
        self.by_key
            .insert(key.key, self.dropped + self.order.len() as u64);
        self.answer_bytes += answer.len();
        self.order.push_back(KeyEntry {
            key,
            ts_ms,
            status,
            answer,
        });
        self.trim();
    }

    /// The oldest answers give way to a note while they hold too many bytes.
    fn trim(&mut self) {
        while self.answer_bytes > KEY_ANSWERS_BYTES_MAX && self.trimmed < self.order.len() {
            let e = &mut self.order[self.trimmed];
            if e.answer.len() > ANSWER_NOT_KEPT.len() {
                self.answer_bytes = self.answer_bytes - e.answer.len() + ANSWER_NOT_KEPT.len();
                e.answer = ANSWER_NOT_KEPT.to_vec();
            }
            self.trimmed += 1;
        }
    }

    fn pop(&mut self) {
        if let Some(e) = self.order.pop_front() {
            if self.by_key.get(&e.key.key) == Some(&self.dropped) {
                self.by_key.remove(&e.key.key);
            }
            self.answer_bytes -= e.answer.len();
            self.trimmed = self.trimmed.saturating_sub(1);
            self.dropped += 1;
        }
    }

    /// Drops the entries older than `window_ms` at `now_ms`.
    pub fn expire(&mut self, now_ms: u64, window_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|e| e.ts_ms.saturating_add(window_ms) < now_ms)
        {
            self.pop();
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every entry, oldest first (for snapshots).
    pub fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.order.iter()
    }
}
