//! Grant and settlement decisions for one service, case by case: packages first by
//! priority and expiry, money at the tariff in whole blocks, Final-Unit-Indication on
//! the last affordable units, 4012 with nothing affordable, 5031 without a tariff, the
//! credit limit, refunds of unused units and charged overuse.

use gyro_engine::charging::decide::{grant, settle, Ask, Grant, Source, Wallet, ALL};
use gyro_engine::charging::ledger::Bucket;
use gyro_engine::provision::{Package, Tariff, Unit};

const MIB: u64 = 1 << 20;
const NOW: i64 = 1_800_000_000;

fn tariffs() -> Vec<Tariff> {
    vec![
        Tariff {
            rating_group: Some(10),
            service_identifier: None,
            unit: Unit::Octets,
            unit_size: MIB,
            price: 2_000,
        },
        Tariff {
            rating_group: None,
            service_identifier: Some(1),
            unit: Unit::Units,
            unit_size: 1,
            price: 50_000,
        },
    ]
}

fn package(
    id: &str,
    amount: u64,
    rgs: Vec<u32>,
    valid_until: Option<i64>,
    priority: u32,
) -> Package {
    Package {
        id: id.into(),
        company: 0,
        unit: Unit::Octets,
        amount,
        rating_groups: rgs,
        valid_until,
        priority,
    }
}

fn data(units: u64, rg: u32) -> Ask {
    Ask {
        unit: Unit::Octets,
        rating_group: Some(rg),
        service_identifier: None,
        units,
        now_s: NOW,
    }
}

#[test]
fn packages_pay_first_by_priority_then_expiry() {
    let expired = package("expired", 100 * MIB, vec![10], Some(NOW - 1), 0);
    let later = package("later", 100 * MIB, vec![10], Some(NOW + 1000), 1);
    let sooner = package("sooner", 100 * MIB, vec![10], Some(NOW + 10), 1);
    let other_rg = package("rg20", 100 * MIB, vec![20], None, 0);
    let mut pk = [
        (expired.clone(), Bucket::new(expired.amount as i64)),
        (later.clone(), Bucket::new(later.amount as i64)),
        (sooner.clone(), Bucket::new(sooner.amount as i64)),
        (other_rg.clone(), Bucket::new(other_rg.amount as i64)),
    ];
    let mut money = Bucket::new(1_000_000);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let g = grant(&mut w, &tariffs(), &data(MIB, 10)).unwrap();
    assert_eq!(
        g,
        Grant {
            result_code: 2001,
            units: MIB,
            source: Some(Source::Package {
                index: 2,
                units: MIB
            }),
            final_unit: false
        }
    );
    assert_eq!(w.money.reserved, 0, "money untouched while a package pays");
}

#[test]
fn a_package_without_rating_groups_pays_for_every_rating_group_of_its_unit() {
    let any = package("any", 10 * MIB, vec![], None, 0);
    let mut pk = [(any.clone(), Bucket::new(any.amount as i64))];
    let mut money = Bucket::new(0);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let g = grant(&mut w, &tariffs(), &data(MIB, 77)).unwrap();
    assert!(matches!(g.source, Some(Source::Package { index: 0, .. })));
    // Not for another unit.
    let sms = Ask {
        unit: Unit::Units,
        rating_group: None,
        service_identifier: Some(1),
        units: 1,
        now_s: NOW,
    };
    let g = grant(&mut w, &tariffs(), &sms).unwrap();
    assert_eq!(
        g.result_code, 4012,
        "no money for SMS, and the data package does not pay"
    );
}

#[test]
fn money_buys_whole_blocks_and_the_last_ones_carry_final_unit() {
    let mut pk: [(Package, Bucket); 0] = [];
    let mut money = Bucket::new(10_000); // five 1 MiB blocks at 2,000
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let g = grant(&mut w, &tariffs(), &data(MIB + 1, 10)).unwrap();
    assert_eq!(
        (g.units, g.final_unit),
        (2 * MIB, false),
        "a started block is granted whole"
    );
    assert_eq!(
        g.source,
        Some(Source::Money {
            tariff: 0,
            micros: 4_000
        })
    );
    let g = grant(&mut w, &tariffs(), &data(100 * MIB, 10)).unwrap();
    assert_eq!(
        (g.result_code, g.units, g.final_unit),
        (2001, 3 * MIB, true)
    );
    let g = grant(&mut w, &tariffs(), &data(MIB, 10)).unwrap();
    assert_eq!((g.result_code, g.units, g.source), (4012, 0, None));
    assert_eq!(w.money.available, 0);
    assert!(w.money.is_conserved());
}

#[test]
fn no_tariff_is_5031_and_the_credit_limit_extends_grants() {
    let mut pk: [(Package, Bucket); 0] = [];
    let mut money = Bucket::new(1_000);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 5_000,
        packages: &mut pk,
        known: ALL,
    };
    assert_eq!(
        grant(&mut w, &tariffs(), &data(MIB, 99))
            .unwrap()
            .result_code,
        5031
    );
    // 1,000 + 5,000 of credit: three blocks.
    let g = grant(&mut w, &tariffs(), &data(10 * MIB, 10)).unwrap();
    assert_eq!((g.units, g.final_unit), (3 * MIB, true));
    assert_eq!(w.money.available, -5_000);
}

#[test]
fn settlement_refunds_unused_units_and_charges_overuse() {
    let mut pk: [(Package, Bucket); 0] = [];
    let mut money = Bucket::new(100_000);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let ask = data(10 * MIB, 10);
    let g = grant(&mut w, &tariffs(), &ask).unwrap();
    let c = settle(&mut w, &tariffs(), &ask, &g, 3 * MIB + 5).unwrap();
    assert_eq!((c.micros, c.overuse), (8_000, 0), "four started blocks");
    assert_eq!(w.money.available, 92_000);
    let g = grant(&mut w, &tariffs(), &data(MIB, 10)).unwrap();
    let c = settle(&mut w, &tariffs(), &ask, &g, 200 * MIB).unwrap();
    assert_eq!((c.micros, c.overuse), (400_000, 199 * MIB));
    assert_eq!(
        w.money.available,
        92_000 - 400_000,
        "overuse takes the balance below zero"
    );
    assert!(w.money.is_conserved());
}

#[test]
fn package_overuse_is_charged_to_money_and_the_last_package_units_are_final() {
    let small = package("small", 2 * MIB, vec![10], None, 0);
    let mut pk = [(small.clone(), Bucket::new(small.amount as i64))];
    let mut money = Bucket::new(0);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let ask = data(5 * MIB, 10);
    let g = grant(&mut w, &tariffs(), &ask).unwrap();
    assert_eq!(
        (g.units, g.final_unit),
        (2 * MIB, true),
        "the package's last units, and no money"
    );
    let c = settle(&mut w, &tariffs(), &ask, &g, 3 * MIB).unwrap();
    assert_eq!(
        (c.package_units, c.micros, c.overuse),
        (2 * MIB, 2_000, MIB)
    );
    assert_eq!(w.packages[0].1.available, 0);
    assert_eq!(w.money.available, -2_000);
}

#[test]
fn events_are_priced_by_service_identifier() {
    let mut pk: [(Package, Bucket); 0] = [];
    let mut money = Bucket::new(120_000);
    let mut w = Wallet {
        money: &mut money,
        credit_limit: 0,
        packages: &mut pk,
        known: ALL,
    };
    let sms = Ask {
        unit: Unit::Units,
        rating_group: None,
        service_identifier: Some(1),
        units: 1,
        now_s: NOW,
    };
    let g = grant(&mut w, &tariffs(), &sms).unwrap();
    assert_eq!(
        (g.result_code, g.units, g.source),
        (
            2001,
            1,
            Some(Source::Money {
                tariff: 1,
                micros: 50_000
            })
        )
    );
    let c = settle(&mut w, &tariffs(), &sms, &g, 1).unwrap();
    assert_eq!(c.micros, 50_000);
    let g = grant(&mut w, &tariffs(), &sms).unwrap();
    assert!(g.final_unit, "20,000 left cannot pay for another SMS");
}
