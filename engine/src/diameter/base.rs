//! The base-protocol messages the peer state machine sends and reads: CER/CEA,
//! DWR/DWA, DPR/DPA (RFC 6733 §5.3–5.5).

use core::net::IpAddr;

use super::answer::encode_failed_avp;
use super::dict::{self, AvpId};
use super::encode::{EncodeError, Encoder};
use super::error::ProtocolError;
use super::message::{Header, Message};
use super::validate::{self, walk};
use super::{application, cmd_flags, command, VENDOR_3GPP};

/// What gyro says about itself in CER/CEA (RFC 6733 §5.3).
#[derive(Clone, Copy, Debug)]
pub struct LocalIdentity<'a> {
    pub origin_host: &'a str,
    pub origin_realm: &'a str,
    pub host_ip_addresses: &'a [IpAddr],
    pub vendor_id: u32,
    pub product_name: &'a str,
    pub firmware_revision: u32,
    pub origin_state_id: u32,
}

fn header(cmd: u32, request: bool, hop_by_hop: u32, end_to_end: u32) -> Header {
    Header {
        version: super::VERSION,
        length: 0,
        flags: if request { cmd_flags::R } else { 0 },
        command: cmd,
        application_id: application::COMMON,
        hop_by_hop,
        end_to_end,
    }
}

fn answer_header(cmd: u32, req: &Header, result_code: u32) -> Header {
    let mut h = header(cmd, false, req.hop_by_hop, req.end_to_end);
    if super::result_code::is_protocol_error(result_code) {
        h.flags |= cmd_flags::E;
    }
    h
}

/// Origin-Host and Origin-Realm, which every base message carries.
fn origin(e: &mut Encoder<'_>, id: &LocalIdentity<'_>) {
    e.str(AvpId::OriginHost, id.origin_host);
    e.str(AvpId::OriginRealm, id.origin_realm);
}

fn capabilities(e: &mut Encoder<'_>, id: &LocalIdentity<'_>) {
    origin(e, id);
    for ip in id.host_ip_addresses {
        match ip {
            IpAddr::V4(a) => e.ipv4(AvpId::HostIpAddress, a.octets()),
            IpAddr::V6(a) => e.ipv6(AvpId::HostIpAddress, a.octets()),
        }
    }
    e.u32(AvpId::VendorId, id.vendor_id);
    e.str(AvpId::ProductName, id.product_name);
    e.u32(AvpId::OriginStateId, id.origin_state_id);
    e.u32(AvpId::SupportedVendorId, VENDOR_3GPP);
    e.u32(AvpId::AuthApplicationId, application::CREDIT_CONTROL);
    let g = e.begin_group(AvpId::VendorSpecificApplicationId);
    e.u32(AvpId::VendorId, VENDOR_3GPP);
    e.u32(AvpId::AuthApplicationId, application::CREDIT_CONTROL);
    e.end_group(g);
    e.u32(AvpId::FirmwareRevision, id.firmware_revision);
}

/// CER: gyro as the initiator.
pub fn encode_cer(
    id: &LocalIdentity<'_>,
    hop_by_hop: u32,
    end_to_end: u32,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &header(command::CAPABILITIES_EXCHANGE, true, hop_by_hop, end_to_end),
    );
    capabilities(&mut e, id);
    e.finish()
}

/// CEA answering `req`. With a result other than 2001 the capabilities are still sent
/// (the CEA grammar requires them) and `failed` may name the offending AVP of `req_bytes`.
pub fn encode_cea(
    id: &LocalIdentity<'_>,
    req: &Header,
    result_code: u32,
    failed: Option<(&[u8], &ProtocolError)>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &answer_header(command::CAPABILITIES_EXCHANGE, req, result_code),
    );
    e.u32(AvpId::ResultCode, result_code);
    capabilities(&mut e, id);
    if let Some((req_bytes, err)) = failed {
        encode_failed_avp(&mut e, req_bytes, &err.failed_avp);
    }
    e.finish()
}

/// DWR.
pub fn encode_dwr(
    id: &LocalIdentity<'_>,
    hop_by_hop: u32,
    end_to_end: u32,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &header(command::DEVICE_WATCHDOG, true, hop_by_hop, end_to_end),
    );
    origin(&mut e, id);
    e.u32(AvpId::OriginStateId, id.origin_state_id);
    e.finish()
}

/// DWA answering `req`.
pub fn encode_dwa(
    id: &LocalIdentity<'_>,
    req: &Header,
    result_code: u32,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &answer_header(command::DEVICE_WATCHDOG, req, result_code),
    );
    e.u32(AvpId::ResultCode, result_code);
    origin(&mut e, id);
    e.u32(AvpId::OriginStateId, id.origin_state_id);
    e.finish()
}

/// Disconnect-Cause (RFC 6733 §5.4.3).
pub mod disconnect_cause {
    pub const REBOOTING: u32 = 0;
    pub const BUSY: u32 = 1;
    pub const DO_NOT_WANT_TO_TALK_TO_YOU: u32 = 2;
}

/// DPR.
pub fn encode_dpr(
    id: &LocalIdentity<'_>,
    cause: u32,
    hop_by_hop: u32,
    end_to_end: u32,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &header(command::DISCONNECT_PEER, true, hop_by_hop, end_to_end),
    );
    origin(&mut e, id);
    e.u32(AvpId::DisconnectCause, cause);
    e.finish()
}

/// DPA answering `req`.
pub fn encode_dpa(
    id: &LocalIdentity<'_>,
    req: &Header,
    result_code: u32,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(
        buf,
        &answer_header(command::DISCONNECT_PEER, req, result_code),
    );
    e.u32(AvpId::ResultCode, result_code);
    origin(&mut e, id);
    e.finish()
}

/// What a CER or CEA says about the remote peer.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities<'a> {
    pub origin_host: &'a str,
    pub origin_realm: &'a str,
    /// CEA only.
    pub result_code: Option<u32>,
    pub product_name: &'a str,
    pub origin_state_id: Option<u32>,
    /// Auth-Application-Id 4 advertised, directly or in Vendor-Specific-Application-Id.
    pub credit_control: bool,
    /// The relay application (0xffffffff) advertised.
    pub relay: bool,
    pub supports_3gpp: bool,
}

impl Capabilities<'_> {
    /// Whether gyro and the peer share an application (RFC 6733 §5.3: else 5010).
    pub fn has_common_application(&self) -> bool {
        self.credit_control || self.relay
    }
}

/// Validates a CER or CEA against its grammar and reads the capabilities.
pub fn decode_capabilities<'a>(msg: &Message<'a>) -> Result<Capabilities<'a>, ProtocolError> {
    let cmd = if msg.header.is_request() {
        &dict::CER
    } else {
        &dict::CEA
    };
    validate::validate(msg, cmd)?;
    let mut c = Capabilities {
        origin_host: "",
        origin_realm: "",
        result_code: None,
        product_name: "",
        origin_state_id: None,
        credit_control: false,
        relay: false,
        supports_3gpp: false,
    };
    walk(msg.avps(), |v| {
        let Some(def) = v.def else { return Ok(()) };
        let a = &v.avp;
        match (def.id, v.parent) {
            (AvpId::OriginHost, None) => c.origin_host = a.utf8().unwrap_or(""),
            (AvpId::OriginRealm, None) => c.origin_realm = a.utf8().unwrap_or(""),
            (AvpId::ResultCode, None) => c.result_code = a.u32().ok(),
            (AvpId::ProductName, None) => c.product_name = a.utf8().unwrap_or(""),
            (AvpId::OriginStateId, None) => c.origin_state_id = a.u32().ok(),
            (AvpId::SupportedVendorId, None) => c.supports_3gpp |= a.u32() == Ok(VENDOR_3GPP),
            (
                AvpId::AuthApplicationId | AvpId::AcctApplicationId,
                None | Some(AvpId::VendorSpecificApplicationId),
            ) => match a.u32() {
                Ok(application::CREDIT_CONTROL) if def.id == AvpId::AuthApplicationId => {
                    c.credit_control = true
                }
                Ok(application::RELAY) => c.relay = true,
                _ => {}
            },
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

/// Reads the Result-Code of an answer (DWA, DPA), validating it against its grammar.
pub fn decode_result_code(
    msg: &Message<'_>,
    cmd: &'static dict::CommandDef,
) -> Result<u32, ProtocolError> {
    validate::validate(msg, cmd)?;
    let mut result = 0;
    for a in msg.avps().flatten() {
        if a.code == 268 && a.vendor_id == 0 {
            result = a.u32().unwrap_or(0);
        }
    }
    Ok(result)
}

/// Reads the Disconnect-Cause of a validated DPR.
pub fn decode_disconnect_cause(msg: &Message<'_>) -> Result<u32, ProtocolError> {
    validate::validate(msg, &dict::DPR)?;
    let mut cause = 0;
    for a in msg.avps().flatten() {
        if a.code == 273 && a.vendor_id == 0 {
            cause = a.u32().unwrap_or(0);
        }
    }
    Ok(cause)
}
