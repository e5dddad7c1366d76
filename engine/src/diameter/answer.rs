//! Error answers (RFC 6733 §7.2 and §7.5): protocol errors (3xxx) as an answer-message
//! with the E bit set; permanent failures (5xxx) as the command's own answer with the
//! Result-Code, Failed-AVP and, for a CCR, the AVPs that RFC 8506 §3.2 requires of a CCA.

use super::avp::AvpIter;
use super::dict::{self, AvpId};
use super::encode::{EncodeError, Encoder};
use super::error::{FailedAvp, ProtocolError};
use super::message::Header;
use super::{avp_flags, cmd_flags, command, AVP_HEADER_LEN, AVP_HEADER_LEN_VENDOR, HEADER_LEN};

/// Who answers: the local Origin-Host and Origin-Realm.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub host: &'a str,
    pub realm: &'a str,
}

/// Encodes the answer to the request `req` (whole message bytes; its header must be
/// readable) for `err`. Works on requests that failed validation, so it reads the
/// request defensively: only well-framed top-level AVPs before the first framing error
/// are looked at, and only copied when their values are valid.
pub fn encode_error_answer(
    req: &[u8],
    err: &ProtocolError,
    origin: &Origin<'_>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let Some(rh) = Header::decode(req) else {
        return Err(EncodeError::BufferFull);
    };
    let protocol = err.is_protocol_error();
    let mut flags = rh.flags & cmd_flags::P;
    if protocol {
        flags |= cmd_flags::E;
    }
    let h = Header {
        version: super::VERSION,
        length: 0,
        flags,
        command: rh.command,
        application_id: rh.application_id,
        hop_by_hop: rh.hop_by_hop,
        end_to_end: rh.end_to_end,
    };
    // Only the whole message is walked (a header-level error may come with a length that
    // does not match the bytes given).
    let end = (rh.length as usize).min(req.len());
    let end = if end >= HEADER_LEN {
        end
    } else {
        HEADER_LEN.min(req.len())
    };
    let mut session_id: Option<&[u8]> = None;
    let mut request_type: Option<u32> = None;
    let mut request_number: Option<u32> = None;
    if req.len() >= HEADER_LEN && rh.version == super::VERSION {
        for avp in AvpIter::new(req, HEADER_LEN, end) {
            let Ok(avp) = avp else { break };
            match (avp.code, avp.vendor_id) {
                (263, 0) if session_id.is_none() => {
                    if let Ok(s) = avp.utf8() {
                        if !s.is_empty() && s.len() <= super::limits::SESSION_ID_SIZE_MAX {
                            session_id = Some(s.as_bytes());
                        }
                    }
                }
                (416, 0) if request_type.is_none() => {
                    request_type = avp.u32().ok().filter(|v| (1..=4).contains(v));
                }
                (415, 0) if request_number.is_none() => request_number = avp.u32().ok(),
                _ => {}
            }
        }
    }

    let mut e = Encoder::new(buf, &h);
    if let Some(s) = session_id {
        e.bytes(AvpId::SessionId, s);
    }
    e.str(AvpId::OriginHost, origin.host);
    e.str(AvpId::OriginRealm, origin.realm);
    e.u32(AvpId::ResultCode, err.result_code);
    if !protocol && rh.command == command::CREDIT_CONTROL {
        e.u32(AvpId::AuthApplicationId, super::application::CREDIT_CONTROL);
        if let Some(t) = request_type {
            e.u32(AvpId::CcRequestType, t);
        }
        if let Some(n) = request_number {
            e.u32(AvpId::CcRequestNumber, n);
        }
    }
    encode_failed_avp(&mut e, req, &err.failed_avp);
    e.finish()
}

/// Writes the Failed-AVP for `failed` (nothing for `FailedAvp::None`).
pub fn encode_failed_avp(e: &mut Encoder<'_>, req: &[u8], failed: &FailedAvp) {
    match *failed {
        FailedAvp::None => {}
        FailedAvp::Copy { offset, len } => {
            let (start, end) = (offset as usize, offset as usize + len as usize);
            let Some(bytes) = req.get(start..end) else {
                return;
            };
            let g = e.begin_group(AvpId::FailedAvp);
            e.raw_avps(bytes);
            e.zeros(((len as usize + 3) & !3) - len as usize);
            e.end_group(g);
        }
        FailedAvp::Reframe {
            offset,
            header_avail,
            data_len,
        } => {
            let at = offset as usize;
            // Header bytes beyond the AVP's run (or the message) are zeros.
            let byte = |i: usize| {
                if i < header_avail as usize {
                    req.get(at + i).copied().unwrap_or(0)
                } else {
                    0
                }
            };
            let code = u32::from_be_bytes([byte(0), byte(1), byte(2), byte(3)]);
            let flags = byte(4);
            let vendor = u32::from_be_bytes([byte(8), byte(9), byte(10), byte(11)]);
            let vendor_specific = flags & avp_flags::V != 0;
            let header_len = if vendor_specific {
                AVP_HEADER_LEN_VENDOR
            } else {
                AVP_HEADER_LEN
            };
            let data_len = data_len as usize;
            let g = e.begin_group(AvpId::FailedAvp);
            let inner = e.begin_group_raw(code, flags, if vendor_specific { vendor } else { 0 });
            let data_start = at + header_len;
            let avail = req.len().saturating_sub(data_start).min(data_len);
            if avail > 0 {
                e.raw_avps(&req[data_start..data_start + avail]);
            }
            let padded = (data_len + 3) & !3;
            e.zeros(padded - avail);
            e.end_group(inner);
            // The member's AVP Length covers its data, not the padding after it.
            inner_length_patch(e, header_len + data_len, header_len + padded);
            e.end_group(g);
        }
        FailedAvp::Missing {
            code,
            vendor_id,
            data_len,
        } => {
            let flags = dict::lookup(code, vendor_id).map_or(avp_flags::M, |d| d.flags());
            let g = e.begin_group(AvpId::FailedAvp);
            let inner = e.begin_group_raw(code, flags, vendor_id);
            let data_len = data_len as usize;
            e.zeros((data_len + 3) & !3);
            e.end_group(inner);
            let header_len = if vendor_id != 0 {
                AVP_HEADER_LEN_VENDOR
            } else {
                AVP_HEADER_LEN
            };
            inner_length_patch(e, header_len + data_len, header_len + ((data_len + 3) & !3));
            e.end_group(g);
        }
    }
}

/// `end_group` set the last member's length to include its padding; rewrite it to the
/// unpadded length. The member starts `padded_len` bytes before the end.
fn inner_length_patch(e: &mut Encoder<'_>, unpadded_len: usize, padded_len: usize) -> Option<()> {
    let w = e.written_mut();
    let start = w.len().checked_sub(padded_len)?;
    let len = (unpadded_len as u32).to_be_bytes();
    w.get_mut(start + 5..start + 8)?.copy_from_slice(&len[1..]);
    Some(())
}
