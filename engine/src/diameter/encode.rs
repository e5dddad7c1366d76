//! The encoder: writes a message into a buffer the caller owns. AVP lengths and the
//! message length are back-patched, padding is zeroed, V/M flags come from the
//! dictionary. It never allocates; running out of room is reported once, at `finish`.

use super::avp_flags;
use super::dict::AvpId;
use super::message::Header;
use super::{AVP_HEADER_LEN, AVP_HEADER_LEN_VENDOR, HEADER_LEN};

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is too small for the message.
    BufferFull,
    /// The message would exceed the 24-bit Message Length.
    TooLong,
}

/// The V flag and header length that a Vendor-ID calls for (0: none).
#[inline(always)]
fn vendor_header(flags: u8, vendor_id: u32) -> (u8, usize) {
    if vendor_id != 0 {
        (flags | avp_flags::V, AVP_HEADER_LEN_VENDOR)
    } else {
        (flags & !avp_flags::V, AVP_HEADER_LEN)
    }
}

/// Writes an AVP header at the start of `out` (at least the header long): the Vendor-ID
/// when `flags` has the V bit.
#[inline(always)]
fn avp_header(out: &mut [u8], code: u32, flags: u8, vendor_id: u32, length: usize) {
    out[..4].copy_from_slice(&code.to_be_bytes());
    out[4..8].copy_from_slice(&((u32::from(flags) << 24) | length as u32).to_be_bytes());
    if flags & avp_flags::V != 0 {
        out[8..12].copy_from_slice(&vendor_id.to_be_bytes());
    }
}

/// Copies `s` into `d` (of the same length): 4 to 32 bytes (identities, most
/// Session-Ids, the values of a CDR line) as two overlapping words of 4, 8 or 16 bytes,
/// in place of a call to `memcpy`.
#[inline(always)]
pub(crate) fn copy(d: &mut [u8], s: &[u8]) {
    let n = s.len();
    if (8..=16).contains(&n) && d.len() == n {
        d[..8].copy_from_slice(&s[..8]);
        d[n - 8..].copy_from_slice(&s[n - 8..]);
    } else if (17..=32).contains(&n) && d.len() == n {
        d[..16].copy_from_slice(&s[..16]);
        d[n - 16..].copy_from_slice(&s[n - 16..]);
    } else if (4..8).contains(&n) && d.len() == n {
        d[..4].copy_from_slice(&s[..4]);
        d[n - 4..].copy_from_slice(&s[n - 4..]);
    } else {
        d.copy_from_slice(s);
    }
}

/// Where an open Grouped AVP starts, to close it with `end_group`.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct GroupMark(usize);

/// Writes one message into `buf`.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut [u8],
    len: usize,
    full: bool,
}

impl<'b> Encoder<'b> {
    /// Starts a message: the header is written now, its length patched by `finish`.
    #[inline]
    pub fn new(buf: &'b mut [u8], header: &Header) -> Encoder<'b> {
        let mut e = Encoder {
            buf,
            len: 0,
            full: false,
        };
        if e.buf.len() < HEADER_LEN {
            e.full = true;
            return e;
        }
        let mut h = [0u8; HEADER_LEN];
        header.encode(&mut h);
        e.buf[..HEADER_LEN].copy_from_slice(&h);
        e.len = HEADER_LEN;
        e
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the next `n` bytes (a multiple of 4 is kept by callers): where they start
    /// and the bytes, bounds-checked once. `None` (and the encoder marked full) if they
    /// do not fit.
    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<(usize, &mut [u8])> {
        let at = self.len;
        match self.buf.get_mut(at..at.wrapping_add(n)) {
            Some(out) if !self.full => {
                self.len = at + n;
                Some((at, out))
            }
            _ => {
                self.full = true;
                None
            }
        }
    }

    /// Writes an AVP with explicit code, flags and vendor (V is set from `vendor_id != 0`).
    #[inline]
    pub fn raw(&mut self, code: u32, flags: u8, vendor_id: u32, data: &[u8]) {
        let (flags, header_len) = vendor_header(flags, vendor_id);
        let length = header_len + data.len();
        let padded = (length + 3) & !3;
        let Some((_, out)) = self.take(padded) else {
            return;
        };
        // The padding (at most 3 bytes) is zeroed by clearing the last word first.
        let tail = padded - 4;
        out[tail..].fill(0);
        avp_header(out, code, flags, vendor_id, length);
        copy(&mut out[header_len..length], data);
    }

    /// Writes an AVP of the dictionary with its own flags.
    #[inline(always)]
    pub fn bytes(&mut self, id: AvpId, data: &[u8]) {
        let d = id.def();
        self.raw(d.code, d.flags(), d.vendor_id, data);
    }

    #[inline(always)]
    fn fixed<const N: usize>(&mut self, id: AvpId, data: [u8; N]) {
        let d = id.def();
        let (flags, header_len) = vendor_header(d.flags(), d.vendor_id);
        let length = header_len + N;
        let Some((_, out)) = self.take(length) else {
            return;
        };
        avp_header(out, d.code, flags, d.vendor_id, length);
        out[header_len..].copy_from_slice(&data);
    }

    /// Unsigned32, Enumerated (as its value), Time.
    #[inline(always)]
    pub fn u32(&mut self, id: AvpId, v: u32) {
        self.fixed(id, v.to_be_bytes());
    }
    #[inline(always)]
    pub fn u64(&mut self, id: AvpId, v: u64) {
        self.fixed(id, v.to_be_bytes());
    }
    #[inline(always)]
    pub fn i32(&mut self, id: AvpId, v: i32) {
        self.fixed(id, v.to_be_bytes());
    }
    #[inline(always)]
    pub fn i64(&mut self, id: AvpId, v: i64) {
        self.fixed(id, v.to_be_bytes());
    }
    pub fn f32(&mut self, id: AvpId, v: f32) {
        self.fixed(id, v.to_bits().to_be_bytes());
    }
    pub fn f64(&mut self, id: AvpId, v: f64) {
        self.fixed(id, v.to_bits().to_be_bytes());
    }
    #[inline(always)]
    pub fn str(&mut self, id: AvpId, v: &str) {
        self.bytes(id, v.as_bytes());
    }
    /// Address of family IPv4.
    pub fn ipv4(&mut self, id: AvpId, v: [u8; 4]) {
        let b = [0, 1, v[0], v[1], v[2], v[3]];
        self.bytes(id, &b);
    }
    /// Address of family IPv6.
    pub fn ipv6(&mut self, id: AvpId, v: [u8; 16]) {
        let mut b = [0u8; 18];
        b[1] = 2;
        b[2..].copy_from_slice(&v);
        self.bytes(id, &b);
    }

    /// Opens a Grouped AVP of the dictionary; members follow until `end_group`.
    #[inline]
    pub fn begin_group(&mut self, id: AvpId) -> GroupMark {
        let d = id.def();
        self.begin_group_raw(d.code, d.flags(), d.vendor_id)
    }

    /// Opens a Grouped AVP by code and flags.
    #[inline]
    pub fn begin_group_raw(&mut self, code: u32, flags: u8, vendor_id: u32) -> GroupMark {
        let (flags, header_len) = vendor_header(flags, vendor_id);
        let Some((at, out)) = self.take(header_len) else {
            return GroupMark(usize::MAX);
        };
        avp_header(out, code, flags, vendor_id, 0);
        GroupMark(at)
    }

    /// Closes a Grouped AVP: its length covers its members and their padding.
    #[inline]
    pub fn end_group(&mut self, mark: GroupMark) {
        if self.full || mark.0 == usize::MAX {
            return;
        }
        let length = (self.len - mark.0) as u32;
        let at = mark.0 + 5;
        self.buf[at..at + 3].copy_from_slice(&length.to_be_bytes()[1..]);
    }

    /// Appends bytes that already form whole, padded AVPs.
    pub fn raw_avps(&mut self, avps: &[u8]) {
        if let Some((_, out)) = self.take(avps.len()) {
            out.copy_from_slice(avps);
        }
    }

    /// Writes zeros (for zero-filled Failed-AVP payloads).
    pub(crate) fn zeros(&mut self, n: usize) {
        if let Some((_, out)) = self.take(n) {
            out.fill(0);
        }
    }

    /// Mutable access to bytes already written (to patch an AVP header in place).
    pub(crate) fn written_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Patches the Message Length and returns the message size.
    #[inline]
    pub fn finish(self) -> Result<usize, EncodeError> {
        if self.full {
            return Err(EncodeError::BufferFull);
        }
        if self.len > 0x00ff_ffff {
            return Err(EncodeError::TooLong);
        }
        let length = self.len as u32;
        self.buf[1..4].copy_from_slice(&length.to_be_bytes()[1..]);
        Ok(self.len)
    }
}
