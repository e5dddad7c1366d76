//! gyro-bench: benchmarks of gyro. Criterion benches live in `benches/`, the
//! instruction-count driver in `src/bin/icount.rs` (run under callgrind by
//! `bench/callgrind.sh`), recorded figures in `results/`.
//!
//! This library holds the workloads both share, so the two kinds of measurement run
//! exactly the same code.

use gyro_engine::diameter::ccr::{
    encode_cca, encode_ccr, sample_ccr_update, AnswerMscc, Cca, Ccr, Units,
};
use gyro_engine::diameter::Message;

/// A CCR-UPDATE written by python-diameter 0.9.0 (an independent encoder): one MSCC
/// with RSU, USU and Reporting-Reason, two Subscription-Ids, PS-Information.
pub const PYTHON_CCR_U: &[u8] = include_bytes!("../data/python-ccr-u.bin");

/// The realistic 3GPP CCR-U of `sample_ccr_update`, encoded.
pub fn sample_ccr_bytes() -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = encode_ccr(&sample_ccr_update(), &mut buf).expect("sample fits");
    buf.truncate(n);
    buf
}

/// Decodes a CCR (header view, full validation, field extraction).
#[inline(never)]
pub fn decode(bytes: &[u8]) -> Option<Ccr<'_>> {
    Ccr::decode(&Message::new(bytes)?).ok()
}

/// Decodes a CCR into a value the caller reuses: the hot path's form.
#[inline(never)]
pub fn decode_into<'a>(bytes: &'a [u8], ccr: &mut Ccr<'a>) -> bool {
    match Message::new(bytes) {
        Some(m) => ccr.decode_into(&m).is_ok(),
        None => false,
    }
}

/// Walks every AVP with the borrowing iterator, descending into MSCC, RSU, USU,
/// Subscription-Id, Service-Information and PS-Information; returns the AVP count.
#[inline(never)]
pub fn walk(bytes: &[u8]) -> usize {
    let Some(m) = Message::new(bytes) else {
        return 0;
    };
    let mut stack = [m.avps(), m.avps(), m.avps(), m.avps()];
    let mut depth = 0;
    let mut n = 0;
    loop {
        match stack[depth].next() {
            None if depth == 0 => return n,
            None => depth -= 1,
            Some(Err(_)) => return n,
            Some(Ok(a)) => {
                n += 1;
                if matches!(a.code, 456 | 437 | 446 | 443 | 873 | 874) && depth < 3 {
                    depth += 1;
                    stack[depth] = a.group();
                }
            }
        }
    }
}

/// The answer MSCCs granted to the sample request.
pub fn sample_answer_mscc() -> [AnswerMscc; 2] {
    [
        AnswerMscc {
            rating_group: Some(10),
            result_code: 2001,
            granted: Some(Units {
                total_octets: Some(10_485_760),
                ..Units::default()
            }),
            validity_time_s: Some(600),
            ..AnswerMscc::default()
        },
        AnswerMscc {
            rating_group: Some(20),
            result_code: 2001,
            ..AnswerMscc::default()
        },
    ]
}

/// Encodes the CCA answering `ccr`.
#[inline(never)]
pub fn encode_answer(ccr: &Ccr<'_>, mscc: &[AnswerMscc], out: &mut [u8]) -> usize {
    let cca = Cca::answering(ccr, 2001, "ocs.gyro.test", "gyro.test", mscc);
    encode_cca(&ccr.header, &cca, out).unwrap_or(0)
}

/// The two services of the sample CCR-U as a CDR records them.
pub fn sample_cdr_services() -> [gyro_engine::cdr::CdrService<'static>; 2] {
    use gyro_engine::cdr::CdrService;
    use gyro_engine::provision::Unit;
    [
        CdrService {
            rating_group: Some(10),
            unit: Some(Unit::Octets),
            requested: 10_485_760,
            granted: 10_485_760,
            used: 8_388_608,
            package: Some("company-7-data"),
            package_units: 8_388_608,
            result_code: 2001,
            reporting_reason: Some(3),
            ..CdrService::default()
        },
        CdrService {
            rating_group: Some(20),
            unit: Some(Unit::Octets),
            used: 65_536,
            cost: 5_000,
            result_code: 2001,
            reporting_reason: Some(4),
            ..CdrService::default()
        },
    ]
}

/// Writes the CDR line of `ccr` with `services` into `out`; returns its length.
#[inline(never)]
pub fn write_cdr(
    ccr: &Ccr<'_>,
    services: &[gyro_engine::cdr::CdrService<'_>],
    out: &mut [u8],
) -> usize {
    use gyro_engine::cdr::{Cdr, CdrKind};
    let cdr = Cdr {
        kind: CdrKind::Ccr,
        seq: 123_456_789,
        shard: 1,
        ts_ms: 1_764_136_800_123,
        ccr,
        msisdn: Some("491701234567"),
        imsi: Some("262011234567890"),
        company: Some("company-7"),
        result_code: 2001,
        services,
    };
    gyro_engine::cdr::write_cdr(&cdr, out).unwrap_or(0)
}

/// The single-shard engine over a generated dataset (`gyro-loadgen dataset`), with room
/// for `sessions_max` open sessions.
pub fn generated_engine(
    subscribers: u64,
    companies: u64,
    sessions_max: usize,
) -> gyro_engine::charging::engine::Engine {
    use gyro_engine::charging::engine::{Engine, EngineConfig};
    let mut ndjson = Vec::new();
    let spec = gyro_loadgen::dataset::Spec {
        subscribers,
        companies,
        seed: 1,
    };
    gyro_loadgen::dataset::write(&spec, &mut ndjson).expect("writing to memory");
    let imp =
        gyro_engine::provision::import_ndjson(&mut ndjson, gyro_engine::provision::OnError::Reject);
    assert!(imp.is_ok(), "generated dataset rejected");
    Engine::new(
        imp.dataset,
        EngineConfig {
            sessions_max,
            ..EngineConfig::default()
        },
    )
}

/// The measured engine path: decode, engine, CCA, CDR line. `bench/callgrind.sh` counts
/// it alone with `--toggle-collect=gyro_bench::engine_path`.
#[inline(never)]
pub fn engine_path(
    engine: &mut gyro_engine::charging::engine::Engine,
    bytes: &[u8],
    now: u64,
    o: &mut gyro_engine::charging::engine::Decision,
    out: &mut [u8],
    line: &mut [u8],
) -> (usize, u32) {
    use gyro_engine::cdr::{write_cdr, Cdr, CdrKind};
    use gyro_engine::diameter::ccr::{encode_cca, subscription_id_type, Cca};
    let Some(msg) = Message::new(bytes) else {
        return (0, 0);
    };
    // Decoded in place, as the server does: `Ccr::decode` would move the value out.
    let mut ccr = Ccr::default();
    if ccr.decode_into(&msg).is_err() {
        return (0, 0);
    }
    engine.handle_into(&ccr, now, o);
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
    (a + write_cdr(&cdr, line).unwrap_or(0), o.result_code)
}

/// CCR-Us over many open sessions of a generated dataset, for the engine path: one
/// encoded CCR-U per session whose CC-Request-Number is bumped in place before each
/// use, so any number of steps stays a stream of new requests (never retransmissions)
/// without allocating or encoding in the loop. Every 65,536 steps each company is topped
/// up, so the workload stays the granted path instead of draining into refusals.
pub struct PathBench {
    pub engine: gyro_engine::charging::engine::Engine,
    requests: Vec<(Vec<u8>, usize, u32)>,
    next: usize,
    steps: u64,
    /// Answers other than 2001 so far.
    pub refused: u64,
    outcome: Box<gyro_engine::charging::engine::Decision>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl PathBench {
    /// `sessions` sessions opened with a CCR-I each, over `subscribers` subscribers.
    pub fn new(subscribers: u64, sessions: usize) -> PathBench {
        use gyro_engine::diameter::ccr::{
            encode_ccr, subscription_id_type, Mscc, RequestType, SubscriptionId, Units,
        };
        let mut engine = generated_engine(subscribers, (subscribers / 100).max(1), sessions + 16);
        let mut out = vec![0u8; 4096];
        let mut line = vec![0u8; 4096];
        let mut outcome = Box::<gyro_engine::charging::engine::Decision>::default();
        let encode = |s: usize, t: RequestType, number: u32| -> Vec<u8> {
            let id = format!("pgw1.op.example;1732598400;{s:08}");
            let msisdn = gyro_loadgen::dataset::msisdn(s as u64 % subscribers);
            let mut c = Ccr {
                session_id: &id,
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
                data: &msisdn,
            };
            let octets = Units {
                total_octets: Some(1 << 20),
                ..Units::default()
            };
            c.mscc[0] = Mscc {
                rating_group: Some(10),
                service_identifier: None,
                requested: Some(octets),
                used: (t == RequestType::Update).then_some(octets),
                reporting_reason: Some(3),
            };
            let mut buf = vec![0u8; 2048];
            let len = encode_ccr(&c, &mut buf).expect("fits");
            buf.truncate(len);
            buf
        };
        // Every company can pay for its sessions from the start, so all of them open.
        for c in 0..engine.companies() as u32 {
            engine.top_up(c, 1_000_000_000);
        }
        let mut requests = Vec::with_capacity(sessions);
        for s in 0..sessions {
            let _ = engine_path(
                &mut engine,
                &encode(s, RequestType::Initial, 0),
                1,
                &mut outcome,
                &mut out,
                &mut line,
            );
            let u = encode(s, RequestType::Update, 0);
            let at = Message::new(&u)
                .and_then(|m| m.avps().flatten().find(|a| a.code == 415))
                .map(|a| a.offset as usize + 8)
                .expect("CC-Request-Number");
            requests.push((u, at, 0));
        }
        PathBench {
            engine,
            requests,
            next: 0,
            steps: 0,
            refused: 0,
            outcome,
            out,
            line,
        }
    }

    /// One CCR-U of the next session through the path.
    pub fn step(&mut self) -> usize {
        let i = self.next;
        self.next = (i + 1) % self.requests.len().max(1);
        let (bytes, at, number) = &mut self.requests[i];
        *number += 1;
        bytes[*at..*at + 4].copy_from_slice(&number.to_be_bytes());
        let (n, code) = engine_path(
            &mut self.engine,
            bytes,
            2,
            &mut self.outcome,
            &mut self.out,
            &mut self.line,
        );
        self.refused += u64::from(code != 2001);
        self.steps += 1;
        if self.steps.is_multiple_of(65_536) {
            for c in 0..self.engine.companies() as u32 {
                self.engine.top_up(c, 1_000_000_000);
            }
        }
        n
    }
}
