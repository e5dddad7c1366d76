//! The Credit-Control-Request as gyro reads it (one pass: validation and extraction
//! together, borrowing every string) and the Credit-Control-Answer as gyro writes it.
//!
//! RFC 8506 §3.1–3.2, with the Multiple-Services-Credit-Control and Service-Information
//! of 3GPP TS 32.299 §6.4 and §7.2. Limits: `limits::MSCC_MAX` MSCC and
//! `limits::SUBSCRIPTION_ID_MAX` Subscription-Ids per request (more is answered 5009).

use super::avp::{Address, AvpFramingError, ValueError};
use super::dict::{self, index as I, AvpDef, AvpId, DataType};
use super::encode::{EncodeError, Encoder};
use super::error::{FailedAvp, ProtocolError};
use super::limits::{GROUP_DEPTH_MAX, MSCC_MAX, SESSION_ID_SIZE_MAX, SUBSCRIPTION_ID_MAX};
use super::message::{Header, Message};
use super::validate;
use super::{application, cmd_flags, result_code as rc, AVP_HEADER_LEN, AVP_HEADER_LEN_VENDOR};

mod fast;

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
const SEEN_DESTINATION_HOST: u32 = 1 << 8;
const SEEN_EVENT_TIMESTAMP: u32 = 1 << 9;
const SEEN_USER_NAME: u32 = 1 << 10;
const SEEN_REQUESTED_ACTION: u32 = 1 << 11;
const SEEN_SERVICE_IDENTIFIER: u32 = 1 << 12;
const SEEN_TERMINATION_CAUSE: u32 = 1 << 13;
const SEEN_MSI: u32 = 1 << 14;
const SEEN_RSU: u32 = 1 << 15;
const SEEN_SERVICE_INFORMATION: u32 = 1 << 16;
const SEEN_USER_EQUIPMENT_INFO: u32 = 1 << 17;
const SEEN_ORIGIN_STATE_ID: u32 = 1 << 18;
const SEEN_CC_SUB_SESSION_ID: u32 = 1 << 19;
const SEEN_ACCT_MULTI_SESSION_ID: u32 = 1 << 20;
const SEEN_CC_CORRELATION_ID: u32 = 1 << 21;
const SEEN_REQUIRED: u32 = 0xff;

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

/// Where a known AVP's value goes and how it is checked: decided from the structure by
/// `Ccr::visit`, carried out on the bytes by `Ccr::apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    /// Nothing to check or keep (a Grouped AVP's header, CC-Correlation-Id).
    Skip,
    /// Validate against the dictionary entry with this index; keep nothing.
    Check(u8),
    SessionId,
    OriginHost,
    OriginRealm,
    DestinationRealm,
    AuthApplicationId,
    ServiceContextId,
    RequestType,
    RequestNumber,
    DestinationHost,
    EventTimestamp,
    UserName,
    RequestedAction,
    ServiceIdentifier,
    TerminationCause,
    Msi,
    TopRsu,
    TopUsu,
    SubscriptionBegin,
    MsccBegin,
    ServiceInformation,
    UserEquipmentInfo,
    MsccServiceIdentifier,
    MsccRatingGroup,
    MsccRsu,
    MsccUsu,
    MsccReportingReason,
    Unit(UnitsOf, UnitField),
    SubscriptionType,
    SubscriptionData,
    PsChargingId,
    PsCalledStationId,
    PsRatType,
    PsUserLocationInfo,
    PsSgsnAddress,
    PsSgwAddress,
    PsGgsnAddress,
    PsSgsnMccMnc,
    PsImsiMccMnc,
    ImsCallingParty,
    ImsCalledParty,
    ImsChargingIdentifier,
    ImsNodeFunctionality,
    ImsRoleOfNode,
    SmsSmscAddress,
    SmsNode,
    SmsRecipientAddress,
    UserEquipmentType,
    UserEquipmentValue,
}

/// Which service units a unit AVP belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnitsOf {
    TopRsu,
    TopUsu,
    MsccRsu,
    MsccUsu,
}

/// Which unit AVP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnitField {
    Time,
    Total,
    Input,
    Output,
    ServiceSpecific,
}

/// Which Grouped AVP the decoder is inside: decides where a member's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Top,
    Mscc,
    MsccRsu,
    MsccUsu,
    TopRsu,
    TopUsu,
    SubscriptionId,
    ServiceInformation,
    Ps,
    Ims,
    Sms,
    RecipientInfo,
    RecipientAddress,
    UserEquipmentInfo,
    /// Any other Grouped AVP: its members are validated, not kept.
    Other,
}

#[inline(always)]
fn err_at(result_code: u32, offset: u32, length: u32) -> ProtocolError {
    ProtocolError::new(
        result_code,
        FailedAvp::Copy {
            offset,
            len: length,
        },
    )
}

/// One AVP met by the decoder, kept in registers: its data, where its header starts
/// (an address; the offset in the message is computed only for an error) and flags.
#[derive(Clone, Copy)]
struct Cur<'a> {
    data: &'a [u8],
    /// Address of the message's first byte and of this AVP's header.
    base: usize,
    at: usize,
    length: u32,
    flags: u8,
}

impl<'a> Cur<'a> {
    #[inline(always)]
    fn offset(&self) -> u32 {
        (self.at - self.base) as u32
    }
    #[inline(always)]
    fn err(&self, result_code: u32) -> ProtocolError {
        err_at(result_code, self.offset(), self.length)
    }
    #[inline(always)]
    fn value_err(&self, e: ValueError) -> ProtocolError {
        self.err(match e {
            ValueError::Length => rc::INVALID_AVP_LENGTH,
            ValueError::Value => rc::INVALID_AVP_VALUE,
        })
    }
    #[inline(always)]
    fn u32(&self) -> Result<u32, ProtocolError> {
        match <[u8; 4]>::try_from(self.data) {
            Ok(b) => Ok(u32::from_be_bytes(b)),
            Err(_) => Err(self.err(rc::INVALID_AVP_LENGTH)),
        }
    }
    #[inline(always)]
    fn u64(&self) -> Result<u64, ProtocolError> {
        match <[u8; 8]>::try_from(self.data) {
            Ok(b) => Ok(u64::from_be_bytes(b)),
            Err(_) => Err(self.err(rc::INVALID_AVP_LENGTH)),
        }
    }
    #[inline(always)]
    fn enumerated(&self, lo: u32, hi: u32) -> Result<u32, ProtocolError> {
        let v = self.u32()?;
        if v < lo || v > hi {
            return Err(self.err(rc::INVALID_AVP_VALUE));
        }
        Ok(v)
    }
    #[inline(always)]
    fn text(&self) -> Result<&'a str, ProtocolError> {
        super::avp::utf8(self.data).map_err(|e| self.value_err(e))
    }
    #[inline(always)]
    fn identity(&self) -> Result<&'a str, ProtocolError> {
        let s = self.text()?;
        if s.is_empty() || s.len() > super::limits::IDENTITY_SIZE_MAX {
            return Err(self.err(rc::INVALID_AVP_VALUE));
        }
        Ok(s)
    }
    #[inline(always)]
    fn address(&self) -> Result<Address<'a>, ProtocolError> {
        super::avp::decode_address(self.data).map_err(|e| self.value_err(e))
    }
    #[inline(always)]
    fn is_mandatory(&self) -> bool {
        self.flags & super::avp_flags::M != 0
    }
    /// Checks a value of an AVP the CCR does not keep, against its data format.
    #[inline(always)]
    fn check(&self, def: &AvpDef) -> Result<(), ProtocolError> {
        match def.data_type {
            DataType::OctetString | DataType::Grouped | DataType::IpFilterRule => Ok(()),
            DataType::Integer32 | DataType::Unsigned32 | DataType::Float32 | DataType::Time => {
                self.u32().map(drop)
            }
            DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => self.u64().map(drop),
            DataType::Enumerated => {
                let v = self.u32()? as i32;
                if v < def.enum_min || v > def.enum_max {
                    return Err(self.err(rc::INVALID_AVP_VALUE));
                }
                Ok(())
            }
            DataType::Utf8String => self.text().map(drop),
            DataType::DiameterIdentity => self.identity().map(drop),
            DataType::DiameterUri => {
                let s = self.text()?;
                if s.starts_with("aaa://") || s.starts_with("aaas://") {
                    Ok(())
                } else {
                    Err(self.err(rc::INVALID_AVP_VALUE))
                }
            }
            DataType::Address => self.address().map(drop),
        }
    }
}

impl<'a> Ccr<'a> {
    /// Decodes and validates a CCR whose header already passed
    /// `validate::check_request_header` and whose command and application are 272/4.
    /// Every AVP is checked (framing, M bit, value, nesting); the grammar of RFC 8506
    /// §3.1 is enforced (required AVPs, single occurrences).
    pub fn decode(msg: &Message<'a>) -> Result<Ccr<'a>, ProtocolError> {
        let mut c = Ccr::default();
        c.decode_into(msg)?;
        Ok(c)
    }

    /// As `decode`, into an existing value (the hot path reuses one per request).
    /// Only what the request sets is reset, so this costs in proportion to the request.
    ///
    /// A request whose AVPs are all where they belong and valid is read by the loops of
    /// `fast.rs`; anything else (and every error) by the full decoder, `decode_full_into`.
    /// Both give the same result.
    pub fn decode_into(&mut self, msg: &Message<'a>) -> Result<(), ProtocolError> {
        self.reset(msg);
        let mut seen = 0u32;
        let body = msg.bytes().get(super::HEADER_LEN..).unwrap_or(&[]);
        if self.decode_common(body, &mut seen).is_some() && seen & SEEN_REQUIRED == SEEN_REQUIRED {
            if seen & SEEN_SERVICE_INFORMATION == 0 {
                self.clear_service_information();
            }
            return Ok(());
        }
        self.decode_full_into(msg)
    }

    /// As `decode_into`, always by the full decoder (`walk`): the reference the fast
    /// path is compared with.
    pub fn decode_full_into(&mut self, msg: &Message<'a>) -> Result<(), ProtocolError> {
        self.reset(msg);
        let mut seen = 0u32;
        self.walk(msg.bytes(), &mut seen)?;
        if seen & SEEN_SERVICE_INFORMATION == 0 {
            self.clear_service_information();
        }
        if seen & SEEN_REQUIRED != SEEN_REQUIRED {
            for (bit, id) in REQUIRED {
                if seen & bit == 0 {
                    let d = id.def();
                    return Err(ProtocolError::missing(
                        d.code,
                        d.vendor_id,
                        d.data_type.min_size(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Clears the PS-, IMS- and SMS-Information fields (a request without
    /// Service-Information, or one that begins).
    #[inline(always)]
    fn clear_service_information(&mut self) {
        self.ps = PsInformation::default();
        self.ims = ImsInformation::default();
        self.sms = SmsInformation::default();
    }

    /// Clears what a request may leave unset (everything else it must set).
    #[inline(always)]
    fn reset(&mut self, msg: &Message<'a>) {
        self.header = msg.header;
        self.destination_host = None;
        self.event_timestamp = None;
        self.user_name = None;
        self.requested_action = None;
        self.service_identifier = None;
        self.termination_cause = None;
        self.multiple_services_indicator = false;
        self.requested = None;
        self.used = None;
        self.subscription_id_count = 0;
        self.mscc_count = 0;
        self.user_equipment_info = None;
    }

    /// The single pass over every AVP: framing, dictionary, value checks, grammar and
    /// extraction, with an explicit stack for Grouped AVPs (no recursion). The framing
    /// rules are those of `AvpIter`, written out here so the hot loop keeps everything
    /// in registers.
    #[inline(always)]
    fn walk(&mut self, bytes: &'a [u8], seen: &mut u32) -> Result<(), ProtocolError> {
        // The run being walked is `rest` (what is left of it); entering a Grouped AVP
        // pushes the enclosing run. Offsets for Failed-AVP are computed from addresses,
        // only when an error needs one.
        let base = bytes.as_ptr() as usize;
        let offset_of = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let mut stack: [(&'a [u8], Ctx); GROUP_DEPTH_MAX] = [(&[], Ctx::Top); GROUP_DEPTH_MAX];
        let mut depth = 0usize;
        let mut rest = bytes.get(super::HEADER_LEN..).unwrap_or(&[]);
        let mut ctx = Ctx::Top;
        loop {
            let Some((h, _)) = rest.split_first_chunk::<AVP_HEADER_LEN>() else {
                if !rest.is_empty() {
                    return Err(AvpFramingError::TruncatedHeader {
                        offset: offset_of(rest),
                        available: rest.len() as u32,
                    }
                    .into());
                }
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
                (rest, ctx) = stack[depth];
                continue;
            };
            let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let w1 = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let flags = (w1 >> 24) as u8;
            let length = w1 & 0x00ff_ffff;
            // The dictionary index comes with the header: one branch on the V bit.
            let (header_len, idx) = if flags & super::avp_flags::V == 0 {
                (AVP_HEADER_LEN, dict::lookup_index(code, 0))
            } else {
                let Some((v, _)) = rest.split_first_chunk::<AVP_HEADER_LEN_VENDOR>() else {
                    let offset = offset_of(rest);
                    let available = rest.len() as u32;
                    return Err(if length < AVP_HEADER_LEN_VENDOR as u32 {
                        AvpFramingError::LengthBelowHeader { offset, available }
                    } else {
                        AvpFramingError::TruncatedHeader { offset, available }
                    }
                    .into());
                };
                let vendor_id = u32::from_be_bytes([v[8], v[9], v[10], v[11]]);
                (AVP_HEADER_LEN_VENDOR, dict::lookup_index(code, vendor_id))
            };
            if (length as usize) < header_len {
                return Err(AvpFramingError::LengthBelowHeader {
                    offset: offset_of(rest),
                    available: rest.len() as u32,
                }
                .into());
            }
            let Some(whole) = rest.get(..length as usize) else {
                let available_data = (rest.len() - header_len) as u32;
                return Err(AvpFramingError::LengthPastEnd {
                    offset: offset_of(rest),
                    available_data,
                }
                .into());
            };
            let cur = Cur {
                data: &whole[header_len..],
                base,
                at: rest.as_ptr() as usize,
                length,
                flags,
            };
            // Padding to a multiple of 4 follows; a last AVP that lacks it inside a Grouped
            // AVP is tolerated (the message-level rule is the framer's: 5015).
            let padded = ((length as usize + 3) & !3).min(rest.len());
            rest = &rest[padded..];
            if idx == dict::UNKNOWN {
                if cur.is_mandatory() {
                    return Err(cur.err(rc::AVP_UNSUPPORTED));
                }
                continue;
            }
            let (dest, child) = self.visit(idx, cur, ctx, seen)?;
            self.apply(dest, cur)?;
            if let Some(child) = child {
                if depth == GROUP_DEPTH_MAX {
                    return Err(cur.err(rc::INVALID_AVP_VALUE));
                }
                stack[depth] = (rest, ctx);
                depth += 1;
                rest = cur.data;
                ctx = child;
            }
        }
    }

    /// Decides, from the structure alone (the AVP, where it is, what came before), what
    /// a known AVP is: checks its occurrences and grammar, and returns where its value
    /// goes and, for a Grouped AVP, the context of its members. Values are `apply`'s.
    #[inline(always)]
    fn visit(
        &mut self,
        idx: u8,
        a: Cur<'a>,
        ctx: Ctx,
        seen: &mut u32,
    ) -> Result<(Dest, Option<Ctx>), ProtocolError> {
        let once = move |seen: &mut u32, bit: u32| -> Result<(), ProtocolError> {
            if *seen & bit != 0 {
                return Err(a.err(rc::AVP_OCCURS_TOO_MANY_TIMES));
            }
            *seen |= bit;
            Ok(())
        };
        let top = ctx == Ctx::Top;
        let leaf = |d: Dest| Ok((d, None));
        match idx {
            I::SessionId if top => once(seen, SEEN_SESSION_ID).and(leaf(Dest::SessionId)),
            I::OriginHost if top => once(seen, SEEN_ORIGIN_HOST).and(leaf(Dest::OriginHost)),
            I::OriginRealm if top => once(seen, SEEN_ORIGIN_REALM).and(leaf(Dest::OriginRealm)),
            I::DestinationRealm if top => {
                once(seen, SEEN_DESTINATION_REALM).and(leaf(Dest::DestinationRealm))
            }
            I::AuthApplicationId if top => {
                once(seen, SEEN_AUTH_APPLICATION_ID).and(leaf(Dest::AuthApplicationId))
            }
            I::ServiceContextId if top => {
                once(seen, SEEN_SERVICE_CONTEXT_ID).and(leaf(Dest::ServiceContextId))
            }
            I::CcRequestType if top => once(seen, SEEN_REQUEST_TYPE).and(leaf(Dest::RequestType)),
            I::CcRequestNumber if top => {
                once(seen, SEEN_REQUEST_NUMBER).and(leaf(Dest::RequestNumber))
            }
            I::DestinationHost if top => {
                once(seen, SEEN_DESTINATION_HOST).and(leaf(Dest::DestinationHost))
            }
            I::EventTimestamp if top => {
                once(seen, SEEN_EVENT_TIMESTAMP).and(leaf(Dest::EventTimestamp))
            }
            I::UserName if top => once(seen, SEEN_USER_NAME).and(leaf(Dest::UserName)),
            I::RequestedAction if top => {
                once(seen, SEEN_REQUESTED_ACTION).and(leaf(Dest::RequestedAction))
            }
            I::ServiceIdentifier if top => {
                once(seen, SEEN_SERVICE_IDENTIFIER).and(leaf(Dest::ServiceIdentifier))
            }
            I::ServiceIdentifier if ctx == Ctx::Mscc => leaf(Dest::MsccServiceIdentifier),
            I::TerminationCause if top => {
                once(seen, SEEN_TERMINATION_CAUSE).and(leaf(Dest::TerminationCause))
            }
            I::MultipleServicesIndicator if top => once(seen, SEEN_MSI).and(leaf(Dest::Msi)),
            I::RequestedServiceUnit if top => {
                once(seen, SEEN_RSU)?;
                Ok((Dest::TopRsu, Some(Ctx::TopRsu)))
            }
            I::RequestedServiceUnit if ctx == Ctx::Mscc => Ok((Dest::MsccRsu, Some(Ctx::MsccRsu))),
            I::UsedServiceUnit if top => Ok((Dest::TopUsu, Some(Ctx::TopUsu))),
            I::UsedServiceUnit if ctx == Ctx::Mscc => Ok((Dest::MsccUsu, Some(Ctx::MsccUsu))),
            I::SubscriptionId if top => {
                if usize::from(self.subscription_id_count) == SUBSCRIPTION_ID_MAX {
                    return Err(a.err(rc::AVP_OCCURS_TOO_MANY_TIMES));
                }
                Ok((Dest::SubscriptionBegin, Some(Ctx::SubscriptionId)))
            }
            I::MultipleServicesCreditControl if top => {
                if usize::from(self.mscc_count) == MSCC_MAX {
                    return Err(a.err(rc::AVP_OCCURS_TOO_MANY_TIMES));
                }
                Ok((Dest::MsccBegin, Some(Ctx::Mscc)))
            }
            I::ServiceInformation if top => {
                once(seen, SEEN_SERVICE_INFORMATION)?;
                Ok((Dest::ServiceInformation, Some(Ctx::ServiceInformation)))
            }
            I::UserEquipmentInfo if top => {
                once(seen, SEEN_USER_EQUIPMENT_INFO)?;
                Ok((Dest::UserEquipmentInfo, Some(Ctx::UserEquipmentInfo)))
            }
            I::OriginStateId if top => once(seen, SEEN_ORIGIN_STATE_ID).and(leaf(Dest::Check(idx))),
            I::CcSubSessionId if top => {
                once(seen, SEEN_CC_SUB_SESSION_ID).and(leaf(Dest::Check(idx)))
            }
            I::AcctMultiSessionId if top => {
                once(seen, SEEN_ACCT_MULTI_SESSION_ID).and(leaf(Dest::Check(idx)))
            }
            I::CcCorrelationId if top => once(seen, SEEN_CC_CORRELATION_ID).and(leaf(Dest::Skip)),

            I::RatingGroup if ctx == Ctx::Mscc => leaf(Dest::MsccRatingGroup),
            I::ReportingReason if ctx == Ctx::Mscc || ctx == Ctx::MsccUsu => {
                leaf(Dest::MsccReportingReason)
            }

            // Unit AVPs of RSU and USU.
            I::CcTime
            | I::CcTotalOctets
            | I::CcInputOctets
            | I::CcOutputOctets
            | I::CcServiceSpecificUnits
                if matches!(ctx, Ctx::TopRsu | Ctx::TopUsu | Ctx::MsccRsu | Ctx::MsccUsu) =>
            {
                let of = match ctx {
                    Ctx::TopRsu => UnitsOf::TopRsu,
                    Ctx::TopUsu => UnitsOf::TopUsu,
                    Ctx::MsccRsu => UnitsOf::MsccRsu,
                    _ => UnitsOf::MsccUsu,
                };
                let field = match idx {
                    I::CcTime => UnitField::Time,
                    I::CcTotalOctets => UnitField::Total,
                    I::CcInputOctets => UnitField::Input,
                    I::CcOutputOctets => UnitField::Output,
                    _ => UnitField::ServiceSpecific,
                };
                leaf(Dest::Unit(of, field))
            }

            I::SubscriptionIdType if ctx == Ctx::SubscriptionId => leaf(Dest::SubscriptionType),
            I::SubscriptionIdData if ctx == Ctx::SubscriptionId => leaf(Dest::SubscriptionData),

            I::PsInformation if ctx == Ctx::ServiceInformation => Ok((Dest::Skip, Some(Ctx::Ps))),
            I::ImsInformation if ctx == Ctx::ServiceInformation => Ok((Dest::Skip, Some(Ctx::Ims))),
            I::SmsInformation if ctx == Ctx::ServiceInformation => Ok((Dest::Skip, Some(Ctx::Sms))),

            I::TgppChargingId if ctx == Ctx::Ps => leaf(Dest::PsChargingId),
            I::CalledStationId if ctx == Ctx::Ps => leaf(Dest::PsCalledStationId),
            I::TgppRatType if ctx == Ctx::Ps => leaf(Dest::PsRatType),
            I::TgppUserLocationInfo if ctx == Ctx::Ps => leaf(Dest::PsUserLocationInfo),
            I::SgsnAddress if ctx == Ctx::Ps => leaf(Dest::PsSgsnAddress),
            I::SgwAddress if ctx == Ctx::Ps => leaf(Dest::PsSgwAddress),
            I::GgsnAddress if ctx == Ctx::Ps => leaf(Dest::PsGgsnAddress),
            I::TgppSgsnMccMnc if ctx == Ctx::Ps => leaf(Dest::PsSgsnMccMnc),
            I::TgppImsiMccMnc if ctx == Ctx::Ps => leaf(Dest::PsImsiMccMnc),

            I::CallingPartyAddress if ctx == Ctx::Ims => leaf(Dest::ImsCallingParty),
            I::CalledPartyAddress if ctx == Ctx::Ims => leaf(Dest::ImsCalledParty),
            I::ImsChargingIdentifier if ctx == Ctx::Ims => leaf(Dest::ImsChargingIdentifier),
            I::NodeFunctionality if ctx == Ctx::Ims => leaf(Dest::ImsNodeFunctionality),
            I::RoleOfNode if ctx == Ctx::Ims => leaf(Dest::ImsRoleOfNode),

            I::SmscAddress if ctx == Ctx::Sms => leaf(Dest::SmsSmscAddress),
            I::SmsNode if ctx == Ctx::Sms => leaf(Dest::SmsNode),
            I::RecipientInfo if ctx == Ctx::Sms => Ok((Dest::Skip, Some(Ctx::RecipientInfo))),
            I::RecipientAddress if ctx == Ctx::RecipientInfo => {
                Ok((Dest::Skip, Some(Ctx::RecipientAddress)))
            }
            I::AddressData if ctx == Ctx::RecipientAddress => leaf(Dest::SmsRecipientAddress),

            I::UserEquipmentInfoType if ctx == Ctx::UserEquipmentInfo => {
                leaf(Dest::UserEquipmentType)
            }
            I::UserEquipmentInfoValue if ctx == Ctx::UserEquipmentInfo => {
                leaf(Dest::UserEquipmentValue)
            }

            // Everything else is validated and not kept. At the top level, a known AVP
            // outside the CCR grammar with the M bit set is not understood here (5001).
            _ => {
                let def = &dict::DEFS[usize::from(idx)];
                if top && a.is_mandatory() && !validate::ccr_allowed(def.id) {
                    // The value is checked first: a bad value is 5004/5014 either way.
                    a.check(def)?;
                    return Err(a.err(rc::AVP_UNSUPPORTED));
                }
                let child = (def.data_type == DataType::Grouped).then_some(Ctx::Other);
                Ok((Dest::Check(idx), child))
            }
        }
    }

    /// Checks a value and stores it where `visit` decided. Depends on the AVP's bytes
    /// and on what earlier `apply` calls stored, never on the structure around it, so a
    /// recorded `CcrShape` can replay it.
    #[inline(always)]
    fn apply(&mut self, dest: Dest, a: Cur<'a>) -> Result<(), ProtocolError> {
        let mscc_at = usize::from(self.mscc_count).wrapping_sub(1);
        match dest {
            Dest::Skip => {}
            Dest::Check(idx) => a.check(&dict::DEFS[usize::from(idx)])?,
            Dest::SessionId => {
                let v = a.text()?;
                if v.is_empty() || v.len() > SESSION_ID_SIZE_MAX {
                    return Err(a.err(rc::INVALID_AVP_VALUE));
                }
                self.session_id = v;
            }
            Dest::OriginHost => self.origin_host = a.identity()?,
            Dest::OriginRealm => self.origin_realm = a.identity()?,
            Dest::DestinationRealm => self.destination_realm = a.identity()?,
            Dest::AuthApplicationId => {
                if a.u32()? != application::CREDIT_CONTROL {
                    return Err(a.err(rc::INVALID_AVP_VALUE));
                }
            }
            Dest::ServiceContextId => self.service_context_id = a.text()?,
            Dest::RequestType => {
                self.request_type = match a.enumerated(1, 4)? {
                    1 => RequestType::Initial,
                    2 => RequestType::Update,
                    3 => RequestType::Termination,
                    _ => RequestType::Event,
                };
            }
            Dest::RequestNumber => self.request_number = a.u32()?,
            Dest::DestinationHost => self.destination_host = Some(a.identity()?),
            Dest::EventTimestamp => self.event_timestamp = Some(a.u32()?),
            Dest::UserName => self.user_name = Some(a.text()?),
            Dest::RequestedAction => {
                self.requested_action = Some(match a.enumerated(0, 3)? {
                    0 => RequestedAction::DirectDebiting,
                    1 => RequestedAction::RefundAccount,
                    2 => RequestedAction::CheckBalance,
                    _ => RequestedAction::PriceEnquiry,
                });
            }
            Dest::ServiceIdentifier => self.service_identifier = Some(a.u32()?),
            Dest::TerminationCause => self.termination_cause = Some(a.enumerated(1, 8)?),
            Dest::Msi => self.multiple_services_indicator = a.enumerated(0, 1)? == 1,
            Dest::TopRsu => self.requested = Some(Units::default()),
            Dest::TopUsu => {
                if self.used.is_none() {
                    self.used = Some(Units::default());
                }
            }
            Dest::SubscriptionBegin => {
                self.subscription_ids[usize::from(self.subscription_id_count)] =
                    SubscriptionId::default();
                self.subscription_id_count += 1;
            }
            Dest::MsccBegin => {
                self.mscc[usize::from(self.mscc_count)] = Mscc::default();
                self.mscc_count += 1;
            }
            Dest::ServiceInformation => {
                self.clear_service_information();
            }
            Dest::UserEquipmentInfo => self.user_equipment_info = Some((0, &[])),
            Dest::MsccServiceIdentifier => self.mscc[mscc_at].service_identifier = Some(a.u32()?),
            Dest::MsccRatingGroup => self.mscc[mscc_at].rating_group = Some(a.u32()?),
            Dest::MsccRsu => self.mscc[mscc_at].requested = Some(Units::default()),
            Dest::MsccUsu => {
                let m = &mut self.mscc[mscc_at];
                if m.used.is_none() {
                    m.used = Some(Units::default());
                }
            }
            Dest::MsccReportingReason => {
                self.mscc[mscc_at].reporting_reason = Some(a.enumerated(0, 8)?);
            }
            Dest::Unit(of, field) => {
                // Several USUs in one MSCC (one per tariff period) are summed.
                let units = match of {
                    UnitsOf::TopRsu => &mut self.requested,
                    UnitsOf::TopUsu => &mut self.used,
                    UnitsOf::MsccRsu => &mut self.mscc[mscc_at].requested,
                    UnitsOf::MsccUsu => &mut self.mscc[mscc_at].used,
                };
                let Some(u) = units else { return Ok(()) };
                let add64 = |slot: &mut Option<u64>, v: u64| {
                    *slot = Some(slot.unwrap_or(0).saturating_add(v))
                };
                match field {
                    UnitField::Time => {
                        let v = a.u32()?;
                        u.time_s = Some(u.time_s.unwrap_or(0).saturating_add(v));
                    }
                    UnitField::Total => add64(&mut u.total_octets, a.u64()?),
                    UnitField::Input => add64(&mut u.input_octets, a.u64()?),
                    UnitField::Output => add64(&mut u.output_octets, a.u64()?),
                    UnitField::ServiceSpecific => add64(&mut u.service_specific, a.u64()?),
                }
            }
            Dest::SubscriptionType => {
                let i = usize::from(self.subscription_id_count).wrapping_sub(1);
                self.subscription_ids[i].id_type = a.enumerated(0, 4)?;
            }
            Dest::SubscriptionData => {
                let i = usize::from(self.subscription_id_count).wrapping_sub(1);
                self.subscription_ids[i].data = a.text()?;
            }
            Dest::PsChargingId => self.ps.charging_id = Some(a.u32()?),
            Dest::PsCalledStationId => self.ps.called_station_id = Some(a.text()?),
            Dest::PsRatType => self.ps.rat_type = Some(a.data),
            Dest::PsUserLocationInfo => self.ps.user_location_info = Some(a.data),
            Dest::PsSgsnAddress => self.ps.sgsn_address = Some(a.address()?),
            Dest::PsSgwAddress => self.ps.sgw_address = Some(a.address()?),
            Dest::PsGgsnAddress => self.ps.ggsn_address = Some(a.address()?),
            Dest::PsSgsnMccMnc => self.ps.sgsn_mcc_mnc = Some(a.text()?),
            Dest::PsImsiMccMnc => self.ps.imsi_mcc_mnc = Some(a.text()?),
            Dest::ImsCallingParty => self.ims.calling_party_address = Some(a.text()?),
            Dest::ImsCalledParty => self.ims.called_party_address = Some(a.text()?),
            Dest::ImsChargingIdentifier => self.ims.ims_charging_identifier = Some(a.text()?),
            Dest::ImsNodeFunctionality => self.ims.node_functionality = Some(a.enumerated(0, 20)?),
            Dest::ImsRoleOfNode => self.ims.role_of_node = Some(a.enumerated(0, 3)?),
            Dest::SmsSmscAddress => self.sms.smsc_address = Some(a.address()?),
            Dest::SmsNode => self.sms.sms_node = Some(a.enumerated(0, 3)?),
            Dest::SmsRecipientAddress => {
                let v = a.text()?;
                if self.sms.recipient_address.is_none() {
                    self.sms.recipient_address = Some(v);
                }
            }
            Dest::UserEquipmentType => {
                let v = a.enumerated(0, 3)?;
                if let Some((t, _)) = &mut self.user_equipment_info {
                    *t = v;
                }
            }
            Dest::UserEquipmentValue => {
                if let Some((_, val)) = &mut self.user_equipment_info {
                    *val = a.data;
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
        self.subscription_ids()
            .iter()
            .find(|s| s.id_type == id_type)
            .map(|s| s.data)
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
    if let Some(avps) = cca.failed_avp {
        let g = e.begin_group(AvpId::FailedAvp);
        e.raw_avps(avps);
        e.end_group(g);
    }
    e.finish()
}

/// The AVP a 5031 (rating failed) answer names in its Failed-AVP: in the
/// `mscc_index`-th Multiple-Services-Credit-Control of `request` (or at the top level
/// when `None`), its Rating-Group, else its Service-Identifier; the whole AVP with its
/// padding, borrowed from the request.
pub fn rating_failed_avp(request: &[u8], mscc_index: Option<usize>) -> Option<&[u8]> {
    let msg = Message::new(request)?;
    let whole = |a: &super::Avp<'_>| {
        let start = a.offset as usize;
        let end = (start + ((a.length as usize + 3) & !3)).min(request.len());
        request.get(start..end)
    };
    let pick = |avps: super::AvpIter<'_>| {
        let mut service = None;
        for a in avps.flatten() {
            match (a.code, a.vendor_id) {
                (432, 0) => return whole(&a),
                (439, 0) => service = service.or_else(|| whole(&a)),
                _ => {}
            }
        }
        service
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
