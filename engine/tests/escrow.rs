//! The owner's side of an escrowed bucket, message by message: leases shrink with the
//! remainder, a refill the owner cannot cover recalls every slice and gives the whole
//! bucket to the shard that asked, a recall that finds nothing tells every shard, money
//! reaching the owner goes on to the shard holding the bucket or tells the shards it is
//! not empty any more. (`simulation.rs` runs the whole protocol between engines.)

use gyro_engine::charging::escrow::{OwnerAction, OwnerBucket};

fn run(
    o: &mut OwnerBucket,
    f: impl FnOnce(&mut OwnerBucket, &mut dyn FnMut(u16, OwnerAction)),
) -> Vec<(u16, OwnerAction)> {
    let mut sent = Vec::new();
    f(o, &mut |to, a| sent.push((to, a)));
    sent
}

fn lease(amount: i64, all_in: bool) -> OwnerAction {
    OwnerAction::Lease { amount, all_in }
}

#[test]
fn background_leases_shrink_as_the_remainder_shrinks() {
    let mut o = OwnerBucket::new(8_000, 0);
    let mut got = Vec::new();
    while o.remainder > 0 {
        let sent = run(&mut o, |o, s| {
            o.refill("c", 4, 1, 10_000, false, &mut |t, a| s(t, a))
        });
        match sent[..] {
            [(
                1,
                OwnerAction::Lease {
                    amount,
                    all_in: false,
                },
            )] => got.push(amount),
            _ => panic!("{sent:?}"),
        }
    }
    assert_eq!(got.iter().sum::<i64>(), 8_000);
    assert_eq!(got[0], 1_000, "an eighth of the remainder with four shards");
    assert!(got.windows(2).all(|w| w[0] >= w[1]), "{got:?}");
}

#[test]
fn an_urgent_refill_is_leased_at_once_when_the_owner_can_cover_it() {
    let mut o = OwnerBucket::new(100_000, 0);
    let sent = run(&mut o, |o, s| {
        o.refill("c", 2, 1, 30_000, true, &mut |t, a| s(t, a))
    });
    // At least what was asked for, or the background share if larger.
    assert_eq!(sent, vec![(1, lease(30_000, false))]);
    assert_eq!(o.remainder, 70_000);
}

#[test]
fn a_refill_the_owner_cannot_cover_recalls_every_slice_then_gives_everything() {
    let mut o = OwnerBucket::new(1_000, 500);
    let sent = run(&mut o, |o, s| {
        o.refill("c", 3, 2, 5_000, true, &mut |t, a| s(t, a))
    });
    assert_eq!(
        sent,
        vec![
            (0, OwnerAction::Recall),
            (1, OwnerAction::Recall),
            (2, OwnerAction::Recall)
        ]
    );
    // Another shard asks meanwhile: it waits for the end of the recall.
    assert!(run(&mut o, |o, s| o
        .refill("c", 3, 0, 10, true, &mut |t, a| s(t, a)))
    .is_empty());
    assert!(run(&mut o, |o, s| o.returned(
        "c",
        3,
        0,
        300,
        true,
        &mut |t, a| s(t, a)
    ))
    .is_empty());
    assert!(run(&mut o, |o, s| o.returned(
        "c",
        3,
        1,
        200,
        true,
        &mut |t, a| s(t, a)
    ))
    .is_empty());
    let sent = run(&mut o, |o, s| {
        o.returned("c", 3, 2, 0, true, &mut |t, a| s(t, a))
    });
    // Shard 0 waited too and comes first: it gets everything, credit limit included;
    // then shard 2's refill starts a recall again (which takes it from shard 0).
    assert_eq!(sent[0], (0, lease(1_000 + 300 + 200 + 500, true)));
    assert_eq!(o.remainder, -500);
    assert_eq!(
        &sent[1..],
        &[
            (0, OwnerAction::Recall),
            (1, OwnerAction::Recall),
            (2, OwnerAction::Recall)
        ]
    );
    assert_eq!(o.holder, None);
}

#[test]
fn a_recall_that_finds_nothing_tells_every_shard_and_money_arriving_recalls_them() {
    let mut o = OwnerBucket::new(0, 0);
    run(&mut o, |o, s| {
        o.refill("c", 2, 1, 10, true, &mut |t, a| s(t, a))
    });
    run(&mut o, |o, s| {
        o.returned("c", 2, 0, 0, true, &mut |t, a| s(t, a))
    });
    let sent = run(&mut o, |o, s| {
        o.returned("c", 2, 1, 0, true, &mut |t, a| s(t, a))
    });
    assert_eq!(sent, vec![(0, lease(0, true)), (1, lease(0, true))]);
    assert_eq!(o.told_empty, 0b11);
    // A top-up: the shards that believe the bucket empty are told otherwise.
    let sent = run(&mut o, |o, s| o.credit("c", 5_000, &mut |t, a| s(t, a)));
    assert_eq!(
        sent,
        vec![(0, OwnerAction::Recall), (1, OwnerAction::Recall)]
    );
    run(&mut o, |o, s| {
        o.returned("c", 2, 0, 0, true, &mut |t, a| s(t, a))
    });
    let sent = run(&mut o, |o, s| {
        o.returned("c", 2, 1, 0, true, &mut |t, a| s(t, a))
    });
    assert!(
        sent.is_empty(),
        "nobody waits: the money stays for the next refill"
    );
    assert_eq!(o.remainder, 5_000);
}

#[test]
fn money_reaching_the_owner_goes_on_to_the_shard_holding_everything() {
    let mut o = OwnerBucket::new(100, 0);
    run(&mut o, |o, s| {
        o.refill("c", 2, 1, 1_000, true, &mut |t, a| s(t, a))
    });
    run(&mut o, |o, s| {
        o.returned("c", 2, 0, 0, true, &mut |t, a| s(t, a))
    });
    let sent = run(&mut o, |o, s| {
        o.returned("c", 2, 1, 0, true, &mut |t, a| s(t, a))
    });
    assert_eq!(sent, vec![(1, lease(100, true))]);
    assert_eq!(o.holder, Some(1));
    let sent = run(&mut o, |o, s| o.credit("c", 700, &mut |t, a| s(t, a)));
    assert_eq!(sent, vec![(1, lease(700, true))]);
    // What a recalled slice sends home afterwards goes the same way.
    let sent = run(&mut o, |o, s| {
        o.returned("c", 2, 0, 40, false, &mut |t, a| s(t, a))
    });
    assert_eq!(sent, vec![(1, lease(40, true))]);
    assert_eq!(o.remainder, 0);
}
