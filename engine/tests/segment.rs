//! The segment format read back after every kind of damage: records cut at every byte
//! offset of the last record (file zero-filled after the cut, and file shortened), a
//! bit flipped in the tail and in the middle, a zeroed tail and a zeroed middle. A torn
//! tail is reported where it starts, corruption in the middle stops the scan, and every
//! record before the damage is read.

use gyro_engine::segment::{
    append, record_size, scan, AppendError, End, RecordKind, ScanError, SegmentHeader, HEADER_LEN,
};

const SIZE: usize = 16 * 1024;

/// A segment with `n` records; returns it and each record's offset (plus the end).
fn segment(n: usize) -> (Vec<u8>, Vec<usize>) {
    let mut seg = vec![0u8; SIZE];
    let h = SegmentHeader {
        shard: 3,
        base_seq: 1000,
        created_ms: 1_732_598_400_000,
        segment_size: SIZE as u64,
    };
    seg[..HEADER_LEN].copy_from_slice(&h.encode());
    let mut at = HEADER_LEN;
    let mut offsets = vec![at];
    for i in 0..n {
        let payload = format!("{{\"id\":\"cdr-{i}\",\"pad\":\"{}\"}}", "x".repeat(i % 37));
        at = append(
            &mut seg,
            at,
            1000 + i as u64,
            RecordKind::Cdr,
            payload.as_bytes(),
        )
        .unwrap();
        offsets.push(at);
    }
    (seg, offsets)
}

fn read(seg: &[u8]) -> (Vec<u64>, Result<End, ScanError>) {
    let mut seqs = Vec::new();
    let r = scan(seg, |rec| seqs.push(rec.seq)).map(|(_, end)| end);
    (seqs, r)
}

#[test]
fn records_read_back_in_order_with_a_clean_end() {
    let (seg, offsets) = segment(20);
    let (seqs, end) = read(&seg);
    assert_eq!(seqs, (1000..1020).collect::<Vec<_>>());
    assert_eq!(
        end,
        Ok(End::Clean {
            offset: offsets[20]
        })
    );
    let (h, _) = scan(&seg, |_| {}).unwrap();
    assert_eq!((h.shard, h.base_seq), (3, 1000));
}

#[test]
fn last_record_cut_at_every_byte_is_a_torn_tail() {
    let (seg, offsets) = segment(10);
    let (last, end) = (offsets[9], offsets[10]);
    let len = u32::from_le_bytes(seg[last..last + 4].try_into().unwrap()) as usize;
    // Past the payload only padding follows (already zero): the record is whole.
    let written = last + 20 + len;
    for cut in written..end {
        let mut zeroed = seg.clone();
        zeroed[cut..end].fill(0);
        assert_eq!(read(&zeroed).0.len(), 10, "cut {cut} in the padding");
    }
    for cut in last..written {
        // Zero-filled after the cut (a pre-allocated file).
        let mut zeroed = seg.clone();
        zeroed[cut..end].fill(0);
        let (seqs, r) = read(&zeroed);
        assert_eq!(seqs, (1000..1009).collect::<Vec<_>>(), "cut {cut}");
        match r {
            Ok(End::Clean { offset }) => assert!(cut == last && offset == last, "cut {cut}"),
            Ok(End::TornTail { offset, .. }) => assert_eq!(offset, last, "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
        // The file itself ends at the cut.
        let (seqs, r) = read(&seg[..cut]);
        assert_eq!(
            seqs,
            (1000..1009).collect::<Vec<_>>(),
            "short file, cut {cut}"
        );
        assert_eq!(r.map(|e| e.offset()), Ok(last), "short file, cut {cut}");
    }
}

#[test]
fn a_flipped_bit_in_the_tail_is_torn_and_in_the_middle_is_corruption() {
    let (seg, offsets) = segment(10);
    for bit in [0usize, 7, 33, 170] {
        let mut tail = seg.clone();
        let at = offsets[9] + (bit / 8) % (offsets[10] - offsets[9]);
        tail[at] ^= 1 << (bit % 8);
        let (seqs, r) = read(&tail);
        assert_eq!(seqs.len(), 9);
        assert!(
            matches!(r, Ok(End::TornTail { offset, .. }) if offset == offsets[9]),
            "{r:?}"
        );

        let mut middle = seg.clone();
        let at = offsets[4] + (bit / 8) % (offsets[5] - offsets[4]);
        middle[at] ^= 1 << (bit % 8);
        let (seqs, r) = read(&middle);
        assert_eq!(seqs, (1000..1004).collect::<Vec<_>>());
        assert!(
            matches!(r, Err(ScanError::Corrupt { offset, .. }) if offset == offsets[4]),
            "{r:?}"
        );
    }
}

#[test]
fn a_zeroed_tail_ends_cleanly_and_a_zeroed_middle_is_corruption() {
    let (seg, offsets) = segment(10);
    let mut tail = seg.clone();
    tail[offsets[7]..offsets[10]].fill(0);
    assert_eq!(
        read(&tail),
        (
            (1000..1007).collect(),
            Ok(End::Clean { offset: offsets[7] })
        )
    );

    let mut middle = seg.clone();
    middle[offsets[3]..offsets[4]].fill(0);
    let (seqs, r) = read(&middle);
    assert_eq!(seqs, (1000..1003).collect::<Vec<_>>());
    assert!(
        matches!(r, Err(ScanError::Corrupt { offset, .. }) if offset == offsets[3]),
        "{r:?}"
    );
}

#[test]
fn a_damaged_header_is_refused() {
    let (seg, _) = segment(2);
    for at in [0usize, 9, 17, 41] {
        let mut bad = seg.clone();
        bad[at] ^= 0x40;
        assert!(
            matches!(read(&bad).1, Err(ScanError::BadHeader(_))),
            "byte {at}"
        );
    }
    assert!(matches!(read(&seg[..10]).1, Err(ScanError::BadHeader(_))));
}

#[test]
fn append_refuses_what_does_not_fit() {
    let (mut seg, offsets) = segment(1);
    let at = offsets[1];
    assert_eq!(
        append(&mut seg, at, 1001, RecordKind::Cdr, b""),
        Err(AppendError::BadPayload)
    );
    let big = vec![b'x'; SIZE];
    assert_eq!(
        append(&mut seg, at, 1001, RecordKind::Cdr, &big),
        Err(AppendError::Full)
    );
    // Exactly full: the record fits with room for the end marker, the next does not.
    let room = SIZE - at - 20;
    let payload = vec![b'y'; room - 20 - (room % 8)];
    let end = append(&mut seg, at, 1001, RecordKind::Balance, &payload).unwrap();
    assert_eq!(end, at + record_size(payload.len()));
    assert_eq!(
        append(&mut seg, end, 1002, RecordKind::Cdr, b"z"),
        Err(AppendError::Full)
    );
    let (seqs, r) = read(&seg);
    assert_eq!(seqs, vec![1000, 1001]);
    assert_eq!(r, Ok(End::Clean { offset: end }));
}

/// The worked example in docs/segment-format.md is what the encoder writes.
#[test]
fn the_documented_example_is_what_gyro_writes() {
    let mut seg = vec![0u8; 256];
    let h = SegmentHeader {
        shard: 1,
        base_seq: 0,
        created_ms: 1_732_598_400_000,
        segment_size: 1 << 20,
    };
    seg[..HEADER_LEN].copy_from_slice(&h.encode());
    let end = append(
        &mut seg,
        HEADER_LEN,
        0,
        RecordKind::Cdr,
        br#"{"id":"s;1#0"}"#,
    )
    .unwrap();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/segment-format.md"
    ))
    .unwrap();
    for (i, chunk) in seg[..end + 8].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let row = format!("{:04x}  {}", i * 16, hex.join(" "));
        assert!(doc.contains(&row), "docs/segment-format.md lacks {row}");
    }
}
