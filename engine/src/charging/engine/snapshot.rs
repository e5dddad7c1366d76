//! Snapshots: the engine's changing state at a point of the log (`EngineSnapshot`),
//! taken (`Engine::snapshot`) and restored over the dataset it started from
//! (`Engine::restore`).

use super::sessions::{Done, Session};
use super::KeyEntry;
use super::{session_key, Engine, EngineConfig};
use crate::charging::escrow::{Envelope, OwnerBucket, SliceState};
use crate::charging::ledger::Bucket;
use crate::diameter::limits::SESSION_ID_SIZE_MAX;
use crate::provision::{Company, Dataset, Package, Subscriber, Tariff};

/// One company's changing state in a snapshot.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CompanySnapshot {
    money: Bucket,
    refunded: i64,
    /// Provisioned and added at run time, in the engine's order (grants refer to them
    /// by index).
    packages: Vec<(Package, Bucket)>,
    slices: Vec<SliceState>,
    owner: Vec<OwnerBucket>,
}

/// The engine's changing state at a point of the log: balances, packages, open
/// sessions with their reservations and last two answers, and the answers kept for
/// duplicates (recent events, recently closed sessions). With the dataset it started
/// from, it replaces the replay of the log up to `seq`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EngineSnapshot {
    /// The log's next sequence number when it was taken: replay goes on from there.
    pub seq: u64,
    /// CRC32C of the dataset snapshot the engine started from.
    pub dataset_crc: u32,
    pub config: EngineConfig,
    companies: Vec<CompanySnapshot>,
    sessions: Vec<Session>,
    /// Escrow: this shard's number, how many there were, the message numbers per
    /// channel and what was sent and not known to be delivered.
    shard: u16,
    shards: u16,
    sent: Vec<u64>,
    received: Vec<u64>,
    retained: Vec<Envelope>,
    owe_ack: Vec<bool>,
    /// Answers kept for duplicates, oldest first.
    events: Vec<Done>,
    closed: Vec<Done>,
    /// Provisioning as it is now (changed at run time): every tariff version in order,
    /// the companies (id, credit limit, barred), the subscribers (MSISDN, IMSI,
    /// company, barred; a removed one's slot kept without identities).
    tariffs: Vec<Tariff>,
    company_meta: Vec<(String, i64, bool)>,
    subscribers: Vec<(Option<u64>, Option<u64>, u32, bool)>,
    /// Idempotency keys within their window, oldest first.
    keys: Vec<KeyEntry>,
}

/// The first bytes of an engine snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"GYROSNAP";
/// The engine snapshot format this build writes and reads (2: answers kept for
/// duplicates; 3: provisioning changed at run time and idempotency keys; 1 had no
/// header). A snapshot of another version is passed over: the log is replayed.
pub const SNAPSHOT_VERSION: u32 = 3;

/// Why a snapshot could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    /// Written by a gyro of another snapshot format: replay the log instead.
    Format(String),
    /// The bytes do not hold a valid snapshot.
    Corrupt(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Format(v) => write!(
                f,
                "an engine snapshot of {v}, not {SNAPSHOT_VERSION} (another gyro version wrote it)"
            ),
            SnapshotError::Corrupt(e) => write!(f, "not a valid engine snapshot: {e}"),
        }
    }
}

impl std::fmt::Debug for EngineSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSnapshot")
            .field("seq", &self.seq)
            .field("companies", &self.companies.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl EngineSnapshot {
    /// The snapshot's bytes: `SNAPSHOT_MAGIC`, the format version (`SNAPSHOT_VERSION`,
    /// u32 little-endian), then the state (rkyv).
    pub fn encode(&self) -> Vec<u8> {
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("an engine snapshot always serializes");
        let mut v = Vec::with_capacity(12 + body.len());
        v.extend_from_slice(SNAPSHOT_MAGIC);
        v.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        v.extend_from_slice(&body);
        v
    }

    /// A snapshot back from its bytes (validated). A snapshot of another format
    /// version is `SnapshotError::Format`: recovery passes over it.
    pub fn decode(bytes: &[u8]) -> Result<EngineSnapshot, SnapshotError> {
        let version = match bytes.split_at_checked(SNAPSHOT_MAGIC.len()) {
            Some((magic, rest)) if magic == SNAPSHOT_MAGIC => rest
                .get(..4)
                .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]])),
            _ => None,
        };
        match version {
            Some(SNAPSHOT_VERSION) => {}
            Some(v) => return Err(SnapshotError::Format(format!("format version {v}"))),
            None => return Err(SnapshotError::Format("a format before versions".into())),
        }
        let body = &bytes[SNAPSHOT_MAGIC.len() + 4..];
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        rkyv::from_bytes::<EngineSnapshot, rkyv::rancor::Error>(&aligned)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

impl Engine {
    /// The state to save, as of log sequence `seq`.
    pub fn snapshot(&self, seq: u64, dataset_crc: u32) -> EngineSnapshot {
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for &i in self.sessions.index.values() {
            sessions.push(self.sessions.slots[i as usize].clone());
        }
        EngineSnapshot {
            seq,
            dataset_crc,
            config: self.config.clone(),
            companies: self
                .companies
                .iter()
                .map(|c| CompanySnapshot {
                    money: c.money,
                    refunded: c.refunded,
                    packages: c.packages.clone(),
                    slices: c.slices.clone(),
                    owner: c.owner.clone(),
                })
                .collect(),
            sessions,
            shard: self.mail.shard,
            shards: self.shards,
            sent: self.mail.sent.clone(),
            received: self.mail.received.clone(),
            retained: self.mail.retained.clone(),
            owe_ack: self.mail.owe_ack.clone(),
            events: self.events.oldest_first().copied().collect(),
            closed: self.closed.oldest_first().copied().collect(),
            tariffs: self.tariffs.clone(),
            company_meta: self
                .companies
                .iter()
                .zip(&self.company_ids)
                .map(|(c, id)| (id.clone(), c.credit_limit, c.barred))
                .collect(),
            subscribers: self
                .subscribers
                .iter()
                .map(|s| (s.msisdn, s.imsi, s.company, s.barred))
                .collect(),
            keys: self.keys.entries().cloned().collect(),
        }
    }

    /// An engine in the state `snap` saved (its provisioning included: `dataset`, the
    /// one the log started from, is checked against it by CRC before). Fails when the
    /// snapshot does not hold together.
    pub fn restore(dataset: Dataset, snap: EngineSnapshot) -> Result<Engine, String> {
        drop(dataset);
        if snap.company_meta.len() != snap.companies.len() {
            return Err("the snapshot's companies do not hold together".into());
        }
        let provisioning = Dataset {
            tariffs: snap.tariffs,
            companies: snap
                .company_meta
                .into_iter()
                .map(|(id, credit_limit, barred)| Company {
                    id,
                    balance: 0,
                    credit_limit,
                    barred,
                })
                .collect(),
            packages: Vec::new(),
            subscribers: snap
                .subscribers
                .into_iter()
                .map(|(msisdn, imsi, company, barred)| Subscriber {
                    msisdn,
                    imsi,
                    company,
                    barred,
                })
                .collect(),
        };
        if provisioning
            .subscribers
            .iter()
            .any(|s| s.company as usize >= provisioning.companies.len())
        {
            return Err("a subscriber of the snapshot refers to no company".into());
        }
        let mut e = Engine::new_shard(provisioning, snap.config, snap.shard, snap.shards);
        for k in snap.keys {
            e.keys
                .insert(k.key, k.ts_ms, k.status, k.answer, super::KEYS_WINDOW_MS);
        }
        e.mail.sent = snap.sent;
        e.mail.received = snap.received;
        e.mail.retained = snap.retained;
        e.mail.owe_ack = snap.owe_ack;
        if e.companies.len() != snap.companies.len() {
            return Err(format!(
                "the snapshot has {} companies, the dataset {}",
                snap.companies.len(),
                e.companies.len()
            ));
        }
        for (i, s) in snap.companies.iter().enumerate() {
            for (p, _) in &s.packages {
                e.package_company.insert(p.id.clone(), i as u32);
            }
        }
        for (c, s) in e.companies.iter_mut().zip(snap.companies) {
            c.money = s.money;
            c.refunded = s.refunded;
            c.packages = s.packages;
            c.slices = s.slices;
            c.owner = s.owner;
        }
        for s in snap.sessions {
            let id = std::str::from_utf8(&s.id[..s.id_len.min(SESSION_ID_SIZE_MAX)]).unwrap_or("");
            let key = session_key(id);
            if e.sessions.insert(key, s).is_none() {
                return Err("the snapshot has more open sessions than sessions_max".into());
            }
        }
        for d in snap.events {
            e.events.insert(d);
        }
        for d in snap.closed {
            e.closed.insert(d);
        }
        Ok(e)
    }
}
