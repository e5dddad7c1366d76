//! Framing a TCP byte stream into Diameter messages.
//!
//! The framer is stateless: give it the unconsumed bytes, it says how long the first
//! message is, that it needs more, or that the stream can no longer be trusted. It never
//! sizes anything from a length field: the caller's read buffer is fixed at
//! `message_size_max` and a message that would not fit closes the connection.

use super::HEADER_LEN;

/// Why a stream cannot be framed. Each one closes the connection (CONFORMANCE rows 2, 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Message Length below the 20-byte header: the next message cannot be found.
    LengthBelowHeader { length: u32 },
    /// Message Length above the configured maximum: discarded without buffering.
    LengthAboveMax { length: u32, max: u32 },
}

/// Cuts messages out of a byte stream.
#[derive(Clone, Copy, Debug)]
pub struct Framer {
    message_size_max: u32,
}

/// What the framer found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes is at the start of the buffer.
    Message(usize),
    /// More bytes are needed; `length` is the Message Length once the first 4 bytes are in.
    Partial { length: Option<u32> },
}

impl Framer {
    /// `message_size_max` is clamped to at least the header size.
    pub fn new(message_size_max: u32) -> Framer {
        Framer {
            message_size_max: message_size_max.max(HEADER_LEN as u32),
        }
    }

    pub fn message_size_max(&self) -> u32 {
        self.message_size_max
    }

    /// Looks at the unconsumed bytes of the stream.
    #[inline]
    pub fn frame(&self, buf: &[u8]) -> Result<Frame, FrameError> {
        let Some(first) = buf.get(..4) else {
            return Ok(Frame::Partial { length: None });
        };
        let length = u32::from_be_bytes([0, first[1], first[2], first[3]]);
        if length < HEADER_LEN as u32 {
            return Err(FrameError::LengthBelowHeader { length });
        }
        if length > self.message_size_max {
            return Err(FrameError::LengthAboveMax {
                length,
                max: self.message_size_max,
            });
        }
        if buf.len() < length as usize {
            return Ok(Frame::Partial {
                length: Some(length),
            });
        }
        Ok(Frame::Message(length as usize))
    }
}
