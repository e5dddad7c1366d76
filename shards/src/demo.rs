//! `gyro demo`: a generated dataset, the single-shard charging engine behind a Diameter
//! server peer, a client peer sending data sessions (CCR-I, CCR-U, CCR-T) over loopback
//! TCP, every CDR appended to a segment log on disk, and at the end a reconciliation:
//! the costs and package units the CDR files record, read back from disk, against what
//! the engine's balances say was charged.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gyro_engine::cdr::{write_cdr, Cdr, CdrKind};
use gyro_engine::charging::engine::{Engine, EngineConfig};
use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::diameter::ccr::{
    encode_cca, encode_ccr, subscription_id_type, Cca, Ccr, Mscc, RequestType, SubscriptionId,
    Units,
};
use gyro_engine::diameter::{Header, Message};
use gyro_engine::peer::{Peer, PeerConfig, PeerState};
use gyro_engine::provision::{import_ndjson, OnError};
use gyro_engine::segment::RecordKind;
use simd_json::prelude::*;

use crate::loopback::{now_ms, run_peer, tally_result};
use crate::segments::SegmentWriter;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoSpec {
    pub subscribers: u64,
    pub companies: u64,
    pub sessions: u64,
    pub window: u64,
    /// Where the segment log is written.
    pub dir: PathBuf,
}

/// What the run did.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub requests: u64,
    pub answers: u64,
    pub answers_by_result: Vec<(u32, u64)>,
    pub elapsed: Duration,
    pub cdrs_written: u64,
    pub cdr_bytes: u64,
    /// From the engine's balances.
    pub engine_money_charged: i64,
    pub engine_package_units: i64,
    /// From the CDR files read back.
    pub cdr_money_charged: i64,
    pub cdr_package_units: i64,
    pub cdrs_read: u64,
}

const MIB: u64 = 1 << 20;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the demo.
pub fn run(spec: &DemoSpec) -> std::io::Result<DemoReport> {
    let mut ndjson = Vec::new();
    let dspec = gyro_loadgen::dataset::Spec {
        subscribers: spec.subscribers,
        companies: spec.companies,
        seed: 1,
    };
    gyro_loadgen::dataset::write(&dspec, &mut ndjson)?;
    let imp = import_ndjson(&mut ndjson, OnError::Reject);
    if !imp.is_ok() {
        return Err(std::io::Error::other(format!(
            "generated dataset rejected: {}",
            imp.errors[0]
        )));
    }
    let engine = Engine::new(
        imp.dataset,
        EngineConfig {
            sessions_max: (spec.window as usize * 4).max(1024),
            ..EngineConfig::default()
        },
    );
    let mut writer = SegmentWriter::create(&spec.dir.join("shard-0"), 0, 64 << 20, 0)?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    let start = Instant::now();
    let server = std::thread::spawn(move || -> std::io::Result<(Engine, SegmentWriter)> {
        let mut engine = engine;
        let (mut stream, _) = listener.accept()?;
        let (host, realm) = ("ocs.gyro.demo", "gyro.demo");
        let mut peer = Peer::responder(PeerConfig::new(host, realm), now_ms(start));
        let mut line = vec![0u8; 16 * 1024];
        let mut failure: Option<std::io::Error> = None;
        let answer = |peer: &mut Peer, bytes: &[u8]| {
            let Some(msg) = Message::new(bytes) else {
                return;
            };
            let ccr = match Ccr::decode(&msg) {
                Ok(c) => c,
                Err(e) => return peer.send_error(bytes, &e),
            };
            let now = unix_ms();
            let o = engine.handle(&ccr, now);
            let cca = Cca {
                cost_micros: o.cost_micros,
                check_balance_result: o.check_balance_result,
                granted: o.granted,
                ..Cca::answering(&ccr, o.result_code, host, realm, o.mscc())
            };
            let _ = peer.send_with(|b| encode_cca(&ccr.header, &cca, b));
            let mut services = o.services;
            for (i, s) in services.iter_mut().enumerate().take(o.mscc_count) {
                if let (Some(c), Some(p)) = (o.company, o.package[i]) {
                    s.package = Some(engine.package_id(c, p));
                }
            }
            let cdr = Cdr {
                kind: CdrKind::Ccr,
                seq: writer.next_seq(),
                shard: 0,
                ts_ms: now,
                ccr: &ccr,
                msisdn: ccr.subscription(subscription_id_type::END_USER_E164),
                imsi: ccr.subscription(subscription_id_type::END_USER_IMSI),
                company: o.company.map(|c| engine.company_id(c)),
                result_code: o.result_code,
                services: &services[..o.mscc_count],
            };
            if let Ok(n) = write_cdr(&cdr, &mut line) {
                if let Err(e) = writer.append(RecordKind::Cdr, &line[..n]) {
                    failure.get_or_insert(e);
                }
            }
        };
        run_peer(&mut stream, &mut peer, start, answer, |_| {}, |_, _| true)?;
        if let Some(e) = failure {
            return Err(e);
        }
        writer.flush()?;
        Ok((engine, writer))
    });

    // The client: sessions of three requests each, subscribers in turn.
    let mut stream = TcpStream::connect(addr)?;
    let mut client = Peer::initiator(PeerConfig::new("pgw.gyro.demo", "gyro.demo"), now_ms(start));
    client.connection_up(now_ms(start));
    let total = spec.sessions * 3;
    let received = Cell::new(0u64);
    let mut by_result: Vec<(u32, u64)> = Vec::new();
    let mut sent = 0u64;
    let mut disconnecting = false;
    let (mut sid, mut msisdn) = (String::new(), String::new());
    run_peer(
        &mut stream,
        &mut client,
        start,
        |_, _| {},
        |bytes| {
            received.set(received.get() + 1);
            tally_result(bytes, &mut by_result);
        },
        |peer, now| {
            if peer.state() != PeerState::Open {
                return peer.close_reason().is_none();
            }
            while sent < total && sent - received.get() < spec.window {
                let session = sent / 3;
                let step = sent % 3;
                sid.clear();
                sid.push_str("pgw.gyro.demo;1;");
                sid.push_str(&session.to_string());
                msisdn.clear();
                msisdn.push_str(&gyro_loadgen::dataset::msisdn(session % spec.subscribers));
                let (h2h, e2e) = peer.next_ids();
                let mut c = Ccr {
                    session_id: &sid,
                    origin_host: "pgw.gyro.demo",
                    origin_realm: "gyro.demo",
                    destination_realm: "gyro.demo",
                    service_context_id: "32251@3gpp.org",
                    request_type: [
                        RequestType::Initial,
                        RequestType::Update,
                        RequestType::Termination,
                    ][step as usize],
                    request_number: step as u32,
                    subscription_id_count: 1,
                    mscc_count: 1,
                    multiple_services_indicator: true,
                    ..Ccr::default()
                };
                c.header = Header {
                    hop_by_hop: h2h,
                    end_to_end: e2e,
                    ..c.header
                };
                c.subscription_ids[0] = SubscriptionId {
                    id_type: subscription_id_type::END_USER_E164,
                    data: &msisdn,
                };
                let octets = |n: u64| {
                    Some(Units {
                        total_octets: Some(n),
                        ..Units::default()
                    })
                };
                c.mscc[0] = Mscc {
                    rating_group: Some(10),
                    service_identifier: None,
                    requested: if step < 2 { octets(MIB) } else { None },
                    used: if step > 0 { octets(MIB) } else { None },
                    reporting_reason: None,
                };
                if peer.send_with(|b| encode_ccr(&c, b)).is_err() {
                    return false;
                }
                sent += 1;
            }
            if received.get() >= total && !disconnecting {
                disconnecting = true;
                peer.disconnect(disconnect_cause::REBOOTING, now);
            }
            true
        },
    )?;
    let elapsed = start.elapsed();
    let (engine, writer) = server
        .join()
        .map_err(|_| std::io::Error::other("server thread panicked"))??;

    let mut report = DemoReport {
        requests: sent,
        answers: received.get(),
        elapsed,
        cdrs_written: writer.next_seq(),
        cdr_bytes: writer.bytes_written(),
        ..DemoReport::default()
    };
    by_result.sort_unstable();
    report.answers_by_result = by_result;
    for c in 0..spec.companies as u32 {
        let (money, packages) = engine.balance(c);
        report.engine_money_charged += money.settled;
        report.engine_package_units += packages.iter().map(|(_, b)| b.settled).sum::<i64>();
    }
    reconcile(&spec.dir.join("shard-0"), &mut report)?;
    Ok(report)
}

/// Reads every CDR back from the segment files and adds up what they charged.
fn reconcile(dir: &Path, report: &mut DemoReport) -> std::io::Result<()> {
    let mut pos = crate::cdr_files::Position::default();
    let mut line = Vec::new();
    crate::cdr_files::read_on(dir, &mut pos, false, |_, payload| {
        line.clear();
        line.extend_from_slice(payload);
        let v = simd_json::to_borrowed_value(&mut line).map_err(std::io::Error::other)?;
        report.cdrs_read += 1;
        if let Some(services) = v["services"].as_array() {
            for s in services {
                report.cdr_money_charged += s["cost"].as_i64().unwrap_or(0);
                report.cdr_package_units += s["package_units"].as_i64().unwrap_or(0);
            }
        }
        Ok(())
    })
    .map_err(|p| std::io::Error::other(p.to_string()))
}
