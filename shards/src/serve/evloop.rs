//! The `epoll` runtime: each shard is one pinned thread running this loop over mio
//! (epoll, edge-triggered). A turn of the loop reads every connection that has bytes,
//! handles the requests they hold, takes what the other shards sent (their requests and
//! answers first, then their escrow messages), writes the log
//! out (with `tick`, syncs it) once, then writes every connection's answers; operations
//! calls, new connections, peer timers and the stop flag are looked at every
//! `HOUSEKEEPING` at the latest. Nothing here allocates per request: the readiness
//! events, the connections' buffers and the mesh queues are allocated when a shard
//! starts or a connection arrives.

use std::io::{Read, Write};

use mio::{Events, Interest, Poll, Token};

use super::*;

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

/// The loop's side of a connection.
struct Link {
    stream: mio::net::TcpStream,
    conn: Rc<Conn>,
    /// Where it is in `Shard::conns` (and in the loop's links, and its token).
    slot: u32,
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

/// Runs shard `init` on this thread until the stop flag, then says goodbye to every
/// peer, syncs the log and writes a snapshot.
pub fn run(init: ShardInit, mut poll: Poll) -> Result<(), String> {
    let (shard, mut rest) = new_shard(init)?;
    let MeshEnds { senders, receivers } = rest.mesh;
    for tx in senders {
        let tx = match tx {
            Some(MeshTx::Queue(q, w)) => Some(Sender::Queue(q, w)),
            Some(MeshTx::Glommio(_)) => {
                return Err("the epoll runtime needs a mesh of queues".into());
            }
            None => None,
        };
        shard.mesh.borrow_mut().push(tx);
    }
    let mut inbound = Vec::new();
    for rx in receivers.into_iter().flatten() {
        match rx {
            MeshRx::Queue(q) => inbound.push(q),
            MeshRx::Glommio(_) => return Err("the epoll runtime needs a mesh of queues".into()),
        }
    }
    let _ = rest.ready.send(Ok(()));
    // Messages recovery found sent and never taken go out first.
    shard.pump();

    let mut events = Events::with_capacity(1024);
    let mut links: Vec<Option<Link>> = Vec::new();
    let tick = shard.config.durability == Durability::Tick;
    let mut next_housekeeping = Instant::now();
    loop {
        // Wait for the sockets and the wake-up, no longer than housekeeping allows; not
        // at all when a connection still has bytes to read.
        let high_water = shard.config.tx_buffer_bytes / 2;
        let timeout = if links
            .iter()
            .flatten()
            .any(|l| l.readable && may_read(l, high_water))
            || !shard.held.borrow().is_empty()
        {
            Duration::ZERO
        } else if !shard.overflow.borrow().is_empty() {
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
            if let Some(Some(l)) = links.get_mut(ev.token().0) {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    l.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    l.writable = true;
                }
            }
        }

        // Requests.
        for l in links.iter_mut().flatten() {
            if l.readable {
                read(&shard, l);
            }
        }
        // What the other shards sent: requests for sessions this shard owns, answers
        // for its connections, escrow messages.
        let mut took = false;
        for q in &inbound {
            while let Some(msg) = q.pop() {
                shard.on_mesh(msg);
                took = true;
            }
        }
        // Then escrow: after the requests at hand (a lower priority than requests).
        if took {
            shard.take_escrow_inbox();
        }

        // Requests forwarded to their owner shards do not depend on the log: with `tick`
        // they go before the sync, not after it.
        if tick {
            wake_receivers(&shard);
        }

        // The log before anything that depends on it leaves: answers and escrow
        // messages for the other shards, then this shard's answers (one write, or with
        // `tick` one sync, for the whole turn).
        shard.release_held();
        send_overflow(&shard);
        let now = shard.now_ms();
        if links
            .iter()
            .flatten()
            .any(|l| !l.conn.peer.borrow().transmit().is_empty())
        {
            if tick {
                shard.sync();
            } else {
                shard.write_out();
            }
            for l in links.iter_mut().flatten() {
                write(l, now);
            }
        }
        wake_receivers(&shard);

        if Instant::now() >= next_housekeeping {
            next_housekeeping = Instant::now() + HOUSEKEEPING;
            let stop_now = rest.housekeeping.round(&shard);
            while let Ok(s) = rest.intake.try_recv() {
                accept(&shard, &poll, &mut links, s);
            }
            let now = shard.now_ms();
            // Peer timers (watchdog, capabilities exchange, frame deadline) and, when
            // stopping, a DPR to every open peer.
            for l in links.iter_mut().flatten() {
                let mut peer = l.conn.peer.borrow_mut();
                if shard.stopping.get() && !l.said_goodbye {
                    l.said_goodbye = true;
                    if peer.state() == PeerState::Open {
                        peer.disconnect(disconnect_cause::REBOOTING, now);
                    } else {
                        l.ending = true;
                    }
                }
                if peer.poll_timeout().is_some_and(|t| t <= now) {
                    peer.handle_timeout(now);
                }
                let mut p = l.conn.info.borrow_mut();
                p.state = peer.state();
                p.watchdog = peer.watchdog_state();
            }
            // What the timers sent (DWR, DPR) goes now.
            if links
                .iter()
                .flatten()
                .any(|l| !l.conn.peer.borrow().transmit().is_empty())
            {
                shard.log_barrier();
                for l in links.iter_mut().flatten() {
                    write(l, now);
                }
            }
            if stop_now {
                break;
            }
        }

        // Connections that are done: closed by the peer state machine or the peer, or
        // stuck on a peer that does not read.
        let now = shard.now_ms();
        for (slot, entry) in links.iter_mut().enumerate() {
            let Some(l) = entry else { continue };
            let (closing, pending) = {
                let peer = l.conn.peer.borrow();
                (
                    l.ending || peer.close_reason().is_some(),
                    !peer.transmit().is_empty(),
                )
            };
            let stalled = l
                .stalled_since
                .is_some_and(|t| now.saturating_sub(t) >= WRITE_STALL_MS);
            if (closing && (!pending || l.dead)) || stalled {
                if let Some(mut l) = entry.take() {
                    close(&shard, &poll, slot, &mut l);
                }
            }
        }
    }
    // Whatever is left: held messages and the overflow get one more try (what does not
    // go is redelivered by recovery at the next start).
    shard.take_escrow_inbox();
    shard.release_held();
    send_overflow(&shard);
    wake_receivers(&shard);
    for (slot, entry) in links.iter_mut().enumerate() {
        if let Some(mut l) = entry.take() {
            close(&shard, &poll, slot, &mut l);
        }
    }
    // The log synced and an engine snapshot written: the next start replays nothing.
    shard.snapshot(rest.housekeeping.dataset_crc);
    Ok(())
}

/// Whether a connection's requests may be read now: not while its answers wait for a
/// socket that is full, nor while they fill half its transmit buffer (`tx_buffer_bytes`);
/// the peer then waits in TCP, as it would for a server that reads after each write, and
/// is cut off only if it stops reading (`WRITE_STALL_MS`).
fn may_read(l: &Link, tx_high_water: usize) -> bool {
    let pending = l.conn.peer.borrow().transmit().len();
    pending == 0 || (l.writable && pending <= tx_high_water)
}

/// Reads what the socket has (up to `READS_PER_TURN` reads) and handles the messages.
fn read(shard: &Shard, l: &mut Link) {
    let high_water = shard.config.tx_buffer_bytes / 2;
    for _ in 0..READS_PER_TURN {
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
                handle(shard, l);
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

/// Handles the whole messages received; the rest waits for more bytes.
fn handle(shard: &Shard, l: &mut Link) {
    let at = shard.on_bytes(&l.conn, l.slot, &l.buf[..l.filled]);
    l.buf.copy_within(at..l.filled, 0);
    l.filled -= at;
    // Escrow messages the requests caused, for this shard (the peer is not borrowed
    // now); what they hold for other shards goes once per turn, after the log barrier.
    shard.pump();
}

/// Writes what the peer has to send, as far as the socket takes it.
fn write(l: &mut Link, now: u64) {
    if l.dead || !l.writable {
        return;
    }
    let mut peer = l.conn.peer.borrow_mut();
    loop {
        let out = peer.transmit();
        if out.is_empty() {
            l.stalled_since = None;
            return;
        }
        match l.stream.write(out) {
            Ok(0) => {
                l.dead = true;
                l.ending = true;
                return;
            }
            Ok(n) => {
                peer.transmitted(n);
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
fn accept(shard: &Shard, poll: &Poll, links: &mut Vec<Option<Link>>, s: std::net::TcpStream) {
    if shard.stopping.get() || shard.connections.get() >= shard.config.connections_max {
        shard.state.borrow_mut().metrics.connections_refused += 1;
        return;
    }
    if s.set_nonblocking(true).is_err() {
        return;
    }
    let _ = s.set_nodelay(true);
    let remote = s
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut stream = mio::net::TcpStream::from_std(s);
    let (slot, conn) = shard.add_conn(remote);
    if poll
        .registry()
        .register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )
        .is_err()
    {
        shard.conns.borrow_mut()[slot] = None;
        return;
    }
    if links.len() <= slot {
        links.resize_with(slot + 1, || None);
    }
    links[slot] = Some(Link {
        stream,
        conn,
        slot: slot as u32,
        buf: vec![0u8; 2 * shard.config.message_size_max as usize],
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
    shard.connections.set(shard.connections.get() + 1);
    shard.state.borrow_mut().metrics.connections_accepted += 1;
}

/// Closes a connection: what it was answered is written as far as the socket takes it.
fn close(shard: &Shard, poll: &Poll, slot: usize, l: &mut Link) {
    let now = shard.now_ms();
    if !l.conn.peer.borrow().transmit().is_empty() {
        shard.log_barrier();
        write(l, now);
    }
    if l.down {
        l.conn.peer.borrow_mut().connection_down(now);
    }
    let _ = poll.registry().deregister(&mut l.stream);
    let _ = l.stream.shutdown(std::net::Shutdown::Both);
    if let Some(c) = shard.conns.borrow_mut().get_mut(slot) {
        *c = None;
    }
    shard.connections.set(shard.connections.get() - 1);
}

/// Messages the mesh had no room for, in order, as far as there is room now.
fn send_overflow(shard: &Shard) {
    loop {
        let Some((to, msg)) = shard.overflow.borrow_mut().pop_front() else {
            return;
        };
        let sent = {
            let mesh = shard.mesh.borrow();
            match mesh.get(usize::from(to)) {
                Some(Some(tx)) => tx.try_send(msg),
                _ => Err(None),
            }
        };
        match sent {
            Ok(()) => shard.mesh_sent.set(shard.mesh_sent.get() | 1 << to),
            Err(None) => {}
            Err(Some(msg)) => {
                shard.overflow.borrow_mut().push_front((to, msg));
                return;
            }
        }
    }
}

/// Wakes the shards this one sent to since the last time: one wake-up per turn.
fn wake_receivers(shard: &Shard) {
    let sent = shard.mesh_sent.replace(0);
    if sent == 0 {
        return;
    }
    let mesh = shard.mesh.borrow();
    for (i, tx) in mesh.iter().enumerate() {
        if sent & (1 << i) != 0 {
            if let Some(Sender::Queue(_, w)) = tx {
                let _ = w.wake();
            }
        }
    }
}
