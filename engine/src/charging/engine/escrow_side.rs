//! The shard side of escrow: the messages a shard sends and receives (`Mail`), and
//! the `Engine`'s handling of them: leases, recalls and refills received, refills asked
//! for when a request waits or a slice runs low, and idle slices sent home.

use super::{Engine, EscrowCounters, SLICE_IDLE_MS};
use crate::charging::decide::Need;
use crate::charging::escrow::{self, Envelope, EscrowMsg, OwnerAction, MONEY};
use crate::charging::invariant::must;

/// Escrow messages in and out of one shard, numbered per channel.
#[derive(Default)]
pub(super) struct Mail {
    pub(super) shard: u16,
    pub(super) outbox: Vec<Envelope>,
    /// Per peer shard: the last number sent to it, and received from it.
    pub(super) sent: Vec<u64>,
    pub(super) received: Vec<u64>,
    /// Sent and not yet known to be delivered (kept for redelivery after a crash).
    pub(super) retained: Vec<Envelope>,
    /// Per peer shard: a message was taken from it and no envelope has gone back since.
    pub(super) owe_ack: Vec<bool>,
    pub(super) counters: EscrowCounters,
}

impl Mail {
    pub(super) fn send(&mut self, to: u16, msg: EscrowMsg) {
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
    pub(super) fn send_acks(&mut self) {
        for p in 0..self.owe_ack.len() {
            if self.owe_ack[p] {
                self.send(p as u16, EscrowMsg::Ack);
            }
        }
    }

    pub(super) fn owner_send(
        &mut self,
        company: u32,
        bucket: u16,
    ) -> impl FnMut(u16, OwnerAction) + '_ {
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

impl Engine {
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
                        &self.company_ids[company as usize],
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
                        &self.company_ids[company as usize],
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
                    let credited = bk.credit(amount);
                    let id = &self.company_ids[company as usize];
                    must(credited, "a lease credited to this shard's slice", id);
                }
                // Nothing new to decide with after an empty lease.
                (amount > 0 || all_in).then_some(company)
            }
            EscrowMsg::Ack => None,
            EscrowMsg::Recall { .. } => {
                let amount = c.take_home(bucket, &self.company_ids[company as usize]);
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
    pub(super) fn ask_refill(&mut self, company: u32, need: Need) {
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
    pub(super) fn keep_up(&mut self, company: u32, bucket: u16, amount: i64, now_ms: u64) {
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
    pub(super) fn idle_returns(&mut self, now_ms: u64) -> usize {
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
                let amount = c.take_home(bucket, &self.company_ids[i]);
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
}
