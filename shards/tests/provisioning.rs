//! Provisioning at run time against the `gyro serve` process over real sockets, as an
//! operations team uses it: NDJSON streamed to `POST /provisioning` (upserts, barring,
//! deletion, bad lines among good ones), the REST routes on subscribers and companies,
//! adjustments, idempotency keys, the export, and all of it surviving SIGKILL and
//! SIGTERM restarts, with one shard and with two.

mod common;
use common::{http, temp_dir, Client, Server, GYRO, TOKEN};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use gyro_engine::diameter::ccr::RequestType;
use simd_json::prelude::*;

const DATASET: &str = concat!(
    "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
    "{\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000,\"credit_limit\":0}\n",
    "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
    "{\"type\":\"subscriber\",\"msisdn\":\"491700000009\",\"company\":\"acme\",\"barred\":true}\n",
);

const MIB: u64 = 1 << 20;

fn json(body: &str) -> simd_json::OwnedValue {
    common::json(body)
}

/// One HTTP/1.1 request with extra headers.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    common::http_with(addr, method, path, Some(TOKEN), headers, body)
}

fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    http(server.admin, "POST", path, Some(TOKEN), body)
}

/// A CCR-I asking for units.
fn initial(c: &mut Client, session: &str, msisdn: &str) -> common::Answer {
    c.ccr(session, msisdn, RequestType::Initial, 0, 0, true)
}

/// A CCR-T (number `n`) reporting `used` octets.
fn terminate(c: &mut Client, session: &str, msisdn: &str, n: u32, used: u64) -> common::Answer {
    c.ccr(session, msisdn, RequestType::Termination, n, used, false)
}

fn put(server: &Server, path: &str, body: &str) -> (u16, String) {
    http(server.admin, "PUT", path, Some(TOKEN), body)
}

fn start(dir: &Path, shards: usize, fresh: bool) -> Server {
    let dataset = dir.join("dataset.ndjson");
    if fresh {
        std::fs::write(&dataset, DATASET).unwrap();
    }
    let data = dir.join("data");
    let shards = shards.to_string();
    Server::start_in(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--dataset",
            dataset.to_str().unwrap(),
            "--shards",
            &shards,
        ],
        &[],
    )
}

fn balance(server: &Server, company: &str) -> (i64, i64) {
    let (status, body) = server.get(&format!("/companies/{company}"));
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    (
        v["balance"].as_i64().unwrap(),
        v["reserved"].as_i64().unwrap(),
    )
}

fn export(server: &Server) -> String {
    let (status, body) = server.get("/provisioning");
    assert_eq!(status, 200, "{body}");
    body
}

fn sorted(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn kill9(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// The balance records of every shard's log (what billing receives), by kind.
fn balance_records(data: &Path, kind: &str) -> Vec<simd_json::OwnedValue> {
    let out = Command::new(GYRO)
        .args(["cdr", "cat", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(json)
        .filter(|v| v["kind"].as_str() == Some(kind))
        .collect()
}

fn lifecycle(name: &str, shards: usize) {
    let dir = temp_dir(name);
    let server = start(&dir, shards, true);
    let mut c = Client::connect(server.diameter, "pgw1.test");

    // A barred subscriber of the dataset: refused from the start.
    let a = initial(&mut c, "pgw1.test;barred;1", "491700000009");
    assert_eq!(a.result_code, 4010);

    // A stream with good lines, a blank one and bad ones: line numbers count every line.
    let body = concat!(
        "{\"type\":\"company\",\"id\":\"beta\",\"balance\":5000000}\n",
        "{\"type\":\"subscriber\",\"msisdn\":\"491700000002\",\"company\":\"beta\"}\n",
        "\n",
        "{\"type\":\"subscriber\",\"msisdn\":\"491700000003\",\"company\":\"nobody\"}\n",
        "not json\n",
        "{\"type\":\"package\",\"id\":\"beta-data\",\"company\":\"beta\",\"unit\":\"octets\",\"amount\":10485760,\"rating_groups\":[10],\"priority\":1}\n",
        "{\"type\":\"company\",\"id\":\"gamma\"}\n",
        "{\"type\":\"subscriber\",\"msisdn\":\"491700000004\",\"company\":\"beta\"}",
    );
    let (status, answer) = post(&server, "/provisioning", body);
    assert_eq!(status, 200, "{answer}");
    let v = json(&answer);
    assert_eq!(v["applied"].as_u64(), Some(4), "{answer}");
    let rejected: Vec<u64> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![4, 5, 7], "{answer}");
    assert!(answer.contains("nobody"), "{answer}");

    // A CCR right after the 200 sees the new subscriber, whichever shard serves it.
    let a = initial(&mut c, "pgw1.test;beta;1", "491700000002");
    assert_eq!((a.result_code, a.granted), (2001, MIB));
    let a = c.ccr(
        "pgw1.test;beta;1",
        "491700000002",
        RequestType::Update,
        1,
        MIB,
        true,
    );
    assert_eq!(a.result_code, 2001);

    // Moved to acme while that session is open: it finishes on beta; a new one is acme's.
    let (status, moved) = put(
        &server,
        "/subscribers/491700000002",
        "{\"company\":\"acme\"}",
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(json(&moved)["company"].as_str(), Some("acme"));
    let (_, beta_reserved) = balance(&server, "beta");
    let a = terminate(&mut c, "pgw1.test;beta;1", "491700000002", 2, MIB);
    assert_eq!(a.result_code, 2001);
    let beta = json(&server.get("/companies/beta").1);
    assert_eq!(beta["reserved"].as_i64(), Some(0));
    // beta-data covered both MiB: the package, not the money, went down.
    assert_eq!(
        beta["packages"][0]["used"].as_i64(),
        Some(2 * MIB as i64),
        "{beta:?}"
    );
    let _ = beta_reserved;
    let (acme0, _) = balance(&server, "acme");
    let a = initial(&mut c, "pgw1.test;acme;2", "491700000002");
    assert_eq!(a.result_code, 2001);
    let (acme1, acme_reserved) = balance(&server, "acme");
    assert!(
        acme_reserved > 0 && acme1 < acme0,
        "acme {acme0} -> {acme1}"
    );
    let a = terminate(&mut c, "pgw1.test;acme;2", "491700000002", 1, MIB);
    assert_eq!(a.result_code, 2001);

    // Barred at run time: new sessions refused; an open one settles and gets no more.
    let a = initial(&mut c, "pgw1.test;acme;3", "491700000001");
    assert_eq!(a.result_code, 2001);
    let (status, barred) = put(
        &server,
        "/subscribers/491700000001",
        "{\"type\":\"subscriber\",\"company\":\"acme\",\"barred\":true}",
    );
    assert_eq!(status, 200, "{barred}");
    let a = c.ccr(
        "pgw1.test;acme;3",
        "491700000001",
        RequestType::Update,
        1,
        MIB / 2,
        true,
    );
    assert_eq!((a.result_code, a.granted), (4010, 0));
    let a = initial(&mut c, "pgw1.test;acme;4", "491700000001");
    assert_eq!(a.result_code, 4010);
    let a = terminate(&mut c, "pgw1.test;acme;3", "491700000001", 2, 0);
    assert_eq!(a.result_code, 2001);
    // A barred company: its subscribers too.
    let (status, body) = put(&server, "/companies/beta", "{\"barred\":true}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["barred"].as_bool(), Some(true));
    let a = initial(&mut c, "pgw1.test;beta;5", "491700000004");
    assert_eq!(a.result_code, 4010);

    // An adjustment, both ways; absurd ones refused and nothing moves.
    let (before, _) = balance(&server, "acme");
    let (status, body) = post(
        &server,
        "/companies/acme/adjust",
        "{\"amount\":-1500,\"reason\":\"double-charged roaming, ticket 4711\"}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["balance"].as_i64(), Some(before - 1500));
    for bad in [
        "{\"amount\":-9223372036854775808,\"reason\":\"x\"}",
        "{\"amount\":0,\"reason\":\"x\"}",
        "{\"amount\":1.5,\"reason\":\"x\"}",
        "{\"amount\":5}",
        "{\"amount\":-1000000000000,\"reason\":\"more than it has\"}",
    ] {
        let (status, body) = post(&server, "/companies/acme/adjust", bad);
        // With two shards, more than the owner shard holds now: try again later.
        let expected = if shards == 2 && bad.contains("more than it has") {
            409
        } else {
            400
        };
        assert_eq!(status, expected, "{bad}: {body}");
    }
    assert_eq!(balance(&server, "acme").0, before - 1500);

    // A top-up retried under its key credits once; the same key on another body: 422.
    let key = [("Idempotency-Key", "topup-2026-12-06-001")];
    let (s1, first) = request(
        server.admin,
        "POST",
        "/companies/acme/topup",
        &key,
        b"{\"amount\":700}",
    );
    let (s2, second) = request(
        server.admin,
        "POST",
        "/companies/acme/topup",
        &key,
        b"{\"amount\":700}",
    );
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second);
    assert_eq!(balance(&server, "acme").0, before - 1500 + 700);
    let (s3, _) = request(
        server.admin,
        "POST",
        "/companies/acme/topup",
        &key,
        b"{\"amount\":900}",
    );
    assert_eq!(s3, 422);
    assert_eq!(balance(&server, "acme").0, before - 1500 + 700);

    // Deleted: gone from lookups and from charging.
    let (status, _) = http(
        server.admin,
        "DELETE",
        "/subscribers/491700000004",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200);
    let (status, _) = server.get("/subscribers/491700000004");
    assert_eq!(status, 404);
    let (status, _) = http(
        server.admin,
        "DELETE",
        "/subscribers/491700000004",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404);
    let a = initial(&mut c, "pgw1.test;gone;1", "491700000004");
    assert_ne!(a.result_code, 2001);

    // A tariff change applies to grants made after it.
    let (status, body) = post(
        &server,
        "/provisioning",
        "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":4000}\n",
    );
    assert_eq!(
        (status, json(&body)["applied"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, _) = put(
        &server,
        "/subscribers/491700000001",
        "{\"company\":\"acme\"}",
    );
    assert_eq!(status, 200);
    let (b0, _) = balance(&server, "acme");
    let a = initial(&mut c, "pgw1.test;acme;6", "491700000001");
    assert_eq!(a.result_code, 2001);
    let a = terminate(&mut c, "pgw1.test;acme;6", "491700000001", 1, MIB);
    assert_eq!(a.result_code, 2001);
    assert_eq!(balance(&server, "acme").0, b0 - 4000);

    // Billing received the money and units given: beta's opening balance and package.
    let opening = balance_records(&server.data_dir, "company");
    assert_eq!(opening.len(), 1);
    assert_eq!(opening[0]["amount"].as_i64(), Some(5_000_000));
    let packages = balance_records(&server.data_dir, "package");
    assert_eq!(packages.len(), 1);
    assert_eq!(packages[0]["added"].as_u64(), Some(10 * MIB));
    let adjusts = balance_records(&server.data_dir, "adjust");
    assert_eq!(adjusts.len(), 1);
    assert_eq!(adjusts[0]["amount"].as_i64(), Some(-1500));

    let state = export(&server);
    assert!(state.contains("\"id\":\"beta\""), "{state}");
    assert!(
        state.contains("\"msisdn\":\"491700000002\",\"company\":\"acme\""),
        "{state}"
    );
    assert!(!state.contains("491700000004"), "{state}");
    assert!(state.contains("\"price\":4000"), "{state}");
    let companies = server.get("/companies").1;

    // SIGKILL, then the same --dataset: the changes are all there, nothing twice.
    drop(c);
    kill9(server);
    let server = start(&dir, shards, false);
    assert_eq!(sorted(&export(&server)), sorted(&state));
    assert_eq!(server.get("/companies").1, companies);
    let (s4, again) = request(
        server.admin,
        "POST",
        "/companies/acme/topup",
        &key,
        b"{\"amount\":700}",
    );
    assert_eq!((s4, again), (200, first.clone()));
    let mut c = Client::connect(server.diameter, "pgw1.test");
    let a = initial(&mut c, "pgw1.test;barred;2", "491700000009");
    assert_eq!(a.result_code, 4010);
    let a = initial(&mut c, "pgw1.test;beta;7", "491700000002");
    assert_eq!(a.result_code, 2001);
    let a = terminate(&mut c, "pgw1.test;beta;7", "491700000002", 1, 0);
    assert_eq!(a.result_code, 2001);
    drop(c);
    let state = export(&server);
    let companies = server.get("/companies").1;

    // SIGTERM (a snapshot is written), then again: the snapshot holds the changes.
    let (ok, _) = server.stop();
    assert!(ok);
    let server = start(&dir, shards, false);
    assert_eq!(sorted(&export(&server)), sorted(&state));
    assert_eq!(server.get("/companies").1, companies);
    let (s5, again) = request(
        server.admin,
        "POST",
        "/companies/acme/topup",
        &key,
        b"{\"amount\":700}",
    );
    assert_eq!((s5, again), (200, first));
    let (ok, _) = server.stop();
    assert!(ok);

    // Offline, the export is the same; and it is a dataset a new server starts from.
    let out = Command::new(GYRO)
        .args(["provision", "export", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = String::from_utf8(out.stdout).unwrap();
    assert_eq!(sorted(&offline), sorted(&state));
    let fresh = temp_dir(&format!("{name}-from-export"));
    std::fs::write(fresh.join("dataset.ndjson"), &offline).unwrap();
    let server = start(&fresh, shards, false);
    assert_eq!(sorted(&export(&server)), sorted(&state));
}

#[test]
fn provisioning_at_run_time_survives_restarts_on_one_shard() {
    lifecycle("prov-one", 1);
}

#[test]
fn provisioning_at_run_time_survives_restarts_on_two_shards() {
    lifecycle("prov-two", 2);
}

#[test]
fn provisioning_routes_need_the_token_and_refuse_what_is_not_theirs() {
    let dir = temp_dir("prov-auth");
    let server = start(&dir, 1, true);
    for (method, path) in [
        ("GET", "/provisioning"),
        ("POST", "/provisioning"),
        ("GET", "/subscribers/491700000001"),
        ("PUT", "/subscribers/491700000001"),
        ("DELETE", "/subscribers/491700000001"),
        ("PUT", "/companies/acme"),
        ("POST", "/companies/acme/adjust"),
    ] {
        let (status, _) = http(server.admin, method, path, None, "{}");
        assert_eq!(status, 401, "{method} {path}");
        let (status, _) = http(server.admin, method, path, Some("wrong"), "{}");
        assert_eq!(status, 401, "{method} {path}");
    }
    // A path and a body that disagree, an MSISDN that is not one.
    let (status, _) = put(
        &server,
        "/subscribers/491700000001",
        "{\"msisdn\":\"491700000002\",\"company\":\"acme\"}",
    );
    assert_eq!(status, 400);
    let (status, _) = http(server.admin, "GET", "/subscribers/49x", Some(TOKEN), "");
    assert_eq!(status, 400);
    // A company's balance is taken only when it is new.
    let (status, body) = put(
        &server,
        "/companies/acme",
        "{\"balance\":999999999999,\"credit_limit\":0}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["balance"].as_i64(), Some(1_000_000));
    // A new company needs its opening balance.
    let (status, body) = put(&server, "/companies/new", "{}");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_large_stream_applies_in_batches_and_a_retry_under_its_key_applies_nothing() {
    let dir = temp_dir("prov-stream");
    let server = start(&dir, 2, true);
    let n = 20_000;
    let mut body = String::with_capacity(n * 80);
    body.push_str("{\"type\":\"company\",\"id\":\"bulk\",\"balance\":1000}\n");
    for i in 0..n {
        if i % 5000 == 4999 {
            body.push_str(&format!(
                "{{\"type\":\"subscriber\",\"msisdn\":\"4915{i:08}\"}}\n"
            ));
        } else {
            body.push_str(&format!(
                "{{\"type\":\"subscriber\",\"msisdn\":\"4915{i:08}\",\"company\":\"bulk\"}}\n"
            ));
        }
    }
    // A line longer than the limit is refused alone.
    body.push_str(&format!(
        "{{\"type\":\"subscriber\",\"msisdn\":\"491599999999\",\"company\":\"{}\"}}\n",
        "x".repeat(100_000)
    ));
    let key = [("Idempotency-Key", "bulk-1")];
    let (status, answer) = request(server.admin, "POST", "/provisioning", &key, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let v = json(&answer);
    assert_eq!(v["applied"].as_u64(), Some(n as u64 + 1 - 4));
    let lines: Vec<u64> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![5001, 10001, 15001, 20001, n as u64 + 2]);
    let (status, again) = request(server.admin, "POST", "/provisioning", &key, body.as_bytes());
    assert_eq!((status, again), (200, answer));
    let (status, _) = request(server.admin, "POST", "/provisioning", &key, b"{}\n");
    assert_eq!(status, 422);
    let (status, s) = server.get("/subscribers/491500012345");
    assert_eq!(status, 200, "{s}");
    let exported = export(&server);
    assert_eq!(
        exported
            .lines()
            .filter(|l| l.contains("\"bulk\"") && l.contains("subscriber"))
            .count(),
        n - 4
    );
}
