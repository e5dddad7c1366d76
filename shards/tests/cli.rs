//! The `gyro` binary as an operator runs it: `gyro provision check` on real files.

use std::process::Command;

fn gyro() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gyro"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n\
{\"type\":\"company\",\"id\":\"acme\",\"balance\":50000000}\n\
{\"type\":\"subscriber\",\"msisdn\":\"491701234567\",\"company\":\"acme\"}\n";

#[test]
fn check_reports_bad_records_by_line_and_field_and_exits_1() {
    let bad =
        format!("{GOOD}{{\"type\":\"subscriber\",\"msisdn\":\"12x\",\"company\":\"acme\"}}\n");
    let f = write("bad.ndjson", &bad);
    let out = gyro()
        .args(["provision", "check"])
        .arg(&f)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad.ndjson: line 4, field `msisdn`: expected a string of 1 to 15 digits"),
        "{stdout}"
    );
    assert!(stdout.contains("0 subscribers loaded"), "{stdout}");
    assert!(stdout.contains("1 bad records"), "{stdout}");

    let out = gyro()
        .args(["provision", "check", "--skip-bad"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 subscribers loaded"));
}

#[test]
fn check_writes_a_snapshot_that_reads_back() {
    let f = write("good.ndjson", GOOD);
    let snap = f.with_extension("rkyv");
    let out = gyro()
        .args(["provision", "check"])
        .arg(&f)
        .arg("--snapshot")
        .arg(&snap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bytes = std::fs::read(&snap).unwrap();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    let d = gyro_engine::provision::snapshot::decode(&aligned).unwrap();
    assert_eq!(d.subscribers.len(), 1);
    assert_eq!(d.companies[0].id, "acme");
}

#[test]
fn an_unreadable_file_is_a_clear_error() {
    let out = gyro()
        .args(["provision", "check", "/nonexistent/gyro.ndjson"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/gyro.ndjson"));
}
