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
use gyro_loadgen::run::{run, EventForm, RunSpec};

/// The tests that put load on the machine take turns: the schedule-lag test measures
/// the generator's timing, which two other runs on a 2-core machine would disturb.
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let _turn = turn();
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
    let _turn = turn();
    // The lag measures the generator's own timing on a shared 2-core machine, where
    // another process may take the core for a millisecond: every run must be whole and
    // correct, and the best of up to three must keep the schedule.
    let mut lags = Vec::new();
    let (r, s, lag) = loop {
        let (addr, stop, sink) = start_sink();
        let mut s = spec(addr);
        s.sessions = None;
        s.window = 64;
        s.duration = Some(Duration::from_millis(1_500));
        s.rate = Some(20_000.0);
        let r = run(&s);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sink.join().unwrap();
        assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
        assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
        // 1.5 s at 20,000/s, give or take the start and the drain.
        assert!(
            (27_000..=33_000).contains(&r.requests),
            "{} requests at 20,000/s for 1.5 s",
            r.requests
        );
        // Every send was measured: late by the generator, or held by the window.
        assert_eq!(r.schedule_lag.len() + r.held_by_window, r.requests);
        let lag = r.schedule_lag.value_at_quantile(0.99);
        lags.push(lag);
        if lag < 1_000 || lags.len() == 3 {
            break (r, s, lag);
        }
    };
    assert!(
        lag < 1_000,
        "schedule lag p99 at 20,000/s over three runs: {lags:?} us"
    );
    let json = r.to_json(&s);
    for key in ["p50", "p99", "p999", "max", "sends", "held_by_window"] {
        assert!(
            json["schedule_lag_us"].get(key).is_some(),
            "{key} in {json}"
        );
    }
    assert_eq!(json["schedule_lag_us"]["p99"], lag);
    let plot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("open-plot-{}.svg", std::process::id()));
    gyro_loadgen::plot::svg(&r, "open loop", &plot).unwrap();
    assert!(std::fs::read_to_string(&plot)
        .unwrap()
        .contains("schedule lag p99"));
}

#[test]
fn one_thread_drives_several_connections() {
    let _turn = turn();
    let (addr, stop, sink) = start_sink();
    let s = RunSpec {
        connections: 4,
        threads: 2,
        ..spec(addr)
    };
    let r = run(&s);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = sink.join().unwrap();
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
    assert_eq!(r.sessions_completed, 1_000);
    assert_eq!(answered, r.requests);
    // Closed loop: nothing is scheduled, so nothing is late.
    assert!(r.schedule_lag.is_empty());
}

/// What the events of a run looked like on the wire: for each CCR-EVENT, its top-level
/// Service-Identifier and Requested-Service-Unit, and those of its MSCC.
#[derive(Debug, Default, PartialEq)]
struct EventShape {
    top_level_service: Option<u32>,
    top_level_units: Option<u64>,
    mscc: Vec<(Option<u32>, Option<u64>)>,
}

/// A server on one connection that answers each CCR with the Result-Code `answer`
/// gives (which may change the decoded request before it is answered); returns when
/// the client goes.
fn answering_server(listener: TcpListener, mut answer: impl FnMut(&mut Ccr<'_>) -> u32) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut peer = Peer::responder(PeerConfig::new("answering.test", "test"), 0);
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
                    let code = answer(&mut c);
                    let cca = Cca::answering(&c, code, "answering.test", "test", &[]);
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

/// A server that answers every CCR with 2001 and records each event's shape.
fn recording_server(listener: TcpListener) -> Vec<EventShape> {
    let mut shapes = Vec::new();
    answering_server(listener, |c| {
        if c.request_type == gyro_engine::diameter::ccr::RequestType::Event {
            shapes.push(EventShape {
                top_level_service: c.service_identifier,
                top_level_units: c.requested.and_then(|u| u.service_specific),
                mscc: c
                    .mscc()
                    .iter()
                    .map(|m| {
                        (
                            m.service_identifier,
                            m.requested.and_then(|u| u.service_specific),
                        )
                    })
                    .collect(),
            });
        }
        2001
    });
    shapes
}

#[test]
fn events_are_sent_in_the_3gpp_form_or_at_the_top_level() {
    for (form, want) in [
        (
            EventForm::ThreeGpp,
            EventShape {
                mscc: vec![(Some(gyro_loadgen::dataset::SMS_SERVICE_IDENTIFIER), Some(1))],
                ..EventShape::default()
            },
        ),
        (
            EventForm::TopLevel,
            EventShape {
                top_level_service: Some(gyro_loadgen::dataset::SMS_SERVICE_IDENTIFIER),
                top_level_units: Some(1),
                mscc: vec![],
            },
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || recording_server(listener));
        let s = RunSpec {
            connections: 1,
            sessions: Some(20),
            mix: "sms=1,refund=1".parse().unwrap(),
            event_form: form,
            ..spec(addr)
        };
        let r = run(&s);
        let shapes = server.join().unwrap();
        assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
        assert_eq!(shapes.len(), 20, "{form:?}");
        assert!(shapes.iter().all(|s| *s == want), "{form:?}: {shapes:?}");
    }
}

/// `gyro-loadgen sweep` as a process: an absolute rate and a share of the closed-loop
/// maximum against one sink, the same rates against another, a JSON report and a plot.
#[test]
fn sweep_draws_the_curve_beside_a_sink() {
    let _turn = turn();
    let (a, stop_a, sink_a) = start_sink();
    let (b, stop_b, sink_b) = start_sink();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let report = dir.join(format!("sweep-{}.json", std::process::id()));
    let plot = dir.join(format!("sweep-{}.svg", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gyro-loadgen"))
        .args([
            "sweep",
            "--target",
            &a.to_string(),
            "--compare",
            &b.to_string(),
        ])
        .args(["--rates", "2000,20%", "--step", "0.5", "--connections", "2"])
        .args(["--window", "32", "--destination-realm", "sink.test"])
        .arg("--report")
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    for (stop, sink) in [(stop_a, sink_a), (stop_b, sink_b)] {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sink.join().unwrap();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let max = json["target"]["max_ccr_per_s"].as_f64().unwrap();
    assert!(max > 2_000.0, "{json}");
    let offered = |curve: &str| -> Vec<f64> {
        json[curve]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offered"].as_f64().unwrap())
            .collect()
    };
    let target = offered("target");
    assert_eq!(target.len(), 2, "{json}");
    assert_eq!(target[0], 2_000.0);
    // 20% of the maximum, to the float's last bits.
    assert!(
        (target[1] - 0.2 * max).abs() < max * 1e-9,
        "{target:?} of {max}"
    );
    assert_eq!(offered("compare"), offered("target"));
    for p in json["target"]["points"].as_array().unwrap() {
        assert!(p["latency_us"]["p99"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["check_failures"], 0, "{p}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("p99.9") && svg.contains("schedule lag"));
    assert!(stdout.contains("closed-loop maximum"), "{stdout}");
}

#[test]
fn sweep_refuses_bad_rates() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gyro-loadgen"))
        .args(["sweep", "--rates", "10,-5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a rate is CCR/s"));
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
    answering_server(listener, |c| {
        c.request_number += 1;
        2001
    })
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
