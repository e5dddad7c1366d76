//! What one service of a request gets: packages first (matching unit and rating group,
//! valid now, by priority then earliest expiry), then money at the tariff. Grants never
//! exceed what the company can afford; the grant that uses its last affordable units
//! carries Final-Unit-Indication TERMINATE; nothing affordable is 4012; no tariff where
//! money would pay is 5031. Settlement charges what was used, beyond the grant too.
//!
//! Works on `Bucket`s, so the same code grants from a whole balance or from a shard's
//! escrow slice.

use super::ledger::{Bucket, LedgerError};
use super::rating;
use crate::diameter::result_code as rc;
use crate::provision::{Package, Tariff, Unit};

/// A company's means as one shard sees them: its money and its packages' units.
#[derive(Debug)]
pub struct Wallet<'a> {
    pub money: &'a mut Bucket,
    /// How far below zero money grants may go (micro-units, ≥ 0).
    pub credit_limit: i64,
    /// The company's packages, each with its bucket of units.
    pub packages: &'a mut [(Package, Bucket)],
    /// Buckets this wallet holds all of (a whole balance, or escrow slices leased all
    /// in): Final-Unit-Indication and refusals are only decided on what is known whole.
    pub known: Known<'a>,
}

/// Which of a wallet's buckets it holds all of.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// Every bucket: a whole balance.
    All,
    /// Per bucket (money, then each package), the escrow slice's state.
    Slices(&'a [super::escrow::SliceState]),
}

/// Every bucket known whole.
pub const ALL: Known<'static> = Known::All;

/// Whether the wallet holds all of bucket `bucket` (0 money, `1 + i` package `i`).
pub fn known(w: &Wallet<'_>, bucket: usize) -> bool {
    match w.known {
        Known::All => true,
        Known::Slices(s) => s.get(bucket).is_some_and(|s| s.all_in),
    }
}

/// Where a grant for `ask` would come from, and whether this wallet can decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing to draw on decides it (no tariff where money would pay).
    Local,
    /// Package `index` would pay `units`; `short` of them are missing here (0: enough).
    /// `known`: the wallet holds all of the package, what is missing is missing.
    Package {
        index: usize,
        units: i64,
        short: i64,
        known: bool,
    },
    /// Money would pay `micros`; `short` of them are missing here.
    Money {
        micros: i64,
        short: i64,
        known: bool,
    },
}

impl Need {
    /// The bucket drawn on (as in `Wallet::known`) and the amount, if any.
    pub fn draws(&self) -> Option<(usize, i64, bool)> {
        match *self {
            Need::Local => None,
            Need::Package {
                index,
                units,
                known,
                ..
            } => Some((index + 1, units, known)),
            Need::Money { micros, known, .. } => Some((0, micros, known)),
        }
    }

    /// Missing here and not known to be missing everywhere: worth waiting for.
    pub fn wanting(&self) -> Option<i64> {
        match *self {
            Need::Package {
                short,
                known: false,
                ..
            }
            | Need::Money {
                short,
                known: false,
                ..
            } if short > 0 => Some(short),
            _ => None,
        }
    }
}

/// What granting `ask` needs from this wallet, without changing it. `extra` adds to
/// what the wallet has, per bucket (index as in `known`): what settlements of the same
/// request give back first, less what its earlier services take.
pub fn need(w: &Wallet<'_>, tariffs: &[Tariff], ask: &Ask, extra: &[i64]) -> Need {
    let extra = |bucket: usize| extra.get(bucket).copied().unwrap_or(0);
    // The package that pays first, counting slices that are empty here but not known
    // to be empty everywhere.
    let best = (0..w.packages.len())
        .filter(|&i| {
            let (p, b) = &w.packages[i];
            (b.available + extra(i + 1) > 0 || !known(w, i + 1))
                && rating::package_applies(p, ask.unit, ask.rating_group, ask.now_s)
        })
        .min_by(|&a, &b| rating::package_order((a, &w.packages[a].0), (b, &w.packages[b].0)));
    let units = i64::try_from(ask.units).unwrap_or(i64::MAX);
    if let Some(i) = best {
        let have = w.packages[i].1.available + extra(i + 1);
        return Need::Package {
            index: i,
            units,
            short: (units - have.max(0)).max(0),
            known: known(w, i + 1),
        };
    }
    let Some(t) = tariff_for(tariffs, ask) else {
        return Need::Local;
    };
    let micros = rating::cost(&tariffs[t], ask.units.max(1));
    let have = w
        .money
        .available
        .saturating_add(extra(0))
        .saturating_add(w.credit_limit);
    Need::Money {
        micros,
        short: (micros - have.max(0)).max(0),
        known: known(w, 0),
    }
}

/// Whether every bucket that could pay for `ask` is known whole.
fn complete(w: &Wallet<'_>, ask: &Ask) -> bool {
    known(w, 0)
        && (0..w.packages.len()).all(|i| {
            known(w, i + 1)
                || !rating::package_applies(&w.packages[i].0, ask.unit, ask.rating_group, ask.now_s)
        })
}

/// What a service asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Ask {
    pub unit: Unit,
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// Units requested (the configured default quota when the RSU was absent).
    pub units: u64,
    /// Unix seconds, for package expiry.
    pub now_s: i64,
}

/// Where a grant comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Source {
    /// Units reserved in the package at this index of `Wallet::packages`.
    Package { index: usize, units: u64 },
    /// Money reserved at the tariff at this index (micro-units).
    Money { tariff: usize, micros: i64 },
}

/// The decision for one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Grant {
    /// 2001, 4012 (nothing affordable) or 5031 (no tariff).
    pub result_code: u32,
    pub units: u64,
    pub source: Option<Source>,
    /// These are the company's last affordable units: Final-Unit-Indication TERMINATE.
    pub final_unit: bool,
}

pub(crate) fn tariff_for(tariffs: &[Tariff], ask: &Ask) -> Option<usize> {
    let by_rg = ask.rating_group.and_then(|rg| {
        tariffs
            .iter()
            .position(|t| t.rating_group == Some(rg) && t.unit == ask.unit)
    });
    by_rg.or_else(|| {
        ask.service_identifier.and_then(|si| {
            tariffs.iter().position(|t| {
                t.rating_group.is_none() && t.service_identifier == Some(si) && t.unit == ask.unit
            })
        })
    })
}

/// Whether package `i` pays for `ask` and has units left.
fn usable(w: &Wallet<'_>, i: usize, ask: &Ask) -> bool {
    let (p, b) = &w.packages[i];
    b.available > 0 && rating::package_applies(p, ask.unit, ask.rating_group, ask.now_s)
}

/// The package to draw from first (no allocation: companies hold few packages).
fn best_package(w: &Wallet<'_>, ask: &Ask) -> Option<usize> {
    (0..w.packages.len())
        .filter(|&i| usable(w, i, ask))
        .min_by(|&a, &b| rating::package_order((a, &w.packages[a].0), (b, &w.packages[b].0)))
}

/// Units left in every package that pays for `ask`.
fn package_units_left(w: &Wallet<'_>, ask: &Ask) -> i64 {
    (0..w.packages.len())
        .filter(|&i| usable(w, i, ask))
        .map(|i| w.packages[i].1.available)
        .sum()
}

/// Decides and reserves the grant for one service.
pub fn grant(w: &mut Wallet<'_>, tariffs: &[Tariff], ask: &Ask) -> Result<Grant, LedgerError> {
    let tariff = tariff_for(tariffs, ask);
    let money_room = |w: &Wallet<'_>| w.money.available.saturating_add(w.credit_limit);
    let affordable_money =
        |w: &Wallet<'_>| tariff.map_or(0, |t| rating::affordable_units(&tariffs[t], money_room(w)));
    if let Some(i) = best_package(w, ask) {
        let want = i64::try_from(ask.units).unwrap_or(i64::MAX);
        let got = w.packages[i].1.reserve(want, 0)? as u64;
        let final_unit =
            complete(w, ask) && package_units_left(w, ask) == 0 && affordable_money(w) == 0;
        return Ok(Grant {
            result_code: rc::SUCCESS,
            units: got,
            source: Some(Source::Package {
                index: i,
                units: got,
            }),
            final_unit,
        });
    }
    let Some(t) = tariff else {
        return Ok(Grant {
            result_code: rc::RATING_FAILED,
            units: 0,
            source: None,
            final_unit: false,
        });
    };
    let affordable = affordable_money(w);
    if affordable == 0 {
        return Ok(Grant {
            result_code: rc::CREDIT_LIMIT_REACHED,
            units: 0,
            source: None,
            final_unit: false,
        });
    }
    let units = rating::whole_blocks(&tariffs[t], ask.units.max(1)).min(affordable);
    let micros = rating::cost(&tariffs[t], units);
    let got = w.money.reserve(micros, w.credit_limit)?;
    debug_assert_eq!(got, micros, "affordable units are reservable");
    let final_unit = complete(w, ask) && affordable_money(w) == 0;
    Ok(Grant {
        result_code: rc::SUCCESS,
        units,
        source: Some(Source::Money {
            tariff: t,
            micros: got,
        }),
        final_unit,
    })
}

/// What a settlement charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charge {
    /// Package units consumed.
    pub package_units: u64,
    /// Micro-units charged from money.
    pub micros: i64,
    /// Units used beyond the grant.
    pub overuse: u64,
}

/// Settles a grant with `used` units: the reservation is released and what was used is
/// charged, usage beyond the grant included (from money at the tariff, which may take
/// the balance below zero; a package grant's overuse is charged to money when there is
/// a tariff, else to the package). On an error nothing was changed.
pub fn settle(
    w: &mut Wallet<'_>,
    tariffs: &[Tariff],
    ask: &Ask,
    granted: &Grant,
    used: u64,
) -> Result<Charge, LedgerError> {
    let overuse = used.saturating_sub(granted.units);
    match granted.source {
        None => {
            // Nothing was granted; usage reported anyway is charged at the tariff.
            let micros = tariff_for(tariffs, ask).map_or(0, |t| rating::cost(&tariffs[t], used));
            w.money.settle(0, micros)?;
            Ok(Charge {
                package_units: 0,
                micros,
                overuse,
            })
        }
        Some(Source::Package { index, units }) => {
            let reserved = i64::try_from(units).unwrap_or(i64::MAX);
            let within = used.min(units);
            match tariff_for(tariffs, ask) {
                Some(t) if overuse > 0 => {
                    // Both buckets or neither: settled on copies, then written.
                    let mut package = w.packages[index].1;
                    let mut money = *w.money;
                    package.settle(reserved, within as i64)?;
                    let micros = rating::cost(&tariffs[t], overuse);
                    money.settle(0, micros)?;
                    w.packages[index].1 = package;
                    *w.money = money;
                    Ok(Charge {
                        package_units: within,
                        micros,
                        overuse,
                    })
                }
                _ => {
                    w.packages[index]
                        .1
                        .settle(reserved, i64::try_from(used).unwrap_or(i64::MAX))?;
                    Ok(Charge {
                        package_units: used,
                        micros: 0,
                        overuse,
                    })
                }
            }
        }
        Some(Source::Money {
            tariff,
            micros: reserved,
        }) => {
            let micros = rating::cost(&tariffs[tariff], used);
            w.money.settle(reserved, micros)?;
            Ok(Charge {
                package_units: 0,
                micros,
                overuse,
            })
        }
    }
}
