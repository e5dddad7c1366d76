//! `gyro serve` as a process, over real sockets: load from `gyro-loadgen`'s client with
//! every answer checked, the operations endpoint, a company that runs out of package
//! and money and is topped up, a clean stop on SIGTERM, and the CDR log it leaves.

use std::process::Command;
use std::time::Duration;

use gyro_engine::diameter::ccr::RequestType;
use simd_json::prelude::*;

mod common;
use common::{http, json, temp_dir, Client, Server, GYRO};

/// What a Prometheus scraper and a Grafana dashboard rely on: a build info series,
/// latency histograms in seconds with the same buckets on every shard, the `_total`
/// suffix on counters, and the same series on every scrape (no label that takes a
/// value per scrape, request or connection).
fn metrics_follow_the_conventions(server: &Server, metrics: &str, answers: u64) {
    assert!(metrics.contains("gyro_build_info{version=\""), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert!(
        metrics.contains("# TYPE gyro_request_seconds histogram"),
        "{metrics}"
    );
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gyro_request_seconds_count{shard=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    let inf: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gyro_request_seconds_bucket{le=\"+Inf\",shard=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!((count, inf), (answers, answers));
    for l in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(
            !l.contains("remote=") && !l.contains("requests="),
            "a label per connection: {l}"
        );
        let family = metrics
            .lines()
            .filter_map(|t| t.strip_prefix("# TYPE "))
            .find(|t| {
                let f = t.split(' ').next().unwrap();
                name == f || name.strip_prefix(f).is_some_and(|s| s.starts_with('_'))
            })
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        if family.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{l}");
        }
    }
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect()
    };
    let (_, again) = server.get("/metrics");
    assert_eq!(series(metrics), series(&again));
    // Every series the Grafana dashboard plots is here (the shipper's aside).
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/gyro.json"
    ))
    .unwrap();
    let mut plotted: Vec<&str> = dashboard
        .match_indices("gyro_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|m| !m.starts_with("gyro_ship_") && m.len() > 5)
        .collect();
    plotted.sort_unstable();
    plotted.dedup();
    assert!(plotted.len() > 10, "{plotted:?}");
    for m in plotted {
        // A sample, or (a family without samples now, such as connections) its TYPE.
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(m) && l[m.len()..].starts_with(['{', ' ']))
                || metrics.contains(&format!("# TYPE {m} ")),
            "the dashboard plots {m}, which /metrics lacks"
        );
    }
}

#[test]
fn serve_answers_checked_load_reports_metrics_and_stops_cleanly() {
    checked_load("epoll");
}

fn checked_load(runtime: &str) {
    let server = Server::start(&format!("load-{runtime}"), &["--runtime", runtime], &[]);
    let spec = gyro_loadgen::run::RunSpec {
        connections: 2,
        window: 16,
        mix: "data=80,voice=10,sms=5,refund=5".parse().unwrap(),
        origin_host: "pgw.test".into(),
        ..gyro_loadgen::run::RunSpec::new(server.diameter, 3_000)
    };
    let r = gyro_loadgen::run::run(&spec);
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    assert_eq!(r.check_failures, 0, "{:?}", r.failures);
    assert_eq!(r.timeouts, 0);
    assert_eq!(r.sessions_started, 3_000);
    assert_eq!(r.answers, r.requests);
    assert!(r.answers >= 3_000, "{r:?}");
    assert!(
        r.answers_by_result
            .iter()
            .any(|(c, n)| *c == 2001 && *n > 1000),
        "{:?}",
        r.answers_by_result
    );

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    metrics_follow_the_conventions(&server, &metrics, r.answers);
    let ccrs: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("gyro_ccr_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(ccrs, r.answers, "{metrics}");
    assert!(
        metrics.contains("gyro_connections_accepted_total{shard=\"0\"} 2"),
        "{metrics}"
    );
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/nowhere").0, 404);

    let dir = server.data_dir.join("shard-0");
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains(&format!("on the {runtime} runtime"))),
        "{:#?}",
        server.startup
    );
    let (ok, lines) = server.stop();
    assert!(ok, "exit status on SIGTERM: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
    // Every record intact, and one CDR per CCR.
    let out = Command::new(GYRO)
        .args(["cdr", "verify"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let out = Command::new(GYRO)
        .args(["cdr", "cat"])
        .arg(&dir)
        .output()
        .unwrap();
    let cdrs = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(cdrs, r.answers, "{:?}", r.answers_by_result);
}

/// The log is synced as the durability policy says and not otherwise: never with
/// `none` (the page cache holds the records; a sync would write the pages back while
/// requests wait), every `sync_interval_ms` with `interval`, for every batch with
/// `tick`. Either way every answered request's
/// CDR is in the log files when its answer arrives, also when the answer crossed from
/// the shard that owns the session to the one holding the connection.
#[test]
fn the_log_is_synced_only_when_the_durability_policy_asks() {
    for (policy, synced, runtime) in [
        ("none", false, "epoll"),
        ("interval", true, "epoll"),
        ("tick", true, "epoll"),
    ] {
        let server = Server::start(
            &format!("sync-{policy}-{runtime}"),
            &[
                "--durability",
                policy,
                "--shards",
                "2",
                "--runtime",
                runtime,
            ],
            &[],
        );
        let spec = gyro_loadgen::run::RunSpec {
            connections: 2,
            window: 16,
            origin_host: "pgw.test".into(),
            ..gyro_loadgen::run::RunSpec::new(server.diameter, 1_000)
        };
        let r = gyro_loadgen::run::run(&spec);
        assert_eq!(r.check_failures, 0, "{:?}", r.failures);
        assert!(r.answers >= 1_000, "{r:?}");
        // Read as soon as the last answer came, from the files.
        let cdrs: usize = (0..2)
            .map(|s| {
                let log = common::cdr_cat(&server.data_dir.join(format!("shard-{s}")));
                log.lines()
                    .filter(|l| l.contains("\"kind\":\"ccr\""))
                    .count()
            })
            .sum();
        assert_eq!(cdrs as u64, r.answers, "{policy}");
        // Long enough for any periodic sync to have happened.
        std::thread::sleep(Duration::from_millis(300));
        let (_, metrics) = server.get("/metrics");
        for shard in 0..2 {
            let key = format!("gyro_log_sync_seconds_count{{shard=\"{shard}\"}} ");
            let syncs: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {metrics}"));
            assert_eq!(syncs > 0, synced, "{policy}, shard {shard}: {syncs} syncs");
        }
        let (ok, lines) = server.stop();
        assert!(ok, "{lines:#?}");
    }
}

/// With durability `none` (and `interval` between its syncs) the CDR of an answered
/// request is in the log file (the page cache) by the time the answer arrives: the
/// shard writes out its records before the answers of a batch go, and before an answer
/// crosses to the shard that holds the connection. Checked right after each answer,
/// with one shard and with two, under each durability policy.
#[test]
fn an_answered_request_has_its_cdr_in_the_log_file() {
    for (shards, policy, runtime) in [
        ("1", "none", "epoll"),
        ("2", "none", "epoll"),
        ("2", "interval", "epoll"),
        ("2", "tick", "epoll"),
    ] {
        let server = Server::start(
            &format!("written-{shards}-{policy}-{runtime}"),
            &[
                "--shards",
                shards,
                "--durability",
                policy,
                "--runtime",
                runtime,
            ],
            &[],
        );
        let mut client = Client::connect(server.diameter, "pgw.test");
        for i in 0..16 {
            let session = format!("written;{shards};{i}");
            let a = client.ccr(&session, "491700000007", RequestType::Initial, 0, 0, true);
            assert_eq!(a.result_code, 2001, "{a:?}");
            let written = (0..shards.parse::<usize>().unwrap()).any(|s| {
                common::cdr_cat(&server.data_dir.join(format!("shard-{s}")))
                    .contains(&format!("\"session_id\":\"{session}\""))
            });
            assert!(
                written,
                "{shards} shard(s): no CDR for {session} in the log files"
            );
        }
        let (ok, lines) = server.stop();
        assert!(ok, "{lines:#?}");
    }
}

#[test]
fn a_company_uses_its_package_then_its_money_is_cut_off_and_a_top_up_restores_service() {
    const MIB: u64 = 1 << 20;
    let dir = temp_dir("acme-dataset");
    let dataset = dir.join("acme.ndjson");
    std::fs::write(
        &dataset,
        concat!(
            "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
            "{\"type\":\"company\",\"id\":\"acme\",\"balance\":5000,\"credit_limit\":0}\n",
            "{\"type\":\"package\",\"id\":\"acme-data\",\"company\":\"acme\",\"unit\":\"octets\",\"amount\":10485760,\"rating_groups\":[10],\"valid_until\":\"2099-12-31T23:59:59Z\",\"priority\":1}\n",
            "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
            "{\"type\":\"subscriber\",\"msisdn\":\"491700000002\",\"company\":\"acme\"}\n",
        ),
    )
    .unwrap();
    let server = Server::start(
        "acme",
        &["--dataset", dataset.to_str().unwrap()],
        &[("GYRO_ADMIN_TOKEN", "s3cret")],
    );
    // Two subscribers of the company on two connections, using all they are granted.
    let mut clients = [
        Client::connect(server.diameter, "pgw1.test"),
        Client::connect(server.diameter, "pgw2.test"),
    ];
    let subs = ["491700000001", "491700000002"];
    let sids = ["pgw1.test;1;1", "pgw2.test;1;1"];
    let mut granted = [0u64; 2];
    let mut number = [0u32; 2];
    for i in 0..2 {
        let a = clients[i].ccr(sids[i], subs[i], RequestType::Initial, 0, 0, true);
        assert_eq!(a.result_code, 2001, "{a:?}");
        granted[i] = a.granted;
    }
    let (mut used_total, mut saw_fui, mut cut_off) = (0u64, false, false);
    for round in 0..40 {
        let i = round % 2;
        if granted[i] == 0 {
            continue;
        }
        number[i] += 1;
        let used = granted[i];
        let a = clients[i].ccr(
            sids[i],
            subs[i],
            RequestType::Update,
            number[i],
            used,
            !saw_fui,
        );
        used_total += used;
        granted[i] = a.granted;
        if a.fui {
            saw_fui = true;
        }
        if a.result_code == 4012 || a.mscc_result == Some(4012) {
            cut_off = true;
        }
        if granted.iter().all(|g| *g == 0) {
            break;
        }
    }
    assert!(saw_fui || cut_off, "the company never ran out");
    for i in 0..2 {
        number[i] += 1;
        let a = clients[i].ccr(
            sids[i],
            subs[i],
            RequestType::Termination,
            number[i],
            0,
            false,
        );
        assert_eq!(a.result_code, 2001, "{a:?}");
    }
    // 10 MiB of package and two 1 MiB blocks of money (2,000 each of 5,000).
    assert_eq!(used_total, 12 * MIB);
    let (status, body) = server.get("/companies/acme");
    assert_eq!(status, 200, "{body}");
    let c = json(&body);
    assert_eq!(c["balance"].as_i64(), Some(1000), "{body}");
    assert_eq!(c["reserved"].as_i64(), Some(0), "{body}");
    assert_eq!(c["packages"][0]["id"].as_str(), Some("acme-data"));
    assert_eq!(c["packages"][0]["remaining"].as_i64(), Some(0), "{body}");

    // A new session is refused: nothing left to grant.
    let a = clients[0].ccr("pgw1.test;1;2", subs[0], RequestType::Initial, 0, 0, true);
    assert!(
        a.result_code == 4012 || a.mscc_result == Some(4012),
        "{a:?}"
    );

    // Top-ups need the token.
    let topup = "{\"amount\": 100000}";
    assert_eq!(
        http(server.admin, "POST", "/companies/acme/topup", None, topup).0,
        401
    );
    assert_eq!(
        http(
            server.admin,
            "POST",
            "/companies/acme/topup",
            Some("wrong"),
            topup
        )
        .0,
        401
    );
    let (status, body) = http(
        server.admin,
        "POST",
        "/companies/acme/topup",
        Some("s3cret"),
        "{\"amount\": 1.5}",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        server.admin,
        "POST",
        "/companies/nobody/topup",
        Some("s3cret"),
        topup,
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(
        server.admin,
        "POST",
        "/companies/acme/topup",
        Some("s3cret"),
        topup,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["balance"].as_i64(), Some(101_000), "{body}");
    let a = clients[0].ccr("pgw1.test;1;3", subs[0], RequestType::Initial, 0, 0, true);
    assert_eq!(a.result_code, 2001, "{a:?}");
    assert_eq!(a.granted, MIB);
    let a = clients[0].ccr(
        "pgw1.test;1;3",
        subs[0],
        RequestType::Termination,
        1,
        MIB,
        false,
    );
    assert_eq!(a.result_code, 2001, "{a:?}");

    // The CDRs and the endpoint agree to the unit.
    let (_, body) = server.get("/companies/acme");
    let c = json(&body);
    let charged = c["charged"].as_i64().unwrap();
    let package_used = c["packages"][0]["used"].as_i64().unwrap();
    let log = server.data_dir.join("shard-0");
    let (ok, _) = server.stop();
    assert!(ok);
    let out = Command::new(GYRO)
        .args(["cdr", "cat"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (mut cost, mut units, mut topups) = (0i64, 0i64, 0i64);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v = json(line);
        if v["kind"].as_str() == Some("topup") {
            topups += v["amount"].as_i64().unwrap();
            continue;
        }
        for s in v["services"].as_array().unwrap() {
            cost += s["cost"].as_i64().unwrap_or(0);
            units += s["package_units"].as_i64().unwrap_or(0);
        }
    }
    assert_eq!(topups, 100_000);
    assert_eq!(cost, charged, "money in the CDRs against the company's");
    assert_eq!(
        units, package_used,
        "package units in the CDRs against the company's"
    );
    assert_eq!(package_used, 10 * MIB as i64);
    assert_eq!(charged, 3 * 2000);
}

#[test]
fn serve_refuses_a_bad_configuration_with_a_clear_message() {
    let dir = temp_dir("badconf");
    let conf = dir.join("gyro.toml");
    std::fs::write(&conf, "orign_host = \"typo\"\n").unwrap();
    let out = Command::new(GYRO)
        .args(["serve", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("orign_host"), "{err}");

    let out = Command::new(GYRO)
        .args(["serve", "--shards", "65", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards = 65: at most 64"));

    let out = Command::new(GYRO)
        .args(["serve", "--dataset", "/nonexistent/gyro.ndjson"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gyro.ndjson"));
}

#[test]
fn a_session_without_its_ccr_t_is_closed_by_supervision_with_a_cdr() {
    let conf = temp_dir("tcc-conf").join("gyro.toml");
    // Validity-Time 1 s: Tcc 2 s.
    std::fs::write(&conf, "validity_time_s = 1\n").unwrap();
    let server = Server::start("tcc", &["--config", conf.to_str().unwrap()], &[]);
    let mut c = Client::connect(server.diameter, "pgw.tcc");
    let a = c.ccr(
        "pgw.tcc;1;1",
        "491700000005",
        RequestType::Initial,
        0,
        0,
        true,
    );
    assert_eq!(a.result_code, 2001);
    let company = {
        let out = Command::new(GYRO)
            .args(["cdr", "cat"])
            .arg(server.data_dir.join("shard-0"))
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        json(line.lines().next().unwrap())["company"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let reserved = |server: &Server| {
        let (_, body) = server.get(&format!("/companies/{company}"));
        let c = json(&body);
        c["reserved"].as_i64().unwrap()
            + c["packages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["reserved"].as_i64().unwrap())
                .sum::<i64>()
    };
    assert!(reserved(&server) > 0);
    // The client goes silent; supervision closes the session after Tcc.
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while reserved(&server) > 0 {
        assert!(
            std::time::Instant::now() < until,
            "the session was never closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new(GYRO)
        .args(["cdr", "cat"])
        .arg(server.data_dir.join("shard-0"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cdr = text
        .lines()
        .map(json)
        .find(|v| v["kind"].as_str() == Some("supervision_timeout"))
        .expect("a supervision CDR");
    assert_eq!(cdr["session_id"].as_str(), Some("pgw.tcc;1;1"));
    assert_eq!(cdr["company"].as_str(), Some(company.as_str()));
    let (ok, _) = server.stop();
    assert!(ok);
}

/// SMS events and refunds from `gyro-loadgen` in both forms it sends: the service and
/// its units inside an MSCC (TS 32.299, the default) and at the top level (RFC 8506).
/// Each form is answered 2001 and charged: every event's CDR names the SMS service with
/// a cost.
#[test]
fn events_in_the_3gpp_and_the_top_level_form_are_charged() {
    use gyro_loadgen::run::EventForm;
    for (form, name) in [(EventForm::ThreeGpp, "3gpp"), (EventForm::TopLevel, "top")] {
        let server = Server::start(&format!("events-{name}"), &[], &[]);
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let spec = gyro_loadgen::run::RunSpec {
            mix: "sms=3,refund=1".parse().unwrap(),
            event_form: form,
            origin_host: format!("pgw-{name}.test"),
            answered_ids: Some(ids.clone()),
            ..gyro_loadgen::run::RunSpec::new(server.diameter, 200)
        };
        let r = gyro_loadgen::run::run(&spec);
        assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
        assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
        assert_eq!(r.answers_by_result, vec![(2001, 200)], "{name}");
        let log = common::cdr_cat(&server.data_dir.join("shard-0"));
        let ids = ids.lock().unwrap();
        assert_eq!(ids.len(), 200);
        for id in ids.iter() {
            let line = log
                .lines()
                .find(|l| l.contains(&format!("\"id\":\"{id}\"")))
                .unwrap_or_else(|| panic!("{name}: no CDR for {id}"));
            assert!(line.contains("\"request_type\":\"event\""), "{line}");
            assert!(line.contains("\"service_identifier\":1,"), "{line}");
            assert!(!line.contains("\"cost\":0,"), "{name}: not charged: {line}");
        }
        let (ok, lines) = server.stop();
        assert!(ok, "{lines:#?}");
    }
}
