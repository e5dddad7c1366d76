//! gyro-engine: the sans-IO core of gyro, an Online Charging System for Diameter Gy/Ro.
//!
//! What it is: the Diameter codec (framing, a borrowing decoder, an encoder into
//! caller-owned buffers, the compiled dictionary and the validation that turns bad input
//! into the right Result-Code), the peer state machine (CER/CEA, DWR/DWA with the
//! RFC 3539 watchdog, DPR/DPA), provisioning (NDJSON import, lookup index, snapshots),
//! the charging building blocks (rating, reservation ledger, escrow owner and slices),
//! CDR lines, and the segment format with its recovery scan. Bytes and `now` go in;
//! bytes to send, events and the next wake-up time come out.
//!
//! What it is not: it does no I/O, reads no clock, spawns nothing and holds no sockets.
//! The thread-per-core runtime in `gyro-shards` moves bytes and time; everything that
//! decides lives here, so that it can be driven in deterministic simulation.
//!
//! Time is a parameter everywhere: `now_ms` is milliseconds on a monotonic clock chosen
//! by the caller.

// One `unsafe` exists: the ASCII fast path of UTF-8 validation (`diameter::avp::utf8`).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod cdr;
pub mod charging;
pub mod diameter;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
pub mod peer;
pub mod provision;
pub mod segment;
pub mod shard;

/// The hash map of the request path's lookups (sessions, recent events, subscribers,
/// tariffs): foldhash, seeded at random per map like std's SipHash (so keys a peer
/// chooses cannot be aimed at one bucket) at a fraction of its cost per lookup.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
