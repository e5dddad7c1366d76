//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! property checks the fuzz targets run, on the stable toolchain, inside `cargo test`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        check(&data);
        n += 1;
    }
    assert!(n >= 3, "corpus of {target} has only {n} inputs");
}

#[test]
fn framing_corpus() {
    replay("framing", gyro_engine::fuzzing::framing);
}

#[test]
fn avp_walk_corpus() {
    replay("avp_walk", gyro_engine::fuzzing::avp_walk);
}

#[test]
fn ccr_roundtrip_corpus() {
    replay("ccr_roundtrip", gyro_engine::fuzzing::ccr_roundtrip);
}
