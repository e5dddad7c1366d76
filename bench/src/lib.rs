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
