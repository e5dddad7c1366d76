//! gyro-shards: the runtime around `gyro-engine` and the `gyro` binary.
//!
//! What it is: the code that moves bytes and time for the sans-IO engine. `serve` runs
//! the thread-per-core server (one pinned thread per shard running gyro's epoll event
//! loop, `serve::evloop`, started through `runtime`; connections handed out by one accepting thread; requests and escrow
//! messages between shards over bounded channels; per-shard segment logs, snapshots and
//! `recovery`); `admin` is the operations endpoint; `ship` and `billing` carry CDRs to a
//! billing service; `demo` runs the whole pipeline on a generated dataset.
//!
//! What it is not: it decides nothing about Diameter or charging; that is the engine's.

pub mod admin;
pub mod billing;
pub mod cdr_files;
pub mod config;
pub mod demo;
pub mod logging;
pub mod prom;
pub mod recovery;
pub mod runtime;
pub mod segments;
pub mod serve;
pub mod server;
pub mod ship;

/// `s` as a JSON string literal (RFC 8259 escaping), for the few JSON texts written by
/// hand (operations answers, billing replies, balance records).
pub fn json_quote(s: &str) -> String {
    simd_json::to_string(&simd_json::OwnedValue::from(s)).unwrap_or_else(|_| "\"\"".into())
}
