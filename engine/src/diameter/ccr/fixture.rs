//! A sample request for tests, benchmarks and fuzz seeds.

use super::{subscription_id_type, Ccr, Mscc, PsInformation, RequestType, SubscriptionId, Units};

/// A realistic 3GPP Gy CCR-UPDATE for a data session, as a PGW sends it: two MSCC (one
/// reporting usage with Reporting-Reason QUOTA_EXHAUSTED and asking for more, one
/// reporting a VALIDITY_TIME expiry), the subscriber's MSISDN, and PS-Information with
/// the charging id, APN, RAT type and SGSN MCC-MNC. 424 bytes encoded. Used by tests,
/// benchmarks and fuzz seeds.
pub fn sample_ccr_update<'a>() -> Ccr<'a> {
    let mut c = Ccr {
        session_id: "pgw1.op.example;1732598400;42",
        origin_host: "pgw1.op.example",
        origin_realm: "op.example",
        destination_realm: "ocs.example",
        service_context_id: "32251@3gpp.org",
        request_type: RequestType::Update,
        request_number: 3,
        event_timestamp: Some(3_941_587_200),
        multiple_services_indicator: true,
        subscription_id_count: 1,
        mscc_count: 2,
        ..Ccr::default()
    };
    c.header.hop_by_hop = 0x1122_3344;
    c.header.end_to_end = 0x5566_7788;
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: "491701234567",
    };
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        service_identifier: None,
        requested: Some(Units {
            total_octets: Some(10_485_760),
            ..Units::default()
        }),
        used: Some(Units {
            total_octets: Some(8_388_608),
            ..Units::default()
        }),
        reporting_reason: Some(3),
    };
    c.mscc[1] = Mscc {
        rating_group: Some(20),
        service_identifier: None,
        requested: None,
        used: Some(Units {
            total_octets: Some(65_536),
            ..Units::default()
        }),
        reporting_reason: Some(4),
    };
    c.ps = PsInformation {
        charging_id: Some(0x0abc_def0),
        called_station_id: Some("internet"),
        rat_type: Some(&[6]),
        sgsn_mcc_mnc: Some("26201"),
        ..PsInformation::default()
    };
    c
}
