//! `gyro demo`, the README's first command, as the binary runs it: gyro serve, the
//! shipper and the billing receiver on loopback under load; it must exit 0 with the
//! reconciliation line saying billing equals gyro, and leave a log that verifies.

use std::process::Command;

/// Runs `gyro demo` with `args` in a fresh directory named after `name`; asserts it
/// exits 0, says billing equals gyro company by company and had no failed checks.
/// Returns the directory and what it printed.
fn run_demo(name: &str, args: &[&str]) -> (std::path::PathBuf, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_gyro"))
        .arg("demo")
        .args(args)
        .args([
            "--duration",
            "2",
            "--subscribers",
            "5000",
            "--companies",
            "50",
        ])
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("reconciliation          billing equals gyro, company by company"),
        "{text}"
    );
    assert!(text.contains("check failures 0, timeouts 0"), "{text}");
    // It says how much disk the run it leaves behind takes (at least one segment).
    let gb: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("disk used"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a disk used line");
    assert!(gb > 0.0, "{text}");
    (dir, text)
}

#[test]
fn the_demo_runs_the_whole_pipeline_and_billing_equals_gyro() {
    let (dir, text) = run_demo("demo", &[]);
    let answered: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("load"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a load line");
    assert!(answered > 1_000, "{text}");
    // The log verifies, and holds one CDR per answered CCR plus the top-up.
    let log = dir.join("data/shard-0");
    gyro_shards::cdr_files::verify(&log).unwrap();
    let mut out = Vec::new();
    let mut pos = gyro_shards::cdr_files::Position::default();
    gyro_shards::cdr_files::cat(&log, 0, &mut pos, false, &mut out).unwrap();
    let lines = String::from_utf8(out).unwrap().lines().count() as u64;
    assert_eq!(lines, answered + 1, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_demo_with_two_shards_reconciles_billing_across_them() {
    // The shipper delivered both shards' logs; billing's totals equal what gyro's
    // shards hold together, company by company (checked by `run_demo`).
    let (dir, _) = run_demo("demo-2", &["--shards", "2"]);
    for s in 0..2 {
        gyro_shards::cdr_files::verify(&dir.join(format!("data/shard-{s}"))).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
