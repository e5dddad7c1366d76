//! Times provisioning: `provision SUBSCRIBERS COMPANIES RUNS` generates an NDJSON file
//! in memory (tariffs, companies, one package each, subscribers with MSISDN and IMSI),
//! then, RUNS times, imports it, builds the lookup index, writes an rkyv snapshot and
//! reads it back (validated view, and full decode). Prints the median of each step.

use std::time::{Duration, Instant};

use gyro_engine::provision::{import_ndjson, snapshot, Index, OnError};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let companies: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);

    let mut ndjson = String::with_capacity(subscribers as usize * 96);
    ndjson.push_str("{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}\n");
    ndjson.push_str("{\"type\":\"tariff\",\"service_identifier\":1,\"unit\":\"units\",\"unit_size\":1,\"price\":50000}\n");
    for c in 0..companies {
        ndjson.push_str(&format!(
            "{{\"type\":\"company\",\"id\":\"company-{c}\",\"balance\":{},\"credit_limit\":0}}\n",
            50_000_000 + c
        ));
        ndjson.push_str(&format!(
            "{{\"type\":\"package\",\"id\":\"pkg-{c}\",\"company\":\"company-{c}\",\"unit\":\"octets\",\"amount\":10737418240,\"rating_groups\":[10],\"valid_until\":\"2026-12-31T23:59:59Z\",\"priority\":1}}\n"
        ));
    }
    for s in 0..subscribers {
        ndjson.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917{s:08}\",\"imsi\":\"26201{s:010}\",\"company\":\"company-{}\"}}\n",
            s % companies
        ));
    }
    println!(
        "{} subscribers, {} companies, {} MB of NDJSON, {runs} runs",
        subscribers,
        companies,
        ndjson.len() / 1_000_000
    );

    let (mut import, mut index, mut encode, mut view, mut decode) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut snapshot_bytes = 0;
    for _ in 0..runs {
        let mut bytes = ndjson.clone().into_bytes();
        let t = Instant::now();
        let imp = import_ndjson(&mut bytes, OnError::Reject);
        import.push(t.elapsed());
        assert!(imp.is_ok(), "{:?}", &imp.errors[..imp.errors.len().min(3)]);
        assert_eq!(imp.dataset.subscribers.len() as u64, subscribers);
        let t = Instant::now();
        let ix = Index::build(&imp.dataset);
        index.push(t.elapsed());
        assert_eq!(ix.by_msisdn.len() as u64, subscribers);
        let t = Instant::now();
        let snap = snapshot::encode(&imp.dataset);
        encode.push(t.elapsed());
        snapshot_bytes = snap.len();
        let t = Instant::now();
        let v = snapshot::view(&snap).expect("valid");
        view.push(t.elapsed());
        assert_eq!(v.subscribers.len() as u64, subscribers);
        let t = Instant::now();
        let back = snapshot::decode(&snap).expect("valid");
        decode.push(t.elapsed());
        assert_eq!(back.subscribers.len() as u64, subscribers);
    }
    println!("import (parse + validate + resolve): {:?}", median(import));
    println!("index build:                        {:?}", median(index));
    println!(
        "snapshot encode:                    {:?} ({} MB)",
        median(encode),
        snapshot_bytes / 1_000_000
    );
    println!("snapshot view (validated, no copy): {:?}", median(view));
    println!("snapshot decode (into a Dataset):   {:?}", median(decode));
}
