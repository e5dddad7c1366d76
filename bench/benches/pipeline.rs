//! Criterion benchmarks of the request path after the codec and of the CDR log:
//! `engine/ccr_update` is one CCR-U through decode, the single-shard engine (settle and
//! grant again over 10,000 open sessions of 100,000 subscribers), CCA encode and the
//! CDR line; `cdr_log/append_250B` appends 250-byte records to a segment log on disk
//! (durability `none`: the page cache); `cdr_log/append_250B_tick64` appends 64 and
//! syncs them (durability `tick` with batches of 64), reported per record;
//! `shipper/deliver` ships a log of 100,000 CDR lines (as `gyro serve` writes them) from
//! an empty checkpoint to the reference billing receiver over loopback HTTP, reported
//! per CDR (`gyro ship`'s code in-process, the receiver on its own threads).

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

/// A log of `n` CDR lines of the sample CCR-U, each with its own id.
fn cdr_log_of(n: u64) -> PathBuf {
    let dir = log_dir("ship-log");
    let mut w = SegmentWriter::create(&dir.join("shard-0"), 0, 64 << 20, 0).expect("log");
    let bytes = gyro_bench::sample_ccr_bytes();
    let ccr = gyro_bench::decode(&bytes).expect("sample");
    let services = gyro_bench::sample_cdr_services();
    let mut line = vec![0u8; 4096];
    for seq in 0..n {
        let mut c = ccr;
        c.request_number = seq as u32;
        let len = gyro_bench::write_cdr(&c, &services, &mut line);
        w.append(RecordKind::Cdr, &line[..len]).expect("append");
    }
    w.flush().expect("flush");
    dir
}

fn shipper(c: &mut Criterion) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    const N: u64 = 100_000;
    let data = cdr_log_of(N);
    let mut g = c.benchmark_group("shipper");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    let mut run = 0u32;
    g.bench_function("deliver", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                let server = tiny_http::Server::http("127.0.0.1:0").expect("listen");
                let addr = server.server_addr().to_ip().expect("ip");
                let sink = gyro_shards::billing::Sink::open(gyro_shards::billing::SinkSpec {
                    out: data.join(format!("billing-{run}.ndjson")),
                    ..Default::default()
                })
                .expect("sink");
                let stop = Arc::new(AtomicBool::new(false));
                let s2 = stop.clone();
                let receiver =
                    std::thread::spawn(move || gyro_shards::billing::serve(server, sink, &s2));
                let spec = gyro_shards::ship::ShipSpec {
                    data_dir: data.clone(),
                    to: format!("http://{addr}/cdrs"),
                    checkpoint_dir: data.join(format!("ship-{run}")),
                    batch_max: 2000,
                    window: 4,
                    follow: false,
                    timeout: Duration::from_secs(30),
                    backoff_max: Duration::from_secs(1),
                    progress_every: Duration::ZERO,
                    retain: None,
                    metrics: None,
                };
                let never = AtomicBool::new(false);
                let start = Instant::now();
                let done = gyro_shards::ship::run(&spec, &never).expect("ships");
                // The shipper waits 200 ms of idleness before it ends a --once run.
                total += start.elapsed().saturating_sub(Duration::from_millis(200));
                assert_eq!(done, vec![(0, N)]);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let totals = receiver.join().expect("receiver");
                assert!(totals.contains(&format!("\"records\":{N}")), "{totals}");
                let _ = std::fs::remove_file(data.join(format!("billing-{run}.ndjson")));
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&data);
}

criterion_group!(benches, engine, cdr_log, shipper);
criterion_main!(benches);
