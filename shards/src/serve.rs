//! `gyro serve`: the Diameter Gy server. Each shard is a pinned thread running gyro's
//! event loop (`evloop`, epoll through mio) around its shard core
//! (`gyro_engine::shard::ShardCore`), which decides everything: where a request is
//! charged, the journal, charging, answers, CDRs, escrow between shards, supervision.
//! The loop moves bytes: sockets (the peer state machine frames requests and keeps the
//! base protocol), the segment log, the mesh of bounded queues between shards, timers
//! and signals. An operations endpoint (HTTP, its own thread) talks to the shards over
//! channels, off the request path.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use gyro_engine::cdr::JsonWriter;
use gyro_engine::charging::engine::{Applied, Engine, KeyEntry, OpKey};
use gyro_engine::provision::{import_ndjson, Dataset, OnError};
pub use gyro_engine::shard::MeshMsg;

use crate::config::ServeConfig;
use crate::segments::SegmentWriter;

pub mod evloop;
mod metrics;

/// Built-in dataset when no `--dataset` is given.
pub const DEMO_SUBSCRIBERS: u64 = 10_000;
pub const DEMO_COMPANIES: u64 = 100;

/// Capacity of each mesh queue, in messages.
pub const MESH_CAPACITY: usize = 4096;

/// A request from the operations endpoint to a shard, with where to answer. Every
/// shard is asked; the endpoint adds their answers up.
pub enum AdminCmd {
    /// This shard's metrics, read now.
    Metrics(crossbeam_channel::Sender<Vec<crate::prom::Family>>),
    /// Every company as this shard holds it.
    Companies(crossbeam_channel::Sender<Vec<CompanyView>>),
    /// A company as this shard holds it, `None` when unknown.
    Company(String, crossbeam_channel::Sender<Option<CompanyView>>),
    /// Top-up, made on the company's owner shard: `Ok(true)` there, `Ok(false)` on the
    /// others, or why not.
    TopUp(
        String,
        i64,
        Option<OpKey>,
        crossbeam_channel::Sender<Result<bool, String>>,
    ),
    /// A package (an object in the provisioning format) for a company, added on every
    /// shard (the owner holds its units): `Ok(())`, or the HTTP status (400, 404) and
    /// why not.
    AddPackage(
        String,
        Vec<u8>,
        crossbeam_channel::Sender<Result<(), (u16, String)>>,
    ),
    /// Provisioning lines (whole objects, `type` included), applied in order and
    /// confirmed together: per line what it did, or why not.
    Provision(
        Vec<Vec<u8>>,
        crossbeam_channel::Sender<Vec<Result<Applied, String>>>,
    ),
    /// A correction to a company's money, made on its owner shard: `Ok(true)` there,
    /// `Ok(false)` on the others, or why not.
    Adjust {
        company: String,
        amount: i64,
        reason: String,
        op: Option<OpKey>,
        reply: crossbeam_channel::Sender<Result<bool, String>>,
    },
    /// An idempotency key's entry, if used within the window.
    Key(u64, crossbeam_channel::Sender<Option<KeyEntry>>),
    /// The answer given under an idempotency key, journaled.
    RecordKey(OpKey, u16, Vec<u8>, crossbeam_channel::Sender<()>),
    /// This shard's part of the current provisioning (`Engine::export`).
    Export(crossbeam_channel::Sender<Dataset>),
    /// A subscriber by MSISDN (packed digits), as a provisioning line.
    Subscriber(u64, crossbeam_channel::Sender<Option<String>>),
}

/// A company as one shard holds it (its slices, and the owner's remainder counted in
/// `available` on the owner shard): the sum over the shards is the company.
#[derive(Clone, Debug, Default)]
pub struct CompanyView {
    pub id: String,
    pub available: i64,
    pub reserved: i64,
    pub settled: i64,
    pub refunded: i64,
    pub credit_limit: i64,
    pub barred: bool,
    /// Per package: id, remaining, reserved, used.
    pub packages: Vec<(String, i64, i64, i64)>,
}

impl CompanyView {
    pub(crate) fn of(engine: &Engine, c: u32) -> CompanyView {
        let (money, packages) = engine.balance(c);
        CompanyView {
            id: engine.company_id(c).to_string(),
            available: money.available,
            reserved: money.reserved,
            settled: money.settled,
            refunded: engine.refunded(c),
            credit_limit: engine.company_meta(c).map_or(0, |m| m.credit_limit),
            barred: engine.company_meta(c).is_some_and(|m| m.barred),
            packages: packages
                .into_iter()
                .map(|(id, b)| (id.to_string(), b.available, b.reserved, b.settled))
                .collect(),
        }
    }

    /// Adds another shard's part of the same company.
    pub fn add(&mut self, other: &CompanyView) {
        self.available += other.available;
        self.reserved += other.reserved;
        self.settled += other.settled;
        self.refunded += other.refunded;
        for (mine, theirs) in self.packages.iter_mut().zip(&other.packages) {
            mine.1 += theirs.1;
            mine.2 += theirs.2;
            mine.3 += theirs.3;
        }
    }

    /// The company as the operations endpoint shows it.
    pub fn json(&self) -> String {
        // Room for every id escaped at its longest (`\u00XX`, six bytes a byte).
        let ids: usize = self.id.len() + self.packages.iter().map(|p| p.0.len()).sum::<usize>();
        let mut buf = vec![0u8; 1024 + self.packages.len() * 256 + 6 * ids];
        let mut w = JsonWriter::new(&mut buf);
        w.begin_object();
        w.field_str("id", &self.id);
        w.field_i64("balance", self.available);
        w.field_i64("reserved", self.reserved);
        w.field_i64("charged", self.settled);
        w.field_i64("refunded", self.refunded);
        w.field_i64("credit_limit", self.credit_limit);
        w.key("barred");
        w.bool(self.barred);
        w.key("packages");
        w.begin_array();
        for (id, remaining, reserved, used) in &self.packages {
            w.begin_object();
            w.field_str("id", id);
            w.field_i64("remaining", *remaining);
            w.field_i64("reserved", *reserved);
            w.field_i64("used", *used);
            w.end_object();
        }
        w.end_array();
        w.end_object();
        match w.finish() {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            // Not reached: the buffer is sized for the longest escaping.
            Err(_) => "{\"error\":\"the company does not fit its answer\"}".to_string(),
        }
    }
}

/// A shard's sending end of the mesh queue to another shard, and that shard's wake-up.
pub type MeshTx = (Arc<ArrayQueue<MeshMsg>>, Arc<mio::Waker>);

/// The mesh ends of one shard: a sender to and a receiver from every other shard.
pub struct MeshEnds {
    pub senders: Vec<Option<MeshTx>>,
    pub receivers: Vec<Option<Arc<ArrayQueue<MeshMsg>>>>,
}

/// Builds the mesh between `shards` shards (bounded queues; `wakers`, one per shard,
/// wake the receiving shard's loop): the ends of each, in order.
pub fn mesh(shards: usize, capacity: usize, wakers: &[Arc<mio::Waker>]) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for a in 0..shards {
        for b in 0..shards {
            if a != b {
                let q = Arc::new(ArrayQueue::new(capacity));
                ends[a].senders[b] = Some((q.clone(), wakers[b].clone()));
                ends[b].receivers[a] = Some(q);
            }
        }
    }
    ends
}

/// What a shard needs to start.
pub struct ShardInit {
    pub id: u16,
    pub shards: u16,
    pub config: ServeConfig,
    /// The engine and the log writer, fresh or recovered (`recovery`).
    pub engine: Engine,
    pub writer: SegmentWriter,
    /// What engine snapshots record as the dataset they belong to.
    pub dataset_crc: u32,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    pub admin: crossbeam_channel::Receiver<AdminCmd>,
    pub mesh: MeshEnds,
    /// Connections the accepting thread hands this shard, and the address they were
    /// accepted on.
    pub intake: crossbeam_channel::Receiver<std::net::TcpStream>,
    pub local_addr: std::net::SocketAddr,
    /// Where the shard says it runs (or why it cannot).
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A failure after which the shard cannot go on: the state of the log is unknown.
pub(crate) fn fatal(what: &str, e: &dyn std::fmt::Display) -> ! {
    tracing::error!(target: "gyro", "fatal: {what}: {e}; stopping (recovery decides at the next start)");
    std::process::exit(70)
}

/// Loads the dataset the configuration names, or the built-in one.
pub fn load_dataset(config: &ServeConfig) -> Result<(Dataset, String), String> {
    let (mut bytes, what) = match &config.dataset {
        Some(path) => (
            std::fs::read(path).map_err(|e| format!("--dataset {}: {e}", path.display()))?,
            format!("dataset {}", path.display()),
        ),
        None => {
            let mut out = Vec::new();
            let spec = gyro_loadgen::dataset::Spec {
                subscribers: DEMO_SUBSCRIBERS,
                companies: DEMO_COMPANIES,
                seed: 1,
            };
            gyro_loadgen::dataset::write(&spec, &mut out).map_err(|e| e.to_string())?;
            (
                out,
                format!(
                    "the built-in demo dataset ({DEMO_SUBSCRIBERS} subscribers \
                     4917{{00000000..}}, {DEMO_COMPANIES} companies); give --dataset FILE \
                     for real data"
                ),
            )
        }
    };
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    if !imp.is_ok() {
        let mut msg = format!("{what}: {} bad records; the first:", imp.errors.len());
        for e in imp.errors.iter().take(5) {
            msg.push_str(&format!("\n  {e}"));
        }
        return Err(msg);
    }
    let d = &imp.dataset;
    let what = format!(
        "{what}: {} subscribers, {} companies, {} packages, {} tariffs",
        d.subscribers.len(),
        d.companies.len(),
        d.packages.len(),
        d.tariffs.len()
    );
    Ok((imp.dataset, what))
}

#[cfg(test)]
mod tests {
    use super::CompanyView;
    use simd_json::prelude::*;

    #[test]
    fn a_company_with_long_ids_that_need_escaping_is_answered_whole() {
        let id = "\u{1}\"\\".repeat(2_000);
        let view = CompanyView {
            id: id.clone(),
            available: i64::MIN,
            packages: (0..20)
                .map(|i| (format!("{id}{i}"), i64::MAX, 0, 0))
                .collect(),
            ..CompanyView::default()
        };
        let mut text = view.json().into_bytes();
        let v = simd_json::to_owned_value(&mut text).expect("whole JSON");
        assert_eq!(v["id"].as_str(), Some(id.as_str()));
        assert_eq!(v["balance"].as_i64(), Some(i64::MIN));
        assert_eq!(v["packages"].as_array().map(Vec::len), Some(20));
    }
}
