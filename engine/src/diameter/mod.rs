//! The Diameter codec: framing (`frame`), the borrowing decoder (`message`, `avp`), the
//! compiled dictionary (`dict`), validation into Result-Codes (`error`, `validate`), the
//! encoder into caller-owned buffers (`encode`) and the Credit-Control messages (`ccr`).
//!
//! Nothing here allocates: decoding borrows from the input, encoding writes into a slice
//! the caller owns, errors are small `Copy` values.

pub mod answer;
pub mod avp;
pub mod base;
pub mod ccr;
pub mod dict;
pub mod encode;
pub mod error;
pub mod frame;
pub mod message;
pub mod validate;

pub use avp::{Avp, AvpIter};
pub use encode::{EncodeError, Encoder};
pub use error::{FailedAvp, ProtocolError};
pub use frame::{FrameError, Framer};
pub use message::{Header, Message};

/// Diameter protocol version (RFC 6733 §3).
pub const VERSION: u8 = 1;
/// Size of the message header in bytes (RFC 6733 §3).
pub const HEADER_LEN: usize = 20;
/// Size of an AVP header without the Vendor-ID (RFC 6733 §4.1).
pub const AVP_HEADER_LEN: usize = 8;
/// Size of an AVP header with the Vendor-ID (RFC 6733 §4.1).
pub const AVP_HEADER_LEN_VENDOR: usize = 12;

/// Command flags (RFC 6733 §3).
pub mod cmd_flags {
    /// Request.
    pub const R: u8 = 0x80;
    /// Proxiable.
    pub const P: u8 = 0x40;
    /// Error (protocol error answer).
    pub const E: u8 = 0x20;
    /// Potentially retransmitted.
    pub const T: u8 = 0x10;
    /// Reserved bits; must be zero.
    pub const RESERVED: u8 = 0x0f;
}

/// AVP flags (RFC 6733 §4.1).
pub mod avp_flags {
    /// Vendor-Specific: a Vendor-ID follows the length.
    pub const V: u8 = 0x80;
    /// Mandatory.
    pub const M: u8 = 0x40;
    /// Protected (deprecated by RFC 6733, kept for decoding).
    pub const P: u8 = 0x20;
    /// Reserved bits.
    pub const RESERVED: u8 = 0x1f;
}

/// Command codes (RFC 6733 §3.1, RFC 8506 §3).
pub mod command {
    /// Capabilities-Exchange-Request / Answer.
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    /// Device-Watchdog-Request / Answer.
    pub const DEVICE_WATCHDOG: u32 = 280;
    /// Disconnect-Peer-Request / Answer.
    pub const DISCONNECT_PEER: u32 = 282;
    /// Credit-Control-Request / Answer (RFC 8506 §3.1).
    pub const CREDIT_CONTROL: u32 = 272;
}

/// Application identifiers (RFC 6733 §2.4, RFC 8506 §1.3).
pub mod application {
    /// Diameter common messages (base protocol).
    pub const COMMON: u32 = 0;
    /// Diameter Credit-Control Application.
    pub const CREDIT_CONTROL: u32 = 4;
    /// Relay (RFC 6733 §2.4).
    pub const RELAY: u32 = 0xffff_ffff;
}

/// 3GPP's IANA enterprise number, the Vendor-ID of TS 32.299 AVPs.
pub const VENDOR_3GPP: u32 = 10415;

/// Result-Code values (RFC 6733 §7.1, RFC 8506 §9).
pub mod result_code {
    pub const SUCCESS: u32 = 2001;
    pub const LIMITED_SUCCESS: u32 = 2002;
    // Protocol errors: answered with the E bit set (RFC 6733 §7.1.3).
    pub const COMMAND_UNSUPPORTED: u32 = 3001;
    pub const UNABLE_TO_DELIVER: u32 = 3002;
    pub const REALM_NOT_SERVED: u32 = 3003;
    pub const TOO_BUSY: u32 = 3004;
    pub const LOOP_DETECTED: u32 = 3005;
    pub const REDIRECT_INDICATION: u32 = 3006;
    pub const APPLICATION_UNSUPPORTED: u32 = 3007;
    pub const INVALID_HDR_BITS: u32 = 3008;
    pub const INVALID_AVP_BITS: u32 = 3009;
    pub const UNKNOWN_PEER: u32 = 3010;
    // Transient failures (RFC 6733 §7.1.4, RFC 8506 §9.1).
    pub const AUTHENTICATION_REJECTED: u32 = 4001;
    pub const OUT_OF_SPACE: u32 = 4002;
    pub const ELECTION_LOST: u32 = 4003;
    pub const END_USER_SERVICE_DENIED: u32 = 4010;
    pub const CREDIT_CONTROL_NOT_APPLICABLE: u32 = 4011;
    pub const CREDIT_LIMIT_REACHED: u32 = 4012;
    // Permanent failures (RFC 6733 §7.1.5, RFC 8506 §9.1).
    pub const AVP_UNSUPPORTED: u32 = 5001;
    pub const UNKNOWN_SESSION_ID: u32 = 5002;
    pub const AUTHORIZATION_REJECTED: u32 = 5003;
    pub const INVALID_AVP_VALUE: u32 = 5004;
    pub const MISSING_AVP: u32 = 5005;
    pub const RESOURCES_EXCEEDED: u32 = 5006;
    pub const CONTRADICTING_AVPS: u32 = 5007;
    pub const AVP_NOT_ALLOWED: u32 = 5008;
    pub const AVP_OCCURS_TOO_MANY_TIMES: u32 = 5009;
    pub const NO_COMMON_APPLICATION: u32 = 5010;
    pub const UNSUPPORTED_VERSION: u32 = 5011;
    pub const UNABLE_TO_COMPLY: u32 = 5012;
    pub const INVALID_BIT_IN_HEADER: u32 = 5013;
    pub const INVALID_AVP_LENGTH: u32 = 5014;
    pub const INVALID_MESSAGE_LENGTH: u32 = 5015;
    pub const INVALID_AVP_BIT_COMBO: u32 = 5016;
    pub const NO_COMMON_SECURITY: u32 = 5017;
    pub const USER_UNKNOWN: u32 = 5030;
    pub const RATING_FAILED: u32 = 5031;

    /// Protocol errors (3xxx) are answered with the E bit set (RFC 6733 §7.2).
    pub const fn is_protocol_error(code: u32) -> bool {
        code >= 3000 && code < 4000
    }
}

/// Limits of the codec. Every one has a defined answer when it is reached.
pub mod limits {
    /// Deepest nesting of Grouped AVPs that is walked; deeper is answered 5004 with
    /// Failed-AVP holding the AVP that crossed the limit (CONFORMANCE row 22).
    pub const GROUP_DEPTH_MAX: usize = 8;
    /// Default largest message accepted by the framer (configurable per connection).
    pub const MESSAGE_SIZE_DEFAULT_MAX: u32 = 64 * 1024;
    /// Longest DiameterIdentity: a DNS name (RFC 1035 §2.3.4).
    pub const IDENTITY_SIZE_MAX: usize = 255;
    /// Longest Session-Id accepted; longer is answered 5004. A Session-Id is copied once
    /// into a fixed slot when a request crosses shards, so it must be bounded.
    pub const SESSION_ID_SIZE_MAX: usize = 256;
    /// Most MSCC in one CCR (each becomes a fixed slot); more is answered 5009.
    pub const MSCC_MAX: usize = 8;
    /// Most Subscription-Id AVPs in one CCR; more is answered 5009.
    pub const SUBSCRIPTION_ID_MAX: usize = 4;
}
