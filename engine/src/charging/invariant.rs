//! Invariants that stop the process when they break. Money that gyro cannot account
//! for is never written: a failed release of a reservation, a lease that cannot be
//! credited to its slice, a remainder that would wrap, are programming errors (the
//! amounts come from gyro's own ledger, never straight from a peer), so the shard
//! stops, naming what broke and for which company, and recovery replays the log at
//! the next start. Values a peer sends are bounded or refused with an answer before
//! they reach these paths.

use std::fmt::Debug;

/// Stops the process (abort: a non-zero exit in every build, whichever thread it
/// happens on, with nothing more written): `what` broke for `company`, because of `why`.
#[cold]
#[inline(never)]
#[track_caller]
pub fn broken(what: &str, company: &str, why: &dyn Debug) -> ! {
    eprintln!(
        "gyro: invariant broken: {what}, company {company:?}: {why:?} (at {}); stopping \
         before a wrong balance is written (the next start replays the log)",
        std::panic::Location::caller()
    );
    std::process::abort()
}

/// The value of `r`, or the process stops (`broken`).
#[inline]
#[track_caller]
pub fn must<T, E: Debug>(r: Result<T, E>, what: &str, company: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => broken(what, company, &e),
    }
}
