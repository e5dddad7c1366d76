//! The rows of the conformance table that concern a live connection, against the
//! `gyro serve` process over real sockets: framing that cannot be trusted, a message
//! that never completes, byte-by-byte arrival, a first message that is not a CER,
//! unknown peers, no common application, a silent peer, a peer that stops reading,
//! and overload.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{temp_dir, Client, Server};
use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Peer, PeerConfig};

fn server_with(name: &str, toml: &str, extra: &[&str]) -> Server {
    let conf = temp_dir(&format!("{name}-conf")).join("gyro.toml");
    std::fs::write(&conf, toml).unwrap();
    let mut args = vec!["--config", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(name, &args, &[])
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// The CER a client peer with this Origin-Host sends.
fn cer(origin_host: &str) -> Vec<u8> {
    let mut p = Peer::initiator(PeerConfig::new(origin_host, "test"), 0);
    p.connection_up(0);
    p.transmit().to_vec()
}

/// Reads one whole message, or `None` if the connection closed or `limit` passed.
fn read_message(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let until = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < until {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
            if len >= 20 && buf.len() >= len {
                return Some(buf[..len].to_vec());
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Whether the server closes the connection within `limit` (reading and dropping
/// whatever it sends before).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    while Instant::now() < until {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn result_code(msg: &[u8]) -> Option<u32> {
    Message::new(msg)?
        .avps()
        .flatten()
        .find(|a| a.code == 268 && a.vendor_id == 0)
        .and_then(|a| a.u32().ok())
}

/// A connection past CER/CEA.
fn open(addr: SocketAddr, host: &str) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(&cer(host)).unwrap();
    let cea = read_message(&mut s, Duration::from_secs(5)).expect("a CEA");
    assert_eq!(result_code(&cea), Some(2001));
    s
}

fn ccr_bytes(session: &str, msisdn: &str, t: RequestType, number: u32, h2h: u32) -> Vec<u8> {
    ccr_for_group(session, msisdn, t, number, h2h, 10)
}

/// `n` CCR-EVENTs of one subscriber back to back (Session-Ids `prefix;0`, `prefix;1`,
/// ..., Hop-by-Hop 1 to `n`), to send in one write.
fn events(prefix: &str, msisdn: &str, n: u32) -> Vec<u8> {
    let mut all = Vec::new();
    for i in 0..n {
        all.extend_from_slice(&ccr_bytes(
            &format!("{prefix};{i}"),
            msisdn,
            RequestType::Event,
            0,
            i + 1,
        ));
    }
    all
}

fn ccr_for_group(
    session: &str,
    msisdn: &str,
    t: RequestType,
    number: u32,
    h2h: u32,
    rating_group: u32,
) -> Vec<u8> {
    let mut c = Ccr {
        session_id: session,
        origin_host: "pgw.live",
        origin_realm: "test",
        destination_realm: "gyro.local",
        service_context_id: "32251@3gpp.org",
        request_type: t,
        request_number: number,
        subscription_id_count: 1,
        mscc_count: 1,
        ..Ccr::default()
    };
    c.header.hop_by_hop = h2h;
    c.header.end_to_end = h2h;
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: msisdn,
    };
    c.mscc[0] = Mscc {
        rating_group: Some(rating_group),
        requested: Some(Units {
            total_octets: Some(1 << 20),
            ..Units::default()
        }),
        ..Mscc::default()
    };
    let mut buf = vec![0u8; 4096];
    let n = encode_ccr(&c, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn row_2_a_length_below_the_header_closes_the_connection() {
    let server = server_with("row2", "", &[]);
    let mut s = connect(server.diameter);
    let mut h = cer("pgw.live")[..20].to_vec();
    h[1..4].copy_from_slice(&[0, 0, 12]);
    s.write_all(&h).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn row_6_a_length_above_the_maximum_closes_without_buffering() {
    let server = server_with("row6", "", &[]);
    let mut s = open(server.diameter, "pgw.live");
    let mut h = ccr_bytes("s;6", "491700000001", RequestType::Initial, 0, 6)[..20].to_vec();
    h[1..4].copy_from_slice(&[0x10, 0, 0]); // 1 MiB, above 64 KiB
    s.write_all(&h).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn row_4_a_message_that_never_completes_is_dropped_at_the_frame_deadline() {
    let server = server_with("row4", "frame_deadline_ms = 500\n", &[]);
    let mut s = open(server.diameter, "pgw.live");
    let req = ccr_bytes("s;4", "491700000001", RequestType::Initial, 0, 4);
    s.write_all(&req[..40]).unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "not before the deadline"
    );
}

#[test]
fn row_30_a_request_arriving_byte_by_byte_is_answered() {
    let server = server_with("row30", "", &[]);
    let mut s = open(server.diameter, "pgw.live");
    s.set_nodelay(true).unwrap();
    let req = ccr_bytes("s;30", "491700000001", RequestType::Initial, 0, 30);
    for b in &req {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let cca = read_message(&mut s, Duration::from_secs(5)).expect("a CCA");
    assert_eq!(result_code(&cca), Some(2001));
    assert_eq!(Message::new(&cca).unwrap().header.hop_by_hop, 30);
}

#[test]
fn a_first_message_that_is_not_a_cer_closes_the_connection() {
    let server = server_with("nocer", "", &[]);
    let mut s = connect(server.diameter);
    s.write_all(&ccr_bytes(
        "s;n",
        "491700000001",
        RequestType::Initial,
        0,
        1,
    ))
    .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn an_unknown_peer_gets_cea_3010_and_is_closed() {
    let server = server_with("unknown", "allowed_peers = [\"pgw.allowed\"]\n", &[]);
    let mut s = connect(server.diameter);
    s.write_all(&cer("pgw.stranger")).unwrap();
    let cea = read_message(&mut s, Duration::from_secs(5)).expect("a CEA");
    assert_eq!(result_code(&cea), Some(3010));
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    // The allowed one gets in.
    let _ = open(server.diameter, "pgw.allowed");
}

#[test]
fn a_peer_without_credit_control_gets_cea_5010_and_is_closed() {
    let server = server_with("noapp", "", &[]);
    // The CER with every Auth-Application-Id changed from 4 to Gx (16777238).
    let mut req = cer("pgw.gx");
    let msg = Message::new(&req).unwrap();
    let mut at = Vec::new();
    let mut stack = vec![msg.avps()];
    while let Some(it) = stack.last_mut() {
        match it.next() {
            Some(Ok(a)) if a.code == 258 => at.push(a.offset as usize + 8),
            Some(Ok(a)) if a.code == 260 => stack.push(a.group()),
            Some(_) => {}
            None => {
                stack.pop();
            }
        }
    }
    assert!(!at.is_empty());
    for o in at {
        req[o..o + 4].copy_from_slice(&16_777_238u32.to_be_bytes());
    }
    let mut s = connect(server.diameter);
    s.write_all(&req).unwrap();
    let cea = read_message(&mut s, Duration::from_secs(5)).expect("a CEA");
    assert_eq!(result_code(&cea), Some(5010));
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}

#[test]
fn a_silent_peer_gets_watchdogs_and_is_closed() {
    let server = server_with("silent", "watchdog_ms = 1000\n", &[]);
    let mut s = open(server.diameter, "pgw.live");
    // A DWR comes after Tw of silence; the peer never answers it.
    let dwr = read_message(&mut s, Duration::from_secs(5)).expect("a DWR");
    let m = Message::new(&dwr).unwrap();
    assert_eq!((m.header.command, m.header.is_request()), (280, true));
    // SUSPECT after another Tw without a DWA, then DOWN: the connection goes.
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    // Operators see each step in the log.
    std::thread::sleep(Duration::from_millis(100));
    let lines: Vec<String> = server.stderr.try_iter().collect();
    for said in [
        "watchdog: the peer is suspect",
        "watchdog: the peer is down",
        "connection closed: the watchdog declared the peer DOWN",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(said) && l.contains("pgw.live")),
            "{said}: {lines:#?}"
        );
    }
}

#[test]
fn a_peer_that_stops_reading_is_cut_off_and_the_others_are_not() {
    let server = server_with("slow", "tx_buffer_bytes = 65536\n", &[]);
    let mut slow = open(server.diameter, "pgw.slow");
    slow.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // Requests without ever reading an answer: far more answers than any buffer.
    let mut flood = Vec::new();
    for i in 0..200u32 {
        flood.extend_from_slice(&ccr_bytes(
            &format!("slow;{i}"),
            "491700000002",
            RequestType::Event,
            0,
            i,
        ));
    }
    let fast = std::thread::spawn({
        let addr = server.diameter;
        move || {
            let mut c = Client::connect(addr, "pgw.fast");
            for i in 0..200u32 {
                let sid = format!("fast;{i}");
                let a = c.ccr(&sid, "491700000003", RequestType::Initial, 0, 0, true);
                assert_eq!(a.result_code, 2001);
                let a = c.ccr(
                    &sid,
                    "491700000003",
                    RequestType::Termination,
                    1,
                    1 << 20,
                    false,
                );
                assert_eq!(a.result_code, 2001);
            }
        }
    });
    let t0 = Instant::now();
    let mut cut = false;
    while t0.elapsed() < Duration::from_secs(30) {
        if slow.write_all(&flood).is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow reader was never cut off");
    fast.join().expect("the other peer was served all along");
}

#[test]
fn overload_is_answered_3004() {
    let server = server_with("overload", "sessions_max = 5\n", &[]);
    let mut c = Client::connect(server.diameter, "pgw.busy");
    for i in 0..5 {
        let a = c.ccr(
            &format!("busy;{i}"),
            "491700000004",
            RequestType::Initial,
            0,
            0,
            true,
        );
        assert_eq!(a.result_code, 2001);
    }
    let a = c.ccr("busy;5", "491700000004", RequestType::Initial, 0, 0, true);
    assert_eq!(a.result_code, 3004, "{a:?}");
    // A session ends, a new one fits.
    let a = c.ccr(
        "busy;0",
        "491700000004",
        RequestType::Termination,
        1,
        1 << 20,
        false,
    );
    assert_eq!(a.result_code, 2001);
    let a = c.ccr("busy;6", "491700000004", RequestType::Initial, 0, 0, true);
    assert_eq!(a.result_code, 2001);
}

#[test]
fn a_rating_group_without_a_tariff_gets_5031_naming_it_in_failed_avp() {
    let server = server_with("rating", "", &[]);
    let mut s = open(server.diameter, "pgw.live");
    // The built-in dataset prices rating groups 10, 20 and 100 only.
    let req = ccr_for_group("s;5031", "491700000001", RequestType::Initial, 0, 7, 99);
    s.write_all(&req).unwrap();
    let cca = read_message(&mut s, Duration::from_secs(5)).expect("a CCA");
    let msg = Message::new(&cca).unwrap();
    assert_eq!(result_code(&cca), Some(5031));
    let failed = msg
        .avps()
        .flatten()
        .find(|a| a.code == 279)
        .expect("a Failed-AVP");
    let inner: Vec<_> = failed.group().flatten().collect();
    assert_eq!(inner.len(), 1);
    assert_eq!(
        (inner[0].code, inner[0].u32().unwrap()),
        (432, 99),
        "the Rating-Group"
    );
    // Byte for byte the request's AVP.
    let in_request = Message::new(&req)
        .unwrap()
        .avps()
        .flatten()
        .find(|a| a.code == 456)
        .unwrap()
        .group()
        .flatten()
        .find(|a| a.code == 432)
        .unwrap();
    assert_eq!(inner[0].raw(), in_request.raw());
}

#[test]
fn a_connection_silent_before_its_cer_is_closed() {
    let server = server_with("idle", "capabilities_timeout_ms = 300\n", &[]);
    let mut s = connect(server.diameter);
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(t0.elapsed() >= Duration::from_millis(250));
}

#[test]
fn connections_beyond_the_maximum_are_refused_and_the_others_kept() {
    let server = server_with("storm", "connections_max = 2\n", &[]);
    let mut a = open(server.diameter, "pgw.a");
    let _b = open(server.diameter, "pgw.b");
    let mut c = connect(server.diameter);
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "the third is refused"
    );
    // The first two still work.
    a.write_all(&ccr_bytes(
        "storm;1",
        "491700000001",
        RequestType::Initial,
        0,
        1,
    ))
    .unwrap();
    let cca = read_message(&mut a, Duration::from_secs(5)).expect("a CCA");
    assert_eq!(result_code(&cca), Some(2001));
}

/// The messages the server sends, one at a time.
struct Inbox {
    buf: Vec<u8>,
    filled: usize,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            buf: vec![0u8; 1 << 20],
            filled: 0,
        }
    }

    /// The next whole message, reading for it no longer than the socket's read timeout:
    /// `Ok(None)` when none is whole yet, `Err(())` when the server closed.
    fn next(&mut self, s: &mut TcpStream) -> Result<Option<Vec<u8>>, ()> {
        loop {
            if self.filled >= 20 {
                let b = &self.buf;
                let len = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
                if self.filled >= len {
                    let m = self.buf[..len].to_vec();
                    self.buf.copy_within(len..self.filled, 0);
                    self.filled -= len;
                    return Ok(Some(m));
                }
            }
            match s.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err(()),
                Ok(n) => self.filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(_) => return Err(()),
            }
        }
    }
}

/// Reads answers until `expected` have come, the server closes, or `limit` passes;
/// returns how many came and whether the server closed.
fn count_answers(s: &mut TcpStream, expected: usize, limit: Duration) -> (usize, bool) {
    let until = Instant::now() + limit;
    let mut inbox = Inbox::new();
    let mut answers = 0;
    while answers < expected && Instant::now() < until {
        match inbox.next(s) {
            Err(()) => return (answers, true),
            // Answers (R bit clear) to our requests; a DWR would be a request.
            Ok(Some(m)) if m[4] & 0x80 == 0 => answers += 1,
            Ok(_) => {}
        }
    }
    (answers, false)
}

/// A peer that sends its last requests and closes its side of the connection at once
/// (TCP half-close) still gets every answer before gyro closes: requests read in the
/// same turn as the end of the stream are answered, not dropped.
#[test]
fn a_peer_that_half_closes_after_its_requests_gets_every_answer() {
    let server = Server::start("half-close", &[], &[]);
    let mut s = open(server.diameter, "pgw.half");
    let n = 2_000u32;
    let all = events("half", "491700000005", n);
    s.write_all(&all).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (answers, _) = count_answers(&mut s, n as usize, Duration::from_secs(20));
    assert_eq!(answers, n as usize, "answers before gyro closed");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)),
        "gyro closes after the answers"
    );
}

/// A peer that pipelines far more requests than its answers' transmit buffer holds,
/// while reading its answers as fast as it can, is slowed down (gyro stops reading
/// while its answers wait), not cut off as a slow reader.
#[test]
fn a_peer_that_sends_faster_than_it_reads_is_slowed_down_not_cut_off() {
    let server = Server::start("pipeline", &[], &[]);
    let s = open(server.diameter, "pgw.pipeline");
    let n = 40_000u32;
    let all = events("pipe", "491700000006", n);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).is_ok());
    let mut r = s;
    let (answers, closed) = count_answers(&mut r, n as usize, Duration::from_secs(60));
    assert!(writer.join().unwrap(), "gyro took every request");
    assert!(!closed, "gyro cut the peer off after {answers} answers");
    assert_eq!(answers, n as usize);
}

/// SIGTERM: an open peer gets a DPR with Disconnect-Cause REBOOTING, its DPA is taken,
/// a request sent just before the signal is answered, and gyro closes the connection
/// and exits 0.
#[test]
fn sigterm_sends_every_open_peer_a_dpr_and_stops_after_the_dpa() {
    let server = Server::start("sigterm", &[], &[]);
    let mut s = connect(server.diameter);
    let mut peer = Peer::initiator(PeerConfig::new("pgw.stop", "test"), 0);
    peer.connection_up(0);
    s.write_all(peer.transmit()).unwrap();
    let n = peer.transmit().len();
    peer.transmitted(n);
    let client = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut inbox = Inbox::new();
        let (mut dpr_cause, mut answers, mut sent) = (None, 0, false);
        loop {
            // Once open: one CCR-EVENT, then wait for what the stop brings.
            if peer.state() == gyro_engine::peer::PeerState::Open && !sent {
                s.write_all(&ccr_bytes(
                    "stop;1",
                    "491700000008",
                    RequestType::Event,
                    0,
                    7,
                ))
                .unwrap();
                sent = true;
            }
            if !peer.transmit().is_empty() {
                let _ = s.write_all(peer.transmit());
                let n = peer.transmit().len();
                peer.transmitted(n);
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "gyro did not close");
            let msg = match inbox.next(&mut s) {
                Err(()) => return (dpr_cause, answers),
                Ok(None) => continue,
                Ok(Some(m)) => m,
            };
            let code = u32::from_be_bytes([0, msg[5], msg[6], msg[7]]);
            if code == 282 && msg[4] & 0x80 != 0 {
                dpr_cause = Message::new(&msg)
                    .and_then(|m| m.avps().flatten().find(|a| a.code == 273))
                    .and_then(|a| a.u32().ok());
            }
            if code == 272 && msg[4] & 0x80 == 0 {
                answers += 1;
            }
            // The peer state machine answers the DPR (and takes the CEA).
            let _ = peer.handle_bytes(&msg, t0.elapsed().as_millis() as u64);
        }
    });
    // The CER/CEA and the request go first.
    std::thread::sleep(Duration::from_millis(500));
    let (ok, lines) = server.stop();
    let (cause, answers) = client.join().unwrap();
    assert_eq!(cause, Some(0), "a DPR with Disconnect-Cause REBOOTING (0)");
    assert_eq!(answers, 1, "the request sent before the stop was answered");
    assert!(ok, "exit status on SIGTERM: {lines:#?}");
}
