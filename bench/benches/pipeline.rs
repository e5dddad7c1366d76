//! Criterion benchmarks of the request path after the codec and of the CDR log:
//! `engine/ccr_update` is one CCR-U through decode, the single-shard engine (settle and
//! grant again over 10,000 open sessions of 100,000 subscribers), CCA encode and the
//! CDR line; `cdr_log/append_250B` appends 250-byte records to a segment log on disk
//! (durability `none`: the page cache); `cdr_log/append_250B_tick64` appends 64 and
//! syncs them (durability `tick` with batches of 64), reported per record.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gyro_engine::segment::RecordKind;
use gyro_shards::segments::SegmentWriter;

fn engine(c: &mut Criterion) {
    let mut path = gyro_bench::PathBench::new(100_000, 10_000);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ccr_update", |b| b.iter(|| black_box(path.step())));
    g.finish();
    println!(
        "engine/ccr_update: {} answers other than 2001",
        path.refused
    );
}

fn log_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Appends `n` records to a fresh log (syncing every `tick` records if non-zero) and
/// returns the time the appends and syncs took.
fn append_run(name: &str, n: u64, tick: u64) -> Duration {
    let dir = log_dir(name);
    let mut w = SegmentWriter::create(&dir, 0, 64 << 20, 0).expect("log");
    w.set_durable(tick > 0);
    let record = [b'x'; 250];
    let start = Instant::now();
    for i in 0..n {
        w.append(RecordKind::Cdr, black_box(&record))
            .expect("append");
        if tick > 0 && (i + 1) % tick == 0 {
            w.sync().expect("sync");
        }
    }
    if tick > 0 {
        w.sync().expect("sync");
    }
    let t = start.elapsed();
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    t
}

fn cdr_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("cdr_log");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_250B", |b| {
        b.iter_custom(|n| append_run("none", n, 0))
    });
    g.bench_function("append_250B_tick64", |b| {
        b.iter_custom(|n| append_run("tick", n, 64))
    });
    g.bench_function("append_250B_tick256", |b| {
        b.iter_custom(|n| append_run("tick", n, 256))
    });
    g.finish();
}

criterion_group!(benches, engine, cdr_log);
criterion_main!(benches);
