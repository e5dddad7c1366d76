//! A shard's segment writer: pre-allocated segment files named by their first sequence
//! number, rolled when full (docs/segment-format.md). Two ways to write, same bytes on
//! disk:
//!
//! - **Through a mapping** (the default, used by recovery until serving starts):
//!   records are stored into the mapped segment, so the page cache holds them at once
//!   and they survive a process crash. A background thread faults the pages ahead of
//!   the writer in.
//! - **Buffered** (`set_buffered`; `gyro serve`, every durability policy): records
//!   collect in memory and reach the file with one `pwrite` when the caller says
//!   (`flush`, once per batch before its answers leave) or syncs (`sync`: `pwrite` then
//!   `fdatasync`).
//!   Syncing or writing back pages stored through a shared mapping write-protects each
//!   of them, and with the shards' threads in one process every such page costs a
//!   TLB-flush interrupt on every core (a quarter of the CPU at 70k CCR/s with `tick`,
//!   measured with perf); the next store faults the page in again, and new pages are
//!   faulted and zeroed as the writer reaches them. Whole pages written with `pwrite`
//!   are mapped by no one: none of that happens.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gyro_engine::segment::{self, AppendError, RecordKind, SegmentHeader, HEADER_LEN};

use crate::cdr_files::{segment_name, SegmentName};

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
    thread: std::thread::JoinHandle<()>,
}

impl Prefaulter {
    /// Stops the thread (its mapping goes with it) and removes the segment it prepared
    /// ahead in `dir`, if any.
    fn stop(self, dir: &Path) {
        let Prefaulter { tx, ready, thread } = self;
        drop(tx);
        let _ = thread.join();
        drop(ready);
        let _ = std::fs::remove_file(dir.join(NEXT_STAGING));
    }
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

/// Writes the path of the segment starting at `base_seq` in `dir`, followed by
/// `suffix`, into `into`, in the memory it has.
fn name_into(into: &mut PathBuf, dir: &Path, base_seq: u64, suffix: &str) {
    use std::fmt::Write;
    let s = into.as_mut_os_string();
    s.clear();
    s.push(dir.as_os_str());
    if !s.as_encoded_bytes().ends_with(b"/") {
        s.push("/");
    }
    let _ = write!(s, "{}{suffix}", SegmentName(base_seq));
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
            .map(|thread| Prefaulter { tx, ready, thread })
    }
}

/// How many bytes of records a buffered writer holds between syncs before it writes
/// them out anyway (allocated once).
const BUFFER_BYTES: usize = 1 << 20;

/// Bytes written out between two starts of writeback (see `Buffered::write_out`).
const WRITEBACK_STEP: usize = 4 << 20;

/// What the writeback thread is told: the segment now written (a duplicate of its
/// descriptor), or a range of it written since the last start.
enum WritebackJob {
    Segment(File),
    Range(u64, u64),
}

/// A thread that starts the kernel's writeback of what the writer wrote
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Starting writeback waits when the
/// device's queue is full (2 to 3 ms here, `docs/performance.md`, "Latency"): here it
/// waits on this thread, not on the shard's. Jobs go through a bounded queue (no
/// allocation per job); when it is full the writer starts writeback itself.
struct Writeback {
    tx: crossbeam_channel::Sender<WritebackJob>,
    /// The thread has the current segment's descriptor.
    current: bool,
}

impl Writeback {
    fn start(file: &File) -> Option<Writeback> {
        let (tx, rx) = crossbeam_channel::bounded::<WritebackJob>(64);
        std::thread::Builder::new()
            .name("gyro-writeback".into())
            .spawn(move || {
                let mut file: Option<File> = None;
                for job in rx {
                    match job {
                        WritebackJob::Segment(f) => file = Some(f),
                        WritebackJob::Range(from, len) => {
                            if let Some(f) = &file {
                                start_writeback(f, from, len);
                            }
                        }
                    }
                }
            })
            .ok()?;
        let mut w = Writeback { tx, current: false };
        w.segment(file);
        Some(w)
    }

    /// The writer moved to segment `file`.
    fn segment(&mut self, file: &File) {
        self.current = file
            .try_clone()
            .ok()
            .is_some_and(|dup| self.tx.try_send(WritebackJob::Segment(dup)).is_ok());
    }

    /// Asks for writeback of `len` bytes at `from`; false when the thread cannot take it.
    fn range(&self, from: u64, len: u64) -> bool {
        self.current && self.tx.try_send(WritebackJob::Range(from, len)).is_ok()
    }
}

/// Starts the kernel's writeback of a range of `file` (it does not wait for the I/O;
/// it may wait for room in the device's queue).
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open file descriptor owned by `file`. Its
    // failure only means the kernel writes these pages back later itself.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The state of a buffered writer (see the module documentation).
struct Buffered {
    /// The current segment.
    file: File,
    /// Records not yet written to the file; their first byte goes at `at`.
    buf: Vec<u8>,
    at: usize,
    /// The segment's size: records end before it.
    limit: usize,
    /// Writeback of the current segment has been started up to here.
    kicked: usize,
    /// Start writeback as records are written: with durability `none` only, where
    /// nothing else does; `interval` and `tick` sync often enough themselves.
    kick: bool,
    /// The thread that starts it (with `kick`).
    writeback: Option<Writeback>,
}

impl Buffered {
    /// Writes out what is held (no sync). Every `WRITEBACK_STEP` bytes, starts the
    /// kernel's writeback of what was written (`sync_file_range` with
    /// `SYNC_FILE_RANGE_WRITE`: it starts the I/O and does not wait for it), so that
    /// the log's dirty pages stay a few megabytes instead of growing to the kernel's
    /// background threshold (gigabytes) and being written back in one burst that
    /// stalls the shard for milliseconds (`docs/performance.md`, "Latency").
    fn write_out(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.at as u64)?;
            self.at += self.buf.len();
            self.buf.clear();
            if self.kick && self.at - self.kicked >= WRITEBACK_STEP {
                self.start_writeback();
            }
        }
        Ok(())
    }

    /// Starts writeback of the bytes written since the last start (see `write_out`),
    /// on the writeback thread when there is one.
    fn start_writeback(&mut self) {
        if self.kick && self.at > self.kicked {
            let (from, len) = (self.kicked as u64, (self.at - self.kicked) as u64);
            if !self.writeback.as_ref().is_some_and(|w| w.range(from, len)) {
                start_writeback(&self.file, from, len);
            }
            self.kicked = self.at;
        }
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
    /// The current segment's file name.
    path: PathBuf,
    /// Room for the next segment's file name and its staging name: a roll allocates
    /// nothing (the shards' request path never does, `alloc_serve`).
    next_path: PathBuf,
    staging_path: PathBuf,
    /// Set by `set_buffered`: records are written with `pwrite`, not through `map`.
    buffered: Option<Buffered>,
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
            path: PathBuf::with_capacity(dir.as_os_str().len() + 40),
            next_path: PathBuf::with_capacity(dir.as_os_str().len() + 40),
            staging_path: PathBuf::with_capacity(dir.as_os_str().len() + 40),
            buffered: None,
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
            path: {
                let mut p = path;
                p.reserve(40);
                p
            },
            next_path: PathBuf::with_capacity(dir.as_os_str().len() + 40),
            staging_path: PathBuf::with_capacity(dir.as_os_str().len() + 40),
            buffered: None,
        };
        w.prefault_segment(&file);
        Ok(w)
    }

    /// Zeroes `from..` of the current segment (a torn tail found by recovery) and syncs
    /// it, so that the next record is written over nothing half-written.
    pub fn zero_tail(&mut self, from: usize) -> io::Result<()> {
        if let Some(b) = self.buffered.as_mut() {
            b.write_out()?;
            let zeros = [0u8; 4096];
            let mut at = from;
            while at < b.limit {
                let n = (b.limit - at).min(zeros.len());
                b.file.write_all_at(&zeros[..n], at as u64)?;
                at += n;
            }
            return b.file.sync_data();
        }
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
        if let Some(b) = self.buffered.as_mut() {
            b.write_out()?;
        }
        self.map = None;
        // The segment takes its name only once its header is written: a reader never
        // sees a segment without one.
        let mut path = std::mem::take(&mut self.next_path);
        name_into(&mut path, &self.dir, self.next_seq, "");
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
                let mut staging = std::mem::take(&mut self.staging_path);
                name_into(&mut staging, &self.dir, self.next_seq, ".new");
                let file = create_staging(&staging, self.segment_size)?;
                (staging, file)
            }
        };
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let header = SegmentHeader {
            shard: self.shard,
            base_seq: self.next_seq,
            created_ms,
            segment_size: self.segment_size as u64,
        };
        if let Some(b) = self.buffered.as_mut() {
            file.write_all_at(&header.encode(), 0)?;
            file.sync_data()?;
            std::fs::rename(&staging, &path)?;
            if self.durable {
                File::open(&self.dir)?.sync_all()?;
            }
            b.start_writeback();
            if let Some(w) = b.writeback.as_mut() {
                w.segment(&file);
            }
            b.file = file;
            b.at = HEADER_LEN;
            b.kicked = 0;
            b.limit = self.segment_size;
            self.staging_path = staging;
            self.next_path = std::mem::replace(&mut self.path, path);
            self.offset = HEADER_LEN;
            self.synced = HEADER_LEN;
            return Ok(());
        }
        // SAFETY: the file was just created by this writer and is only written through
        // this map; readers only map it read-only.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        map[..HEADER_LEN].copy_from_slice(&header.encode());
        map.flush_range(0, HEADER_LEN)?;
        std::fs::rename(&staging, &path)?;
        if self.durable {
            File::open(&self.dir)?.sync_all()?;
        }
        self.map = Some(map);
        self.staging_path = staging;
        self.next_path = std::mem::replace(&mut self.path, path);
        self.offset = HEADER_LEN;
        self.synced = 0;
        self.prefault_segment(&file);
        Ok(())
    }

    /// From now on, records are held in memory and written to the file at each `flush`
    /// and `sync` (see the module documentation). What was written through the mapping
    /// is written back first.
    pub fn set_buffered(&mut self) -> io::Result<()> {
        if self.buffered.is_some() {
            return Ok(());
        }
        let Some(map) = self.map.take() else {
            return Err(io::Error::other("segment writer closed"));
        };
        map.flush()?;
        let limit = map.len();
        drop(map);
        // The prefaulter and its mapping go: pages it made writable would have to be
        // write-protected again at every sync. Rolls make their segments themselves.
        if let Some(p) = self.prefault.take() {
            p.stop(&self.dir);
        }
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.buffered = Some(Buffered {
            file,
            buf: Vec::with_capacity(BUFFER_BYTES),
            at: self.offset,
            limit,
            kicked: self.offset,
            kick: !self.durable,
            writeback: None,
        });
        if let Some(b) = self.buffered.as_mut() {
            if b.kick {
                b.writeback = Writeback::start(&b.file);
            }
        }
        self.synced = self.offset;
        Ok(())
    }

    /// `append` for a buffered writer: `Ok(None)` when the segment is full.
    fn append_buffered(&mut self, kind: RecordKind, payload: &[u8]) -> io::Result<Option<u64>> {
        let Some(b) = self.buffered.as_mut() else {
            return Err(io::Error::other("segment writer closed"));
        };
        if payload.is_empty() || payload.len() > segment::PAYLOAD_MAX {
            return Err(io::Error::other("record refused: BadPayload"));
        }
        let size = segment::record_size(payload.len());
        // The same rule as `segment::append`: room for the record and for the all-zero
        // header that marks the end of the data.
        if self.offset + size + segment::RECORD_HEADER_LEN > b.limit {
            return Ok(None);
        }
        if b.buf.len() + size > b.buf.capacity() {
            b.write_out()?;
        }
        let start = b.buf.len();
        if start + size > b.buf.capacity() {
            // Larger than the buffer: written on its own.
            let mut one = vec![0u8; size];
            segment::write_record(&mut one, self.next_seq, kind, payload);
            b.file.write_all_at(&one, self.offset as u64)?;
            b.at = self.offset + size;
        } else {
            b.buf.resize(start + size, 0);
            segment::write_record(&mut b.buf[start..], self.next_seq, kind, payload);
        }
        self.bytes_written += size as u64;
        self.offset += size;
        self.next_seq += 1;
        Ok(Some(self.next_seq - 1))
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> io::Result<u64> {
        for _ in 0..2 {
            if self.buffered.is_some() {
                match self.append_buffered(kind, payload)? {
                    Some(seq) => return Ok(seq),
                    None => {
                        self.roll()?;
                        continue;
                    }
                }
            }
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
        if let Some(b) = self.buffered.as_mut() {
            if self.offset > self.synced {
                b.write_out()?;
                b.file.sync_data()?;
                self.synced = self.offset;
            }
            return Ok(());
        }
        if let Some(m) = &self.map {
            if self.offset > self.synced {
                m.flush_range(self.synced, self.offset - self.synced)?;
                self.synced = self.offset;
            }
        }
        Ok(())
    }

    /// With `true`, a full segment is synced before the next one takes records, and a
    /// buffered writer leaves writeback to those syncs (see `Buffered::write_out`).
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
        if let Some(b) = self.buffered.as_mut() {
            b.kick = !durable;
            if b.kick && b.writeback.is_none() {
                b.writeback = Writeback::start(&b.file);
            }
        }
    }

    /// Bytes appended but not yet synced.
    pub fn unsynced(&self) -> usize {
        self.offset - self.synced
    }

    /// Buffered: writes the records held in memory to the file (no sync). Through the
    /// mapping: writes the mapped pages back to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(b) = self.buffered.as_mut() {
            return b.write_out();
        }
        match &self.map {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SegmentWriter {
    /// A buffered writer's records not yet written go to the file (not synced): what a
    /// writer through the mapping leaves in the page cache.
    fn drop(&mut self) {
        if let Some(b) = self.buffered.as_mut() {
            let _ = b.write_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr_files::{read_on, Position};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gyro-seg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Every record back, in order, as a reader of the directory sees it.
    fn read_all(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut pos = Position::default();
        let mut out = Vec::new();
        read_on(dir, &mut pos, false, |seq, payload| {
            out.push((seq, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    /// A writer switched to buffered halfway through a segment: the records written
    /// through the mapping and those written with pwrite make one log, across rolls,
    /// visible to readers after each sync, the same format throughout.
    #[test]
    fn a_buffered_writer_continues_the_log_through_rolls_and_syncs() {
        let dir = temp("buffered");
        let mut w = SegmentWriter::create(&dir, 3, 16 * 1024, 100).unwrap();
        w.set_durable(true);
        let payload = |i: u64| {
            format!(
                "{{\"record\":{i},\"pad\":\"{}\"}}",
                "x".repeat(i as usize % 300)
            )
        };
        for i in 0..10 {
            assert_eq!(
                w.append(RecordKind::Cdr, payload(i).as_bytes()).unwrap(),
                100 + i
            );
        }
        // The prefaulter prepares the next segment for the mapping's rolls...
        let staged = dir.join(NEXT_STAGING);
        let t0 = std::time::Instant::now();
        while !staged.exists() && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(staged.exists());
        w.set_buffered().unwrap();
        assert_eq!(w.unsynced(), 0);
        // ...and it is gone with the thread when the writer is buffered.
        assert!(!dir.join(NEXT_STAGING).exists());
        for i in 10..400 {
            assert_eq!(
                w.append(RecordKind::Cdr, payload(i).as_bytes()).unwrap(),
                100 + i
            );
            if i % 17 == 0 {
                w.sync().unwrap();
                assert_eq!(w.unsynced(), 0);
                // What was synced is there for a reader.
                let seen = read_all(&dir);
                assert_eq!(seen.len() as u64, i + 1, "after record {i}");
            }
        }
        w.sync().unwrap();
        let seen = read_all(&dir);
        assert_eq!(seen.len(), 400);
        for (i, (seq, p)) in seen.iter().enumerate() {
            assert_eq!(*seq, 100 + i as u64);
            assert_eq!(p, payload(i as u64).as_bytes());
        }
        // 400 records of 20 to 330 bytes in 16 KiB segments: several rolls.
        let segments = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count();
        assert!(segments > 3, "{segments} segments");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records held by a buffered writer reach the file when it syncs, not before.
    #[test]
    fn a_buffered_writer_writes_at_sync() {
        let dir = temp("at-sync");
        let mut w = SegmentWriter::create(&dir, 0, 1 << 20, 0).unwrap();
        w.set_buffered().unwrap();
        w.append(RecordKind::Cdr, b"{\"a\":1}").unwrap();
        assert_eq!(read_all(&dir).len(), 0);
        assert!(w.unsynced() > 0);
        w.sync().unwrap();
        assert_eq!(read_all(&dir), vec![(0, b"{\"a\":1}".to_vec())]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
