//! Rating: a tariff prices blocks of `unit_size` units at `price` micro-units a block;
//! a started block is charged whole. All arithmetic is integer, checked, and saturates
//! at the limits instead of wrapping.

use crate::provision::{Package, Tariff, Unit};

/// Blocks needed to carry `units` (a started block counts).
pub fn blocks(t: &Tariff, units: u64) -> u64 {
    if t.unit_size == 0 {
        return 0;
    }
    units.div_ceil(t.unit_size)
}

/// What `units` cost, in micro-units (saturating at `i64::MAX`).
pub fn cost(t: &Tariff, units: u64) -> i64 {
    let c = i128::from(blocks(t, units)) * i128::from(t.price);
    i64::try_from(c).unwrap_or(i64::MAX)
}

/// The most units, in whole blocks, that `money` micro-units pay for: `u64::MAX` for a
/// free tariff, 0 when `money` is not positive.
pub fn affordable_units(t: &Tariff, money: i64) -> u64 {
    if money <= 0 {
        return if t.price == 0 { u64::MAX } else { 0 };
    }
    if t.price <= 0 {
        return u64::MAX;
    }
    let blocks = money as u64 / t.price as u64;
    blocks.saturating_mul(t.unit_size)
}

/// Rounds `units` up to whole blocks (what a grant of money covers).
pub fn whole_blocks(t: &Tariff, units: u64) -> u64 {
    blocks(t, units).saturating_mul(t.unit_size)
}

/// Whether a package pays for `unit` in `rating_group` at time `now_s` (Unix seconds).
pub fn package_applies(p: &Package, unit: Unit, rating_group: Option<u32>, now_s: i64) -> bool {
    p.unit == unit
        && p.valid_until.is_none_or(|t| now_s <= t)
        && (p.rating_groups.is_empty()
            || rating_group.is_some_and(|rg| p.rating_groups.contains(&rg)))
}

/// The order packages are drawn from: priority (lower first), then earliest expiry
/// (no expiry last), then file order.
pub fn package_order(a: (usize, &Package), b: (usize, &Package)) -> core::cmp::Ordering {
    let expiry = |p: &Package| p.valid_until.unwrap_or(i64::MAX);
    (a.1.priority, expiry(a.1), a.0).cmp(&(b.1.priority, expiry(b.1), b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tariff(unit_size: u64, price: i64) -> Tariff {
        Tariff {
            rating_group: Some(10),
            service_identifier: None,
            unit: Unit::Octets,
            unit_size,
            price,
        }
    }

    /// Started blocks are charged whole; money buys whole blocks only.
    #[test]
    fn blocks_are_charged_whole() {
        let t = tariff(1_048_576, 2000);
        assert_eq!(cost(&t, 0), 0);
        assert_eq!(cost(&t, 1), 2000);
        assert_eq!(cost(&t, 1_048_576), 2000);
        assert_eq!(cost(&t, 1_048_577), 4000);
        assert_eq!(affordable_units(&t, 3999), 1_048_576);
        assert_eq!(affordable_units(&t, 4000), 2_097_152);
        assert_eq!(affordable_units(&t, 0), 0);
        assert_eq!(affordable_units(&t, -5), 0);
        assert_eq!(affordable_units(&tariff(1, 0), 0), u64::MAX);
        assert_eq!(cost(&tariff(1, i64::MAX), u64::MAX), i64::MAX);
    }

    /// What money affords never costs more than the money.
    #[test]
    fn affordable_units_cost_at_most_the_money() {
        for unit_size in [1u64, 7, 1000, 1_048_576] {
            for price in [1i64, 3, 2000, 999_999] {
                let t = tariff(unit_size, price);
                for money in [1i64, 2, 1999, 2000, 2001, 10_000_000, 123_456_789] {
                    let u = affordable_units(&t, money);
                    assert!(cost(&t, u) <= money);
                    assert!(cost(&t, u + 1) > money, "one more unit is one more block");
                }
            }
        }
    }
}
