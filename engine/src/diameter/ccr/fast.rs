//! The common case of `Ccr::decode_into`, decoded by one small loop per Grouped AVP.
//!
//! `Ccr::decode_common` reads a request whose AVPs are well framed and valid and stand
//! where RFC 8506 and TS 32.299 put them: the AVPs gyro keeps in their Grouped AVPs, and
//! any other known, non-Grouped AVP or unknown AVP without the M bit beside them. Each
//! Grouped AVP gyro keeps has its own loop, matching the member's code (and V bit)
//! directly, so no loop carries a context, a stack or a second dispatch on where a value
//! goes. On anything else — an error of any kind, a Grouped AVP gyro does not keep, a
//! Vendor-ID other than 3GPP's — it gives up (`None`), and `decode_into` runs the full
//! decoder (`Ccr::walk`), which finds the answer and the Failed-AVP. So when this path
//! succeeds its result is the full decoder's, field for field; `fuzzing::ccr_roundtrip`
//! and the tests in `engine/tests/ccr_fast.rs` compare the two on every input.

use super::super::avp::{decode_address, utf8, Address};
use super::super::dict::{self, AvpId, DataType, DEFS};
use super::super::limits::{IDENTITY_SIZE_MAX, MSCC_MAX, SESSION_ID_SIZE_MAX, SUBSCRIPTION_ID_MAX};
use super::super::{application, avp_flags, validate, VENDOR_3GPP};
use super::*;

/// The key an AVP is matched by: the first four bytes of its header (the code) as
/// they lie in memory, little-endian, with the V bit in the low byte, which holds the
/// code's high byte and is 0 for every code below 2^24 (all of the dictionary's). A
/// base AVP's key has a zero low byte, so only a code below 2^24 without the V bit
/// matches it; a 3GPP AVP's arm checks the code's high byte, the V bit and the
/// Vendor-ID itself (`data`), so a code of 2^24 or more can never pass for one.
const fn key(id: AvpId) -> u32 {
    let d = &DEFS[id as usize];
    assert!(d.vendor_id == 0 || d.vendor_id == VENDOR_3GPP);
    assert!(d.code < 1 << 24);
    d.code.swap_bytes()
        | if d.vendor_id == 0 {
            0
        } else {
            avp_flags::V as u32
        }
}

/// Whether a key is a 3GPP AVP's.
#[inline(always)]
const fn is_3gpp(key: u32) -> bool {
    key & avp_flags::V as u32 != 0
}

macro_rules! keys {
    ($($k:ident = $id:ident;)*) => { $( const $k: u32 = key(AvpId::$id); )* };
}

keys! {
    SESSION_ID = SessionId;
    ORIGIN_HOST = OriginHost;
    ORIGIN_REALM = OriginRealm;
    DESTINATION_REALM = DestinationRealm;
    DESTINATION_HOST = DestinationHost;
    AUTH_APPLICATION_ID = AuthApplicationId;
    SERVICE_CONTEXT_ID = ServiceContextId;
    CC_REQUEST_TYPE = CcRequestType;
    CC_REQUEST_NUMBER = CcRequestNumber;
    EVENT_TIMESTAMP = EventTimestamp;
    USER_NAME = UserName;
    REQUESTED_ACTION = RequestedAction;
    SERVICE_IDENTIFIER = ServiceIdentifier;
    TERMINATION_CAUSE = TerminationCause;
    MSI = MultipleServicesIndicator;
    RSU = RequestedServiceUnit;
    USU = UsedServiceUnit;
    SUBSCRIPTION_ID = SubscriptionId;
    SUBSCRIPTION_ID_TYPE = SubscriptionIdType;
    SUBSCRIPTION_ID_DATA = SubscriptionIdData;
    MSCC = MultipleServicesCreditControl;
    RATING_GROUP = RatingGroup;
    REPORTING_REASON = ReportingReason;
    CC_TIME = CcTime;
    CC_TOTAL_OCTETS = CcTotalOctets;
    CC_INPUT_OCTETS = CcInputOctets;
    CC_OUTPUT_OCTETS = CcOutputOctets;
    CC_SERVICE_SPECIFIC_UNITS = CcServiceSpecificUnits;
    SERVICE_INFORMATION = ServiceInformation;
    PS_INFORMATION = PsInformation;
    IMS_INFORMATION = ImsInformation;
    SMS_INFORMATION = SmsInformation;
    CHARGING_ID = TgppChargingId;
    CALLED_STATION_ID = CalledStationId;
    RAT_TYPE = TgppRatType;
    USER_LOCATION_INFO = TgppUserLocationInfo;
    SGSN_ADDRESS = SgsnAddress;
    SGW_ADDRESS = SgwAddress;
    GGSN_ADDRESS = GgsnAddress;
    SGSN_MCC_MNC = TgppSgsnMccMnc;
    IMSI_MCC_MNC = TgppImsiMccMnc;
    CALLING_PARTY = CallingPartyAddress;
    CALLED_PARTY = CalledPartyAddress;
    IMS_CHARGING_IDENTIFIER = ImsChargingIdentifier;
    NODE_FUNCTIONALITY = NodeFunctionality;
    ROLE_OF_NODE = RoleOfNode;
    SMSC_ADDRESS = SmscAddress;
    SMS_NODE = SmsNode;
    RECIPIENT_INFO = RecipientInfo;
    RECIPIENT_ADDRESS = RecipientAddress;
    ADDRESS_DATA = AddressData;
    USER_EQUIPMENT_INFO = UserEquipmentInfo;
    USER_EQUIPMENT_INFO_TYPE = UserEquipmentInfoType;
    USER_EQUIPMENT_INFO_VALUE = UserEquipmentInfoValue;
    ORIGIN_STATE_ID = OriginStateId;
    CC_SUB_SESSION_ID = CcSubSessionId;
    ACCT_MULTI_SESSION_ID = AcctMultiSessionId;
    CC_CORRELATION_ID = CcCorrelationId;
}

/// Runs `$body` for every AVP of the run `$bytes` with its key and `$avp`, its bytes
/// without padding; gives up (returns `None` from the enclosing function) on an AVP
/// that runs past the end of the run or a run that ends inside a header. The framing is
/// `Ccr::walk`'s: a last AVP may lack its padding. A 3GPP AVP's Length below its 12-byte
/// header is caught where the value is read (`data`, `other`).
macro_rules! each_avp {
    ($bytes:expr, |$key:ident, $avp:ident| $body:block) => {{
        let mut rest: &[u8] = $bytes;
        while let Some((h, _)) = rest.split_first_chunk::<AVP_HEADER_LEN>() {
            let code = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let w1 = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let length = (w1 & 0x00ff_ffff) as usize;
            if length < AVP_HEADER_LEN {
                return None;
            }
            let $avp = rest.get(..length)?;
            let $key = code | (w1 >> 24) & avp_flags::V as u32;
            rest = &rest[((length + 3) & !3).min(rest.len())..];
            $body
        }
        if !rest.is_empty() {
            return None;
        }
    }};
}

/// The value of the AVP `avp` whose arm matched `key`: after the 8-byte header, or for a
/// 3GPP AVP after the 12-byte one, whose code, V bit and Vendor-ID are checked here: a
/// key has room for the V bit only in the code's high byte, zero below 2^24, so a larger
/// code with the V bit could match a 3GPP AVP's key.
#[inline(always)]
fn data(avp: &[u8], key: u32) -> Option<&[u8]> {
    if is_3gpp(key) {
        let (h, data) = avp.split_first_chunk::<AVP_HEADER_LEN_VENDOR>()?;
        let w = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let code_v = u64::from(key & !(avp_flags::V as u32)) | (avp_flags::V as u64) << 32;
        let vendor_id = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        (w & (0xffff_ffff | (avp_flags::V as u64) << 32) == code_v && vendor_id == VENDOR_3GPP)
            .then_some(data)
    } else {
        avp.get(AVP_HEADER_LEN..)
    }
}

#[inline(always)]
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

/// An Unsigned32 (or Integer32, Enumerated, Time): the AVP's length is checked whole.
#[inline(always)]
fn u32_of(avp: &[u8], key: u32) -> Option<u32> {
    let d = data(avp, key)?;
    Some(u32::from_be_bytes(
        *d.first_chunk::<4>().filter(|_| d.len() == 4)?,
    ))
}

#[inline(always)]
fn u64_of(avp: &[u8], key: u32) -> Option<u64> {
    let d = data(avp, key)?;
    Some(u64::from_be_bytes(
        *d.first_chunk::<8>().filter(|_| d.len() == 8)?,
    ))
}

#[inline(always)]
fn enumerated(avp: &[u8], key: u32, lo: u32, hi: u32) -> Option<u32> {
    let v = u32_of(avp, key)?;
    (lo..=hi).contains(&v).then_some(v)
}

#[inline(always)]
fn text(avp: &[u8], key: u32) -> Option<&str> {
    utf8(data(avp, key)?).ok()
}

#[inline(always)]
fn identity(avp: &[u8], key: u32) -> Option<&str> {
    let s = text(avp, key)?;
    (!s.is_empty() && s.len() <= IDENTITY_SIZE_MAX).then_some(s)
}

#[inline(always)]
fn address(avp: &[u8], key: u32) -> Option<Address<'_>> {
    decode_address(data(avp, key)?).ok()
}

/// An AVP the request does not keep where it stands: skipped if unknown without the M
/// bit, value-checked if known and not Grouped; at the top level, a known AVP with the M
/// bit outside the CCR grammar is not understood (the full decoder answers it 5001).
#[inline(never)]
fn other(avp: &[u8], top: bool) -> Option<()> {
    let (h, _) = avp.split_first_chunk::<AVP_HEADER_LEN>()?;
    let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let flags = h[4];
    let (vendor_id, data) = if flags & avp_flags::V == 0 {
        (0, &avp[AVP_HEADER_LEN..])
    } else {
        let (v, data) = avp.split_first_chunk::<AVP_HEADER_LEN_VENDOR>()?;
        match u32::from_be_bytes([v[8], v[9], v[10], v[11]]) {
            // The V bit with Vendor-ID 0 names a base AVP, which may be one the
            // request keeps: the full decoder's to read.
            0 => return None,
            vendor_id => (vendor_id, data),
        }
    };
    let idx = dict::lookup_index(code, vendor_id);
    if idx == dict::UNKNOWN {
        return (flags & avp_flags::M == 0).then_some(());
    }
    let def = &DEFS[usize::from(idx)];
    if def.data_type == DataType::Grouped {
        return None;
    }
    if top && flags & avp_flags::M != 0 && !validate::ccr_allowed(def.id) {
        return None;
    }
    checked(def, data)
}

/// The value check of an AVP the request does not keep (`Cur::check`).
#[inline(never)]
fn checked(def: &AvpDef, data: &[u8]) -> Option<()> {
    let cur = Cur {
        data,
        base: 0,
        at: 0,
        length: 0,
        flags: 0,
    };
    cur.check(def).ok()
}

/// Sets a unit count met for the first time; a second one of the same kind in one RSU
/// or USU (summed by the full decoder) gives up.
#[inline(always)]
fn first<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

/// The unit AVPs of an RSU or USU. `IN_MSCC_USU`: a Reporting-Reason here is the
/// MSCC's (TS 32.299 §7.2.175); elsewhere it is only checked.
#[inline(always)]
fn units<const IN_MSCC_USU: bool>(
    bytes: &[u8],
    reporting_reason: &mut Option<u32>,
) -> Option<Units> {
    let mut u = Units::default();
    // The usual RSU or USU of a data session is one CC-Total-Octets: its whole header
    // (code, no V bit, any other flag, length 16) is one compare.
    const TOTAL_OCTETS_ALONE: u64 = CC_TOTAL_OCTETS as u64 | 16 << 56;
    const FLAGS_BUT_V: u64 = 0x7f << 32;
    if let Some((h, v)) = bytes.split_first_chunk::<8>() {
        if bytes.len() == 16 && u64::from_le_bytes(*h) & !FLAGS_BUT_V == TOTAL_OCTETS_ALONE {
            u.total_octets = Some(u64::from_be_bytes(*v.first_chunk::<8>()?));
            return Some(u);
        }
    }
    each_avp!(bytes, |key, avp| {
        match key {
            CC_TOTAL_OCTETS => first(&mut u.total_octets, u64_of(avp, CC_TOTAL_OCTETS)?)?,
            CC_TIME => first(&mut u.time_s, u32_of(avp, CC_TIME)?)?,
            CC_INPUT_OCTETS => first(&mut u.input_octets, u64_of(avp, CC_INPUT_OCTETS)?)?,
            CC_OUTPUT_OCTETS => first(&mut u.output_octets, u64_of(avp, CC_OUTPUT_OCTETS)?)?,
            CC_SERVICE_SPECIFIC_UNITS => first(
                &mut u.service_specific,
                u64_of(avp, CC_SERVICE_SPECIFIC_UNITS)?,
            )?,
            REPORTING_REASON if IN_MSCC_USU => {
                *reporting_reason = Some(enumerated(avp, REPORTING_REASON, 0, 8)?)
            }
            _ => other(avp, false)?,
        }
    });
    Some(u)
}

#[inline(never)]
fn mscc(m: &mut Mscc, bytes: &[u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            RATING_GROUP => m.rating_group = Some(u32_of(avp, RATING_GROUP)?),
            // Several USUs in one MSCC (one per tariff period) are summed by the
            // full decoder.
            USU if m.used.is_none() => {
                m.used = Some(units::<true>(data(avp, USU)?, &mut m.reporting_reason)?);
            }
            USU => return None,
            RSU => m.requested = Some(units::<false>(data(avp, RSU)?, &mut None)?),
            REPORTING_REASON => m.reporting_reason = Some(enumerated(avp, REPORTING_REASON, 0, 8)?),
            SERVICE_IDENTIFIER => m.service_identifier = Some(u32_of(avp, SERVICE_IDENTIFIER)?),
            _ => other(avp, false)?,
        }
    });
    Some(())
}

#[inline(always)]
fn subscription_id<'a>(s: &mut SubscriptionId<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            SUBSCRIPTION_ID_TYPE => s.id_type = enumerated(avp, SUBSCRIPTION_ID_TYPE, 0, 4)?,
            SUBSCRIPTION_ID_DATA => s.data = text(avp, SUBSCRIPTION_ID_DATA)?,
            _ => other(avp, false)?,
        }
    });
    Some(())
}

#[inline(always)]
fn ps<'a>(p: &mut PsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            CHARGING_ID => p.charging_id = Some(u32_of(avp, CHARGING_ID)?),
            CALLED_STATION_ID => p.called_station_id = Some(text(avp, CALLED_STATION_ID)?),
            RAT_TYPE => p.rat_type = Some(data(avp, RAT_TYPE)?),
            USER_LOCATION_INFO => p.user_location_info = Some(data(avp, USER_LOCATION_INFO)?),
            SGSN_ADDRESS => p.sgsn_address = Some(address(avp, SGSN_ADDRESS)?),
            SGW_ADDRESS => p.sgw_address = Some(address(avp, SGW_ADDRESS)?),
            GGSN_ADDRESS => p.ggsn_address = Some(address(avp, GGSN_ADDRESS)?),
            SGSN_MCC_MNC => p.sgsn_mcc_mnc = Some(text(avp, SGSN_MCC_MNC)?),
            IMSI_MCC_MNC => p.imsi_mcc_mnc = Some(text(avp, IMSI_MCC_MNC)?),
            _ => other(avp, false)?,
        }
    });
    Some(())
}

fn ims<'a>(i: &mut ImsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            CALLING_PARTY => i.calling_party_address = Some(text(avp, CALLING_PARTY)?),
            CALLED_PARTY => i.called_party_address = Some(text(avp, CALLED_PARTY)?),
            IMS_CHARGING_IDENTIFIER => {
                i.ims_charging_identifier = Some(text(avp, IMS_CHARGING_IDENTIFIER)?)
            }
            NODE_FUNCTIONALITY => {
                i.node_functionality = Some(enumerated(avp, NODE_FUNCTIONALITY, 0, 20)?)
            }
            ROLE_OF_NODE => i.role_of_node = Some(enumerated(avp, ROLE_OF_NODE, 0, 3)?),
            _ => other(avp, false)?,
        }
    });
    Some(())
}

fn sms<'a>(s: &mut SmsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            SMSC_ADDRESS => s.smsc_address = Some(address(avp, SMSC_ADDRESS)?),
            SMS_NODE => s.sms_node = Some(enumerated(avp, SMS_NODE, 0, 3)?),
            RECIPIENT_INFO => recipient_info(s, data(avp, RECIPIENT_INFO)?)?,
            _ => other(avp, false)?,
        }
    });
    Some(())
}

fn recipient_info<'a>(s: &mut SmsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, avp| {
        match key {
            RECIPIENT_ADDRESS => {
                each_avp!(data(avp, RECIPIENT_ADDRESS)?, |key, avp| {
                    match key {
                        ADDRESS_DATA => {
                            let v = text(avp, ADDRESS_DATA)?;
                            if s.recipient_address.is_none() {
                                s.recipient_address = Some(v);
                            }
                        }
                        _ => other(avp, false)?,
                    }
                });
            }
            _ => other(avp, false)?,
        }
    });
    Some(())
}

impl<'a> Ccr<'a> {
    #[inline(never)]
    fn service_information(&mut self, bytes: &'a [u8]) -> Option<()> {
        self.ps = PsInformation::default();
        self.ims = ImsInformation::default();
        self.sms = SmsInformation::default();
        each_avp!(bytes, |key, avp| {
            match key {
                PS_INFORMATION => ps(&mut self.ps, data(avp, PS_INFORMATION)?)?,
                IMS_INFORMATION => ims(&mut self.ims, data(avp, IMS_INFORMATION)?)?,
                SMS_INFORMATION => sms(&mut self.sms, data(avp, SMS_INFORMATION)?)?,
                _ => other(avp, false)?,
            }
        });
        Some(())
    }

    fn user_equipment_info(&mut self, bytes: &'a [u8]) -> Option<()> {
        let (t, val) = self.user_equipment_info.insert((0, &[]));
        each_avp!(bytes, |key, avp| {
            match key {
                USER_EQUIPMENT_INFO_TYPE => *t = enumerated(avp, USER_EQUIPMENT_INFO_TYPE, 0, 3)?,
                USER_EQUIPMENT_INFO_VALUE => *val = data(avp, USER_EQUIPMENT_INFO_VALUE)?,
                _ => other(avp, false)?,
            }
        });
        Some(())
    }

    /// The top level of the request's AVPs (`bytes`, after the message header), with
    /// `seen` the single-occurrence AVPs met. `None`: the full decoder must decide.
    pub(super) fn decode_common(&mut self, bytes: &'a [u8], seen: &mut u32) -> Option<()> {
        each_avp!(bytes, |key, avp| {
            match key {
                SESSION_ID => {
                    once(seen, SEEN_SESSION_ID)?;
                    let v = text(avp, SESSION_ID)?;
                    if v.is_empty() || v.len() > SESSION_ID_SIZE_MAX {
                        return None;
                    }
                    self.session_id = v;
                }
                ORIGIN_HOST => {
                    once(seen, SEEN_ORIGIN_HOST)?;
                    self.origin_host = identity(avp, ORIGIN_HOST)?;
                }
                ORIGIN_REALM => {
                    once(seen, SEEN_ORIGIN_REALM)?;
                    self.origin_realm = identity(avp, ORIGIN_REALM)?;
                }
                DESTINATION_REALM => {
                    once(seen, SEEN_DESTINATION_REALM)?;
                    self.destination_realm = identity(avp, DESTINATION_REALM)?;
                }
                AUTH_APPLICATION_ID => {
                    once(seen, SEEN_AUTH_APPLICATION_ID)?;
                    if u32_of(avp, AUTH_APPLICATION_ID)? != application::CREDIT_CONTROL {
                        return None;
                    }
                }
                SERVICE_CONTEXT_ID => {
                    once(seen, SEEN_SERVICE_CONTEXT_ID)?;
                    self.service_context_id = text(avp, SERVICE_CONTEXT_ID)?;
                }
                CC_REQUEST_TYPE => {
                    once(seen, SEEN_REQUEST_TYPE)?;
                    self.request_type = match enumerated(avp, CC_REQUEST_TYPE, 1, 4)? {
                        1 => RequestType::Initial,
                        2 => RequestType::Update,
                        3 => RequestType::Termination,
                        _ => RequestType::Event,
                    };
                }
                CC_REQUEST_NUMBER => {
                    once(seen, SEEN_REQUEST_NUMBER)?;
                    self.request_number = u32_of(avp, CC_REQUEST_NUMBER)?;
                }
                EVENT_TIMESTAMP => {
                    once(seen, SEEN_EVENT_TIMESTAMP)?;
                    self.event_timestamp = Some(u32_of(avp, EVENT_TIMESTAMP)?);
                }
                SUBSCRIPTION_ID => {
                    let n = usize::from(self.subscription_id_count);
                    if n == SUBSCRIPTION_ID_MAX {
                        return None;
                    }
                    self.subscription_id_count += 1;
                    let s = &mut self.subscription_ids[n];
                    *s = SubscriptionId::default();
                    subscription_id(s, data(avp, SUBSCRIPTION_ID)?)?;
                }
                MSCC => {
                    let n = usize::from(self.mscc_count);
                    if n == MSCC_MAX {
                        return None;
                    }
                    self.mscc_count += 1;
                    let m = &mut self.mscc[n];
                    *m = Mscc::default();
                    mscc(m, data(avp, MSCC)?)?;
                }
                MSI => {
                    once(seen, SEEN_MSI)?;
                    self.multiple_services_indicator = enumerated(avp, MSI, 0, 1)? == 1;
                }
                SERVICE_INFORMATION => {
                    once(seen, SEEN_SERVICE_INFORMATION)?;
                    self.service_information(data(avp, SERVICE_INFORMATION)?)?;
                }
                DESTINATION_HOST => {
                    once(seen, SEEN_DESTINATION_HOST)?;
                    self.destination_host = Some(identity(avp, DESTINATION_HOST)?);
                }
                USER_NAME => {
                    once(seen, SEEN_USER_NAME)?;
                    self.user_name = Some(text(avp, USER_NAME)?);
                }
                REQUESTED_ACTION => {
                    once(seen, SEEN_REQUESTED_ACTION)?;
                    self.requested_action = Some(match enumerated(avp, REQUESTED_ACTION, 0, 3)? {
                        0 => RequestedAction::DirectDebiting,
                        1 => RequestedAction::RefundAccount,
                        2 => RequestedAction::CheckBalance,
                        _ => RequestedAction::PriceEnquiry,
                    });
                }
                SERVICE_IDENTIFIER => {
                    once(seen, SEEN_SERVICE_IDENTIFIER)?;
                    self.service_identifier = Some(u32_of(avp, SERVICE_IDENTIFIER)?);
                }
                TERMINATION_CAUSE => {
                    once(seen, SEEN_TERMINATION_CAUSE)?;
                    self.termination_cause = Some(enumerated(avp, TERMINATION_CAUSE, 1, 8)?);
                }
                RSU => {
                    once(seen, SEEN_RSU)?;
                    self.requested = Some(units::<false>(data(avp, RSU)?, &mut None)?);
                }
                USU if self.used.is_none() => {
                    self.used = Some(units::<false>(data(avp, USU)?, &mut None)?);
                }
                USU => return None,
                USER_EQUIPMENT_INFO => {
                    once(seen, SEEN_USER_EQUIPMENT_INFO)?;
                    self.user_equipment_info(data(avp, USER_EQUIPMENT_INFO)?)?;
                }
                ORIGIN_STATE_ID => {
                    once(seen, SEEN_ORIGIN_STATE_ID)?;
                    checked(AvpId::OriginStateId.def(), data(avp, ORIGIN_STATE_ID)?)?;
                }
                CC_SUB_SESSION_ID => {
                    once(seen, SEEN_CC_SUB_SESSION_ID)?;
                    checked(AvpId::CcSubSessionId.def(), data(avp, CC_SUB_SESSION_ID)?)?;
                }
                ACCT_MULTI_SESSION_ID => {
                    once(seen, SEEN_ACCT_MULTI_SESSION_ID)?;
                    checked(
                        AvpId::AcctMultiSessionId.def(),
                        data(avp, ACCT_MULTI_SESSION_ID)?,
                    )?;
                }
                CC_CORRELATION_ID => {
                    once(seen, SEEN_CC_CORRELATION_ID)?;
                    data(avp, CC_CORRELATION_ID)?;
                }
                _ => other(avp, true)?,
            }
        });
        Some(())
    }
}
