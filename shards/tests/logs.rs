//! `gyro serve`'s logs as operators read them: JSON lines (or text) with a time and a
//! level for start, stop and recovery, every peer event (a CER accepted or refused and
//! why, a DPR, a connection closed and why), an audit line per operations change, and
//! nothing per request.

mod common;
use common::{http, temp_dir, Client, Server, TOKEN};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::RequestType;
use gyro_engine::peer::{Peer, PeerConfig};
use simd_json::prelude::*;

const DATASET: &str = concat!(
    "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":1}\n",
    "{\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000000}\n",
    "{\"type\":\"subscriber\",\"msisdn\":\"491700000001\",\"company\":\"acme\"}\n",
);

/// A peer whose Origin-Host is not allowed: its CER is answered 3010 and it is closed.
fn refused_peer(addr: std::net::SocketAddr) {
    let mut p = Peer::initiator(PeerConfig::new("intruder.test", "test"), 0);
    p.connection_up(0);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(p.transmit()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(0) = s.read(&mut buf) {
            return;
        }
    }
    panic!("the refused peer was not closed");
}

/// Runs a server through its life with this log format; returns every line it wrote.
fn a_life(name: &str, format: &str) -> Vec<String> {
    let dir = temp_dir(name);
    let server = Server::start_with_files(
        &dir,
        DATASET,
        "allowed_peers = [\"pgw1.test\"]\n",
        &[("GYRO_LOG_FORMAT", format)],
    );
    refused_peer(server.diameter);
    let mut c = Client::connect(server.diameter, "pgw1.test");
    for i in 0..200 {
        let session = format!("pgw1.test;log;{i}");
        let a = c.ccr(&session, "491700000001", RequestType::Initial, 0, 0, true);
        assert_eq!(a.result_code, 2001);
        let a = c.ccr(
            &session,
            "491700000001",
            RequestType::Termination,
            1,
            1000,
            false,
        );
        assert_eq!(a.result_code, 2001);
    }
    c.goodbye();
    let (status, answer) = common::http_with(
        server.admin,
        "POST",
        "/companies/acme/topup",
        Some(TOKEN),
        &[("Idempotency-Key", "k-1")],
        b"{\"amount\":5000}",
    );
    assert_eq!(status, 200, "{answer}");
    let (status, _) = http(
        server.admin,
        "DELETE",
        "/subscribers/491700000001",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200);
    // The connection's close is logged by its shard's loop: give it a turn.
    std::thread::sleep(Duration::from_millis(200));
    let mut lines = server.startup.clone();
    let (ok, rest) = server.stop();
    assert!(ok);
    lines.extend(rest);
    lines
}

#[test]
fn json_logs_carry_peer_events_audit_lines_start_and_stop_and_nothing_per_request() {
    let lines = a_life("logs-json", "json");
    let events: Vec<simd_json::OwnedValue> = lines
        .iter()
        .map(|l| {
            let mut b = l.clone().into_bytes();
            simd_json::to_owned_value(&mut b).unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .collect();
    for e in &events {
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{e:?}"
        );
        assert!(e["level"].as_str().is_some(), "{e:?}");
        assert!(
            e["target"].as_str().is_some_and(|t| t.starts_with("gyro")),
            "{e:?}"
        );
    }
    let find = |target: &str, message: &str| {
        events
            .iter()
            .filter(|e| {
                e["target"].as_str() == Some(target)
                    && e["message"].as_str().is_some_and(|m| m.contains(message))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(find("gyro", "Diameter on").len(), 1, "{lines:#?}");
    let refused = find("gyro::peer", "CER refused");
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(refused[0]["level"].as_str(), Some("WARN"));
    assert_eq!(refused[0]["result_code"].as_u64(), Some(3010));
    assert_eq!(refused[0]["origin_host"].as_str(), Some("intruder.test"));
    assert!(refused[0]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_peers"));
    let accepted = find("gyro::peer", "CER accepted");
    assert_eq!(accepted.len(), 1, "{lines:#?}");
    assert_eq!(accepted[0]["origin_host"].as_str(), Some("pgw1.test"));
    let dpr = find("gyro::peer", "DPR received");
    assert_eq!(dpr.len(), 1, "{lines:#?}");
    assert_eq!(dpr[0]["disconnect_cause"].as_u64(), Some(2));
    let closed = find("gyro::peer", "connection closed");
    assert_eq!(closed.len(), 2, "{lines:#?}");
    assert!(
        closed
            .iter()
            .any(|e| e["origin_host"].as_str() == Some("pgw1.test")
                && e["requests"].as_u64() == Some(400)),
        "{closed:#?}"
    );
    let audit = find("gyro::audit", "operations change");
    assert_eq!(audit.len(), 2, "{lines:#?}");
    assert_eq!(
        audit[0]["route"].as_str(),
        Some("POST /companies/acme/topup")
    );
    assert_eq!(audit[0]["idempotency_key"].as_str(), Some("k-1"));
    assert_eq!(audit[0]["status"].as_u64(), Some(200));
    assert!(audit[0]["change"].as_str().unwrap().contains("5000"));
    assert_eq!(
        audit[1]["route"].as_str(),
        Some("DELETE /subscribers/491700000001")
    );
    assert_eq!(
        find("gyro", "stopped; CDR log synced").len(),
        1,
        "{lines:#?}"
    );
    // 400 requests, and a handful of lines in all.
    assert!(events.len() < 20, "{lines:#?}");
}

#[test]
fn text_logs_have_a_time_and_a_level_on_every_line() {
    let lines = a_life("logs-text", "text");
    for l in &lines {
        let mut words = l.split_whitespace();
        let time = words.next().unwrap_or("");
        assert!(
            time.len() >= 20 && time.contains('T') && time.ends_with('Z'),
            "{l}"
        );
        let level = words.next().unwrap_or("");
        assert!(["INFO", "WARN", "ERROR", "DEBUG"].contains(&level), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("CER refused") && l.contains("3010")),
        "{lines:#?}"
    );
}
