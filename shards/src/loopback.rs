//! A blocking, one-thread-per-side Diameter exchange over a loopback TCP socket: a
//! server peer (gyro's responder) and a client peer (gyro's initiator), each the
//! engine's state machine around a `std::net::TcpStream`. It exercises the real codec
//! and peer paths end to end for `gyro demo`; the production server is the sharded
//! runtime.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::diameter::ccr::{
    encode_cca, encode_ccr, sample_ccr_update, AnswerMscc, Cca, Ccr, RequestType,
};
use gyro_engine::diameter::{Header, Message};
use gyro_engine::peer::{CloseReason, Peer, PeerConfig, Step};

/// What one run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub requests_sent: u64,
    pub answers_received: u64,
    pub answers_by_result: Vec<(u32, u64)>,
    pub elapsed: Duration,
    pub server_close: Option<CloseReason>,
    pub client_close: Option<CloseReason>,
    pub dwr_answered_by_server: u64,
}

/// Counts an answer by its Result-Code (0 when it has none).
pub(crate) fn tally_result(bytes: &[u8], by_result: &mut Vec<(u32, u64)>) {
    let code = Message::new(bytes)
        .and_then(|m| {
            m.avps()
                .flatten()
                .find(|a| a.code == 268 && a.vendor_id == 0)
                .and_then(|a| a.u32().ok())
        })
        .unwrap_or(0);
    match by_result.iter_mut().find(|(c, _)| *c == code) {
        Some((_, n)) => *n += 1,
        None => by_result.push((code, 1)),
    }
}

pub(crate) fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Runs one Peer over one stream until it must close or `stop` says so. Requests go to
/// `on_request`, answers to `on_answer`; `tick` runs each loop turn (to send more).
pub(crate) fn run_peer(
    stream: &mut TcpStream,
    peer: &mut Peer,
    start: Instant,
    mut on_request: impl FnMut(&mut Peer, &[u8]),
    mut on_answer: impl FnMut(&[u8]),
    mut tick: impl FnMut(&mut Peer, u64) -> bool,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0usize;
    loop {
        if !tick(peer, now_ms(start)) {
            return Ok(());
        }
        while !peer.transmit().is_empty() {
            let n = stream.write(peer.transmit())?;
            peer.transmitted(n);
        }
        if peer.close_reason().is_some() {
            return Ok(());
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
        let mut at = 0;
        loop {
            match peer.handle_bytes(&buf[at..filled], now_ms(start)) {
                Step::NeedMore | Step::Close => break,
                Step::Consumed(n) => at += n,
                Step::Request(n) => {
                    on_request(peer, &buf[at..at + n]);
                    at += n;
                }
                Step::Answer(n) => {
                    on_answer(&buf[at..at + n]);
                    at += n;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if peer.poll_timeout().is_some_and(|t| t <= now_ms(start)) {
            peer.handle_timeout(now_ms(start));
        }
    }
}

/// The server side answers each CCR by decoding it and granting what each MSCC asked
/// for. This is the codec's stand-in for the charging core: no balance is consulted.
fn answer_ccr(peer: &mut Peer, bytes: &[u8], origin_host: &str, origin_realm: &str) {
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
            let cca = Cca::answering(&c, 2001, origin_host, origin_realm, &mscc[..c.mscc().len()]);
            // A full transmit buffer marks the peer as a slow reader; it is then closed.
            let _ = peer.send_with(|b| encode_cca(&c.header, &cca, b));
        }
        Err(e) => peer.send_error(bytes, &e),
    }
}

/// Runs `requests` CCR-Us (with `window` in flight) from a client peer to a server peer
/// over loopback TCP, then a DPR/DPA, and reports.
pub fn run(requests: u64, window: u64) -> std::io::Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    let start = Instant::now();
    let server = std::thread::spawn(move || -> std::io::Result<(Option<CloseReason>, u64)> {
        let (mut stream, _) = listener.accept()?;
        let (host, realm) = ("ocs.gyro.demo", "gyro.demo");
        let mut peer = Peer::responder(PeerConfig::new(host, realm), now_ms(start));
        let answer = |peer: &mut Peer, bytes: &[u8]| answer_ccr(peer, bytes, host, realm);
        run_peer(&mut stream, &mut peer, start, answer, |_| {}, |_, _| true)?;
        Ok((peer.close_reason(), peer.stats().dwr_received))
    });

    let mut stream = TcpStream::connect(addr)?;
    let mut cfg = PeerConfig::new("pgw.gyro.demo", "gyro.demo");
    cfg.watchdog_tw_ms = 200;
    cfg.watchdog_jitter_ms = 0;
    let mut client = Peer::initiator(cfg, now_ms(start));
    client.connection_up(now_ms(start));

    let template = sample_ccr_update();
    let mut sent = 0u64;
    // Shared by the answer handler and the sender.
    let received = std::cell::Cell::new(0u64);
    let mut by_result: Vec<(u32, u64)> = Vec::new();
    let mut disconnecting = false;
    let mut session = String::new();
    run_peer(
        &mut stream,
        &mut client,
        start,
        |_, _| {},
        |bytes| {
            received.set(received.get() + 1);
            tally_result(bytes, &mut by_result);
        },
        |peer, now| {
            if peer.state() != gyro_engine::peer::PeerState::Open {
                return peer.close_reason().is_none();
            }
            while sent < requests && sent - received.get() < window {
                let (h2h, e2e) = peer.next_ids();
                session.clear();
                session.push_str("pgw.gyro.demo;1;");
                session.push_str(&(sent / 4).to_string());
                let mut c = template;
                c.session_id = &session;
                c.header = Header {
                    hop_by_hop: h2h,
                    end_to_end: e2e,
                    ..c.header
                };
                c.request_number = (sent % 4) as u32;
                c.request_type = match sent % 4 {
                    0 => RequestType::Initial,
                    3 => RequestType::Termination,
                    _ => RequestType::Update,
                };
                if peer.send_with(|b| encode_ccr(&c, b)).is_err() {
                    return false;
                }
                sent += 1;
            }
            if received.get() >= requests && !disconnecting {
                disconnecting = true;
                peer.disconnect(disconnect_cause::REBOOTING, now);
            }
            true
        },
    )?;
    let elapsed = start.elapsed();
    let (server_close, dwr) = server
        .join()
        .map_err(|_| std::io::Error::other("server thread panicked"))??;
    by_result.sort_unstable();
    Ok(Report {
        requests_sent: sent,
        answers_received: received.get(),
        answers_by_result: by_result,
        elapsed,
        server_close,
        client_close: client.close_reason(),
        dwr_answered_by_server: dwr,
    })
}
