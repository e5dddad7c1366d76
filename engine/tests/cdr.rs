//! CDR lines: what the writer produces parses as JSON with every documented field, the
//! values the request and the decision carried, strings escaped (quotes, backslashes,
//! control characters, non-ASCII), an id stable across retries, and a clean refusal
//! when the buffer is too small.

use gyro_engine::cdr::{write_cdr, BufferFull, Cdr, CdrKind, CdrService};
use gyro_engine::diameter::ccr::{sample_ccr_update, Ccr};
use gyro_engine::provision::Unit;
use simd_json::prelude::*;

fn services() -> [CdrService<'static>; 2] {
    [
        CdrService {
            rating_group: Some(10),
            unit: Some(Unit::Octets),
            requested: 10_485_760,
            granted: 10_485_760,
            used: 8_388_608,
            cost: 0,
            package: Some("acme-data"),
            package_units: 8_388_608,
            result_code: 2001,
            reporting_reason: Some(3),
            ..CdrService::default()
        },
        CdrService {
            rating_group: Some(20),
            unit: Some(Unit::Octets),
            used: 65_536,
            cost: 2_000,
            result_code: 4012,
            reporting_reason: Some(4),
            overuse: true,
            ..CdrService::default()
        },
    ]
}

fn line(ccr: &Ccr<'_>, services: &[CdrService<'_>]) -> String {
    let cdr = Cdr {
        kind: CdrKind::Ccr,
        seq: 42,
        shard: 1,
        ts_ms: 1_732_598_400_123,
        ccr,
        msisdn: Some("491701234567"),
        imsi: None,
        company: Some("acme"),
        result_code: 2001,
        services,
    };
    let mut buf = vec![0u8; 4096];
    let n = write_cdr(&cdr, &mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn a_cdr_line_has_every_field() {
    let ccr = sample_ccr_update();
    let s = line(&ccr, &services());
    assert!(s.ends_with('\n') && s.matches('\n').count() == 1);
    let mut bytes = s.trim_end().as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut bytes).expect("valid JSON");
    assert_eq!(v["id"].as_str(), Some("pgw1.op.example;1732598400;42#3"));
    assert_eq!(v["kind"].as_str(), Some("ccr"));
    assert_eq!(v["seq"].as_u64(), Some(42));
    assert_eq!(v["shard"].as_u64(), Some(1));
    assert_eq!(v["ts"].as_u64(), Some(1_732_598_400_123));
    assert_eq!(
        v["session_id"].as_str(),
        Some("pgw1.op.example;1732598400;42")
    );
    assert_eq!(v["origin_host"].as_str(), Some("pgw1.op.example"));
    assert_eq!(v["request_type"].as_str(), Some("update"));
    assert_eq!(v["request_number"].as_u64(), Some(3));
    assert_eq!(v["msisdn"].as_str(), Some("491701234567"));
    assert!(v["imsi"].is_null());
    assert_eq!(v["company"].as_str(), Some("acme"));
    assert_eq!(v["result_code"].as_u64(), Some(2001));
    let svc = v["services"].as_array().unwrap();
    assert_eq!(svc.len(), 2);
    assert_eq!(svc[0]["rating_group"].as_u64(), Some(10));
    assert_eq!(svc[0]["unit"].as_str(), Some("octets"));
    assert_eq!(svc[0]["package"].as_str(), Some("acme-data"));
    assert_eq!(svc[0]["package_units"].as_u64(), Some(8_388_608));
    assert_eq!(svc[0]["reporting_reason"].as_u64(), Some(3));
    assert_eq!(svc[1]["cost"].as_i64(), Some(2_000));
    assert_eq!(svc[1]["result_code"].as_u64(), Some(4012));
    assert_eq!(svc[1]["overuse"].as_bool(), Some(true));
    assert!(svc[1]["package"].is_null());
    assert_eq!(v["charging_id"].as_u64(), Some(0x0abc_def0));
    assert_eq!(v["apn"].as_str(), Some("internet"));
    assert_eq!(v["rat_type"].as_str(), Some("06"));
    assert_eq!(v["mcc_mnc"].as_str(), Some("26201"));
}

#[test]
fn strings_are_escaped_and_read_back_unchanged() {
    let mut ccr = sample_ccr_update();
    let weird = "pgw\"1\\x;\u{1};tab\t;nl\n;é€😀";
    ccr.session_id = weird;
    let s = line(&ccr, &[]);
    assert_eq!(s.matches('\n').count(), 1, "one line: {s}");
    let mut bytes = s.trim_end().as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut bytes).expect("valid JSON");
    assert_eq!(v["session_id"].as_str(), Some(weird));
    assert_eq!(v["id"].as_str().unwrap(), format!("{weird}#3"));
}

#[test]
fn the_id_is_stable_for_a_retry_and_differs_per_request() {
    let ccr = sample_ccr_update();
    let mut again = ccr;
    again.header.end_to_end ^= 0xffff; // a retransmission may carry a new End-to-End
    let id = |c: &Ccr<'_>| {
        let l = line(c, &[]);
        let mut b = l.trim_end().as_bytes().to_vec();
        simd_json::to_owned_value(&mut b).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&ccr), id(&again));
    let mut next = ccr;
    next.request_number += 1;
    assert_ne!(id(&ccr), id(&next));
}

#[test]
fn a_small_buffer_is_refused() {
    let ccr = sample_ccr_update();
    let svc = services();
    let cdr = Cdr {
        kind: CdrKind::SupervisionTimeout,
        seq: 1,
        shard: 0,
        ts_ms: 0,
        ccr: &ccr,
        msisdn: None,
        imsi: None,
        company: None,
        result_code: 2001,
        services: &svc,
    };
    for size in [0usize, 1, 10, 100, 300] {
        let mut buf = vec![0u8; size];
        assert_eq!(write_cdr(&cdr, &mut buf), Err(BufferFull), "size {size}");
    }
}

#[test]
fn addresses_and_location_are_written_readably() {
    use gyro_engine::diameter::avp::Address;
    let mut ccr = sample_ccr_update();
    ccr.ps.user_location_info = Some(&[0x82, 0x62, 0xf2, 0x10]);
    for (addr, text) in [
        (Address::V4([10, 1, 2, 3]), "10.1.2.3"),
        (
            Address::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            "2001:db8::1",
        ),
    ] {
        ccr.ps.sgsn_address = Some(addr);
        let s = line(&ccr, &[]);
        let mut bytes = s.trim_end().as_bytes().to_vec();
        let v = simd_json::to_owned_value(&mut bytes).expect("valid JSON");
        assert_eq!(v["sgsn_address"].as_str(), Some(text));
        assert_eq!(v["location"].as_str(), Some("8262f210"));
    }
}
