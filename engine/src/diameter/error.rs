//! Errors that the peer must be told: a Result-Code and what goes into Failed-AVP.
//! Closed, `Copy`, and free of allocation (rustls-style).

use super::avp::{AvpFramingError, ValueError};
use super::result_code as rc;

/// What the Failed-AVP of an error answer holds (RFC 6733 §7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailedAvp {
    /// No Failed-AVP (header-level errors).
    None,
    /// A copy of the well-framed AVP at `offset` of the request, `len` bytes (its AVP
    /// Length; padding is added when it is encoded).
    Copy { offset: u32, len: u32 },
    /// A badly framed AVP at `offset`: its header (zero-filled where the message ended)
    /// with the AVP Length rewritten to cover exactly the header and `data_len` bytes of
    /// data copied from the request (zero-filled past its end). RFC 6733 §7.1.5 for 5014:
    /// "the offending AVP header and a zero filled payload of the minimum required length",
    /// or a header "padded with zero up to the minimum AVP header length".
    Reframe {
        offset: u32,
        /// Header bytes that belong to the AVP's run; the rest of the header is zeros.
        header_avail: u32,
        data_len: u32,
    },
    /// A missing AVP: a zero-filled example of minimum length (RFC 6733 §7.1.5, 5005).
    Missing {
        code: u32,
        vendor_id: u32,
        data_len: u32,
    },
}

/// A request that gets an error answer: the Result-Code and the Failed-AVP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub result_code: u32,
    pub failed_avp: FailedAvp,
}

impl ProtocolError {
    pub const fn new(result_code: u32, failed_avp: FailedAvp) -> ProtocolError {
        ProtocolError {
            result_code,
            failed_avp,
        }
    }
    /// An error without Failed-AVP (header-level).
    pub const fn bare(result_code: u32) -> ProtocolError {
        ProtocolError {
            result_code,
            failed_avp: FailedAvp::None,
        }
    }
    /// The error names the AVP as it stands in the request.
    pub fn at(result_code: u32, avp: &super::Avp<'_>) -> ProtocolError {
        ProtocolError {
            result_code,
            failed_avp: FailedAvp::Copy {
                offset: avp.offset,
                len: avp.length,
            },
        }
    }
    /// A required AVP is missing.
    pub const fn missing(code: u32, vendor_id: u32, data_len: u32) -> ProtocolError {
        ProtocolError {
            result_code: rc::MISSING_AVP,
            failed_avp: FailedAvp::Missing {
                code,
                vendor_id,
                data_len,
            },
        }
    }
    /// A value that does not fit its type: 5014 for a wrong length, 5004 otherwise.
    pub fn value(e: ValueError, avp: &super::Avp<'_>) -> ProtocolError {
        let code = match e {
            ValueError::Length => rc::INVALID_AVP_LENGTH,
            ValueError::Value => rc::INVALID_AVP_VALUE,
        };
        ProtocolError::at(code, avp)
    }
    /// Whether the answer sets the E bit (protocol errors, RFC 6733 §7.1.3).
    pub fn is_protocol_error(&self) -> bool {
        rc::is_protocol_error(self.result_code)
    }
}

impl From<AvpFramingError> for ProtocolError {
    fn from(e: AvpFramingError) -> ProtocolError {
        let failed_avp = match e {
            AvpFramingError::TruncatedHeader { offset, available }
            | AvpFramingError::LengthBelowHeader { offset, available } => FailedAvp::Reframe {
                offset,
                header_avail: available.min(super::AVP_HEADER_LEN_VENDOR as u32),
                data_len: 0,
            },
            AvpFramingError::LengthPastEnd {
                offset,
                available_data,
            } => FailedAvp::Reframe {
                offset,
                header_avail: super::AVP_HEADER_LEN_VENDOR as u32,
                data_len: available_data,
            },
        };
        ProtocolError {
            result_code: rc::INVALID_AVP_LENGTH,
            failed_avp,
        }
    }
}
