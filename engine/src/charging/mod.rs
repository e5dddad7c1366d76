//! The charging core's building blocks: rating (what units cost at a tariff, what money
//! affords) and balances with reservations (reserve, settle, release), in integer
//! micro-units. The credit-control sessions, escrowed company balances across shards
//! and CDRs are built on these.

pub mod decide;
pub mod engine;
pub mod escrow;
pub mod invariant;
pub mod ledger;
pub mod rating;
