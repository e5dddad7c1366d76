//! A shard's segment writer: pre-allocated, memory-mapped segment files named by their
//! first sequence number, rolled when full (docs/segment-format.md). Durability policy
//! `none` for now: the page cache holds the records, which survive a process crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use gyro_engine::segment::{self, AppendError, RecordKind, SegmentHeader, HEADER_LEN};

use crate::cdr_files::segment_name;

/// How far ahead of the writer the prefaulter keeps a segment's pages in the page
/// cache and dirty (so that the writer's stores do not take the file system's page
/// faults on the request path).
const PREFAULT_AHEAD: usize = 8 << 20;

enum Prefault {
    /// A new current segment; and prepare the next one in this directory, of this size.
    Segment(File, PathBuf, usize),
    /// Populate this range of it for writing.
    Range(usize, usize),
}

/// A thread that faults in the pages ahead of the writer, through its own mapping of
/// the same file (MADV_POPULATE_WRITE: page cache pages allocated and made writable,
/// no byte changed), so the file system's work happens off the request path.
///
/// It also allocates the next segment ahead of time: a file of the segment's size under
/// a staging name (`.next.seg.new`), its first pages populated, handed over when ready;
/// the writer's roll then only writes the header and renames it.
struct Prefaulter {
    tx: crossbeam_channel::Sender<Prefault>,
    /// Staging files ready for the next roll.
    ready: crossbeam_channel::Receiver<(PathBuf, File)>,
}

/// The staging name of the segment prepared ahead.
const NEXT_STAGING: &str = ".next.seg.new";

/// A new segment file of `size` bytes (all zero) under a staging name.
fn create_staging(path: &Path, size: usize) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(size as u64)?;
    Ok(file)
}

/// Creates the next segment's file and populates its first pages.
fn prepare_next(dir: &Path, size: usize) -> io::Result<(PathBuf, File)> {
    let path = dir.join(NEXT_STAGING);
    let file = create_staging(&path, size)?;
    // SAFETY: the file was just created here and nobody else maps it yet; the mapping is
    // only used for madvise.
    let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
    let _ = map.advise_range(
        memmap2::Advice::PopulateWrite,
        0,
        PREFAULT_AHEAD.min(map.len()),
    );
    Ok((path, file))
}

impl Prefaulter {
    fn start() -> Option<Prefaulter> {
        // Bounded (preallocated): a send never allocates on the request path.
        let (tx, rx) = crossbeam_channel::bounded::<Prefault>(16);
        let (ready_tx, ready) = crossbeam_channel::bounded::<(PathBuf, File)>(1);
        std::thread::Builder::new()
            .name("gyro-prefault".into())
            .spawn(move || {
                let mut map: Option<memmap2::MmapMut> = None;
                for job in rx {
                    match job {
                        // SAFETY: this mapping is only used for madvise; it never reads
                        // or writes the bytes the writer's mapping writes.
                        Prefault::Segment(file, dir, size) => {
                            map = unsafe { memmap2::MmapMut::map_mut(&file).ok() };
                            // One prepared at a time: the last one not yet used stays.
                            if ready_tx.is_empty() {
                                if let Ok(next) = prepare_next(&dir, size) {
                                    let _ = ready_tx.try_send(next);
                                }
                            }
                        }
                        Prefault::Range(from, to) => {
                            if let Some(m) = &map {
                                let to = to.min(m.len());
                                if from < to {
                                    // Best effort: an old kernel without it only loses the
                                    // head start.
                                    let _ = m.advise_range(
                                        memmap2::Advice::PopulateWrite,
                                        from,
                                        to - from,
                                    );
                                }
                            }
                        }
                    }
                }
            })
            .ok()
            .map(|_| Prefaulter { tx, ready })
    }
}

/// Appends records to a directory of segments.
pub struct SegmentWriter {
    dir: PathBuf,
    shard: u16,
    segment_size: usize,
    map: Option<memmap2::MmapMut>,
    offset: usize,
    /// Bytes of the current segment known to be on disk.
    synced: usize,
    /// Sync a full segment before rolling (durability `interval` and `tick`).
    durable: bool,
    next_seq: u64,
    bytes_written: u64,
    prefault: Option<Prefaulter>,
    /// The current segment is prefaulted up to here.
    prefaulted_to: usize,
}

impl SegmentWriter {
    /// Tells the prefaulter about the current segment's file.
    fn prefault_segment(&mut self, file: &File) {
        if let Some(p) = &self.prefault {
            if let Ok(f) = file.try_clone() {
                // A new segment's file must reach the prefaulter (rolls are rare).
                let _ =
                    p.tx.send(Prefault::Segment(f, self.dir.clone(), self.segment_size));
                self.prefaulted_to = self.offset;
                self.prefault_ahead();
            }
        }
    }

    /// Keeps the prefaulted range ahead of the writer.
    #[inline]
    fn prefault_ahead(&mut self) {
        if self.offset + PREFAULT_AHEAD / 2 > self.prefaulted_to {
            if let Some(p) = &self.prefault {
                let len = self.map.as_ref().map_or(0, |m| m.len());
                let to = (self.offset + PREFAULT_AHEAD).min(len);
                // Never wait for the prefaulter: if it is behind, the range is skipped
                // and the writer takes those faults itself.
                if to > self.prefaulted_to {
                    let _ = p.tx.try_send(Prefault::Range(self.prefaulted_to, to));
                    self.prefaulted_to = to;
                }
            }
        }
    }

    /// Starts a new log in `dir` (which must hold no segments yet) at sequence `seq`.
    pub fn create(
        dir: &Path,
        shard: u16,
        segment_size: usize,
        seq: u64,
    ) -> io::Result<SegmentWriter> {
        std::fs::create_dir_all(dir)?;
        let mut w = SegmentWriter {
            dir: dir.to_path_buf(),
            shard,
            segment_size: segment_size.max(HEADER_LEN + 4096),
            map: None,
            offset: 0,
            synced: 0,
            durable: false,
            next_seq: seq,
            bytes_written: 0,
            prefault: Prefaulter::start(),
            prefaulted_to: 0,
        };
        w.roll()?;
        Ok(w)
    }

    /// Continues the log in `dir` whose last segment starts at `base_seq` and whose next
    /// record goes at `offset` with sequence `next_seq` (what recovery found).
    pub fn resume(
        dir: &Path,
        shard: u16,
        segment_size: usize,
        base_seq: u64,
        offset: usize,
        next_seq: u64,
    ) -> io::Result<SegmentWriter> {
        let path = dir.join(segment_name(base_seq));
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: recovery runs before the shard takes requests; this writer is the
        // only one writing the file, readers map it read-only.
        let map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        if offset < HEADER_LEN || offset > map.len() {
            return Err(io::Error::other(format!(
                "{}: cannot resume at offset {offset}",
                path.display()
            )));
        }
        let mut w = SegmentWriter {
            dir: dir.to_path_buf(),
            shard,
            segment_size: segment_size.max(HEADER_LEN + 4096),
            map: Some(map),
            offset,
            synced: offset,
            durable: false,
            next_seq,
            bytes_written: 0,
            prefault: Prefaulter::start(),
            prefaulted_to: offset,
        };
        w.prefault_segment(&file);
        Ok(w)
    }

    /// Zeroes `from..` of the current segment (a torn tail found by recovery) and syncs
    /// it, so that the next record is written over nothing half-written.
    pub fn zero_tail(&mut self, from: usize) -> io::Result<()> {
        if let Some(m) = self.map.as_mut() {
            if from < m.len() {
                m[from..].fill(0);
                m.flush_range(from, m.len() - from)?;
            }
        }
        Ok(())
    }

    fn roll(&mut self) -> io::Result<()> {
        // What was written to the full segment reaches the disk before the next one
        // takes records, so `sync` only ever has the current segment to cover.
        if self.durable {
            self.sync()?;
        } else if let Some(m) = &self.map {
            m.flush_async()?;
        }
        self.map = None;
        // The segment takes its name only once its header is written: a reader never
        // sees a segment without one.
        let path = self.dir.join(segment_name(self.next_seq));
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            ));
        }
        // The segment prepared ahead by the prefaulter when there is one of the right
        // size, else one made here.
        let prepared = self
            .prefault
            .as_ref()
            .and_then(|p| p.ready.try_recv().ok())
            .filter(|(_, f)| {
                f.metadata()
                    .is_ok_and(|m| m.len() == self.segment_size as u64)
            });
        let (staging, file) = match prepared {
            Some(p) => p,
            None => {
                let staging = path.with_extension("seg.new");
                let file = create_staging(&staging, self.segment_size)?;
                (staging, file)
            }
        };
        // SAFETY: the file was just created by this writer and is only written through
        // this map; readers only map it read-only.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let header = SegmentHeader {
            shard: self.shard,
            base_seq: self.next_seq,
            created_ms,
            segment_size: self.segment_size as u64,
        };
        map[..HEADER_LEN].copy_from_slice(&header.encode());
        map.flush_range(0, HEADER_LEN)?;
        std::fs::rename(&staging, &path)?;
        if self.durable {
            File::open(&self.dir)?.sync_all()?;
        }
        self.map = Some(map);
        self.offset = HEADER_LEN;
        self.synced = 0;
        self.prefault_segment(&file);
        Ok(())
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> io::Result<u64> {
        for _ in 0..2 {
            let Some(map) = self.map.as_mut() else {
                return Err(io::Error::other("segment writer closed"));
            };
            match segment::append(map, self.offset, self.next_seq, kind, payload) {
                Ok(next) => {
                    self.bytes_written += (next - self.offset) as u64;
                    self.offset = next;
                    self.next_seq += 1;
                    self.prefault_ahead();
                    return Ok(self.next_seq - 1);
                }
                Err(AppendError::Full) => self.roll()?,
                Err(e) => return Err(io::Error::other(format!("record refused: {e:?}"))),
            }
        }
        Err(io::Error::other("record larger than a segment"))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Writes what was appended since the last sync to the disk (msync of that range)
    /// and waits for it. An error leaves the state of the page cache unknown: the
    /// caller must stop and let recovery decide.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(m) = &self.map {
            if self.offset > self.synced {
                m.flush_range(self.synced, self.offset - self.synced)?;
                self.synced = self.offset;
            }
        }
        Ok(())
    }

    /// With `true`, a full segment is synced before the next one takes records.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Bytes appended but not yet synced.
    pub fn unsynced(&self) -> usize {
        self.offset - self.synced
    }

    /// Writes the mapped pages back to the files.
    pub fn flush(&mut self) -> io::Result<()> {
        match &self.map {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }
}
