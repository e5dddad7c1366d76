//! The engine's request path allocates nothing after warm-up: a counting global
//! allocator, then 100,000 mixed CCRs (data sessions with two MSCC: CCR-I, CCR-U, CCR-T;
//! SMS debits, refunds, balance checks and price enquiries) decoded and handled, on a
//! lone shard, and on two shards passing their escrow messages to each other.

use gyro_engine::charging::engine::{shard_of, Decision, Engine, EngineConfig, Outcome};
use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId,
    Units,
};
use gyro_engine::diameter::Message;
use gyro_engine::provision::{import_ndjson, Dataset, OnError};

mod counting;
use counting::{allocations, count_this_thread};

const SUBSCRIBERS: usize = 2_000;
const SESSIONS: usize = 500;

fn dataset() -> Dataset {
    let mut s = String::from(concat!(
        "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n",
        "{\"type\":\"tariff\",\"rating_group\":20,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":5000}\n",
        "{\"type\":\"tariff\",\"service_identifier\":1,\"unit\":\"units\",\"unit_size\":1,\"price\":50000}\n",
    ));
    for c in 0..20 {
        s.push_str(&format!(
            "{{\"type\":\"company\",\"id\":\"c{c}\",\"balance\":20000000,\"credit_limit\":0}}\n\
             {{\"type\":\"package\",\"id\":\"c{c}-data\",\"company\":\"c{c}\",\"unit\":\"octets\",\"amount\":4000000000,\"rating_groups\":[10]}}\n"
        ));
    }
    for i in 0..SUBSCRIBERS {
        s.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917{i:08}\",\"company\":\"c{}\"}}\n",
            i % 20
        ));
    }
    let mut bytes = s.into_bytes();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    imp.dataset
}

/// Encodes `c` for subscriber `msisdn` with the next End-to-End-Identifier.
fn push<'a>(out: &mut Vec<Vec<u8>>, mut c: Ccr<'a>, e2e: &mut u32, msisdn: &'a str) {
    c.header.end_to_end = *e2e;
    *e2e += 1;
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: msisdn,
    };
    let mut buf = vec![0u8; 2048];
    let k = encode_ccr(&c, &mut buf).unwrap();
    buf.truncate(k);
    out.push(buf);
}

/// Every request of the run, encoded before counting starts.
fn requests(rounds: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mib = |v: u64| Units {
        total_octets: Some(v),
        ..Units::default()
    };
    let mut e2e = 1u32;
    for round in 0..rounds {
        for s in 0..SESSIONS {
            let id = format!("pgw.alloc;{round};{s}");
            let msisdn = format!("4917{:08}", (s * 7 + round) % SUBSCRIBERS);
            for (n, t) in [
                RequestType::Initial,
                RequestType::Update,
                RequestType::Update,
                RequestType::Termination,
            ]
            .into_iter()
            .enumerate()
            {
                let mut c = Ccr {
                    session_id: &id,
                    origin_host: "pgw.alloc",
                    origin_realm: "test",
                    destination_realm: "gyro.local",
                    service_context_id: "32251@3gpp.org",
                    request_type: t,
                    request_number: n as u32,
                    subscription_id_count: 1,
                    mscc_count: 2,
                    ..Ccr::default()
                };
                for (i, rg) in [10u32, 20].into_iter().enumerate() {
                    c.mscc[i] = Mscc {
                        rating_group: Some(rg),
                        requested: (t != RequestType::Termination).then(|| mib(1 << 20)),
                        used: (t != RequestType::Initial).then(|| mib(300_000)),
                        ..Mscc::default()
                    };
                }
                push(&mut out, c, &mut e2e, &msisdn);
            }
            // An event beside every session: debit, refund, balance check, price.
            let action = [
                RequestedAction::DirectDebiting,
                RequestedAction::RefundAccount,
                RequestedAction::CheckBalance,
                RequestedAction::PriceEnquiry,
            ][s % 4];
            let id = format!("smsc.alloc;{round};{s}");
            let c = Ccr {
                session_id: &id,
                origin_host: "smsc.alloc",
                origin_realm: "test",
                destination_realm: "gyro.local",
                service_context_id: "32274@3gpp.org",
                request_type: RequestType::Event,
                requested_action: Some(action),
                service_identifier: Some(1),
                requested: Some(Units {
                    service_specific: Some(1),
                    ..Units::default()
                }),
                subscription_id_count: 1,
                ..Ccr::default()
            };
            push(&mut out, c, &mut e2e, &msisdn);
        }
    }
    out
}

/// Handles every request on the shard owning its session, passing escrow messages
/// between the shards (and retrying requests that waited), into one outcome reused
/// throughout as the server does; returns the answers' count.
fn run(
    engines: &mut [Engine],
    reqs: &[Vec<u8>],
    now: &mut u64,
    mail: &mut Vec<gyro_engine::charging::escrow::Envelope>,
) -> usize {
    let mut o = Decision::default();
    let mut answered = 0;
    for bytes in reqs {
        handle(engines, bytes, now, mail, &mut o, true);
        answered += usize::from(o.result_code != 0);
    }
    answered
}

/// One request, on the shard owning its session, until it no longer waits; into `o`
/// (`Engine::handle_into`) or as a fresh value (`Engine::handle`).
fn handle(
    engines: &mut [Engine],
    bytes: &[u8],
    now: &mut u64,
    mail: &mut Vec<gyro_engine::charging::escrow::Envelope>,
    o: &mut Decision,
    reuse: bool,
) {
    let shards = engines.len() as u16;
    *now += 1;
    let msg = Message::new(bytes).unwrap();
    let mut ccr = Ccr::default();
    ccr.decode_into(&msg).unwrap();
    let s = usize::from(shard_of(ccr.session_id.as_bytes(), shards));
    let once = |e: &mut Engine, o: &mut Decision| {
        if reuse {
            e.handle_into(&ccr, *now, o);
        } else {
            *o = e.handle(&ccr, *now);
        }
    };
    once(&mut engines[s], o);
    while matches!(o.outcome, Outcome::Wait { .. }) {
        // Deliver every message until the lease comes, then again.
        let mut moved = true;
        while moved {
            moved = false;
            for from in 0..engines.len() {
                mail.extend(engines[from].outbox());
                for env in mail.drain(..) {
                    engines[usize::from(env.to)].receive(env, *now);
                    moved = true;
                }
            }
        }
        once(&mut engines[s], o);
    }
}

/// An outcome reused from request to request says exactly what a fresh one says:
/// sessions, events, retransmissions (duplicates, and CCR-Ts of sessions already
/// ended), refusals and escrow waits, on one shard and on two.
#[test]
fn a_reused_outcome_answers_as_a_fresh_one() {
    let config = EngineConfig {
        sessions_max: 4 * SESSIONS,
        ..EngineConfig::default()
    };
    let reqs = requests(6);
    for shards in [1u16, 2] {
        let new = || -> Vec<Engine> {
            (0..shards)
                .map(|s| Engine::new_shard(dataset(), config.clone(), s, shards))
                .collect()
        };
        let (mut fresh, mut reused) = (new(), new());
        let (mut now_a, mut now_b) = (1_790_000_000_000, 1_790_000_000_000);
        let (mut mail_a, mut mail_b) = (Vec::new(), Vec::new());
        let mut kept = Decision::default();
        let mut compared = 0;
        for (i, bytes) in reqs.iter().enumerate() {
            // Every fifth request is sent twice.
            for _ in 0..1 + usize::from(i % 5 == 0) {
                let mut a = Decision::default();
                handle(&mut fresh, bytes, &mut now_a, &mut mail_a, &mut a, false);
                handle(&mut reused, bytes, &mut now_b, &mut mail_b, &mut kept, true);
                assert_eq!(a, kept, "{shards} shard(s), request {i}");
                compared += 1;
            }
        }
        assert!(compared > reqs.len(), "{compared}");
    }
}

#[test]
fn the_engine_handles_mixed_ccrs_without_allocating() {
    let config = EngineConfig {
        sessions_max: 4 * SESSIONS,
        ..EngineConfig::default()
    };
    let warm = requests(4);
    let timed = requests(40);
    assert!(timed.len() >= 100_000, "{}", timed.len());
    for shards in [1u16, 2] {
        let mut engines: Vec<Engine> = (0..shards)
            .map(|s| Engine::new_shard(dataset(), config.clone(), s, shards))
            .collect();
        let mut now = 1_790_000_000_000;
        let mut mail = Vec::with_capacity(4096);
        run(&mut engines, &warm, &mut now, &mut mail);
        count_this_thread(true);
        let before = allocations();
        let answered = run(&mut engines, &timed, &mut now, &mut mail);
        let after = allocations();
        count_this_thread(false);
        assert_eq!(answered, timed.len());
        if shards > 1 {
            // Slices ran low and were refilled while counting.
            let refills: u64 = engines.iter().map(|e| e.escrow_counters().refills).sum();
            let waits: u64 = engines.iter().map(|e| e.escrow_counters().waits).sum();
            assert!(
                refills > 100 && waits > 0,
                "refills {refills}, waits {waits}"
            );
        }
        assert_eq!(
            after - before,
            0,
            "{shards} shard(s): allocations while handling {} CCRs",
            timed.len()
        );
    }
}
