//! A shard's Prometheus text: what its core counted and what its loop measured.

use std::fmt::Write;

use gyro_engine::shard::ShardCore;
use hdrhistogram::Histogram;

use super::evloop::Io;

pub(super) fn render(io: &Io, core: &ShardCore) -> String {
    let m = &io.metrics;
    let c = core.metrics();
    let engine = core.engine();
    let s = io.id;
    let mut o = String::with_capacity(4096);
    let _ = writeln!(
        o,
        "# HELP gyro_ccr_total Credit-Control-Requests handled, by CC-Request-Type."
    );
    let _ = writeln!(o, "# TYPE gyro_ccr_total counter");
    for (i, t) in ["initial", "update", "termination", "event"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            o,
            "gyro_ccr_total{{shard=\"{s}\",type=\"{t}\"}} {}",
            c.ccr[i]
        );
    }
    let _ = writeln!(
        o,
        "# HELP gyro_answers_total Answers to CCRs, by Result-Code."
    );
    let _ = writeln!(o, "# TYPE gyro_answers_total counter");
    let mut answers = c.answers.clone();
    answers.sort_unstable();
    for (code, n) in answers {
        let _ = writeln!(
            o,
            "gyro_answers_total{{shard=\"{s}\",result_code=\"{code}\"}} {n}"
        );
    }
    summary(
        &mut o,
        "gyro_request_seconds",
        "CCR handling time (decode, charge, answer, CDR).",
        s,
        &m.latency,
    );
    summary(
        &mut o,
        "gyro_log_sync_seconds",
        "CDR log sync time.",
        s,
        &m.sync,
    );
    let gauges: [(&str, &str, u64); 10] = [
        (
            "gyro_snapshots_total",
            "Engine snapshots written.",
            m.snapshots,
        ),
        (
            "gyro_snapshot_last_milliseconds",
            "How long the last engine snapshot held the shard up.",
            m.snapshot_ms,
        ),
        (
            "gyro_sessions",
            "Open credit-control sessions.",
            engine.open_sessions() as u64,
        ),
        (
            "gyro_sessions_expired_total",
            "Sessions closed by supervision (Tcc).",
            c.expired_sessions,
        ),
        (
            "gyro_cdr_log_bytes_total",
            "Bytes appended to the CDR log.",
            io.writer.bytes_written(),
        ),
        (
            "gyro_cdr_records_total",
            "CDR and balance records appended to the log (what billing gets).",
            c.billing_records,
        ),
        (
            "gyro_log_records_total",
            "Records appended to the log, journal records included.",
            io.writer.next_seq(),
        ),
        (
            "gyro_connections_accepted_total",
            "Diameter connections accepted.",
            m.connections_accepted,
        ),
        (
            "gyro_connections_refused_total",
            "Connections refused (connections_max).",
            m.connections_refused,
        ),
        (
            "gyro_topups_total",
            "Top-ups through the operations endpoint.",
            c.topups,
        ),
    ];
    for (name, help, v) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{shard=\"{s}\"}} {v}"
        );
    }
    let esc = engine.escrow_counters();
    let escrow: [(&str, &str, u64); 8] = [
        (
            "gyro_escrow_refills_total",
            "Escrow refills asked of owner shards.",
            esc.refills,
        ),
        (
            "gyro_escrow_leases_total",
            "Escrow leases sent (as owner shard).",
            esc.leases,
        ),
        (
            "gyro_escrow_recalls_total",
            "Escrow recalls sent (as owner shard).",
            esc.recalls,
        ),
        (
            "gyro_escrow_returns_total",
            "Escrow returns sent to owner shards.",
            esc.returns,
        ),
        (
            "gyro_escrow_messages_taken_total",
            "Escrow messages taken from shards.",
            c.escrow_taken,
        ),
        (
            "gyro_requests_forwarded_total",
            "CCRs sent to the shard owning their session.",
            c.forwarded,
        ),
        (
            "gyro_requests_waited_total",
            "Times a CCR waited for escrow.",
            c.waits,
        ),
        (
            "gyro_requests_decided_after_waiting_total",
            "CCRs decided on what their shard held after waiting the most.",
            c.decided_after_waiting,
        ),
    ];
    for (name, help, v) in escrow {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{shard=\"{s}\"}} {v}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP gyro_peer Connected peers: 1 per peer, labelled with its state and watchdog state."
    );
    let _ = writeln!(o, "# TYPE gyro_peer gauge");
    for l in io.links.iter().flatten() {
        let p = &l.info;
        let _ = writeln!(
            o,
            "gyro_peer{{shard=\"{s}\",remote=\"{}\",origin_host=\"{}\",state=\"{:?}\",watchdog=\"{:?}\",requests=\"{}\"}} 1",
            p.remote,
            p.origin_host.replace(['"', '\\', '\n'], "_"),
            l.peer.state(),
            l.peer.watchdog_state(),
            p.requests
        );
    }
    o
}

fn summary(o: &mut String, name: &str, help: &str, shard: u16, h: &Histogram<u64>) {
    use std::fmt::Write;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e9;
        let _ = writeln!(o, "{name}{{shard=\"{shard}\",quantile=\"{q}\"}} {v:.9}");
    }
    let _ = writeln!(o, "{name}_count{{shard=\"{shard}\"}} {}", h.len());
}
