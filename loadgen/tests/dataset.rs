//! The generated dataset is what gyro loads: it imports with no bad record, has the
//! asked-for sizes, a few very large companies, and is the same for the same seed.

use gyro_engine::provision::{import_ndjson, Index, OnError};
use gyro_loadgen::dataset::{self, Spec};

fn generate(spec: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    dataset::write(spec, &mut out).unwrap();
    out
}

#[test]
fn generated_dataset_imports_cleanly_with_skewed_companies() {
    let spec = Spec {
        subscribers: 20_000,
        companies: 100,
        seed: 7,
    };
    let mut bytes = generate(&spec);
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", &imp.errors[..imp.errors.len().min(5)]);
    let d = imp.dataset;
    assert_eq!(d.subscribers.len(), 20_000);
    assert_eq!(d.companies.len(), 100);
    assert_eq!(d.tariffs.len(), 4);
    assert!(!d.packages.is_empty());
    let mut sizes = vec![0u64; 100];
    for s in &d.subscribers {
        sizes[s.company as usize] += 1;
    }
    sizes.sort_unstable();
    // The four largest hold half the subscribers, thousands each; the rest are small.
    assert!(sizes[99] >= 2_000 && sizes[96] >= 2_000, "{sizes:?}");
    assert!(sizes[0] < 200, "{sizes:?}");
    let ix = Index::build(&d);
    assert_eq!(
        ix.subscriber_by_msisdn(&dataset::msisdn(12_345)),
        Some(12_345)
    );
    assert_eq!(ix.subscriber_by_imsi(&dataset::imsi(12_345)), Some(12_345));
}

#[test]
fn the_same_seed_gives_the_same_file() {
    let a = generate(&Spec {
        subscribers: 1000,
        companies: 10,
        seed: 3,
    });
    let b = generate(&Spec {
        subscribers: 1000,
        companies: 10,
        seed: 3,
    });
    let c = generate(&Spec {
        subscribers: 1000,
        companies: 10,
        seed: 4,
    });
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn the_command_writes_a_file_gyro_accepts() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join(format!("dataset-{}.ndjson", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gyro-loadgen"))
        .args([
            "dataset",
            "--subscribers",
            "5000",
            "--companies",
            "50",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let mut bytes = std::fs::read(&out).unwrap();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok());
    assert_eq!(imp.dataset.subscribers.len(), 5000);
    std::fs::remove_file(out).ok();
}
