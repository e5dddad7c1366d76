//! Reading a shard's segment directory: `gyro cdr cat` prints the CDRs as NDJSON (what
//! a billing team pipes into its own tools), optionally following new records as they
//! are written; `gyro cdr verify` checks every header, CRC and sequence number and
//! names the file and offset of the first problem.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use gyro_engine::segment::{self, End, ScanError, SegmentHeader};

/// Segment files of a directory, in sequence order: `<20-digit base_seq>.seg`.
pub fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(base) = stem.parse::<u64>() {
                files.push((base, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The name of the segment that starts at `base_seq`.
pub fn segment_name(base_seq: u64) -> String {
    SegmentName(base_seq).to_string()
}

/// The name of the segment that starts at this sequence number, for writing into a
/// buffer that is already there (`segments` rolls without allocating).
pub struct SegmentName(pub u64);

impl std::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:020}.seg", self.0)
    }
}

/// A problem found in a segment directory.
#[derive(Debug)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: usize,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

pub(crate) fn map(path: &Path) -> io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: gyro only appends to segment files and never truncates one that readers
    // may have mapped; a reader racing the writer sees zeros or whole records (the
    // length is written last), which the scan tells apart.
    unsafe { memmap2::Mmap::map(&file) }
}

/// Where a reader stands: in which segment, at which record offset, expecting which
/// sequence number next.
#[derive(Debug, Default)]
pub struct Position {
    pub segment: Option<(u64, PathBuf)>,
    pub offset: usize,
    pub next_seq: u64,
}

/// Reads every record from `pos` to the current end of the data, calling `each` with
/// the sequence number and payload of every record (CDRs and balance records: both are
/// JSON lines with a `kind`), and moves `pos` there. A clean end
/// of one segment continues into the next one when it exists. `final_tail_ok` lets a
/// follower treat a torn tail of the last segment as "not written yet".
pub fn read_on(
    dir: &Path,
    pos: &mut Position,
    final_tail_ok: bool,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), Problem> {
    let files = segment_files(dir).map_err(|e| Problem {
        file: dir.to_path_buf(),
        offset: 0,
        what: e.to_string(),
    })?;
    let start = match &pos.segment {
        Some((base, _)) => files
            .iter()
            .position(|(b, _)| b == base)
            .unwrap_or(files.len()),
        None => 0,
    };
    for (i, (base, path)) in files.iter().enumerate().skip(start) {
        let problem = |offset: usize, what: String| Problem {
            file: path.clone(),
            offset,
            what,
        };
        let bytes = map(path).map_err(|e| problem(0, e.to_string()))?;
        let header = SegmentHeader::decode(&bytes).map_err(|e| match e {
            ScanError::BadHeader(why) => problem(0, format!("bad segment header: {why}")),
            other => problem(0, format!("{other:?}")),
        })?;
        if header.base_seq != *base {
            return Err(problem(
                0,
                format!(
                    "header says base sequence {}, name says {base}",
                    header.base_seq
                ),
            ));
        }
        let fresh = pos.segment.as_ref().is_none_or(|(b, _)| b != base);
        if fresh {
            if pos.segment.is_some() && *base != pos.next_seq {
                return Err(problem(
                    0,
                    format!(
                        "segment starts at sequence {base}, expected {}",
                        pos.next_seq
                    ),
                ));
            }
            pos.segment = Some((*base, path.clone()));
            pos.offset = segment::HEADER_LEN;
            pos.next_seq = *base;
        }
        let mut io_error = None;
        let mut seen = 0u64;
        let mut last_end = pos.offset;
        let end = segment::scan_from(&bytes, pos.offset, pos.next_seq, |r| {
            seen += 1;
            last_end = r.offset + segment::record_size(r.payload.len());
            if r.kind.is_billing() && io_error.is_none() {
                if let Err(e) = each(r.seq, r.payload) {
                    io_error = Some(e);
                }
            }
        });
        pos.next_seq += seen;
        pos.offset = last_end;
        if let Some(e) = io_error {
            return Err(problem(0, format!("output: {e}")));
        }
        let last = i + 1 == files.len();
        match end {
            Ok(End::Clean { .. }) => {}
            Ok(End::TornTail { .. }) if last && final_tail_ok => return Ok(()),
            Ok(End::TornTail { offset, reason }) => {
                return Err(problem(offset, format!("torn tail: {reason}")))
            }
            Err(ScanError::Corrupt { offset, reason }) => {
                return Err(problem(offset, format!("corrupt: {reason}")))
            }
            Err(e) => return Err(problem(0, format!("{e:?}"))),
        }
    }
    Ok(())
}

/// What a directory given to `gyro cdr` holds: one shard's segments, or a data
/// directory's shards.
#[derive(Debug, PartialEq, Eq)]
pub enum LogDir {
    Shard(PathBuf),
    /// `shard-N` directories, in shard order.
    Data(Vec<PathBuf>),
}

/// Whether `dir` is a shard's segment directory or a data directory (holding `shard-N`
/// directories); neither is an error that says what was expected.
pub fn log_dir(dir: &Path) -> Result<LogDir, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut shards = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("shard-")
            .and_then(|n| n.parse::<u16>().ok())
        {
            if path.is_dir() {
                shards.push((n, path));
            }
        }
    }
    let segments = segment_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !segments.is_empty() {
        return Ok(LogDir::Shard(dir.to_path_buf()));
    }
    if shards.is_empty() {
        return Err(format!(
            "{}: neither a shard's log (<sequence>.seg files) nor a data directory \
             (shard-N directories)",
            dir.display()
        ));
    }
    shards.sort();
    Ok(LogDir::Data(shards.into_iter().map(|(_, p)| p).collect()))
}

/// `gyro cdr verify`: the next sequence number after the last record, or the first
/// problem.
pub fn verify(dir: &Path) -> Result<u64, Problem> {
    let mut pos = Position::default();
    read_on(dir, &mut pos, false, |_, _| Ok(()))?;
    Ok(pos.next_seq)
}

/// `gyro cdr cat`: CDR lines with a sequence number at or after `from`, to `out`.
pub fn cat(
    dir: &Path,
    from: u64,
    pos: &mut Position,
    follow: bool,
    out: &mut impl Write,
) -> Result<(), Problem> {
    read_on(dir, pos, follow, |seq, payload| {
        if seq >= from {
            out.write_all(payload)?;
            if !payload.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    })?;
    out.flush().map_err(|e| Problem {
        file: dir.to_path_buf(),
        offset: 0,
        what: format!("output: {e}"),
    })
}
