//! The Credit-Control-Answer as gyro writes it: `Cca` with its MSCCs (`AnswerMscc`),
//! `encode_cca`, and the Failed-AVP of a rating failure (`rating_failed_avp`).

use super::super::dict::AvpId;
use super::super::encode::{EncodeError, Encoder};
use super::super::message::{Header, Message};
use super::super::{application, cmd_flags};
use super::{Ccr, RequestType, Units};

/// Final-Unit-Action (RFC 8506 §8.35).
pub mod final_unit_action {
    pub const TERMINATE: u32 = 0;
    pub const REDIRECT: u32 = 1;
    pub const RESTRICT_ACCESS: u32 = 2;
}

/// One MSCC of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerMscc {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub result_code: u32,
    pub granted: Option<Units>,
    pub validity_time_s: Option<u32>,
    pub final_unit_action: Option<u32>,
    pub volume_quota_threshold: Option<u32>,
    pub time_quota_threshold: Option<u32>,
    pub quota_holding_time_s: Option<u32>,
}

/// What a Credit-Control-Answer says.
#[derive(Clone, Copy, Debug)]
pub struct Cca<'x> {
    pub session_id: &'x str,
    pub result_code: u32,
    pub origin_host: &'x str,
    pub origin_realm: &'x str,
    pub request_type: RequestType,
    pub request_number: u32,
    /// Top-level GSU, Validity-Time and Final-Unit-Action for single-service requests.
    pub granted: Option<Units>,
    pub validity_time_s: Option<u32>,
    pub final_unit_action: Option<u32>,
    pub mscc: &'x [AnswerMscc],
    /// Cost-Information for PRICE_ENQUIRY (micro-units, Exponent -6) and a
    /// Check-Balance-Result for CHECK_BALANCE.
    pub cost_micros: Option<i64>,
    pub currency_code: Option<u32>,
    pub check_balance_result: Option<u32>,
    /// AVPs copied from the request into a Failed-AVP (whole AVPs with their padding),
    /// as RFC 8506 §9.1 asks of DIAMETER_RATING_FAILED (5031): see `rating_failed_avp`.
    pub failed_avp: Option<&'x [u8]>,
}

impl<'x> Cca<'x> {
    /// The answer to `ccr` from `origin_host`/`origin_realm` with these MSCCs: echoes
    /// the Session-Id, CC-Request-Type and CC-Request-Number; nothing else is set.
    pub fn answering(
        ccr: &Ccr<'x>,
        result_code: u32,
        origin_host: &'x str,
        origin_realm: &'x str,
        mscc: &'x [AnswerMscc],
    ) -> Cca<'x> {
        Cca {
            session_id: ccr.session_id,
            result_code,
            origin_host,
            origin_realm,
            request_type: ccr.request_type,
            request_number: ccr.request_number,
            granted: None,
            validity_time_s: None,
            final_unit_action: None,
            mscc,
            cost_micros: None,
            currency_code: None,
            check_balance_result: None,
            failed_avp: None,
        }
    }
}

/// Encodes a CCA answering the request whose header is `req` (same Hop-by-Hop and
/// End-to-End, P bit copied, R cleared).
pub fn encode_cca(req: &Header, cca: &Cca<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let h = Header {
        version: super::super::VERSION,
        length: 0,
        flags: req.flags & cmd_flags::P,
        command: super::super::command::CREDIT_CONTROL,
        application_id: application::CREDIT_CONTROL,
        hop_by_hop: req.hop_by_hop,
        end_to_end: req.end_to_end,
    };
    let mut e = Encoder::new(buf, &h);
    e.str(AvpId::SessionId, cca.session_id);
    e.u32(AvpId::ResultCode, cca.result_code);
    e.str(AvpId::OriginHost, cca.origin_host);
    e.str(AvpId::OriginRealm, cca.origin_realm);
    e.u32(AvpId::AuthApplicationId, application::CREDIT_CONTROL);
    e.u32(AvpId::CcRequestType, cca.request_type as u32);
    e.u32(AvpId::CcRequestNumber, cca.request_number);
    if let Some(g) = &cca.granted {
        g.encode(&mut e, AvpId::GrantedServiceUnit);
    }
    if let Some(v) = cca.validity_time_s {
        e.u32(AvpId::ValidityTime, v);
    }
    if let Some(a) = cca.final_unit_action {
        let f = e.begin_group(AvpId::FinalUnitIndication);
        e.u32(AvpId::FinalUnitAction, a);
        e.end_group(f);
    }
    for m in cca.mscc {
        let g = e.begin_group(AvpId::MultipleServicesCreditControl);
        if let Some(gsu) = &m.granted {
            gsu.encode(&mut e, AvpId::GrantedServiceUnit);
        }
        if let Some(v) = m.service_identifier {
            e.u32(AvpId::ServiceIdentifier, v);
        }
        if let Some(v) = m.rating_group {
            e.u32(AvpId::RatingGroup, v);
        }
        if let Some(v) = m.validity_time_s {
            e.u32(AvpId::ValidityTime, v);
        }
        e.u32(AvpId::ResultCode, m.result_code);
        if let Some(a) = m.final_unit_action {
            let f = e.begin_group(AvpId::FinalUnitIndication);
            e.u32(AvpId::FinalUnitAction, a);
            e.end_group(f);
        }
        if let Some(v) = m.time_quota_threshold {
            e.u32(AvpId::TimeQuotaThreshold, v);
        }
        if let Some(v) = m.volume_quota_threshold {
            e.u32(AvpId::VolumeQuotaThreshold, v);
        }
        if let Some(v) = m.quota_holding_time_s {
            e.u32(AvpId::QuotaHoldingTime, v);
        }
        e.end_group(g);
    }
    if let Some(cost) = cca.cost_micros {
        let ci = e.begin_group(AvpId::CostInformation);
        let uv = e.begin_group(AvpId::UnitValue);
        e.i64(AvpId::ValueDigits, cost);
        e.i32(AvpId::Exponent, -6);
        e.end_group(uv);
        e.u32(AvpId::CurrencyCode, cca.currency_code.unwrap_or(978));
        e.end_group(ci);
    }
    if let Some(v) = cca.check_balance_result {
        e.u32(AvpId::CheckBalanceResult, v);
    }
    if let Some(avps) = cca.failed_avp {
        let g = e.begin_group(AvpId::FailedAvp);
        e.raw_avps(avps);
        e.end_group(g);
    }
    e.finish()
}

/// The Failed-AVP of a 5004 for units out of bounds (RFC 6733 §7.5): the
/// Used-Service-Unit of MSCC `mscc_index` (or of the request, `None`), else its
/// Requested-Service-Unit, whole with its padding.
pub fn units_failed_avp(request: &[u8], mscc_index: Option<usize>) -> Option<&[u8]> {
    failed_avp_of(request, mscc_index, 446, 437)
}

/// The AVP a 5031 (rating failed) answer names in its Failed-AVP: in the
/// `mscc_index`-th Multiple-Services-Credit-Control of `request` (or at the top level
/// when `None`), its Rating-Group, else its Service-Identifier; the whole AVP with its
/// padding, borrowed from the request.
pub fn rating_failed_avp(request: &[u8], mscc_index: Option<usize>) -> Option<&[u8]> {
    failed_avp_of(request, mscc_index, 432, 439)
}

/// In the `mscc_index`-th MSCC of `request` (or at its top level), the first AVP of
/// code `first`, else the first of code `then` (base AVPs, no vendor), whole with its
/// padding.
fn failed_avp_of(
    request: &[u8],
    mscc_index: Option<usize>,
    first: u32,
    then: u32,
) -> Option<&[u8]> {
    let msg = Message::new(request)?;
    let whole = |a: &super::super::Avp<'_>| {
        let start = a.offset as usize;
        let end = (start + ((a.length as usize + 3) & !3)).min(request.len());
        request.get(start..end)
    };
    let pick = |avps: super::super::AvpIter<'_>| {
        let mut second = None;
        for a in avps.flatten().filter(|a| a.vendor_id == 0) {
            if a.code == first {
                return whole(&a);
            }
            if a.code == then {
                second = second.or_else(|| whole(&a));
            }
        }
        second
    };
    match mscc_index {
        None => pick(msg.avps()),
        Some(i) => {
            let m = msg
                .avps()
                .flatten()
                .filter(|a| a.code == 456 && a.vendor_id == 0)
                .nth(i)?;
            pick(m.group())
        }
    }
}

impl Units {
    /// Writes the units as the Grouped AVP `id` (a GSU here, an RSU or USU in
    /// `encode_ccr`).
    pub(super) fn encode(&self, e: &mut Encoder<'_>, id: AvpId) {
        let g = e.begin_group(id);
        if let Some(v) = self.time_s {
            e.u32(AvpId::CcTime, v);
        }
        if let Some(v) = self.total_octets {
            e.u64(AvpId::CcTotalOctets, v);
        }
        if let Some(v) = self.input_octets {
            e.u64(AvpId::CcInputOctets, v);
        }
        if let Some(v) = self.output_octets {
            e.u64(AvpId::CcOutputOctets, v);
        }
        if let Some(v) = self.service_specific {
            e.u64(AvpId::CcServiceSpecificUnits, v);
        }
        e.end_group(g);
    }
}
