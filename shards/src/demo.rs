//! `gyro demo`: the whole pipeline on one machine. A generated dataset; `gyro serve`
//! (the thread-per-core server, on loopback); the shipper tailing its CDR log into the
//! reference billing receiver; the load generator running data and voice sessions, SMS
//! events and refunds against the server for a while; a top-up through the operations
//! endpoint; and at the end a reconciliation of what billing received against gyro's
//! own balances, company by company.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use simd_json::prelude::*;

use crate::config::ServeConfig;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoSpec {
    pub subscribers: u64,
    pub companies: u64,
    pub duration: Duration,
    pub connections: usize,
    pub window: usize,
    /// Where the dataset, the CDR log, the checkpoints and billing's file go.
    pub dir: PathBuf,
    /// Shards of `gyro serve` (company balances escrowed between them).
    pub shards: usize,
}

/// What the run did.
#[derive(Debug)]
pub struct DemoReport {
    pub load: gyro_loadgen::run::RunReport,
    pub cdrs_written: u64,
    pub billing_records: u64,
    pub billing_duplicates: u64,
    pub companies: usize,
    /// Sums over all companies: gyro's view, then billing's.
    pub gyro_money: i64,
    pub billing_money: i64,
    pub gyro_package_units: i64,
    pub billing_package_units: i64,
    pub topup: i64,
    pub billing_topups: i64,
    /// Companies whose figures differ (empty when reconciled).
    pub mismatches: Vec<String>,
    pub ship_wait: Duration,
}

impl DemoReport {
    pub fn reconciled(&self) -> bool {
        self.mismatches.is_empty()
            && self.billing_records == self.cdrs_written
            && self.gyro_money == self.billing_money
            && self.gyro_package_units == self.billing_package_units
            && self.topup == self.billing_topups
    }
}

/// Where the demo is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum Phase<'a> {
    Starting,
    /// Seconds elapsed and the live counters of the load.
    Load(f64, &'a gyro_loadgen::run::Live),
    Shipping,
}

fn get_json(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
) -> std::io::Result<simd_json::OwnedValue> {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let text = req.call().map_err(std::io::Error::other)?.into_string()?;
    let mut b = text.into_bytes();
    simd_json::to_owned_value(&mut b).map_err(std::io::Error::other)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs the demo.
pub fn run(spec: &DemoSpec, progress: impl Fn(Phase<'_>)) -> std::io::Result<DemoReport> {
    progress(Phase::Starting);
    std::fs::create_dir_all(&spec.dir)?;
    let dataset = spec.dir.join("dataset.ndjson");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&dataset)?);
        let d = gyro_loadgen::dataset::Spec {
            subscribers: spec.subscribers,
            companies: spec.companies,
            seed: 1,
        };
        gyro_loadgen::dataset::write(&d, &mut w)?;
        std::io::Write::flush(&mut w)?;
    }
    let msisdns: Vec<String> = (0..spec.subscribers)
        .map(gyro_loadgen::dataset::msisdn)
        .collect();

    // Billing.
    let sink_server = tiny_http::Server::http("127.0.0.1:0").map_err(std::io::Error::other)?;
    let sink_addr = sink_server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("billing-sink has no address"))?;
    let sink = crate::billing::Sink::open(crate::billing::SinkSpec {
        out: spec.dir.join("billing.ndjson"),
        ..Default::default()
    })
    .map_err(std::io::Error::other)?;
    let stop_sink = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let stop = stop_sink.clone();
        std::thread::spawn(move || crate::billing::serve(sink_server, sink, &stop))
    };

    // gyro serve.
    let token = format!("demo-{}", std::process::id());
    let config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: Some(token.clone()),
        data_dir: spec.dir.join("data"),
        dataset: Some(dataset),
        sessions_max: 1 << 20,
        shards: spec.shards.clamp(1, 64),
        ..ServeConfig::default()
    };
    let stop_server = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let server_thread = {
        let stop = stop_server.clone();
        std::thread::spawn(move || {
            crate::server::run_until(config, stop, false, |at| {
                let _ = tx.send(at);
            })
        })
    };
    let at = match rx.recv() {
        Ok(at) => at,
        Err(_) => {
            stop_sink.store(true, Ordering::Relaxed);
            let why = server_thread
                .join()
                .ok()
                .and_then(|r| r.err())
                .unwrap_or_else(|| "gyro serve did not start".into());
            return Err(std::io::Error::other(why));
        }
    };

    // The shipper, following the log into billing.
    let ship_spec = crate::ship::ShipSpec {
        data_dir: spec.dir.join("data"),
        to: format!("http://{sink_addr}/cdrs"),
        checkpoint_dir: spec.dir.join("ship"),
        batch_max: 2000,
        window: 4,
        follow: true,
        timeout: Duration::from_secs(30),
        backoff_max: Duration::from_secs(1),
        progress_every: Duration::ZERO,
        retain: None,
        metrics: None,
    };
    let stop_ship = Arc::new(AtomicBool::new(false));
    let ship_thread = {
        let stop = stop_ship.clone();
        std::thread::spawn(move || crate::ship::run(&ship_spec, &stop))
    };

    // The load, with its live counters drawn by the caller.
    let live = Arc::new(gyro_loadgen::run::Live::default());
    let load_spec = gyro_loadgen::run::RunSpec {
        target: at.diameter,
        msisdns: Arc::new(msisdns),
        connections: spec.connections,
        threads: 1,
        window: spec.window,
        duration: Some(spec.duration),
        sessions: None,
        rate: None,
        mix: "data=80,voice=10,sms=8,refund=2"
            .parse()
            .map_err(std::io::Error::other)?,
        event_form: gyro_loadgen::run::EventForm::ThreeGpp,
        updates: 2,
        origin_host: "pgw.demo.gyro".into(),
        origin_realm: "demo.gyro".into(),
        destination_realm: "gyro.local".into(),
        tx_timeout: Duration::from_secs(5),
        progress: false,
        live: Some(live.clone()),
        answered_ids: None,
    };
    let started = Instant::now();
    let load = std::thread::scope(|s| {
        let h = s.spawn(|| gyro_loadgen::run::run(&load_spec));
        while !h.is_finished() {
            progress(Phase::Load(started.elapsed().as_secs_f64(), &live));
            std::thread::sleep(Duration::from_millis(100));
        }
        h.join()
    })
    .map_err(|_| std::io::Error::other("the load generator failed"))?;

    // A top-up through the operations endpoint: a balance record in the log.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let admin = format!("http://{}", at.admin);
    let topup = 5_000_000i64;
    agent
        .post(&format!("{admin}/companies/company-0/topup"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_string(&format!("{{\"amount\": {topup}}}"))
        .map_err(std::io::Error::other)?;

    // Wait until billing has everything the log holds.
    progress(Phase::Shipping);
    let ship_started = Instant::now();
    let metrics = agent
        .get(&format!("{admin}/metrics"))
        .call()
        .map_err(std::io::Error::other)?
        .into_string()?;
    let written = metric(&metrics, "gyro_cdr_records_total");
    let totals = loop {
        let t = get_json(&agent, &format!("http://{sink_addr}/totals"), None)?;
        if t["records"].as_u64() == Some(written)
            || ship_started.elapsed() > Duration::from_secs(120)
        {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ship_wait = ship_started.elapsed();
    let companies = get_json(&agent, &format!("{admin}/companies"), Some(&token))?;

    let mut report = DemoReport {
        load,
        cdrs_written: written,
        billing_records: totals["records"].as_u64().unwrap_or(0),
        billing_duplicates: totals["duplicates"].as_u64().unwrap_or(0),
        companies: 0,
        gyro_money: 0,
        billing_money: 0,
        gyro_package_units: 0,
        billing_package_units: 0,
        topup,
        billing_topups: 0,
        mismatches: Vec::new(),
        ship_wait,
    };
    let empty = simd_json::OwnedValue::null();
    for c in companies.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let id = c["id"].as_str().unwrap_or("");
        let b = totals["companies"].get(id).unwrap_or(&empty);
        report.companies += 1;
        let gyro_money = c["charged"].as_i64().unwrap_or(0) - c["refunded"].as_i64().unwrap_or(0);
        let billing_money = b.get("charged").and_then(|v| v.as_i64()).unwrap_or(0);
        report.gyro_money += gyro_money;
        report.billing_money += billing_money;
        report.billing_topups += b.get("topups").and_then(|v| v.as_i64()).unwrap_or(0);
        let mut differs = gyro_money != billing_money;
        for p in c["packages"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or(&[])
        {
            let pid = p["id"].as_str().unwrap_or("");
            let used = p["used"].as_i64().unwrap_or(0);
            let billed = b
                .get("package_units")
                .and_then(|u| u.get(pid))
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            report.gyro_package_units += used;
            report.billing_package_units += billed;
            differs |= used != billed;
        }
        if differs {
            report.mismatches.push(id.to_string());
        }
    }

    stop_ship.store(true, Ordering::Relaxed);
    let shipped = ship_thread.join();
    stop_server.store(true, Ordering::Relaxed);
    let served = server_thread.join();
    stop_sink.store(true, Ordering::Relaxed);
    let _ = sink_thread.join();
    match shipped {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(std::io::Error::other(format!("gyro ship: {e}"))),
        Err(_) => return Err(std::io::Error::other("the shipper failed")),
    }
    match served {
        Ok(Ok(())) => Ok(report),
        Ok(Err(e)) => Err(std::io::Error::other(format!("gyro serve: {e}"))),
        Err(_) => Err(std::io::Error::other("the server failed")),
    }
}
