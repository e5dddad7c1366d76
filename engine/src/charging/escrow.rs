//! Escrowed company balances across shards (the escrow method; O'Neil, 1986).
//!
//! Every company has an owner shard (`company % shards`). For each of the company's
//! buckets (its money, and each package's units) the owner keeps the unleased
//! remainder; every shard that serves the company's sessions holds a slice, leased from
//! the owner, and grants from it without leaving its core.
//!
//! - A slice that falls below its low-water mark asks for a refill in the background
//!   (`Refill`, not urgent); the owner leases at most a share of what it has
//!   (`remainder / (2 × shards)`), so leases shrink as the company runs low and the last
//!   units are not stranded on one core.
//! - A request the slice cannot cover waits; the slice asks for the shortfall
//!   (`Refill`, urgent). If the owner cannot cover it either, it recalls the unreserved
//!   part of every other slice (`Recall` / `Return`) and then leases everything to the
//!   asking shard as `all_in`: that shard now knows it holds all the company has, and
//!   only then does it answer Final-Unit-Indication or 4012. A company is refused only
//!   when all that is left cannot cover the request, not because one slice ran dry.
//! - While a shard holds a bucket `all_in`, money reaching the owner (a top-up, an idle
//!   return) is forwarded to it; a recall for another shard ends it.
//! - When a recall finds nothing anywhere (less than buys anything: `min_unit`), every
//!   shard is told (a lease of 0, all in) and refuses on its own; money reaching the
//!   owner that makes it worth something again recalls them all, which tells them the
//!   bucket is not empty any more.
//! - A recalled slice keeps sending home what frees up on it (reservations released,
//!   refunds) until it is leased to again, so it reaches the shard holding the bucket.
//! - A slice untouched for a while sends its unreserved part home (`Return`, not
//!   recalled).
//!
//! Messages travel between shards in envelopes numbered per (sender, receiver) channel,
//! first in first out on each channel and in any order across channels. Each carries
//! the last number its sender received on the opposite channel (`ack`), so the sender
//! can forget what was delivered and, after a crash, deliver again what was not.
//!
//! Money is conserved exactly: for each bucket, the owner's remainder, every slice's
//! available, reserved and settled amounts and the leases and returns in flight add up
//! to what was provisioned and credited.

use super::invariant::broken;

/// The bucket of a company's money; a package's bucket is `1 + its index`.
pub const MONEY: u16 = 0;

/// The bucket of the company's package at `index`.
pub fn package_bucket(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

/// A message between the owner of a company's bucket and one of its slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EscrowMsg {
    /// Slice → owner: lease me about `want`. Urgent: a request waits for it.
    Refill {
        company: u32,
        bucket: u16,
        want: i64,
        urgent: bool,
    },
    /// Owner → slice: `amount` is yours (possibly 0). `all_in`: and it is everything
    /// the company has in this bucket.
    Lease {
        company: u32,
        bucket: u16,
        amount: i64,
        all_in: bool,
    },
    /// Owner → slice: send home what you are not using.
    Recall { company: u32, bucket: u16 },
    /// Slice → owner: `amount` comes home (`recalled`: the answer to a `Recall`).
    Return {
        company: u32,
        bucket: u16,
        amount: i64,
        recalled: bool,
    },
    /// Nothing but the envelope's `ack`: sent when messages were taken from a shard
    /// and nothing else is going back to it. Not kept for redelivery.
    Ack,
}

impl EscrowMsg {
    /// The company the message is about (`u32::MAX` for an `Ack`).
    pub fn company(&self) -> u32 {
        match *self {
            EscrowMsg::Ack => u32::MAX,
            EscrowMsg::Refill { company, .. }
            | EscrowMsg::Lease { company, .. }
            | EscrowMsg::Recall { company, .. }
            | EscrowMsg::Return { company, .. } => company,
        }
    }

    /// Money (or units) the message carries: what is in flight while it travels.
    pub fn amount(&self) -> i64 {
        match *self {
            EscrowMsg::Lease { amount, .. } | EscrowMsg::Return { amount, .. } => amount,
            EscrowMsg::Refill { .. } | EscrowMsg::Recall { .. } | EscrowMsg::Ack => 0,
        }
    }

    /// The bucket the message is about.
    pub fn bucket(&self) -> u16 {
        match *self {
            EscrowMsg::Ack => 0,
            EscrowMsg::Refill { bucket, .. }
            | EscrowMsg::Lease { bucket, .. }
            | EscrowMsg::Recall { bucket, .. }
            | EscrowMsg::Return { bucket, .. } => bucket,
        }
    }
}

/// A message on its way from one shard to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Envelope {
    pub from: u16,
    pub to: u16,
    /// Numbered from 1 on each (from, to) channel.
    pub seq: u64,
    /// The last number `from` received from `to`.
    pub ack: u64,
    pub msg: EscrowMsg,
}

/// A serving shard's state for one bucket of a company (beside the bucket itself).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SliceState {
    /// A refill was asked for and not yet answered: do not ask twice.
    pub refill_pending: bool,
    /// An urgent one (a request waits for it).
    pub urgent_pending: bool,
    /// The slice holds everything the company has in this bucket: decisions that
    /// depend on the whole balance (Final-Unit-Indication, 4012) may be taken here.
    pub all_in: bool,
    /// Ask for more in the background when the slice's available falls below this
    /// (four times the largest single need seen).
    pub low_water: i64,
    /// When the slice was last used (Unix ms; 0 if never): slices idle since
    /// `SLICE_IDLE_MS` go home, never-used starting shares stay.
    pub last_used_ms: u64,
    /// Recalled, and no lease since: another shard is gathering the bucket, so what
    /// frees up here (a reservation released, a refund) goes home at once.
    pub returning: bool,
}

/// The owner's state for one bucket of a company.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OwnerBucket {
    /// Not leased to any slice. May go down to `-floor` (the credit limit).
    pub remainder: i64,
    /// How far below zero leases may take the remainder (the company's credit limit
    /// for money, 0 for packages).
    pub floor: i64,
    /// The shard holding the bucket all in, if any.
    pub holder: Option<u16>,
    /// A recall under way: shards yet to answer (bit per shard)...
    pub outstanding: u64,
    /// ...and shards waiting for its end.
    pub waiters: u64,
    /// Shards told the bucket is empty everywhere (they refuse on their own until a
    /// recall tells them otherwise).
    pub told_empty: u64,
    /// Less than this buys nothing (the cheapest block of any tariff, for money; one
    /// unit, for a package): the bucket counts as empty below it.
    pub min_unit: i64,
}

/// What the owner sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerAction {
    Lease { amount: i64, all_in: bool },
    Recall,
}

impl OwnerBucket {
    pub fn new(amount: i64, floor: i64) -> OwnerBucket {
        OwnerBucket {
            remainder: amount,
            floor: floor.max(0),
            min_unit: 1,
            ..OwnerBucket::default()
        }
    }

    /// What may still be leased.
    pub fn room(&self) -> i64 {
        self.remainder.saturating_add(self.floor).max(0)
    }

    fn lease(
        &mut self,
        company: &str,
        to: u16,
        amount: i64,
        all_in: bool,
        send: &mut impl FnMut(u16, OwnerAction),
    ) {
        self.remainder = self.remainder.checked_sub(amount).unwrap_or_else(|| {
            broken(
                "a lease taken from the owner's remainder",
                company,
                &(self.remainder, amount),
            )
        });
        send(to, OwnerAction::Lease { amount, all_in });
    }

    /// A slice asks for a refill.
    pub fn refill(
        &mut self,
        company: &str,
        shards: u16,
        from: u16,
        want: i64,
        urgent: bool,
        send: &mut impl FnMut(u16, OwnerAction),
    ) {
        let want = want.max(1);
        if self.outstanding != 0 {
            // A recall is under way: its end serves the urgent ones.
            if urgent {
                self.waiters |= 1 << from;
            } else {
                self.lease(company, from, 0, false, send);
            }
            return;
        }
        let room = self.room();
        let share = room / (2 * i64::from(shards.max(1)));
        if !urgent {
            // Nothing worth having to spare: the shards told the bucket is empty stay so.
            let amount = if room < self.min_unit {
                0
            } else {
                want.min(share.max(1)).min(room)
            };
            self.lease(company, from, amount, false, send);
            return;
        }
        // Shards that hold it all, or were told it is empty, must learn otherwise
        // first: that takes a recall.
        if room >= want && self.holder.is_none() && self.told_empty == 0 {
            let amount = want.max(share).min(room);
            self.lease(company, from, amount, false, send);
            return;
        }
        // Not enough here: bring home what every slice is not using, the asking one's
        // too (so that no shard goes on believing it holds everything, or nothing).
        self.holder = None;
        self.told_empty = 0;
        self.waiters |= 1 << from;
        for s in 0..shards {
            self.outstanding |= 1 << s;
            send(s, OwnerAction::Recall);
        }
    }

    /// Money (or units) comes home.
    pub fn returned(
        &mut self,
        company: &str,
        shards: u16,
        from: u16,
        amount: i64,
        recalled: bool,
        send: &mut impl FnMut(u16, OwnerAction),
    ) {
        self.remainder = self.remainder.checked_add(amount).unwrap_or_else(|| {
            broken(
                "a return added to the owner's remainder",
                company,
                &(self.remainder, amount),
            )
        });
        if recalled && self.outstanding & (1 << from) != 0 {
            self.outstanding &= !(1 << from);
            if self.outstanding == 0 {
                self.recall_done(company, shards, send);
            }
            return;
        }
        self.arrived(company, send);
    }

    /// A top-up (or a package's units) for the company.
    pub fn credit(&mut self, company: &str, amount: i64, send: &mut impl FnMut(u16, OwnerAction)) {
        // `Engine::top_up` checked the sum first.
        self.remainder = self.remainder.checked_add(amount).unwrap_or_else(|| {
            broken(
                "a top-up added to the owner's remainder",
                company,
                &(self.remainder, amount),
            )
        });
        self.arrived(company, send);
    }

    /// Something reached the owner outside a recall. While a shard holds the bucket all
    /// in, it goes on to it; while the shards believe the bucket empty, they are told
    /// otherwise (recalled: their next request asks again).
    fn arrived(&mut self, company: &str, send: &mut impl FnMut(u16, OwnerAction)) {
        let room = self.room();
        if self.outstanding != 0 || room == 0 {
            return;
        }
        if let Some(h) = self.holder {
            self.lease(company, h, room, true, send);
        } else if self.told_empty != 0 && room >= self.min_unit {
            self.outstanding = std::mem::take(&mut self.told_empty);
            for s in 0..64u16 {
                if self.outstanding & (1 << s) != 0 {
                    send(s, OwnerAction::Recall);
                }
            }
        }
    }

    fn recall_done(&mut self, company: &str, shards: u16, send: &mut impl FnMut(u16, OwnerAction)) {
        let waiters = std::mem::take(&mut self.waiters);
        let Some(first) = (0..shards).find(|s| waiters & (1 << s) != 0) else {
            // Nobody waits (the shards were told the bucket is not empty any more);
            // what came home stays here for the next refill.
            return;
        };
        let room = self.room();
        if room < self.min_unit.max(1) {
            // Nothing anywhere (nothing that buys anything): every shard may refuse on
            // its own now.
            for s in 0..shards {
                self.told_empty |= 1 << s;
                send(
                    s,
                    OwnerAction::Lease {
                        amount: 0,
                        all_in: true,
                    },
                );
            }
            return;
        }
        self.holder = Some(first);
        self.lease(company, first, room, true, send);
        // The others ask again: a new recall takes it from the first.
        for s in (first + 1)..shards {
            if waiters & (1 << s) != 0 {
                self.refill(company, shards, s, 1, true, send);
            }
        }
    }
}
