//! `gyro-loadgen run` against real servers on loopback: the answering sink (closed and
//! open loop, the JSON report, the plot) and a server that answers wrongly, whose
//! answers the generator must flag.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gyro_engine::diameter::ccr::{encode_cca, Cca, Ccr};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Peer, PeerConfig, Step};
use gyro_loadgen::run::{run, RunSpec};

fn spec(target: std::net::SocketAddr) -> RunSpec {
    RunSpec {
        msisdns: Arc::new((0..100).map(gyro_loadgen::dataset::msisdn).collect()),
        connections: 2,
        window: 16,
        mix: "data=70,voice=10,sms=10,refund=10".parse().unwrap(),
        origin_host: "pgw.test".into(),
        origin_realm: "test".into(),
        destination_realm: "sink.test".into(),
        tx_timeout: Duration::from_secs(5),
        ..RunSpec::new(target, 1_000)
    }
}

fn start_sink() -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || gyro_loadgen::sink::run(listener, s));
    (addr, stop, h)
}

#[test]
fn closed_loop_sessions_are_all_answered_and_checked() {
    let (addr, stop, sink) = start_sink();
    let r = run(&spec(addr));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = sink.join().unwrap();
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
    assert_eq!(r.sessions_started, 1_000);
    assert_eq!(r.sessions_completed, 1_000);
    assert_eq!(r.answers, r.requests);
    assert_eq!(answered, r.requests, "the sink answered what was sent");
    // Data and voice sessions take 4 requests (I, U, U, T), events 1.
    assert!(r.requests > 2_000 && r.requests < 4_000, "{}", r.requests);
    assert_eq!(r.answers_by_result, vec![(2001, r.answers)]);

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let plot = dir.join(format!("plot-{}.svg", std::process::id()));
    gyro_loadgen::plot::svg(&r, "test", &plot).unwrap();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("latency by percentile"));
    let json = r.to_json(&spec(addr));
    for key in [
        "ccr_per_s",
        "answers",
        "check_failures",
        "timeouts",
        "latency_us",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    for key in ["p50", "p90", "p99", "p999", "max", "histogram"] {
        assert!(json["latency_us"].get(key).is_some(), "{key}");
    }
    assert_eq!(json["answers"]["2001"], r.answers);
}

#[test]
fn open_loop_keeps_its_schedule() {
    let (addr, stop, sink) = start_sink();
    let mut s = spec(addr);
    s.sessions = None;
    s.duration = Some(Duration::from_millis(1_500));
    s.rate = Some(2_000.0);
    let r = run(&s);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sink.join().unwrap();
    assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
    // 1.5 s at 2,000/s, give or take the start and the drain.
    assert!(
        (2_400..=3_300).contains(&r.requests),
        "{} requests at 2,000/s for 1.5 s",
        r.requests
    );
}

/// A server whose peer sends a DWR every 200 ms of silence and answers every CCR with
/// 2001; returns its peer statistics and why the connection ended.
fn watchful_server(
    listener: TcpListener,
) -> (
    gyro_engine::peer::PeerStats,
    Option<gyro_engine::peer::CloseReason>,
) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let start = std::time::Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let mut cfg = PeerConfig::new("watchful.test", "test");
    cfg.watchdog_tw_ms = 200;
    cfg.watchdog_jitter_ms = 0;
    let mut peer = Peer::responder(cfg, ms());
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => {}
        }
        let now = ms();
        let mut at = 0;
        loop {
            match peer.handle_bytes(&buf[at..filled], now) {
                Step::NeedMore | Step::Close => break,
                Step::Consumed(n) | Step::Answer(n) => at += n,
                Step::Request(n) => {
                    let msg = Message::new(&buf[at..at + n]).unwrap();
                    let c = Ccr::decode(&msg).unwrap();
                    let cca = Cca {
                        granted: c.requested,
                        ..Cca::answering(&c, 2001, "watchful.test", "test", &[])
                    };
                    peer.send_with(|b| encode_cca(&c.header, &cca, b)).unwrap();
                    at += n;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if peer.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        if stream.write_all(peer.transmit()).is_err() {
            break;
        }
        let n = peer.transmit().len();
        peer.transmitted(n);
        if peer.close_reason().is_some() {
            break;
        }
    }
    (*peer.stats(), peer.close_reason())
}

#[test]
fn the_generator_answers_watchdogs_and_says_goodbye_with_dpr() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || watchful_server(listener));
    let mut s = spec(addr);
    s.connections = 1;
    s.sessions = None;
    s.mix = "sms=100".parse().unwrap();
    // Two events a second: the link is silent long enough for DWRs in between.
    s.rate = Some(2.0);
    s.duration = Some(Duration::from_millis(1_600));
    let r = run(&s);
    let (stats, closed) = server.join().unwrap();
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
    assert!(r.answers >= 2, "{r:?}");
    assert!(stats.dwr_sent >= 2, "{stats:?}");
    assert_eq!(
        stats.dwa_received, stats.dwr_sent,
        "every DWR answered: {stats:?}"
    );
    assert!(
        matches!(
            closed,
            Some(gyro_engine::peer::CloseReason::PeerDisconnected(_))
        ),
        "{closed:?}"
    );
}

/// A server that answers every CCR with a CC-Request-Number one too high.
fn wrong_server(listener: TcpListener) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut peer = Peer::responder(PeerConfig::new("bad.test", "test"), 0);
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return,
            Ok(n) => filled += n,
            Err(_) => {}
        }
        let mut at = 0;
        loop {
            match peer.handle_bytes(&buf[at..filled], 0) {
                Step::NeedMore | Step::Close => break,
                Step::Consumed(n) | Step::Answer(n) => at += n,
                Step::Request(n) => {
                    let msg = Message::new(&buf[at..at + n]).unwrap();
                    let mut c = Ccr::decode(&msg).unwrap();
                    c.request_number += 1;
                    let cca = Cca::answering(&c, 2001, "bad.test", "test", &[]);
                    peer.send_with(|b| encode_cca(&c.header, &cca, b)).unwrap();
                    at += n;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if stream.write_all(peer.transmit()).is_err() || peer.close_reason().is_some() {
            return;
        }
        let n = peer.transmit().len();
        peer.transmitted(n);
    }
}

#[test]
fn wrong_answers_are_check_failures() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || wrong_server(listener));
    let mut s = spec(addr);
    s.connections = 1;
    s.sessions = Some(50);
    let r = run(&s);
    server.join().unwrap();
    assert!(r.check_failures >= 50, "{r:?}");
    assert!(
        r.failures.iter().any(|f| f.contains("CC-Request-Number")),
        "{:?}",
        r.failures
    );
}

#[test]
fn a_refused_connection_is_reported() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(&spec(port));
    assert_eq!(r.answers, 0);
    assert!(
        r.connection_errors.iter().any(|e| e.contains("connect")),
        "{:?}",
        r.connection_errors
    );
}
