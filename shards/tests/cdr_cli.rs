//! `gyro cdr cat` and `gyro cdr verify` on real segment files: records in sequence
//! order across segments, `--from`, `--follow` picking up a record written while it
//! runs, and the first problem (damage, torn tail, sequence gap) named by file and
//! offset with exit code 1.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gyro_engine::segment::{append, RecordKind, SegmentHeader, HEADER_LEN};
use gyro_shards::cdr_files::segment_name;

const SIZE: usize = 4096;

fn dir(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cdr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a segment starting at `base` with one CDR per sequence number; returns the
/// record offsets and the end.
fn write_segment(d: &Path, base: u64, n: u64) -> Vec<usize> {
    let mut seg = vec![0u8; SIZE];
    let h = SegmentHeader {
        shard: 0,
        base_seq: base,
        created_ms: 0,
        segment_size: SIZE as u64,
    };
    seg[..HEADER_LEN].copy_from_slice(&h.encode());
    let mut at = HEADER_LEN;
    let mut offsets = vec![at];
    for seq in base..base + n {
        at = append(
            &mut seg,
            at,
            seq,
            RecordKind::Cdr,
            format!("{{\"seq\":{seq}}}").as_bytes(),
        )
        .unwrap();
        offsets.push(at);
    }
    std::fs::write(d.join(segment_name(base)), &seg).unwrap();
    offsets
}

fn gyro(args: &[&str], d: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gyro"))
        .args(args)
        .arg(d)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn cat_prints_records_in_order_across_segments() {
    let d = dir("cat");
    write_segment(&d, 0, 3);
    write_segment(&d, 3, 2);
    let (code, out) = gyro(&["cdr", "cat"], &d);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "{\"seq\":0}",
            "{\"seq\":1}",
            "{\"seq\":2}",
            "{\"seq\":3}",
            "{\"seq\":4}"
        ]
    );
    let (code, out) = gyro(&["cdr", "cat", "--from", "3"], &d);
    assert_eq!((code, out.lines().count()), (0, 2));
    let (code, out) = gyro(&["cdr", "verify"], &d);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok, next sequence 5"), "{out}");
}

#[test]
fn damage_is_reported_with_file_and_offset() {
    let d = dir("damage");
    let offsets = write_segment(&d, 0, 3);
    write_segment(&d, 3, 2);
    let first = d.join(segment_name(0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[offsets[1] + 25] ^= 1; // inside the payload of record 1
    std::fs::write(&first, &bytes).unwrap();
    let (code, out) = gyro(&["cdr", "verify"], &d);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{} at offset {}: corrupt: record CRC mismatch",
            first.display(),
            offsets[1]
        )),
        "{out}"
    );
    // cat prints what precedes the damage, then fails.
    let (code, out) = gyro(&["cdr", "cat"], &d);
    assert_eq!(code, 1);
    assert!(out.starts_with("{\"seq\":0}\n"), "{out}");
    assert!(!out.contains("{\"seq\":1}"), "{out}");
}

#[test]
fn a_torn_tail_and_a_sequence_gap_are_problems() {
    let d = dir("torn");
    write_segment(&d, 0, 3);
    let offsets = write_segment(&d, 3, 2);
    let last = d.join(segment_name(3));
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[offsets[1] + 22..offsets[2]].fill(0); // the last record cut short
    std::fs::write(&last, &bytes).unwrap();
    let (code, out) = gyro(&["cdr", "verify"], &d);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("at offset {}: torn tail", offsets[1])),
        "{out}"
    );

    let d = dir("gap");
    write_segment(&d, 0, 3);
    write_segment(&d, 4, 1);
    let (code, out) = gyro(&["cdr", "verify"], &d);
    assert_eq!(code, 1);
    assert!(
        out.contains("segment starts at sequence 4, expected 3"),
        "{out}"
    );
}

#[test]
fn follow_prints_a_record_written_while_it_runs() {
    let d = dir("follow");
    write_segment(&d, 0, 2);
    let offsets = write_segment(&d, 2, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gyro"))
        .args(["cdr", "cat", "--follow"])
        .arg(&d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // If output never comes the reads below would block: end the follower after 20 s,
    // which closes its output and fails the test instead of hanging it.
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(20));
        if !finished.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for want in 0..3 {
        assert_eq!(
            lines.next().unwrap().unwrap(),
            format!("{{\"seq\":{want}}}")
        );
    }
    // Append sequence 3 to the last segment, in place, as the writer does.
    let path = d.join(segment_name(2));
    let mut seg = std::fs::read(&path).unwrap();
    let end = append(&mut seg, offsets[1], 3, RecordKind::Cdr, b"{\"seq\":3}").unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(offsets[1] as u64)).unwrap();
    f.write_all(&seg[offsets[1]..end]).unwrap();
    f.sync_all().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "{\"seq\":3}");
    // And a new segment.
    write_segment(&d, 4, 1);
    assert_eq!(lines.next().unwrap().unwrap(), "{\"seq\":4}");
    child.kill().unwrap();
    child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_data_directory_is_read_shard_by_shard_and_anything_else_refused() {
    let d = dir("datadir");
    // shard-0 and shard-1 (listed out of order on disk), and shard-10 after shard-2.
    for (shard, base, n) in [(1u16, 0, 2), (0, 0, 3), (10, 0, 1), (2, 0, 1)] {
        let s = d.join(format!("shard-{shard}"));
        std::fs::create_dir_all(&s).unwrap();
        write_segment(&s, base, n);
    }
    std::fs::create_dir_all(d.join("snapshots")).unwrap();
    let (code, out) = gyro(&["cdr", "cat"], &d);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 7, "{out}");
    let (code, out) = gyro(&["cdr", "verify"], &d);
    assert_eq!(code, 0, "{out}");
    let verified: Vec<&str> = out.lines().collect();
    assert_eq!(verified.len(), 4, "{out}");
    assert!(
        verified[0].contains("shard-0: ok, next sequence 3"),
        "{out}"
    );
    assert!(
        verified[1].contains("shard-1: ok, next sequence 2"),
        "{out}"
    );
    assert!(verified[3].contains("shard-10: ok"), "{out}");
    // --from and --follow are per shard.
    let (code, out) = gyro(&["cdr", "cat", "--from", "1"], &d);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("per shard"), "{out}");
    // A directory that holds neither.
    let empty = dir("neither");
    for args in [["cdr", "cat"], ["cdr", "verify"]] {
        let (code, out) = gyro(&args, &empty);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("neither a shard's log"), "{out}");
    }
    let (code, out) = gyro(&["cdr", "verify"], &d.join("missing"));
    assert_eq!(code, 2, "{out}");
}
