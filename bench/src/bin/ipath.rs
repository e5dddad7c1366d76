//! Instruction count of the engine path for one CCR-U with one MSCC: decode, the
//! single-shard engine (settle the reported usage, grant again), CCA encode and the
//! CDR line, against a generated dataset with many open sessions.
//! `ipath SUBSCRIBERS SESSIONS N`: opens SESSIONS sessions, then runs N CCR-Us round
//! robin over them. `bench/callgrind.sh` takes the difference of two N.

use std::hint::black_box;

use gyro_engine::cdr::{write_cdr, Cdr, CdrKind};
use gyro_engine::charging::engine::Engine;
use gyro_engine::diameter::ccr::{
    encode_cca, encode_ccr, subscription_id_type, Cca, Ccr, Mscc, RequestType, SubscriptionId,
    Units,
};
use gyro_engine::diameter::Message;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().unwrap_or(0));
    let subscribers = args.next().unwrap_or(100_000).max(1);
    let sessions = args.next().unwrap_or(10_000).max(1);
    let n = args.next().unwrap_or(1);
    let mut engine = gyro_bench::generated_engine(
        subscribers,
        (subscribers / 100).max(1),
        sessions as usize + 16,
    );

    // Every request, encoded up front so the loop measures only the engine path.
    let ids: Vec<String> = (0..sessions)
        .map(|s| format!("pgw1.op.example;1732598400;{s:08}"))
        .collect();
    let msisdns: Vec<String> = (0..sessions)
        .map(|s| gyro_loadgen::dataset::msisdn(s % subscribers))
        .collect();
    let encode = |s: usize, t: RequestType, number: u32| -> Vec<u8> {
        let mut c = Ccr {
            session_id: &ids[s],
            origin_host: "pgw1.op.example",
            origin_realm: "op.example",
            destination_realm: "ocs.example",
            service_context_id: "32251@3gpp.org",
            request_type: t,
            request_number: number,
            subscription_id_count: 1,
            mscc_count: 1,
            multiple_services_indicator: true,
            ..Ccr::default()
        };
        c.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: &msisdns[s],
        };
        c.mscc[0] = Mscc {
            rating_group: Some(10),
            service_identifier: None,
            requested: Some(Units {
                total_octets: Some(1 << 20),
                ..Units::default()
            }),
            used: (t == RequestType::Update).then_some(Units {
                total_octets: Some(1 << 20),
                ..Units::default()
            }),
            reporting_reason: Some(3),
        };
        let mut buf = vec![0u8; 2048];
        let len = encode_ccr(&c, &mut buf).expect("fits");
        buf.truncate(len);
        buf
    };
    let mut out = vec![0u8; 4096];
    let mut line = vec![0u8; 4096];
    let mut sink = 0usize;
    for s in 0..sessions as usize {
        sink += engine_path(
            &mut engine,
            &encode(s, RequestType::Initial, 0),
            1,
            &mut out,
            &mut line,
        );
    }
    // CCR-Us cycle through the sessions; each session's request number grows.
    let updates: Vec<Vec<u8>> = (0..n as usize)
        .map(|i| {
            encode(
                i % sessions as usize,
                RequestType::Update,
                1 + (i as u64 / sessions) as u32,
            )
        })
        .collect();
    for u in &updates {
        sink += engine_path(&mut engine, black_box(u), 2, &mut out, &mut line);
    }
    black_box(sink);
    println!("{} sessions open, {} updates", engine.open_sessions(), n);
}

/// The measured path: decode, engine, CCA, CDR line. Counted alone with
/// `--toggle-collect=ipath::engine_path`.
#[inline(never)]
fn engine_path(
    engine: &mut Engine,
    bytes: &[u8],
    now: u64,
    out: &mut [u8],
    line: &mut [u8],
) -> usize {
    let Some(msg) = Message::new(bytes) else {
        return 0;
    };
    let Ok(ccr) = Ccr::decode(&msg) else { return 0 };
    let o = engine.handle(&ccr, now);
    let cca = Cca::answering(&ccr, o.result_code, "ocs.gyro.test", "gyro.test", o.mscc());
    let a = encode_cca(&ccr.header, &cca, out).unwrap_or(0);
    let cdr = Cdr {
        kind: CdrKind::Ccr,
        seq: 1,
        shard: 0,
        ts_ms: now,
        ccr: &ccr,
        msisdn: ccr.subscription(subscription_id_type::END_USER_E164),
        imsi: None,
        company: o.company.map(|c| engine.company_id(c)),
        result_code: o.result_code,
        services: o.services(),
    };
    a + write_cdr(&cdr, line).unwrap_or(0)
}
