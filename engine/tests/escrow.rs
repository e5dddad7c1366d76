//! Escrow in simulation: one owner and four slices of a company's money, random grants,
//! settlements with over- and under-use, top-ups and recalls, and every message between
//! owner and slices delivered in a random order. After every step money is conserved
//! exactly, and no slice ever reserves more than it holds.

use gyro_engine::charging::escrow::{EscrowMsg, EscrowOwner, EscrowSlice};
use proptest::prelude::*;

struct Sim {
    owner: EscrowOwner,
    slices: Vec<EscrowSlice>,
    /// (to owner?, shard, message) in flight.
    flight: Vec<(bool, usize, EscrowMsg)>,
    open: Vec<(usize, i64)>,
    credited: i64,
    rng: u64,
}

impl Sim {
    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn send(&mut self, to_owner: bool, shard: usize, m: Option<EscrowMsg>) {
        if let Some(m) = m {
            self.flight.push((to_owner, shard, m));
        }
    }

    fn in_flight(&self) -> i64 {
        self.flight
            .iter()
            .map(|(_, _, m)| match *m {
                EscrowMsg::Lease { amount } | EscrowMsg::Return { amount, .. } => amount,
                _ => 0,
            })
            .sum()
    }

    fn settled(&self) -> i64 {
        self.slices.iter().map(|s| s.bucket.settled).sum()
    }

    fn conserved(&self) -> bool {
        let held: i64 = self.slices.iter().map(EscrowSlice::total).sum();
        self.owner.remainder + held + self.in_flight() + self.settled() == self.credited
    }

    fn step(&mut self) {
        match self.rand(10) {
            0..=3 => {
                let shard = self.rand(self.slices.len() as u64) as usize;
                let want = 1 + self.rand(5_000) as i64;
                let (got, m) = self.slices[shard].reserve(want).unwrap();
                assert!(got <= want);
                if got > 0 {
                    self.open.push((shard, got));
                }
                self.send(true, shard, m);
            }
            4..=6 if !self.open.is_empty() => {
                let i = self.rand(self.open.len() as u64) as usize;
                let (shard, r) = self.open.swap_remove(i);
                // Used: from nothing to twice the grant (overuse is charged).
                let used = self.rand(2 * r as u64 + 1) as i64;
                let m = self.slices[shard].settle(r, used).unwrap();
                self.send(true, shard, m);
            }
            7 => {
                let amount = self.rand(20_000) as i64;
                self.owner.credit(amount);
                self.credited += amount;
            }
            8 => {
                for shard in 0..self.slices.len() {
                    self.flight.push((false, shard, EscrowMsg::Recall));
                }
            }
            _ => {}
        }
        // Deliver some messages, in random order.
        for _ in 0..self.rand(3) {
            if self.flight.is_empty() {
                break;
            }
            let i = self.rand(self.flight.len() as u64) as usize;
            let (to_owner, shard, m) = self.flight.swap_remove(i);
            if to_owner {
                let answer = self.owner.handle(m);
                self.send(false, shard, answer);
            } else {
                let answer = self.slices[shard].handle(m);
                self.send(true, shard, answer);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn escrow_conserves_money_under_any_delivery_order(seed in 1u64.., provisioned in 0i64..1_000_000) {
        let mut sim = Sim {
            owner: EscrowOwner::new(provisioned),
            slices: (0..4).map(|s| EscrowSlice::new(s, 2_000)).collect(),
            flight: Vec::new(),
            open: Vec::new(),
            credited: provisioned,
            rng: seed,
        };
        for step in 0..2_000 {
            sim.step();
            prop_assert!(sim.conserved(), "step {}: not conserved", step);
            for s in &sim.slices {
                // Reservations only come out of what the slice held.
                prop_assert!(s.bucket.reserved >= 0);
                prop_assert!(s.bucket.is_conserved());
            }
            prop_assert!(sim.owner.remainder >= 0, "the owner never leases more than it has");
        }
    }
}

#[test]
fn leases_shrink_as_the_remainder_shrinks() {
    let mut o = EscrowOwner::new(1_000);
    let mut got = Vec::new();
    while o.remainder > 0 {
        match o.handle(EscrowMsg::Refill {
            shard: 0,
            want: 10_000,
        }) {
            Some(EscrowMsg::Lease { amount }) => got.push(amount),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got.iter().sum::<i64>(), 1_000);
    assert!(got.windows(2).all(|w| w[0] >= w[1]), "{got:?}");
    assert_eq!(got[0], 250, "a quarter of the remainder at most");
    assert_eq!(
        o.handle(EscrowMsg::Refill { shard: 0, want: 5 }),
        Some(EscrowMsg::Lease { amount: 0 })
    );
}
