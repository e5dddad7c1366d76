//! The single-shard credit-control engine over decoded CCRs: a company with a 10 MiB
//! package and a little money is used up by two subscribers' sessions (package, then
//! money, then Final-Unit-Indication, then 4012), a top-up lets the next session in,
//! duplicates change nothing, CCR-T and Tcc release reservations, events debit, refund,
//! check balance and price, and the money is conserved throughout.

use gyro_engine::charging::engine::{Decision, Engine, EngineConfig, Outcome};
use gyro_engine::diameter::ccr::{
    subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId, Units,
};
use gyro_engine::provision::{import_ndjson, OnError};

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_780_000_000_000;

const DATASET: &str = r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"tariff","service_identifier":1,"unit":"units","unit_size":1,"price":50000}
{"type":"company","id":"acme","balance":6000,"credit_limit":0}
{"type":"package","id":"acme-data","company":"acme","unit":"octets","amount":10485760,"rating_groups":[10],"priority":1}
{"type":"company","id":"rich","balance":10000000}
{"type":"subscriber","msisdn":"491700000001","company":"acme"}
{"type":"subscriber","msisdn":"491700000002","company":"acme"}
{"type":"subscriber","msisdn":"491700000003","company":"rich"}
"#;

fn engine() -> Engine {
    let mut bytes = DATASET.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    Engine::new(
        imp.dataset,
        EngineConfig {
            validity_time_s: 60,
            ..EngineConfig::default()
        },
    )
}

fn ccr<'a>(
    session: &'a str,
    msisdn: &'a str,
    t: RequestType,
    n: u32,
    rsu: Option<u64>,
    usu: Option<u64>,
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
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        service_identifier: None,
        requested: rsu.map(|v| Units {
            total_octets: Some(v),
            ..Units::default()
        }),
        used: usu.map(|v| Units {
            total_octets: Some(v),
            ..Units::default()
        }),
        reporting_reason: None,
    };
    c
}

/// A CCR-I for `session` of subscriber `msisdn`, asking for 1 MiB, at `NOW`.
fn open_session(e: &mut Engine, session: &str, msisdn: &str) -> Decision {
    e.handle(
        &ccr(session, msisdn, RequestType::Initial, 0, Some(MIB), None),
        NOW,
    )
}

fn granted(e: &gyro_engine::charging::engine::Decision) -> u64 {
    e.mscc()[0]
        .granted
        .and_then(|g| g.total_octets)
        .unwrap_or(0)
}

#[test]
fn package_then_money_then_final_unit_then_4012_then_top_up() {
    let mut e = engine();
    // Subscriber 1 takes 6 MiB of the package, subscriber 2 the other 4 MiB.
    let a = e.handle(
        &ccr(
            "a",
            "491700000001",
            RequestType::Initial,
            0,
            Some(6 * MIB),
            None,
        ),
        NOW,
    );
    assert_eq!((a.result_code, granted(&a)), (2001, 6 * MIB));
    assert_eq!(e.package_id(0, a.package[0].unwrap_or(0)), "acme-data");
    let b = e.handle(
        &ccr(
            "b",
            "491700000002",
            RequestType::Initial,
            0,
            Some(8 * MIB),
            None,
        ),
        NOW,
    );
    assert_eq!((b.result_code, granted(&b)), (2001, 4 * MIB));
    assert!(b.mscc()[0].final_unit_action.is_none(), "money is left");
    // Both report full use; the package is empty, money pays: 6,000 buys 3 MiB.
    let a = e.handle(
        &ccr(
            "a",
            "491700000001",
            RequestType::Update,
            1,
            Some(2 * MIB),
            Some(6 * MIB),
        ),
        NOW + 1,
    );
    assert_eq!((a.result_code, granted(&a)), (2001, 2 * MIB));
    assert_eq!(a.services()[0].package_units, 6 * MIB);
    let b = e.handle(
        &ccr(
            "b",
            "491700000002",
            RequestType::Update,
            1,
            Some(5 * MIB),
            Some(4 * MIB),
        ),
        NOW + 2,
    );
    assert_eq!((b.result_code, granted(&b)), (2001, MIB));
    assert!(
        b.mscc()[0].final_unit_action.is_some(),
        "the last affordable megabyte"
    );
    // Nothing left: 4012 at MSCC and command level.
    let b = e.handle(
        &ccr(
            "b",
            "491700000002",
            RequestType::Update,
            2,
            Some(MIB),
            Some(MIB),
        ),
        NOW + 3,
    );
    assert_eq!((b.result_code, b.mscc()[0].result_code), (4012, 4012));
    let a = e.handle(
        &ccr(
            "a",
            "491700000001",
            RequestType::Termination,
            2,
            None,
            Some(2 * MIB),
        ),
        NOW + 4,
    );
    assert_eq!(a.result_code, 2001);
    let (money, packages) = e.balance(0);
    assert_eq!(
        (money.available, money.reserved, money.settled),
        (0, 0, 6_000)
    );
    assert_eq!(packages[0].1.available, 0);
    assert!(money.is_conserved());
    // A CCR-I refused with 4012 leaves no session behind (the client sends no CCR-T
    // for it): only b, which got its 4012 on an update, is still open.
    let open = e.open_sessions();
    let refused = e.handle(
        &ccr(
            "d",
            "491700000001",
            RequestType::Initial,
            0,
            Some(MIB),
            None,
        ),
        NOW + 4,
    );
    assert_eq!(refused.result_code, 4012);
    assert_eq!(
        e.open_sessions(),
        open,
        "no session kept for a refused CCR-I"
    );
    let late = e.handle(
        &ccr("d", "491700000001", RequestType::Update, 1, Some(MIB), None),
        NOW + 4,
    );
    assert_eq!(late.result_code, 5002, "the refused session does not exist");
    // A top-up lets the next session in.
    assert!(e.top_up(0, 10_000));
    let c = e.handle(
        &ccr(
            "c",
            "491700000001",
            RequestType::Initial,
            0,
            Some(MIB),
            None,
        ),
        NOW + 5,
    );
    assert_eq!((c.result_code, granted(&c)), (2001, MIB));
}

#[test]
fn a_duplicate_gets_the_same_answer_and_changes_nothing() {
    let mut e = engine();
    open_session(&mut e, "s", "491700000003");
    let u = ccr(
        "s",
        "491700000003",
        RequestType::Update,
        1,
        Some(MIB),
        Some(MIB),
    );
    let first = e.handle(&u, NOW + 1);
    let before = e.balance(1).0;
    let again = e.handle(&u, NOW + 2);
    assert_eq!(
        (first.outcome, again.outcome),
        (Outcome::Charged, Outcome::Duplicate)
    );
    assert_eq!(again.mscc(), first.mscc());
    assert_eq!(e.balance(1).0, before, "no second debit");
}

#[test]
fn unknown_subscriber_and_unknown_session() {
    let mut e = engine();
    assert_eq!(
        e.handle(
            &ccr(
                "x",
                "499999999999",
                RequestType::Initial,
                0,
                Some(MIB),
                None
            ),
            NOW
        )
        .result_code,
        5030
    );
    assert_eq!(
        e.handle(
            &ccr("y", "491700000003", RequestType::Update, 1, Some(MIB), None),
            NOW
        )
        .result_code,
        5002
    );
}

/// After the CCR-I, Subscription-Id is optional (RFC 8506 §3.1): a CCR-U and a CCR-T
/// without it are charged to the session's subscriber, and one naming somebody else
/// does not move the session to another company.
#[test]
fn ccr_u_and_ccr_t_are_charged_to_the_sessions_subscriber() {
    let mut e = engine();
    assert_eq!(open_session(&mut e, "s", "491700000003").result_code, 2001);
    let rich = e.company_by_id("rich").unwrap();
    let before = e.balance(rich).0;
    let mut u = ccr(
        "s",
        "491700000003",
        RequestType::Update,
        1,
        Some(MIB),
        Some(MIB),
    );
    u.subscription_id_count = 0;
    let u = e.handle(&u, NOW + 1_000);
    assert_eq!(u.result_code, 2001, "{u:?}");
    assert_eq!(u.company, Some(rich));
    // Another subscriber's MSISDN (company acme) in a CCR-T of this session.
    let t = e.handle(
        &ccr(
            "s",
            "491700000001",
            RequestType::Termination,
            2,
            None,
            Some(MIB),
        ),
        NOW + 2_000,
    );
    assert_eq!(t.result_code, 2001, "{t:?}");
    assert_eq!(t.company, Some(rich));
    let after = e.balance(rich).0;
    assert!(
        after.settled > before.settled,
        "the usage was charged to the session's company: {before:?} -> {after:?}"
    );
    assert_eq!(after.reserved, 0, "the CCR-T released the reservation");
}

#[test]
fn tcc_expiry_releases_reservations() {
    let mut e = engine();
    e.handle(
        &ccr(
            "s",
            "491700000003",
            RequestType::Initial,
            0,
            Some(5 * MIB),
            None,
        ),
        NOW,
    );
    assert_eq!(e.balance(1).0.reserved, 10_000);
    let mut gone = Vec::new();
    assert_eq!(
        e.expire(NOW + 119_000, |id, _| gone.push(id.to_owned())),
        0,
        "Tcc is twice the 60 s Validity-Time"
    );
    assert_eq!(e.expire(NOW + 120_000, |id, _| gone.push(id.to_owned())), 1);
    assert_eq!(gone, ["s"]);
    assert_eq!(e.balance(1).0.reserved, 0);
    assert_eq!(e.open_sessions(), 0);
}

#[test]
fn events_debit_refund_check_and_price() {
    let mut e = engine();
    // Every event is a session of its own with a new End-to-End-Identifier, as a
    // client's are (RFC 8506 §5: a one-time event's Session-Id is its own).
    fn next<'a, 'b>(c: &'b mut Ccr<'a>) -> &'b Ccr<'a> {
        c.header.end_to_end += 1;
        c.session_id = Box::leak(format!("e{}", c.header.end_to_end).into_boxed_str());
        c
    }
    let mut sms = ccr("e1", "491700000003", RequestType::Event, 0, None, None);
    sms.service_context_id = "32274@3gpp.org";
    sms.mscc_count = 0;
    sms.service_identifier = Some(1);
    sms.requested = Some(Units {
        service_specific: Some(2),
        ..Units::default()
    });
    let o = e.handle(next(&mut sms), NOW);
    assert_eq!((o.result_code, o.services()[0].cost), (2001, 100_000));
    // Asked at the top level, answered at the top level: the debited units as the
    // Granted-Service-Unit, no MSCC (RFC 8506 §6.3).
    assert!(o.mscc().is_empty());
    assert_eq!(o.granted.and_then(|g| g.service_specific), Some(2));
    assert_eq!(e.balance(1).0.available, 9_900_000);
    sms.requested_action = Some(RequestedAction::RefundAccount);
    let refund = e.handle(next(&mut sms), NOW);
    assert_eq!(refund.services()[0].cost, -100_000);
    assert_eq!((refund.granted, refund.mscc().len()), (None, 0));
    assert_eq!(e.refunded(1), 100_000);
    assert_eq!(e.balance(1).0.available, 10_000_000);
    sms.requested_action = Some(RequestedAction::PriceEnquiry);
    assert_eq!(e.handle(next(&mut sms), NOW).cost_micros, Some(100_000));
    sms.requested_action = Some(RequestedAction::CheckBalance);
    assert_eq!(e.handle(next(&mut sms), NOW).check_balance_result, Some(0));
    sms.requested = Some(Units {
        service_specific: Some(1_000),
        ..Units::default()
    });
    assert_eq!(e.handle(next(&mut sms), NOW).check_balance_result, Some(1));
    assert_eq!(
        e.balance(1).0.available,
        10_000_000,
        "checks and prices change nothing"
    );
    // Not enough for the whole event: refused, nothing taken, nothing granted.
    sms.requested_action = Some(RequestedAction::DirectDebiting);
    let refused = e.handle(next(&mut sms), NOW);
    assert_eq!((refused.result_code, refused.granted), (4012, None));
    assert_eq!(e.balance(1).0.available, 10_000_000);
    assert!(e.balance(1).0.is_conserved());

    // The same event asked in an MSCC is answered in an MSCC with its own
    // Result-Code and Granted-Service-Unit.
    sms.requested = None;
    sms.mscc_count = 1;
    sms.mscc[0] = Mscc {
        rating_group: None,
        service_identifier: Some(1),
        requested: Some(Units {
            service_specific: Some(1),
            ..Units::default()
        }),
        used: None,
        reporting_reason: None,
    };
    let o = e.handle(next(&mut sms), NOW);
    assert_eq!(o.result_code, 2001);
    let m = o.mscc();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].service_identifier, m[0].result_code), (Some(1), 2001));
    assert_eq!(m[0].granted.and_then(|g| g.service_specific), Some(1));
    assert_eq!(o.granted, None);
}

#[test]
fn a_retransmitted_ccr_i_reserves_once() {
    let mut e = engine();
    let i = ccr(
        "r",
        "491700000003",
        RequestType::Initial,
        0,
        Some(5 * MIB),
        None,
    );
    let first = e.handle(&i, NOW);
    let reserved = e.balance(1).0.reserved;
    let again = e.handle(&i, NOW + 1);
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(again.mscc(), first.mscc());
    assert_eq!(e.balance(1).0.reserved, reserved, "no second reservation");
}

#[test]
fn a_session_holds_at_most_eight_reservations() {
    // Eight rating groups reserved at CCR-I, then a CCR-U asking for a ninth: refused
    // (5012) rather than reserved with no place to settle it; money stays conserved.
    let mut e = engine();
    let mut i = ccr(
        "m",
        "491700000003",
        RequestType::Initial,
        0,
        Some(MIB),
        None,
    );
    i.mscc_count = 8;
    for k in 0..8 {
        i.mscc[k] = Mscc {
            rating_group: Some(10),
            service_identifier: Some(100 + k as u32),
            ..i.mscc[0]
        };
    }
    let o = e.handle(&i, NOW);
    assert!(o.mscc().iter().all(|m| m.result_code == 2001));
    let mut u = ccr("m", "491700000003", RequestType::Update, 1, Some(MIB), None);
    u.mscc[0].service_identifier = Some(999);
    let o = e.handle(&u, NOW + 1);
    assert_eq!(o.mscc()[0].result_code, 5012);
    let money = e.balance(1).0;
    assert_eq!(money.reserved, 8 * 2_000);
    assert!(money.is_conserved());
}

#[test]
fn a_retransmitted_event_is_charged_once() {
    let mut e = engine();
    let mut sms = ccr("ev", "491700000003", RequestType::Event, 0, None, None);
    sms.service_context_id = "32274@3gpp.org";
    sms.mscc_count = 0;
    sms.service_identifier = Some(1);
    sms.requested = Some(Units {
        service_specific: Some(1),
        ..Units::default()
    });
    sms.header.end_to_end = 77;
    let first = e.handle(&sms, NOW);
    // The retransmission: same Origin-Host and End-to-End, T flag set.
    sms.header.flags |= 0x10;
    let again = e.handle(&sms, NOW + 5);
    assert_eq!(
        (first.outcome, again.outcome),
        (Outcome::Charged, Outcome::Duplicate)
    );
    assert_eq!(again.result_code, first.result_code);
    assert_eq!(e.balance(1).0.settled, 50_000, "one SMS charged");
}

#[test]
fn a_snapshot_restores_balances_packages_and_open_sessions() {
    use gyro_engine::charging::engine::EngineSnapshot;
    let mut e = engine();
    let dataset = {
        let mut bytes = DATASET.as_bytes().to_vec();
        import_ndjson(&mut bytes, OnError::Reject).dataset
    };
    // Two sessions: one ended, one open with a reservation.
    e.handle(
        &ccr(
            "x",
            "491700000001",
            RequestType::Initial,
            0,
            Some(MIB),
            None,
        ),
        NOW,
    );
    e.handle(
        &ccr(
            "x",
            "491700000001",
            RequestType::Termination,
            1,
            None,
            Some(MIB),
        ),
        NOW,
    );
    e.handle(
        &ccr(
            "y",
            "491700000002",
            RequestType::Initial,
            0,
            Some(2 * MIB),
            None,
        ),
        NOW,
    );
    assert!(e.top_up(0, 1234));
    let snap = e.snapshot(42, 7);
    let bytes = snap.encode();
    let back = EngineSnapshot::decode(&bytes).unwrap();
    assert_eq!((back.seq, back.dataset_crc, back.sessions()), (42, 7, 1));
    let mut r = Engine::restore(dataset, back).unwrap();
    for c in 0..2 {
        assert_eq!(r.balance(c), e.balance(c), "company {c}");
    }
    assert_eq!(r.open_sessions(), 1);
    // The open session goes on identically in both.
    let u = ccr(
        "y",
        "491700000002",
        RequestType::Update,
        1,
        Some(MIB),
        Some(2 * MIB),
    );
    let (a, b) = (e.handle(&u, NOW + 1), r.handle(&u, NOW + 1));
    assert_eq!((a.result_code, a.mscc()), (b.result_code, b.mscc()));
    assert_eq!(r.balance(0), e.balance(0));
    // A retransmission of its last request is still recognised.
    assert_eq!(r.handle(&u, NOW + 2).outcome, Outcome::Duplicate);
}

/// A shard's starting share of a company's balance is not "idle since 1970": supervision
/// leaves untouched slices where they were spread (a request for the company can be
/// decided locally right away), and a used slice goes home once it has been idle for
/// `SLICE_IDLE_MS`.
#[test]
fn starting_slices_stay_and_used_slices_go_home_after_the_idle_time() {
    use gyro_engine::charging::engine::SLICE_IDLE_MS;
    use gyro_engine::charging::escrow::EscrowMsg;
    let mut bytes = DATASET.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    let mut shard = Engine::new_shard(imp.dataset, EngineConfig::default(), 1, 2);
    let returns = |e: &mut Engine| {
        e.outbox()
            .filter(|env| matches!(env.msg, EscrowMsg::Return { .. }))
            .count()
    };
    shard.expire(NOW, |_, _| {});
    assert_eq!(returns(&mut shard), 0, "starting slices sent home");
    shard.expire(NOW + 10 * SLICE_IDLE_MS, |_, _| {});
    assert_eq!(returns(&mut shard), 0, "starting slices sent home");
    // A session of rich's subscriber uses its money slice, which then sits idle.
    let used_at = NOW + 11 * SLICE_IDLE_MS;
    let c = ccr(
        "idle;1",
        "491700000003",
        RequestType::Initial,
        0,
        Some(MIB),
        None,
    );
    let o = shard.handle(&c, used_at);
    assert_eq!(o.result_code, 2001, "{o:?}");
    let _ = shard.outbox().count();
    shard.expire(used_at + SLICE_IDLE_MS - 1, |_, _| {});
    assert_eq!(returns(&mut shard), 0);
    shard.expire(used_at + SLICE_IDLE_MS, |_, _| {});
    assert!(
        returns(&mut shard) > 0,
        "an idle slice stays away from home"
    );
}
