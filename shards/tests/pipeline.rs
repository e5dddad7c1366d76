//! The CDR pipeline as processes: `gyro serve` under load writes its log, `gyro ship`
//! is killed with SIGKILL at random points and restarted while it delivers to a
//! `gyro billing-sink` that refuses, loses replies and stalls at random; at the end
//! billing holds every record exactly once and its per-company totals equal gyro's.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, json, temp_dir, Server, GYRO};
use simd_json::prelude::*;

/// Sessions of load (each 1 to 4 CCRs, about 3.4 CDRs per session: 300,000 sessions
/// give about 1M CDRs).
fn sessions() -> u64 {
    std::env::var("GYRO_PIPELINE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
}

struct Sink {
    child: std::process::Child,
    addr: String,
}

impl Sink {
    fn start(out: &std::path::Path) -> Sink {
        Sink::start_with(
            out,
            &[
                "--fail-percent",
                "15",
                "--lost-percent",
                "15",
                "--stall-percent",
                "3",
                "--stall-ms",
                "300",
                "--seed",
                "7",
            ],
        )
    }

    fn start_with(out: &std::path::Path, extra: &[&str]) -> Sink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(GYRO)
            .args(["billing-sink", "--listen", &addr, "--out"])
            .arg(out)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "billing-sink did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink { child, addr }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shipper_killed_at_random_delivers_every_cdr_exactly_once_and_billing_equals_gyro() {
    let conf = temp_dir("pipeline-conf").join("gyro.toml");
    std::fs::write(&conf, "segment_size_mib = 1\n").unwrap();
    let server = Server::start(
        "pipeline",
        &["--config", conf.to_str().unwrap()],
        &[("GYRO_ADMIN_TOKEN", "t0k")],
    );
    let spec = gyro_loadgen::run::RunSpec {
        connections: 2,
        mix: "data=80,voice=10,sms=5,refund=5".parse().unwrap(),
        origin_host: "pgw.pipeline".into(),
        tx_timeout: Duration::from_secs(30),
        ..gyro_loadgen::run::RunSpec::new(server.diameter, sessions())
    };
    let dir = temp_dir("pipeline-billing");
    let out = dir.join("billing.ndjson");
    let sink = Sink::start(&out);
    let url = format!("http://{}/cdrs", sink.addr);

    // The load runs while the shipper follows the log (1 MiB segments, so it rolls
    // often under the shipper's feet) and is killed at random.
    let load_done = std::sync::atomic::AtomicBool::new(false);
    let (r, kills) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let r = gyro_loadgen::run::run(&spec);
            load_done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        // Ship with SIGKILL at random points until, after the load, one run finishes
        // on its own.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut kills = 0;
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "shipping did not finish"
            );
            let after_load = load_done.load(std::sync::atomic::Ordering::SeqCst);
            let mut child = Command::new(GYRO)
                .args(["ship", "--once", "--progress", "0", "--batch", "500"])
                .args(["--window", "4", "--data-dir"])
                .arg(&server.data_dir)
                .args(["--to", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let life = Duration::from_millis(30 + rng % 400);
            let until = Instant::now() + life;
            let mut finished = None;
            while Instant::now() < until {
                if let Some(s) = child.try_wait().unwrap() {
                    finished = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            match finished {
                Some(s) => {
                    assert!(s.success(), "gyro ship failed: {s}");
                    if after_load {
                        break;
                    }
                }
                None if kills < 20 || !after_load => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
                None => {
                    // Enough kills: let this one finish.
                    let s = child.wait().unwrap();
                    assert!(s.success(), "gyro ship failed: {s}");
                    break;
                }
            }
        }
        (load.join().unwrap(), kills)
    });
    assert_eq!(r.check_failures, 0, "{:?}", r.failures);
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    // A top-up after the load, shipped by one more run.
    let (status, body) = http(
        server.admin,
        "POST",
        "/companies/company-3/topup",
        Some("t0k"),
        "{\"amount\": 123456}",
    );
    assert_eq!(status, 200, "{body}");
    let records = r.answers + 1;
    let shipped = Command::new(GYRO)
        .args(["ship", "--once", "--progress", "0", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(
        shipped.status.success(),
        "{}",
        String::from_utf8_lossy(&shipped.stderr)
    );
    assert!(kills >= 5, "the shipper was killed only {kills} times");

    let (status, totals) = http(sink.addr.parse().unwrap(), "GET", "/totals", None, "");
    assert_eq!(status, 200);
    let t = json(&totals);
    assert_eq!(
        t["records"].as_u64(),
        Some(records),
        "every record exactly once"
    );
    assert!(
        t["duplicates"].as_u64().unwrap() > 0,
        "lost replies and kills make billing see duplicates: {totals}"
    );
    let companies = t["companies"].as_object().unwrap();
    assert!(companies.len() > 50, "{totals}");
    for (id, c) in companies.iter() {
        let (status, body) = server.get(&format!("/companies/{id}"));
        assert_eq!(status, 200, "{body}");
        let g = json(&body);
        // Refund CDRs carry negative costs: billing's sum is the net.
        let net = g["charged"].as_i64().unwrap() - g["refunded"].as_i64().unwrap();
        assert_eq!(c["charged"].as_i64(), Some(net), "{id}: {body}");
        for p in g["packages"].as_array().unwrap() {
            let pid = p["id"].as_str().unwrap();
            let used = p["used"].as_i64().unwrap();
            let billed = c["package_units"]
                .get(pid)
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            assert_eq!(billed, used, "{id} package {pid}");
        }
    }
    assert_eq!(
        companies["company-3"]["topups"].as_i64(),
        Some(123_456),
        "{totals}"
    );
    // The accepted file holds each id once.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut ids: Vec<String> = text
        .lines()
        .map(|l| json(l)["id"].as_str().unwrap().to_string())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    assert_eq!(n as u64, records);
    let (ok, _) = server.stop();
    assert!(ok);
}

/// A batch larger than the receiver takes is refused (413) without being read whole,
/// and nothing of it is billed; one within the limit is on disk when it is acknowledged.
#[test]
fn billing_sink_limits_a_batch_and_keeps_what_it_acknowledged() {
    let out = temp_dir("sink-limit").join("billing.ndjson");
    let sink = Sink::start_with(&out, &["--max-body-bytes", "4096"]);
    let line = |i: usize| {
        format!(
            "{{\"id\":\"topup-0-00000000000000ff-{i}\",\"kind\":\"topup\",\"company\":\"acme\",\"amount\":5}}\n"
        )
    };
    let big: String = (0..200).map(line).collect();
    assert!(big.len() > 4096);
    let addr = sink.addr.parse().unwrap();
    let (status, _) = http(addr, "POST", "/cdrs", None, &big);
    assert_eq!(status, 413);
    let small: String = (0..10).map(line).collect();
    let (status, body) = http(addr, "POST", "/cdrs", None, &small);
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), small);
    let (_, totals) = http(addr, "GET", "/totals", None, "");
    assert!(totals.contains("\"records\":10"), "{totals}");
    assert!(totals.contains("\"topups\":50"), "{totals}");
}

/// A record billing refuses for good (422) does not stop delivery: the batch is split
/// down to it, it goes to the shard's dead-letter file with the reason, and every other
/// record reaches billing once.
#[test]
fn a_record_billing_refuses_goes_to_the_dead_letter_file_and_the_rest_is_delivered() {
    use std::sync::{Arc, Mutex};
    let dir = temp_dir("dead-letter");
    let server = Server::start_with_files(
        &dir,
        concat!(
            "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":1}\n",
            "{\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000000}\n",
            "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
        ),
        "",
        &[],
    );
    let mut c = common::Client::connect(server.diameter, "pgw.test");
    for (i, amount) in [7, 13, 21].iter().enumerate() {
        let s = format!("pgw.test;dl;{i}");
        let a = c.ccr(
            &s,
            "491700000001",
            gyro_engine::diameter::ccr::RequestType::Initial,
            0,
            0,
            true,
        );
        assert_eq!(a.result_code, 2001);
        let (status, _) = http(
            server.admin,
            "POST",
            "/companies/acme/topup",
            Some(common::TOKEN),
            &format!("{{\"amount\":{amount}}}"),
        );
        assert_eq!(status, 200);
        let a = c.ccr(
            &s,
            "491700000001",
            gyro_engine::diameter::ccr::RequestType::Termination,
            1,
            1000,
            false,
        );
        assert_eq!(a.result_code, 2001);
    }
    drop(c);
    let data = server.data_dir.clone();
    assert!(server.stop().0);
    let expected: Vec<String> = common::cdr_cat(&data).lines().map(str::to_string).collect();
    assert_eq!(expected.len(), 9);

    // Billing refuses a batch holding the top-up of 13 (422), takes the others.
    let http_server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = http_server.server_addr().to_ip().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(mut req)) = http_server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = String::new();
                req.as_reader().read_to_string(&mut body).unwrap();
                let response = if body.contains("\"amount\":13,") {
                    tiny_http::Response::from_string("a top-up of 13 is not billable")
                        .with_status_code(422)
                } else {
                    got.lock().unwrap().extend(body.lines().map(str::to_string));
                    tiny_http::Response::from_string("{}").with_status_code(200)
                };
                req.respond(response).unwrap();
            }
        })
    };
    let shipped = Command::new(GYRO)
        .args(["ship", "--once", "--progress", "0", "--data-dir"])
        .arg(&data)
        .args(["--to", &format!("http://{addr}/cdrs")])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    receiver.join().unwrap();
    assert!(
        shipped.status.success(),
        "{}",
        String::from_utf8_lossy(&shipped.stderr)
    );
    let dead =
        std::fs::read_to_string(data.join("ship").join("shard-0.dead-letter.ndjson")).unwrap();
    let dead: Vec<simd_json::OwnedValue> = dead.lines().map(json).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"].as_u64(), Some(422));
    assert!(dead[0]["reason"].as_str().unwrap().contains("not billable"));
    let record = json(dead[0]["record"].as_str().unwrap());
    assert_eq!(record["amount"].as_i64(), Some(13));
    let mut got = got.lock().unwrap().clone();
    got.sort();
    got.dedup();
    let mut rest: Vec<String> = expected
        .into_iter()
        .filter(|l| !l.contains("\"amount\":13,"))
        .collect();
    rest.sort();
    assert_eq!(got, rest);
}
