//! The Credit-Control-Request as gyro reads it (one pass: validation and extraction
//! together, borrowing every string) and the Credit-Control-Answer as gyro writes it.
//!
//! RFC 8506 §3.1–3.2, with the Multiple-Services-Credit-Control and Service-Information
//! of 3GPP TS 32.299 §6.4 and §7.2. Limits: `limits::MSCC_MAX` MSCC and
//! `limits::SUBSCRIPTION_ID_MAX` Subscription-Ids per request (more is answered 5009).

use super::avp::{Address, Avp};
use super::dict::{AvpDef, AvpId};
use super::encode::{EncodeError, Encoder};
use super::error::ProtocolError;
use super::limits::{MSCC_MAX, SESSION_ID_SIZE_MAX, SUBSCRIPTION_ID_MAX};
use super::message::{Header, Message};
use super::validate::{self, Visit};
use super::{application, cmd_flags, result_code as rc};

/// CC-Request-Type (RFC 8506 §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum RequestType {
    #[default]
    Initial = 1,
    Update = 2,
    Termination = 3,
    Event = 4,
}

impl RequestType {
    pub fn from_u32(v: u32) -> Option<RequestType> {
        Some(match v {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            4 => RequestType::Event,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Initial => "INITIAL",
            RequestType::Update => "UPDATE",
            RequestType::Termination => "TERMINATION",
            RequestType::Event => "EVENT",
        }
    }
}

/// Requested-Action (RFC 8506 §8.41).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestedAction {
    DirectDebiting = 0,
    RefundAccount = 1,
    CheckBalance = 2,
    PriceEnquiry = 3,
}

/// Subscription-Id-Type (RFC 8506 §8.47).
pub mod subscription_id_type {
    pub const END_USER_E164: u32 = 0;
    pub const END_USER_IMSI: u32 = 1;
    pub const END_USER_SIP_URI: u32 = 2;
    pub const END_USER_NAI: u32 = 3;
    pub const END_USER_PRIVATE: u32 = 4;
}

/// One Subscription-Id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionId<'a> {
    pub id_type: u32,
    pub data: &'a str,
}

/// Service units (RSU, USU, GSU; RFC 8506 §8.17–8.19). Absent values are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Units {
    pub time_s: Option<u32>,
    pub total_octets: Option<u64>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub service_specific: Option<u64>,
}

impl Units {
    pub fn is_empty(&self) -> bool {
        *self == Units::default()
    }

    /// Adds another USU of the same MSCC (one per tariff period).
    fn add(&mut self, o: &Units) {
        fn sum32(a: &mut Option<u32>, b: Option<u32>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0).saturating_add(b));
            }
        }
        fn sum64(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0).saturating_add(b));
            }
        }
        sum32(&mut self.time_s, o.time_s);
        sum64(&mut self.total_octets, o.total_octets);
        sum64(&mut self.input_octets, o.input_octets);
        sum64(&mut self.output_octets, o.output_octets);
        sum64(&mut self.service_specific, o.service_specific);
    }

    #[inline(always)]
    fn set(&mut self, def: &AvpDef, avp: &Avp<'_>) {
        // Values were checked by the walk; a failure here cannot happen.
        match def.id {
            AvpId::CcTime => self.time_s = avp.u32().ok(),
            AvpId::CcTotalOctets => self.total_octets = avp.u64().ok(),
            AvpId::CcInputOctets => self.input_octets = avp.u64().ok(),
            AvpId::CcOutputOctets => self.output_octets = avp.u64().ok(),
            AvpId::CcServiceSpecificUnits => self.service_specific = avp.u64().ok(),
            _ => {}
        }
    }

    fn encode(&self, e: &mut Encoder<'_>, id: AvpId) {
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

/// One Multiple-Services-Credit-Control of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mscc {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// `Some` when an RSU was present (an empty RSU asks the server to choose).
    pub requested: Option<Units>,
    /// Sum of the USUs, `Some` when at least one was present.
    pub used: Option<Units>,
    /// Reporting-Reason at MSCC level or in a USU (3GPP TS 32.299 §7.2.175).
    pub reporting_reason: Option<u32>,
}

/// PS-Information fields a CDR carries (3GPP TS 32.299 §7.2.158).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PsInformation<'a> {
    pub charging_id: Option<u32>,
    pub called_station_id: Option<&'a str>,
    pub rat_type: Option<&'a [u8]>,
    pub user_location_info: Option<&'a [u8]>,
    pub sgsn_address: Option<Address<'a>>,
    pub sgw_address: Option<Address<'a>>,
    pub ggsn_address: Option<Address<'a>>,
    pub sgsn_mcc_mnc: Option<&'a str>,
    pub imsi_mcc_mnc: Option<&'a str>,
}

/// IMS-Information fields a CDR carries (3GPP TS 32.299 §7.2.77).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImsInformation<'a> {
    pub calling_party_address: Option<&'a str>,
    pub called_party_address: Option<&'a str>,
    pub ims_charging_identifier: Option<&'a str>,
    pub node_functionality: Option<u32>,
    pub role_of_node: Option<u32>,
}

/// SMS-Information fields a CDR carries (3GPP TS 32.299 §7.2.196).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmsInformation<'a> {
    pub smsc_address: Option<Address<'a>>,
    pub recipient_address: Option<&'a str>,
    pub sms_node: Option<u32>,
}

/// A decoded Credit-Control-Request, borrowing from the message bytes.
#[derive(Clone, Copy, Debug)]
pub struct Ccr<'a> {
    pub header: Header,
    pub session_id: &'a str,
    pub origin_host: &'a str,
    pub origin_realm: &'a str,
    pub destination_realm: &'a str,
    pub destination_host: Option<&'a str>,
    pub service_context_id: &'a str,
    pub request_type: RequestType,
    pub request_number: u32,
    pub event_timestamp: Option<u32>,
    pub user_name: Option<&'a str>,
    pub requested_action: Option<RequestedAction>,
    pub service_identifier: Option<u32>,
    pub termination_cause: Option<u32>,
    pub multiple_services_indicator: bool,
    /// Top-level RSU/USU (single-service requests such as SMS events).
    pub requested: Option<Units>,
    pub used: Option<Units>,
    pub subscription_id_count: u8,
    pub subscription_ids: [SubscriptionId<'a>; SUBSCRIPTION_ID_MAX],
    pub mscc_count: u8,
    pub mscc: [Mscc; MSCC_MAX],
    pub ps: PsInformation<'a>,
    pub ims: ImsInformation<'a>,
    pub sms: SmsInformation<'a>,
    pub user_equipment_info: Option<(u32, &'a [u8])>,
}

// Bits of the top-level AVPs that may occur once.
const SEEN_SESSION_ID: u32 = 1 << 0;
const SEEN_ORIGIN_HOST: u32 = 1 << 1;
const SEEN_ORIGIN_REALM: u32 = 1 << 2;
const SEEN_DESTINATION_REALM: u32 = 1 << 3;
const SEEN_AUTH_APPLICATION_ID: u32 = 1 << 4;
const SEEN_SERVICE_CONTEXT_ID: u32 = 1 << 5;
const SEEN_REQUEST_TYPE: u32 = 1 << 6;
const SEEN_REQUEST_NUMBER: u32 = 1 << 7;
const SEEN_OTHER_SINGLE: u32 = 1 << 8; // first bit for optional single AVPs

const REQUIRED: [(u32, AvpId); 8] = [
    (SEEN_SESSION_ID, AvpId::SessionId),
    (SEEN_ORIGIN_HOST, AvpId::OriginHost),
    (SEEN_ORIGIN_REALM, AvpId::OriginRealm),
    (SEEN_DESTINATION_REALM, AvpId::DestinationRealm),
    (SEEN_AUTH_APPLICATION_ID, AvpId::AuthApplicationId),
    (SEEN_SERVICE_CONTEXT_ID, AvpId::ServiceContextId),
    (SEEN_REQUEST_TYPE, AvpId::CcRequestType),
    (SEEN_REQUEST_NUMBER, AvpId::CcRequestNumber),
];

impl<'a> Ccr<'a> {
    /// Decodes and validates a CCR whose header already passed
    /// `validate::check_request_header` and whose command and application are 272/4.
    /// Every AVP is checked (framing, M bit, value, nesting); the grammar of RFC 8506
    /// §3.1 is enforced (required AVPs, single occurrences).
    pub fn decode(msg: &Message<'a>) -> Result<Ccr<'a>, ProtocolError> {
        let mut c = Ccr {
            header: msg.header,
            session_id: "",
            origin_host: "",
            origin_realm: "",
            destination_realm: "",
            destination_host: None,
            service_context_id: "",
            request_type: RequestType::Initial,
            request_number: 0,
            event_timestamp: None,
            user_name: None,
            requested_action: None,
            service_identifier: None,
            termination_cause: None,
            multiple_services_indicator: false,
            requested: None,
            used: None,
            subscription_id_count: 0,
            subscription_ids: [SubscriptionId::default(); SUBSCRIPTION_ID_MAX],
            mscc_count: 0,
            mscc: [Mscc::default(); MSCC_MAX],
            ps: PsInformation::default(),
            ims: ImsInformation::default(),
            sms: SmsInformation::default(),
            user_equipment_info: None,
        };
        let mut seen = 0u32;
        validate::walk(msg.avps(), |v| c.visit(v, &mut seen))?;
        for (bit, id) in REQUIRED {
            if seen & bit == 0 {
                let d = id.def();
                return Err(ProtocolError::missing(d.code, d.vendor_id, d.data_type.min_size()));
            }
        }
        Ok(c)
    }

    #[inline(always)]
    fn once(seen: &mut u32, bit: u32, avp: &Avp<'_>) -> Result<(), ProtocolError> {
        if *seen & bit != 0 {
            return Err(ProtocolError::at(rc::AVP_OCCURS_TOO_MANY_TIMES, avp));
        }
        *seen |= bit;
        Ok(())
    }

    #[inline(always)]
    fn visit(&mut self, v: Visit<'a>, seen: &mut u32) -> Result<(), ProtocolError> {
        let Some(def) = v.def else { return Ok(()) };
        let avp = &v.avp;
        // Values were checked by the walk: the accessors below cannot fail.
        let s = || avp.utf8().unwrap_or("");
        let u = || avp.u32().unwrap_or(0);
        match v.parent {
            None => self.top_level(def, avp, seen)?,
            Some(AvpId::MultipleServicesCreditControl) => {
                let m = &mut self.mscc[usize::from(self.mscc_count) - 1];
                match def.id {
                    AvpId::RatingGroup => m.rating_group = Some(u()),
                    AvpId::ServiceIdentifier => m.service_identifier = Some(u()),
                    AvpId::RequestedServiceUnit => m.requested = Some(Units::default()),
                    AvpId::UsedServiceUnit
                        if m.used.is_none() => {
                            m.used = Some(Units::default());
                        }
                    AvpId::ReportingReason => m.reporting_reason = Some(u()),
                    _ => {}
                }
            }
            Some(AvpId::RequestedServiceUnit) => {
                let target = if v.depth == 1 {
                    &mut self.requested
                } else {
                    &mut self.mscc[usize::from(self.mscc_count) - 1].requested
                };
                if let Some(t) = target {
                    t.set(def, avp);
                }
            }
            Some(AvpId::UsedServiceUnit) => {
                if def.id == AvpId::ReportingReason && v.depth == 2 {
                    self.mscc[usize::from(self.mscc_count) - 1].reporting_reason = Some(u());
                    return Ok(());
                }
                // Several USUs in one MSCC (one per tariff period) are summed.
                let mut one = Units::default();
                one.set(def, avp);
                let target = if v.depth == 1 {
                    &mut self.used
                } else {
                    &mut self.mscc[usize::from(self.mscc_count) - 1].used
                };
                if let Some(t) = target {
                    t.add(&one);
                }
            }
            Some(AvpId::SubscriptionId) => {
                let sub = &mut self.subscription_ids[usize::from(self.subscription_id_count) - 1];
                match def.id {
                    AvpId::SubscriptionIdType => sub.id_type = u(),
                    AvpId::SubscriptionIdData => sub.data = s(),
                    _ => {}
                }
            }
            Some(AvpId::PsInformation) => {
                let ps = &mut self.ps;
                match def.id {
                    AvpId::TgppChargingId => ps.charging_id = Some(u()),
                    AvpId::CalledStationId => ps.called_station_id = Some(s()),
                    AvpId::TgppRatType => ps.rat_type = Some(avp.data()),
                    AvpId::TgppUserLocationInfo => ps.user_location_info = Some(avp.data()),
                    AvpId::SgsnAddress => ps.sgsn_address = avp.address().ok(),
                    AvpId::SgwAddress => ps.sgw_address = avp.address().ok(),
                    AvpId::GgsnAddress => ps.ggsn_address = avp.address().ok(),
                    AvpId::TgppSgsnMccMnc => ps.sgsn_mcc_mnc = Some(s()),
                    AvpId::TgppImsiMccMnc => ps.imsi_mcc_mnc = Some(s()),
                    _ => {}
                }
            }
            Some(AvpId::ImsInformation) => {
                let ims = &mut self.ims;
                match def.id {
                    AvpId::CallingPartyAddress => ims.calling_party_address = Some(s()),
                    AvpId::CalledPartyAddress => ims.called_party_address = Some(s()),
                    AvpId::ImsChargingIdentifier => ims.ims_charging_identifier = Some(s()),
                    AvpId::NodeFunctionality => ims.node_functionality = Some(u()),
                    AvpId::RoleOfNode => ims.role_of_node = Some(u()),
                    _ => {}
                }
            }
            Some(AvpId::SmsInformation) => match def.id {
                AvpId::SmscAddress => self.sms.smsc_address = avp.address().ok(),
                AvpId::SmsNode => self.sms.sms_node = Some(u()),
                _ => {}
            },
            Some(AvpId::RecipientAddress) => {
                if def.id == AvpId::AddressData && self.sms.recipient_address.is_none() {
                    self.sms.recipient_address = Some(s());
                }
            }
            Some(AvpId::UserEquipmentInfo) => {
                let (t, val) = self.user_equipment_info.get_or_insert((0, &[]));
                match def.id {
                    AvpId::UserEquipmentInfoType => *t = u(),
                    AvpId::UserEquipmentInfoValue => *val = avp.data(),
                    _ => {}
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    #[inline(always)]
    fn top_level(
        &mut self,
        def: &'static AvpDef,
        avp: &Avp<'a>,
        seen: &mut u32,
    ) -> Result<(), ProtocolError> {
        let s = || avp.utf8().unwrap_or("");
        let u = || avp.u32().unwrap_or(0);
        match def.id {
            AvpId::SessionId => {
                Self::once(seen, SEEN_SESSION_ID, avp)?;
                let v = s();
                if v.is_empty() || v.len() > SESSION_ID_SIZE_MAX {
                    return Err(ProtocolError::at(rc::INVALID_AVP_VALUE, avp));
                }
                self.session_id = v;
            }
            AvpId::OriginHost => {
                Self::once(seen, SEEN_ORIGIN_HOST, avp)?;
                self.origin_host = s();
            }
            AvpId::OriginRealm => {
                Self::once(seen, SEEN_ORIGIN_REALM, avp)?;
                self.origin_realm = s();
            }
            AvpId::DestinationRealm => {
                Self::once(seen, SEEN_DESTINATION_REALM, avp)?;
                self.destination_realm = s();
            }
            AvpId::AuthApplicationId => {
                Self::once(seen, SEEN_AUTH_APPLICATION_ID, avp)?;
                if u() != application::CREDIT_CONTROL {
                    return Err(ProtocolError::at(rc::INVALID_AVP_VALUE, avp));
                }
            }
            AvpId::ServiceContextId => {
                Self::once(seen, SEEN_SERVICE_CONTEXT_ID, avp)?;
                self.service_context_id = s();
            }
            AvpId::CcRequestType => {
                Self::once(seen, SEEN_REQUEST_TYPE, avp)?;
                // The walk checked the enumeration range 1..=4.
                self.request_type = RequestType::from_u32(u()).unwrap_or_default();
            }
            AvpId::CcRequestNumber => {
                Self::once(seen, SEEN_REQUEST_NUMBER, avp)?;
                self.request_number = u();
            }
            AvpId::DestinationHost => {
                Self::once(seen, SEEN_OTHER_SINGLE, avp)?;
                self.destination_host = Some(s());
            }
            AvpId::EventTimestamp => {
                Self::once(seen, SEEN_OTHER_SINGLE << 1, avp)?;
                self.event_timestamp = Some(u());
            }
            AvpId::UserName => {
                Self::once(seen, SEEN_OTHER_SINGLE << 2, avp)?;
                self.user_name = Some(s());
            }
            AvpId::RequestedAction => {
                Self::once(seen, SEEN_OTHER_SINGLE << 3, avp)?;
                self.requested_action = Some(match u() {
                    0 => RequestedAction::DirectDebiting,
                    1 => RequestedAction::RefundAccount,
                    2 => RequestedAction::CheckBalance,
                    _ => RequestedAction::PriceEnquiry,
                });
            }
            AvpId::ServiceIdentifier => {
                Self::once(seen, SEEN_OTHER_SINGLE << 4, avp)?;
                self.service_identifier = Some(u());
            }
            AvpId::TerminationCause => {
                Self::once(seen, SEEN_OTHER_SINGLE << 5, avp)?;
                self.termination_cause = Some(u());
            }
            AvpId::MultipleServicesIndicator => {
                Self::once(seen, SEEN_OTHER_SINGLE << 6, avp)?;
                self.multiple_services_indicator = u() == 1;
            }
            AvpId::RequestedServiceUnit => {
                Self::once(seen, SEEN_OTHER_SINGLE << 7, avp)?;
                self.requested = Some(Units::default());
            }
            AvpId::UsedServiceUnit => {
                if self.used.is_none() {
                    self.used = Some(Units::default());
                }
            }
            AvpId::ServiceInformation => Self::once(seen, SEEN_OTHER_SINGLE << 8, avp)?,
            AvpId::UserEquipmentInfo => Self::once(seen, SEEN_OTHER_SINGLE << 9, avp)?,
            AvpId::OriginStateId => Self::once(seen, SEEN_OTHER_SINGLE << 10, avp)?,
            AvpId::CcSubSessionId => Self::once(seen, SEEN_OTHER_SINGLE << 11, avp)?,
            AvpId::AcctMultiSessionId => Self::once(seen, SEEN_OTHER_SINGLE << 12, avp)?,
            AvpId::CcCorrelationId => Self::once(seen, SEEN_OTHER_SINGLE << 13, avp)?,
            AvpId::SubscriptionId => {
                if usize::from(self.subscription_id_count) == SUBSCRIPTION_ID_MAX {
                    return Err(ProtocolError::at(rc::AVP_OCCURS_TOO_MANY_TIMES, avp));
                }
                self.subscription_id_count += 1;
            }
            AvpId::MultipleServicesCreditControl => {
                if usize::from(self.mscc_count) == MSCC_MAX {
                    return Err(ProtocolError::at(rc::AVP_OCCURS_TOO_MANY_TIMES, avp));
                }
                self.mscc_count += 1;
            }
            id => {
                // Known, but not in the CCR grammar: an M-bit one is not understood here.
                if !validate::ccr_allowed(id) && avp.is_mandatory() {
                    return Err(ProtocolError::at(rc::AVP_UNSUPPORTED, avp));
                }
            }
        }
        Ok(())
    }

    /// The Subscription-Ids of the request.
    pub fn subscription_ids(&self) -> &[SubscriptionId<'a>] {
        &self.subscription_ids[..usize::from(self.subscription_id_count)]
    }
    /// The MSCCs of the request.
    pub fn mscc(&self) -> &[Mscc] {
        &self.mscc[..usize::from(self.mscc_count)]
    }
    /// The first Subscription-Id of a type.
    pub fn subscription(&self, id_type: u32) -> Option<&'a str> {
        self.subscription_ids().iter().find(|s| s.id_type == id_type).map(|s| s.data)
    }
}

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
    /// Top-level GSU for single-service requests.
    pub granted: Option<Units>,
    pub mscc: &'x [AnswerMscc],
    /// Cost-Information for PRICE_ENQUIRY (micro-units, Exponent -6) and a
    /// Check-Balance-Result for CHECK_BALANCE.
    pub cost_micros: Option<i64>,
    pub currency_code: Option<u32>,
    pub check_balance_result: Option<u32>,
}

/// Encodes a CCA answering the request whose header is `req` (same Hop-by-Hop and
/// End-to-End, P bit copied, R cleared).
pub fn encode_cca(req: &Header, cca: &Cca<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let h = Header {
        version: super::VERSION,
        length: 0,
        flags: req.flags & cmd_flags::P,
        command: super::command::CREDIT_CONTROL,
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
    e.finish()
}

fn encode_address(e: &mut Encoder<'_>, id: AvpId, a: &Address<'_>) {
    match a {
        Address::V4(v) => e.ipv4(id, *v),
        Address::V6(v) => e.ipv6(id, *v),
        Address::E164(digits) => {
            let mut b = [0u8; 2 + 64];
            let n = digits.len().min(64);
            b[1] = super::avp::address_family::E164 as u8;
            b[2..2 + n].copy_from_slice(&digits[..n]);
            e.bytes(id, &b[..2 + n]);
        }
    }
}

/// Encodes a CCR from its decoded form (the load generator and tests use it; decoding
/// the result gives back an equal `Ccr`).
pub fn encode_ccr(c: &Ccr<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let h = Header {
        version: super::VERSION,
        length: 0,
        flags: cmd_flags::R | (c.header.flags & (cmd_flags::P | cmd_flags::T)),
        command: super::command::CREDIT_CONTROL,
        application_id: application::CREDIT_CONTROL,
        hop_by_hop: c.header.hop_by_hop,
        end_to_end: c.header.end_to_end,
    };
    let mut e = Encoder::new(buf, &h);
    e.str(AvpId::SessionId, c.session_id);
    e.str(AvpId::OriginHost, c.origin_host);
    e.str(AvpId::OriginRealm, c.origin_realm);
    e.str(AvpId::DestinationRealm, c.destination_realm);
    e.u32(AvpId::AuthApplicationId, application::CREDIT_CONTROL);
    e.str(AvpId::ServiceContextId, c.service_context_id);
    e.u32(AvpId::CcRequestType, c.request_type as u32);
    e.u32(AvpId::CcRequestNumber, c.request_number);
    if let Some(v) = c.destination_host {
        e.str(AvpId::DestinationHost, v);
    }
    if let Some(v) = c.user_name {
        e.str(AvpId::UserName, v);
    }
    if let Some(v) = c.event_timestamp {
        e.u32(AvpId::EventTimestamp, v);
    }
    for s in c.subscription_ids() {
        let g = e.begin_group(AvpId::SubscriptionId);
        e.u32(AvpId::SubscriptionIdType, s.id_type);
        e.str(AvpId::SubscriptionIdData, s.data);
        e.end_group(g);
    }
    if let Some(v) = c.requested_action {
        e.u32(AvpId::RequestedAction, v as u32);
    }
    if let Some(v) = c.service_identifier {
        e.u32(AvpId::ServiceIdentifier, v);
    }
    if let Some(v) = c.termination_cause {
        e.u32(AvpId::TerminationCause, v);
    }
    if c.multiple_services_indicator {
        e.u32(AvpId::MultipleServicesIndicator, 1);
    }
    if let Some(u) = &c.requested {
        u.encode(&mut e, AvpId::RequestedServiceUnit);
    }
    if let Some(u) = &c.used {
        u.encode(&mut e, AvpId::UsedServiceUnit);
    }
    for m in c.mscc() {
        let g = e.begin_group(AvpId::MultipleServicesCreditControl);
        if let Some(u) = &m.requested {
            u.encode(&mut e, AvpId::RequestedServiceUnit);
        }
        if let Some(u) = &m.used {
            u.encode(&mut e, AvpId::UsedServiceUnit);
        }
        if let Some(v) = m.service_identifier {
            e.u32(AvpId::ServiceIdentifier, v);
        }
        if let Some(v) = m.rating_group {
            e.u32(AvpId::RatingGroup, v);
        }
        if let Some(v) = m.reporting_reason {
            e.u32(AvpId::ReportingReason, v);
        }
        e.end_group(g);
    }
    if let Some((t, v)) = c.user_equipment_info {
        let g = e.begin_group(AvpId::UserEquipmentInfo);
        e.u32(AvpId::UserEquipmentInfoType, t);
        e.bytes(AvpId::UserEquipmentInfoValue, v);
        e.end_group(g);
    }
    let ps = &c.ps;
    let ims = &c.ims;
    let sms = &c.sms;
    let has_ps = *ps != PsInformation::default();
    let has_ims = *ims != ImsInformation::default();
    let has_sms = *sms != SmsInformation::default();
    if has_ps || has_ims || has_sms {
        let si = e.begin_group(AvpId::ServiceInformation);
        if has_ps {
            let g = e.begin_group(AvpId::PsInformation);
            if let Some(v) = ps.charging_id {
                e.u32(AvpId::TgppChargingId, v);
            }
            if let Some(v) = ps.imsi_mcc_mnc {
                e.str(AvpId::TgppImsiMccMnc, v);
            }
            if let Some(v) = ps.sgsn_mcc_mnc {
                e.str(AvpId::TgppSgsnMccMnc, v);
            }
            if let Some(a) = &ps.sgsn_address {
                encode_address(&mut e, AvpId::SgsnAddress, a);
            }
            if let Some(a) = &ps.ggsn_address {
                encode_address(&mut e, AvpId::GgsnAddress, a);
            }
            if let Some(a) = &ps.sgw_address {
                encode_address(&mut e, AvpId::SgwAddress, a);
            }
            if let Some(v) = ps.called_station_id {
                e.str(AvpId::CalledStationId, v);
            }
            if let Some(v) = ps.rat_type {
                e.bytes(AvpId::TgppRatType, v);
            }
            if let Some(v) = ps.user_location_info {
                e.bytes(AvpId::TgppUserLocationInfo, v);
            }
            e.end_group(g);
        }
        if has_ims {
            let g = e.begin_group(AvpId::ImsInformation);
            if let Some(v) = ims.node_functionality {
                e.u32(AvpId::NodeFunctionality, v);
            }
            if let Some(v) = ims.role_of_node {
                e.u32(AvpId::RoleOfNode, v);
            }
            if let Some(v) = ims.calling_party_address {
                e.str(AvpId::CallingPartyAddress, v);
            }
            if let Some(v) = ims.called_party_address {
                e.str(AvpId::CalledPartyAddress, v);
            }
            if let Some(v) = ims.ims_charging_identifier {
                e.str(AvpId::ImsChargingIdentifier, v);
            }
            e.end_group(g);
        }
        if has_sms {
            let g = e.begin_group(AvpId::SmsInformation);
            if let Some(v) = sms.sms_node {
                e.u32(AvpId::SmsNode, v);
            }
            if let Some(a) = &sms.smsc_address {
                encode_address(&mut e, AvpId::SmscAddress, a);
            }
            if let Some(v) = sms.recipient_address {
                let ri = e.begin_group(AvpId::RecipientInfo);
                let ra = e.begin_group(AvpId::RecipientAddress);
                e.str(AvpId::AddressData, v);
                e.end_group(ra);
                e.end_group(ri);
            }
            e.end_group(g);
        }
        e.end_group(si);
    }
    e.finish()
}

impl Default for Ccr<'_> {
    fn default() -> Self {
        Ccr {
            header: Header {
                version: super::VERSION,
                length: 0,
                flags: cmd_flags::R | cmd_flags::P,
                command: super::command::CREDIT_CONTROL,
                application_id: application::CREDIT_CONTROL,
                hop_by_hop: 0,
                end_to_end: 0,
            },
            session_id: "",
            origin_host: "",
            origin_realm: "",
            destination_realm: "",
            destination_host: None,
            service_context_id: "",
            request_type: RequestType::Initial,
            request_number: 0,
            event_timestamp: None,
            user_name: None,
            requested_action: None,
            service_identifier: None,
            termination_cause: None,
            multiple_services_indicator: false,
            requested: None,
            used: None,
            subscription_id_count: 0,
            subscription_ids: [SubscriptionId::default(); SUBSCRIPTION_ID_MAX],
            mscc_count: 0,
            mscc: [Mscc::default(); MSCC_MAX],
            ps: PsInformation::default(),
            ims: ImsInformation::default(),
            sms: SmsInformation::default(),
            user_equipment_info: None,
        }
    }
}

impl PartialEq for Ccr<'_> {
    /// Equal when every decoded field is equal (the header's length is not compared).
    fn eq(&self, o: &Self) -> bool {
        let mut a = self.header;
        let mut b = o.header;
        a.length = 0;
        b.length = 0;
        a == b
            && self.session_id == o.session_id
            && self.origin_host == o.origin_host
            && self.origin_realm == o.origin_realm
            && self.destination_realm == o.destination_realm
            && self.destination_host == o.destination_host
            && self.service_context_id == o.service_context_id
            && self.request_type == o.request_type
            && self.request_number == o.request_number
            && self.event_timestamp == o.event_timestamp
            && self.user_name == o.user_name
            && self.requested_action == o.requested_action
            && self.service_identifier == o.service_identifier
            && self.termination_cause == o.termination_cause
            && self.multiple_services_indicator == o.multiple_services_indicator
            && self.requested == o.requested
            && self.used == o.used
            && self.subscription_ids() == o.subscription_ids()
            && self.mscc() == o.mscc()
            && self.ps == o.ps
            && self.ims == o.ims
            && self.sms == o.sms
            && self.user_equipment_info == o.user_equipment_info
    }
}

/// A realistic 3GPP Gy CCR-UPDATE for a data session: two MSCC (one reporting usage and
/// asking for more, one reporting a validity-time expiry), two Subscription-Ids and
/// PS-Information. About 400 bytes encoded. Used by tests, benchmarks and fuzz seeds.
pub fn sample_ccr_update<'a>() -> Ccr<'a> {
    let mut c = Ccr {
        session_id: "pgw1.operator.example;1732598400;4711;42",
        origin_host: "pgw1.operator.example",
        origin_realm: "operator.example",
        destination_realm: "ocs.example",
        service_context_id: "32251@3gpp.org",
        request_type: RequestType::Update,
        request_number: 3,
        event_timestamp: Some(3_941_587_200),
        multiple_services_indicator: true,
        subscription_id_count: 2,
        mscc_count: 2,
        ..Ccr::default()
    };
    c.header.hop_by_hop = 0x1122_3344;
    c.header.end_to_end = 0x5566_7788;
    c.subscription_ids[0] = SubscriptionId { id_type: subscription_id_type::END_USER_E164, data: "491701234567" };
    c.subscription_ids[1] = SubscriptionId { id_type: subscription_id_type::END_USER_IMSI, data: "262011234567890" };
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        service_identifier: None,
        requested: Some(Units { total_octets: Some(10_485_760), ..Units::default() }),
        used: Some(Units {
            total_octets: Some(8_388_608),
            input_octets: Some(1_048_576),
            output_octets: Some(7_340_032),
            time_s: Some(60),
            ..Units::default()
        }),
        reporting_reason: Some(3),
    };
    c.mscc[1] = Mscc {
        rating_group: Some(20),
        service_identifier: None,
        requested: None,
        used: Some(Units { total_octets: Some(65_536), ..Units::default() }),
        reporting_reason: Some(4),
    };
    c.ps = PsInformation {
        charging_id: Some(0x0abc_def0),
        called_station_id: Some("internet"),
        rat_type: Some(&[6]),
        user_location_info: Some(&[0x82, 0x62, 0xf2, 0x10, 0x12, 0x34, 0x62, 0xf2, 0x10, 0x00, 0x01, 0x23, 0x45]),
        sgsn_address: Some(Address::V4([10, 1, 2, 3])),
        sgw_address: None,
        ggsn_address: None,
        sgsn_mcc_mnc: Some("26201"),
        imsi_mcc_mnc: Some("26201"),
    };
    c
}
