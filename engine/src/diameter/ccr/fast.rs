//! The common case of `Ccr::decode_into`, decoded by one small loop per Grouped AVP.
//!
//! `Ccr::decode_common` reads a request whose AVPs are well framed and valid and stand
//! where RFC 8506 and TS 32.299 put them: the AVPs gyro keeps in their Grouped AVPs, and
//! any other known, non-Grouped AVP or unknown AVP without the M bit beside them. The
//! eight AVPs RFC 8506 puts first are read in that order while they come so; each
//! Grouped AVP gyro keeps has its own loop, matching the member's code directly, so no
//! loop carries a context, a stack or a second dispatch on where a value goes; an AVP is
//! framed once with its padding, so a fixed-size value needs only its Length compared.
//! On anything else — an error of any kind, a Grouped AVP gyro does not keep, a
//! repeated unit count, the V bit with Vendor-ID 0, a last AVP without its padding — it
//! gives up (`None`), and `decode_into` runs the full decoder (`Ccr::decode_full_into`),
//! which finds the answer and the Failed-AVP. So when this path succeeds its result is
//! the full decoder's, field for field; `fuzzing::ccr_roundtrip` and the tests in
//! `engine/tests/ccr_fast.rs` compare the two on every input.

//!
//! Why this path frames AVPs itself rather than through `avp::AvpIter` (the framer
//! `validate`, the base protocol and the shard core's routing build on): it frames each
//! AVP once with its padding and matches its code as loaded, which is what makes it
//! cheaper than a general walk, 1,172 instructions per CCR-U against 1,828 for the
//! walk (`bench/callgrind.sh`). End to end the gain is small on this 2-core machine,
//! where one shard is not the only limit: `bench/e2e.sh` one shard `none`, a build that
//! always takes the full decoder against this one, two sittings of 5 runs each, 25.7%
//! and 26.5% of the sink against 25.6% and 27.3% (`bench/results/e2e.md`, "The fast
//! path end to end"). It is kept for the instructions it saves a shard that is
//! CPU-bound.

use super::super::avp::{decode_address, utf8, Address};
use super::super::dict::{self, AvpDef, AvpId, DataType, DEFS};
use super::super::limits::{IDENTITY_SIZE_MAX, SESSION_ID_SIZE_MAX};
use super::super::{
    application, avp_flags, validate, AVP_HEADER_LEN, AVP_HEADER_LEN_VENDOR, VENDOR_3GPP,
};
use super::decode::*;
use super::*;

/// The key of an AVP gyro keeps: its code as the first four bytes of its header lie
/// in memory (little-endian), with the V bit of a 3GPP AVP in the low byte, which holds
/// the code's high byte (0 for every code of the dictionary). The loops match the code
/// alone (`code::*`, the key without the V bit); the arm passes the key to the value
/// readers, which check the AVP's V bit against it (`Avp::v_ok`) and, for a 3GPP AVP,
/// the Vendor-ID (`vendor_ok`).
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
    ($($k:ident = $id:ident;)*) => {
        $( const $k: u32 = key(AvpId::$id); )*
        /// The codes the loops match, as they lie in memory (the keys without the V
        /// bit, which the value readers check).
        mod code {
            $( pub const $k: u32 = super::$k & !(super::avp_flags::V as u32); )*
        }
    };
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

/// Runs `$body` for every AVP of the run `$bytes` with its key (the code as it lies in
/// memory) and `$a`, the AVP (`Avp`); gives up (returns `None` from the enclosing
/// function) on an AVP that, with its padding, is longer than the run, and on a run
/// that ends inside a header. The AVP's bounds are checked once, with its padding: a
/// fixed-size value (`Avp::fixed`) then needs only its Length compared. The body reads
/// the AVP through the value readers below, each of which checks its Length (at least a
/// header's), so a body that returns has read an AVP of 8 bytes or more and the loop
/// moves on. A last AVP without its padding, which `Ccr::walk` accepts, is left to it.
macro_rules! each_avp {
    ($bytes:expr, |$key:ident, $a:ident| $body:block) => {{
        let mut rest: &[u8] = $bytes;
        while let Some((h, _)) = rest.split_first_chunk::<AVP_HEADER_LEN>() {
            let $key = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let w1 = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let length = (w1 & 0x00ff_ffff) as usize;
            let (padded, next) = rest.split_at_checked((length + 3) & !3)?;
            let $a = Avp {
                padded,
                length,
                w1,
            };
            $body
            debug_assert!(length >= AVP_HEADER_LEN);
            rest = next;
        }
        if !rest.is_empty() {
            return None;
        }
    }};
}

/// An AVP met by `each_avp`: its bytes with their padding, its Length and the second
/// word of its header (flags and Length).
#[derive(Clone, Copy)]
struct Avp<'a> {
    padded: &'a [u8],
    length: usize,
    w1: u32,
}

/// The V bit in an AVP's second header word.
const W1_V: u32 = (avp_flags::V as u32) << 24;

/// The V bit in an AVP's header read as one little-endian word.
const W_V: u64 = (avp_flags::V as u64) << 32;

impl<'a> Avp<'a> {
    /// Whether the AVP's V bit is what the arm's `key` (3GPP or base) asks for.
    #[inline(always)]
    fn v_ok(self, key: u32) -> bool {
        (self.w1 & W1_V != 0) == is_3gpp(key)
    }

    /// The AVP without its padding.
    #[inline(always)]
    fn bytes(self) -> Option<&'a [u8]> {
        self.padded.get(..self.length)
    }

    /// An AVP whose Length must be `L` (a fixed-size value's, a multiple of 4: its
    /// padded length is `L` too).
    #[inline(always)]
    fn fixed<const L: usize>(self) -> Option<&'a [u8; L]> {
        if self.length != L {
            return None;
        }
        self.padded.first_chunk::<L>()
    }
}

/// The value of the AVP whose arm matched `key`: after the 8-byte header, or for a 3GPP
/// AVP after the 12-byte one, checked by `vendor_ok`.
#[inline(always)]
fn data(a: Avp<'_>, key: u32) -> Option<&[u8]> {
    if !a.v_ok(key) {
        return None;
    }
    if is_3gpp(key) {
        let (h, data) = a.bytes()?.split_first_chunk::<AVP_HEADER_LEN_VENDOR>()?;
        vendor_ok(h).then_some(data)
    } else {
        a.bytes()?.get(AVP_HEADER_LEN..)
    }
}

/// Whether an AVP whose arm matched a 3GPP code (with the V bit) is a 3GPP AVP: its
/// Vendor-ID is 10415.
#[inline(always)]
fn vendor_ok(h: &[u8; AVP_HEADER_LEN_VENDOR]) -> bool {
    u32::from_be_bytes([h[8], h[9], h[10], h[11]]) == VENDOR_3GPP
}

#[inline(always)]
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

/// The value of a fixed-size AVP (`N` bytes) whose arm matched `key`: the AVP's Length
/// must be its header's (8 bytes, or 12 for a 3GPP AVP, whose Vendor-ID is checked) and
/// `N`.
#[inline(always)]
fn value<const N: usize>(a: Avp<'_>, key: u32) -> Option<[u8; N]> {
    if !a.v_ok(key) {
        return None;
    }
    let header = if is_3gpp(key) {
        AVP_HEADER_LEN_VENDOR
    } else {
        AVP_HEADER_LEN
    };
    if a.length != header + N {
        return None;
    }
    let (h, v) = a.padded.get(..header + N)?.split_at(header);
    if is_3gpp(key) && !vendor_ok(h.first_chunk()?) {
        return None;
    }
    v.first_chunk().copied()
}

/// An Unsigned32 (or Integer32, Enumerated, Time).
#[inline(always)]
fn u32_of(a: Avp<'_>, key: u32) -> Option<u32> {
    value(a, key).map(u32::from_be_bytes)
}

/// An Unsigned64.
#[inline(always)]
fn u64_of(a: Avp<'_>, key: u32) -> Option<u64> {
    value(a, key).map(u64::from_be_bytes)
}

#[inline(always)]
fn enumerated(a: Avp<'_>, key: u32, lo: u32, hi: u32) -> Option<u32> {
    let v = u32_of(a, key)?;
    (lo..=hi).contains(&v).then_some(v)
}

#[inline(always)]
fn text(a: Avp<'_>, key: u32) -> Option<&str> {
    utf8(data(a, key)?).ok()
}

#[inline(always)]
fn identity(a: Avp<'_>, key: u32) -> Option<&str> {
    let s = text(a, key)?;
    (!s.is_empty() && s.len() <= IDENTITY_SIZE_MAX).then_some(s)
}

#[inline(always)]
fn address(a: Avp<'_>, key: u32) -> Option<Address<'_>> {
    decode_address(data(a, key)?).ok()
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

/// An RSU or USU (`a`) into `slot`. The usual one of a data session is one
/// CC-Total-Octets: the Grouped AVP is 24 bytes, its member's whole header (code, no V
/// bit, any other flag, Length 16) is one compare, and the value is stored directly;
/// any other goes through `units`.
#[inline(always)]
fn units_into<const IN_MSCC_USU: bool>(
    a: Avp<'_>,
    slot: &mut Option<Units>,
    reporting_reason: &mut Option<u32>,
) -> Option<()> {
    const TOTAL_OCTETS_ALONE: u64 = CC_TOTAL_OCTETS as u64 | 16 << 56;
    const FLAGS_BUT_V: u64 = 0x7f << 32;
    if a.w1 & W1_V != 0 {
        return None;
    }
    if let Some(g) = a.fixed::<24>() {
        let (_, member) = g.split_first_chunk::<8>()?;
        let (h, v) = member.split_first_chunk::<8>()?;
        if u64::from_le_bytes(*h) & !FLAGS_BUT_V == TOTAL_OCTETS_ALONE {
            *slot = Some(Units {
                total_octets: Some(u64::from_be_bytes(*v.first_chunk::<8>()?)),
                ..Units::default()
            });
            return Some(());
        }
    }
    *slot = Some(units::<IN_MSCC_USU>(
        a.bytes()?.get(AVP_HEADER_LEN..)?,
        reporting_reason,
    )?);
    Some(())
}

/// The unit AVPs of an RSU or USU. `IN_MSCC_USU`: a Reporting-Reason here is the
/// MSCC's (TS 32.299 §7.2.175); elsewhere it is only checked.
#[inline(never)]
fn units<const IN_MSCC_USU: bool>(
    bytes: &[u8],
    reporting_reason: &mut Option<u32>,
) -> Option<Units> {
    let mut u = Units::default();
    each_avp!(bytes, |key, a| {
        match key {
            code::CC_TOTAL_OCTETS => first(&mut u.total_octets, u64_of(a, CC_TOTAL_OCTETS)?)?,
            code::CC_TIME => first(&mut u.time_s, u32_of(a, CC_TIME)?)?,
            code::CC_INPUT_OCTETS => first(&mut u.input_octets, u64_of(a, CC_INPUT_OCTETS)?)?,
            code::CC_OUTPUT_OCTETS => first(&mut u.output_octets, u64_of(a, CC_OUTPUT_OCTETS)?)?,
            code::CC_SERVICE_SPECIFIC_UNITS => first(
                &mut u.service_specific,
                u64_of(a, CC_SERVICE_SPECIFIC_UNITS)?,
            )?,
            code::REPORTING_REASON if IN_MSCC_USU => {
                *reporting_reason = Some(enumerated(a, REPORTING_REASON, 0, 8)?)
            }
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(u)
}

#[inline(always)]
fn mscc(m: &mut Mscc, bytes: &[u8]) -> Option<()> {
    each_avp!(bytes, |key, a| {
        match key {
            code::RATING_GROUP => m.rating_group = Some(u32_of(a, RATING_GROUP)?),
            // Several USUs in one MSCC (one per tariff period) are summed by the
            // full decoder.
            code::USU if m.used.is_none() => {
                units_into::<true>(a, &mut m.used, &mut m.reporting_reason)?;
            }
            code::USU => return None,
            code::RSU => units_into::<false>(a, &mut m.requested, &mut None)?,
            code::REPORTING_REASON => {
                m.reporting_reason = Some(enumerated(a, REPORTING_REASON, 0, 8)?)
            }
            code::SERVICE_IDENTIFIER => m.service_identifier = Some(u32_of(a, SERVICE_IDENTIFIER)?),
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

#[inline(always)]
fn subscription_id<'a>(s: &mut SubscriptionId<'a>, bytes: &'a [u8]) -> Option<()> {
    // The usual Subscription-Id (RFC 8506 §8.46): its type, then its data, the last
    // member. The type's whole header (code, no V bit, any other flag, Length 12) is one
    // compare, the data's code and V bit another.
    const TYPE_ALONE: u64 = code::SUBSCRIPTION_ID_TYPE as u64 | 12 << 56;
    const FLAGS_BUT_V: u64 = 0x7f << 32;
    if let Some((t, d)) = bytes.split_first_chunk::<12>() {
        let (th, tv) = t.split_first_chunk::<8>()?;
        let (dh, _) = d.split_first_chunk::<8>()?;
        let w = u64::from_le_bytes(*dh);
        let length = (u32::from_be_bytes([0, dh[5], dh[6], dh[7]])) as usize;
        if u64::from_le_bytes(*th) & !FLAGS_BUT_V == TYPE_ALONE
            && w as u32 == code::SUBSCRIPTION_ID_DATA
            && w & W_V == 0
            && (length + 3) & !3 == d.len()
        {
            let id_type = u32::from_be_bytes(*tv.first_chunk::<4>()?);
            if id_type > 4 {
                return None;
            }
            s.id_type = id_type;
            s.data = utf8(d.get(AVP_HEADER_LEN..length)?).ok()?;
            return Some(());
        }
    }
    each_avp!(bytes, |key, a| {
        match key {
            code::SUBSCRIPTION_ID_TYPE => s.id_type = enumerated(a, SUBSCRIPTION_ID_TYPE, 0, 4)?,
            code::SUBSCRIPTION_ID_DATA => s.data = text(a, SUBSCRIPTION_ID_DATA)?,
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

#[inline(always)]
fn ps<'a>(p: &mut PsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, a| {
        match key {
            code::CHARGING_ID => p.charging_id = Some(u32_of(a, CHARGING_ID)?),
            code::CALLED_STATION_ID => p.called_station_id = Some(text(a, CALLED_STATION_ID)?),
            code::RAT_TYPE => p.rat_type = Some(data(a, RAT_TYPE)?),
            code::USER_LOCATION_INFO => p.user_location_info = Some(data(a, USER_LOCATION_INFO)?),
            code::SGSN_ADDRESS => p.sgsn_address = Some(address(a, SGSN_ADDRESS)?),
            code::SGW_ADDRESS => p.sgw_address = Some(address(a, SGW_ADDRESS)?),
            code::GGSN_ADDRESS => p.ggsn_address = Some(address(a, GGSN_ADDRESS)?),
            code::SGSN_MCC_MNC => p.sgsn_mcc_mnc = Some(text(a, SGSN_MCC_MNC)?),
            code::IMSI_MCC_MNC => p.imsi_mcc_mnc = Some(text(a, IMSI_MCC_MNC)?),
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

fn ims<'a>(i: &mut ImsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, a| {
        match key {
            code::CALLING_PARTY => i.calling_party_address = Some(text(a, CALLING_PARTY)?),
            code::CALLED_PARTY => i.called_party_address = Some(text(a, CALLED_PARTY)?),
            code::IMS_CHARGING_IDENTIFIER => {
                i.ims_charging_identifier = Some(text(a, IMS_CHARGING_IDENTIFIER)?)
            }
            code::NODE_FUNCTIONALITY => {
                i.node_functionality = Some(enumerated(a, NODE_FUNCTIONALITY, 0, 20)?)
            }
            code::ROLE_OF_NODE => i.role_of_node = Some(enumerated(a, ROLE_OF_NODE, 0, 3)?),
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

fn sms<'a>(s: &mut SmsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, a| {
        match key {
            code::SMSC_ADDRESS => s.smsc_address = Some(address(a, SMSC_ADDRESS)?),
            code::SMS_NODE => s.sms_node = Some(enumerated(a, SMS_NODE, 0, 3)?),
            code::RECIPIENT_INFO => recipient_info(s, data(a, RECIPIENT_INFO)?)?,
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

fn recipient_info<'a>(s: &mut SmsInformation<'a>, bytes: &'a [u8]) -> Option<()> {
    each_avp!(bytes, |key, a| {
        match key {
            code::RECIPIENT_ADDRESS => {
                each_avp!(data(a, RECIPIENT_ADDRESS)?, |key, a| {
                    match key {
                        code::ADDRESS_DATA => {
                            let v = text(a, ADDRESS_DATA)?;
                            if s.recipient_address.is_none() {
                                s.recipient_address = Some(v);
                            }
                        }
                        _ => other(a.bytes()?, false)?,
                    }
                });
            }
            _ => other(a.bytes()?, false)?,
        }
    });
    Some(())
}

/// The AVP at the start of `rest` if its code is `code` (as it lies in memory) and it
/// fits in `rest` with its padding, and what follows it; `None` otherwise.
#[inline(always)]
fn leading(rest: &[u8], code: u32) -> Option<(Avp<'_>, &[u8])> {
    let (h, _) = rest.split_first_chunk::<AVP_HEADER_LEN>()?;
    if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != code {
        return None;
    }
    let w1 = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let length = (w1 & 0x00ff_ffff) as usize;
    let (padded, next) = rest.split_at_checked((length + 3) & !3)?;
    Some((Avp { padded, length, w1 }, next))
}

impl<'a> Ccr<'a> {
    #[inline(always)]
    fn service_information(&mut self, bytes: &'a [u8]) -> Option<()> {
        self.clear_service_information();
        each_avp!(bytes, |key, a| {
            match key {
                code::PS_INFORMATION => ps(&mut self.ps, data(a, PS_INFORMATION)?)?,
                code::IMS_INFORMATION => ims(&mut self.ims, data(a, IMS_INFORMATION)?)?,
                code::SMS_INFORMATION => sms(&mut self.sms, data(a, SMS_INFORMATION)?)?,
                _ => other(a.bytes()?, false)?,
            }
        });
        Some(())
    }

    fn user_equipment_info(&mut self, bytes: &'a [u8]) -> Option<()> {
        let (t, val) = self.user_equipment_info.insert((0, &[]));
        each_avp!(bytes, |key, a| {
            match key {
                code::USER_EQUIPMENT_INFO_TYPE => {
                    *t = enumerated(a, USER_EQUIPMENT_INFO_TYPE, 0, 3)?
                }
                code::USER_EQUIPMENT_INFO_VALUE => *val = data(a, USER_EQUIPMENT_INFO_VALUE)?,
                _ => other(a.bytes()?, false)?,
            }
        });
        Some(())
    }

    #[inline(always)]
    fn read_session_id(&mut self, a: Avp<'a>) -> Option<()> {
        let v = text(a, SESSION_ID)?;
        if v.is_empty() || v.len() > SESSION_ID_SIZE_MAX {
            return None;
        }
        self.session_id = v;
        Some(())
    }

    #[inline(always)]
    fn read_origin_host(&mut self, a: Avp<'a>) -> Option<()> {
        self.origin_host = identity(a, ORIGIN_HOST)?;
        Some(())
    }

    #[inline(always)]
    fn read_origin_realm(&mut self, a: Avp<'a>) -> Option<()> {
        self.origin_realm = identity(a, ORIGIN_REALM)?;
        Some(())
    }

    #[inline(always)]
    fn read_destination_realm(&mut self, a: Avp<'a>) -> Option<()> {
        self.destination_realm = identity(a, DESTINATION_REALM)?;
        Some(())
    }

    #[inline(always)]
    fn read_auth_application_id(&mut self, a: Avp<'a>) -> Option<()> {
        (u32_of(a, AUTH_APPLICATION_ID)? == application::CREDIT_CONTROL).then_some(())
    }

    #[inline(always)]
    fn read_service_context_id(&mut self, a: Avp<'a>) -> Option<()> {
        self.service_context_id = text(a, SERVICE_CONTEXT_ID)?;
        Some(())
    }

    #[inline(always)]
    fn read_request_type(&mut self, a: Avp<'a>) -> Option<()> {
        self.request_type = match enumerated(a, CC_REQUEST_TYPE, 1, 4)? {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            _ => RequestType::Event,
        };
        Some(())
    }

    #[inline(always)]
    fn read_request_number(&mut self, a: Avp<'a>) -> Option<()> {
        self.request_number = u32_of(a, CC_REQUEST_NUMBER)?;
        Some(())
    }

    /// The top level of the request's AVPs (`bytes`, after the message header), with
    /// `seen` the single-occurrence AVPs met. `None`: the full decoder must decide.
    pub(super) fn decode_common(&mut self, bytes: &'a [u8], seen: &mut u32) -> Option<()> {
        // RFC 8506 §3.1 puts eight AVPs first, in this order, and clients send them so.
        // While they come in that order each is read after one compare of its code: no
        // dispatch, and no check that it is the first of its kind. The loop takes over
        // at the first AVP out of this order (and finds any later repeat of these).
        let mut rest = bytes;
        'leading: {
            macro_rules! leading {
                ($code:expr, $bit:expr, $read:ident) => {
                    let Some((a, after)) = leading(rest, $code) else {
                        break 'leading;
                    };
                    self.$read(a)?;
                    *seen |= $bit;
                    rest = after;
                };
            }
            leading!(code::SESSION_ID, SEEN_SESSION_ID, read_session_id);
            leading!(code::ORIGIN_HOST, SEEN_ORIGIN_HOST, read_origin_host);
            leading!(code::ORIGIN_REALM, SEEN_ORIGIN_REALM, read_origin_realm);
            leading!(
                code::DESTINATION_REALM,
                SEEN_DESTINATION_REALM,
                read_destination_realm
            );
            leading!(
                code::AUTH_APPLICATION_ID,
                SEEN_AUTH_APPLICATION_ID,
                read_auth_application_id
            );
            leading!(
                code::SERVICE_CONTEXT_ID,
                SEEN_SERVICE_CONTEXT_ID,
                read_service_context_id
            );
            leading!(code::CC_REQUEST_TYPE, SEEN_REQUEST_TYPE, read_request_type);
            leading!(
                code::CC_REQUEST_NUMBER,
                SEEN_REQUEST_NUMBER,
                read_request_number
            );
        }
        each_avp!(rest, |key, a| {
            match key {
                code::SESSION_ID => {
                    once(seen, SEEN_SESSION_ID)?;
                    self.read_session_id(a)?;
                }
                code::ORIGIN_HOST => {
                    once(seen, SEEN_ORIGIN_HOST)?;
                    self.read_origin_host(a)?;
                }
                code::ORIGIN_REALM => {
                    once(seen, SEEN_ORIGIN_REALM)?;
                    self.read_origin_realm(a)?;
                }
                code::DESTINATION_REALM => {
                    once(seen, SEEN_DESTINATION_REALM)?;
                    self.read_destination_realm(a)?;
                }
                code::AUTH_APPLICATION_ID => {
                    once(seen, SEEN_AUTH_APPLICATION_ID)?;
                    self.read_auth_application_id(a)?;
                }
                code::SERVICE_CONTEXT_ID => {
                    once(seen, SEEN_SERVICE_CONTEXT_ID)?;
                    self.read_service_context_id(a)?;
                }
                code::CC_REQUEST_TYPE => {
                    once(seen, SEEN_REQUEST_TYPE)?;
                    self.read_request_type(a)?;
                }
                code::CC_REQUEST_NUMBER => {
                    once(seen, SEEN_REQUEST_NUMBER)?;
                    self.read_request_number(a)?;
                }
                code::EVENT_TIMESTAMP => {
                    once(seen, SEEN_EVENT_TIMESTAMP)?;
                    self.event_timestamp = Some(u32_of(a, EVENT_TIMESTAMP)?);
                }
                code::SUBSCRIPTION_ID => {
                    // More than `limits::SUBSCRIPTION_ID_MAX`: the full decoder's 5009.
                    let s = self
                        .subscription_ids
                        .get_mut(usize::from(self.subscription_id_count))?;
                    self.subscription_id_count += 1;
                    *s = SubscriptionId::default();
                    subscription_id(s, data(a, SUBSCRIPTION_ID)?)?;
                }
                code::MSCC => {
                    // More than `limits::MSCC_MAX`: the full decoder's 5009.
                    let m = self.mscc.get_mut(usize::from(self.mscc_count))?;
                    self.mscc_count += 1;
                    *m = Mscc::default();
                    mscc(m, data(a, MSCC)?)?;
                }
                code::MSI => {
                    once(seen, SEEN_MSI)?;
                    self.multiple_services_indicator = enumerated(a, MSI, 0, 1)? == 1;
                }
                code::SERVICE_INFORMATION => {
                    once(seen, SEEN_SERVICE_INFORMATION)?;
                    self.service_information(data(a, SERVICE_INFORMATION)?)?;
                }
                code::DESTINATION_HOST => {
                    once(seen, SEEN_DESTINATION_HOST)?;
                    self.destination_host = Some(identity(a, DESTINATION_HOST)?);
                }
                code::USER_NAME => {
                    once(seen, SEEN_USER_NAME)?;
                    self.user_name = Some(text(a, USER_NAME)?);
                }
                code::REQUESTED_ACTION => {
                    once(seen, SEEN_REQUESTED_ACTION)?;
                    self.requested_action = Some(match enumerated(a, REQUESTED_ACTION, 0, 3)? {
                        0 => RequestedAction::DirectDebiting,
                        1 => RequestedAction::RefundAccount,
                        2 => RequestedAction::CheckBalance,
                        _ => RequestedAction::PriceEnquiry,
                    });
                }
                code::SERVICE_IDENTIFIER => {
                    once(seen, SEEN_SERVICE_IDENTIFIER)?;
                    self.service_identifier = Some(u32_of(a, SERVICE_IDENTIFIER)?);
                }
                code::TERMINATION_CAUSE => {
                    once(seen, SEEN_TERMINATION_CAUSE)?;
                    self.termination_cause = Some(enumerated(a, TERMINATION_CAUSE, 1, 8)?);
                }
                code::RSU => {
                    once(seen, SEEN_RSU)?;
                    units_into::<false>(a, &mut self.requested, &mut None)?;
                }
                code::USU if self.used.is_none() => {
                    units_into::<false>(a, &mut self.used, &mut None)?;
                }
                code::USU => return None,
                code::USER_EQUIPMENT_INFO => {
                    once(seen, SEEN_USER_EQUIPMENT_INFO)?;
                    self.user_equipment_info(data(a, USER_EQUIPMENT_INFO)?)?;
                }
                code::ORIGIN_STATE_ID => {
                    once(seen, SEEN_ORIGIN_STATE_ID)?;
                    checked(AvpId::OriginStateId.def(), data(a, ORIGIN_STATE_ID)?)?;
                }
                code::CC_SUB_SESSION_ID => {
                    once(seen, SEEN_CC_SUB_SESSION_ID)?;
                    checked(AvpId::CcSubSessionId.def(), data(a, CC_SUB_SESSION_ID)?)?;
                }
                code::ACCT_MULTI_SESSION_ID => {
                    once(seen, SEEN_ACCT_MULTI_SESSION_ID)?;
                    checked(
                        AvpId::AcctMultiSessionId.def(),
                        data(a, ACCT_MULTI_SESSION_ID)?,
                    )?;
                }
                code::CC_CORRELATION_ID => {
                    once(seen, SEEN_CC_CORRELATION_ID)?;
                    data(a, CC_CORRELATION_ID)?;
                }
                _ => other(a.bytes()?, true)?,
            }
        });
        Some(())
    }
}
