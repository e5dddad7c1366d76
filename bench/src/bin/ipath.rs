//! Instruction count of the engine path for one CCR-U with one MSCC: decode, the
//! single-shard engine (settle the reported usage, grant again), CCA encode and the
//! CDR line, against a generated dataset with many open sessions.
//! `ipath SUBSCRIBERS SESSIONS N`: opens SESSIONS sessions, then runs N CCR-Us round
//! robin over them. `bench/callgrind.sh` counts only `gyro_bench::engine_path` and
//! takes the difference of two N.

use std::hint::black_box;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().unwrap_or(0));
    let subscribers = args.next().unwrap_or(100_000).max(1);
    let sessions = args.next().unwrap_or(10_000).max(1);
    let n = args.next().unwrap_or(1);
    let mut path = gyro_bench::PathBench::new(subscribers, sessions as usize);
    let mut sink = 0usize;
    for _ in 0..n {
        sink += path.step();
    }
    black_box(sink);
    println!(
        "{} sessions open, {} updates, {} not granted",
        path.engine.open_sessions(),
        n,
        path.refused
    );
}
