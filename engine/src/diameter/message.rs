//! The Diameter message header and a borrowing view over one framed message.

use super::avp::AvpIter;
use super::{cmd_flags, HEADER_LEN};

/// The 20-byte message header (RFC 6733 §3), decoded by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    /// Message Length: header plus AVPs, in bytes (24 bits).
    pub length: u32,
    pub flags: u8,
    /// Command Code (24 bits).
    pub command: u32,
    pub application_id: u32,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Decodes the header from the first 20 bytes; `None` if fewer are given.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let w0 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let w1 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        Some(Header {
            version: (w0 >> 24) as u8,
            length: w0 & 0x00ff_ffff,
            flags: (w1 >> 24) as u8,
            command: w1 & 0x00ff_ffff,
            application_id: be32(b, 8),
            hop_by_hop: be32(b, 12),
            end_to_end: be32(b, 16),
        })
    }

    /// Encodes the header into 20 bytes.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&((u32::from(self.version) << 24) | self.length).to_be_bytes());
        out[4..8].copy_from_slice(&((u32::from(self.flags) << 24) | self.command).to_be_bytes());
        out[8..12].copy_from_slice(&self.application_id.to_be_bytes());
        out[12..16].copy_from_slice(&self.hop_by_hop.to_be_bytes());
        out[16..20].copy_from_slice(&self.end_to_end.to_be_bytes());
    }

    pub fn is_request(&self) -> bool {
        self.flags & cmd_flags::R != 0
    }
    pub fn is_proxiable(&self) -> bool {
        self.flags & cmd_flags::P != 0
    }
    pub fn is_error(&self) -> bool {
        self.flags & cmd_flags::E != 0
    }
    pub fn is_retransmit(&self) -> bool {
        self.flags & cmd_flags::T != 0
    }
}

/// A borrowing view over one whole message (header and AVPs), as cut by the framer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub header: Header,
    bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// Views `bytes` as one message. Only checks that the header is present and that the
    /// Message Length matches `bytes.len()` (the framer guarantees both); AVP contents are
    /// checked as they are walked.
    pub fn new(bytes: &'a [u8]) -> Option<Message<'a>> {
        let header = Header::decode(bytes)?;
        if header.length as usize != bytes.len() {
            return None;
        }
        Some(Message { header, bytes })
    }

    /// The whole message, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The top-level AVPs. Offsets reported by the iterator are from the message start.
    pub fn avps(&self) -> AvpIter<'a> {
        AvpIter::new(self.bytes, HEADER_LEN, self.bytes.len())
    }
}
