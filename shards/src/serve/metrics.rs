//! A shard's metrics, read at scrape time from what its core counted and its loop
//! measured (`prom` encodes them).

use gyro_engine::shard::ShardCore;

use super::evloop::Io;
use crate::prom::{histogram_seconds, Family, Kind, Value};

pub(super) fn families(io: &Io, core: &ShardCore) -> Vec<Family> {
    let m = &io.metrics;
    let c = core.metrics();
    let engine = core.engine();
    let shard = io.id.to_string();
    let s: &[(&str, &str)] = &[("shard", shard.as_str())];
    let mut out = Vec::with_capacity(32);

    let mut ccr = Family::new(
        "gyro_ccr",
        "Credit-Control-Requests handled, by CC-Request-Type.",
        Kind::Counter,
    );
    for (i, t) in ["initial", "update", "termination", "event"]
        .iter()
        .enumerate()
    {
        ccr.push(&[("shard", &shard), ("type", t)], Value::Int(c.ccr[i]));
    }
    out.push(ccr);
    let mut answers = Family::new(
        "gyro_answers",
        "Answers to CCRs (error answers included), by Result-Code.",
        Kind::Counter,
    );
    let mut codes = c.answers.clone();
    codes.sort_unstable();
    for (code, n) in codes {
        answers.push(
            &[("shard", &shard), ("result_code", &code.to_string())],
            Value::Int(n),
        );
    }
    out.push(answers);
    out.push(
        Family::new(
            "gyro_request_seconds",
            "CCR handling time on the shard (decode, charge, answer and CDR queued).",
            Kind::Histogram,
        )
        .with(s, histogram_seconds(&m.latency)),
    );
    out.push(
        Family::new(
            "gyro_log_sync_seconds",
            "CDR log sync time.",
            Kind::Histogram,
        )
        .with(s, histogram_seconds(&m.sync)),
    );
    out.push(
        Family::new(
            "gyro_snapshot_last_seconds",
            "How long the last engine snapshot held the shard up.",
            Kind::Gauge,
        )
        .with(s, Value::Float(m.snapshot_ms as f64 / 1e3)),
    );
    out.push(
        Family::new(
            "gyro_sessions",
            "Open credit-control sessions.",
            Kind::Gauge,
        )
        .with(s, Value::Int(engine.open_sessions() as u64)),
    );
    let esc = engine.escrow_counters();
    let counters: [(&'static str, &'static str, u64); 19] = [
        ("gyro_snapshots", "Engine snapshots written.", m.snapshots),
        ("gyro_log_syncs", "CDR log syncs.", m.syncs),
        (
            "gyro_sessions_expired",
            "Sessions closed by supervision (Tcc).",
            c.expired_sessions,
        ),
        (
            "gyro_cdr_log_bytes",
            "Bytes appended to the CDR log.",
            io.writer.bytes_written(),
        ),
        (
            "gyro_cdr_records",
            "CDR and balance records appended to the log (what billing gets).",
            c.billing_records,
        ),
        (
            "gyro_log_records",
            "Records appended to the log, journal records included.",
            io.writer.next_seq(),
        ),
        (
            "gyro_connections_accepted",
            "Diameter connections accepted.",
            m.connections_accepted,
        ),
        (
            "gyro_connections_refused",
            "Diameter connections refused (connections_max, or stopping).",
            m.connections_refused,
        ),
        (
            "gyro_topups",
            "Top-ups made (on the owner shard).",
            c.topups,
        ),
        (
            "gyro_adjustments",
            "Corrections to a company's money (on the owner shard).",
            c.adjustments,
        ),
        (
            "gyro_provisioning_changes",
            "Provisioning objects changed at run time.",
            c.provisioned,
        ),
        (
            "gyro_escrow_refills",
            "Escrow refills asked of owner shards.",
            esc.refills,
        ),
        (
            "gyro_escrow_leases",
            "Escrow leases sent (as owner shard).",
            esc.leases,
        ),
        (
            "gyro_escrow_recalls",
            "Escrow recalls sent (as owner shard).",
            esc.recalls,
        ),
        (
            "gyro_escrow_returns",
            "Escrow returns sent to owner shards.",
            esc.returns,
        ),
        (
            "gyro_escrow_messages_taken",
            "Escrow messages taken from shards.",
            c.escrow_taken,
        ),
        (
            "gyro_requests_forwarded",
            "CCRs sent to the shard owning their session.",
            c.forwarded,
        ),
        (
            "gyro_requests_waited",
            "Times a CCR waited for escrow.",
            c.waits,
        ),
        (
            "gyro_requests_decided_after_waiting",
            "CCRs decided on what their shard held after waiting the most.",
            c.decided_after_waiting,
        ),
    ];
    for (name, help, v) in counters {
        out.push(Family::new(name, help, Kind::Counter).with(s, Value::Int(v)));
    }
    // Connections by the peer's Origin-Host and state: a series per peer and state,
    // not per connection or request.
    let mut peers: Vec<((String, String, String), u64)> = Vec::new();
    for l in io.links.iter().flatten() {
        let key = (
            l.peer.remote_origin_host().to_string(),
            format!("{:?}", l.peer.state()),
            format!("{:?}", l.peer.watchdog_state()),
        );
        match peers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => peers.push((key, 1)),
        }
    }
    let mut conns = Family::new(
        "gyro_peer_connections",
        "Diameter connections, by the peer's Origin-Host (empty before its CER), state and watchdog state.",
        Kind::Gauge,
    );
    for ((host, state, watchdog), n) in peers {
        conns.push(
            &[
                ("shard", &shard),
                ("origin_host", &host),
                ("state", &state),
                ("watchdog", &watchdog),
            ],
            Value::Int(n),
        );
    }
    out.push(conns);
    out
}
