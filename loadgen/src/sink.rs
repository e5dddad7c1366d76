//! `gyro-loadgen sink`: a Diameter server that only answers. Each connection runs the
//! same peer state machine and framing as gyro (CER/CEA, DWR/DWA, DPR/DPA) and answers
//! every CCR with 2001, echoing its identifiers and granting what each MSCC asked; no
//! balance, no log. All connections share one thread's event loop (epoll through mio),
//! so that one core answers as fast as it can without threads preempting each other.
//! It measures the load generator itself (what one core of it can
//! send) and this machine's loopback ceiling for a given framing and window, against
//! which a real server's figures are read.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::{encode_cca, AnswerMscc, Cca, Ccr};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Incoming, Peer, PeerConfig};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Answers one CCR: 2001, the requested units granted per MSCC (or at the top level).
fn answer(peer: &mut Peer, bytes: &[u8]) {
    let Some(msg) = Message::new(bytes) else {
        return;
    };
    match Ccr::decode(&msg) {
        Ok(c) => {
            let mut mscc = [AnswerMscc::default(); 8];
            for (slot, m) in mscc.iter_mut().zip(c.mscc()) {
                *slot = AnswerMscc {
                    rating_group: m.rating_group,
                    service_identifier: m.service_identifier,
                    result_code: 2001,
                    granted: m.requested,
                    validity_time_s: m.requested.map(|_| 600),
                    ..AnswerMscc::default()
                };
            }
            let cca = Cca {
                granted: if c.mscc().is_empty() {
                    c.requested
                } else {
                    None
                },
                ..Cca::answering(
                    &c,
                    2001,
                    "sink.loadgen.gyro",
                    "loadgen.gyro",
                    &mscc[..c.mscc().len()],
                )
            };
            let _ = peer.send_with(|b| encode_cca(&c.header, &cca, b));
        }
        Err(e) => peer.send_error(bytes, &e),
    }
}

/// One connection of the sink.
struct SinkConn {
    stream: TcpStream,
    peer: Peer,
    buf: Vec<u8>,
    filled: usize,
}

impl SinkConn {
    /// Reads and answers until the socket has nothing more; false when the connection
    /// is over (closed by the client, an error, or the peer state machine).
    fn serve(&mut self, now_ms: u64, answered: &mut u64) -> bool {
        loop {
            if self.filled == self.buf.len() {
                return false;
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return false,
                Ok(k) => self.filled += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
            let at = self
                .peer
                .handle_all(&self.buf[..self.filled], now_ms, |peer, kind, bytes| {
                    if kind == Incoming::Request {
                        answer(peer, bytes);
                        *answered += 1;
                    }
                });
            self.buf.copy_within(at..self.filled, 0);
            self.filled -= at;
            // Answer as soon as a read's requests are handled.
            if !self.flush() {
                return false;
            }
        }
        self.flush() && self.peer.close_reason().is_none()
    }

    /// Writes what the peer has queued until the socket takes no more.
    fn flush(&mut self) -> bool {
        while !self.peer.transmit().is_empty() {
            match self.stream.write(self.peer.transmit()) {
                Ok(0) => return false,
                Ok(k) => self.peer.transmitted(k),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Serves on `listener` until `stop`, every connection on this thread's event loop
/// (epoll through mio); returns the answers.
pub fn run(listener: TcpListener, stop: Arc<AtomicBool>) -> u64 {
    const LISTENER: Token = Token(usize::MAX);
    let start = Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let mut answered = 0u64;
    let setup = listener.set_nonblocking(true).and_then(|()| {
        let mut l = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut l, LISTENER, Interest::READABLE)?;
        Ok((l, poll))
    });
    let (listener, mut poll) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("gyro-loadgen sink: epoll: {e}");
            return 0;
        }
    };
    let mut conns: Vec<Option<SinkConn>> = Vec::new();
    let mut events = Events::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() != ErrorKind::Interrupted {
                eprintln!("gyro-loadgen sink: epoll: {e}");
                break;
            }
        }
        let now = ms();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let slot = conns
                                .iter()
                                .position(Option::is_none)
                                .unwrap_or(conns.len());
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                continue;
                            }
                            let mut cfg = PeerConfig::new("sink.loadgen.gyro", "loadgen.gyro");
                            cfg.tx_buffer_bytes = 8 << 20;
                            let c = SinkConn {
                                stream,
                                peer: Peer::responder(cfg, now),
                                buf: vec![0u8; 4 << 20],
                                filled: 0,
                            };
                            if slot == conns.len() {
                                conns.push(Some(c));
                            } else {
                                conns[slot] = Some(c);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("gyro-loadgen sink: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let slot = ev.token().0;
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if !c.serve(now, &mut answered) {
                let _ = poll.registry().deregister(&mut c.stream);
                conns[slot] = None;
            }
        }
        // The watchdog and other peer timers.
        for entry in conns.iter_mut() {
            let Some(c) = entry.as_mut() else {
                continue;
            };
            if c.peer.poll_timeout().is_some_and(|t| t <= now) {
                c.peer.handle_timeout(now);
                if !c.flush() || c.peer.close_reason().is_some() {
                    let _ = poll.registry().deregister(&mut c.stream);
                    *entry = None;
                }
            }
        }
    }
    answered
}
