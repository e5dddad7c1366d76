//! Escrowed balances: one company bucket (its money, or one package's units) split
//! between an owner shard, which holds the unleased remainder, and slices on the shards
//! that serve the company's sessions, which grant from what was leased to them without
//! leaving their core (the escrow method; O'Neil, 1986).
//!
//! Sans-IO: the owner and the slices exchange `EscrowMsg`s that the runtime carries
//! between cores in any order. Money is conserved exactly:
//! `owner.remainder + Σ slice totals + in flight == provisioned + credited − settled`,
//! where a slice's total is its available plus reserved amount.

use super::ledger::{Bucket, LedgerError};

/// Messages between the owner and the slices of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowMsg {
    /// Slice → owner: please lease me about `want`.
    Refill { shard: u16, want: i64 },
    /// Owner → slice: `amount` is yours (may be 0: nothing left).
    Lease { amount: i64 },
    /// Owner → slice: send back what you are not using.
    Recall,
    /// Slice → owner: `amount` comes home (after a recall, or idle).
    Return { shard: u16, amount: i64 },
}

/// The owner's side: the remainder not leased to any slice.
#[derive(Clone, Debug)]
pub struct EscrowOwner {
    pub remainder: i64,
    /// Smallest lease worth sending; below it the whole remainder goes.
    pub lease_min: i64,
    /// Share of the remainder one lease may take, as a divisor (4: a quarter).
    pub lease_divisor: i64,
}

impl EscrowOwner {
    pub fn new(amount: i64) -> EscrowOwner {
        EscrowOwner {
            remainder: amount,
            lease_min: 1,
            lease_divisor: 4,
        }
    }

    /// How much a refill asking for `want` gets: at most a share of the remainder, so
    /// the last units are not stranded on one core, but never less than `lease_min`
    /// (or what is left).
    pub fn lease_size(&self, want: i64) -> i64 {
        if self.remainder <= 0 {
            return 0;
        }
        let share = (self.remainder / self.lease_divisor.max(1)).max(self.lease_min);
        want.max(0).min(share).min(self.remainder)
    }

    /// Handles a slice's message; returns the answer to send back to that slice.
    pub fn handle(&mut self, msg: EscrowMsg) -> Option<EscrowMsg> {
        match msg {
            EscrowMsg::Refill { want, .. } => {
                let amount = self.lease_size(want);
                self.remainder -= amount;
                Some(EscrowMsg::Lease { amount })
            }
            EscrowMsg::Return { amount, .. } => {
                self.remainder += amount;
                None
            }
            EscrowMsg::Lease { .. } | EscrowMsg::Recall => None,
        }
    }

    /// A top-up or refund for the company: the remainder grows.
    pub fn credit(&mut self, amount: i64) {
        self.remainder += amount.max(0);
    }
}

/// A serving shard's slice: a ledger bucket of what was leased to it.
#[derive(Clone, Debug)]
pub struct EscrowSlice {
    pub shard: u16,
    pub bucket: Bucket,
    /// A refill is on its way: do not ask twice.
    pub refill_pending: bool,
    /// Ask for more when available falls below this.
    pub low_water: i64,
}

impl EscrowSlice {
    pub fn new(shard: u16, low_water: i64) -> EscrowSlice {
        EscrowSlice {
            shard,
            bucket: Bucket::new(0),
            refill_pending: false,
            low_water,
        }
    }

    /// Reserves up to `want` from the slice. Returns what was reserved and, when the
    /// slice runs low, the refill to send to the owner (at most one outstanding).
    pub fn reserve(&mut self, want: i64) -> Result<(i64, Option<EscrowMsg>), LedgerError> {
        let got = self.bucket.reserve(want, 0)?;
        Ok((got, self.maybe_refill(want)))
    }

    /// Settles a reservation (see `Bucket::settle`).
    pub fn settle(
        &mut self,
        reservation: i64,
        used: i64,
    ) -> Result<Option<EscrowMsg>, LedgerError> {
        self.bucket.settle(reservation, used)?;
        Ok(self.maybe_refill(0))
    }

    fn maybe_refill(&mut self, want: i64) -> Option<EscrowMsg> {
        if self.refill_pending || self.bucket.available >= self.low_water {
            return None;
        }
        self.refill_pending = true;
        Some(EscrowMsg::Refill {
            shard: self.shard,
            want: want.max(self.low_water) * 2,
        })
    }

    /// Handles the owner's message; returns the answer to send back.
    pub fn handle(&mut self, msg: EscrowMsg) -> Option<EscrowMsg> {
        match msg {
            EscrowMsg::Lease { amount } => {
                self.refill_pending = false;
                // A lease is credited to the slice (its own provisioned money).
                let _ = self.bucket.credit(amount);
                None
            }
            EscrowMsg::Recall => {
                let amount = self.bucket.available.max(0);
                if amount == 0 {
                    return Some(EscrowMsg::Return {
                        shard: self.shard,
                        amount: 0,
                    });
                }
                // What goes home leaves the slice as if settled elsewhere: the slice's
                // `credited` shrinks with it, so the slice stays conserved.
                self.bucket.available -= amount;
                self.bucket.credited -= amount;
                Some(EscrowMsg::Return {
                    shard: self.shard,
                    amount,
                })
            }
            EscrowMsg::Refill { .. } | EscrowMsg::Return { .. } => None,
        }
    }

    /// Everything the slice holds: available and reserved.
    pub fn total(&self) -> i64 {
        self.bucket.available + self.bucket.reserved
    }
}
