//! A shard's start: a fresh log (the dataset snapshot saved beside it, the provisioning
//! recorded as the log's first record) or the recovery of an existing one (the engine
//! rebuilt by replaying the log through the shard core, `ShardCore::replay`, a torn
//! tail truncated,
//! the writer continuing where the log ends).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gyro_engine::charging::engine::{Engine, EngineConfig};
use gyro_engine::journal::{Control, Replayed};
use gyro_engine::provision::{snapshot, Dataset};
use gyro_engine::segment::{self, End, RecordKind, ScanError, SegmentHeader};
use gyro_engine::shard::{Action, Out, ShardCore};

use crate::cdr_files::{map, segment_files};
use crate::segments::SegmentWriter;

/// The dataset snapshot a data directory started from.
pub fn dataset_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dataset.rkyv")
}

/// What a start found and did.
pub struct Started {
    pub engine: Engine,
    pub writer: SegmentWriter,
    /// CRC32C of the dataset snapshot the log started from (engine snapshots carry it).
    pub dataset_crc: u32,
    /// None for a fresh log.
    pub recovery: Option<Recovery>,
}

/// Where a data directory keeps a shard's engine snapshots.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// A shard's engine snapshots, oldest first: (log sequence, path).
pub fn snapshots(data_dir: &Path, shard: u16) -> Vec<(u64, PathBuf)> {
    let prefix = format!("shard-{shard}-");
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(snapshot_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let seq = name
                .strip_prefix(&prefix)?
                .strip_suffix(".rkyv")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Writes the engine's state as of the log's next sequence number (the log must be
/// synced up to it first), keeping the newest `keep` snapshots.
pub fn write_snapshot(
    data_dir: &Path,
    shard: u16,
    engine: &Engine,
    seq: u64,
    dataset_crc: u32,
    keep: usize,
) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let dir = snapshot_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("shard-{shard}-{seq:020}.rkyv"));
    let tmp = path.with_extension("rkyv.new");
    let bytes = engine.snapshot(seq, dataset_crc).encode();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    let all = snapshots(data_dir, shard);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// What recovery replayed.
#[derive(Debug, Default)]
pub struct Recovery {
    pub records: u64,
    pub requests: u64,
    pub expiries: u64,
    /// Top-ups and packages added at run time.
    pub balance_changes: u64,
    /// Escrow messages taken from other shards.
    pub escrow_messages: u64,
    /// A torn tail truncated: file, offset, reason.
    pub torn: Option<(PathBuf, usize, &'static str)>,
    /// The last request had no CDR (a crash between the two): it was written.
    pub cdr_written: bool,
    /// The engine snapshot replay started from (its log sequence).
    pub from_snapshot: Option<u64>,
    /// Engine snapshots of another format, not used.
    pub snapshots_passed_over: Vec<PathBuf>,
    /// Segments moved aside (where to, and the first sequence not replayed).
    pub quarantined: Vec<(PathBuf, u64)>,
    pub elapsed: Duration,
}

/// Whether `dir` (a shard's log directory) holds a log.
pub fn has_log(dir: &Path) -> bool {
    segment_files(dir).is_ok_and(|f| !f.is_empty())
}

/// Starts a new log in `dir`: saves the dataset snapshot in `data_dir` (if not already
/// there) and records the provisioning as the first record.
pub fn start_fresh(
    dir: &Path,
    data_dir: &Path,
    shard: u16,
    shards: u16,
    segment_size: usize,
    dataset: Dataset,
    config: EngineConfig,
) -> Result<Started, String> {
    let bytes = snapshot::encode(&dataset);
    let path = dataset_path(data_dir);
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let tmp = path.with_extension("rkyv.new");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("saving the dataset snapshot {}: {e}", path.display()))?;
    let mut writer = SegmentWriter::create(dir, shard, segment_size, 0)
        .map_err(|e| format!("cannot create the CDR log in {}: {e}", dir.display()))?;
    let dataset_crc = crc32c::crc32c(&bytes);
    let marker = Control::Provisioned {
        dataset_crc,
        config: config.clone(),
        shard,
        shards,
    };
    writer
        .append(RecordKind::Control, &marker.encode())
        .map_err(|e| format!("writing the provisioning record: {e}"))?;
    // Barring is not in the dataset snapshot: journaled, for replay.
    for line in gyro_engine::provision::barred_lines(&dataset) {
        let record = Control::Provision {
            line: line.into_bytes(),
        };
        writer
            .append(RecordKind::Control, &record.encode())
            .map_err(|e| format!("writing the provisioning record: {e}"))?;
    }
    writer
        .sync()
        .map_err(|e| format!("writing the provisioning record: {e}"))?;
    Ok(Started {
        engine: Engine::new_shard(dataset, config, shard, shards),
        writer,
        dataset_crc,
        recovery: None,
    })
}

/// Rebuilds the engine from the log in `dir` and the snapshot in `data_dir`; the engine
/// decides with `config` afterwards.
pub fn recover(
    dir: &Path,
    data_dir: &Path,
    shard: u16,
    segment_size: usize,
    config: EngineConfig,
) -> Result<Started, String> {
    recover_with(dir, data_dir, shard, segment_size, config, false)
}

/// As `recover`; with `quarantine`, a segment with a corrupt record is moved to
/// `DATA_DIR/quarantine/shard-N/` instead of stopping the start: the records before the
/// corruption are replayed, the rest of that segment is not, and the log goes on with the
/// next segment (or a new one).
pub fn recover_with(
    dir: &Path,
    data_dir: &Path,
    shard: u16,
    segment_size: usize,
    config: EngineConfig,
    quarantine: bool,
) -> Result<Started, String> {
    match replay_log(
        dir,
        data_dir,
        shard,
        segment_size,
        config,
        quarantine,
        false,
    )? {
        Rebuilt::Started(s) => Ok(*s),
        Rebuilt::Engine(_) => Err("the log was not reopened".into()),
    }
}

/// The engine of shard `shard` rebuilt from its log and snapshots, read only: the
/// data directory is not changed (a torn tail is left for `gyro serve` to truncate).
pub fn rebuild(dir: &Path, data_dir: &Path, shard: u16) -> Result<Engine, String> {
    match replay_log(
        dir,
        data_dir,
        shard,
        1 << 20,
        EngineConfig::default(),
        false,
        true,
    )? {
        Rebuilt::Engine(e) => Ok(*e),
        Rebuilt::Started(s) => Ok(s.engine),
    }
}

enum Rebuilt {
    Started(Box<Started>),
    Engine(Box<Engine>),
}

fn replay_log(
    dir: &Path,
    data_dir: &Path,
    shard: u16,
    segment_size: usize,
    config: EngineConfig,
    quarantine: bool,
    read_only: bool,
) -> Result<Rebuilt, String> {
    let t0 = Instant::now();
    let snap_path = dataset_path(data_dir);
    let bytes = std::fs::read(&snap_path).map_err(|e| {
        format!(
            "{}: {e} (the log in {} needs the dataset it started from)",
            snap_path.display(),
            dir.display()
        )
    })?;
    let crc = crc32c::crc32c(&bytes);
    let mut dataset =
        Some(snapshot::decode(&bytes).map_err(|e| format!("{}: {e}", snap_path.display()))?);
    drop(bytes);
    let files = segment_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut engine: Option<Engine> = None;
    let mut rec = Recovery::default();
    // The newest engine snapshot, if any: replay goes on from its sequence.
    let mut start_seq = 0u64;
    // Snapshots of another format (written by another gyro version) are passed over:
    // an older one, or the whole log, is replayed instead.
    let mut snap = None;
    for (seq, path) in snapshots(data_dir, shard).into_iter().rev() {
        use gyro_engine::charging::engine::{EngineSnapshot, SnapshotError};
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match EngineSnapshot::decode(&bytes) {
            Ok(s) => {
                snap = Some((seq, path, s));
                break;
            }
            Err(e @ SnapshotError::Format(_)) => {
                tracing::warn!(target: "gyro", "{}: {e}; not used", path.display());
                rec.snapshots_passed_over.push(path);
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if let Some((seq, path, snap)) = snap {
        if snap.dataset_crc != crc || snap.seq != seq {
            return Err(format!(
                "{}: taken from another dataset or misnamed; move it away to replay the whole log",
                path.display()
            ));
        }
        let d = dataset.take().ok_or("no dataset")?;
        engine = Some(Engine::restore(d, snap).map_err(|e| format!("{}: {e}", path.display()))?);
        start_seq = seq;
        rec.from_snapshot = Some(seq);
    }
    // Segments wholly before the snapshot are not read (retention may have removed
    // them); the first one read must hold `start_seq`.
    let first = files
        .iter()
        .rposition(|(b, _)| *b <= start_seq)
        .unwrap_or(0);
    let files = &files[first..];
    if let Some((b, p)) = files.first() {
        if *b > start_seq {
            return Err(format!(
                "{}: the log starts at sequence {b}, after {start_seq} where replay must begin",
                p.display()
            ));
        }
    }
    let mut core: Option<ShardCore> = None;
    let mut next_seq = files.first().map_or(0, |(b, _)| *b);
    let mut resume_at = None;
    for (i, (base, path)) in files.iter().enumerate() {
        let last = i + 1 == files.len();
        let at =
            |offset: usize, what: String| format!("{} at offset {offset}: {what}", path.display());
        let seg = map(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let header = SegmentHeader::decode(&seg).map_err(|e| at(0, format!("{e:?}")))?;
        let after_quarantine = rec.quarantined.last().is_some_and(|(_, seq)| *seq <= *base);
        if header.base_seq != *base || (*base != next_seq && !after_quarantine) {
            return Err(at(
                0,
                format!(
                    "segment starts at sequence {}, expected {next_seq} (a segment is missing)",
                    header.base_seq
                ),
            ));
        }
        let mut failure: Option<(usize, String)> = None;
        let mut after = *base;
        let end = segment::scan_from(&seg, segment::HEADER_LEN, *base, |r| {
            after = r.seq + 1;
            if failure.is_some() || r.seq < start_seq {
                return;
            }
            rec.records += 1;
            if engine.is_none() && core.is_none() {
                // The first record says what the shard started from.
                let ok = r.kind == RecordKind::Control
                    && matches!(
                        Control::decode(r.payload),
                        Ok(Control::Provisioned { dataset_crc, .. }) if dataset_crc == crc
                    );
                match (ok, Control::decode(r.payload)) {
                    (
                        true,
                        Ok(Control::Provisioned {
                            config: recorded,
                            shard: recorded_shard,
                            shards,
                            ..
                        }),
                    ) if recorded_shard == shard => {
                        if let Some(d) = dataset.take() {
                            engine = Some(Engine::new_shard(d, recorded, shard, shards));
                        }
                    }
                    _ => {
                        failure = Some((
                            r.offset,
                            format!(
                                "the log does not start with the provisioning of {}",
                                snap_path.display()
                            ),
                        ))
                    }
                }
                return;
            }
            if core.is_none() {
                if let Some(e) = engine.take() {
                    core = Some(ShardCore::replaying(e, r.seq));
                }
            }
            if let Some(c) = core.as_mut() {
                match c.replay(r.kind, r.seq, r.payload) {
                    Ok(Replayed::Request) => rec.requests += 1,
                    Ok(Replayed::Expired(_)) => rec.expiries += 1,
                    Ok(Replayed::Balance) => rec.balance_changes += 1,
                    Ok(Replayed::Escrow) => rec.escrow_messages += 1,
                    Ok(Replayed::Nothing) => {}
                    Err(err) => failure = Some((r.offset, format!("record {}: {err}", r.seq))),
                }
            }
        });
        if let Some((offset, what)) = failure {
            return Err(at(offset, what));
        }
        next_seq = after;
        match end {
            Ok(End::Clean { offset }) => {
                if last {
                    resume_at = Some((*base, offset, false, ""));
                }
            }
            Ok(End::TornTail { offset, reason }) if last => {
                rec.torn = Some((path.clone(), offset, reason));
                resume_at = Some((*base, offset, true, reason));
            }
            Ok(End::TornTail { offset, reason }) => {
                return Err(at(
                    offset,
                    format!("damaged record in a sealed segment: {reason}"),
                ))
            }
            Err(ScanError::Corrupt { offset, reason }) if quarantine => {
                drop(seg);
                let qdir = data_dir.join("quarantine").join(format!("shard-{shard}"));
                let to = qdir.join(path.file_name().unwrap_or_default());
                std::fs::create_dir_all(&qdir)
                    .and_then(|()| std::fs::rename(path, &to))
                    .map_err(|e| at(offset, format!("quarantining: {e}")))?;
                rec.quarantined.push((to, next_seq));
                tracing::error!(
                    target: "gyro",
                    "{} at offset {offset}: corrupt record ({reason}); segment \
                     quarantined, records from sequence {next_seq} of it not replayed",
                    path.display()
                );
                if last {
                    resume_at = None;
                }
                continue;
            }
            Err(ScanError::Corrupt { offset, reason }) => {
                return Err(at(
                    offset,
                    format!(
                    "corrupt record: {reason} (records after it are intact; see `gyro cdr verify`, or start with --quarantine)"
                ),
                ))
            }
            Err(e) => return Err(at(0, format!("{e:?}"))),
        }
    }
    let mut core = match (core, engine) {
        (Some(c), _) => c,
        // A snapshot and nothing after it.
        (None, Some(e)) => ShardCore::replaying(e, next_seq),
        (None, None) => {
            return Err(format!(
                "{}: the log holds no provisioning record",
                dir.display()
            ))
        }
    };
    if read_only {
        let mut out = Out::new();
        core.finish_replay(&mut out);
        return Ok(Rebuilt::Engine(Box::new(core.into_engine())));
    }
    let (mut writer, offset, torn) = match resume_at {
        Some((base, offset, torn, _)) => (
            SegmentWriter::resume(dir, shard, segment_size, base, offset, next_seq)
                .map_err(|e| format!("{}: {e}", dir.display()))?,
            offset,
            torn,
        ),
        // The last segment was quarantined: the log goes on in a new one.
        None if !rec.quarantined.is_empty() => (
            SegmentWriter::create(dir, shard, segment_size, next_seq)
                .map_err(|e| format!("{}: {e}", dir.display()))?,
            0,
            false,
        ),
        None => return Err(format!("{}: no segment to continue", dir.display())),
    };
    if torn {
        writer
            .zero_tail(offset)
            .map_err(|e| format!("truncating the torn tail: {e}"))?;
    }
    // The crash may have come between the last request's journal record and its CDR:
    // the engine has charged it (here as then), so billing gets its CDR now. Its answer
    // was never sent; a retransmission gets the stored answer and no second CDR.
    let mut out = Out::new();
    core.finish_replay(&mut out);
    let mut failed = None;
    out.drain(|action, arena| {
        if let Action::Append { kind, seq, at } = action {
            if writer.next_seq() != seq {
                failed = Some(format!(
                    "the missing CDR would be record {seq}, the log is at {}",
                    writer.next_seq()
                ));
            } else if let Err(e) = writer
                .append(kind, at.of(arena))
                .and_then(|_| writer.sync())
            {
                failed = Some(format!("writing the missing CDR: {e}"));
            } else {
                rec.cdr_written = true;
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let mut engine = core.into_engine();
    if next_seq < start_seq {
        return Err(format!(
            "{}: the log ends at sequence {next_seq}, before the snapshot's {start_seq}",
            dir.display()
        ));
    }
    engine.set_config(config);
    // Replay sent the shard's escrow messages again; they went when they were first
    // sent. What never arrived is delivered again from `Engine::undelivered`.
    engine.outbox().for_each(drop);
    rec.elapsed = t0.elapsed();
    Ok(Rebuilt::Started(Box::new(Started {
        engine,
        writer,
        dataset_crc: crc,
        recovery: Some(rec),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyro_engine::diameter::ccr::{
        encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
    };
    use gyro_engine::provision::{import_ndjson, OnError};

    /// Magic and version before a snapshot's state.
    const SNAPSHOT_HEADER: usize = 12;

    fn dataset() -> Dataset {
        let mut text = concat!(
            "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
            "{\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000,\"credit_limit\":0}\n",
            "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
        )
        .as_bytes()
        .to_vec();
        let imp = import_ndjson(&mut text, OnError::Reject);
        assert!(imp.is_ok());
        imp.dataset
    }

    fn ccr_i(buf: &mut [u8]) -> usize {
        let mut c = Ccr {
            session_id: "pgw;1;1",
            origin_host: "pgw",
            origin_realm: "test",
            destination_realm: "gyro.local",
            service_context_id: "32251@3gpp.org",
            request_type: RequestType::Initial,
            subscription_id_count: 1,
            mscc_count: 1,
            ..Ccr::default()
        };
        c.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: "491700000001",
        };
        c.mscc[0] = Mscc {
            rating_group: Some(10),
            requested: Some(Units {
                total_octets: Some(1 << 20),
                ..Units::default()
            }),
            ..Mscc::default()
        };
        encode_ccr(&c, buf).unwrap()
    }

    /// A new log in `root/shard-0` whose first request (a CCR-I) is journaled; returns
    /// the start and the request's bytes.
    fn journaled_ccr_i(root: &Path, config: &EngineConfig) -> (Started, Vec<u8>) {
        let _ = std::fs::remove_dir_all(root);
        let dir = root.join("shard-0");
        let mut s = start_fresh(&dir, root, 0, 1, 1 << 20, dataset(), config.clone()).unwrap();
        let mut req = vec![0u8; 2048];
        let n = ccr_i(&mut req);
        req.truncate(n);
        let mut rec = vec![0u8; 4096];
        let len = gyro_engine::journal::encode_input(1_000, &req, &mut rec).unwrap();
        s.writer.append(RecordKind::Input, &rec[..len]).unwrap();
        (s, req)
    }

    #[test]
    fn a_corrupt_record_stops_the_start_unless_its_segment_is_quarantined() {
        let root = std::env::temp_dir().join(format!("gyro-quarantine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("shard-0");
        let config = EngineConfig::default();
        let size = 8192;
        let mut s = start_fresh(&dir, &root, 0, 1, size, dataset(), config.clone()).unwrap();
        // Top-ups fill a few small segments.
        let mut topups = 0;
        while crate::cdr_files::segment_files(&dir).unwrap().len() < 3 {
            let line = format!(
                "{{\"id\":\"t{topups}\",\"kind\":\"topup\",\"company\":\"acme\",\"amount\":1}}"
            );
            s.writer
                .append(RecordKind::Balance, line.as_bytes())
                .unwrap();
            s.engine.top_up(0, 1);
            topups += 1;
        }
        s.writer.flush().unwrap();
        drop(s);
        // A bit flipped in a record in the middle of the first segment.
        let files = crate::cdr_files::segment_files(&dir).unwrap();
        let first = &files[0].1;
        let mut bytes = std::fs::read(first).unwrap();
        bytes[segment::HEADER_LEN + 300] ^= 0x40;
        std::fs::write(first, &bytes).unwrap();

        let Err(e) = recover(&dir, &root, 0, size, config.clone()) else {
            panic!("a corrupt record must stop the start");
        };
        assert!(
            e.contains(&first.display().to_string()) && e.contains("offset"),
            "{e}"
        );
        assert!(e.contains("--quarantine"), "{e}");

        let r = recover_with(&dir, &root, 0, size, config, true).unwrap();
        let rec = r.recovery.as_ref().unwrap();
        assert_eq!(rec.quarantined.len(), 1);
        assert!(rec.quarantined[0].0.starts_with(root.join("quarantine")));
        assert!(!first.exists(), "moved aside");
        // What came before the damage and the later segments were replayed.
        let topped = r.engine.balance(0).0.credited - 1_000_000;
        assert!(
            topped > 0 && topped < topups,
            "{topped} of {topups} top-ups replayed"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_crash_between_a_request_and_its_cdr_gets_the_cdr_written_at_recovery() {
        let root = std::env::temp_dir().join(format!("gyro-recovery-{}", std::process::id()));
        let dir = root.join("shard-0");
        let config = EngineConfig::default();
        // What serve does for a CCR, stopped after the journal record and the charge.
        let (mut s, req) = journaled_ccr_i(&root, &config);
        let msg = gyro_engine::diameter::Message::new(&req).unwrap();
        let o = s.engine.handle(&Ccr::decode(&msg).unwrap(), 1_000);
        assert_eq!(o.result_code, 2001);
        s.writer.flush().unwrap();
        drop(s);

        let r = recover(&dir, &root, 0, 1 << 20, config).unwrap();
        let rec = r.recovery.as_ref().unwrap();
        assert_eq!((rec.requests, rec.cdr_written), (1, true));
        assert_eq!(
            r.engine.open_sessions(),
            1,
            "the session and its reservation are back"
        );
        assert_eq!(r.engine.balance(0).0.reserved, 2000);
        drop(r);
        // The CDR is the log's last record now; a second recovery writes nothing more.
        let mut out = Vec::new();
        let mut pos = crate::cdr_files::Position::default();
        crate::cdr_files::cat(&dir, 0, &mut pos, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"id\":\"pgw;1;1#0\""), "{text}");
        let again = recover(&dir, &root, 0, 1 << 20, EngineConfig::default()).unwrap();
        assert!(!again.recovery.unwrap().cdr_written);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_snapshot_of_another_format_is_passed_over_and_the_log_replayed() {
        let root = std::env::temp_dir().join(format!("gyro-snapfmt-{}", std::process::id()));
        let dir = root.join("shard-0");
        let config = EngineConfig::default();
        let (mut s, _) = journaled_ccr_i(&root, &config);
        s.writer.flush().unwrap();
        let crc = s.dataset_crc;
        // A snapshot as this build writes it, then the same state as an older gyro
        // wrote it (no header) and as a later one might (version 99), newer still.
        let good = write_snapshot(&root, 0, &s.engine, 0, crc, 5).unwrap();
        let body = std::fs::read(&good).unwrap();
        drop(s);
        let dir_snap = snapshot_dir(&root);
        std::fs::write(
            dir_snap.join(format!("shard-0-{:020}.rkyv", 1)),
            &body[SNAPSHOT_HEADER..],
        )
        .unwrap();
        let mut later = body.clone();
        later[8..12].copy_from_slice(&99u32.to_le_bytes());
        std::fs::write(dir_snap.join(format!("shard-0-{:020}.rkyv", 2)), &later).unwrap();

        let r = recover(&dir, &root, 0, 1 << 20, config).unwrap();
        let rec = r.recovery.as_ref().unwrap();
        assert_eq!(rec.snapshots_passed_over.len(), 2);
        assert_eq!(rec.from_snapshot, Some(0), "the readable snapshot is used");
        assert_eq!(rec.requests, 1, "and the log after it replayed");
        assert_eq!(r.engine.open_sessions(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
