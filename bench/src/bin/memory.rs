//! Memory of the engine's state: `memory SUBSCRIBERS COMPANIES SESSIONS` loads a
//! generated dataset into the single-shard engine, opens SESSIONS sessions with two
//! MSCC each, and prints the resident memory each step added (Linux /proc/self/statm),
//! per subscriber and per open session.

use gyro_engine::diameter::ccr::{
    subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().unwrap_or(0));
    let subscribers = args.next().unwrap_or(1_000_000).max(1);
    let companies = args.next().unwrap_or(10_000).max(1);
    let sessions = args.next().unwrap_or(100_000);

    let start = resident_bytes();
    let mut engine = gyro_bench::generated_engine(subscribers, companies, sessions as usize);
    let loaded = resident_bytes();
    let ids: Vec<String> = (0..sessions)
        .map(|s| format!("pgw1.op.example;1732598400;{s:08}"))
        .collect();
    let msisdns: Vec<String> = (0..sessions)
        .map(|s| gyro_loadgen::dataset::msisdn(s % subscribers))
        .collect();
    let with_ids = resident_bytes();
    let mut open = 0;
    for s in 0..sessions as usize {
        let mut c = Ccr {
            session_id: &ids[s],
            service_context_id: "32251@3gpp.org",
            request_type: RequestType::Initial,
            subscription_id_count: 1,
            mscc_count: 2,
            ..Ccr::default()
        };
        c.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: &msisdns[s],
        };
        let rsu = Some(Units {
            total_octets: Some(1 << 20),
            ..Units::default()
        });
        c.mscc[0] = Mscc {
            rating_group: Some(10),
            requested: rsu,
            ..Mscc::default()
        };
        c.mscc[1] = Mscc {
            rating_group: Some(20),
            requested: rsu,
            ..Mscc::default()
        };
        if engine.handle(&c, 1).result_code != 5030 {
            open += 1;
        }
    }
    let after = resident_bytes();
    println!(
        "{subscribers} subscribers, {companies} companies, {open} open sessions (2 MSCC each)"
    );
    let state = loaded.saturating_sub(start);
    println!("dataset in the engine:   {} MB ({} bytes per subscriber, companies, packages and indexes included)", state / 1_000_000, state / subscribers);
    println!(
        "open sessions:           {} MB ({} bytes per session)",
        (after - with_ids) / 1_000_000,
        (after - with_ids) / sessions.max(1)
    );
}
