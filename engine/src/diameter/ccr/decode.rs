//! The full decoder of a CCR: one pass over every AVP (framing, dictionary, M bit,
//! values, nesting and the grammar of RFC 8506 §3.1), extracting what the request
//! keeps. `Ccr::decode_into` tries the common-case decoder of `fast.rs` first and falls
//! back to this one, which also finds the Result-Code and Failed-AVP of every error.

use super::super::avp::{Address, AvpIter, ValueError};
use super::super::dict::{self, index as I, AvpDef, AvpId, DataType};
use super::super::error::{FailedAvp, ProtocolError};
use super::super::limits::{GROUP_DEPTH_MAX, MSCC_MAX, SESSION_ID_SIZE_MAX, SUBSCRIPTION_ID_MAX};
use super::super::message::Message;
use super::super::validate;
use super::super::{application, result_code as rc};
use super::{
    Ccr, ImsInformation, Mscc, PsInformation, RequestType, RequestedAction, SmsInformation,
    SubscriptionId, Units,
};

// Bits of the top-level AVPs that may occur once.
pub(super) const SEEN_SESSION_ID: u32 = 1 << 0;
pub(super) const SEEN_ORIGIN_HOST: u32 = 1 << 1;
pub(super) const SEEN_ORIGIN_REALM: u32 = 1 << 2;
pub(super) const SEEN_DESTINATION_REALM: u32 = 1 << 3;
pub(super) const SEEN_AUTH_APPLICATION_ID: u32 = 1 << 4;
pub(super) const SEEN_SERVICE_CONTEXT_ID: u32 = 1 << 5;
pub(super) const SEEN_REQUEST_TYPE: u32 = 1 << 6;
pub(super) const SEEN_REQUEST_NUMBER: u32 = 1 << 7;
pub(super) const SEEN_DESTINATION_HOST: u32 = 1 << 8;
pub(super) const SEEN_EVENT_TIMESTAMP: u32 = 1 << 9;
pub(super) const SEEN_USER_NAME: u32 = 1 << 10;
pub(super) const SEEN_REQUESTED_ACTION: u32 = 1 << 11;
pub(super) const SEEN_SERVICE_IDENTIFIER: u32 = 1 << 12;
pub(super) const SEEN_TERMINATION_CAUSE: u32 = 1 << 13;
pub(super) const SEEN_MSI: u32 = 1 << 14;
pub(super) const SEEN_RSU: u32 = 1 << 15;
pub(super) const SEEN_SERVICE_INFORMATION: u32 = 1 << 16;
pub(super) const SEEN_USER_EQUIPMENT_INFO: u32 = 1 << 17;
pub(super) const SEEN_ORIGIN_STATE_ID: u32 = 1 << 18;
pub(super) const SEEN_CC_SUB_SESSION_ID: u32 = 1 << 19;
pub(super) const SEEN_ACCT_MULTI_SESSION_ID: u32 = 1 << 20;
pub(super) const SEEN_CC_CORRELATION_ID: u32 = 1 << 21;
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
pub(super) struct Cur<'a> {
    pub(super) data: &'a [u8],
    /// Address of the message's first byte and of this AVP's header.
    pub(super) base: usize,
    pub(super) at: usize,
    pub(super) length: u32,
    pub(super) flags: u8,
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
        super::super::avp::utf8(self.data).map_err(|e| self.value_err(e))
    }
    #[inline(always)]
    fn identity(&self) -> Result<&'a str, ProtocolError> {
        let s = self.text()?;
        if s.is_empty() || s.len() > super::super::limits::IDENTITY_SIZE_MAX {
            return Err(self.err(rc::INVALID_AVP_VALUE));
        }
        Ok(s)
    }
    #[inline(always)]
    fn address(&self) -> Result<Address<'a>, ProtocolError> {
        super::super::avp::decode_address(self.data).map_err(|e| self.value_err(e))
    }
    #[inline(always)]
    fn is_mandatory(&self) -> bool {
        self.flags & super::super::avp_flags::M != 0
    }
    /// Checks a value of an AVP the CCR does not keep, against its data format.
    #[inline(always)]
    pub(super) fn check(&self, def: &AvpDef) -> Result<(), ProtocolError> {
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
        let body = msg.bytes().get(super::super::HEADER_LEN..).unwrap_or(&[]);
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
    pub(super) fn clear_service_information(&mut self) {
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

    /// The single pass over every AVP: dictionary, value checks, grammar and
    /// extraction, with an explicit stack for Grouped AVPs (no recursion). Framing is
    /// `AvpIter`'s, the framer `validate`, the base protocol and routing use too.
    #[inline(always)]
    fn walk(&mut self, bytes: &'a [u8], seen: &mut u32) -> Result<(), ProtocolError> {
        // The run being walked; entering a Grouped AVP pushes the enclosing run.
        let base = bytes.as_ptr() as usize;
        let mut stack: [(AvpIter<'a>, Ctx); GROUP_DEPTH_MAX] =
            std::array::from_fn(|_| (AvpIter::empty(bytes), Ctx::Top));
        let mut depth = 0usize;
        let mut run = AvpIter::new(
            bytes,
            super::super::HEADER_LEN.min(bytes.len()),
            bytes.len(),
        );
        let mut ctx = Ctx::Top;
        loop {
            let a = match run.next() {
                Some(framed) => framed?,
                None if depth == 0 => return Ok(()),
                None => {
                    depth -= 1;
                    (run, ctx) = stack[depth].clone();
                    continue;
                }
            };
            let idx = dict::lookup_index(a.code, a.vendor_id);
            let cur = Cur {
                data: a.data(),
                base,
                at: base + a.offset as usize,
                length: a.length,
                flags: a.flags,
            };
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
                stack[depth] = (std::mem::replace(&mut run, a.group()), ctx);
                depth += 1;
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
}
