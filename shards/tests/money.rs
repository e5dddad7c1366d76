//! Bounds before pricing, over real sockets against `gyro serve`: absurd usage is
//! refused with 5004 and its Failed-AVP and moves no money; usage within the overuse
//! allowance is charged and flagged; a request for more than the grant maximum is
//! granted the maximum; a refund beyond its maximum credits nothing; after kill -9 the
//! log replays to the same balances (the bounds are journaled).

mod common;
use common::{cdr_cat, data_ccr, http, json, temp_dir, Client, Server};

use gyro_engine::diameter::ccr::{
    subscription_id_type, Ccr, RequestType, RequestedAction, SubscriptionId, Units,
};
use gyro_engine::diameter::Message;
use simd_json::prelude::*;

const MIB: u64 = 1 << 20;
const MSISDN: &str = "491700000001";

/// The company's money as the operations endpoint shows it.
fn balance(server: &Server) -> (i64, i64, i64) {
    let (status, body) = server.get("/companies/acme");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    (
        v["balance"].as_i64().unwrap(),
        v["reserved"].as_i64().unwrap(),
        v["charged"].as_i64().unwrap(),
    )
}

fn data(
    session: &str,
    t: RequestType,
    n: u32,
    requested: Option<u64>,
    used: Option<u64>,
) -> Ccr<'_> {
    data_ccr(session, MSISDN, t, n, requested, used)
}

/// Result-Code, the MSCC's Result-Code and granted octets, and the Failed-AVP's
/// first AVP code (if any).
fn read(answer: &[u8]) -> (u32, Option<u32>, u64, Option<u32>) {
    let msg = Message::new(answer).unwrap();
    let (mut rc, mut mscc_rc, mut granted, mut failed) = (0, None, 0, None);
    for a in msg.avps().flatten() {
        match a.code {
            268 => rc = a.u32().unwrap(),
            279 => failed = a.group().flatten().next().map(|f| f.code),
            456 => {
                for m in a.group().flatten() {
                    match m.code {
                        268 => mscc_rc = Some(m.u32().unwrap()),
                        431 => {
                            for u in m.group().flatten() {
                                if u.code == 421 {
                                    granted = u.u64().unwrap();
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (rc, mscc_rc, granted, failed)
}

fn start(dir: &std::path::Path) -> Server {
    start_with(dir, &[])
}

fn start_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let dataset = format!(
        r#"{{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":1000}}
{{"type":"tariff","service_identifier":1,"unit":"units","unit_size":1,"price":1000000}}
{{"type":"company","id":"acme","balance":100000000}}
{{"type":"subscriber","msisdn":"{MSISDN}","company":"acme"}}
{{"type":"company","id":"little","balance":3000000}}
{{"type":"subscriber","msisdn":"491700000002","company":"little"}}
{{"type":"company","id":"broke","balance":0}}
{{"type":"subscriber","msisdn":"491700000003","company":"broke"}}
"#
    );
    let config =
        "overuse_allowance_percent = 10\ngrant_max_octets = 52428800\nrefund_max_micros = 5000000\n";
    Server::start_with_files(dir, &dataset, config, env)
}

#[test]
fn values_a_peer_sends_are_bounded_before_they_move_money() {
    let dir = temp_dir("money-bounds");
    let server = start(&dir);
    let mut c = Client::connect(server.diameter, "pgw.test");
    let first = balance(&server);

    // A request for 2^64-1 octets is granted the maximum (50 MiB), no more.
    let a = read(&c.request(&data(
        "pgw.test;b;1",
        RequestType::Initial,
        0,
        Some(u64::MAX),
        None,
    )));
    assert_eq!((a.0, a.1, a.2), (2001, Some(2001), 50 * MIB), "{a:?}");
    let after_grant = balance(&server);
    assert_eq!(after_grant.1, 50 * 1000, "50 MiB reserved at 1000 a MiB");
    assert_eq!(first.0 - after_grant.0, 50 * 1000);

    // Usage of 2^64-1 octets: refused with 5004 naming the Used-Service-Unit; nothing
    // charged, the reservation kept.
    let absurd_values = [u64::MAX, 1 << 63, (1 << 32) - 1, 50 * MIB * 11 / 10 + 1];
    for (n, absurd) in (1..).zip(absurd_values) {
        let a = read(&c.request(&data(
            "pgw.test;b;1",
            RequestType::Update,
            n,
            Some(MIB),
            Some(absurd),
        )));
        assert_eq!(a.1, Some(5004), "usage {absurd}: {a:?}");
        assert_eq!(
            a.3,
            Some(446),
            "usage {absurd}: Failed-AVP holds the Used-Service-Unit"
        );
        assert_eq!(balance(&server), after_grant, "usage {absurd} moved money");
    }

    // Usage within the 10% allowance is charged, and the CDR says overuse.
    let a = read(&c.request(&data(
        "pgw.test;b;1",
        RequestType::Update,
        5,
        Some(MIB),
        Some(55 * MIB),
    )));
    assert_eq!(a.1, Some(2001), "{a:?}");
    let after_overuse = balance(&server);
    assert_eq!(after_overuse.2 - after_grant.2, 55 * 1000, "55 MiB charged");
    let a = read(&c.request(&data(
        "pgw.test;b;1",
        RequestType::Termination,
        6,
        None,
        Some(MIB),
    )));
    assert_eq!(a.0, 2001);

    // A refund of 2^63-1 units (rated far beyond 5 currency units) credits nothing.
    let refund = |units: u64, e2e_session: &'static str| {
        let mut r = Ccr {
            session_id: e2e_session,
            origin_host: "smsc.test",
            origin_realm: "test",
            destination_realm: "gyro.local",
            service_context_id: "32274@3gpp.org",
            request_type: RequestType::Event,
            request_number: 0,
            requested_action: Some(RequestedAction::RefundAccount),
            service_identifier: Some(1),
            requested: Some(Units {
                service_specific: Some(units),
                ..Units::default()
            }),
            subscription_id_count: 1,
            ..Ccr::default()
        };
        r.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: MSISDN,
        };
        r
    };
    let before_refunds = balance(&server);
    let a = read(&c.request(&refund(i64::MAX as u64, "smsc.test;r;1")));
    assert_eq!(a.0, 5004, "{a:?}");
    assert_eq!(
        a.3,
        Some(437),
        "Failed-AVP holds the Requested-Service-Unit"
    );
    assert_eq!(
        balance(&server),
        before_refunds,
        "an absurd refund credited money"
    );
    // Within the bound: credited.
    let a = read(&c.request(&refund(3, "smsc.test;r;2")));
    assert_eq!(a.0, 2001, "{a:?}");
    let after_refund = balance(&server);
    assert_eq!(after_refund.0 - before_refunds.0, 3_000_000);

    // The CDRs: the overuse is flagged; the refused usage and refund charged nothing.
    let cdrs = cdr_cat(&server.data_dir.join("shard-0"));
    let mut refused = 0;
    for line in cdrs.lines() {
        let v = json(line);
        for s in v["services"].as_array().unwrap() {
            if s["result_code"].as_u64() == Some(5004) {
                refused += 1;
                assert_eq!(s["cost"].as_i64(), Some(0), "{line}");
            }
            if v["request_number"].as_u64() == Some(5)
                && v["session_id"].as_str() == Some("pgw.test;b;1")
            {
                assert_eq!(s["overuse"].as_bool(), Some(true), "{line}");
            }
        }
    }
    assert_eq!(
        refused, 5,
        "four refused usages and one refused refund: {cdrs}"
    );
    // The events say what they were; the refunds are recognisable as such.
    for v in cdrs.lines().map(json) {
        let session = v["session_id"].as_str().unwrap();
        let expected = session.starts_with("smsc.test").then_some("refund_account");
        assert_eq!(v["requested_action"].as_str(), expected, "{session}");
    }

    // kill -9: the log replays to the same balances.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let again = start(&dir);
    assert_eq!(balance(&again), after_refund, "replay after kill -9");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ids of the top-up records in a data directory's log.
fn top_up_ids(data_dir: &std::path::Path) -> Vec<String> {
    cdr_cat(&data_dir.join("shard-0"))
        .lines()
        .map(json)
        .filter(|v| v["kind"].as_str() == Some("topup"))
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn top_up_ids_never_repeat_across_restarts_and_data_directories() {
    let token = [("GYRO_ADMIN_TOKEN", "t")];
    let top_up = |server: &Server| {
        let (status, body) = http(
            server.admin,
            "POST",
            "/companies/acme/topup",
            Some("t"),
            "{\"amount\": 1000}",
        );
        assert_eq!(status, 200, "{body}");
    };
    let a = temp_dir("money-ids-a");
    let b = temp_dir("money-ids-b");
    // A top-up, then kill -9 and another top-up on the same data directory.
    let mut server = start_with(&a, &token);
    top_up(&server);
    let first = top_up_ids(&server.data_dir);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = start_with(&a, &token);
    top_up(&server);
    let after_restart = top_up_ids(&server.data_dir);
    let balance_a = balance(&server).0;
    drop(server);
    // The same on a new data directory: the same sequence numbers come again.
    let server = start_with(&b, &token);
    top_up(&server);
    let other_dir = top_up_ids(&server.data_dir);
    assert_eq!(
        balance(&server).0 + 1000,
        balance_a,
        "two top-ups on A, one on B"
    );
    drop(server);

    assert_eq!(first.len(), 1);
    assert_eq!(after_restart.len(), 2);
    assert_eq!(after_restart[0], first[0], "a replayed record keeps its id");
    let mut all = after_restart.clone();
    all.extend(other_dir);
    for id in &all {
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!(
            (parts[0], parts[1], parts[2].len()),
            ("topup", "0", 16),
            "{id}"
        );
        assert!(parts[3].parse::<u64>().is_ok(), "{id}");
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an id repeated: {all:?}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// A single-service request (RFC 8506: no MSCC, units and Service-Identifier at the
/// top level) for service 1, counted in units.
fn single<'a>(
    session: &'a str,
    msisdn: &'a str,
    t: RequestType,
    n: u32,
    requested: Option<u64>,
    used: Option<u64>,
) -> Ccr<'a> {
    let units = |v: u64| Units {
        service_specific: Some(v),
        ..Units::default()
    };
    let mut c = Ccr {
        session_id: session,
        origin_host: "pgw.test",
        origin_realm: "test",
        destination_realm: "gyro.local",
        service_context_id: "32270@3gpp.org",
        request_type: t,
        request_number: n,
        service_identifier: Some(1),
        requested: requested.map(units),
        used: used.map(units),
        subscription_id_count: 1,
        ..Ccr::default()
    };
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: msisdn,
    };
    c
}

/// Result-Code, the top-level granted units, Validity-Time and Final-Unit-Action, and
/// whether the answer has any MSCC.
fn read_top(answer: &[u8]) -> (u32, Option<u64>, Option<u32>, Option<u32>, bool) {
    let msg = Message::new(answer).unwrap();
    let (mut rc, mut granted, mut validity, mut fua, mut mscc) = (0, None, None, None, false);
    for a in msg.avps().flatten() {
        match a.code {
            268 => rc = a.u32().unwrap(),
            431 => {
                for u in a.group().flatten() {
                    if u.code == 417 {
                        granted = Some(u.u64().unwrap());
                    }
                }
            }
            448 => validity = Some(a.u32().unwrap()),
            430 => {
                fua = a
                    .group()
                    .flatten()
                    .find(|f| f.code == 449)
                    .map(|f| f.u32().unwrap())
            }
            456 => mscc = true,
            _ => {}
        }
    }
    (rc, granted, validity, fua, mscc)
}

#[test]
fn a_single_service_session_is_granted_settled_and_charged_like_an_mscc_session() {
    let dir = temp_dir("money-single");
    let server = start(&dir);
    let mut c = Client::connect(server.diameter, "pgw.test");
    let first = balance(&server);
    let s = "pgw.test;single;1";
    // CCR-I: 10 units asked, 10 granted at the top level, no MSCC.
    let a = read_top(&c.request(&single(s, MSISDN, RequestType::Initial, 0, Some(10), None)));
    assert_eq!((a.0, a.1, a.4), (2001, Some(10), false), "{a:?}");
    assert!(a.2.is_some(), "a Validity-Time: {a:?}");
    assert_eq!(balance(&server).1, 10_000_000, "10 units reserved");
    // CCR-U: 10 used (charged), 10 more granted.
    let a = read_top(&c.request(&single(
        s,
        MSISDN,
        RequestType::Update,
        1,
        Some(10),
        Some(10),
    )));
    assert_eq!((a.0, a.1), (2001, Some(10)), "{a:?}");
    // CCR-T: 4 used; the rest goes back.
    let a = read_top(&c.request(&single(
        s,
        MSISDN,
        RequestType::Termination,
        2,
        None,
        Some(4),
    )));
    assert_eq!(a.0, 2001, "{a:?}");
    let end = balance(&server);
    assert_eq!(
        (first.0 - end.0, end.1, end.2 - first.2),
        (14_000_000, 0, 14_000_000)
    );
    // A retransmission of the CCR-U... is not the last request any more: 5012, no change.
    let a = read_top(&c.request(&single(
        s,
        MSISDN,
        RequestType::Update,
        1,
        Some(10),
        Some(10),
    )));
    assert_ne!(a.0, 2001, "{a:?}");
    assert_eq!(balance(&server), end, "a late copy moved money");

    // The last affordable units come with Final-Unit-Indication; nothing left is 4012.
    let a = read_top(&c.request(&single(
        "pgw.test;single;2",
        "491700000002",
        RequestType::Initial,
        0,
        Some(10),
        None,
    )));
    assert_eq!(
        (a.0, a.1, a.3),
        (2001, Some(3), Some(0)),
        "3 units and TERMINATE: {a:?}"
    );
    let a = read_top(&c.request(&single(
        "pgw.test;single;3",
        "491700000003",
        RequestType::Initial,
        0,
        Some(10),
        None,
    )));
    assert_eq!(a.0, 4012, "{a:?}");

    // Billing sees the usage: the CDRs of session 1 charged 10 + 4 units.
    let cdrs = cdr_cat(&server.data_dir.join("shard-0"));
    let charged: i64 = cdrs
        .lines()
        .map(json)
        .filter(|v| v["session_id"].as_str() == Some(s))
        .flat_map(|v| v["services"].as_array().unwrap().clone())
        .map(|svc| svc["cost"].as_i64().unwrap())
        .sum();
    assert_eq!(charged, 14_000_000, "{cdrs}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer's AVPs (what follows the header): a duplicate's must be the original's.
fn body(answer: &[u8]) -> &[u8] {
    &answer[20..]
}

/// A CCR-EVENT debiting `units` of service 1.
fn event(session: &str, units: u64) -> Ccr<'_> {
    let mut e = single(session, MSISDN, RequestType::Event, 0, Some(units), None);
    e.requested_action = Some(RequestedAction::DirectDebiting);
    e
}

fn restart_after_kill(mut server: Server, dir: &std::path::Path) -> Server {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    start(dir)
}

#[test]
fn a_duplicate_gets_its_original_answer_across_restarts_and_kill_9() {
    let dir = temp_dir("money-dups");
    let server = start(&dir);
    let mut c = Client::connect(server.diameter, "pgw.test");
    let s = "pgw.test;dup;1";
    let ccr_i = data(s, RequestType::Initial, 0, Some(MIB), None);
    let u1 = data(s, RequestType::Update, 1, Some(MIB), Some(MIB));
    let u2 = data(s, RequestType::Update, 2, Some(MIB), Some(MIB));
    let (i_ids, _) = c.exchange(&ccr_i);
    let (u1_ids, u1_answer) = c.exchange(&u1);
    let (u2_ids, u2_answer) = c.exchange(&u2);
    assert_eq!(read(&u2_answer).0, 2001);
    let open = balance(&server);

    // The last two requests of an open session get their answers again, with the T flag
    // and the same ids or as a new request (new ids); nothing moves.
    assert_eq!(body(&c.retransmit(&u1, u1_ids)), body(&u1_answer));
    assert_eq!(body(&c.request(&u1)), body(&u1_answer));
    assert_eq!(body(&c.retransmit(&u2, u2_ids)), body(&u2_answer));
    // An older one's answer is gone: 5012.
    assert_eq!(read(&c.retransmit(&ccr_i, i_ids)).0, 5012);
    assert_eq!(balance(&server), open, "a duplicate moved money");

    // An event: 2 units debited once, however it comes again.
    let ev1 = event("pgw.test;event;1", 2);
    let (ev1_ids, ev1_answer) = c.exchange(&ev1);
    assert_eq!(read_top(&ev1_answer).0, 2001);
    let charged = balance(&server);
    assert_eq!(open.0 - charged.0, 2_000_000);
    assert_eq!(body(&c.retransmit(&ev1, ev1_ids)), body(&ev1_answer));
    assert_eq!(body(&c.request(&ev1)), body(&ev1_answer));
    assert_eq!(balance(&server), charged);

    // A clean stop (an engine snapshot) and a start: the answers are still kept.
    drop(c);
    let (ok, _) = server.stop();
    assert!(ok);
    let server = start(&dir);
    assert!(
        server
            .startup
            .iter()
            .any(|l| l.contains("starting from the engine snapshot")),
        "{:?}",
        server.startup
    );
    let mut c = Client::connect(server.diameter, "pgw.test");
    assert_eq!(balance(&server), charged);
    assert_eq!(body(&c.retransmit(&ev1, ev1_ids)), body(&ev1_answer));
    assert_eq!(body(&c.request(&ev1)), body(&ev1_answer));
    assert_eq!(body(&c.retransmit(&u1, u1_ids)), body(&u1_answer));
    assert_eq!(body(&c.retransmit(&u2, u2_ids)), body(&u2_answer));
    assert_eq!(
        balance(&server),
        charged,
        "a duplicate moved money after a restart"
    );

    // The session ends; another event. Both are in the log after the snapshot.
    let t = data(s, RequestType::Termination, 3, None, Some(MIB / 2));
    let (t_ids, t_answer) = c.exchange(&t);
    assert_eq!(read(&t_answer).0, 2001);
    let ev2 = event("pgw.test;event;2", 1);
    let (ev2_ids, ev2_answer) = c.exchange(&ev2);
    assert_eq!(read_top(&ev2_answer).0, 2001);
    let end = balance(&server);
    assert_eq!(end.1, 0, "nothing reserved after the CCR-T");
    // A closed session's last request gets its answer; earlier ones 5012.
    assert_eq!(body(&c.retransmit(&t, t_ids)), body(&t_answer));
    assert_eq!(read(&c.retransmit(&u2, u2_ids)).0, 5012);
    assert_eq!(balance(&server), end);

    // kill -9: the snapshot and the log after it rebuild every kept answer.
    drop(c);
    let server = restart_after_kill(server, &dir);
    let mut c = Client::connect(server.diameter, "pgw.test");
    assert_eq!(balance(&server), end);
    assert_eq!(body(&c.retransmit(&t, t_ids)), body(&t_answer));
    assert_eq!(body(&c.request(&t)), body(&t_answer));
    assert_eq!(body(&c.retransmit(&ev2, ev2_ids)), body(&ev2_answer));
    assert_eq!(body(&c.retransmit(&ev1, ev1_ids)), body(&ev1_answer));
    assert_eq!(read(&c.retransmit(&ccr_i, i_ids)).0, 5012);
    assert_eq!(
        balance(&server),
        end,
        "a duplicate moved money after kill -9"
    );

    // Billing gets one CDR per request, none for a duplicate.
    let cdrs = cdr_cat(&server.data_dir.join("shard-0"));
    let count = |id: &str| {
        cdrs.lines()
            .map(json)
            .filter(|v| v["session_id"].as_str() == Some(id))
            .count()
    };
    assert_eq!(
        (
            count(s),
            count("pgw.test;event;1"),
            count("pgw.test;event;2")
        ),
        (4, 1, 1),
        "{cdrs}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
