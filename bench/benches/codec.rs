//! Criterion benchmarks of the codec: decoding the realistic 3GPP CCR-U (two MSCC,
//! PS-Information) and encoding its CCA, the same workloads `icount` counts.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gyro_engine::diameter::ccr::Ccr;

fn codec(c: &mut Criterion) {
    let bytes = gyro_bench::sample_ccr_bytes();
    let mscc = gyro_bench::sample_answer_mscc();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_ccr_update", |b| {
        let mut ccr = Ccr::default();
        b.iter(|| gyro_bench::decode_into(black_box(&bytes), &mut ccr))
    });
    let ccr = gyro_bench::decode(&bytes).expect("sample decodes");
    let mut out = vec![0u8; 2048];
    g.bench_function("encode_cca", |b| {
        b.iter(|| gyro_bench::encode_answer(black_box(&ccr), black_box(&mscc), &mut out))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
