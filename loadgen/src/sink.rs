//! `gyro-loadgen sink`: a Diameter server that only answers. Each connection runs the
//! same peer state machine and framing as gyro (CER/CEA, DWR/DWA, DPR/DPA) and answers
//! every CCR with 2001, echoing its identifiers and granting what each MSCC asked; no
//! balance, no log. It measures the load generator itself (what one core of it can
//! send) and this machine's loopback ceiling for a given framing and window, against
//! which a real server's figures are read.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::{encode_cca, AnswerMscc, Cca, Ccr};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Incoming, Peer, PeerConfig};

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

fn serve_connection(mut stream: TcpStream, answered: &AtomicU64, stop: &AtomicBool) {
    let start = Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut cfg = PeerConfig::new("sink.loadgen.gyro", "loadgen.gyro");
    cfg.tx_buffer_bytes = 8 << 20;
    let mut peer = Peer::responder(cfg, ms());
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
        let now = ms();
        let at = peer.handle_all(&buf[..filled], now, |peer, kind, bytes| {
            if kind == Incoming::Request {
                answer(peer, bytes);
                n += 1;
            }
        });
        buf.copy_within(at..filled, 0);
        filled -= at;
        if peer.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        while !peer.transmit().is_empty() {
            match stream.write(peer.transmit()) {
                Ok(k) => peer.transmitted(k),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        if n >= 4096 {
            answered.fetch_add(n, Ordering::Relaxed);
            n = 0;
        }
        if peer.close_reason().is_some() {
            break;
        }
    }
    answered.fetch_add(n, Ordering::Relaxed);
}

/// Serves on `listener` until `stop`, a thread per connection; returns the answers.
pub fn run(listener: TcpListener, stop: Arc<AtomicBool>) -> u64 {
    let answered = Arc::new(AtomicU64::new(0));
    let _ = listener.set_nonblocking(true);
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let (answered, stop) = (answered.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    serve_connection(s, &answered, &stop)
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                eprintln!("gyro-loadgen sink: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    answered.load(Ordering::Relaxed)
}
