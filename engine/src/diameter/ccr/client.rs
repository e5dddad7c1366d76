//! The client's side of the request: `encode_ccr` writes a CCR from its decoded form.

use super::super::avp::Address;
use super::super::dict::AvpId;
use super::super::encode::{EncodeError, Encoder};
use super::super::message::Header;
use super::super::{application, cmd_flags};
use super::{Ccr, ImsInformation, PsInformation, SmsInformation};

/// Encodes a CCR from its decoded form (the load generator and tests use it; decoding
/// the result gives back an equal `Ccr`).
pub fn encode_ccr(c: &Ccr<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let h = Header {
        version: super::super::VERSION,
        length: 0,
        flags: cmd_flags::R | (c.header.flags & (cmd_flags::P | cmd_flags::T)),
        command: super::super::command::CREDIT_CONTROL,
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

fn encode_address(e: &mut Encoder<'_>, id: AvpId, a: &Address<'_>) {
    match a {
        Address::V4(v) => e.ipv4(id, *v),
        Address::V6(v) => e.ipv6(id, *v),
        Address::E164(digits) => {
            let mut b = [0u8; 2 + 64];
            let n = digits.len().min(64);
            b[1] = super::super::avp::address_family::E164 as u8;
            b[2..2 + n].copy_from_slice(&digits[..n]);
            e.bytes(id, &b[..2 + n]);
        }
    }
}
