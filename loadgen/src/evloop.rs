//! The generator's event loop: one thread drives several connections over one epoll
//! instance (mio), with non-blocking sockets, so that reading answers never delays a
//! scheduled send.
//!
//! Open loop: each connection has its own schedule (its share of the rate, the
//! connections' schedules offset from each other). The loop sleeps in epoll until about
//! a millisecond before the next due send (epoll's timeout is in whole milliseconds),
//! then polls without sleeping until the send is due, so requests leave within
//! microseconds of their time. The price is a busy core while sends are less than
//! about 1.5 ms apart: the generator wants a core of its own, as any precise one does.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::peer::{CloseReason, Incoming, Peer, PeerConfig, PeerState};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::conn::Conn;
use crate::run::{Live, RunReport, RunSpec};

/// Read buffer per connection.
const READ_BUFFER: usize = 4 << 20;
/// The longest the loop sleeps: it looks at the run's stop flag this often.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// A due send closer than this is waited for by polling without sleeping.
const SPIN_BELOW: Duration = Duration::from_micros(1_500);

/// One connection: its socket, its peer state machine and its traffic.
struct Link<'s> {
    index: usize,
    stream: TcpStream,
    peer: Peer,
    conn: Conn<'s>,
    buf: Vec<u8>,
    filled: usize,
    /// Open loop: the time between two sends and the next send's time; the schedule
    /// starts when the peer is open (CER answered), `offset` after that.
    interval: Option<Duration>,
    next_due: Option<Instant>,
    offset: Duration,
    /// Open loop: a send fell due while the window was full; the sends that leave
    /// until the schedule is caught up were held by the window, not by the generator.
    held: bool,
    disconnecting: bool,
    done: bool,
}

impl<'s> Link<'s> {
    fn error(&mut self, what: String) {
        self.conn
            .report
            .connection_errors
            .push(format!("connection {}: {what}", self.index));
        self.done = true;
    }

    /// Sends what the window (and in open loop the schedule) allows; returns when the
    /// next scheduled send is due, if one waits on the clock.
    fn pump(&mut self, window: usize, ms: u64) -> Option<Instant> {
        if self.peer.state() != PeerState::Open || self.disconnecting {
            return None;
        }
        let mut wake = None;
        let mut now = Instant::now();
        let next_due = self.next_due.get_or_insert(now + self.offset);
        while self.conn.in_flight() < window {
            // Closed loop: one clock reading serves the whole batch; open loop: each
            // send's lag is read from the clock at that send.
            if self.interval.is_some() {
                now = Instant::now();
            }
            let due = match self.interval {
                Some(iv) => {
                    if *next_due > now {
                        self.held = false;
                        wake = Some(*next_due);
                        break;
                    }
                    let d = *next_due;
                    *next_due += iv;
                    d
                }
                None => now,
            };
            let Some(slot) = self.conn.next_session() else {
                if let Some(iv) = self.interval {
                    // No session free to send: the window holds this send.
                    *next_due -= iv;
                    self.held = true;
                }
                break;
            };
            if !self.conn.send(&mut self.peer, slot, due) {
                break;
            }
            if self.interval.is_some() {
                self.conn.record_lag(due, now, self.held);
            }
        }
        if self.interval.is_some() && self.conn.in_flight() >= window && *next_due <= Instant::now()
        {
            self.held = true;
        }
        if self.conn.idle() && self.conn.out_of_work() {
            self.disconnecting = true;
            self.peer.disconnect(disconnect_cause::REBOOTING, ms);
        }
        wake
    }

    /// Writes what the peer has queued, until the socket takes no more.
    fn flush(&mut self) {
        while !self.peer.transmit().is_empty() {
            match self.stream.write(self.peer.transmit()) {
                Ok(0) => return self.error("write: the socket took nothing".into()),
                Ok(n) => self.peer.transmitted(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.error(format!("write: {e}")),
            }
        }
    }

    /// Reads until the socket has nothing more, handling every whole message.
    fn read(&mut self, start: Instant) {
        loop {
            if self.filled == self.buf.len() {
                // A message larger than the buffer: no Gy answer is.
                return self.error("an answer larger than 4 MiB".into());
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    if !self.disconnecting {
                        self.error("the server closed the connection".into());
                    }
                    self.done = true;
                    return;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.error(format!("read: {e}")),
            }
            let now = Instant::now();
            let ms = now.duration_since(start).as_millis() as u64;
            let conn = &mut self.conn;
            // A Gy server sends no application requests to a client: only answers count.
            let at = self
                .peer
                .handle_all(&self.buf[..self.filled], ms, |_, kind, bytes| {
                    if kind == Incoming::Answer {
                        conn.on_answer(bytes, now);
                    }
                });
            self.buf.copy_within(at..self.filled, 0);
            self.filled -= at;
        }
    }
}

/// Runs the connections `indices` of `spec` until the run ends; one report each.
pub(crate) fn run_thread(
    spec: &RunSpec,
    indices: &[usize],
    live: &Live,
    stop: &AtomicBool,
    start: Instant,
    base: u32,
) -> Vec<RunReport> {
    let window = spec.window.max(1);
    let ms = |t: Instant| t.duration_since(start).as_millis() as u64;
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            let mut r = Conn::new_report();
            r.connection_errors.push(format!("epoll: {e}"));
            return vec![r];
        }
    };
    // This connection's share of the rate; the connections' schedules interleave.
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r.max(1e-3)));
    let mut links = Vec::with_capacity(indices.len());
    let mut failed = Vec::new();
    for &index in indices {
        let mut conn = Conn::new(spec, index, live, stop, start, base);
        let connected = std::net::TcpStream::connect_timeout(&spec.target, Duration::from_secs(5))
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(TcpStream::from_std(s))
            })
            .and_then(|mut s| {
                poll.registry().register(
                    &mut s,
                    Token(links.len()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
        let stream = match connected {
            Ok(s) => s,
            Err(e) => {
                conn.report.connection_errors.push(format!(
                    "connection {index}: connect to {}: {e}",
                    spec.target
                ));
                failed.push(conn.report);
                continue;
            }
        };
        let mut cfg = PeerConfig::new(&spec.origin_host, &spec.origin_realm);
        cfg.tx_buffer_bytes = 8 << 20;
        cfg.seed = index as u64;
        let now = Instant::now();
        let mut peer = Peer::initiator(cfg, ms(now));
        peer.connection_up(ms(now));
        let offset = interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64(index as f64 / spec.connections.max(1) as f64)
        });
        links.push(Link {
            index,
            stream,
            peer,
            conn,
            buf: vec![0u8; READ_BUFFER],
            filled: 0,
            interval,
            next_due: None,
            offset,
            held: false,
            disconnecting: false,
            done: false,
        });
    }
    let mut events = Events::with_capacity(links.len().max(1) * 2);
    let mut readable = vec![true; links.len()];
    loop {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut peer_wake: Option<u64> = None;
        for (i, l) in links.iter_mut().enumerate() {
            if l.done {
                continue;
            }
            if std::mem::take(&mut readable[i]) {
                l.read(start);
            }
            if let Some(t) = l.pump(window, ms(now)) {
                wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            }
            l.flush();
            if let Some(r) = l.peer.close_reason() {
                // Our own DPR answered is the normal end; anything else is reported.
                if !matches!(r, CloseReason::Disconnected) {
                    l.error(format!("closed: {r:?}"));
                }
                l.done = true;
                continue;
            }
            let t = ms(Instant::now());
            if l.peer.poll_timeout().is_some_and(|d| d <= t) {
                l.peer.handle_timeout(t);
                l.flush();
            }
            if let Some(d) = l.peer.poll_timeout() {
                peer_wake = Some(peer_wake.map_or(d, |w: u64| w.min(d)));
            }
            l.conn.scan_timeouts(now);
        }
        if links.iter().all(|l| l.done) {
            break;
        }
        // Sleep until the next due send (less a millisecond, then poll without
        // sleeping), a peer timer, or at most MAX_SLEEP.
        let now = Instant::now();
        let mut timeout = MAX_SLEEP;
        if let Some(d) = peer_wake {
            timeout = timeout.min(Duration::from_millis(d.saturating_sub(ms(now))));
        }
        if let Some(w) = wake {
            let gap = w.saturating_duration_since(now);
            timeout = if gap < SPIN_BELOW {
                Duration::ZERO
            } else {
                // Whole milliseconds (epoll's unit), at least one before the send.
                timeout.min(Duration::from_millis(
                    (gap - Duration::from_millis(1)).as_millis() as u64,
                ))
            };
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                for l in links.iter_mut().filter(|l| !l.done) {
                    l.error(format!("epoll: {e}"));
                }
                break;
            }
        }
        for ev in events.iter() {
            if let Some(r) = readable.get_mut(ev.token().0) {
                *r |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
            }
        }
    }
    let mut reports: Vec<RunReport> = links.into_iter().map(|l| l.conn.report).collect();
    reports.extend(failed);
    let elapsed = start.elapsed();
    for r in &mut reports {
        r.elapsed = elapsed;
    }
    reports
}
