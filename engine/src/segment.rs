//! The CDR segment format: a fixed header, then records framed with their length, a
//! CRC32C, a sequence number and a kind, 8-byte aligned. Segment files are
//! pre-allocated and zero-filled, so the end of the data is the first all-zero record
//! header. `docs/segment-format.md` has the byte tables and a worked example.
//!
//! Encoding appends into a caller-owned buffer (a mapped file); the scan reads a whole
//! segment back and tells a clean end, a torn tail (truncate it) and corruption in the
//! middle (stop and report: never drop valid records after it). No I/O here.

/// "GYROSEG1".
pub const MAGIC: [u8; 8] = *b"GYROSEG1";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
pub const RECORD_HEADER_LEN: usize = 20;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Largest payload (a CDR line); larger is refused by `append`.
pub const PAYLOAD_MAX: usize = 1 << 20;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum RecordKind {
    /// A CDR line for a CCR.
    Cdr = 1,
    /// A balance change that is not a CCR (top-up, package, supervision, escrow).
    Balance = 2,
    /// A request as the engine received it, for replay at recovery (binary, see
    /// `journal`); not for billing.
    Input = 3,
    /// A change of the engine's state that is not a request: provisioning, session
    /// supervision (binary, see `journal`); not for billing.
    Control = 4,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Cdr),
            2 => Some(RecordKind::Balance),
            3 => Some(RecordKind::Input),
            4 => Some(RecordKind::Control),
            _ => None,
        }
    }

    /// Whether the payload is a JSON line for billing (CDRs and balance records).
    pub fn is_billing(self) -> bool {
        matches!(self, RecordKind::Cdr | RecordKind::Balance)
    }
}

/// The segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard: u16,
    /// Sequence number of the segment's first record (also the file's name).
    pub base_seq: u64,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// The file's size as allocated.
    pub segment_size: u64,
}

impl SegmentHeader {
    /// Writes the 64-byte header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&self.shard.to_le_bytes());
        // 12..16 reserved (zero)
        h[16..24].copy_from_slice(&self.base_seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        h[32..40].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads and checks the header.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, ScanError> {
        let h = b
            .get(..HEADER_LEN)
            .ok_or(ScanError::BadHeader("shorter than the 64-byte header"))?;
        if h[0..8] != MAGIC {
            return Err(ScanError::BadHeader("not a gyro segment (magic)"));
        }
        let le16 = |r: core::ops::Range<usize>| u16::from_le_bytes([h[r.start], h[r.start + 1]]);
        let le64 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if le16(8..10) != FORMAT_VERSION {
            return Err(ScanError::BadHeader("unknown format version"));
        }
        let crc = u32::from_le_bytes([h[40], h[41], h[42], h[43]]);
        if crc != crc32c::crc32c(&h[0..40]) {
            return Err(ScanError::BadHeader("header CRC mismatch"));
        }
        Ok(SegmentHeader {
            shard: le16(10..12),
            base_seq: le64(16),
            created_ms: le64(24),
            segment_size: le64(32),
        })
    }
}

/// A record was not appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// The segment has no room left: roll to the next one.
    Full,
    /// Empty or larger than `PAYLOAD_MAX`.
    BadPayload,
}

/// Bytes a record with this payload takes, padding included.
pub const fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Appends a record at `at` of `segment` (which must be zero from `at` on, as a
/// pre-allocated segment is); returns the offset of the next record. The CRC covers
/// sequence, kind, flags, reserved and payload; it is checked again when read.
pub fn append(
    segment: &mut [u8],
    at: usize,
    seq: u64,
    kind: RecordKind,
    payload: &[u8],
) -> Result<usize, AppendError> {
    if payload.is_empty() || payload.len() > PAYLOAD_MAX {
        return Err(AppendError::BadPayload);
    }
    let size = record_size(payload.len());
    let end = at.checked_add(size).ok_or(AppendError::Full)?;
    // Keep room for the all-zero header that marks the end of the data.
    if end + RECORD_HEADER_LEN > segment.len()
        || !at.is_multiple_of(RECORD_ALIGN)
        || at < HEADER_LEN
    {
        return Err(AppendError::Full);
    }
    write_record(&mut segment[at..end], seq, kind, payload);
    Ok(end)
}

/// Writes one whole record into `r`, which is `record_size(payload.len())` bytes (the
/// padding is zeroed). For a writer that builds records away from the segment (and
/// checks room and alignment itself, as `append` does).
pub fn write_record(r: &mut [u8], seq: u64, kind: RecordKind, payload: &[u8]) {
    debug_assert_eq!(r.len(), record_size(payload.len()));
    r[8..16].copy_from_slice(&seq.to_le_bytes());
    r[16] = kind as u8;
    r[17] = 0;
    r[18..20].copy_from_slice(&[0, 0]);
    r[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload.len()].copy_from_slice(payload);
    r[RECORD_HEADER_LEN + payload.len()..].fill(0);
    let crc = crc32c::crc32c(&r[8..RECORD_HEADER_LEN + payload.len()]);
    r[4..8].copy_from_slice(&crc.to_le_bytes());
    // The length goes last: a record is only visible once its length is written.
    r[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
}

/// One record read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: usize,
    pub seq: u64,
    pub kind: RecordKind,
    pub payload: &'a [u8],
}

/// Why a segment cannot be read as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScanError {
    BadHeader(&'static str),
    /// A bad record with valid records after it: the data in the middle is damaged.
    /// Nothing after `offset` is dropped silently; the operator decides.
    Corrupt {
        offset: usize,
        reason: &'static str,
    },
}

/// How the data of a segment ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// At the all-zero record header at `offset` (or the end of the file).
    Clean { offset: usize },
    /// A record at `offset` is incomplete or damaged and nothing valid follows: a write
    /// that was cut off. Recovery truncates (zeroes) from `offset`.
    TornTail { offset: usize, reason: &'static str },
}

impl End {
    /// Where the next record goes after recovery.
    pub fn offset(&self) -> usize {
        match *self {
            End::Clean { offset } | End::TornTail { offset, .. } => offset,
        }
    }
}

/// The record at `at`, which must carry sequence `seq`: `Ok(None)` where nothing is
/// written yet (an all-zero record header), `Err` with the reason for a record that is
/// damaged or incomplete. For readers that follow a live segment record by record
/// (`scan` tells a torn tail from corruption; this does not look further).
pub fn record_at(seg: &[u8], at: usize, seq: u64) -> Result<Option<Record<'_>>, &'static str> {
    read_record(seg, at.max(HEADER_LEN), Some(seq))
}

/// Checks the record at `at`, expecting sequence `seq` (any sequence if `None`).
fn read_record(
    seg: &[u8],
    at: usize,
    seq: Option<u64>,
) -> Result<Option<Record<'_>>, &'static str> {
    let Some(h) = seg.get(at..at + RECORD_HEADER_LEN) else {
        // No room for a header: the end of the file.
        return Ok(None);
    };
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len == 0 || len > PAYLOAD_MAX {
        return Err("bad record length");
    }
    let end = at + RECORD_HEADER_LEN + len;
    let Some(body) = seg.get(at + 8..end) else {
        return Err("record runs past the end of the segment");
    };
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if crc != crc32c::crc32c(body) {
        return Err("record CRC mismatch");
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&h[8..16]);
    let got = u64::from_le_bytes(s);
    if seq.is_some_and(|want| want != got) {
        return Err("sequence number out of order");
    }
    let kind = RecordKind::from_u8(h[16]).ok_or("unknown record kind")?;
    Ok(Some(Record {
        offset: at,
        seq: got,
        kind,
        payload: &seg[at + RECORD_HEADER_LEN..end],
    }))
}

/// Continues reading a segment from record offset `at`, expecting sequence `seq` there
/// (for a reader that follows a segment as it is written). Same rules as `scan`.
pub fn scan_from<'a>(
    seg: &'a [u8],
    at: usize,
    seq: u64,
    each: impl FnMut(Record<'a>),
) -> Result<End, ScanError> {
    scan_records(seg, at.max(HEADER_LEN), seq, each)
}

/// Reads every record of a segment in order, calling `each`, and says how the data
/// ends. A bad record is a torn tail when no valid record can be found after it (at any
/// aligned offset up to the end of the file), corruption otherwise.
pub fn scan<'a>(
    seg: &'a [u8],
    each: impl FnMut(Record<'a>),
) -> Result<(SegmentHeader, End), ScanError> {
    let header = SegmentHeader::decode(seg)?;
    let end = scan_records(seg, HEADER_LEN, header.base_seq, each)?;
    Ok((header, end))
}

fn scan_records<'a>(
    seg: &'a [u8],
    mut at: usize,
    mut seq: u64,
    mut each: impl FnMut(Record<'a>),
) -> Result<End, ScanError> {
    loop {
        match read_record(seg, at, Some(seq)) {
            Ok(Some(r)) => {
                each(r);
                at += record_size(r.payload.len());
                seq += 1;
            }
            Ok(None) => {
                // All zero here; anything valid later means the middle was zeroed.
                if find_valid_after(seg, at + RECORD_ALIGN, seq).is_some() {
                    let reason = "zeroed record with valid records after it";
                    return Err(ScanError::Corrupt { offset: at, reason });
                }
                return Ok(End::Clean { offset: at });
            }
            Err(reason) => {
                if find_valid_after(seg, at + RECORD_ALIGN, seq).is_some() {
                    return Err(ScanError::Corrupt { offset: at, reason });
                }
                return Ok(End::TornTail { offset: at, reason });
            }
        }
    }
}

/// The offset of a valid record with a sequence number at or after `seq`, searching
/// aligned offsets from `from`.
fn find_valid_after(seg: &[u8], from: usize, seq: u64) -> Option<usize> {
    let mut at = from.div_ceil(RECORD_ALIGN) * RECORD_ALIGN;
    while at + RECORD_HEADER_LEN <= seg.len() {
        if let Ok(Some(r)) = read_record(seg, at, None) {
            if r.seq >= seq {
                return Some(at);
            }
        }
        at += RECORD_ALIGN;
    }
    None
}
