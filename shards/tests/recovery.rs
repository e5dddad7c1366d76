//! `gyro serve` restarted on its data directory, as processes over real sockets: after
//! a clean stop and after SIGKILL under load, the state is rebuilt from the log (the
//! journal of requests, supervision and top-ups over the dataset snapshot): balances,
//! packages and open sessions with their reservations, and nothing applied twice.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cdr_cat, http, json, temp_dir, Client, Server, GYRO};
use gyro_engine::diameter::ccr::RequestType;
use simd_json::prelude::*;

const MIB: u64 = 1 << 20;

fn acme_dataset(name: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join("acme.ndjson");
    std::fs::write(
        &path,
        concat!(
            "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
            "{\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000,\"credit_limit\":0}\n",
            "{\"type\":\"package\",\"id\":\"acme-data\",\"company\":\"acme\",\"unit\":\"octets\",\"amount\":10485760,\"rating_groups\":[10],\"valid_until\":\"2099-12-31T23:59:59Z\",\"priority\":1}\n",
            "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
        ),
    )
    .unwrap();
    path
}

/// Starts gyro serve on an existing data directory.
fn start_on(data_dir: &std::path::Path, extra: &[&str], token: bool) -> Server {
    let mut args = vec!["--data-dir", data_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let env: &[(&str, &str)] = if token {
        &[("GYRO_ADMIN_TOKEN", "t")]
    } else {
        &[]
    };
    Server::start_in(&args, env)
}

#[test]
fn a_restart_recovers_balances_and_open_sessions_and_applies_nothing_twice() {
    let dataset = acme_dataset("recover-acme");
    let data = temp_dir("recover-data");
    let ds = dataset.to_str().unwrap();
    let server = start_on(&data, &["--dataset", ds], true);
    let mut c = Client::connect(server.diameter, "pgw1.test");
    let sub = "491700000001";
    // Session A: opened, used 1 MiB, 1 MiB reserved when gyro stops.
    let a = c.ccr("pgw1.test;1;a", sub, RequestType::Initial, 0, 0, true);
    assert_eq!((a.result_code, a.granted), (2001, MIB));
    let a = c.ccr("pgw1.test;1;a", sub, RequestType::Update, 1, MIB, true);
    assert_eq!(a.result_code, 2001);
    let (_, b0) = server.get("/companies/acme");
    let balance0 = json(&b0)["balance"].as_i64().unwrap();
    let (status, _) = http(
        server.admin,
        "POST",
        "/companies/acme/topup",
        Some("t"),
        "{\"amount\": 7000}",
    );
    assert_eq!(status, 200);
    // A package bought at run time, through the operations endpoint.
    let voice = r#"{"id":"acme-voice","company":"acme","unit":"seconds","amount":6000,"valid_until":"2099-12-31T23:59:59Z","priority":2}"#;
    let path = "/companies/acme/packages";
    assert_eq!(http(server.admin, "POST", path, None, voice).0, 401);
    let (status, body) = http(
        server.admin,
        "POST",
        path,
        Some("t"),
        r#"{"id":"x","company":"acme","unit":"octets"}"#,
    );
    assert_eq!(status, 400, "amount missing: {body}");
    assert!(body.contains("amount"), "{body}");
    let (status, _) = http(
        server.admin,
        "POST",
        "/companies/nobody/packages",
        Some("t"),
        voice,
    );
    assert_eq!(status, 404);
    let (status, body) = http(server.admin, "POST", path, Some("t"), voice);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["packages"][1]["remaining"].as_i64(), Some(6000));
    let (status, body) = http(server.admin, "POST", path, Some("t"), voice);
    assert_eq!(status, 400, "the same id twice: {body}");
    let (_, before) = server.get("/companies/acme");
    let before = json(&before);
    assert_eq!(before["reserved"].as_i64(), Some(0), "packages pay first");
    assert_eq!(before["packages"][0]["reserved"].as_i64(), Some(MIB as i64));
    drop(c);
    let (ok, _) = server.stop();
    assert!(ok);

    // Again with the same --dataset: the log says it was applied; nothing twice.
    let server = start_on(&data, &["--dataset", ds], true);
    let (_, after) = server.get("/companies/acme");
    let after = json(&after);
    for key in ["balance", "reserved", "charged", "refunded"] {
        assert_eq!(after[key], before[key], "{key}: {before} / {after}");
    }
    assert_eq!(after["packages"], before["packages"]);
    assert_eq!(
        after["packages"][1]["id"].as_str(),
        Some("acme-voice"),
        "the added package, replayed"
    );
    assert_eq!(
        after["balance"].as_i64(),
        Some(balance0 + 7000),
        "the top-up, once"
    );
    // Session A goes on where it was: its reservation is settled by the next update.
    let mut c = Client::connect(server.diameter, "pgw1.test");
    let a = c.ccr("pgw1.test;1;a", sub, RequestType::Update, 2, MIB, true);
    assert_eq!((a.result_code, a.granted), (2001, MIB), "{a:?}");
    let a = c.ccr(
        "pgw1.test;1;a",
        sub,
        RequestType::Termination,
        3,
        MIB,
        false,
    );
    assert_eq!(a.result_code, 2001, "{a:?}");
    let (_, end) = server.get("/companies/acme");
    let end = json(&end);
    let used_before = after["packages"][0]["used"].as_i64().unwrap();
    assert_eq!(
        end["packages"][0]["used"].as_i64(),
        Some(used_before + 2 * MIB as i64),
        "the recovered reservation settled: {end}"
    );
    assert_eq!(end["packages"][0]["reserved"].as_i64(), Some(0));
    // The clean stop wrote an engine snapshot; this run started from it. Now a crash:
    // the next start takes the snapshot and replays what came after it.
    let mut server = server;
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("starting from the engine snapshot")),
        "{:#?}",
        server.startup
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    assert!(common::snapshot_count(&data) >= 1);
    let server = start_on(&data, &[], true);
    let (_, again) = server.get("/companies/acme");
    let again = json(&again);
    for key in ["balance", "reserved", "charged", "packages"] {
        assert_eq!(again[key], end[key], "{key}: {end} / {again}");
    }
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
}

/// Per company: money net of refunds, and package units by package.
type Charges = BTreeMap<String, (i64, BTreeMap<String, i64>)>;

/// Sums what the CDR lines of a log charge, per company, and counts the CCR CDRs;
/// checks that no id appears twice; returns the ids too.
fn billing_view(log: &std::path::Path) -> (Charges, u64, HashSet<String>) {
    let text = cdr_cat(log);
    let mut ids = HashSet::new();
    let mut per = Charges::new();
    let mut ccr_cdrs = 0;
    for line in text.lines() {
        let v = json(line);
        let id = v["id"].as_str().unwrap().to_string();
        assert!(ids.insert(id.clone()), "CDR {id} twice");
        let Some(company) = v["company"].as_str() else {
            continue;
        };
        let e = per.entry(company.to_string()).or_default();
        if v["kind"].as_str() == Some("topup") {
            continue;
        }
        ccr_cdrs += 1;
        for s in v["services"].as_array().unwrap() {
            e.0 += s["cost"].as_i64().unwrap_or(0);
            if let Some(p) = s["package"].as_str() {
                *e.1.entry(p.to_string()).or_default() += s["package_units"].as_i64().unwrap_or(0);
            }
        }
    }
    (per, ccr_cdrs, ids)
}

#[test]
fn sigkill_under_load_twenty_times_loses_nothing_and_replays_exactly() {
    let data = temp_dir("crash-data");
    let mut answered = 0u64;
    let answered_ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        let server = start_on(&data, &[], false);
        // Recovery truncated any torn tail the last SIGKILL left: the log is whole.
        let out = Command::new(GYRO)
            .args(["cdr", "verify"])
            .arg(data.join("shard-0"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let spec = gyro_loadgen::run::RunSpec {
            connections: 2,
            window: 16,
            duration: Some(Duration::from_secs(5)),
            sessions: None,
            mix: "data=80,voice=10,sms=5,refund=5".parse().unwrap(),
            // Session-Ids differ from round to round.
            origin_host: format!("pgw{round}.crash"),
            tx_timeout: Duration::from_secs(2),
            answered_ids: Some(answered_ids.clone()),
            ..gyro_loadgen::run::RunSpec::new(server.diameter, 0)
        };
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(100 + rng % 500);
        let pid = server.child.id();
        let r = std::thread::scope(|s| {
            let load = s.spawn(|| gyro_loadgen::run::run(&spec));
            std::thread::sleep(kill_after);
            let killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            load.join().unwrap()
        });
        assert_eq!(r.check_failures, 0, "round {round}: {:?}", r.failures);
        answered += r.answers;
        drop(server);
    }
    assert!(answered > 1_000, "the load ran: {answered} answers");

    // The last restart: state rebuilt from the whole log.
    let started = Instant::now();
    let server = start_on(&data, &[], false);
    let recovered_in = started.elapsed();
    let (view, ccr_cdrs, ids) = billing_view(&data.join("shard-0"));
    assert!(
        ccr_cdrs >= answered,
        "every answer the client got has its CDR: {ccr_cdrs} CDRs, {answered} answers"
    );
    let got = answered_ids.lock().unwrap();
    assert_eq!(got.len() as u64, answered);
    for id in got.iter() {
        assert!(ids.contains(id), "the answer to {id} has no CDR");
    }
    let (_, all) = server.get("/companies");
    let all = json(&all);
    let mut compared = 0;
    for c in all.as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let (money, packages) = view.get(id).cloned().unwrap_or_default();
        let net = c["charged"].as_i64().unwrap() - c["refunded"].as_i64().unwrap();
        assert_eq!(net, money, "{id}: gyro {c} against its CDRs");
        for p in c["packages"].as_array().unwrap() {
            let pid = p["id"].as_str().unwrap();
            assert_eq!(
                p["used"].as_i64().unwrap(),
                packages.get(pid).copied().unwrap_or(0),
                "{id} {pid}"
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 100);
    assert!(recovered_in < Duration::from_secs(60));
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
}

fn segment_count(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("shard-0"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .count()
}

fn ship_once_retaining(data: &std::path::Path, sink: &str) {
    let out = Command::new(GYRO)
        .args([
            "ship",
            "--once",
            "--progress",
            "0",
            "--retain",
            "--data-dir",
        ])
        .arg(data)
        .args(["--to", &format!("http://{sink}/cdrs")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn retention_removes_only_segments_both_shipped_and_covered_by_a_snapshot() {
    let data = temp_dir("retain-data");
    let conf = temp_dir("retain-conf").join("gyro.toml");
    std::fs::write(&conf, "segment_size_mib = 1\n").unwrap();
    let server = start_on(&data, &["--config", conf.to_str().unwrap()], false);
    let spec = gyro_loadgen::run::RunSpec {
        window: 32,
        mix: "data=100".parse().unwrap(),
        origin_host: "pgw.retain".into(),
        ..gyro_loadgen::run::RunSpec::new(server.diameter, 3_000)
    };
    let r = gyro_loadgen::run::run(&spec);
    assert_eq!(r.check_failures, 0);
    let segments = segment_count(&data);
    assert!(segments >= 4, "{segments} segments");

    // A billing receiver in-process.
    let server_http = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let sink_addr = server_http.server_addr().to_ip().unwrap().to_string();
    let sink = gyro_shards::billing::Sink::open(gyro_shards::billing::SinkSpec {
        out: temp_dir("retain-billing").join("billing.ndjson"),
        ..Default::default()
    })
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || gyro_shards::billing::serve(server_http, sink, &stop))
    };

    // Everything shipped, but no engine snapshot yet: nothing may go.
    ship_once_retaining(&data, &sink_addr);
    assert_eq!(
        segment_count(&data),
        segments,
        "removed before a snapshot covered it"
    );

    // A clean stop writes a snapshot at the end of the log: now the sealed segments go.
    let (_, before) = server.get("/companies");
    let (ok, _) = server.stop();
    assert!(ok);
    ship_once_retaining(&data, &sink_addr);
    assert_eq!(segment_count(&data), 1, "only the last segment stays");

    // And gyro starts from the snapshot and the segment left.
    let server = start_on(&data, &["--config", conf.to_str().unwrap()], false);
    let (_, after) = server.get("/companies");
    assert_eq!(json(&after), json(&before));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let totals = receiver.join().unwrap();
    assert!(
        totals.contains(&format!("\"records\":{}", r.answers)),
        "{totals}"
    );
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
}
