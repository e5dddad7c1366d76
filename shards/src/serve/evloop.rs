//! A shard's thread: one loop over mio (epoll, edge-triggered) around the shard core.
//! A turn reads every connection that has bytes (the peer state machine frames the
//! requests and the core handles them), takes what the other shards sent, ends the batch
//! at the core (`flush`: the log barrier, then what waited for it), then writes every
//! connection's answers; operations calls, new connections, timers and the stop flag
//! are looked at every `HOUSEKEEPING` at the latest.
//!
//! The loop decides nothing about charging: it performs the core's actions in order
//! (`apply`). Nothing here allocates per request: the readiness events, the
//! connections' buffers, the core's action queue and the mesh queues are allocated when
//! a shard starts or a connection arrives.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::peer::{CloseReason, Event, Incoming, Peer, PeerConfig, PeerState, WatchdogState};
use gyro_engine::shard::{Action, ConnRef, CoreConfig, LogPolicy, Out, ShardCore};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::{fatal, unix_ms, AdminCmd, CompanyView, MeshEnds, MeshMsg, MeshTx, ShardInit};
use crate::config::{Durability, ServeConfig};
use crate::segments::SegmentWriter;

/// The token of the shard's wake-up (`mio::Waker`): another shard put something in a
/// mesh queue for this one.
pub const WAKE: Token = Token(usize::MAX);

/// How often housekeeping runs at the latest.
const HOUSEKEEPING: Duration = Duration::from_millis(2);

/// A peer whose socket takes none of its answers for this long is cut off
/// (CONFORMANCE, slow reader).
const WRITE_STALL_MS: u64 = 5_000;

/// Reads of one connection per turn: a peer that never stops sending does not keep the
/// others waiting.
const READS_PER_TURN: usize = 16;

/// What the operations endpoint and the log see of one connection.
pub(super) struct PeerInfo {
    pub remote: SocketAddr,
    pub origin_host: String,
    pub requests: u64,
}

/// One connection: its socket, its peer state machine and its buffers.
pub(super) struct Link {
    stream: mio::net::TcpStream,
    pub peer: Peer,
    pub info: PeerInfo,
    gen: u32,
    /// Received bytes not yet handled (twice the largest message).
    buf: Vec<u8>,
    filled: usize,
    /// Readiness seen and not yet read to `WouldBlock`.
    readable: bool,
    /// The socket takes writes: false from a write that found it full until epoll says
    /// it has room again.
    writable: bool,
    /// The peer closed its side, or the socket failed: answers are written, then it
    /// closes.
    ending: bool,
    /// The transport went down (end of stream or a read error): the peer state machine
    /// is told when the connection closes, after its answers were written.
    down: bool,
    /// The socket failed: nothing more can be written.
    dead: bool,
    said_goodbye: bool,
    /// When a write first found the socket full (ms of the shard's clock).
    stalled_since: Option<u64>,
}

/// What the loop measures itself (the core counts the rest).
pub(super) struct LoopMetrics {
    /// Request handling time (decode to answer and CDR in the action queue), ns.
    pub latency: Histogram<u64>,
    /// Log sync time, ns.
    pub sync: Histogram<u64>,
    pub syncs: u64,
    pub snapshots: u64,
    /// How long the last snapshot took.
    pub snapshot_ms: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
}

/// Everything of a shard but its core and the core's action queue.
pub(super) struct Io {
    pub id: u16,
    pub config: ServeConfig,
    peer_config: PeerConfig,
    started: Instant,
    pub writer: SegmentWriter,
    pub links: Vec<Option<Link>>,
    next_gen: u32,
    connections: usize,
    stopping: bool,
    senders: Vec<Option<MeshTx>>,
    /// Shards sent to since they were last woken (one wake-up per turn).
    mesh_sent: u64,
    /// Messages waiting for room in the mesh, in order.
    overflow: VecDeque<(u16, MeshMsg)>,
    pub metrics: LoopMetrics,
}

impl Io {
    /// Milliseconds since the shard started (the peers' clock).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Performs the core's actions in order.
fn apply(out: &mut Out, io: &mut Io, core: &mut ShardCore) {
    out.drain(|action, arena| match action {
        Action::Append { kind, seq, at } => {
            if io.writer.next_seq() != seq {
                fatal(
                    "the log and the shard core disagree on the next sequence",
                    &format!("{} against {seq}", io.writer.next_seq()),
                );
            }
            if let Err(e) = io.writer.append(kind, at.of(arena)) {
                fatal("appending to the log", &e);
            }
        }
        Action::Answer { to, at } => {
            let answer = at.of(arena);
            let link = io.links.get_mut(to.conn as usize).and_then(Option::as_mut);
            // A connection that went: its peer asks again.
            if let Some(l) = link.filter(|l| l.gen == to.gen) {
                // A full transmit buffer marks the peer a slow reader; it is then closed.
                let _slow_reader = l.peer.send_with(|b| {
                    let to = b
                        .get_mut(..answer.len())
                        .ok_or(gyro_engine::diameter::encode::EncodeError::BufferFull)?;
                    to.copy_from_slice(answer);
                    Ok(answer.len())
                });
            }
        }
        Action::Post { to, msg } => post(io, core, to, msg),
        Action::WriteOut => {
            if let Err(e) = io.writer.flush() {
                fatal("writing the CDR log", &e);
            }
        }
        Action::Sync => sync(io),
    });
}

/// Syncs the log; a failure is fatal.
fn sync(io: &mut Io) {
    if io.writer.unsynced() == 0 {
        return;
    }
    let t0 = Instant::now();
    if let Err(e) = io.writer.sync() {
        fatal("syncing the CDR log", &e);
    }
    io.metrics.syncs += 1;
    io.metrics
        .sync
        .saturating_record(t0.elapsed().as_nanos().max(1) as u64);
}

/// Sends to another shard; when its queue is full the message waits in order.
fn post(io: &mut Io, core: &mut ShardCore, to: u16, msg: MeshMsg) {
    if io.overflow.is_empty() {
        let Some(Some((q, _))) = io.senders.get(usize::from(to)) else {
            return;
        };
        match q.push(msg) {
            Ok(()) => {
                io.mesh_sent |= 1 << to;
                return;
            }
            Err(msg) => io.overflow.push_back((to, msg)),
        }
    } else {
        io.overflow.push_back((to, msg));
    }
    core.set_mesh_backlog(io.overflow.len());
}

/// Messages the mesh had no room for, in order, as far as there is room now.
fn send_overflow(io: &mut Io, core: &mut ShardCore) {
    while let Some((to, msg)) = io.overflow.pop_front() {
        let Some(Some((q, _))) = io.senders.get(usize::from(to)) else {
            continue;
        };
        match q.push(msg) {
            Ok(()) => io.mesh_sent |= 1 << to,
            Err(msg) => {
                io.overflow.push_front((to, msg));
                break;
            }
        }
    }
    core.set_mesh_backlog(io.overflow.len());
}

/// Wakes the shards this one sent to since the last time: one wake-up per turn.
fn wake_receivers(io: &mut Io) {
    let sent = std::mem::replace(&mut io.mesh_sent, 0);
    if sent == 0 {
        return;
    }
    for (i, tx) in io.senders.iter().enumerate() {
        if sent & (1 << i) != 0 {
            if let Some((_, w)) = tx {
                // A failed wake-up is seen at the receiver's next housekeeping.
                let _late = w.wake();
            }
        }
    }
}

/// A random id for this run of the shard (`CoreConfig::run`): from the kernel's random
/// source, or, should that fail, from the clock and the process id.
fn run_id() -> u64 {
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if random {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// The peer configuration of a shard's connections.
fn peer_config(config: &ServeConfig, addr: SocketAddr) -> PeerConfig {
    let mut p = PeerConfig::new(&config.origin_host, &config.origin_realm);
    p.allowed_peers = config.allowed_peers.clone();
    p.watchdog_tw_ms = config.watchdog_ms;
    p.watchdog_jitter_ms = (config.watchdog_ms / 4).min(2_000);
    p.capabilities_timeout_ms = config.capabilities_timeout_ms;
    p.frame_deadline_ms = config.frame_deadline_ms;
    p.message_size_max = config.message_size_max;
    p.tx_buffer_bytes = config.tx_buffer_bytes;
    p.product_name = "gyro".into();
    p.origin_state_id = (unix_ms() / 1000) as u32;
    if !addr.ip().is_unspecified() {
        p.host_ip_addresses = vec![addr.ip()];
    }
    p
}

/// Housekeeping state: operations calls, snapshots, the stop flag.
struct Housekeeping {
    admin: crossbeam_channel::Receiver<AdminCmd>,
    stop: Arc<AtomicBool>,
    intake: crossbeam_channel::Receiver<std::net::TcpStream>,
    /// What engine snapshots record as the dataset they belong to.
    dataset_crc: u32,
    /// When the last snapshot was taken, and the log sequence it covered.
    last_snapshot: (u64, u64),
    /// Set when the stop flag is seen: the shard stops when its connections have gone,
    /// or at this time.
    stop_deadline: Option<u64>,
}

/// Runs shard `init` on this thread until the stop flag, then says goodbye to every
/// peer, syncs the log and writes a snapshot.
pub fn run(init: ShardInit, mut poll: Poll) -> Result<(), String> {
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
        local_addr,
        ready,
    } = init;
    writer.set_durable(config.durability != Durability::None);
    // Written out (or, with `tick`, synced) at every barrier: with pwrite, not through
    // the mapping (see `segments`).
    writer
        .set_buffered()
        .map_err(|e| format!("shard {id}: preparing the CDR log: {e}"))?;
    let peer_config = peer_config(&config, local_addr);
    let core_config = CoreConfig {
        shard: id,
        shards,
        origin_host: config.origin_host.clone(),
        origin_realm: config.origin_realm.clone(),
        log: match config.durability {
            Durability::None => LogPolicy::None,
            Durability::Interval => LogPolicy::Interval(config.sync_interval_ms),
            Durability::Tick => LogPolicy::Tick,
        },
        run: run_id(),
    };
    let mut core = ShardCore::new(engine, core_config, writer.next_seq(), unix_ms());
    let MeshEnds { senders, receivers } = mesh;
    let inbound: Vec<Arc<ArrayQueue<MeshMsg>>> = receivers.into_iter().flatten().collect();
    let histogram = || Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut io = Io {
        id,
        started: Instant::now(),
        links: Vec::new(),
        next_gen: 1,
        connections: 0,
        stopping: false,
        senders,
        mesh_sent: 0,
        overflow: VecDeque::new(),
        metrics: LoopMetrics {
            latency: histogram(),
            sync: histogram(),
            syncs: 0,
            snapshots: 0,
            snapshot_ms: 0,
            connections_accepted: 0,
            connections_refused: 0,
        },
        writer,
        config,
        peer_config,
    };
    let mut hk = Housekeeping {
        admin,
        stop,
        intake,
        dataset_crc,
        last_snapshot: (io.now_ms(), io.writer.next_seq()),
        stop_deadline: None,
    };
    let mut out = Out::new();
    // The shard says it runs (a failure to send: the server has gone; nothing to tell).
    let _gone = ready.send(Ok(()));
    // The bounds in force from here on, in the journal before any request.
    core.set_bounds(io.config.bounds(), &mut out);
    // Messages recovery found sent and never taken go out first.
    core.flush(unix_ms(), &mut out);
    apply(&mut out, &mut io, &mut core);

    let mut events = Events::with_capacity(1024);
    let tick = io.config.durability == Durability::Tick;
    let mut next_housekeeping = Instant::now();
    loop {
        // Wait for the sockets and the wake-up, no longer than housekeeping allows; not
        // at all when a connection still has bytes to read.
        let high_water = io.config.tx_buffer_bytes / 2;
        let timeout = if io
            .links
            .iter()
            .flatten()
            .any(|l| l.readable && may_read(l, high_water))
        {
            Duration::ZERO
        } else if !io.overflow.is_empty() {
            Duration::from_millis(1)
                .min(next_housekeeping.saturating_duration_since(Instant::now()))
        } else {
            next_housekeeping.saturating_duration_since(Instant::now())
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                fatal("waiting for the sockets", &e);
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue; // the mesh queues are looked at every turn
            }
            if let Some(Some(l)) = io.links.get_mut(ev.token().0) {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    l.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    l.writable = true;
                }
            }
        }

        // Requests.
        for slot in 0..io.links.len() {
            if io.links[slot].as_ref().is_some_and(|l| l.readable) {
                read(&mut io, &mut core, &mut out, slot);
            }
        }
        // What the other shards sent: requests for sessions this shard owns, answers
        // for its connections, escrow messages.
        let now = unix_ms();
        for q in &inbound {
            while let Some(msg) = q.pop() {
                core.handle_mesh(now, msg, &mut out);
                apply(&mut out, &mut io, &mut core);
            }
        }
        // Requests forwarded to their owner shards do not depend on the log: with `tick`
        // they go before the sync, not after it.
        if tick {
            wake_receivers(&mut io);
        }
        // The end of the batch: escrow, the log barrier, what waited for it.
        core.flush(now, &mut out);
        apply(&mut out, &mut io, &mut core);
        send_overflow(&mut io, &mut core);
        let now_peer = io.now_ms();
        for l in io.links.iter_mut().flatten() {
            write(l, now_peer);
        }
        wake_receivers(&mut io);

        if Instant::now() >= next_housekeeping {
            next_housekeeping = Instant::now() + HOUSEKEEPING;
            if housekeeping(&mut io, &mut core, &mut out, &mut hk, &poll) {
                break;
            }
        }

        // Connections that are done: closed by the peer state machine or the peer, or
        // stuck on a peer that does not read.
        let now = io.now_ms();
        for slot in 0..io.links.len() {
            let Some(l) = &mut io.links[slot] else {
                continue;
            };
            peer_events(l, io.id);
            let closing = l.ending || l.peer.close_reason().is_some();
            let pending = !l.peer.transmit().is_empty();
            let stalled = l
                .stalled_since
                .is_some_and(|t| now.saturating_sub(t) >= WRITE_STALL_MS);
            if (closing && (!pending || l.dead)) || stalled {
                let why = if stalled && !closing {
                    "the peer stopped reading its answers (writes stalled)"
                } else {
                    "closed"
                };
                close(&mut io, &poll, slot, why);
            }
        }
    }
    // Whatever is left: held messages and the overflow get one more try (what does not
    // go is redelivered by recovery at the next start).
    core.flush(unix_ms(), &mut out);
    apply(&mut out, &mut io, &mut core);
    send_overflow(&mut io, &mut core);
    wake_receivers(&mut io);
    for slot in 0..io.links.len() {
        if io.links[slot].is_some() {
            close(&mut io, &poll, slot, "the server stopped");
        }
    }
    // The log synced and an engine snapshot written: the next start replays nothing.
    snapshot(&mut io, &mut core, &mut out, hk.dataset_crc);
    Ok(())
}

/// One round of housekeeping; `true` when the shard is to stop now.
fn housekeeping(
    io: &mut Io,
    core: &mut ShardCore,
    out: &mut Out,
    hk: &mut Housekeeping,
    poll: &Poll,
) -> bool {
    while let Ok(cmd) = hk.admin.try_recv() {
        admin(io, core, out, cmd);
    }
    let now = unix_ms();
    if now >= core.poll_timeout() {
        core.handle_timeout(now, out);
        // The supervision CDRs (and anything else no answer waited for).
        core.flush(now, out);
        apply(out, io, core);
    }
    let now_peer = io.now_ms();
    let interval = io.config.snapshot_interval_s.saturating_mul(1000);
    if interval > 0 && now_peer - hk.last_snapshot.0 >= interval {
        let seq = io.writer.next_seq();
        if seq != hk.last_snapshot.1 {
            snapshot(io, core, out, hk.dataset_crc);
            // (The bounds record the snapshot is followed by included.)
            hk.last_snapshot.1 = io.writer.next_seq();
        }
        hk.last_snapshot.0 = now_peer;
    }
    if hk.stop.load(Ordering::Relaxed) && !io.stopping {
        io.stopping = true;
        hk.stop_deadline = Some(now_peer + 5_000);
    }
    while let Ok(s) = hk.intake.try_recv() {
        accept(io, poll, s);
    }
    // Peer timers (watchdog, capabilities exchange, frame deadline) and, when stopping,
    // a DPR to every open peer; what they send goes now.
    for l in io.links.iter_mut().flatten() {
        if io.stopping && !l.said_goodbye {
            l.said_goodbye = true;
            if l.peer.state() == PeerState::Open {
                l.peer.disconnect(disconnect_cause::REBOOTING, now_peer);
                tracing::info!(
                    target: "gyro::peer",
                    shard = io.id,
                    remote = %l.info.remote,
                    origin_host = l.peer.remote_origin_host(),
                    "DPR sent (REBOOTING): the server is stopping"
                );
            } else {
                l.ending = true;
            }
        }
        if l.peer.poll_timeout().is_some_and(|t| t <= now_peer) {
            l.peer.handle_timeout(now_peer);
        }
        write(l, now_peer);
    }
    hk.stop_deadline
        .is_some_and(|deadline| io.connections == 0 || now_peer >= deadline)
}

/// A call from the operations endpoint (a reply the endpoint no longer waits for is
/// dropped: it timed out).
fn admin(io: &mut Io, core: &mut ShardCore, out: &mut Out, cmd: AdminCmd) {
    match cmd {
        AdminCmd::Metrics(reply) => {
            let _timed_out = reply.send(super::metrics::families(io, core));
        }
        AdminCmd::Companies(reply) => {
            let e = core.engine();
            let all = (0..e.companies() as u32)
                .map(|c| CompanyView::of(e, c))
                .collect();
            let _timed_out = reply.send(all);
        }
        AdminCmd::Company(id, reply) => {
            let e = core.engine();
            let _timed_out = reply.send(e.company_by_id(&id).map(|c| CompanyView::of(e, c)));
        }
        // A change is on disk (`none`: written out) before it is confirmed.
        AdminCmd::TopUp(id, amount, op, reply) => {
            let now = unix_ms();
            let r = core.top_up(now, &id, amount, op, out);
            core.confirm(now, out);
            apply(out, io, core);
            let _timed_out = reply.send(r);
        }
        AdminCmd::AddPackage(id, body, reply) => {
            let now = unix_ms();
            let r = core.add_package(now, &id, body, out);
            core.confirm(now, out);
            apply(out, io, core);
            let _timed_out = reply.send(r);
        }
        AdminCmd::Provision(lines, reply) => {
            let now = unix_ms();
            let r = lines
                .iter()
                .map(|line| core.provision(now, line, out))
                .collect();
            core.confirm(now, out);
            apply(out, io, core);
            let _timed_out = reply.send(r);
        }
        AdminCmd::Adjust {
            company,
            amount,
            reason,
            op,
            reply,
        } => {
            let now = unix_ms();
            let r = core.adjust(now, &company, amount, &reason, op, out);
            core.confirm(now, out);
            apply(out, io, core);
            let _timed_out = reply.send(r);
        }
        AdminCmd::Key(key, reply) => {
            let _timed_out = reply.send(core.key(key));
        }
        AdminCmd::RecordKey(op, status, answer, reply) => {
            let now = unix_ms();
            core.record_key(now, op, status, answer, out);
            core.confirm(now, out);
            apply(out, io, core);
            let _timed_out = reply.send(());
        }
        AdminCmd::Export(reply) => {
            let _timed_out = reply.send(core.engine().export());
        }
        AdminCmd::Subscriber(msisdn, reply) => {
            let line = core
                .engine()
                .subscriber_by_msisdn_key(msisdn)
                .map(|(s, company)| gyro_engine::provision::subscriber_line(&s, company));
            let _timed_out = reply.send(line);
        }
    }
}

/// Writes an engine snapshot as of now (the log synced up to it first). Runs on the
/// shard between requests: it holds them up for the time it takes.
fn snapshot(io: &mut Io, core: &mut ShardCore, out: &mut Out, dataset_crc: u32) {
    if let Err(e) = io.writer.sync() {
        fatal("syncing the CDR log", &e);
    }
    let seq = io.writer.next_seq();
    debug_assert_eq!(seq, core.next_seq());
    let t0 = Instant::now();
    match crate::recovery::write_snapshot(
        &io.config.data_dir,
        io.id,
        core.engine(),
        seq,
        dataset_crc,
        2,
    ) {
        Ok(_) => {
            io.metrics.snapshots += 1;
            // Replay from this snapshot starts with the bounds in force.
            core.set_bounds(core.engine().bounds(), out);
            apply(out, io, core);
        }
        Err(e) => tracing::error!(
            target: "gyro",
            "writing an engine snapshot failed (recovery replays more of the log): {e}"
        ),
    }
    io.metrics.snapshot_ms = t0.elapsed().as_millis() as u64;
}

/// Whether a connection's requests may be read now: not while its answers wait for a
/// socket that is full, nor while they fill half its transmit buffer (`tx_buffer_bytes`);
/// the peer then waits in TCP, as it would for a server that reads after each write, and
/// is cut off only if it stops reading (`WRITE_STALL_MS`).
fn may_read(l: &Link, tx_high_water: usize) -> bool {
    let pending = l.peer.transmit().len();
    pending == 0 || (l.writable && pending <= tx_high_water)
}

/// Reads what connection `slot`'s socket has (up to `READS_PER_TURN` reads) and hands
/// the whole messages to the peer state machine, its requests to the core.
fn read(io: &mut Io, core: &mut ShardCore, out: &mut Out, slot: usize) {
    let high_water = io.config.tx_buffer_bytes / 2;
    for _ in 0..READS_PER_TURN {
        let Some(l) = io.links[slot].as_mut() else {
            return;
        };
        if !may_read(l, high_water) {
            return; // still readable: the next turn after the answers went
        }
        if l.filled == l.buf.len() {
            // Cannot happen with a buffer of twice the largest message; be safe anyway.
            l.ending = true;
            l.readable = false;
            return;
        }
        match l.stream.read(&mut l.buf[l.filled..]) {
            Ok(0) => {
                l.ending = true;
                l.down = true;
                l.readable = false;
                return;
            }
            Ok(n) => {
                l.filled += n;
                handle(io, core, out, slot);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                l.readable = false;
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                l.ending = true;
                l.down = true;
                l.dead = true;
                l.readable = false;
                return;
            }
        }
    }
}

/// Handles the whole messages received on connection `slot`; the rest waits for more
/// bytes.
fn handle(io: &mut Io, core: &mut ShardCore, out: &mut Out, slot: usize) {
    let now_peer = io.now_ms();
    let now = unix_ms();
    let latency = &mut io.metrics.latency;
    let Some(l) = io.links[slot].as_mut() else {
        return;
    };
    let from = ConnRef {
        conn: slot as u32,
        gen: l.gen,
    };
    let mut requests = 0;
    let at = l
        .peer
        .handle_all(&l.buf[..l.filled], now_peer, |_, kind, request| {
            if kind == Incoming::Request {
                let t0 = Instant::now();
                core.handle_request(now, from, request, out);
                latency.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                requests += 1;
            }
        });
    if l.peer.poll_timeout().is_some_and(|t| t <= now_peer) {
        l.peer.handle_timeout(now_peer);
    }
    l.buf.copy_within(at..l.filled, 0);
    l.filled -= at;
    l.info.requests += requests;
    if l.info.origin_host.is_empty() && l.peer.state() == PeerState::Open {
        l.info.origin_host = l.peer.remote_origin_host().to_string();
    }
    apply(out, io, core);
}

/// Writes what the peer has to send, as far as the socket takes it.
fn write(l: &mut Link, now: u64) {
    if l.dead || !l.writable {
        return;
    }
    loop {
        let pending = l.peer.transmit();
        if pending.is_empty() {
            l.stalled_since = None;
            return;
        }
        match l.stream.write(pending) {
            Ok(0) => {
                l.dead = true;
                l.ending = true;
                return;
            }
            Ok(n) => {
                l.peer.transmitted(n);
                l.stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                l.stalled_since.get_or_insert(now);
                l.writable = false;
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                l.dead = true;
                l.ending = true;
                return;
            }
        }
    }
}

/// Takes a connection the accepting thread handed this shard.
fn accept(io: &mut Io, poll: &Poll, s: std::net::TcpStream) {
    if io.stopping || io.connections >= io.config.connections_max {
        io.metrics.connections_refused += 1;
        return;
    }
    if s.set_nonblocking(true).is_err() {
        return;
    }
    // Without it answers wait for Nagle; the connection still works.
    let _nagle = s.set_nodelay(true);
    let remote = s
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut stream = mio::net::TcpStream::from_std(s);
    let slot = match io.links.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            io.links.push(None);
            io.links.len() - 1
        }
    };
    if poll
        .registry()
        .register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )
        .is_err()
    {
        return;
    }
    let gen = io.next_gen;
    io.next_gen = gen.wrapping_add(1);
    io.links[slot] = Some(Link {
        stream,
        peer: Peer::responder(io.peer_config.clone(), io.now_ms()),
        info: PeerInfo {
            remote,
            origin_host: String::new(),
            requests: 0,
        },
        gen,
        buf: vec![0u8; 2 * io.config.message_size_max as usize],
        filled: 0,
        // Bytes may have arrived before the registration.
        readable: true,
        writable: true,
        ending: false,
        down: false,
        dead: false,
        said_goodbye: false,
        stalled_since: None,
    });
    io.connections += 1;
    io.metrics.connections_accepted += 1;
}

/// Logs what a connection's peer state machine reports: capabilities exchanged, the
/// watchdog's changes, a DPR and why the connection must close (never per request).
fn peer_events(l: &mut Link, shard: u16) {
    while let Some(e) = l.peer.poll_event() {
        let remote = l.info.remote;
        let origin_host = l.peer.remote_origin_host();
        match e {
            Event::Up => tracing::info!(
                target: "gyro::peer",
                shard,
                %remote,
                origin_host,
                "CER accepted: the peer is open"
            ),
            Event::Watchdog { from, to } => {
                let (from, to) = (watchdog_name(from), watchdog_name(to));
                match to {
                    "OKAY" => tracing::info!(
                        target: "gyro::peer",
                        shard, %remote, origin_host, from, to,
                        "watchdog: the peer answers again"
                    ),
                    "REOPEN" => tracing::info!(
                        target: "gyro::peer",
                        shard, %remote, origin_host, from, to,
                        "watchdog: the connection is back, the peer is being tried again (RFC 3539 REOPEN)"
                    ),
                    _ => tracing::warn!(
                        target: "gyro::peer",
                        shard, %remote, origin_host, from, to,
                        "watchdog: the peer is {}", to.to_lowercase()
                    ),
                }
            }
            Event::Close(CloseReason::CerRefused(code)) => tracing::warn!(
                target: "gyro::peer",
                shard,
                %remote,
                origin_host,
                result_code = code,
                "CER refused: {}",
                close_reason(CloseReason::CerRefused(code))
            ),
            Event::Close(CloseReason::PeerDisconnected(cause)) => tracing::info!(
                target: "gyro::peer",
                shard,
                %remote,
                origin_host,
                disconnect_cause = cause,
                "DPR received and answered"
            ),
            Event::Close(r) => tracing::warn!(
                target: "gyro::peer",
                shard,
                %remote,
                origin_host,
                "the connection must close: {}",
                close_reason(r)
            ),
            Event::UnexpectedAnswerDropped { hop_by_hop } => tracing::debug!(
                target: "gyro::peer",
                shard,
                %remote,
                origin_host,
                hop_by_hop,
                "an answer nobody asked for was dropped"
            ),
            _ => {}
        }
    }
}

fn watchdog_name(s: WatchdogState) -> &'static str {
    match s {
        WatchdogState::Initial => "INITIAL",
        WatchdogState::Okay => "OKAY",
        WatchdogState::Suspect => "SUSPECT",
        WatchdogState::Down => "DOWN",
        WatchdogState::Reopen => "REOPEN",
    }
}

/// Why a connection closed, for operators.
fn close_reason(r: CloseReason) -> String {
    match r {
        CloseReason::Framing(e) => format!("the byte stream cannot be framed ({e:?})"),
        CloseReason::FrameTimeout => "a message did not complete in time".into(),
        CloseReason::NoCer => "the first message was not a CER".into(),
        CloseReason::CerRefused(3010) => {
            "3010 DIAMETER_UNKNOWN_PEER (its Origin-Host is not in allowed_peers)".into()
        }
        CloseReason::CerRefused(5010) => {
            "5010 DIAMETER_NO_COMMON_APPLICATION (it does not offer Credit-Control, application 4)"
                .into()
        }
        CloseReason::CerRefused(code) => format!("Result-Code {code}"),
        CloseReason::CeaRefused(code) => format!("our CER was answered {code}"),
        CloseReason::CapabilitiesTimeout => "no CER within the capabilities timeout".into(),
        CloseReason::PeerDisconnected(cause) => {
            format!("the peer sent DPR (Disconnect-Cause {cause})")
        }
        CloseReason::Disconnected => "our DPR was answered".into(),
        CloseReason::DisconnectTimeout => "our DPR was not answered in time".into(),
        CloseReason::WatchdogDown => "the watchdog declared the peer DOWN".into(),
        CloseReason::SlowReader => {
            "the peer does not read its answers (transmit buffer full)".into()
        }
        _ => format!("{r:?}"),
    }
}

/// Closes connection `slot`: what it was answered is written as far as the socket takes
/// it (its answers were released by the barrier before them).
fn close(io: &mut Io, poll: &Poll, slot: usize, why: &str) {
    let now = io.now_ms();
    let Some(mut l) = io.links[slot].take() else {
        return;
    };
    write(&mut l, now);
    if l.down {
        l.peer.connection_down(now);
    }
    peer_events(&mut l, io.id);
    let reason = match l.peer.close_reason() {
        Some(r) => close_reason(r),
        None if l.dead => "the socket failed".to_string(),
        None if l.down => "the peer closed the connection".to_string(),
        None => why.to_string(),
    };
    tracing::info!(
        target: "gyro::peer",
        shard = io.id,
        remote = %l.info.remote,
        origin_host = l.peer.remote_origin_host(),
        requests = l.info.requests,
        "connection closed: {reason}"
    );
    // The socket goes either way; errors here change nothing.
    let _deregistered = poll.registry().deregister(&mut l.stream);
    let _shut = l.stream.shutdown(std::net::Shutdown::Both);
    io.connections -= 1;
}
