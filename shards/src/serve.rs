//! `gyro serve`: the Diameter Gy server. Each shard is a pinned glommio executor that
//! accepts connections, runs the peer state machine per connection, charges every CCR
//! in its engine, appends the CDR to its own segment log (with the configured
//! durability) and answers. An operations endpoint (HTTP, its own thread) talks to the
//! shards over channels, off the request path.

use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use gyro_engine::cdr::JsonWriter;
use gyro_engine::charging::engine::Engine;
use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::diameter::ccr::{encode_cca, Cca, Ccr, RequestType};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Incoming, Peer, PeerConfig, PeerState, WatchdogState};
use gyro_engine::provision::{import_ndjson, Dataset, OnError};
use gyro_engine::segment::RecordKind;
use hdrhistogram::Histogram;

use crate::config::{Durability, ServeConfig};
use crate::segments::SegmentWriter;

/// Built-in dataset when no `--dataset` is given.
pub const DEMO_SUBSCRIBERS: u64 = 10_000;
pub const DEMO_COMPANIES: u64 = 100;

/// A request from the operations endpoint to a shard, with where to answer.
pub enum AdminCmd {
    /// Prometheus text.
    Metrics(crossbeam_channel::Sender<String>),
    /// Every company as a JSON array.
    Companies(crossbeam_channel::Sender<String>),
    /// A company as JSON, `None` when unknown.
    Company(String, crossbeam_channel::Sender<Option<String>>),
    /// Top-up: the company's JSON after it, or why not.
    TopUp(
        String,
        i64,
        crossbeam_channel::Sender<Result<String, String>>,
    ),
    /// A package (an object in the provisioning format) for a company: the company's
    /// JSON after it, or the HTTP status (400, 404) and why not.
    AddPackage(
        String,
        Vec<u8>,
        crossbeam_channel::Sender<Result<String, (u16, String)>>,
    ),
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
    /// CDR and balance records appended (what billing gets).
    billing_records: u64,
}

/// One shard: its engine, log, connections and metrics.
struct Shard {
    id: u16,
    config: ServeConfig,
    peer_config: PeerConfig,
    started: Instant,
    state: RefCell<State>,
    peers: RefCell<Vec<Option<PeerInfo>>>,
    connections: Cell<usize>,
    stopping: Cell<bool>,
}

impl Shard {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Decodes, charges, answers and logs one CCR.
    fn handle_request(&self, peer: &mut Peer, bytes: &[u8]) {
        let t0 = Instant::now();
        let st = &mut *self.state.borrow_mut();
        let Some(msg) = Message::new(bytes) else {
            return;
        };
        let ccr = match Ccr::decode(&msg) {
            Ok(c) => c,
            Err(e) => {
                peer.send_error(bytes, &e);
                st.metrics.answer(e.result_code);
                return;
            }
        };
        let now = unix_ms();
        // The journal first: the request as received, so recovery replays it.
        match gyro_engine::journal::encode_input(now, bytes, &mut st.input) {
            Some(n) => {
                if let Err(e) = st.writer.append(RecordKind::Input, &st.input[..n]) {
                    fatal("appending to the journal", &e);
                }
            }
            None => {
                peer.send_error(
                    bytes,
                    &gyro_engine::diameter::ProtocolError::new(
                        gyro_engine::diameter::result_code::UNABLE_TO_COMPLY,
                        gyro_engine::diameter::FailedAvp::None,
                    ),
                );
                return;
            }
        }
        let o = st.engine.handle(&ccr, now);
        let (host, realm) = (
            self.peer_config.origin_host.as_str(),
            self.peer_config.origin_realm.as_str(),
        );
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
            ..Cca::answering(&ccr, o.result_code, host, realm, o.mscc())
        };
        // A full transmit buffer marks the peer a slow reader; it is then closed.
        let _ = peer.send_with(|b| encode_cca(&ccr.header, &cca, b));
        st.metrics.ccr[match ccr.request_type {
            RequestType::Initial => 0,
            RequestType::Update => 1,
            RequestType::Termination => 2,
            RequestType::Event => 3,
        }] += 1;
        st.metrics.answer(o.result_code);
        if !o.duplicate {
            let seq = st.writer.next_seq();
            match crate::recovery::cdr_line(&st.engine, &ccr, &o, seq, self.id, now, &mut st.line) {
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
            return;
        }
        let t0 = Instant::now();
        if let Err(e) = st.writer.sync() {
            fatal("syncing the CDR log", &e);
        }
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
                let mut out = String::from("[");
                for c in 0..st.engine.companies() as u32 {
                    if c > 0 {
                        out.push(',');
                    }
                    out.push_str(&company_json(&st.engine, c));
                }
                out.push(']');
                let _ = reply.send(out);
            }
            AdminCmd::Company(id, reply) => {
                let st = self.state.borrow();
                let _ = reply.send(
                    st.engine
                        .company_by_id(&id)
                        .map(|c| company_json(&st.engine, c)),
                );
            }
            AdminCmd::TopUp(id, amount, reply) => {
                let _ = reply.send(self.top_up(&id, amount));
            }
            AdminCmd::AddPackage(id, body, reply) => {
                let _ = reply.send(self.add_package(&id, body));
            }
        }
    }

    fn top_up(&self, id: &str, amount: i64) -> Result<String, String> {
        let st = &mut *self.state.borrow_mut();
        let Some(c) = st.engine.company_by_id(id) else {
            return Err(format!("no company {id:?}"));
        };
        if amount <= 0 {
            return Err("amount must be a positive integer (micro-units)".into());
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
        Ok(company_json(&st.engine, c))
    }

    fn add_package(&self, id: &str, mut body: Vec<u8>) -> Result<String, (u16, String)> {
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
        if let Err(e) = st.writer.append(RecordKind::Balance, line.as_bytes()) {
            fatal("appending a balance record", &e);
        }
        st.billing_records += 1;
        Ok(company_json(&st.engine, c))
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
        let _ = writeln!(o, "gyro_escrow_refills_total{{shard=\"{s}\"}} 0");
        let _ = writeln!(o, "# HELP gyro_peer Connected peers: 1 per peer, labelled with its state and watchdog state.");
        let _ = writeln!(o, "# TYPE gyro_peer gauge");
        for p in self.peers.borrow().iter().flatten() {
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

/// A company as the operations endpoint shows it.
fn company_json(engine: &Engine, c: u32) -> String {
    let (money, packages) = engine.balance(c);
    let mut buf = vec![0u8; 1024 + packages.len() * 256];
    let mut w = JsonWriter::new(&mut buf);
    w.begin_object();
    w.field_str("id", engine.company_id(c));
    w.field_i64("balance", money.available);
    w.field_i64("reserved", money.reserved);
    w.field_i64("charged", money.settled);
    w.field_i64("refunded", engine.refunded(c));
    w.key("packages");
    w.begin_array();
    for (id, b) in packages {
        w.begin_object();
        w.field_str("id", id);
        w.field_i64("remaining", b.available);
        w.field_i64("reserved", b.reserved);
        w.field_i64("used", b.settled);
        w.end_object();
    }
    w.end_array();
    w.end_object();
    let n = w.finish().unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Runs one connection until its peer closes.
async fn connection(shard: Rc<Shard>, mut stream: glommio::net::TcpStream, slot: usize) {
    let _ = stream.set_nodelay(true);
    // A peer that stops reading its answers is cut off after this long.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut peer = Peer::responder(shard.peer_config.clone(), shard.now_ms());
    let mut buf = vec![0u8; 2 * shard.config.message_size_max as usize];
    let mut filled = 0usize;
    let mut said_goodbye = false;
    let tick = shard.config.durability == Durability::Tick;
    loop {
        let now = shard.now_ms();
        if shard.stopping.get() && !said_goodbye {
            said_goodbye = true;
            if peer.state() == PeerState::Open {
                peer.disconnect(disconnect_cause::REBOOTING, now);
            } else {
                break;
            }
        }
        if !peer.transmit().is_empty() {
            if tick {
                // Group commit: this batch's CDRs reach the disk before its answers go.
                shard.sync();
            }
            match stream.write_all(peer.transmit()).await {
                Ok(()) => {
                    let n = peer.transmit().len();
                    peer.transmitted(n);
                }
                Err(_) => break,
            }
        }
        if peer.close_reason().is_some() {
            break;
        }
        let wait = peer
            .poll_timeout()
            .map_or(100, |t| t.saturating_sub(now))
            .clamp(1, 100);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(wait)));
        if filled == buf.len() {
            // Cannot happen with a buffer of twice the largest message; be safe anyway.
            break;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => {
                peer.connection_down(shard.now_ms());
                break;
            }
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
            Err(_) => break,
        }
        let now = shard.now_ms();
        let mut requests = 0;
        let at = peer.handle_all(&buf[..filled], now, |peer, kind, bytes| {
            if kind == Incoming::Request {
                shard.handle_request(peer, bytes);
                requests += 1;
            }
        });
        if let Some(Some(p)) = shard.peers.borrow_mut().get_mut(slot) {
            p.requests += requests;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if peer.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        if let Some(Some(p)) = shard.peers.borrow_mut().get_mut(slot) {
            p.state = peer.state();
            p.watchdog = peer.watchdog_state();
            if p.origin_host.is_empty() && peer.state() == PeerState::Open {
                p.origin_host = peer.remote_origin_host().to_string();
            }
        }
    }
    // Whatever was answered is written out before the socket goes.
    if !peer.transmit().is_empty() {
        if tick {
            shard.sync();
        }
        let _ = stream.write_all(peer.transmit()).await;
    }
    let _ = stream.close().await;
    if let Some(p) = shard.peers.borrow_mut().get_mut(slot) {
        *p = None;
    }
    shard.connections.set(shard.connections.get() - 1);
}

/// What a shard needs to start.
pub struct ShardInit {
    pub id: u16,
    pub config: ServeConfig,
    /// The engine and the log writer, fresh or recovered (`recovery`).
    pub engine: Engine,
    pub writer: SegmentWriter,
    /// What engine snapshots record as the dataset they belong to.
    pub dataset_crc: u32,
    pub stop: Arc<AtomicBool>,
    pub admin: crossbeam_channel::Receiver<AdminCmd>,
    /// Where the shard says which address it listens on (or why it cannot).
    pub ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
}

/// A shard's life: listen, serve, and at the stop flag say goodbye to every peer, sync
/// the log and return.
pub async fn shard_main(init: ShardInit) -> Result<(), String> {
    let ShardInit {
        id,
        config,
        engine,
        mut writer,
        dataset_crc,
        stop,
        admin,
        ready,
    } = init;
    writer.set_durable(config.durability != Durability::None);
    let listener = match glommio::net::TcpListener::bind(config.listen.as_str()) {
        Ok(l) => l,
        Err(e) => {
            let e = format!("cannot listen on {}: {e}", config.listen);
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
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
    let shard = Rc::new(Shard {
        id,
        peer_config,
        started: Instant::now(),
        state: RefCell::new(State {
            engine,
            writer,
            metrics: Metrics::new(),
            line: vec![0u8; 64 * 1024],
            input: vec![0u8; config.message_size_max as usize + 16],
            billing_records: 0,
        }),
        peers: RefCell::new(Vec::new()),
        connections: Cell::new(0),
        stopping: Cell::new(false),
        config,
    });
    let _ = ready.send(Ok(addr));

    // Accepting runs as its own task; it ends when the shard stops.
    let acceptor = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                let accepted =
                    futures_lite::future::or(async { Some(listener.accept().await) }, async {
                        while !shard.stopping.get() {
                            glommio::timer::sleep(Duration::from_millis(20)).await;
                        }
                        None
                    })
                    .await;
                let stream = match accepted {
                    None => break,
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        eprintln!("gyro serve: accept failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if shard.connections.get() >= shard.config.connections_max {
                    shard.state.borrow_mut().metrics.connections_refused += 1;
                    drop(stream);
                    continue;
                }
                let remote = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let slot = {
                    let mut peers = shard.peers.borrow_mut();
                    let info = PeerInfo {
                        remote,
                        origin_host: String::new(),
                        state: PeerState::WaitCer,
                        watchdog: WatchdogState::Initial,
                        requests: 0,
                    };
                    match peers.iter().position(Option::is_none) {
                        Some(i) => {
                            peers[i] = Some(info);
                            i
                        }
                        None => {
                            peers.push(Some(info));
                            peers.len() - 1
                        }
                    }
                };
                shard.connections.set(shard.connections.get() + 1);
                shard.state.borrow_mut().metrics.connections_accepted += 1;
                glommio::spawn_local(connection(shard.clone(), stream, slot)).detach();
            }
        })
    };

    // Housekeeping, at a lower rhythm than requests: operations calls, session
    // supervision, interval syncs, the stop flag.
    let mut last_expire = shard.now_ms();
    let mut last_snapshot = (shard.now_ms(), shard.state.borrow().writer.next_seq());
    let mut last_sync = shard.now_ms();
    let mut stop_deadline: Option<u64> = None;
    loop {
        glommio::timer::sleep(Duration::from_millis(2)).await;
        while let Ok(cmd) = admin.try_recv() {
            shard.admin(cmd);
        }
        let now = shard.now_ms();
        if shard.config.durability == Durability::Interval
            && now - last_sync >= shard.config.sync_interval_ms
        {
            last_sync = now;
            shard.sync();
        }
        if now - last_expire >= 1000 {
            last_expire = now;
            let st = &mut *shard.state.borrow_mut();
            let at = unix_ms();
            let mut gone: Vec<(String, u32)> = Vec::new();
            let n = st
                .engine
                .expire(at, |id, company| gone.push((id.to_string(), company)));
            if n > 0 {
                // Supervision changed balances: the journal says when, for replay.
                let rec = gyro_engine::journal::Control::Expired { now_ms: at }.encode();
                if let Err(e) = st.writer.append(RecordKind::Control, &rec) {
                    fatal("appending to the journal", &e);
                }
                // And billing gets a CDR per session closed without its CCR-T (its
                // reservations went back; nothing was charged).
                let mut buf = vec![0u8; 2048];
                for (id, company) in &gone {
                    let seq = st.writer.next_seq();
                    let mut w = JsonWriter::new(&mut buf);
                    w.begin_object();
                    w.key("id");
                    let key = format!("{id}#expired");
                    w.string(&key);
                    w.field_str("kind", "supervision_timeout");
                    w.field_u64("seq", seq);
                    w.field_u64("shard", u64::from(shard.id));
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
            }
            st.metrics.expired_sessions += n as u64;
        }
        let interval = shard.config.snapshot_interval_s.saturating_mul(1000);
        if interval > 0 && now - last_snapshot.0 >= interval {
            let seq = shard.state.borrow().writer.next_seq();
            if seq != last_snapshot.1 {
                shard.snapshot(dataset_crc);
                last_snapshot.1 = seq;
            }
            last_snapshot.0 = now;
        }
        if stop.load(Ordering::Relaxed) && !shard.stopping.get() {
            shard.stopping.set(true);
            stop_deadline = Some(now + 5_000);
        }
        if let Some(deadline) = stop_deadline {
            if shard.connections.get() == 0 || now >= deadline {
                break;
            }
        }
    }
    acceptor.await;
    // The log synced and an engine snapshot written: the next start replays nothing.
    shard.snapshot(dataset_crc);
    Ok(())
}
