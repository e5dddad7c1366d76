//! AVPs by borrowing: a view over one AVP inside a message, an iterator over a run of
//! AVPs, and typed accessors for the data formats of RFC 6733 §4.2–4.3.
//!
//! Offsets are always from the start of the message, so an error can name the bytes of
//! the offending AVP for Failed-AVP without copying anything.
//!
//! `AvpIter` is gyro's AVP framer: validation (`validate`), the base protocol, the full
//! CCR decoder (`ccr/decode.rs`) and the shard core's routing all walk AVPs through
//! it. The one other framer is the CCR fast path (`ccr/fast.rs`), which frames each AVP
//! once with its padding for the common request shapes; its module documentation says
//! what that measures end to end.

use super::{avp_flags, AVP_HEADER_LEN, AVP_HEADER_LEN_VENDOR};

/// One AVP, borrowed from the message that holds it.
#[derive(Clone, Copy, Debug)]
pub struct Avp<'a> {
    msg: &'a [u8],
    data: &'a [u8],
    pub code: u32,
    pub flags: u8,
    /// 0 when the V bit is clear.
    pub vendor_id: u32,
    /// Offset of the AVP header from the start of the message.
    pub offset: u32,
    /// The AVP Length field: header and data, without padding.
    pub length: u32,
    header_len: u8,
}

/// How an AVP can be badly framed. All are answered 5014 (RFC 6733 §7.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AvpFramingError {
    /// Fewer bytes remain in the run (`available`) than an AVP header needs.
    TruncatedHeader { offset: u32, available: u32 },
    /// AVP Length smaller than its header (including V set with a length of 8 to 11);
    /// `available` bytes remain in the run from `offset`.
    LengthBelowHeader { offset: u32, available: u32 },
    /// AVP Length runs past the end of the enclosing message or Grouped AVP.
    LengthPastEnd { offset: u32, available_data: u32 },
}

impl AvpFramingError {
    pub fn offset(&self) -> u32 {
        match *self {
            AvpFramingError::TruncatedHeader { offset, .. }
            | AvpFramingError::LengthBelowHeader { offset, .. }
            | AvpFramingError::LengthPastEnd { offset, .. } => offset,
        }
    }
}

/// A value that does not fit its data format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// The length does not suit the type (answered 5014).
    Length,
    /// The bytes are not a valid value of the type (answered 5004).
    Value,
}

/// An address (RFC 6733 §4.3.1): the families a Gy peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address<'a> {
    V4([u8; 4]),
    V6([u8; 16]),
    /// E.164 number in ASCII digits (address family 8).
    E164(&'a [u8]),
}

/// Address family numbers (IANA "Address Family Numbers").
pub mod address_family {
    pub const IPV4: u16 = 1;
    pub const IPV6: u16 = 2;
    pub const E164: u16 = 8;
}

impl<'a> Avp<'a> {
    /// The AVP's value, without header and padding.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The whole AVP as it stands in the message, header included, padding excluded.
    pub fn raw(&self) -> &'a [u8] {
        &self.msg[self.offset as usize..(self.offset + self.length) as usize]
    }

    pub fn is_mandatory(&self) -> bool {
        self.flags & avp_flags::M != 0
    }
    pub fn is_vendor_specific(&self) -> bool {
        self.flags & avp_flags::V != 0
    }

    /// The AVPs inside a Grouped AVP.
    #[inline]
    pub fn group(&self) -> AvpIter<'a> {
        let start = self.offset as usize + self.header_len as usize;
        AvpIter::new(self.msg, start, self.offset as usize + self.length as usize)
    }

    #[inline]
    pub fn u32(&self) -> Result<u32, ValueError> {
        let d = self.data();
        match d.try_into() {
            Ok(b) => Ok(u32::from_be_bytes(b)),
            Err(_) => Err(ValueError::Length),
        }
    }
    #[inline]
    pub fn u64(&self) -> Result<u64, ValueError> {
        let d = self.data();
        match d.try_into() {
            Ok(b) => Ok(u64::from_be_bytes(b)),
            Err(_) => Err(ValueError::Length),
        }
    }
    pub fn i32(&self) -> Result<i32, ValueError> {
        self.u32().map(|v| v as i32)
    }
    pub fn i64(&self) -> Result<i64, ValueError> {
        self.u64().map(|v| v as i64)
    }
    pub fn f32(&self) -> Result<f32, ValueError> {
        self.u32().map(f32::from_bits)
    }
    pub fn f64(&self) -> Result<f64, ValueError> {
        self.u64().map(f64::from_bits)
    }
    /// Time: seconds since 1900-01-01 00:00 UTC (NTP era 0, RFC 6733 §4.3.1).
    pub fn time(&self) -> Result<u32, ValueError> {
        self.u32()
    }
    /// Enumerated is carried as Integer32.
    pub fn enumerated(&self) -> Result<i32, ValueError> {
        self.i32()
    }
    pub fn octets(&self) -> &'a [u8] {
        self.data()
    }
    pub fn utf8(&self) -> Result<&'a str, ValueError> {
        utf8(self.data)
    }
    /// DiameterIdentity: a non-empty FQDN or realm of at most 255 bytes.
    pub fn identity(&self) -> Result<&'a str, ValueError> {
        let s = self.utf8()?;
        if s.is_empty() || s.len() > super::limits::IDENTITY_SIZE_MAX {
            return Err(ValueError::Value);
        }
        Ok(s)
    }
    /// DiameterURI: `aaa://` or `aaas://` followed by an identity (RFC 6733 §4.3.1).
    pub fn uri(&self) -> Result<&'a str, ValueError> {
        let s = self.utf8()?;
        if s.starts_with("aaa://") || s.starts_with("aaas://") {
            Ok(s)
        } else {
            Err(ValueError::Value)
        }
    }
    pub fn address(&self) -> Result<Address<'a>, ValueError> {
        decode_address(self.data())
    }
}

/// Whether every byte is ASCII: word at a time, with overlapping reads for the tail,
/// which suits the short strings of Diameter (identities, Session-Ids, APNs): 8 to 16
/// bytes take two reads, 17 to 32 four, and no loop.
#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |i: usize| u64::from_ne_bytes(*b[i..].first_chunk::<8>().unwrap_or(&[0xff; 8]));
    let n = b.len();
    if n >= 8 {
        let mut acc = word(0) | word(n - 8);
        if n > 16 {
            acc |= word(8) | word(n - 16);
            let mut i = 16;
            while i + 16 < n {
                acc |= word(i);
                i += 8;
            }
        }
        acc & HIGH == 0
    } else if n >= 4 {
        let a = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let z = u32::from_ne_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        (a | z) & 0x8080_8080 == 0
    } else {
        b.iter().all(|&c| c < 0x80)
    }
}

/// Validates UTF-8 (RFC 6733 §4.3.1 UTF8String), with a fast path for ASCII, which is
/// what Diameter peers send almost always.
#[inline(always)]
#[allow(unsafe_code)]
pub fn utf8(b: &[u8]) -> Result<&str, ValueError> {
    if is_ascii(b) {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked(b) })
    } else {
        core::str::from_utf8(b).map_err(|_| ValueError::Value)
    }
}

/// Decodes an Address value: family (2 bytes) then the address.
pub fn decode_address(d: &[u8]) -> Result<Address<'_>, ValueError> {
    if d.len() < 2 {
        return Err(ValueError::Value);
    }
    let family = u16::from_be_bytes([d[0], d[1]]);
    let a = &d[2..];
    match family {
        address_family::IPV4 => a.try_into().map(Address::V4).map_err(|_| ValueError::Value),
        address_family::IPV6 => a.try_into().map(Address::V6).map_err(|_| ValueError::Value),
        address_family::E164 if !a.is_empty() && a.iter().all(u8::is_ascii_digit) => {
            Ok(Address::E164(a))
        }
        _ => Err(ValueError::Value),
    }
}

/// Iterates the AVPs in `msg[start..end]`. Stops after the first framing error.
#[derive(Clone, Debug)]
pub struct AvpIter<'a> {
    msg: &'a [u8],
    pos: u32,
    end: u32,
}

impl<'a> AvpIter<'a> {
    /// `end` must not exceed `msg.len()`; messages are bounded far below 4 GiB.
    pub fn new(msg: &'a [u8], start: usize, end: usize) -> AvpIter<'a> {
        debug_assert!(start <= end && end <= msg.len());
        AvpIter {
            msg,
            pos: start as u32,
            end: end as u32,
        }
    }

    /// An iterator that yields nothing.
    pub fn empty(msg: &'a [u8]) -> AvpIter<'a> {
        AvpIter {
            msg,
            pos: 0,
            end: 0,
        }
    }

    /// (end of the run, next position): to resume the run after a nested one.
    pub fn bounds(&self) -> (u32, u32) {
        (self.end, self.pos)
    }

    /// Bytes not yet walked.
    pub fn remaining(&self) -> u32 {
        self.end - self.pos
    }
}

impl<'a> Iterator for AvpIter<'a> {
    type Item = Result<Avp<'a>, AvpFramingError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.pos;
        let left = self.end - offset;
        if left == 0 {
            return None;
        }
        let at = offset as usize;
        // The run may end before the message does (a Grouped AVP's data): what is left
        // of the run, not of the message, must hold the header.
        let h = match self.msg.get(at..at + AVP_HEADER_LEN) {
            Some(h) if left >= AVP_HEADER_LEN as u32 => h,
            _ => {
                self.pos = self.end;
                return Some(Err(AvpFramingError::TruncatedHeader {
                    offset,
                    available: left,
                }));
            }
        };
        let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let flags = h[4];
        let length = u32::from_be_bytes([0, h[5], h[6], h[7]]);
        let (header_len, vendor_id) = if flags & avp_flags::V == 0 {
            if length < AVP_HEADER_LEN as u32 {
                self.pos = self.end;
                return Some(Err(AvpFramingError::LengthBelowHeader {
                    offset,
                    available: left,
                }));
            }
            (AVP_HEADER_LEN as u32, 0)
        } else {
            if length < AVP_HEADER_LEN_VENDOR as u32 {
                self.pos = self.end;
                return Some(Err(AvpFramingError::LengthBelowHeader {
                    offset,
                    available: left,
                }));
            }
            match self.msg.get(at + 8..at + 12) {
                Some(v) if left >= AVP_HEADER_LEN_VENDOR as u32 => (
                    AVP_HEADER_LEN_VENDOR as u32,
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                ),
                _ => {
                    self.pos = self.end;
                    return Some(Err(AvpFramingError::TruncatedHeader {
                        offset,
                        available: left,
                    }));
                }
            }
        };
        if length > left {
            self.pos = self.end;
            return Some(Err(AvpFramingError::LengthPastEnd {
                offset,
                available_data: left - header_len,
            }));
        }
        let Some(data) = self.msg.get(at + header_len as usize..at + length as usize) else {
            // Unreachable: length <= left and end <= msg.len().
            self.pos = self.end;
            return Some(Err(AvpFramingError::LengthPastEnd {
                offset,
                available_data: 0,
            }));
        };
        // Padding to a multiple of 4 follows; a last AVP that lacks it inside a Grouped
        // AVP is tolerated (the message-level rule is enforced by the framer: 5015).
        let padded = (length + 3) & !3;
        self.pos = if padded > left {
            self.end
        } else {
            offset + padded
        };
        Some(Ok(Avp {
            msg: self.msg,
            data,
            code,
            flags,
            vendor_id,
            offset,
            length,
            header_len: header_len as u8,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run (a Grouped AVP's data) ending in fewer bytes than a header is a truncated
    /// header, even when the message goes on after the run.
    #[test]
    fn a_run_shorter_than_a_header_is_truncated_whatever_follows_it() {
        // 4 bytes of run, then 12 bytes that belong to the next AVP of the message.
        let msg = [0, 0, 1, 2, 0x40, 0, 0, 0x0c, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut it = AvpIter::new(&msg, 0, 4);
        assert_eq!(
            it.next().map(|r| r.err()),
            Some(Some(AvpFramingError::TruncatedHeader {
                offset: 0,
                available: 4
            }))
        );
        assert!(it.next().is_none());
    }

    /// The word-at-a-time ASCII check agrees with the byte-wise one for every length up
    /// to 80 and a high byte at every position.
    #[test]
    fn ascii_check_matches_bytewise_at_every_length_and_position() {
        for n in 0..80 {
            let clean = vec![b'a'; n];
            assert!(is_ascii(&clean));
            for at in 0..n {
                let mut b = clean.clone();
                b[at] = 0x80 | (at as u8);
                assert!(!is_ascii(&b), "len {n}, high byte at {at}");
                assert_eq!(utf8(&b).is_ok(), core::str::from_utf8(&b).is_ok());
            }
        }
    }
}
