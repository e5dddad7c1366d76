//! `gyro serve`: the Diameter Gy server. Each shard is a pinned thread that takes
//! connections and runs the peer state machine per connection: gyro's own event loop
//! (`evloop`, runtime `epoll`) or a glommio executor (`shard_main`, runtime
//! `glommio`). A CCR goes to the shard that owns its Session-Id (a hash of it): charged
//! there if that is this shard, else copied once into a pooled buffer and sent over the
//! mesh of bounded channels between shards, whose answer comes back the same way. The
//! owner shard charges it in its engine (drawing on its escrow slices of the company's
//! balances), appends the CDR to its own segment log (with the configured durability)
//! and answers. Escrow messages between the shards travel over the same mesh. An
//! operations endpoint (HTTP, its own thread) talks to the shards over channels, off the
//! request path.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use gyro_engine::cdr::JsonWriter;
use gyro_engine::charging::engine::{shard_of, Engine, Outcome, WAITS_MAX};
use gyro_engine::charging::escrow::Envelope;
use gyro_engine::diameter::answer::{encode_error_answer, Origin as AnswerOrigin};
use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::diameter::ccr::{encode_cca, Cca, Ccr, RequestType};
use gyro_engine::diameter::{Message, ProtocolError};
use gyro_engine::peer::{Incoming, Peer, PeerConfig, PeerState, WatchdogState};
use gyro_engine::provision::{import_ndjson, Dataset, OnError};
use gyro_engine::segment::RecordKind;
use hdrhistogram::Histogram;

use crate::config::{Durability, ServeConfig};
use crate::segments::SegmentWriter;

pub mod evloop;

/// Built-in dataset when no `--dataset` is given.
pub const DEMO_SUBSCRIBERS: u64 = 10_000;
pub const DEMO_COMPANIES: u64 = 100;

/// A request from the operations endpoint to a shard, with where to answer. Every
/// shard is asked; the endpoint adds their answers up.
pub enum AdminCmd {
    /// Prometheus text of this shard.
    Metrics(crossbeam_channel::Sender<String>),
    /// Every company as this shard holds it.
    Companies(crossbeam_channel::Sender<Vec<CompanyView>>),
    /// A company as this shard holds it, `None` when unknown.
    Company(String, crossbeam_channel::Sender<Option<CompanyView>>),
    /// Top-up, made on the company's owner shard: `Ok(true)` there, `Ok(false)` on the
    /// others, or why not.
    TopUp(String, i64, crossbeam_channel::Sender<Result<bool, String>>),
    /// A package (an object in the provisioning format) for a company, added on every
    /// shard (the owner holds its units): `Ok(())`, or the HTTP status (400, 404) and
    /// why not.
    AddPackage(
        String,
        Vec<u8>,
        crossbeam_channel::Sender<Result<(), (u16, String)>>,
    ),
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
    /// Per package: id, remaining, reserved, used.
    pub packages: Vec<(String, i64, i64, i64)>,
}

impl CompanyView {
    fn of(engine: &Engine, c: u32) -> CompanyView {
        let (money, packages) = engine.balance(c);
        CompanyView {
            id: engine.company_id(c).to_string(),
            available: money.available,
            reserved: money.reserved,
            settled: money.settled,
            refunded: engine.refunded(c),
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
        let mut buf = vec![0u8; 1024 + self.packages.len() * 256];
        let mut w = JsonWriter::new(&mut buf);
        w.begin_object();
        w.field_str("id", &self.id);
        w.field_i64("balance", self.available);
        w.field_i64("reserved", self.reserved);
        w.field_i64("charged", self.settled);
        w.field_i64("refunded", self.refunded);
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
        let n = w.finish().unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// What shards send each other.
pub enum MeshMsg {
    /// A CCR for the shard that owns its session, from connection `conn` (generation
    /// `gen`) of shard `from`. The buffer comes back with the answer.
    Request {
        from: u16,
        conn: u32,
        gen: u32,
        bytes: Vec<u8>,
    },
    /// The answer to a `Request`, for connection `conn` of the receiving shard.
    Answer { conn: u32, gen: u32, bytes: Vec<u8> },
    /// An escrow message (see `gyro_engine::charging::escrow`).
    Escrow(Envelope),
}

/// A shard's sending end of the mesh channel to another shard.
pub enum MeshTx {
    Glommio(SharedSender<MeshMsg>),
    /// A bounded queue, and the receiving shard's wake-up (runtime `epoll`).
    Queue(Arc<ArrayQueue<MeshMsg>>, Arc<mio::Waker>),
}

/// A shard's receiving end of the mesh channel from another shard.
pub enum MeshRx {
    Glommio(SharedReceiver<MeshMsg>),
    Queue(Arc<ArrayQueue<MeshMsg>>),
}

/// The mesh ends of one shard: a sender to and a receiver from every other shard.
pub struct MeshEnds {
    pub senders: Vec<Option<MeshTx>>,
    pub receivers: Vec<Option<MeshRx>>,
}

/// Builds the mesh between `shards` shards: the ends of each, in order. With the
/// `epoll` runtime the channels are bounded queues and `wakers` (one per shard) wake
/// the receiving shard's loop; with `glommio`, glommio's shared channels.
pub fn mesh(shards: usize, capacity: usize, wakers: Option<&[Arc<mio::Waker>]>) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for a in 0..shards {
        for b in 0..shards {
            if a != b {
                let (tx, rx) = match wakers {
                    Some(w) => {
                        let q = Arc::new(ArrayQueue::new(capacity));
                        (MeshTx::Queue(q.clone(), w[b].clone()), MeshRx::Queue(q))
                    }
                    None => {
                        let (tx, rx) = glommio::channels::shared_channel::new_bounded(capacity);
                        (MeshTx::Glommio(tx), MeshRx::Glommio(rx))
                    }
                };
                ends[a].senders[b] = Some(tx);
                ends[b].receivers[a] = Some(rx);
            }
        }
    }
    ends
}

/// A connected sending end (see `MeshTx`).
enum Sender {
    Glommio(ConnectedSender<MeshMsg>),
    Queue(Arc<ArrayQueue<MeshMsg>>, Arc<mio::Waker>),
}

impl Sender {
    /// Sends, or gives the message back when the channel is full (`Err(Some)`); a
    /// message for a shard that has gone is dropped (`Err(None)`).
    fn try_send(&self, msg: MeshMsg) -> Result<(), Option<MeshMsg>> {
        match self {
            Sender::Glommio(tx) => tx.try_send(msg).map_err(full),
            Sender::Queue(q, _) => q.push(msg).map_err(Some),
        }
    }
}

/// A message the mesh had no room for (`None`: the other shard has gone; dropped).
fn full(e: glommio::GlommioError<MeshMsg>) -> Option<MeshMsg> {
    match e {
        glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => Some(m),
        _ => None,
    }
}

/// The Session-Id AVP's code (RFC 6733 §8.8).
const SESSION_ID: u32 =
    gyro_engine::diameter::dict::DEFS[gyro_engine::diameter::dict::AvpId::SessionId as usize].code;

/// Capacity of each mesh channel, in messages.
pub const MESH_CAPACITY: usize = 4096;
/// Messages waiting for room in the mesh beyond which a connection's new requests are
/// answered 3004 (too busy).
const OVERFLOW_MAX: usize = 8192;

/// A wake-up for one task, set from another task of the same shard.
#[derive(Default)]
struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn wait(&self) -> NotifyWait<'_> {
        NotifyWait(self)
    }
}

struct NotifyWait<'a>(&'a Notify);

impl Future for NotifyWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Where a request came from, for its answer.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Local { conn: u32, gen: u32 },
    Remote { shard: u16, conn: u32, gen: u32 },
}

/// A request waiting for escrow (its bytes, and how often it waited).
struct Parked {
    company: u32,
    origin: Origin,
    bytes: Vec<u8>,
    waits: u32,
}

/// What charging one request came to.
enum Charged {
    /// The answer is in `State::answer[..n]`.
    Answer(usize),
    /// Waits for escrow (the company).
    Wait(u32),
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A failure after which the shard cannot go on: the state of the log is unknown.
fn fatal(what: &str, e: &std::io::Error) -> ! {
    eprintln!("gyro serve: fatal: {what}: {e}; stopping (recovery decides at the next start)");
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

/// What the operations endpoint and the log see of one connection.
struct PeerInfo {
    remote: SocketAddr,
    origin_host: String,
    state: PeerState,
    watchdog: WatchdogState,
    requests: u64,
}

struct Metrics {
    /// CCRs by CC-Request-Type (initial, update, termination, event).
    ccr: [u64; 4],
    /// Answers by Result-Code (error answers included).
    answers: Vec<(u32, u64)>,
    /// Request handling time (decode to answer and CDR written), nanoseconds.
    latency: Histogram<u64>,
    /// Log sync time, nanoseconds.
    sync: Histogram<u64>,
    syncs: u64,
    expired_sessions: u64,
    connections_accepted: u64,
    connections_refused: u64,
    topups: u64,
    snapshots: u64,
    /// How long the last snapshot took.
    snapshot_ms: u64,
    /// Requests sent to the shard owning their session.
    forwarded: u64,
    /// Requests that waited for escrow, and those decided after waiting long enough.
    waits: u64,
    decided_after_waiting: u64,
    /// Escrow messages taken.
    escrow_taken: u64,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            ccr: [0; 4],
            answers: Vec::with_capacity(64),
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
            sync: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
            syncs: 0,
            expired_sessions: 0,
            connections_accepted: 0,
            connections_refused: 0,
            topups: 0,
            snapshots: 0,
            snapshot_ms: 0,
            forwarded: 0,
            waits: 0,
            decided_after_waiting: 0,
            escrow_taken: 0,
        }
    }

    fn answer(&mut self, code: u32) {
        match self.answers.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.answers.push((code, 1)),
        }
    }
}

struct State {
    engine: Engine,
    writer: SegmentWriter,
    metrics: Metrics,
    /// Scratch for one CDR line.
    line: Vec<u8>,
    /// Scratch for one journal record (a request as received).
    input: Vec<u8>,
    /// Scratch for one answer.
    answer: Vec<u8>,
    /// CDR and balance records appended (what billing gets).
    billing_records: u64,
    /// Escrow messages being routed (scratch).
    mail: Vec<Envelope>,
    /// What the engine decided for the request being charged (reused: `handle_into`).
    outcome: Box<Outcome>,
}

/// One connection: its peer state machine, what the operations endpoint sees of it,
/// and the wake-up its task waits on besides the socket (answers from other shards).
struct Conn {
    gen: u32,
    peer: RefCell<Peer>,
    info: RefCell<PeerInfo>,
    wake: Notify,
}

/// One shard: its engine, log, connections, mesh ends and metrics.
struct Shard {
    id: u16,
    shards: u16,
    config: ServeConfig,
    peer_config: PeerConfig,
    started: Instant,
    state: RefCell<State>,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    next_gen: Cell<u32>,
    connections: Cell<usize>,
    stopping: Cell<bool>,
    /// Senders to the other shards (connected at start).
    mesh: RefCell<Vec<Option<Sender>>>,
    /// Shards sent to since they were last woken (runtime `epoll`: one wake-up per
    /// batch, see `wake_receivers`).
    mesh_sent: Cell<u64>,
    /// Messages waiting for room in the mesh, and the task that sends them.
    overflow: RefCell<VecDeque<(u16, MeshMsg)>>,
    overflow_wake: Notify,
    /// Make the mesh receivers look for messages (see `shard_main`).
    mesh_kicks: RefCell<Vec<Rc<Notify>>>,
    /// Buffers for requests sent to other shards (they come back with the answers).
    pool: RefCell<Vec<Vec<u8>>>,
    /// Requests waiting for escrow.
    parked: RefCell<Vec<Parked>>,
    /// Escrow messages from other shards not taken yet, and the wake-up of the task that
    /// takes them (runtime `glommio`); see `take_escrow_inbox`.
    escrow_inbox: RefCell<VecDeque<Envelope>>,
    escrow_wake: Notify,
    /// Answers and escrow messages to other shards held until what caused them is in
    /// the log: written out (durability `none`, `interval`) or synced (`tick`). See
    /// `write_out`.
    held: RefCell<Vec<(u16, MeshMsg)>>,
    /// Group commit (durability `tick`): the log is synced through this sequence; tasks
    /// waiting for more, and the wake-up of the task that syncs for them.
    synced_seq: Cell<u64>,
    durable_waiters: RefCell<Vec<Waker>>,
    commit_wanted: Notify,
}

/// See `Shard::durable`.
struct Durable<'a> {
    shard: &'a Shard,
    target: u64,
}

impl Future for Durable<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shard.synced_seq.get() >= self.target {
            return Poll::Ready(());
        }
        self.shard
            .durable_waiters
            .borrow_mut()
            .push(cx.waker().clone());
        self.shard.commit_wanted.notify();
        Poll::Pending
    }
}

impl Shard {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn buffer(&self) -> Vec<u8> {
        self.pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(2048))
    }

    fn recycle(&self, mut v: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if pool.len() < 4 * MESH_CAPACITY {
            v.clear();
            pool.push(v);
        }
    }

    /// A new connection from `remote`: its peer state machine, in the first free slot of
    /// `conns` (which it returns).
    fn add_conn(&self, remote: SocketAddr) -> (usize, Rc<Conn>) {
        let gen = self.next_gen.get();
        self.next_gen.set(gen.wrapping_add(1));
        let conn = Rc::new(Conn {
            gen,
            peer: RefCell::new(Peer::responder(self.peer_config.clone(), self.now_ms())),
            info: RefCell::new(PeerInfo {
                remote,
                origin_host: String::new(),
                state: PeerState::WaitCer,
                watchdog: WatchdogState::Initial,
                requests: 0,
            }),
            wake: Notify::default(),
        });
        let mut conns = self.conns.borrow_mut();
        let slot = match conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                conns.push(None);
                conns.len() - 1
            }
        };
        conns[slot] = Some(conn.clone());
        (slot, conn)
    }

    /// Runs connection `slot`'s peer state machine over the bytes it received (and its
    /// timers, if due): requests are charged here or sent to their owner shard, and what
    /// the operations endpoint shows of the peer is brought up to date. Returns how many
    /// bytes were taken (whole messages).
    fn on_bytes(&self, conn: &Conn, slot: u32, bytes: &[u8]) -> usize {
        let now = self.now_ms();
        let mut requests = 0;
        let mut peer = conn.peer.borrow_mut();
        let at = peer.handle_all(bytes, now, |peer, kind, request| {
            if kind == Incoming::Request {
                self.on_request(peer, slot, conn.gen, request);
                requests += 1;
            }
        });
        if peer.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        let mut p = conn.info.borrow_mut();
        p.requests += requests;
        p.state = peer.state();
        p.watchdog = peer.watchdog_state();
        if p.origin_host.is_empty() && peer.state() == PeerState::Open {
            p.origin_host = peer.remote_origin_host().to_string();
        }
        at
    }

    /// Sends to another shard; when its channel is full the message waits in order
    /// (the overflow task sends it as room frees up).
    fn post(&self, to: u16, msg: MeshMsg) {
        let mut overflow = self.overflow.borrow_mut();
        if overflow.is_empty() {
            let mesh = self.mesh.borrow();
            let Some(Some(tx)) = mesh.get(usize::from(to)) else {
                return;
            };
            match tx.try_send(msg) {
                Ok(()) => {
                    self.mesh_sent.set(self.mesh_sent.get() | 1 << to);
                    return;
                }
                Err(None) => return,
                Err(Some(msg)) => overflow.push_back((to, msg)),
            }
        } else {
            overflow.push_back((to, msg));
        }
        self.overflow_wake.notify();
    }

    /// Decodes, charges, answers and logs one request that arrived on connection
    /// `slot` of this shard (the connection's peer is borrowed by the caller).
    fn on_request(&self, peer: &mut Peer, slot: u32, gen: u32, bytes: &[u8]) {
        let Some(msg) = Message::new(bytes) else {
            return;
        };
        // The owner from the Session-Id alone: a request for another shard is decoded
        // (and, if bad, answered) there.
        let owner = if self.shards > 1 {
            msg.avps()
                .map_while(Result::ok)
                .find(|a| a.code == SESSION_ID && a.vendor_id == 0)
                .map_or(self.id, |a| shard_of(a.data(), self.shards))
        } else {
            self.id
        };
        if owner != self.id {
            if self.overflow.borrow().len() >= OVERFLOW_MAX {
                let busy = ProtocolError::new(
                    gyro_engine::diameter::result_code::TOO_BUSY,
                    gyro_engine::diameter::FailedAvp::None,
                );
                peer.send_error(bytes, &busy);
                self.state.borrow_mut().metrics.answer(busy.result_code);
                return;
            }
            let mut v = self.buffer();
            v.extend_from_slice(bytes);
            self.state.borrow_mut().metrics.forwarded += 1;
            self.post(
                owner,
                MeshMsg::Request {
                    from: self.id,
                    conn: slot,
                    gen,
                    bytes: v,
                },
            );
            return;
        }
        // Decoded in place: `Ccr::decode` would move the 2 KiB value out.
        let mut ccr = Ccr::default();
        if let Err(e) = ccr.decode_into(&msg) {
            peer.send_error(bytes, &e);
            self.state.borrow_mut().metrics.answer(e.result_code);
            return;
        }
        match self.charge(&ccr, bytes, 0) {
            Charged::Answer(n) => {
                let st = self.state.borrow();
                let answer = &st.answer[..n];
                // A full transmit buffer marks the peer a slow reader; it is then closed.
                let _ = peer.send_with(|b| {
                    let to = b
                        .get_mut(..answer.len())
                        .ok_or(gyro_engine::diameter::encode::EncodeError::BufferFull)?;
                    to.copy_from_slice(answer);
                    Ok(answer.len())
                });
            }
            Charged::Wait(company) => {
                let mut v = self.buffer();
                v.extend_from_slice(bytes);
                self.parked.borrow_mut().push(Parked {
                    company,
                    origin: Origin::Local { conn: slot, gen },
                    bytes: v,
                    waits: 1,
                });
            }
        }
    }

    /// Journals, charges and logs one request this shard owns; the answer is left in
    /// `State::answer`. A request that waited `WAITS_MAX` times is decided on what the
    /// shard holds.
    fn charge(&self, ccr: &Ccr<'_>, bytes: &[u8], waits: u32) -> Charged {
        let t0 = Instant::now();
        let st = &mut *self.state.borrow_mut();
        let now = unix_ms();
        let decided = waits >= WAITS_MAX;
        let (host, realm) = (
            self.peer_config.origin_host.as_str(),
            self.peer_config.origin_realm.as_str(),
        );
        // The journal first: the request as received, so recovery replays it.
        match gyro_engine::journal::encode_input_as(now, bytes, decided, &mut st.input) {
            Some(n) => {
                if let Err(e) = st.writer.append(RecordKind::Input, &st.input[..n]) {
                    fatal("appending to the journal", &e);
                }
            }
            None => {
                let err = ProtocolError::new(
                    gyro_engine::diameter::result_code::UNABLE_TO_COMPLY,
                    gyro_engine::diameter::FailedAvp::None,
                );
                let origin = AnswerOrigin { host, realm };
                let n = encode_error_answer(bytes, &err, &origin, &mut st.answer).unwrap_or(0);
                st.metrics.answer(err.result_code);
                return Charged::Answer(n);
            }
        }
        if decided {
            st.metrics.decided_after_waiting += 1;
            st.engine.decide_into(ccr, now, &mut st.outcome);
        } else {
            st.engine.handle_into(ccr, now, &mut st.outcome);
        }
        let o = &*st.outcome;
        if o.wait {
            st.metrics.waits += 1;
            return Charged::Wait(o.company.unwrap_or(0));
        }
        // 5031 names the AVP it could not rate (RFC 8506 §9.1).
        let rating_failed = gyro_engine::diameter::result_code::RATING_FAILED;
        let failed_avp =
            if let Some(i) = o.mscc().iter().position(|m| m.result_code == rating_failed) {
                gyro_engine::diameter::ccr::rating_failed_avp(bytes, Some(i))
            } else if o.result_code == rating_failed {
                gyro_engine::diameter::ccr::rating_failed_avp(bytes, None)
            } else {
                None
            };
        let cca = Cca {
            cost_micros: o.cost_micros,
            check_balance_result: o.check_balance_result,
            granted: o.granted,
            failed_avp,
            ..Cca::answering(ccr, o.result_code, host, realm, o.mscc())
        };
        let n = encode_cca(&ccr.header, &cca, &mut st.answer).unwrap_or(0);
        st.metrics.ccr[match ccr.request_type {
            RequestType::Initial => 0,
            RequestType::Update => 1,
            RequestType::Termination => 2,
            RequestType::Event => 3,
        }] += 1;
        st.metrics.answer(o.result_code);
        if !o.duplicate {
            let seq = st.writer.next_seq();
            match crate::recovery::cdr_line(&st.engine, ccr, o, seq, self.id, now, &mut st.line) {
                Ok(n) => {
                    if let Err(e) = st.writer.append(RecordKind::Cdr, &st.line[..n]) {
                        fatal("appending a CDR", &e);
                    }
                    st.billing_records += 1;
                }
                Err(_) => eprintln!("gyro serve: a CDR line did not fit 64 KiB; not written"),
            }
        }
        let _ = st
            .metrics
            .latency
            .record(t0.elapsed().as_nanos().max(1) as u64);
        Charged::Answer(n)
    }

    /// Sends an answer left in `State::answer[..n]` to where its request came from;
    /// `bytes` is the request's buffer (it carries a remote answer back).
    fn answer(&self, origin: Origin, n: usize, mut bytes: Vec<u8>) {
        match origin {
            Origin::Local { conn, gen } => {
                {
                    let st = self.state.borrow();
                    self.deliver(conn, gen, &st.answer[..n]);
                }
                self.recycle(bytes);
            }
            Origin::Remote { shard, conn, gen } => {
                bytes.clear();
                bytes.extend_from_slice(&self.state.borrow().answer[..n]);
                let answer = MeshMsg::Answer { conn, gen, bytes };
                // Held until the batch's CDRs are in the log (`tick`: synced).
                self.held.borrow_mut().push((shard, answer));
            }
        }
    }

    /// Queues answer bytes on a connection of this shard and wakes its task.
    fn deliver(&self, conn: u32, gen: u32, answer: &[u8]) {
        let c = self
            .conns
            .borrow()
            .get(conn as usize)
            .and_then(|c| c.clone())
            .filter(|c| c.gen == gen);
        let Some(c) = c else {
            return; // the connection went: its peer will ask again
        };
        let _ = c.peer.borrow_mut().send_with(|b| {
            let to = b
                .get_mut(..answer.len())
                .ok_or(gyro_engine::diameter::encode::EncodeError::BufferFull)?;
            to.copy_from_slice(answer);
            Ok(answer.len())
        });
        c.wake.notify();
    }

    /// Writes out the records the log holds in memory (it is written with `pwrite`, see
    /// `segments`): from then on they are in the page cache and survive a crash of the
    /// process. Nothing that depends on a record leaves the shard before this (or, with
    /// `tick`, a sync) has covered the record: one write or sync per batch.
    fn write_out(&self) {
        let st = &mut *self.state.borrow_mut();
        if let Err(e) = st.writer.flush() {
            fatal("writing the CDR log", &e);
        }
    }

    /// What must precede an answer or message that depends on the log: `tick` syncs,
    /// `none` and `interval` write out.
    fn log_barrier(&self) {
        match self.config.durability {
            Durability::Tick => self.sync(),
            Durability::None | Durability::Interval => self.write_out(),
        }
    }

    /// Answers and escrow messages held for the log (see `write_out`): the log written
    /// out or synced once, then they are sent.
    fn release_held(&self) {
        if self.held.borrow().is_empty() {
            return;
        }
        self.log_barrier();
        let mut held = std::mem::take(&mut *self.held.borrow_mut());
        for (to, msg) in held.drain(..) {
            self.post(to, msg);
        }
        let mut slot = self.held.borrow_mut();
        if slot.is_empty() {
            *slot = held;
        }
    }

    /// A message from another shard.
    fn on_mesh(&self, msg: MeshMsg) {
        match msg {
            MeshMsg::Request {
                from,
                conn,
                gen,
                bytes,
            } => {
                let origin = Origin::Remote {
                    shard: from,
                    conn,
                    gen,
                };
                self.run_request(origin, bytes, 0);
            }
            MeshMsg::Answer { conn, gen, bytes } => {
                self.deliver(conn, gen, &bytes);
                self.recycle(bytes);
            }
            // Taken after the requests at hand (`take_escrow_inbox`): escrow work has a
            // lower priority than request handling.
            MeshMsg::Escrow(env) => {
                self.escrow_inbox.borrow_mut().push_back(env);
                self.escrow_wake.notify();
            }
        }
        self.pump();
    }

    /// The escrow messages other shards sent, taken once the requests at hand have
    /// been handled (the epoll loop: after each turn's requests; glommio: a task on a
    /// task queue with a quarter of the shares of request handling).
    fn take_escrow_inbox(&self) {
        loop {
            let Some(env) = self.escrow_inbox.borrow_mut().pop_front() else {
                break;
            };
            self.take_escrow(env);
        }
        self.pump();
    }

    /// Charges a request held in a buffer (from another shard, or waiting) and answers
    /// it, or parks it again.
    fn run_request(&self, origin: Origin, bytes: Vec<u8>, waits: u32) {
        let charged = {
            let Some(msg) = Message::new(&bytes) else {
                return;
            };
            let mut ccr = Ccr::default();
            match ccr.decode_into(&msg) {
                Ok(()) => self.charge(&ccr, &bytes, waits),
                Err(e) => {
                    let st = &mut *self.state.borrow_mut();
                    let origin = AnswerOrigin {
                        host: &self.peer_config.origin_host,
                        realm: &self.peer_config.origin_realm,
                    };
                    st.metrics.answer(e.result_code);
                    Charged::Answer(
                        encode_error_answer(&bytes, &e, &origin, &mut st.answer).unwrap_or(0),
                    )
                }
            }
        };
        match charged {
            Charged::Answer(n) => self.answer(origin, n, bytes),
            Charged::Wait(company) => self.parked.borrow_mut().push(Parked {
                company,
                origin,
                bytes,
                waits: waits + 1,
            }),
        }
    }

    /// An escrow message taken: journaled, then handed to the engine; a lease lets
    /// the company's waiting requests go again.
    fn take_escrow(&self, env: Envelope) {
        let leased = {
            let st = &mut *self.state.borrow_mut();
            let now = unix_ms();
            let mut rec = [0u8; gyro_engine::journal::ESCROW_LEN];
            gyro_engine::journal::encode_escrow(now, &env, &mut rec);
            if let Err(e) = st.writer.append(RecordKind::Control, &rec) {
                fatal("appending to the journal", &e);
            }
            st.metrics.escrow_taken += 1;
            st.engine.receive(env, now)
        };
        if let Some(company) = leased {
            let ready: Vec<Parked> = {
                let mut parked = self.parked.borrow_mut();
                let mut ready = Vec::new();
                let mut i = 0;
                while i < parked.len() {
                    if parked[i].company == company {
                        ready.push(parked.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                ready
            };
            for p in ready {
                self.run_request(p.origin, p.bytes, p.waits);
            }
        }
    }

    /// Routes the engine's escrow messages: to this shard at once, to the others over
    /// the mesh once what caused them is in the log (with durability `tick`, after the
    /// group commit that makes it durable).
    fn pump(&self) {
        loop {
            let mail = {
                let st = &mut *self.state.borrow_mut();
                if !st.engine.has_mail() {
                    return;
                }
                let mut mail = std::mem::take(&mut st.mail);
                mail.extend(st.engine.outbox());
                mail
            };
            let mut mail = mail;
            for env in mail.drain(..) {
                if env.to == self.id {
                    self.take_escrow(env);
                } else {
                    // Leaves once what caused it is in the log.
                    self.held.borrow_mut().push((env.to, MeshMsg::Escrow(env)));
                }
            }
            self.state.borrow_mut().mail = mail;
        }
    }

    /// After a batch: escrow messages routed; what was held for the log goes, with
    /// durability `none` and `interval` now (one write), with `tick` at the committer's
    /// next sync.
    fn after_batch(&self) {
        self.pump();
        if !self.held.borrow().is_empty() {
            if self.config.durability == Durability::Tick {
                self.commit_wanted.notify();
            } else {
                self.release_held();
            }
        }
    }

    /// Resolves once the log is synced through sequence `target` (durability `tick`):
    /// the shard's committer syncs once for every task waiting.
    fn durable(&self, target: u64) -> Durable<'_> {
        Durable {
            shard: self,
            target,
        }
    }

    /// Session supervision (Tcc) and idle escrow slices going home, once a second.
    fn supervise(&self) {
        {
            let st = &mut *self.state.borrow_mut();
            let at = unix_ms();
            let mut gone: Vec<(String, u32)> = Vec::new();
            let n = st
                .engine
                .expire(at, |id, company| gone.push((id.to_string(), company)));
            if n > 0 || st.engine.has_mail() {
                // Supervision changed balances: the journal says when, for replay.
                let rec = gyro_engine::journal::Control::Expired { now_ms: at }.encode();
                if let Err(e) = st.writer.append(RecordKind::Control, &rec) {
                    fatal("appending to the journal", &e);
                }
            }
            // Billing gets a CDR per session closed without its CCR-T (its
            // reservations went back; nothing was charged).
            let mut buf = if gone.is_empty() {
                Vec::new()
            } else {
                vec![0u8; 2048]
            };
            for (id, company) in &gone {
                let seq = st.writer.next_seq();
                let mut w = JsonWriter::new(&mut buf);
                w.begin_object();
                w.key("id");
                let key = format!("{id}#expired");
                w.string(&key);
                w.field_str("kind", "supervision_timeout");
                w.field_u64("seq", seq);
                w.field_u64("shard", u64::from(self.id));
                w.field_u64("ts", at);
                w.field_str("session_id", id);
                w.field_str("company", st.engine.company_id(*company));
                w.key("services");
                w.begin_array();
                w.end_array();
                w.end_object();
                if let Ok(len) = w.finish() {
                    if let Err(e) = st.writer.append(RecordKind::Cdr, &buf[..len]) {
                        fatal("appending a CDR", &e);
                    }
                    st.billing_records += 1;
                }
            }
            st.metrics.expired_sessions += n as u64;
        }
        self.pump();
    }

    /// Writes an engine snapshot as of now (the log synced up to it first). Runs on the
    /// shard between requests: it holds them up for the time it takes.
    fn snapshot(&self, dataset_crc: u32) {
        let st = &mut *self.state.borrow_mut();
        if let Err(e) = st.writer.sync() {
            fatal("syncing the CDR log", &e);
        }
        let seq = st.writer.next_seq();
        let t0 = Instant::now();
        match crate::recovery::write_snapshot(&self.config.data_dir, self.id, &st.engine, seq, dataset_crc, 2) {
            Ok(_) => st.metrics.snapshots += 1,
            Err(e) => eprintln!("gyro serve: writing an engine snapshot failed (recovery replays more of the log): {e}"),
        }
        st.metrics.snapshot_ms = t0.elapsed().as_millis() as u64;
    }

    /// Syncs the log (durability `interval` and `tick`); a failure is fatal.
    fn sync(&self) {
        let st = &mut *self.state.borrow_mut();
        if st.writer.unsynced() == 0 {
            self.synced_seq.set(st.writer.next_seq());
            return;
        }
        let t0 = Instant::now();
        if let Err(e) = st.writer.sync() {
            fatal("syncing the CDR log", &e);
        }
        self.synced_seq.set(st.writer.next_seq());
        st.metrics.syncs += 1;
        let _ = st
            .metrics
            .sync
            .record(t0.elapsed().as_nanos().max(1) as u64);
    }

    fn admin(&self, cmd: AdminCmd) {
        match cmd {
            AdminCmd::Metrics(reply) => {
                let _ = reply.send(self.render_metrics());
            }
            AdminCmd::Companies(reply) => {
                let st = self.state.borrow();
                let all = (0..st.engine.companies() as u32)
                    .map(|c| CompanyView::of(&st.engine, c))
                    .collect();
                let _ = reply.send(all);
            }
            AdminCmd::Company(id, reply) => {
                let st = self.state.borrow();
                let _ = reply.send(
                    st.engine
                        .company_by_id(&id)
                        .map(|c| CompanyView::of(&st.engine, c)),
                );
            }
            // With a durability policy, a change is on disk before it is confirmed.
            AdminCmd::TopUp(id, amount, reply) => {
                let r = self.top_up(&id, amount);
                self.confirm_barrier();
                let _ = reply.send(r);
                self.pump();
            }
            AdminCmd::AddPackage(id, body, reply) => {
                let r = self.add_package(&id, body);
                self.confirm_barrier();
                let _ = reply.send(r);
                self.pump();
            }
        }
    }

    /// Before a change made through the operations endpoint is confirmed: with a
    /// durability policy it is synced, with `none` written out.
    fn confirm_barrier(&self) {
        match self.config.durability {
            Durability::None => self.write_out(),
            Durability::Interval | Durability::Tick => self.sync(),
        }
    }

    fn top_up(&self, id: &str, amount: i64) -> Result<bool, String> {
        let st = &mut *self.state.borrow_mut();
        let Some(c) = st.engine.company_by_id(id) else {
            return Err(format!("no company {id:?}"));
        };
        if amount <= 0 {
            return Err("amount must be a positive integer (micro-units)".into());
        }
        if st.engine.owner_of(c) != self.id {
            return Ok(false);
        }
        if !st.engine.top_up(c, amount) {
            return Err("the balance would overflow".into());
        }
        let (money, _) = st.engine.balance(c);
        let mut buf = [0u8; 512];
        let mut w = JsonWriter::new(&mut buf);
        let seq = st.writer.next_seq();
        let key = format!("topup-{}-{seq}", self.id);
        w.begin_object();
        w.field_str("id", &key);
        w.field_str("kind", "topup");
        w.field_u64("seq", seq);
        w.field_u64("shard", u64::from(self.id));
        w.field_u64("ts", unix_ms());
        w.field_str("company", id);
        w.field_i64("amount", amount);
        w.field_i64("balance", money.available);
        w.end_object();
        let n = w.finish().map_err(|_| "company id too long".to_string())?;
        if let Err(e) = st.writer.append(RecordKind::Balance, &buf[..n]) {
            fatal("appending a balance record", &e);
        }
        st.billing_records += 1;
        st.metrics.topups += 1;
        Ok(true)
    }

    fn add_package(&self, id: &str, mut body: Vec<u8>) -> Result<(), (u16, String)> {
        let st = &mut *self.state.borrow_mut();
        let Some(c) = st.engine.company_by_id(id) else {
            return Err((404, format!("no company {id:?}")));
        };
        // The object as one compact line, for the log.
        let compact = {
            let mut copy = body.clone();
            simd_json::to_owned_value(&mut copy)
                .map(|v| simd_json::to_string(&v).unwrap_or_default())
                .map_err(|e| (400, format!("not JSON: {e}")))?
        };
        let (package, company) =
            gyro_engine::provision::parse_package(&mut body).map_err(|errs| {
                let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                (400, list.join("; "))
            })?;
        if company != id {
            return Err((
                400,
                format!("the package names company {company:?}, the path {id:?}"),
            ));
        }
        let package_id = package.id.clone();
        if !st.engine.add_package(c, package) {
            return Err((
                400,
                format!("company {id:?} already has a package {package_id:?}"),
            ));
        }
        let seq = st.writer.next_seq();
        let line = format!(
            "{{\"id\":\"package-{}-{seq}\",\"kind\":\"package\",\"seq\":{seq},\"shard\":{},\"ts\":{},\"company\":{},\"package\":{compact}}}",
            self.id,
            self.id,
            unix_ms(),
            crate::json_quote(id),
        );
        // Billing reads the owner's record; the other shards journal it for replay.
        let appended = if st.engine.owner_of(c) == self.id {
            st.billing_records += 1;
            st.writer.append(RecordKind::Balance, line.as_bytes())
        } else {
            let rec = gyro_engine::journal::Control::Package {
                line: line.into_bytes(),
            }
            .encode();
            st.writer.append(RecordKind::Control, &rec)
        };
        if let Err(e) = appended {
            fatal("appending a balance record", &e);
        }
        Ok(())
    }

    fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let st = self.state.borrow();
        let m = &st.metrics;
        let s = self.id;
        let mut o = String::with_capacity(4096);
        let _ = writeln!(
            o,
            "# HELP gyro_ccr_total Credit-Control-Requests handled, by CC-Request-Type."
        );
        let _ = writeln!(o, "# TYPE gyro_ccr_total counter");
        for (i, t) in ["initial", "update", "termination", "event"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                o,
                "gyro_ccr_total{{shard=\"{s}\",type=\"{t}\"}} {}",
                m.ccr[i]
            );
        }
        let _ = writeln!(
            o,
            "# HELP gyro_answers_total Answers to CCRs, by Result-Code."
        );
        let _ = writeln!(o, "# TYPE gyro_answers_total counter");
        let mut answers = m.answers.clone();
        answers.sort_unstable();
        for (code, n) in answers {
            let _ = writeln!(
                o,
                "gyro_answers_total{{shard=\"{s}\",result_code=\"{code}\"}} {n}"
            );
        }
        summary(
            &mut o,
            "gyro_request_seconds",
            "CCR handling time (decode, charge, answer, CDR).",
            s,
            &m.latency,
        );
        summary(
            &mut o,
            "gyro_log_sync_seconds",
            "CDR log sync time.",
            s,
            &m.sync,
        );
        let gauges: [(&str, &str, u64); 10] = [
            (
                "gyro_snapshots_total",
                "Engine snapshots written.",
                m.snapshots,
            ),
            (
                "gyro_snapshot_last_milliseconds",
                "How long the last engine snapshot held the shard up.",
                m.snapshot_ms,
            ),
            (
                "gyro_sessions",
                "Open credit-control sessions.",
                st.engine.open_sessions() as u64,
            ),
            (
                "gyro_sessions_expired_total",
                "Sessions closed by supervision (Tcc).",
                m.expired_sessions,
            ),
            (
                "gyro_cdr_log_bytes_total",
                "Bytes appended to the CDR log.",
                st.writer.bytes_written(),
            ),
            (
                "gyro_cdr_records_total",
                "CDR and balance records appended to the log (what billing gets).",
                st.billing_records,
            ),
            (
                "gyro_log_records_total",
                "Records appended to the log, journal records included.",
                st.writer.next_seq(),
            ),
            (
                "gyro_connections_accepted_total",
                "Diameter connections accepted.",
                m.connections_accepted,
            ),
            (
                "gyro_connections_refused_total",
                "Connections refused (connections_max).",
                m.connections_refused,
            ),
            (
                "gyro_topups_total",
                "Top-ups through the operations endpoint.",
                m.topups,
            ),
        ];
        for (name, help, v) in gauges {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{shard=\"{s}\"}} {v}"
            );
        }
        let esc = st.engine.escrow_counters();
        let escrow: [(&str, &str, u64); 8] = [
            (
                "gyro_escrow_refills_total",
                "Escrow refills asked of owner shards.",
                esc.refills,
            ),
            (
                "gyro_escrow_leases_total",
                "Escrow leases sent (as owner shard).",
                esc.leases,
            ),
            (
                "gyro_escrow_recalls_total",
                "Escrow recalls sent (as owner shard).",
                esc.recalls,
            ),
            (
                "gyro_escrow_returns_total",
                "Escrow returns sent to owner shards.",
                esc.returns,
            ),
            (
                "gyro_escrow_messages_taken_total",
                "Escrow messages taken from shards.",
                m.escrow_taken,
            ),
            (
                "gyro_requests_forwarded_total",
                "CCRs sent to the shard owning their session.",
                m.forwarded,
            ),
            (
                "gyro_requests_waited_total",
                "Times a CCR waited for escrow.",
                m.waits,
            ),
            (
                "gyro_requests_decided_after_waiting_total",
                "CCRs decided on what their shard held after waiting the most.",
                m.decided_after_waiting,
            ),
        ];
        for (name, help, v) in escrow {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{shard=\"{s}\"}} {v}"
            );
        }
        let _ = writeln!(o, "# HELP gyro_peer Connected peers: 1 per peer, labelled with its state and watchdog state.");
        let _ = writeln!(o, "# TYPE gyro_peer gauge");
        for c in self.conns.borrow().iter().flatten() {
            let p = c.info.borrow();
            let _ = writeln!(
                o,
                "gyro_peer{{shard=\"{s}\",remote=\"{}\",origin_host=\"{}\",state=\"{:?}\",watchdog=\"{:?}\",requests=\"{}\"}} 1",
                p.remote,
                p.origin_host.replace(['"', '\\', '\n'], "_"),
                p.state,
                p.watchdog,
                p.requests
            );
        }
        o
    }
}

fn summary(o: &mut String, name: &str, help: &str, shard: u16, h: &Histogram<u64>) {
    use std::fmt::Write;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e9;
        let _ = writeln!(o, "{name}{{shard=\"{shard}\",quantile=\"{q}\"}} {v:.9}");
    }
    let _ = writeln!(o, "{name}_count{{shard=\"{shard}\"}} {}", h.len());
}

/// Runs one connection until its peer closes.
async fn connection(
    shard: Rc<Shard>,
    mut stream: glommio::net::TcpStream,
    slot: u32,
    conn: Rc<Conn>,
) {
    let _ = stream.set_nodelay(true);
    // A peer that stops reading its answers is cut off after this long.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 2 * shard.config.message_size_max as usize];
    let mut out: Vec<u8> = Vec::with_capacity(shard.config.tx_buffer_bytes);
    let mut filled = 0usize;
    let mut said_goodbye = false;
    let tick = shard.config.durability == Durability::Tick;
    loop {
        let now = shard.now_ms();
        {
            let mut peer = conn.peer.borrow_mut();
            if shard.stopping.get() && !said_goodbye {
                said_goodbye = true;
                if peer.state() == PeerState::Open {
                    peer.disconnect(disconnect_cause::REBOOTING, now);
                } else {
                    break;
                }
            }
            out.clear();
            out.extend_from_slice(peer.transmit());
            let n = out.len();
            peer.transmitted(n);
        }
        if !out.is_empty() {
            if tick {
                // Group commit: this batch's CDRs reach the disk before its answers go
                // (one sync for whatever every task of the shard appended meanwhile).
                let target = shard.state.borrow().writer.next_seq();
                shard.durable(target).await;
            } else {
                // This batch's CDRs reach the page cache before its answers go.
                shard.write_out();
            }
            if stream.write_all(&out).await.is_err() {
                break;
            }
        }
        let wait = {
            let peer = conn.peer.borrow();
            if peer.close_reason().is_some() {
                break;
            }
            peer.poll_timeout()
                .map_or(100, |t| t.saturating_sub(now))
                .clamp(1, 100)
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(wait)));
        if filled == buf.len() {
            // Cannot happen with a buffer of twice the largest message; be safe anyway.
            break;
        }
        // The socket, or answers from other shards for this connection.
        let read = futures_lite::future::or(
            async { Some(stream.read(&mut buf[filled..]).await) },
            async {
                conn.wake.wait().await;
                None
            },
        )
        .await;
        match read {
            Some(Ok(0)) => {
                conn.peer.borrow_mut().connection_down(shard.now_ms());
                break;
            }
            Some(Ok(n)) => filled += n,
            Some(Err(e)) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
            Some(Err(_)) => break,
            None => {}
        }
        let at = shard.on_bytes(&conn, slot, &buf[..filled]);
        buf.copy_within(at..filled, 0);
        filled -= at;
        // Escrow messages the requests caused (the peer is not borrowed now).
        shard.after_batch();
    }
    // Whatever was answered is written out before the socket goes.
    let rest = conn.peer.borrow().transmit().to_vec();
    if !rest.is_empty() {
        if tick {
            shard.sync();
        } else {
            shard.write_out();
        }
        let _ = stream.write_all(&rest).await;
    }
    let _ = stream.close().await;
    if let Some(c) = shard.conns.borrow_mut().get_mut(slot as usize) {
        *c = None;
    }
    shard.connections.set(shard.connections.get() - 1);
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
    pub stop: Arc<AtomicBool>,
    pub admin: crossbeam_channel::Receiver<AdminCmd>,
    pub mesh: MeshEnds,
    /// Connections the accepting thread hands this shard, and the address they were
    /// accepted on.
    pub intake: crossbeam_channel::Receiver<std::net::TcpStream>,
    pub local_addr: SocketAddr,
    /// Where the shard says it runs (or why it cannot).
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
}

/// What a shard keeps of its `ShardInit` besides the `Shard` itself.
struct Rest {
    mesh: MeshEnds,
    intake: crossbeam_channel::Receiver<std::net::TcpStream>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    housekeeping: Housekeeping,
}

/// Housekeeping, at a lower rhythm than requests (every 2 ms): operations calls,
/// interval syncs, session supervision, snapshots, the stop flag.
struct Housekeeping {
    admin: crossbeam_channel::Receiver<AdminCmd>,
    stop: Arc<AtomicBool>,
    /// What engine snapshots record as the dataset they belong to.
    dataset_crc: u32,
    last_expire: u64,
    /// When the last snapshot was taken, and the log sequence it covered.
    last_snapshot: (u64, u64),
    last_sync: u64,
    /// Set when the stop flag is seen: the shard stops when its connections have gone,
    /// or at this time.
    stop_deadline: Option<u64>,
}

impl Housekeeping {
    /// One round; `true` when the shard is to stop now.
    fn round(&mut self, shard: &Shard) -> bool {
        while let Ok(cmd) = self.admin.try_recv() {
            shard.admin(cmd);
        }
        let now = shard.now_ms();
        if shard.config.durability == Durability::Interval
            && now - self.last_sync >= shard.config.sync_interval_ms
        {
            self.last_sync = now;
            shard.sync();
        }
        if now - self.last_expire >= 1000 {
            self.last_expire = now;
            shard.supervise();
            // The supervision CDRs (and anything else no answer waited for).
            shard.write_out();
        }
        let interval = shard.config.snapshot_interval_s.saturating_mul(1000);
        if interval > 0 && now - self.last_snapshot.0 >= interval {
            let seq = shard.state.borrow().writer.next_seq();
            if seq != self.last_snapshot.1 {
                shard.snapshot(self.dataset_crc);
                self.last_snapshot.1 = seq;
            }
            self.last_snapshot.0 = now;
        }
        if self.stop.load(Ordering::Relaxed) && !shard.stopping.get() {
            shard.stopping.set(true);
            self.stop_deadline = Some(now + 5_000);
        }
        self.stop_deadline
            .is_some_and(|deadline| shard.connections.get() == 0 || now >= deadline)
    }
}

/// The shard, as either runtime starts it.
fn new_shard(init: ShardInit) -> Result<(Rc<Shard>, Rest), String> {
    let ShardInit {
        id,
        shards,
        config,
        engine,
        mut writer,
        dataset_crc,
        stop,
        admin,
        mesh,
        intake,
        local_addr: addr,
        ready,
    } = init;
    writer.set_durable(config.durability != Durability::None);
    // Written out (or, with `tick`, synced) after every batch: with pwrite, not through
    // the mapping (see `segments`).
    writer
        .set_buffered()
        .map_err(|e| format!("shard {id}: preparing the CDR log: {e}"))?;
    let mut peer_config = PeerConfig::new(&config.origin_host, &config.origin_realm);
    peer_config.allowed_peers = config.allowed_peers.clone();
    peer_config.watchdog_tw_ms = config.watchdog_ms;
    peer_config.watchdog_jitter_ms = (config.watchdog_ms / 4).min(2_000);
    peer_config.capabilities_timeout_ms = config.capabilities_timeout_ms;
    peer_config.frame_deadline_ms = config.frame_deadline_ms;
    peer_config.message_size_max = config.message_size_max;
    peer_config.tx_buffer_bytes = config.tx_buffer_bytes;
    peer_config.product_name = "gyro".into();
    peer_config.origin_state_id = (unix_ms() / 1000) as u32;
    if let Ok(ip) = addr.ip().to_string().parse() {
        if !addr.ip().is_unspecified() {
            peer_config.host_ip_addresses = vec![ip];
        }
    }
    let message_size_max = config.message_size_max as usize;
    let shard = Rc::new(Shard {
        id,
        shards,
        peer_config,
        started: Instant::now(),
        state: RefCell::new(State {
            engine,
            writer,
            metrics: Metrics::new(),
            line: vec![0u8; 64 * 1024],
            input: vec![0u8; message_size_max + 16],
            answer: vec![0u8; message_size_max.max(64 * 1024)],
            billing_records: 0,
            mail: Vec::with_capacity(64),
            outcome: Box::default(),
        }),
        conns: RefCell::new(Vec::new()),
        next_gen: Cell::new(1),
        connections: Cell::new(0),
        stopping: Cell::new(false),
        mesh: RefCell::new(Vec::new()),
        mesh_sent: Cell::new(0),
        overflow: RefCell::new(VecDeque::new()),
        overflow_wake: Notify::default(),
        mesh_kicks: RefCell::new(Vec::new()),
        pool: RefCell::new(Vec::new()),
        parked: RefCell::new(Vec::new()),
        escrow_inbox: RefCell::new(VecDeque::with_capacity(4096)),
        escrow_wake: Notify::default(),
        held: RefCell::new(Vec::with_capacity(256)),
        synced_seq: Cell::new(0),
        durable_waiters: RefCell::new(Vec::with_capacity(64)),
        commit_wanted: Notify::default(),
        config,
    });
    let housekeeping = Housekeeping {
        admin,
        stop,
        dataset_crc,
        last_expire: shard.now_ms(),
        last_snapshot: (shard.now_ms(), shard.state.borrow().writer.next_seq()),
        last_sync: shard.now_ms(),
        stop_deadline: None,
    };
    Ok((
        shard,
        Rest {
            mesh,
            intake,
            ready,
            housekeeping,
        },
    ))
}

/// A shard's life on a glommio executor: listen, serve, and at the stop flag say
/// goodbye to every peer, sync the log and return.
pub async fn shard_main(init: ShardInit) -> Result<(), String> {
    let (shard, rest) = new_shard(init)?;
    let Rest {
        mesh,
        intake,
        ready,
        mut housekeeping,
    } = rest;
    // Running: the next shard may start (connections handed to this one wait in its
    // intake until the mesh is up).
    let _ = ready.send(Ok(()));
    // The mesh: a task per receiver (each connects its end), then the senders (a
    // sender's connection waits for the receiving shard's).
    let MeshEnds { senders, receivers } = mesh;
    let mut mesh_tasks = Vec::new();
    for rx in receivers.into_iter().flatten() {
        let MeshRx::Glommio(rx) = rx else {
            return Err("the glommio runtime needs a mesh of glommio channels".into());
        };
        let shard = shard.clone();
        let kick = Rc::new(Notify::default());
        shard.mesh_kicks.borrow_mut().push(kick.clone());
        mesh_tasks.push(glommio::spawn_local(async move {
            let rx: ConnectedReceiver<MeshMsg> = rx.connect().await;
            loop {
                // The housekeeping kick looks again now and then: a wake-up from the
                // other shard can be missed (glommio 0.9), and the message would wait
                // for the next one.
                let next = futures_lite::future::or(async { Some(rx.recv().await) }, async {
                    kick.wait().await;
                    None
                })
                .await;
                match next {
                    Some(Some(msg)) => {
                        shard.on_mesh(msg);
                        // The rest of what is there now, as one batch.
                        while let Some(Some(msg)) = futures_lite::future::poll_once(rx.recv()).await
                        {
                            shard.on_mesh(msg);
                        }
                        shard.after_batch();
                    }
                    Some(None) => break,
                    None => shard.after_batch(),
                }
            }
        }));
    }
    // Escrow messages from the other shards, on a task queue with a quarter of the
    // shares of request handling.
    let escrow_task = {
        let id = shard.id;
        let shard = shard.clone();
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(250),
            glommio::Latency::NotImportant,
            "escrow",
        );
        glommio::spawn_local_into(
            async move {
                while !(shard.stopping.get() && shard.connections.get() == 0) {
                    futures_lite::future::or(shard.escrow_wake.wait(), async {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    })
                    .await;
                    shard.take_escrow_inbox();
                    shard.after_batch();
                }
            },
            queue,
        )
        .map_err(|e| format!("shard {id}: cannot start its escrow task: {e}"))?
    };
    for tx in senders {
        let connected = match tx {
            Some(MeshTx::Glommio(tx)) => Some(Sender::Glommio(tx.connect().await)),
            Some(MeshTx::Queue(..)) => {
                return Err("the glommio runtime needs a mesh of glommio channels".into());
            }
            None => None,
        };
        shard.mesh.borrow_mut().push(connected);
    }
    // Messages the mesh had no room for, in order, as room frees up.
    let overflow_task = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                let next = shard.overflow.borrow_mut().pop_front();
                match next {
                    Some((to, msg)) => {
                        let tx = shard
                            .mesh
                            .borrow()
                            .get(usize::from(to))
                            .map(|t| t.is_some());
                        if tx != Some(true) {
                            continue;
                        }
                        // The sender is not held borrowed across the wait.
                        let send = {
                            let mesh = shard.mesh.borrow();
                            let tx = mesh[usize::from(to)].as_ref().expect("checked");
                            tx.try_send(msg)
                        };
                        if let Err(Some(msg)) = send {
                            shard.overflow.borrow_mut().push_front((to, msg));
                            glommio::timer::sleep(Duration::from_micros(200)).await;
                        }
                    }
                    None => {
                        if shard.stopping.get() && shard.connections.get() == 0 {
                            break;
                        }
                        futures_lite::future::or(shard.overflow_wake.wait(), async {
                            glommio::timer::sleep(Duration::from_millis(50)).await;
                        })
                        .await;
                    }
                }
            }
        })
    };
    // Group commit (durability `tick`): after the ready tasks have had their turn, one
    // sync for all they appended; then the answers waiting for it go. With `none` and
    // `interval` nothing waits for a sync and the committer has nothing to do (a sync
    // here would write the mapped log back every 50 ms, and each write-back of a
    // mapped page costs a TLB shootdown on every core).
    let committer = {
        let shard = shard.clone();
        let tick = shard.config.durability == Durability::Tick;
        glommio::spawn_local(async move {
            while tick && !(shard.stopping.get() && shard.connections.get() == 0) {
                futures_lite::future::or(shard.commit_wanted.wait(), async {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                })
                .await;
                futures_lite::future::yield_now().await;
                shard.release_held();
                shard.sync();
                for w in shard.durable_waiters.borrow_mut().drain(..) {
                    w.wake();
                }
            }
        })
    };
    // Messages recovery found sent and never taken go out first.
    shard.pump();

    // Connections come from the accepting thread (`server`), which hands them to the
    // shards in turn; taking them runs as its own task and ends when the shard stops.
    let acceptor = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !shard.stopping.get() {
                let Ok(std_stream) = intake.try_recv() else {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if shard.connections.get() >= shard.config.connections_max {
                    shard.state.borrow_mut().metrics.connections_refused += 1;
                    drop(std_stream);
                    continue;
                }
                if std_stream.set_nonblocking(true).is_err() {
                    continue;
                }
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the descriptor comes from `into_raw_fd`, which gives up its
                // ownership; the glommio stream is its only owner from here on.
                let stream =
                    unsafe { glommio::net::TcpStream::from_raw_fd(std_stream.into_raw_fd()) };
                let remote = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let (slot, conn) = shard.add_conn(remote);
                shard.connections.set(shard.connections.get() + 1);
                shard.state.borrow_mut().metrics.connections_accepted += 1;
                glommio::spawn_local(connection(shard.clone(), stream, slot as u32, conn)).detach();
            }
        })
    };

    loop {
        glommio::timer::sleep(Duration::from_millis(2)).await;
        for kick in shard.mesh_kicks.borrow().iter() {
            kick.notify();
        }
        shard.after_batch();
        if housekeeping.round(&shard) {
            break;
        }
    }
    acceptor.await;
    shard.stopping.set(true);
    overflow_task.await;
    committer.await;
    escrow_task.await;
    shard.take_escrow_inbox();
    drop(mesh_tasks);
    // The log synced and an engine snapshot written: the next start replays nothing.
    shard.snapshot(housekeeping.dataset_crc);
    Ok(())
}
