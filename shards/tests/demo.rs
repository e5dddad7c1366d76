//! The demo pipeline end to end on real sockets and real files: every CCR answered, one
//! CDR per CCR in a segment log that verifies, and the CDRs read back from disk add up
//! to exactly what the engine's balances were charged.

use gyro_shards::demo::{run, DemoSpec};

#[test]
fn demo_pipeline_reconciles() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = DemoSpec {
        subscribers: 2_000,
        companies: 40,
        sessions: 3_000,
        window: 64,
        dir: dir.clone(),
    };
    let r = run(&spec).expect("demo runs");
    assert_eq!((r.requests, r.answers), (9_000, 9_000));
    assert_eq!(r.cdrs_written, 9_000);
    assert_eq!(r.cdrs_read, 9_000);
    assert_eq!(r.cdr_money_charged, r.engine_money_charged);
    assert_eq!(r.cdr_package_units, r.engine_package_units);
    assert!(
        r.engine_money_charged > 0 && r.engine_package_units > 0,
        "both money and packages paid"
    );
    assert_eq!(
        gyro_shards::cdr_files::verify(&dir.join("shard-0")).unwrap(),
        9_000
    );
    std::fs::remove_dir_all(&dir).ok();
}
