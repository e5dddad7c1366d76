//! Property tests of the reservation ledger: random sequences of reserve, settle (with
//! usage below, at and beyond the reservation), release and credit keep the balance
//! conserved to the micro-unit, never reserve beyond the credit limit, and leave the
//! bucket unchanged when an operation is refused.

use gyro_engine::charging::ledger::{Bucket, LedgerError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Reserve(i64),
    Settle { which: usize, used: i64 },
    Release(usize),
    Credit(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..5_000_000).prop_map(Op::Reserve),
        (any::<usize>(), 0i64..8_000_000).prop_map(|(which, used)| Op::Settle { which, used }),
        any::<usize>().prop_map(Op::Release),
        (0i64..3_000_000).prop_map(Op::Credit),
    ]
}

proptest! {
    #[test]
    fn money_is_conserved_and_reservations_respect_the_floor(
        start in -1_000_000i64..20_000_000,
        floor in 0i64..2_000_000,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut b = Bucket::new(start);
        let mut open: Vec<i64> = Vec::new();
        for op in ops {
            let before = b;
            match op {
                Op::Reserve(want) => {
                    let got = b.reserve(want, floor).unwrap();
                    prop_assert!(got >= 0 && got <= want);
                    if got > 0 {
                        // A reservation never takes the balance below the credit limit.
                        prop_assert!(b.available >= -floor);
                        open.push(got);
                    }
                    if got < want {
                        prop_assert!(b.available <= -floor || before.available + floor <= got);
                    }
                }
                Op::Settle { which, used } if !open.is_empty() => {
                    let r = open.swap_remove(which % open.len());
                    b.settle(r, used).unwrap();
                    prop_assert_eq!(b.available, before.available + r - used);
                }
                Op::Release(which) if !open.is_empty() => {
                    let r = open.swap_remove(which % open.len());
                    b.release(r).unwrap();
                    prop_assert_eq!(b.available, before.available + r);
                }
                Op::Settle { .. } | Op::Release(_) => {
                    // Nothing open: settling anything is refused and changes nothing.
                    let refused = matches!(b.settle(1, 0), Err(LedgerError::NotReserved { .. }));
                    prop_assert!(refused, "settling with nothing open is refused");
                    prop_assert_eq!(b, before);
                }
                Op::Credit(n) => b.credit(n).unwrap(),
            }
            prop_assert!(b.is_conserved(), "{:?}", b);
            prop_assert_eq!(b.reserved, open.iter().sum::<i64>());
        }
    }
}

#[test]
fn refused_operations_change_nothing() {
    let mut b = Bucket::new(100);
    let before = b;
    assert_eq!(b.reserve(-1, 0), Err(LedgerError::Negative));
    assert_eq!(
        b.settle(5, 0),
        Err(LedgerError::NotReserved {
            reserved: 0,
            asked: 5
        })
    );
    assert_eq!(b.credit(-3), Err(LedgerError::Negative));
    assert_eq!(b, before);
    assert_eq!(b.reserve(150, 0), Ok(100));
    assert_eq!(
        b.reserve(10, 25),
        Ok(10),
        "a credit limit lets grants go below zero"
    );
    assert_eq!(b.available, -10);
    assert_eq!(b.reserve(100, 25), Ok(15));
    assert_eq!(b.reserve(1, 25), Ok(0));
}
