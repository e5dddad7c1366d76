//! gyro-shards: the runtime around `gyro-engine` and the `gyro` binary.
//!
//! What it is: the code that moves bytes and time for the sans-IO engine: sockets,
//! clocks, threads. Today it holds a blocking loopback runner (`loopback`) that drives
//! the engine's peer state machine and CCR codec over real TCP sockets for `gyro demo`.
//! The thread-per-core glommio runtime, listeners, cross-shard channels, segment writers
//! and the admin endpoint are built here next (see the project's issues).
//!
//! What it is not: it decides nothing about Diameter or charging; that is the engine's.

pub mod admin;
pub mod billing;
pub mod cdr_files;
pub mod config;
pub mod demo;
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
