//! `gyro serve --shards 2` as a process, over real sockets: sessions spread over both
//! shards by Session-Id draw on one company's package and money through escrow, the
//! company is cut off only when nothing is left anywhere, a top-up reaches the next
//! session whichever shard owns it, and the CDRs of both shards agree with the
//! operations endpoint to the unit; then load, SIGKILL, and a restart that rebuilds
//! every balance from both logs.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gyro_engine::charging::engine::shard_of;
use gyro_engine::diameter::ccr::RequestType;
use simd_json::prelude::*;

mod common;
use common::{cdr_cat, http, json, temp_dir, Client, Server};

const MIB: u64 = 1 << 20;

/// Every CDR line of one shard's log.
fn cdrs(dir: &Path) -> Vec<simd_json::OwnedValue> {
    cdr_cat(dir).lines().map(json).collect()
}

/// Per company: money charged (CDR costs above 0), refunded (below 0), package units.
fn charged_by_company(data_dir: &Path, shards: usize) -> HashMap<String, (i64, i64, i64)> {
    let mut by = HashMap::new();
    for s in 0..shards {
        for c in cdrs(&data_dir.join(format!("shard-{s}"))) {
            let Some(company) = c.get("company").and_then(|v| v.as_str()) else {
                continue;
            };
            let e: &mut (i64, i64, i64) = by.entry(company.to_string()).or_default();
            if let Some(services) = c.get("services").and_then(|v| v.as_array()) {
                for svc in services {
                    let cost = svc.get("cost").and_then(|v| v.as_i64()).unwrap_or(0);
                    if cost > 0 {
                        e.0 += cost;
                    } else {
                        e.1 -= cost;
                    }
                    e.2 += svc
                        .get("package_units")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0);
                }
            }
        }
    }
    by
}

#[test]
fn two_shards_share_a_company_and_their_cdrs_agree_with_the_operations_endpoint() {
    let dir = temp_dir("two-shards-dataset");
    let dataset = dir.join("acme.ndjson");
    let mut lines = String::from(concat!(
        "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
        "{\"type\":\"company\",\"id\":\"acme\",\"balance\":41000,\"credit_limit\":0}\n",
        "{\"type\":\"package\",\"id\":\"acme-data\",\"company\":\"acme\",\"unit\":\"octets\",\"amount\":10485760,\"rating_groups\":[10],\"valid_until\":\"2099-12-31T23:59:59Z\",\"priority\":1}\n",
    ));
    for i in 0..8 {
        lines.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917000000{i:02}\",\"company\":\"acme\"}}\n"
        ));
    }
    std::fs::write(&dataset, lines).unwrap();
    let server = Server::start(
        "two-shards",
        &["--shards", "2", "--dataset", dataset.to_str().unwrap()],
        &[("GYRO_ADMIN_TOKEN", "s3cret")],
    );
    let mut clients = [
        Client::connect(server.diameter, "pgw1.test"),
        Client::connect(server.diameter, "pgw2.test"),
    ];
    // Eight sessions, owned by both shards.
    let sids: Vec<String> = (0..8).map(|i| format!("pgw.test;1;{i}")).collect();
    let owners: Vec<u16> = sids.iter().map(|s| shard_of(s.as_bytes(), 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
    let msisdn = |i: usize| format!("4917000000{i:02}");
    let mut granted = [0u64; 8];
    let mut number = [0u32; 8];
    for i in 0..8 {
        let a = clients[i % 2].ccr(&sids[i], &msisdn(i), RequestType::Initial, 0, 0, true);
        assert_eq!(a.result_code, 2001, "{a:?}");
        granted[i] = a.granted;
    }
    // Each session uses what it was granted and asks for more, in turn, until nothing
    // is granted anywhere.
    let mut used_total = 0u64;
    for _round in 0..40 {
        for i in 0..8 {
            if granted[i] == 0 {
                continue;
            }
            number[i] += 1;
            let used = granted[i];
            let a = clients[i % 2].ccr(
                &sids[i],
                &msisdn(i),
                RequestType::Update,
                number[i],
                used,
                true,
            );
            used_total += used;
            granted[i] = a.granted;
        }
        if granted.iter().all(|g| *g == 0) {
            break;
        }
    }
    // 10 MiB of package and 20 blocks of money (40,000 of 41,000): nothing stranded
    // on either shard.
    assert_eq!(used_total, 30 * MIB);
    for i in 0..8 {
        number[i] += 1;
        let a = clients[i % 2].ccr(
            &sids[i],
            &msisdn(i),
            RequestType::Termination,
            number[i],
            0,
            false,
        );
        assert_eq!(a.result_code, 2001, "{a:?}");
    }
    let (status, body) = server.get("/companies/acme");
    assert_eq!(status, 200, "{body}");
    let c = json(&body);
    assert_eq!(c["balance"].as_i64(), Some(1000), "{body}");
    assert_eq!(c["reserved"].as_i64(), Some(0), "{body}");
    assert_eq!(c["charged"].as_i64(), Some(40_000), "{body}");
    assert_eq!(c["packages"][0]["remaining"].as_i64(), Some(0), "{body}");
    assert_eq!(
        c["packages"][0]["used"].as_i64(),
        Some(10 * MIB as i64),
        "{body}"
    );

    // Refused on both shards while nothing is left.
    for (i, sid) in [
        "pgw.test;2;0",
        "pgw.test;2;1",
        "pgw.test;2;2",
        "pgw.test;2;3",
    ]
    .iter()
    .enumerate()
    {
        let a = clients[i % 2].ccr(sid, &msisdn(i), RequestType::Initial, 0, 0, true);
        assert!(
            a.result_code == 4012 || a.mscc_result == Some(4012),
            "{a:?}"
        );
    }
    // A top-up (made on the company's owner shard) reaches sessions of both shards.
    let (status, body) = http(
        server.admin,
        "POST",
        "/companies/acme/topup",
        Some("s3cret"),
        "{\"amount\": 4000}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["balance"].as_i64(), Some(5000), "{body}");
    let mut served = [false; 2];
    for i in 0..8 {
        let sid = format!("pgw.test;3;{i}");
        let owner = usize::from(shard_of(sid.as_bytes(), 2));
        if served[owner] {
            continue;
        }
        let a = clients[i % 2].ccr(&sid, &msisdn(i), RequestType::Initial, 0, 0, true);
        assert_eq!(a.result_code, 2001, "shard {owner}: {a:?}");
        assert_eq!(a.granted, MIB);
        let a = clients[i % 2].ccr(&sid, &msisdn(i), RequestType::Termination, 1, MIB, false);
        assert_eq!(a.result_code, 2001, "{a:?}");
        served[owner] = true;
    }
    assert_eq!(served, [true, true]);
    let (_, body) = server.get("/companies/acme");
    assert_eq!(json(&body)["balance"].as_i64(), Some(1000), "{body}");

    // The CDRs of both shards say the same, to the unit.
    let data_dir = server.data_dir.clone();
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
    let by = charged_by_company(&data_dir, 2);
    assert_eq!(by["acme"], (44_000, 0, 10 * MIB as i64), "{by:?}");
    let (_, metrics) = {
        let s = Server::start_in(
            &["--shards", "2", "--data-dir", data_dir.to_str().unwrap()],
            &[],
        );
        let m = s.get("/metrics");
        let (_, body) = s.get("/companies/acme");
        assert_eq!(
            json(&body)["charged"].as_i64(),
            Some(44_000),
            "after a restart: {body}"
        );
        assert_eq!(
            json(&body)["balance"].as_i64(),
            Some(1000),
            "after a restart: {body}"
        );
        assert!(s.stop().0);
        m
    };
    // One TYPE line per metric family, both shards' samples under it.
    assert_eq!(
        metrics.matches("# TYPE gyro_ccr counter").count(),
        1,
        "{metrics}"
    );
    assert!(metrics.contains("gyro_sessions{shard=\"1\"}"), "{metrics}");
}

#[test]
fn two_shards_killed_under_load_recover_every_balance_from_their_logs() {
    let dir = temp_dir("two-shards-kill-dataset");
    let dataset = dir.join("d.ndjson");
    let spec = gyro_loadgen::dataset::Spec {
        subscribers: 2_000,
        companies: 20,
        seed: 7,
    };
    let mut f = std::fs::File::create(&dataset).unwrap();
    gyro_loadgen::dataset::write(&spec, &mut f).unwrap();
    drop(f);
    // What each company was provisioned with.
    let mut provisioned: HashMap<String, i64> = HashMap::new();
    for line in std::fs::read_to_string(&dataset).unwrap().lines() {
        let v = json(line);
        if v["type"].as_str() == Some("company") {
            provisioned.insert(
                v["id"].as_str().unwrap().to_string(),
                v["balance"].as_i64().unwrap(),
            );
        }
    }
    let data_dir = temp_dir("two-shards-kill");
    let args = [
        "--shards",
        "2",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--dataset",
        dataset.to_str().unwrap(),
    ];
    for round in 0..3 {
        let mut server = Server::start_in(&args, &[]);
        if round > 0 {
            assert!(
                server
                    .startup
                    .iter()
                    .any(|l| l.contains("shard 1: recovered")),
                "{:#?}",
                server.startup
            );
        }
        let target = server.diameter;
        let load = std::thread::spawn(move || {
            let spec = gyro_loadgen::run::RunSpec {
                connections: 2,
                window: 32,
                duration: Some(Duration::from_secs(3)),
                mix: "data=80,voice=10,sms=5,refund=5".parse().unwrap(),
                ..gyro_loadgen::run::RunSpec::new(target, 1_000_000)
            };
            gyro_loadgen::run::run(&spec)
        });
        std::thread::sleep(Duration::from_millis(1_500));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = load.join();
        // After each kill: every company's money is all there, as the CDRs say.
        let check = Server::start_in(&args, &[]);
        let (status, body) = check.get("/companies");
        assert_eq!(status, 200);
        let companies = json(&body);
        let by = charged_by_company(&data_dir, 2);
        for c in companies.as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            let (balance, reserved, charged, refunded) = (
                c["balance"].as_i64().unwrap(),
                c["reserved"].as_i64().unwrap(),
                c["charged"].as_i64().unwrap(),
                c["refunded"].as_i64().unwrap(),
            );
            assert_eq!(
                balance + reserved + charged,
                provisioned[id] + refunded,
                "round {round}, company {id}: {c:?}"
            );
            let (cdr_charged, cdr_refunded, _) = by.get(id).copied().unwrap_or_default();
            assert_eq!(charged, cdr_charged, "round {round}, company {id}: {c:?}");
            assert_eq!(refunded, cdr_refunded, "round {round}, company {id}: {c:?}");
        }
        assert!(check.stop().0);
    }
}
