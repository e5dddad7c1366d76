//! Provisioning changed while the engine charges (`Engine::provision`, `adjust`,
//! `export`), over decoded CCRs: a tariff changed applies to grants made after it, a
//! subscriber moved finishes its open session on the old company, barring and removal
//! refuse new sessions and stop open ones at their next update, corrections and
//! package extensions are bounded, absurd values are refused, and a snapshot keeps it
//! all.

use gyro_engine::charging::engine::{Applied, Decision, Engine, EngineConfig, EngineSnapshot};
use gyro_engine::charging::engine::{OpKey, OpKeys, KEYS_WINDOW_MS};
use gyro_engine::diameter::ccr::{
    subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
};
use gyro_engine::provision::{import_ndjson, parse_change, write_ndjson, Dataset, OnError};

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_780_000_000_000;

const DATASET: &str = r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"company","id":"acme","balance":1000000}
{"type":"company","id":"beta","balance":1000000}
{"type":"subscriber","msisdn":"491700000001","company":"acme"}
"#;

fn engine() -> Engine {
    let mut bytes = DATASET.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    Engine::new(imp.dataset, EngineConfig::default())
}

fn apply(e: &mut Engine, line: &str) -> Result<Applied, String> {
    let change =
        parse_change(&mut line.as_bytes().to_vec(), 1, None).map_err(|errs| format!("{errs:?}"))?;
    e.provision(&change)
}

fn ccr<'a>(
    session: &'a str,
    msisdn: &'a str,
    t: RequestType,
    n: u32,
    used: u64,
    ask: bool,
) -> Ccr<'a> {
    let mut c = Ccr {
        session_id: session,
        origin_host: "pgw.example",
        origin_realm: "example",
        destination_realm: "ocs",
        service_context_id: "32251@3gpp.org",
        request_type: t,
        request_number: n,
        subscription_id_count: 1,
        mscc_count: 1,
        ..Ccr::default()
    };
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: msisdn,
    };
    let octets = |v: u64| Units {
        total_octets: Some(v),
        ..Units::default()
    };
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        requested: ask.then(|| octets(MIB)),
        used: (used > 0).then(|| octets(used)),
        ..Mscc::default()
    };
    c
}

fn granted(d: &Decision) -> u64 {
    d.mscc()[0]
        .granted
        .and_then(|g| g.total_octets)
        .unwrap_or(0)
}

fn money(e: &Engine, company: &str) -> (i64, i64) {
    let c = e.company_by_id(company).unwrap();
    let (m, _) = e.balance(c);
    (m.available, m.reserved)
}

#[test]
fn a_tariff_change_prices_the_grants_made_after_it() {
    let mut e = engine();
    let s = "491700000001";
    let a = e.handle(&ccr("a", s, RequestType::Initial, 0, 0, true), NOW);
    assert_eq!((a.result_code, granted(&a)), (2001, MIB));
    let line =
        r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":5000}"#;
    assert_eq!(apply(&mut e, line), Ok(Applied::Changed));
    assert_eq!(apply(&mut e, line), Ok(Applied::Unchanged));
    // Session a's grant settles at 2,000; a new one is priced at 5,000.
    let a = e.handle(
        &ccr("a", s, RequestType::Termination, 1, MIB, false),
        NOW + 1,
    );
    assert_eq!(a.services()[0].cost, 2000);
    let b = e.handle(&ccr("b", s, RequestType::Initial, 0, 0, true), NOW + 2);
    assert_eq!(b.result_code, 2001);
    let b = e.handle(
        &ccr("b", s, RequestType::Termination, 1, MIB, false),
        NOW + 3,
    );
    assert_eq!(b.services()[0].cost, 5000);
    assert_eq!(money(&e, "acme"), (1_000_000 - 7000, 0));
    // The export holds the tariff as it is now, once.
    let d = e.export();
    assert_eq!(d.tariffs.len(), 1);
    assert_eq!(d.tariffs[0].price, 5000);
}

#[test]
fn a_moved_subscriber_finishes_its_open_session_on_the_old_company() {
    let mut e = engine();
    let s = "491700000001";
    let a = e.handle(&ccr("a", s, RequestType::Initial, 0, 0, true), NOW);
    assert_eq!(a.result_code, 2001);
    let moved = r#"{"type":"subscriber","msisdn":"491700000001","company":"beta"}"#;
    assert_eq!(apply(&mut e, moved), Ok(Applied::Changed));
    let a = e.handle(&ccr("a", s, RequestType::Update, 1, MIB, true), NOW + 1);
    assert_eq!(a.result_code, 2001);
    let a = e.handle(
        &ccr("a", s, RequestType::Termination, 2, MIB, false),
        NOW + 2,
    );
    assert_eq!(a.result_code, 2001);
    assert_eq!(money(&e, "acme"), (1_000_000 - 4000, 0));
    let b = e.handle(&ccr("b", s, RequestType::Initial, 0, 0, true), NOW + 3);
    assert_eq!(b.company, e.company_by_id("beta"));
    let b = e.handle(
        &ccr("b", s, RequestType::Termination, 1, MIB, false),
        NOW + 4,
    );
    assert_eq!(b.result_code, 2001);
    assert_eq!(money(&e, "beta"), (1_000_000 - 2000, 0));
    assert_eq!(money(&e, "acme"), (1_000_000 - 4000, 0));
}

#[test]
fn barring_refuses_new_sessions_and_stops_open_ones_after_settling_their_usage() {
    let mut e = engine();
    let s = "491700000001";
    e.handle(&ccr("a", s, RequestType::Initial, 0, 0, true), NOW);
    let bar = r#"{"type":"subscriber","msisdn":"491700000001","company":"acme","barred":true}"#;
    assert_eq!(apply(&mut e, bar), Ok(Applied::Changed));
    let a = e.handle(&ccr("a", s, RequestType::Update, 1, MIB / 2, true), NOW + 1);
    assert_eq!((a.result_code, granted(&a)), (4010, 0));
    assert_eq!(a.services()[0].cost, 2000, "the usage reported is settled");
    assert_eq!(money(&e, "acme"), (1_000_000 - 2000, 0));
    let b = e.handle(&ccr("b", s, RequestType::Initial, 0, 0, true), NOW + 2);
    assert_eq!(b.result_code, 4010);
    let ev = e.handle(&ccr("ev", s, RequestType::Event, 0, 0, true), NOW + 2);
    assert_eq!(ev.result_code, 4010);
    let a = e.handle(&ccr("a", s, RequestType::Termination, 2, 0, false), NOW + 3);
    assert_eq!(a.result_code, 2001);
    // A barred company bars its subscribers; unbarred, they charge again.
    let unbar = r#"{"type":"subscriber","msisdn":"491700000001","company":"acme"}"#;
    assert_eq!(apply(&mut e, unbar), Ok(Applied::Changed));
    let company = r#"{"type":"company","id":"acme","barred":true}"#;
    assert_eq!(apply(&mut e, company), Ok(Applied::Changed));
    let c = e.handle(&ccr("c", s, RequestType::Initial, 0, 0, true), NOW + 4);
    assert_eq!(c.result_code, 4010);
    let company = r#"{"type":"company","id":"acme","barred":false}"#;
    assert_eq!(apply(&mut e, company), Ok(Applied::Changed));
    let c = e.handle(&ccr("c", s, RequestType::Initial, 0, 0, true), NOW + 5);
    assert_eq!(c.result_code, 2001);
}

#[test]
fn a_removed_subscriber_is_unknown_and_its_open_session_gets_no_more() {
    let mut e = engine();
    let s = "491700000001";
    e.handle(&ccr("a", s, RequestType::Initial, 0, 0, true), NOW);
    let gone = r#"{"type":"subscriber","msisdn":"491700000001","delete":true}"#;
    assert_eq!(apply(&mut e, gone), Ok(Applied::Changed));
    assert!(apply(&mut e, gone).unwrap_err().contains("no subscriber"));
    let a = e.handle(&ccr("a", s, RequestType::Update, 1, MIB, true), NOW + 1);
    assert_eq!((a.result_code, granted(&a)), (4010, 0));
    let b = e.handle(&ccr("b", s, RequestType::Initial, 0, 0, true), NOW + 2);
    assert_ne!(b.result_code, 2001);
    assert!(!e.export().subscribers.iter().any(|x| x.msisdn.is_some()));
    // Provisioned again, it is a new subscriber that charges.
    let back = r#"{"type":"subscriber","msisdn":"491700000001","company":"beta"}"#;
    assert_eq!(apply(&mut e, back), Ok(Applied::Changed));
    let c = e.handle(&ccr("c", s, RequestType::Initial, 0, 0, true), NOW + 3);
    assert_eq!((c.result_code, c.company), (2001, e.company_by_id("beta")));
}

#[test]
fn corrections_and_extensions_are_bounded_and_absurd_values_refused() {
    let mut e = engine();
    let acme = e.company_by_id("acme").unwrap();
    assert_eq!(e.adjust(acme, -400_000), Ok(true));
    assert!(
        e.adjust(acme, -700_000).is_err(),
        "more than it could be granted"
    );
    assert!(e.adjust(acme, i64::MIN).is_err());
    assert_eq!(e.adjust(acme, i64::MAX - 600_000), Ok(true));
    assert!(
        e.adjust(acme, 1).is_err(),
        "overflow is an error, not a wrap"
    );
    assert_eq!(money(&e, "acme").0, i64::MAX);

    let pkg = |amount: u64, until: &str| {
        format!(
            r#"{{"type":"package","id":"p","company":"beta","unit":"octets","amount":{amount},"rating_groups":[10]{until}}}"#
        )
    };
    let beta = e.company_by_id("beta").unwrap();
    assert_eq!(
        apply(&mut e, &pkg(10 * MIB, "")),
        Ok(Applied::Credited {
            company: beta,
            package: Some(0),
            amount: 10 * MIB as i64
        })
    );
    assert_eq!(apply(&mut e, &pkg(10 * MIB, "")), Ok(Applied::Unchanged));
    assert_eq!(
        apply(&mut e, &pkg(12 * MIB, "")),
        Ok(Applied::Credited {
            company: beta,
            package: Some(0),
            amount: 2 * MIB as i64
        })
    );
    // A later expiry alone is an extension too (billing hears of it).
    assert_eq!(
        apply(
            &mut e,
            &pkg(12 * MIB, r#","valid_until":"2099-01-01T00:00:00Z""#)
        ),
        Ok(Applied::Credited {
            company: beta,
            package: Some(0),
            amount: 0
        })
    );
    assert!(apply(&mut e, &pkg(MIB, "")).unwrap_err().contains("shrink"));
    assert!(apply(&mut e, &pkg(u64::MAX, "")).is_err());
    let other = r#"{"type":"package","id":"p","company":"acme","unit":"octets","amount":1}"#;
    assert!(apply(&mut e, other).unwrap_err().contains("belongs to"));
    let (_, packages) = e.balance(beta);
    assert_eq!(packages[0].1.available, 12 * MIB as i64);

    // A company's balance is its opening balance only.
    let again = r#"{"type":"company","id":"beta","balance":999999999}"#;
    assert_eq!(apply(&mut e, again), Ok(Applied::Unchanged));
    assert_eq!(money(&e, "beta").0, 1_000_000);
    let huge = r#"{"type":"company","id":"huge","balance":9223372036854775807}"#;
    assert!(matches!(
        apply(&mut e, huge),
        Ok(Applied::Credited { package: None, .. })
    ));
    let h = e.company_by_id("huge").unwrap();
    assert!(!e.top_up(h, 1), "a top-up past i64::MAX is refused");
    let dangling = r#"{"type":"subscriber","msisdn":"1","company":"nobody"}"#;
    assert!(apply(&mut e, dangling).unwrap_err().contains("nobody"));
    let stolen = r#"{"type":"subscriber","msisdn":"2","imsi":"262011234567890","company":"acme"}"#;
    assert_eq!(apply(&mut e, stolen), Ok(Applied::Changed));
    let thief = r#"{"type":"subscriber","msisdn":"3","imsi":"262011234567890","company":"acme"}"#;
    assert!(apply(&mut e, thief)
        .unwrap_err()
        .contains("another subscriber"));
}

#[test]
fn a_snapshot_keeps_provisioning_changed_at_run_time_and_the_keys() {
    let mut e = engine();
    for line in [
        r#"{"type":"company","id":"gamma","balance":5000,"credit_limit":100}"#,
        r#"{"type":"subscriber","msisdn":"491700000009","company":"gamma","barred":true}"#,
        r#"{"type":"package","id":"g","company":"gamma","unit":"octets","amount":1048576}"#,
        r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":3000}"#,
        r#"{"type":"subscriber","msisdn":"491700000001","delete":true}"#,
    ] {
        assert!(apply(&mut e, line).is_ok(), "{line}");
    }
    e.keys_mut().insert(
        OpKey { key: 7, body: 8 },
        NOW,
        200,
        b"{}".to_vec(),
        KEYS_WINDOW_MS,
    );
    let before = e.export();
    let bytes = e.snapshot(42, 0xfeed).encode();
    let snap = EngineSnapshot::decode(&bytes).unwrap();
    let mut r = Engine::restore(Dataset::default(), snap).unwrap();
    assert_eq!(r.export(), before);
    let mut text = Vec::new();
    write_ndjson(&before, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(r#""msisdn":"491700000009","company":"gamma","barred":true"#),
        "{text}"
    );
    assert_eq!(r.keys().get(7).map(|k| k.status), Some(200));
    let d = r.handle(
        &ccr("x", "491700000009", RequestType::Initial, 0, 0, true),
        NOW,
    );
    assert_eq!(d.result_code, 4010);
    let unbar = r#"{"type":"subscriber","msisdn":"491700000009","company":"gamma"}"#;
    assert_eq!(apply(&mut r, unbar), Ok(Applied::Changed));
    let d = r.handle(
        &ccr("y", "491700000009", RequestType::Initial, 0, 0, true),
        NOW,
    );
    assert_eq!(d.result_code, 2001);
}

#[test]
fn idempotency_keys_expire_after_their_window() {
    let mut k = OpKeys::default();
    k.insert(OpKey { key: 1, body: 1 }, 1_000, 0, Vec::new(), 10_000);
    k.insert(OpKey { key: 2, body: 2 }, 5_000, 201, b"x".to_vec(), 10_000);
    // The answer of a key seen is recorded on its entry.
    k.insert(OpKey { key: 1, body: 1 }, 6_000, 200, b"a".to_vec(), 10_000);
    assert_eq!(
        k.get(1).map(|e| (e.status, e.answer.clone())),
        Some((200, b"a".to_vec()))
    );
    k.expire(12_000, 10_000);
    assert!(k.get(1).is_none());
    assert_eq!(k.get(2).map(|e| e.status), Some(201));
    k.expire(16_000, 10_000);
    assert!(k.is_empty());
}

#[test]
fn a_changed_tariff_keeps_its_place_among_the_tariffs_of_its_rating_group() {
    // Two tariffs of rating group 10: a request without a Service-Identifier is priced
    // by the first; changing the first must not hand rating group 10 to the second.
    let mut bytes = br#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"tariff","rating_group":10,"service_identifier":5,"unit":"octets","unit_size":1048576,"price":9000}
{"type":"company","id":"acme","balance":1000000}
{"type":"subscriber","msisdn":"491700000001","company":"acme"}
"#
    .to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    let mut e = Engine::new(imp.dataset, EngineConfig::default());
    let line =
        r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":3000}"#;
    assert_eq!(apply(&mut e, line), Ok(Applied::Changed));
    let s = "491700000001";
    e.handle(&ccr("a", s, RequestType::Initial, 0, 0, true), NOW);
    let a = e.handle(
        &ccr("a", s, RequestType::Termination, 1, MIB, false),
        NOW + 1,
    );
    assert_eq!(a.services()[0].cost, 3000);
    let prices: Vec<i64> = e.export().tariffs.iter().map(|t| t.price).collect();
    assert_eq!(prices, vec![3000, 9000]);
}

#[test]
fn a_package_id_is_one_package_whichever_route_added_it() {
    let mut e = engine();
    let acme = e.company_by_id("acme").unwrap();
    let beta = e.company_by_id("beta").unwrap();
    let package = |company: u32| gyro_engine::provision::Package {
        id: "p".into(),
        company,
        unit: gyro_engine::provision::Unit::Octets,
        amount: MIB,
        rating_groups: vec![10],
        valid_until: None,
        priority: 0,
    };
    assert!(e.add_package(acme, package(acme)));
    // Bought again, or for another company: refused.
    assert!(!e.add_package(acme, package(acme)));
    assert!(!e.add_package(beta, package(beta)));
    // The same package by provisioning is an upsert of it, not a second one.
    let same = r#"{"type":"package","id":"p","company":"acme","unit":"octets","amount":1048576,"rating_groups":[10]}"#;
    assert_eq!(apply(&mut e, same), Ok(Applied::Unchanged));
    let other = r#"{"type":"package","id":"p","company":"beta","unit":"octets","amount":1048576}"#;
    assert!(apply(&mut e, other).is_err());
    assert_eq!(e.balance(acme).1.len(), 1);
    assert_eq!(e.balance(beta).1.len(), 0);
}

#[test]
fn kept_answers_are_bounded_in_bytes_and_their_keys_stay() {
    use gyro_engine::charging::engine::KEY_ANSWERS_BYTES_MAX;
    let mut k = OpKeys::default();
    let big = vec![b'x'; 1 << 20];
    let n = (KEY_ANSWERS_BYTES_MAX >> 20) as u64 + 6;
    for i in 0..n {
        k.insert(
            OpKey { key: i, body: i },
            NOW,
            200,
            big.clone(),
            KEYS_WINDOW_MS,
        );
    }
    let held: usize = k.entries().map(|e| e.answer.len()).sum();
    assert!(held <= KEY_ANSWERS_BYTES_MAX, "{held}");
    // Every key is still known (a retry makes nothing again); the oldest answers gave way.
    assert_eq!(k.len() as u64, n);
    let oldest = k.get(0).unwrap();
    assert_eq!(oldest.status, 200);
    assert!(String::from_utf8_lossy(&oldest.answer).contains("no longer kept"));
    assert_eq!(k.get(n - 1).unwrap().answer.len(), 1 << 20);
}
